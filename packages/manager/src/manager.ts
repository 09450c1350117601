import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import { randomUUID } from 'node:crypto';
import { agentVersion, loadOrCreateSecret } from '@drover/agent';
import { ClusterCoordinator } from './cluster/coordinator.js';
import { shareSecrets, sharedCaState } from './cluster/secrets.js';
import type { ManagerConfig } from './config.js';
import { AgentLink } from './hosts/agent-link.js';
import { CrlPush } from './hosts/crl-push.js';
import { HostService } from './hosts/host.service.js';
import { EventHub } from './http/event-hub.js';
import { BrowserAuth } from './http/browser-auth.js';
import { AccessService } from './access/access.service.js';
import { LdapDirectory, type LdapSettings } from './access/ldap-directory.js';
import { defaultWebRoot } from './http/web-console.js';
import { buildManagerServer } from './http/server.js';
import { ImageLibrary } from './images/image-library.js';
import { ImageService } from './images/image.service.js';
import { OperationRunner } from './operations/operation-runner.js';
import { ClusterCa, type ClusterCaOptions } from './pki/index.js';
import { openPostgresStore, openSqliteStore, type Store } from './store/index.js';
import { VmService } from './vms/vm.service.js';
import { MaintenanceService } from './power/maintenance.service.js';
import { PowerPolicyService } from './power/power-policy.service.js';
import { PowerService } from './power/power.service.js';
import { HaService } from './power/ha.service.js';
import { VmcastService } from './vmcasting/vmcast.service.js';
import { PackageService } from './packages/package.service.js';
import { LabService } from './labs/lab.service.js';
import { labNetworking } from './labs/lab-networking.js';
import { labPackages } from './labs/lab-packages.js';
import { RebalanceService } from './cluster/rebalance.service.js';

export interface RunningManager {
  url: string;
  /** The TLS listener's URL, when `tlsListen` is set. */
  tlsUrl?: string;
  adminToken: string;
  metricsToken: string;
  caFingerprint: string;
  store: Store;
  hosts: HostService;
  /** Keeps agents' CRLs current. */
  crl: CrlPush;
  vms: VmService;
  /** Networks, security groups, NICs, host network states (the same as `vms.networks`). */
  networks: VmService['networks'];
  runner: OperationRunner;
  /** Host power drivers, maintenance and the power policy. */
  power: { ha: HaService; power: PowerService; maintenance: MaintenanceService; policy: PowerPolicyService };
  /** VMcasting: publisher, subscriber, update channels. */
  vmcast: VmcastService;
  packages: PackageService;
  /** Labs: packages and lab manifests deployed as a unit (labs/). */
  labs: LabService;
  /** Cluster load balancing: the rebalance plan, its runs and the automatic rebalance. */
  rebalance: RebalanceService;
  /** Several managers on one store: the leader election, this manager's id, the managers list. */
  cluster: ClusterCoordinator;
  /** Stops serving; operations in flight are left for the next manager to recover. */
  close(): Promise<void>;
}


export interface StartManagerOptions {
  logger?: Logger;
  /** Settings of the cluster CA; tests shorten the CRL validity (`crlValiditySeconds`). */
  ca?: ClusterCaOptions;
  /** VMcasting limits and timers; tests shorten them (tickMs 0: polls only on demand). */
  vmcast?: { maxFeedBytes?: number; tickMs?: number; healthTimeoutMs?: number };
  /** Package import limits (entry and total sizes); tests lower them. */
  packageLimits?: Partial<import('./packages/eva-format.js').ExtractLimits>;
  /** Labs: "user" runs lab VMs on QEMU user networking instead of Drover networks (docs/labs.md). */
  labs?: { networkMode?: 'networks' | 'user'; healthTimeoutMs?: number };
}

/** Starts a manager: store, CA, image library, services, recovery of unfinished operations, API. */
export async function startManager(config: ManagerConfig, options: StartManagerOptions = {}): Promise<RunningManager> {
  const logger = options.logger ?? pino({ name: 'drover:manager', level: config.logLevel });
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  const store = config.store === 'sqlite' ? await openSqliteStore({ file: path.join(config.dataDir, 'drover.db') }) : await openPostgresStore({ connectionString: config.store });
  const secretKeyFile = config.secretKeyFile ?? process.env.DROVER_SECRET_KEY_FILE;
  if (secretKeyFile) {
    // Several managers: the CA and the tokens come from the store, sealed with the shared key (cluster/secrets.ts).
    await shareSecrets(store, secretKeyFile, config.dataDir, async () => {
      await ClusterCa.open(path.join(config.dataDir, 'ca'), options.ca);
      for (const name of ['admin-token', 'metrics-token', 'session-key']) await loadOrCreateSecret(path.join(config.dataDir, name));
    }).catch(async (error: unknown) => {
      await store.close();
      throw error;
    });
  }
  const ca = await ClusterCa.open(path.join(config.dataDir, 'ca'), {
    ...options.ca,
    // Several managers: revocations and CRLs made through any of them are the same for all.
    ...(secretKeyFile ? { shared: await sharedCaState(store, secretKeyFile, config.dataDir) } : {}),
  });
  const adminToken = await loadOrCreateSecret(path.join(config.dataDir, 'admin-token'), config.adminToken);
  const metricsToken = await loadOrCreateSecret(path.join(config.dataDir, 'metrics-token'), config.metricsToken);
  const managerCredentials = await ca.managerClientCredentials();
  const link = new AgentLink(
    () => ({ caPem: ca.caCertPem(), certPem: managerCredentials.certPem, keyPem: managerCredentials.keyPem }),
    (serial) => ca.isRevoked(serial),
    config.agentTimeoutMs,
  );
  const hub = new EventHub();
  // Imported images and packages: one directory every manager of the cluster sees (docs/scale-out.md).
  const filesDir = config.filesDir ?? config.dataDir;
  const images = new ImageLibrary(store, path.join(config.dataDir, 'images'), path.join(filesDir, 'library'));
  if (config.appliances) await images.registerAppliances(config.applianceCacheDir);
  const runner = new OperationRunner(store, hub, logger.child({ module: 'operations' }));
  const vms = new VmService({ store, runner, link, images, hub, logger: logger.child({ module: 'vms' }) });
  const imageService = new ImageService({
    store,
    runner,
    link,
    hub,
    library: images,
    logger: logger.child({ module: 'images' }),
    importDirs: config.imageImportDirs,
    maxBytes: config.imageMaxBytes,
    maxVirtualBytes: config.imageMaxVirtualBytes,
    downloadTimeoutMs: config.imageDownloadTimeoutMs,
  });
  const vmcast = new VmcastService({
    store,
    runner,
    hub,
    link,
    library: images,
    vms,
    logger: logger.child({ module: 'vmcast' }),
    maxImageBytes: config.imageMaxBytes,
    maxVirtualBytes: config.imageMaxVirtualBytes,
    downloadTimeoutMs: config.imageDownloadTimeoutMs,
    tickMs: options.vmcast?.tickMs ?? 10_000,
    ...(options.vmcast?.maxFeedBytes ? { maxFeedBytes: options.vmcast.maxFeedBytes } : {}),
    ...(options.vmcast?.healthTimeoutMs ? { healthTimeoutMs: options.vmcast.healthTimeoutMs } : {}),
  });
  const packages = new PackageService({
    store,
    runner,
    hub,
    link,
    library: images,
    logger: logger.child({ module: 'packages' }),
    dir: path.join(filesDir, 'packages'),
    maxVirtualBytes: config.imageMaxVirtualBytes,
    downloadTimeoutMs: config.imageDownloadTimeoutMs,
    ...(options.packageLimits ? { limits: options.packageLimits } : {}),
  });
  vmcast.useAppliancePackages(packages);
  const labs = new LabService({
    store,
    runner,
    vms,
    link,
    images,
    hub,
    logger: logger.child({ module: 'labs' }),
    ...(options.labs?.networkMode === 'user' ? {} : { networking: labNetworking(vms.networks) }),
    packages: labPackages(packages, store),
    ...(options.labs?.healthTimeoutMs ? { healthTimeoutMs: options.labs.healthTimeoutMs } : {}),
  });
  // eslint-disable-next-line prefer-const -- assigned once the power service exists; the heartbeat only calls it later
  let ha: HaService;
  const crl = new CrlPush({ ca, link, logger: logger.child({ module: 'crl' }) });
  const hosts = new HostService({
    store,
    ca,
    link,
    crl,
    hub,
    logger: logger.child({ module: 'hosts' }),
    heartbeatMs: config.heartbeatMs,
    missesBeforeUnreachable: config.missesBeforeUnreachable,
    onHeartbeat: (host) => vms.reconcile(host).catch((error: unknown) => logger.warn({ host: host.name, err: error }, 'reconcile failed')),
    // HA (power/ha.service.ts) is made below, with the power service it fences through.
    onHostLost: (host) => ha.onHostLost(host),
    onHostBack: async (host) => {
      await vms.autostart(host).catch((error: unknown) => logger.warn({ host: host.name, err: error }, 'autostart failed'));
    },
  });
  runner.register('host.rotate-certificate', {
    run: async (ctx) => hosts.rotateCertificate(await store.hosts.get(ctx.op.targetId), (name, progress) => ctx.phase(name, progress)),
    // A half-done rotation is simply done again: the agent's pending key is replaced, the old certificate still serves.
    recover: async (ctx) => hosts.rotateCertificate(await store.hosts.get(ctx.op.targetId), (name, progress) => ctx.phase(name, progress)),
  });
  const powerService = new PowerService({ store, runner, hosts, logger: logger.child({ module: 'power' }), ...(config.powerBootTimeoutMs ? { bootTimeoutMs: config.powerBootTimeoutMs } : {}), ...(config.powerVerifyMs ? { verifyMs: config.powerVerifyMs } : {}) });
  ha = new HaService({ store, runner, link, vms, hosts, power: powerService, logger: logger.child({ module: 'ha' }), ...(config.haGraceMs !== undefined ? { graceMs: config.haGraceMs } : {}) });
  const power = {
    ha,
    power: powerService,
    maintenance: new MaintenanceService({ store, runner, vms, hosts, logger: logger.child({ module: 'maintenance' }) }),
    policy: new PowerPolicyService({ store, runner, vms, power: powerService, logger: logger.child({ module: 'power-policy' }), ...(config.powerTickMs ? { tickMs: config.powerTickMs } : {}) }),
  };
  const rebalance = new RebalanceService({
    store,
    runner,
    vms,
    logger: logger.child({ module: 'rebalance' }),
    ...(config.rebalance ? { settings: config.rebalance } : {}),
    // The power policy packs hosts at night and rebalances after waking them: never fight it.
    holdOff: async () => ((await runner.busyWith('power-policy')) ? 'the power policy is at work' : undefined),
  });
  // Background work runs on the leader only (cluster/coordinator.ts): one manager on SQLite leads from the start;
  // managers sharing PostgreSQL elect one, which also recovers the operations of managers that died.
  const coordinator = new ClusterCoordinator({
    store,
    hub,
    runner,
    logger: logger.child({ module: 'cluster' }),
    managerId: randomUUID(),
    version: agentVersion,
    ...(config.store === 'sqlite' ? {} : { connectionString: config.store }),
    ...(config.clusterIntervalMs ? { intervalMs: config.clusterIntervalMs } : {}),
    onLead: () => {
      hosts.start();
      power.policy.start();
      rebalance.start();
      vmcast.start();
    },
    onFollow: () => {
      hosts.stop();
      power.policy.stop();
      rebalance.stop();
      vmcast.stop();
    },
  });
  const browserAuth = new BrowserAuth({ key: await loadOrCreateSecret(path.join(config.dataDir, 'session-key')) });
  const webRoot = config.webRoot === 'none' ? undefined : (config.webRoot ?? defaultWebRoot());
  const { caFile, ...ldapSettings } = config.ldap ?? { caFile: undefined };
  const access = new AccessService({
    store,
    logger: logger.child({ module: 'access' }),
    ...(config.ldap ? { ldap: new LdapDirectory({ ...(ldapSettings as LdapSettings), ...(caFile ? { caPem: await readFile(caFile, 'utf8') } : {}) }) } : {}),
    ...(config.loginMaxFailures ? { loginMaxFailures: config.loginMaxFailures } : {}),
    ...(config.loginWindowSeconds ? { loginWindowMs: config.loginWindowSeconds * 1000 } : {}),
  });
  await access.bootstrap(adminToken);
  const serverOptions = { store, hub, hosts, vms, runner, link, power, rebalance, cluster: coordinator, images: imageService, vmcast, packages, labs, adminToken, metricsToken, browserAuth, access, ...(webRoot ? { webRoot } : {}), logger: logger.child({ module: 'http' }) };
  const app = await buildManagerServer(serverOptions);
  const [host, port] = config.listen.split(':') as [string, string];
  await app.listen({ host, port: Number(port) });
  const address = app.server.address();
  const actualPort = typeof address === 'object' && address ? address.port : Number(port);
  let tlsApp: Awaited<ReturnType<typeof buildManagerServer>> | undefined;
  let tlsUrl: string | undefined;
  if (config.tlsListen) {
    const [tlsHost, tlsPort] = config.tlsListen.split(':') as [string, string];
    const credentials = await ca.issueManagerServerCert({ sanIps: [tlsHost] });
    // The chain (leaf + CA) lets an agent pin the CA by its fingerprint.
    tlsApp = await buildManagerServer({ ...serverOptions, https: { key: credentials.keyPem, cert: credentials.chainPem } });
    await tlsApp.listen({ host: tlsHost, port: Number(tlsPort) });
    const tlsAddress = tlsApp.server.address();
    tlsUrl = `https://${tlsHost}:${typeof tlsAddress === 'object' && tlsAddress ? tlsAddress.port : Number(tlsPort)}`;
  }
  await coordinator.start(`http://${host}:${actualPort}`);
  // A shared CA: revocations made through other managers reach this one's checks within seconds.
  const caRefresh = secretKeyFile ? setInterval(() => void ca.refresh().catch((error: unknown) => logger.warn({ err: error }, 'CA refresh failed')), 5000) : undefined;
  caRefresh?.unref();
  return {
    url: `http://${host}:${actualPort}`,
    ...(tlsUrl ? { tlsUrl } : {}),
    adminToken,
    metricsToken,
    caFingerprint: ca.caFingerprint(),
    store,
    hosts,
    crl,
    vms,
    networks: vms.networks,
    runner,
    power,
    vmcast,
    packages,
    labs,
    rebalance,
    cluster: coordinator,
    async close() {
      await coordinator.close();
      clearInterval(caRefresh);
      hosts.stop();
      vmcast.stop();
      power.policy.stop();
      rebalance.stop();
      crl.close();
      await app.close();
      await tlsApp?.close();
      await runner.drain();
      link.close();
      await store.close();
    },
  };
}

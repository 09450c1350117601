import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import { loadOrCreateSecret } from '@drover/agent';
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
  runner: OperationRunner;
  /** Host power drivers, maintenance and the power policy. */
  power: { ha: HaService; power: PowerService; maintenance: MaintenanceService; policy: PowerPolicyService };
  /** VMcasting: publisher, subscriber, update channels. */
  vmcast: VmcastService;
  /** Cluster load balancing: the rebalance plan, its runs and the automatic rebalance. */
  rebalance: RebalanceService;
  /** Stops serving; operations in flight are left for the next manager to recover. */
  close(): Promise<void>;
}


export interface StartManagerOptions {
  logger?: Logger;
  /** Settings of the cluster CA; tests shorten the CRL validity (`crlValiditySeconds`). */
  ca?: ClusterCaOptions;
  /** VMcasting limits and timers; tests shorten them (tickMs 0: polls only on demand). */
  vmcast?: { maxFeedBytes?: number; tickMs?: number; healthTimeoutMs?: number };
}

/** Starts a manager: store, CA, image library, services, recovery of unfinished operations, API. */
export async function startManager(config: ManagerConfig, options: StartManagerOptions = {}): Promise<RunningManager> {
  const logger = options.logger ?? pino({ name: 'drover:manager', level: config.logLevel });
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  const store = config.store === 'sqlite' ? await openSqliteStore({ file: path.join(config.dataDir, 'drover.db') }) : await openPostgresStore({ connectionString: config.store });
  const ca = await ClusterCa.open(path.join(config.dataDir, 'ca'), options.ca);
  const adminToken = await loadOrCreateSecret(path.join(config.dataDir, 'admin-token'), config.adminToken);
  const metricsToken = await loadOrCreateSecret(path.join(config.dataDir, 'metrics-token'), config.metricsToken);
  const managerCredentials = await ca.managerClientCredentials();
  const link = new AgentLink(
    () => ({ caPem: ca.caCertPem(), certPem: managerCredentials.certPem, keyPem: managerCredentials.keyPem }),
    (serial) => ca.isRevoked(serial),
    config.agentTimeoutMs,
  );
  const hub = new EventHub();
  const images = new ImageLibrary(store, path.join(config.dataDir, 'images'));
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
  const recovered = await runner.resumeAll();
  if (recovered > 0) logger.info({ recovered }, 'recovering unfinished operations');
  hosts.start();
  power.policy.start();
  rebalance.start();
  vmcast.start();
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
  const serverOptions = { store, hub, hosts, vms, runner, link, power, rebalance, images: imageService, vmcast, adminToken, metricsToken, browserAuth, access, ...(webRoot ? { webRoot } : {}), logger: logger.child({ module: 'http' }) };
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
    runner,
    power,
    vmcast,
    rebalance,
    async close() {
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

import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import { loadOrCreateSecret } from '@drover/agent';
import type { ManagerConfig } from './config.js';
import { AgentLink } from './hosts/agent-link.js';
import { CrlPush } from './hosts/crl-push.js';
import { HostService } from './hosts/host.service.js';
import { EventHub } from './http/event-hub.js';
import { BrowserAuth } from './http/browser-auth.js';
import { defaultWebRoot } from './http/web-console.js';
import { buildManagerServer } from './http/server.js';
import { ImageLibrary } from './images/image-library.js';
import { ImageService } from './images/image.service.js';
import { OperationRunner } from './operations/operation-runner.js';
import { ClusterCa, type ClusterCaOptions } from './pki/index.js';
import { openPostgresStore, openSqliteStore, type Store } from './store/index.js';
import { VmService } from './vms/vm.service.js';

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
  /** Stops serving; operations in flight are left for the next manager to recover. */
  close(): Promise<void>;
}


export interface StartManagerOptions {
  logger?: Logger;
  /** Settings of the cluster CA; tests shorten the CRL validity (`crlValiditySeconds`). */
  ca?: ClusterCaOptions;
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
    onHostBack: async (host) => {
      await vms.autostart(host).catch((error: unknown) => logger.warn({ host: host.name, err: error }, 'autostart failed'));
    },
  });
  runner.register('host.rotate-certificate', {
    run: async (ctx) => hosts.rotateCertificate(await store.hosts.get(ctx.op.targetId), (name, progress) => ctx.phase(name, progress)),
    // A half-done rotation is simply done again: the agent's pending key is replaced, the old certificate still serves.
    recover: async (ctx) => hosts.rotateCertificate(await store.hosts.get(ctx.op.targetId), (name, progress) => ctx.phase(name, progress)),
  });
  const recovered = await runner.resumeAll();
  if (recovered > 0) logger.info({ recovered }, 'recovering unfinished operations');
  hosts.start();
  const browserAuth = new BrowserAuth({ key: await loadOrCreateSecret(path.join(config.dataDir, 'session-key')) });
  const webRoot = config.webRoot === 'none' ? undefined : (config.webRoot ?? defaultWebRoot());
  const serverOptions = { store, hub, hosts, vms, runner, link, images: imageService, adminToken, metricsToken, browserAuth, ...(webRoot ? { webRoot } : {}), logger: logger.child({ module: 'http' }) };
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
    async close() {
      hosts.stop();
      crl.close();
      await app.close();
      await tlsApp?.close();
      await runner.drain();
      link.close();
      await store.close();
    },
  };
}

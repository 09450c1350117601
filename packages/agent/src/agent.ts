import { chmod, chown, mkdir, readFile, stat } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import type { HostFacts } from '@drover/api';
import { errors } from '@drover/core';
import { ensureQemuAccount } from './account.js';
import { loadOrCreateSecret } from './layered-config.js';
import { chooseAccelerator, qemuVersion } from './accel-choice.js';
import type { AgentConfig } from './config.js';
import { PoolRegistry } from './pools.js';
import { agentTlsOptions, joinCluster, loadAgentIdentity } from './tls/index.js';
import { buildAgentServer } from './server.js';
import { VmService } from './vm-service.js';
import { MigrationService } from './migration.js';
import { NetworkStateService } from './net/network-state.service.js';
import { GuestPackageStore } from './net/guest-packages.js';
import type { NicBinding } from './net/firewall-model.js';

export const agentVersion = '0.1.0';

export interface JoinRequest {
  managerUrl: string;
  token: string;
  /** Pins the cluster CA when the manager is reached over https. */
  caFingerprint?: string;
}

export interface RunningAgent {
  url: string;
  /** Joined to a cluster: the API is mutual-TLS only. */
  joined: boolean;
  token: string;
  app: Awaited<ReturnType<typeof buildAgentServer>>;
  vms: VmService;
  pools: PoolRegistry;
  /** Stops serving and detaches from QEMU; VMs keep running. */
  close(): Promise<void>;
}


/**
 * QEMU runs as the unprivileged account and opens sockets under the state
 * directory: every directory above it must let that account pass through.
 * Failing here names the directory, instead of every VM failing to start.
 */
async function checkReachable(stateDir: string, account: { uid: number; gid: number; name: string }): Promise<void> {
  let dir = path.dirname(path.resolve(stateDir));
  for (;;) {
    const info = await stat(dir);
    const passes = info.uid === account.uid ? info.mode & 0o100 : info.gid === account.gid ? info.mode & 0o010 : info.mode & 0o001;
    if (!passes) {
      throw errors.invalid(`The QEMU account "${account.name}" cannot pass through "${dir}" (mode ${(info.mode & 0o777).toString(8)}) to reach the state directory "${stateDir}"; give it o+x (chmod o+x "${dir}") or choose another state directory`);
    }
    const parent = path.dirname(dir);
    if (parent === dir) return;
    dir = parent;
  }
}

function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

async function bootTime(): Promise<string> {
  const statText = await readFile('/proc/stat', 'utf8');
  const btime = Number(/^btime (\d+)/m.exec(statText)?.[1] ?? 0);
  return new Date(btime * 1000).toISOString();
}

/** Starts a host agent: state directory, QEMU account, pools, reattach, HTTP API. */
export async function startAgent(config: AgentConfig, options: { logger?: Logger; join?: JoinRequest } = {}): Promise<RunningAgent> {
  const logger = options.logger ?? pino({ name: 'drover:agent', level: config.logLevel });
  await mkdir(config.stateDir, { recursive: true });
  const account = await ensureQemuAccount(config.qemuUser);
  await checkReachable(config.stateDir, account);
  await chown(config.stateDir, 0, account.gid);
  await chmod(config.stateDir, 0o750);
  const token = await loadOrCreateSecret(path.join(config.stateDir, 'agent-token'), config.token);
  const { accel, reason } = await chooseAccelerator({
    mode: config.accel,
    cacheFile: config.probeCacheFile,
    applianceCacheDir: config.applianceCacheDir,
    qemuBinary: config.qemuBinary,
  });
  logger.info({ accel, reason }, 'accelerator chosen');
  const qemu = await qemuVersion(config.qemuBinary);

  // eslint-disable-next-line prefer-const -- the registry and the service refer to each other
  let vms: VmService;
  const pools = new PoolRegistry(config.stateDir, config.pools, account, (pool, volume) => vms.usersOf(pool, volume), [
    config.applianceCacheDir,
    ...config.importDirs,
  ], config.hostName);
  await pools.init();
  vms = new VmService({
    stateDir: config.stateDir,
    account,
    pools,
    accel,
    capacity: config.capacity,
    cpuAllocationRatio: config.cpuAllocationRatio,
    cpuModels: config.cpuModels,
    defaultCpuModel: config.defaultCpuModel,
    stopTimeoutMs: config.stopTimeoutMs,
    qmpTimeoutMs: config.qmpTimeoutMs,
    durableSaves: config.durableSaves,
    qemuBinary: config.qemuBinary,
    logger: logger.child({ module: 'vms' }),
  });
  const { reattached, cleaned } = await vms.reattach();
  logger.info({ reattached, cleaned }, 'reattached to running VMs');
  const boot = await bootTime();

  const facts = async (): Promise<HostFacts> => ({
    hostname: config.hostName,
    agentVersion,
    qemuVersion: qemu,
    accel,
    accelReason: reason,
    capacity: config.capacity,
    allocated: vms.allocated(),
    cpuModels: config.cpuModels,
    pools: await pools.list(),
    bootTime: boot,
  });

  const [host, configuredPort] = config.listen.split(':') as [string, string];
  const tlsDir = path.join(config.stateDir, 'tls');
  let port = Number(configuredPort);
  if (options.join && !(await loadAgentIdentity(tlsDir))) {
    // The certificate names the address the manager will dial, so the port must be known first.
    if (port === 0) port = await freePort(host);
    await joinCluster({
      managerUrl: options.join.managerUrl,
      joinToken: options.join.token,
      dir: tlsDir,
      commonName: config.hostName,
      sanIps: /^[0-9.]+$/.test(host) ? [host] : [],
      ...(/^[0-9.]+$/.test(host) ? {} : { sanDns: [host] }),
      agentUrl: `https://${host}:${port}`,
      ...(options.join.caFingerprint ? { caFingerprint: options.join.caFingerprint } : {}),
    });
    logger.info({ manager: options.join.managerUrl }, 'joined the cluster');
  }
  const identity = await loadAgentIdentity(tlsDir);
  // Live migration needs the cluster identity (its streams are TLS with it): joined agents only.
  const migrations = identity ? new MigrationService({ hooks: vms.migrationHooks(), pools, account, tlsDir, address: host, qmpTimeoutMs: config.qmpTimeoutMs, defaultCpuModel: config.defaultCpuModel, logger: logger.child({ module: 'migration' }) }) : undefined;
  const held = migrations?.resume() ?? [];
  if (held.length > 0) logger.warn({ vms: held }, 'VMs caught in a migration stay locked until the manager ends it');
  // Package updates for guests (VMcasting): the manager pushes offers and archives, the metadata service serves them.
  const guestPackages = new GuestPackageStore(path.join(config.stateDir, 'packages'));
  const resolveVm = (nic: NicBinding) => vms.list().find((vm) => vm.spec.nics?.some((n) => n.mode === 'tap' && n.tap === nic.tap && n.mac?.toLowerCase() === nic.mac))?.id;
  const networks = new NetworkStateService({ stateDir: path.join(config.stateDir, 'net'), logger: logger.child({ module: 'net' }), packages: { packages: guestPackages, resolveVm } });
  const app = await buildAgentServer({
    networks,
    guestPackages,
    token,
    ...(identity ? { tls: agentTlsOptions(identity), tlsDir } : {}),
    ...(migrations ? { migrations } : {}),
    vms,
    pools,
    facts,
    logger: logger.child({ module: 'http' }),
  });
  await app.listen({ host, port });
  const address = app.server.address();
  const actualPort = typeof address === 'object' && address ? address.port : port;
  return {
    url: `${identity ? 'https' : 'http'}://${host}:${actualPort}`,
    joined: identity !== undefined,
    token,
    app,
    vms,
    pools,
    async close() {
      await app.close();
      await networks.close();
      await vms.detachAll();
    },
  };
}

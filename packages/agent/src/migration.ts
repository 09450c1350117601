import { chmod, chown, mkdir, rm, writeFile } from 'node:fs/promises';
import { readFile, stat, type FileHandle } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { Logger } from 'pino';
import { DroverError, errors } from '@drover/core';
import {
  ConfirmAnswer,
  ConfirmRequest,
  ErrorBody,
  IncomingReady,
  IncomingRequest,
  MigrationBegin,
  MigrationCapabilities,
  MigrationPlan,
  MigrationStatus,
  MirrorRequest,
  PerformRequest,
  SwitchoverWait,
  VmInfo,
  FinishRequest,
  downtimeLimitForPass,
  migrationMultifdChannels,
  type MigrationDisk,
  type MigrationMode,
  type SnapshotInfo,
  type VmSpec,
} from '@drover/api';
import { baseMigrationCapabilities, type MigrationInfo, type QmpClient, type QmpEvent } from '@drover/qemu';
import type { Account } from './account.js';
import type { KeyedLock } from './keyed-lock.js';
import { volumeFormat, type PoolRegistry } from './pools.js';
import { loadAgentIdentity, qemuDhParamsPem } from './tls/index.js';
import { diskPlacement, type DeviceSlots } from './vm-devices.js';
import type { Live, VmRecord } from './vm-service.js';

/**
 * Live migration on the agent's side (docs/migration.md). The manager drives
 * both hosts through these routes, one step at a time:
 *
 *   source:      begin → mirror → perform → await-switchover → continue → confirm
 *   destination: incoming (QEMU -S -incoming defer, NBD exports) → finish
 *
 * and `cancel` (source) / `abort` (destination) undo a migration that did not
 * switch over. The VM's lock is held from begin/incoming to the end, across
 * requests and agent restarts (the marker in vm.json brings it back).
 *
 * Every stream between the hosts is TLS: QEMU gets a `tls-creds-x509` object
 * made from this agent's cluster identity, with peer verification, and the
 * destination admits only the source host's certificate (`authz-simple`).
 */

/** Persisted in the VM record while a migration holds the VM. */
export interface MigrationMarker {
  role: 'source' | 'destination';
  operationId: string;
  /** Source: what moves (a cold move launched the QEMU itself, and ends it again on cancel). */
  mode?: MigrationMode;
  /** The other host's name. */
  peer: string;
  since: string;
  /** Source: whether the guest ran when the migration began (a cancel leaves it so). */
  wasRunning?: boolean;
  /** Source: mirror jobs and their NBD client nodes, until switchover finishes them. */
  mirrors?: Array<{ nodeName: string; job: string; target: string }>;
  /** Destination: volumes made here to receive mirrored disks (deleted by abort). */
  createdVolumes?: Array<{ pool: string; volume: string }>;
  /** Destination: NBD exports to remove at finish. */
  exports?: string[];
}

/** What migration needs of VmService (`VmService.migrationHooks`). */
export interface MigrationHooks {
  find(ref: string): VmRecord;
  records(): VmRecord[];
  live(id: string): Live | undefined;
  lock: KeyedLock;
  files(id: string): { dir: string; run: string };
  openSerialLog(id: string): Promise<FileHandle | undefined>;
  persist(record: VmRecord): Promise<void>;
  describe(record: VmRecord): VmInfo;
  /** Defines a VM record from another host's spec (same id), with fields of the source record. */
  define(spec: VmSpec, extra: Partial<VmRecord>): Promise<VmRecord>;
  /** Capacity check, then QEMU with `-S -incoming defer` and the record's slots. */
  launchIncoming(record: VmRecord): Promise<Live>;
  /** A stopped VM's QEMU, paused before its first instruction (`-S`): a cold move migrates it. */
  launchPaused(record: VmRecord): Promise<Live>;
  /** A saved VM's state loaded into a paused QEMU; the saved file stays until the move is confirmed. */
  restorePaused(record: VmRecord): Promise<Live>;
  killAndForget(record: VmRecord): Promise<void>;
  /** Ends the source's QEMU after the handover (quit, then SIGKILL); with `forgotten`, the record is not written again (`forget` follows). */
  handOver(record: VmRecord, options?: { forgotten?: boolean }): Promise<void>;
  /** Removes the record and its directory. */
  forget(record: VmRecord): Promise<void>;
}

export interface MigrationServiceOptions {
  hooks: MigrationHooks;
  pools: PoolRegistry;
  account: Account;
  /** The agent's cluster identity (absent on a standalone agent: no migration then). */
  tlsDir: string;
  /** The address this agent listens on: QEMU listens there for incoming streams. */
  address: string;
  qmpTimeoutMs: number;
  /** The CPU model of a VM that names none: pinned in the plan, so the destination builds the same CPU. */
  defaultCpuModel: string;
  logger: Logger;
}

const tlsObject = 'drover-mig-tls';
const authzObject = 'drover-mig-authz';
const terminal = new Set(['completed', 'failed', 'cancelled']);

/** Whether QEMU's migration status is a stream under way (not none, and not ended). */
function inProgress(status: string | undefined): boolean {
  return status !== undefined && status !== 'none' && !terminal.has(status);
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

/** Removes the TLS files of a `writeTlsFiles` that QEMU will not load (it removed them itself if it failed). */
async function discardTlsFiles(written: Promise<string>): Promise<void> {
  await written.then((dir) => rm(dir, { recursive: true, force: true }), () => undefined);
}

function pemBlocks(text: string): string[] {
  return [...text.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----[\s\S]+?-----END \1-----\n?/g)].map((m) => (m[0].endsWith('\n') ? m[0] : `${m[0]}\n`));
}

/** The figures of `query-migrate` the manager reports as progress. */
export function statusOf(info: MigrationInfo, role: 'source' | 'destination'): MigrationStatus {
  const ram = info.ram;
  const pageSize = ram?.['page-size'] ?? 4096;
  return {
    active: true,
    role,
    status: info.status ?? 'none',
    ...(ram?.transferred !== undefined ? { transferredBytes: ram.transferred } : {}),
    ...(ram?.['multifd-bytes'] !== undefined ? { multifdBytes: ram['multifd-bytes'] } : {}),
    ...(ram?.remaining !== undefined ? { remainingBytes: ram.remaining } : {}),
    ...(ram?.total !== undefined ? { totalBytes: ram.total } : {}),
    ...(ram?.['dirty-pages-rate'] !== undefined ? { dirtyBytesPerSecond: ram['dirty-pages-rate'] * pageSize } : {}),
    ...(ram?.mbps !== undefined ? { mbps: ram.mbps } : {}),
    ...(ram?.['dirty-sync-count'] !== undefined ? { dirtySyncCount: ram['dirty-sync-count'] } : {}),
    ...(info['expected-downtime'] !== undefined ? { expectedDowntimeMs: info['expected-downtime'] } : {}),
    ...(info.downtime !== undefined ? { downtimeMs: info.downtime } : {}),
    ...(info['total-time'] !== undefined ? { totalTimeMs: info['total-time'] } : {}),
    ...(info['setup-time'] !== undefined ? { setupTimeMs: info['setup-time'] } : {}),
    ...(info['error-desc'] !== undefined ? { error: info['error-desc'] } : {}),
  };
}

/**
 * Whether QEMU (running as the unprivileged account) could use userfaultfd,
 * which post-copy needs on the destination.
 */
export async function probePostcopy(account: Account): Promise<{ available: boolean; reason: string }> {
  const sysctl = (await readFile('/proc/sys/vm/unprivileged_userfaultfd', 'utf8').catch(() => '')).trim();
  if (sysctl === '1') return { available: true, reason: 'vm.unprivileged_userfaultfd=1' };
  const device = await stat('/dev/userfaultfd').catch(() => undefined);
  if (device) {
    const mode = device.mode;
    const usable = device.uid === account.uid ? mode & 0o600 : device.gid === account.gid ? mode & 0o060 : mode & 0o006;
    if (usable) return { available: true, reason: '/dev/userfaultfd is open to the QEMU account' };
  }
  return {
    available: false,
    reason: `userfaultfd is not available to the QEMU account "${account.name}" (vm.unprivileged_userfaultfd=${sysctl || 'absent'}, /dev/userfaultfd ${device ? 'root-only' : 'absent'})`,
  };
}

export class MigrationService {
  private readonly releases = new Map<string, () => void>();
  /** QEMU's downtime-limit last set per outgoing VM (lost with a restart: await-switchover sets it again). */
  private readonly downtimeLimits = new Map<string, number>();
  /** Whether a live move's QEMU must be paused for its copy (`perform`), asked at `begin` while the destination starts. */
  private readonly pauseForCopy = new Map<string, Promise<boolean>>();

  constructor(private readonly o: MigrationServiceOptions) {}

  private get hooks(): MigrationHooks {
    return this.o.hooks;
  }

  private label(record: VmRecord): string {
    return `VM "${record.name}"`;
  }

  /** After an agent restart: VMs caught in a migration stay locked until the manager ends it. */
  resume(): string[] {
    const held: string[] = [];
    for (const record of this.hooks.records()) {
      if (!record.migration || this.releases.has(record.id)) continue;
      this.releases.set(record.id, this.hooks.lock.hold(record.id, record.migration.role === 'source' ? 'migrate-out' : 'migrate-in', this.label(record)));
      held.push(record.name);
    }
    return held;
  }

  private release(record: VmRecord): void {
    this.releases.get(record.id)?.();
    this.releases.delete(record.id);
    this.downtimeLimits.delete(record.id);
    this.pauseForCopy.delete(record.id);
  }

  private qmp(record: VmRecord): QmpClient {
    const live = this.hooks.live(record.id);
    if (!record.runtime || !live) throw errors.conflict(`${this.label(record)} has no QEMU on this host`, { state: 'stopped' });
    return live.qmp;
  }

  private marker(record: VmRecord, role: 'source' | 'destination'): MigrationMarker {
    if (!record.migration || record.migration.role !== role) throw errors.conflict(`${this.label(record)} is not migrating ${role === 'source' ? 'out of' : 'into'} this host`);
    return record.migration;
  }

  // ------------------------------------------------------------ TLS

  /**
   * The source's side of a stream, set at `begin` while the destination's QEMU starts (`perform`
   * then only points QEMU at the destination): no stream in progress, every capability the stream
   * uses, and this host's TLS identity as a client (`loadTlsFiles`). Capabilities and the TLS
   * object left by a move that does not happen are harmless: a save sets its own (`baseMigrationCapabilities`).
   */
  private async prepareOutgoing(record: VmRecord, qmp: QmpClient, autoConverge: boolean): Promise<void> {
    const written = this.writeTlsFiles(record, 'client');
    written.catch(() => undefined);
    try {
      const current = await qmp.queryMigrate();
      if (inProgress(current.status)) {
        throw errors.conflict(`${this.label(record)} already has a migration in progress (${current.status})`);
      }
      await qmp.migrateSetCapabilities({ ...baseMigrationCapabilities, 'return-path': true, 'pause-before-switchover': true, 'auto-converge': autoConverge, multifd: true });
    } catch (cause) {
      await discardTlsFiles(written);
      throw cause;
    }
    await (await this.loadTlsFiles(qmp, written, 'client')).removed;
  }

  /** Writes this host's cluster identity where the VM's QEMU can read it (root:drover 0640), for `loadTlsFiles`. */
  private async writeTlsFiles(record: VmRecord, endpoint: 'server' | 'client'): Promise<string> {
    const identity = await loadAgentIdentity(this.o.tlsDir);
    if (!identity) throw errors.conflict('This agent has not joined a cluster: it has no certificate to encrypt a migration with');
    const dir = path.join(this.hooks.files(record.id).dir, 'migration-tls');
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { mode: 0o750 });
    try {
      await chown(dir, 0, this.o.account.gid);
      const cert = pemBlocks(identity.certPem)[0] ?? identity.certPem;
      const files: Record<string, string> = {
        'ca-cert.pem': identity.caPem,
        [`${endpoint}-cert.pem`]: cert,
        [`${endpoint}-key.pem`]: identity.keyPem,
        ...(identity.crlPem ? { 'ca-crl.pem': identity.crlPem } : {}),
        // A server without it generates DH parameters at object-add: 0.2–1 s of prime search (qemu-dh-params.ts).
        ...(endpoint === 'server' ? { 'dh-params.pem': qemuDhParamsPem } : {}),
      };
      await Promise.all(
        Object.entries(files).map(async ([name, content]) => {
          const file = path.join(dir, name);
          await writeFile(file, content, { mode: 0o640, flag: 'wx' });
          await chown(file, 0, this.o.account.gid);
          await chmod(file, 0o640);
        }),
      );
      return dir;
    } catch (cause) {
      await rm(dir, { recursive: true, force: true });
      throw cause;
    }
  }

  /**
   * QEMU loads the files `written` (`writeTlsFiles`, which may still be running: the destination
   * writes them while its QEMU starts) into its TLS object, and the peer's name into its authz
   * object (a `fresh` QEMU has neither yet: no object-del first). The directory's removal starts
   * as soon as QEMU has answered, whatever it answered (it keeps the files in memory); `removed`
   * is that removal, which the caller awaits before it answers.
   */
  private async loadTlsFiles(qmp: QmpClient, written: Promise<string>, endpoint: 'server' | 'client', options: { peerName?: string; fresh?: boolean } = {}): Promise<{ removed: Promise<void> }> {
    const dir = await written;
    const { peerName, fresh = false } = options;
    const loaded = Promise.all([
      (async () => {
        if (!fresh) await qmp.execute('object-del', { id: tlsObject }).catch(() => undefined);
        await qmp.execute('object-add', { 'qom-type': 'tls-creds-x509', id: tlsObject, dir, endpoint, 'verify-peer': true });
      })(),
      (async () => {
        if (!peerName) return;
        if (!fresh) await qmp.execute('object-del', { id: authzObject }).catch(() => undefined);
        await qmp.execute('object-add', { 'qom-type': 'authz-simple', id: authzObject, identity: `CN=${peerName}` });
      })(),
    ]);
    const removed = loaded.then(
      () => undefined,
      () => undefined,
    ).then(() => rm(dir, { recursive: true, force: true }));
    try {
      await loaded;
    } catch (cause) {
      await removed;
      throw cause;
    }
    return { removed };
  }

  // ------------------------------------------------------------ both sides

  capabilities(): Promise<MigrationCapabilities> {
    return probePostcopy(this.o.account).then((postcopy) => ({ postcopy }));
  }

  /** Read-only: what the destination needs to know (and what the manager checks before anything moves). */
  async plan(ref: string): Promise<MigrationPlan> {
    const record = this.hooks.find(ref);
    const live = this.hooks.live(record.id);
    // A running QEMU knows the size of every disk it has open (its format node): one QMP read instead
    // of a `qemu-img info` process per disk. A disk it does not have (or no QEMU) is read from its pool.
    const sizes = new Map<string, number>();
    if (live) {
      const nodes = await live.qmp.execute<Array<{ 'node-name'?: string; image?: { 'virtual-size'?: number } }>>('query-named-block-nodes', { flat: true }).catch(() => []);
      for (const node of nodes) if (node['node-name'] && typeof node.image?.['virtual-size'] === 'number') sizes.set(node['node-name'], node.image['virtual-size']);
    }
    const disks: MigrationDisk[] = await Promise.all(
      record.spec.disks.map(async (disk, index) => {
        const pool = this.o.pools.get(disk.pool);
        const nodeName = diskPlacement(record.slots, index, disk).nodeName;
        const sizeBytes = sizes.get(nodeName) ?? (await this.o.pools.describeVolume(disk.pool, disk.volume)).virtualBytes;
        return {
          nodeName,
          pool: disk.pool,
          volume: disk.volume,
          format: volumeFormat(disk.volume),
          sizeBytes,
          readOnly: disk.readOnly === true || disk.media === 'cdrom',
          shared: pool.shared,
          poolPath: pool.path,
        };
      }),
    );
    return {
      vmId: record.id,
      spec: { ...record.spec, cpuModel: record.spec.cpuModel ?? this.o.defaultCpuModel },
      ...(record.slots ? { slots: record.slots } : {}),
      snapshots: record.snapshots,
      disks,
      qemuStatus: live?.qemuStatus ?? 'none',
      mode: record.migration?.mode ?? (record.runtime ? 'live' : record.saved ? 'saved' : 'stopped'),
      wasRunning: record.migration?.wasRunning ?? (record.runtime ? live?.qemuStatus === 'running' : (record.saved?.wasRunning ?? false)),
    };
  }

  async status(ref: string): Promise<MigrationStatus> {
    const record = this.hooks.find(ref);
    const role = record.migration?.role;
    const live = this.hooks.live(record.id);
    if (!live) return { active: record.migration !== undefined, ...(role ? { role } : {}), status: 'gone' };
    // Asked alongside (QMP answers by id): at pre-switchover the guest waits for this answer.
    const [info, qemu] = await Promise.all([live.qmp.queryMigrate(), live.qmp.queryStatus()]);
    const status = { ...statusOf(info, role ?? 'source'), active: record.migration !== undefined, qemuStatus: qemu.status };
    const limit = role === 'source' ? this.downtimeLimits.get(record.id) : undefined;
    if (limit !== undefined) status.downtimeLimitMs = limit;
    if (role === 'source' && record.migration?.mirrors?.length) {
      const jobs = await live.qmp.execute<Array<{ device: string; status?: string; ready?: boolean; offset: number; len: number }>>('query-block-jobs');
      status.mirrors = record.migration.mirrors.map((m) => {
        const job = jobs.find((j) => j.device === m.job);
        return { nodeName: m.nodeName, status: job ? (job.status ?? (job.ready ? 'ready' : 'running')) : 'gone', offset: job?.offset ?? 0, length: job?.len ?? 0 };
      });
    }
    if (!role) delete status.role;
    return status;
  }

  // ------------------------------------------------------------ source

  async begin(ref: string, request: MigrationBegin): Promise<MigrationPlan> {
    const record = this.hooks.find(ref);
    if (record.migration?.role === 'source' && record.migration.operationId === request.operationId) return this.plan(record.id);
    const mode = request.mode ?? 'live';
    const release = this.hooks.lock.hold(record.id, 'migrate-out', this.label(record));
    let launched = false;
    try {
      let live = this.hooks.live(record.id);
      let wasRunning: boolean;
      if (mode === 'live') {
        if (!record.runtime || !live) throw errors.conflict(`Cannot migrate ${this.label(record)}: it is not running`, { state: 'stopped' });
        live.qemuStatus = (await live.qmp.queryStatus()).status;
        if (live.qemuStatus !== 'running' && live.qemuStatus !== 'paused') {
          throw errors.conflict(`Cannot migrate ${this.label(record)}: QEMU is "${live.qemuStatus}"`, { qemuStatus: live.qemuStatus });
        }
        wasRunning = live.qemuStatus === 'running';
      } else {
        // A cold move: the VM's QEMU runs paused here only to carry its disks (and saved state) over the same streams.
        if (record.runtime) throw errors.conflict(`Cannot move ${this.label(record)} cold: it has a QEMU`, { state: 'running' });
        if (mode === 'saved' && !record.saved) throw errors.conflict(`${this.label(record)} has no saved state`, { state: 'stopped' });
        if (mode === 'stopped' && record.saved) throw errors.conflict(`${this.label(record)} is saved; move it as saved`, { state: 'saved' });
        wasRunning = mode === 'saved' ? record.saved!.wasRunning : false;
        live = mode === 'saved' ? await this.hooks.restorePaused(record) : await this.hooks.launchPaused(record);
        launched = true;
      }
      // Asked now, alongside the stream's settings, so that `perform` only points QEMU at the destination.
      const pause = this.mustPauseForCopy(record, mode, live.qmp);
      pause.catch(() => undefined);
      await this.prepareOutgoing(record, live.qmp, request.autoConverge ?? true);
      this.pauseForCopy.set(record.id, pause);
      record.migration = { role: 'source', operationId: request.operationId, mode, peer: request.destination, since: new Date().toISOString(), wasRunning };
      await this.hooks.persist(record);
      this.releases.set(record.id, release);
      return await this.plan(record.id);
    } catch (cause) {
      if (launched && record.runtime) await this.hooks.killAndForget(record).catch(() => undefined);
      delete record.migration;
      if (!this.releases.has(record.id)) release();
      throw cause;
    }
  }

  /** NBD clients to the destination's exports and one mirror job per local disk; answers once every job is READY. */
  async mirror(ref: string, request: MirrorRequest, signal?: AbortSignal): Promise<MigrationStatus> {
    const record = this.hooks.find(ref);
    const marker = this.marker(record, 'source');
    const qmp = this.qmp(record);
    // The TLS object `begin` loaded encrypts the NBD connections and then the stream.
    marker.mirrors = request.nbd.exports.map((e) => ({ nodeName: e.nodeName, job: `mig-${e.nodeName}`, target: `mig-${e.nodeName}-nbd` }));
    await this.hooks.persist(record);
    const timeoutMs = request.timeoutMs ?? 30 * 60_000;
    const ready = new Set<string>();
    let failure: string | undefined;
    const onEvent = (event: QmpEvent) => {
      const device = String(event.data.device ?? '');
      if (!marker.mirrors?.some((m) => m.job === device)) return;
      if (event.event === 'BLOCK_JOB_READY') ready.add(device);
      if (event.event === 'BLOCK_JOB_COMPLETED' || event.event === 'BLOCK_JOB_CANCELLED') failure ??= `mirror ${device} ended before switchover: ${String(event.data.error ?? event.event)}`;
      if (event.event === 'BLOCK_JOB_ERROR') failure ??= `mirror ${device}: I/O error (${String(event.data.operation)})`;
    };
    qmp.on('event', onEvent);
    try {
      for (const [index, exp] of request.nbd.exports.entries()) {
        const m = marker.mirrors[index]!;
        await qmp.blockdevAdd({
          driver: 'nbd',
          'node-name': m.target,
          server: { type: 'inet', host: request.nbd.host, port: String(request.nbd.port) },
          export: exp.name,
          'tls-creds': tlsObject,
          'tls-hostname': request.tlsHostname,
        });
        await qmp.execute('blockdev-mirror', { 'job-id': m.job, device: m.nodeName, target: m.target, sync: 'full', ...(request.speed ? { speed: request.speed } : {}) });
      }
      const deadline = Date.now() + timeoutMs;
      const stallMs = request.stallMs ?? 15_000;
      let copied = -1;
      let lastMove = Date.now();
      while (ready.size < marker.mirrors.length) {
        if (failure) throw errors.unavailable(failure);
        signal?.throwIfAborted();
        if (Date.now() > deadline) throw errors.timeout(`The disk mirrors of ${this.label(record)} were not in sync within ${timeoutMs} ms`);
        // Events can be missed across an agent restart: ask the jobs too.
        const jobs = await qmp.execute<Array<{ device: string; ready?: boolean; offset?: number }>>('query-block-jobs');
        for (const job of jobs) if (job.ready) ready.add(job.device);
        // A cut link stalls an NBD client for as long as TCP retries: no byte moves. End it now (yank the NBD connections).
        const offsets = jobs.filter((j) => marker.mirrors!.some((m) => m.job === j.device)).reduce((sum, j) => sum + (j.offset ?? 0), 0);
        if (offsets !== copied) {
          copied = offsets;
          lastMove = Date.now();
        } else if (ready.size < marker.mirrors.length && Date.now() - lastMove > stallMs) {
          await this.yankMirrors(qmp, marker.mirrors);
          throw errors.unavailable(`The disk mirror of ${this.label(record)} made no progress for ${stallMs} ms; its NBD connection was yanked`, { reason: 'stalled' });
        }
        if (ready.size < marker.mirrors.length) await new Promise((r) => setTimeout(r, 200));
      }
      return await this.status(record.id);
    } finally {
      qmp.off('event', onEvent);
    }
  }

  async perform(ref: string, request: PerformRequest): Promise<MigrationStatus> {
    const record = this.hooks.find(ref);
    this.marker(record, 'source');
    const qmp = this.qmp(record);
    // The capabilities and the TLS object are QEMU's since `begin`: here it is told where to, and starts.
    // The downtime steps (docs/migration.md): a short pause first, raised by await-switchover at each pass that does not converge.
    const downtimeLimit = downtimeLimitForPass(request.downtimeMs, 0);
    this.downtimeLimits.set(record.id, downtimeLimit);
    await qmp.migrateSetParameters({
      'downtime-limit': downtimeLimit,
      'max-bandwidth': request.bandwidth,
      'tls-creds': tlsObject,
      'tls-hostname': request.tlsHostname,
      'multifd-channels': migrationMultifdChannels,
    });
    // Under TCG, QEMU 7.2 loses guest writes during a live copy when the guest's RAM block is a
    // multiple of 256 KiB (its dirty-bitmap fast path does not re-arm the vCPU's TLB write
    // tracking: a page written again after it was sent is not sent again, and the destination's
    // guest panics). The agent gives TCG guests 8 KiB less RAM (`qemuMemoryArg`), which takes QEMU's
    // page-by-page path, and the copy stays live. A QEMU started before that (an aligned RAM size
    // under TCG) is still paused while its memory is copied: it continues on the destination (or
    // here again after a cancel: `wasRunning` is in the marker). KVM tracks dirty pages itself.
    // (Asked at `begin`; again here after an agent restart.)
    if (await (this.pauseForCopy.get(record.id) ?? this.mustPauseForCopy(record, record.migration?.mode, qmp))) {
      const live = this.hooks.live(record.id)!;
      if ((await qmp.queryStatus()).status === 'running') {
        await qmp.stop();
        live.qemuStatus = 'paused';
      }
    }
    try {
      await qmp.migrate(request.uri);
    } catch (cause) {
      // A second perform of the same move (a manager asking again): QEMU refuses the second stream.
      const status = (await qmp.queryMigrate().catch(() => undefined))?.status;
      if (inProgress(status)) {
        throw errors.conflict(`${this.label(record)} already has a migration in progress (${status})`);
      }
      throw cause;
    }
    return this.status(record.id);
  }

  /** Whether a live move's QEMU must be paused for its copy: under TCG with a RAM size QEMU 7.2 cannot copy live (see `perform`). */
  private async mustPauseForCopy(record: VmRecord, mode: MigrationMode | undefined, qmp: QmpClient): Promise<boolean> {
    if (mode !== 'live' || record.runtime?.accel !== 'tcg') return false;
    // A multiple of 256 KiB takes QEMU's dirty-bitmap fast path, which loses writes under TCG.
    const summary = await qmp.execute<{ 'base-memory': number }>('query-memory-size-summary');
    return summary['base-memory'] % (256 * 1024) === 0;
  }

  /**
   * Waits until the source reaches `pre-switchover` (the guest is paused
   * there), then finishes the disk mirrors without pivoting (block-job-cancel
   * on a READY job) and drops their NBD clients. Also answers when the
   * migration failed or was cancelled: the status says which.
   */
  async awaitSwitchover(ref: string, request: SwitchoverWait, signal?: AbortSignal): Promise<MigrationStatus> {
    const record = this.hooks.find(ref);
    const marker = this.marker(record, 'source');
    const qmp = this.qmp(record);
    const deadline = Date.now() + request.timeoutMs;
    let last: MigrationInfo | undefined;
    let pass = 0;
    for (;;) {
      // A new pass of pre-copy (MIGRATION_PASS) may raise the downtime-limit; a MIGRATION event may be the switchover.
      const wait = Math.max(100, Math.min(1000, deadline - Date.now()));
      const waiters = [qmp.waitForEvent('MIGRATION', undefined, wait), ...(request.downtimeMs !== undefined ? [qmp.waitForEvent('MIGRATION_PASS', undefined, wait)] : [])];
      for (const waiter of waiters) waiter.catch(() => undefined);
      const info = await qmp.queryMigrate();
      last = info;
      const status = info.status ?? 'none';
      if (status === 'pre-switchover') break;
      // The status answered is the one just judged: a `pre-switchover` reached in between is
      // only ever answered after the mirrors are finished (the next call does that).
      if (terminal.has(status) || status === 'none' || Date.now() > deadline || signal?.aborted) return { ...(await this.status(record.id)), status };
      if (status === 'active' && request.downtimeMs !== undefined) await this.stepDowntime(record, qmp, request.downtimeMs, info.ram?.['dirty-sync-count'] ?? 0);
      // The guest is paused from the `pre-switchover` event on: go on at once, without asking QEMU again.
      const event = await Promise.race(waiters).catch(() => undefined);
      if (event?.event === 'MIGRATION_PASS') pass = Math.max(pass, Number(event.data.pass) || 0);
      if (event?.event === 'MIGRATION' && event.data.status === 'pre-switchover') break;
    }
    if (marker.mirrors?.length || !last) {
      await this.finishMirrors(record, marker, qmp);
      return this.status(record.id);
    }
    // The guest waits at pre-switchover for the manager: answer with pre-copy's last figures, without asking QEMU again.
    const figures = statusOf(last, 'source');
    const limit = this.downtimeLimits.get(record.id);
    return { ...figures, active: true, status: 'pre-switchover', dirtySyncCount: Math.max(pass, figures.dirtySyncCount ?? 0), ...(limit !== undefined ? { downtimeLimitMs: limit } : {}) };
  }

  /**
   * Sets QEMU's downtime-limit for the pass pre-copy is in (`downtimeLimitForPass`), when it
   * differs from the one set last. QEMU takes a new limit into its threshold within 100 ms.
   */
  private async stepDowntime(record: VmRecord, qmp: QmpClient, maxMs: number, pass: number): Promise<void> {
    const wanted = downtimeLimitForPass(maxMs, pass);
    if (this.downtimeLimits.get(record.id) === wanted) return;
    await qmp.migrateSetParameters({ 'downtime-limit': wanted });
    this.downtimeLimits.set(record.id, wanted);
    this.o.logger.info({ vm: record.id, pass, downtimeLimitMs: wanted }, 'pre-copy did not converge: downtime-limit raised');
  }

  private async finishMirrors(record: VmRecord, marker: MigrationMarker, qmp: QmpClient): Promise<void> {
    for (const m of [...(marker.mirrors ?? [])]) {
      const jobs = await qmp.execute<Array<{ device: string; ready?: boolean }>>('query-block-jobs');
      const job = jobs.find((j) => j.device === m.job);
      if (job) {
        if (!job.ready) throw errors.unavailable(`Mirror of disk ${m.nodeName} of ${this.label(record)} is not in sync at switchover`);
        const completed = qmp.waitForEvent('BLOCK_JOB_COMPLETED', (data) => data.device === m.job, this.o.qmpTimeoutMs * 6);
        completed.catch(() => undefined);
        // On a READY mirror this completes the job without pivoting: the source keeps its disk.
        await qmp.execute('block-job-cancel', { device: m.job });
        const event = await completed;
        if (event.data.error !== undefined) throw errors.unavailable(`Mirror of disk ${m.nodeName} failed at switchover: ${String(event.data.error)}`);
        const offset = Number(event.data.offset);
        const len = Number(event.data.len);
        if (offset !== len) throw errors.unavailable(`Mirror of disk ${m.nodeName} ended at ${offset} of ${len} bytes`);
      }
      await qmp.blockdevDel(m.target).catch(() => undefined);
      marker.mirrors = marker.mirrors!.filter((x) => x !== m);
      await this.hooks.persist(record);
    }
  }

  /** Leaves pre-switchover: QEMU sends the last pages and the devices; answers once the source says completed (or failed). */
  async continue(ref: string, timeoutMs: number): Promise<MigrationStatus> {
    const record = this.hooks.find(ref);
    this.marker(record, 'source');
    const qmp = this.qmp(record);
    if (record.migration?.mirrors?.length) {
      const info = await qmp.queryMigrate();
      if (info.status === 'pre-switchover') throw errors.conflict(`The disk mirrors of ${this.label(record)} are not finished; await the switchover first`);
    }
    // The guest waits at pre-switchover: `migrate-continue` at once. QEMU refuses it in any other
    // state ("not in expected state"), which leaves the stream as it was (a second call of a
    // recovering manager, say): then the state is just read below.
    const done = qmp.waitForEvent('MIGRATION', (data) => terminal.has(String(data.status)), timeoutMs);
    done.catch(() => undefined);
    const continued = await qmp.migrateContinue('pre-switchover').then(
      () => true,
      () => false,
    );
    if (continued) await done.catch(() => undefined);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const now = await qmp.queryMigrate();
      if (terminal.has(now.status ?? '') || Date.now() > deadline) {
        // The guest waits for the destination's `cont`: answer at once. Right after `completed` QEMU may
        // still report total-time and downtime 0 (its thread sets them just after the event): those are
        // left out, and `confirm` answers with them.
        const status = statusOf(now, 'source');
        if (status.status === 'completed' && !status.totalTimeMs) {
          delete status.totalTimeMs;
          delete status.downtimeMs;
        }
        return status;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Drops the NBD connections of the mirror targets at once: in-flight requests fail instead of waiting for TCP. */
  private async yankMirrors(qmp: QmpClient, mirrors: Array<{ target: string }>): Promise<void> {
    await qmp.execute('yank', { instances: mirrors.map((m) => ({ type: 'block-node', 'node-name': m.target })) }).catch(() => undefined);
  }

  /** Fails a stuck stream at once (the link is gone): QEMU gives up instead of waiting for TCP. */
  async yank(ref: string): Promise<void> {
    const record = this.hooks.find(ref);
    const live = this.hooks.live(record.id);
    if (live) await live.qmp.yankMigration().catch(() => undefined);
  }

  /**
   * Undoes an outgoing migration that did not hand over: the stream is
   * cancelled (yanked if it does not stop), the mirrors are dropped, and the
   * guest runs on here as it did before. Idempotent.
   */
  async cancel(ref: string, options: { resume: boolean }): Promise<VmInfo> {
    const record = this.hooks.find(ref);
    const marker = record.migration?.role === 'source' ? record.migration : undefined;
    const live = this.hooks.live(record.id);
    if (live) {
      const qmp = live.qmp;
      let info = await qmp.queryMigrate();
      if (inProgress(info.status)) {
        await qmp.migrateCancel().catch(() => undefined);
        for (let i = 0; i < 30; i++) {
          info = await qmp.queryMigrate();
          if (terminal.has(info.status ?? '')) break;
          if (i === 10) await qmp.yankMigration().catch(() => undefined);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      for (const m of marker?.mirrors ?? []) {
        await qmp.execute('block-job-cancel', { device: m.job, force: true }).catch(() => undefined);
      }
      for (let i = 0; i < 50 && (marker?.mirrors?.length ?? 0) > 0; i++) {
        const jobs = await qmp.execute<Array<{ device: string }>>('query-block-jobs');
        if (!jobs.some((j) => marker!.mirrors!.some((m) => m.job === j.device))) break;
        // A job stuck on a cut link does not end on cancel: its NBD connection is yanked.
        if (i === 10) await this.yankMirrors(qmp, marker!.mirrors!);
        if (i === 20) for (const m of marker!.mirrors!) await qmp.execute('block-job-cancel', { device: m.job, force: true }).catch(() => undefined);
        await new Promise((r) => setTimeout(r, 100));
      }
      for (const m of marker?.mirrors ?? []) await qmp.blockdevDel(m.target).catch(() => undefined);
      const status = (await qmp.queryStatus()).status;
      if (marker?.mode === 'stopped' || marker?.mode === 'saved') {
        // A cold move's QEMU existed only for the move: the VM is stopped (or saved, its file kept) again.
        await this.hooks.killAndForget(record);
      } else {
        // After a completed stream the source is postmigrate: `cont` takes its disks back (and fails on a lock the destination holds).
        if (options.resume && (marker?.wasRunning ?? true) && status !== 'running') await qmp.cont();
        live.qemuStatus = (await qmp.queryStatus()).status;
        await qmp.execute('object-del', { id: tlsObject }).catch(() => undefined);
      }
    }
    if (marker) {
      delete record.migration;
      await this.hooks.persist(record);
    }
    this.release(record);
    return this.hooks.describe(record);
  }

  /**
   * After the destination runs the guest: the source's QEMU ends, its record goes, and its local
   * volumes are deleted. Answers with the serial log's last `serialTailBytes` bytes, read before
   * the directory goes (the manager's guest-measured downtime).
   */
  async confirm(ref: string, request: ConfirmRequest): Promise<ConfirmAnswer> {
    const record = this.hooks.find(ref);
    const live = this.hooks.live(record.id);
    let migration: MigrationStatus | undefined;
    // The console's tail is read while QEMU is asked (the guest here is paused since the switchover: it writes no more).
    const tail = request.serialTailBytes ? this.serialTail(record, request.serialTailBytes) : Promise.resolve(undefined);
    tail.catch(() => undefined);
    if (live) {
      const [{ status }, info] = await Promise.all([live.qmp.queryStatus(), live.qmp.queryMigrate()]);
      if (status === 'running') throw errors.conflict(`${this.label(record)} is running here: the migration did not hand it over`);
      if (info.status !== 'completed') throw errors.conflict(`${this.label(record)} has not completed its migration here (${info.status ?? 'none'})`);
      migration = { ...statusOf(info, 'source'), active: false };
    }
    const serialTail = await tail;
    await this.hooks.handOver(record, { forgotten: true });
    this.release(record);
    await this.hooks.forget(record);
    for (const v of request.deleteVolumes) {
      try {
        await this.o.pools.deleteVolume(v.pool, v.volume);
      } catch (cause) {
        if (!(cause instanceof DroverError && cause.code === 'not_found')) throw cause;
      }
    }
    return { ...(serialTail === undefined ? {} : { serialTail }), ...(migration ? { migration } : {}) };
  }

  /** The last `bytes` bytes of the VM's serial log. */
  private async serialTail(record: VmRecord, bytes: number): Promise<string> {
    const handle = await this.hooks.openSerialLog(record.id);
    if (!handle) return '';
    try {
      const size = (await handle.stat()).size;
      const length = Math.min(bytes, size);
      const buffer = Buffer.alloc(length);
      const { bytesRead } = await handle.read(buffer, 0, length, size - length);
      return buffer.subarray(0, bytesRead).toString('utf8');
    } finally {
      await handle.close();
    }
  }

  // ------------------------------------------------------------ destination

  /** Builds the same machine here, paused and listening for the stream (and, for local disks, NBD exports to mirror into). */
  async incoming(request: IncomingRequest): Promise<IncomingReady> {
    const { plan } = request;
    const existing = this.hooks.records().find((r) => r.id === plan.vmId);
    if (existing) throw errors.conflict(`VM "${existing.name}" (${plan.vmId}) already exists on this host`);
    // The image volumes it boots from are here, or nothing is made (the manager imports them, then asks again).
    if (request.ensure) await this.o.pools.requireVolumes(request.ensure, plan.vmId);
    const created: Array<{ pool: string; volume: string }> = [];
    const mirror = new Set(request.mirror);
    let record: VmRecord | undefined;
    try {
      for (const disk of plan.disks) {
        if (mirror.has(disk.nodeName)) {
          if (disk.readOnly) throw errors.invalid(`Disk ${disk.nodeName} is read-only: it is not mirrored`);
          if (await this.o.pools.exists(disk.pool, disk.volume)) throw errors.conflict(`Volume "${disk.pool}/${disk.volume}" already exists on this host; it would be overwritten`);
          await this.o.pools.createVolume(disk.pool, { name: disk.volume, sizeBytes: Math.max(disk.sizeBytes, 1024 * 1024) });
          created.push({ pool: disk.pool, volume: disk.volume });
          const info = await this.o.pools.describeVolume(disk.pool, disk.volume);
          if (info.virtualBytes !== disk.sizeBytes) throw errors.invalid(`Volume "${disk.pool}/${disk.volume}" would be ${info.virtualBytes} bytes here, ${disk.sizeBytes} on the source`);
        } else if (!disk.readOnly) {
          const pool = this.o.pools.get(disk.pool);
          if (!pool.shared || !disk.shared || pool.path !== disk.poolPath) {
            throw errors.conflict(`Disk ${disk.nodeName} (${disk.pool}/${disk.volume}) is not on a pool shared by both hosts; it must be mirrored`);
          }
          if (!(await this.o.pools.exists(disk.pool, disk.volume))) throw errors.conflict(`Shared volume "${disk.pool}/${disk.volume}" is not visible on this host`);
        }
      }
      const marker: MigrationMarker = { role: 'destination', operationId: request.operationId, peer: request.sourceName, since: new Date().toISOString(), createdVolumes: created };
      record = await this.hooks.define(plan.spec, {
        ...(plan.slots ? { slots: plan.slots as DeviceSlots } : {}),
        snapshots: plan.snapshots as SnapshotInfo[],
        migration: marker,
      });
      this.releases.set(record.id, this.hooks.lock.hold(record.id, 'migrate-in', this.label(record)));
      // The TLS files are written while QEMU starts; they are gone again before this answers, whatever happens.
      const written = this.writeTlsFiles(record, 'server');
      written.catch(() => undefined);
      let live: Live;
      try {
        live = await this.hooks.launchIncoming(record);
      } catch (cause) {
        await discardTlsFiles(written);
        throw cause;
      }
      const qmp = live.qmp;
      // Sent at once (QEMU runs them in order): the stream's settings, then the TLS objects once the files are written.
      const settings = Promise.all([
        qmp.migrateSetCapabilities({ ...baseMigrationCapabilities, 'return-path': true, 'late-block-activate': true, multifd: true }),
        qmp.migrateSetParameters({ 'tls-creds': tlsObject, 'tls-authz': authzObject, 'multifd-channels': migrationMultifdChannels }),
      ]);
      settings.catch(() => undefined);
      const tlsFiles = await this.loadTlsFiles(qmp, written, 'server', { peerName: request.sourceName, fresh: true });
      await settings;
      const address = this.o.address;
      let nbd: IncomingReady['nbd'];
      if (mirror.size > 0) {
        const port = await freePort(address);
        await qmp.execute('nbd-server-start', { addr: { type: 'inet', data: { host: address, port: String(port) } }, 'tls-creds': tlsObject, 'tls-authz': authzObject });
        const exports = plan.disks.filter((d) => mirror.has(d.nodeName)).map((d) => ({ nodeName: d.nodeName, name: d.nodeName }));
        for (const e of exports) {
          await qmp.execute('block-export-add', { type: 'nbd', id: `mig-${e.nodeName}`, 'node-name': e.nodeName, writable: true, name: e.name });
        }
        marker.exports = exports.map((e) => `mig-${e.nodeName}`);
        nbd = { host: address, port, exports };
      }
      const port = await freePort(address);
      const uri = `tcp:${address}:${port}`;
      await qmp.migrateIncoming(uri);
      await Promise.all([this.hooks.persist(record), tlsFiles.removed]);
      return { uri, tlsHostname: address, ...(nbd ? { nbd } : {}) };
    } catch (cause) {
      if (record) await this.abort(record.id).catch((error: unknown) => this.o.logger.error({ err: error }, 'cleaning up a failed incoming migration'));
      else for (const v of created) await this.o.pools.deleteVolume(v.pool, v.volume).catch(() => undefined);
      throw cause;
    }
  }

  /**
   * The destination's `completed` is the truth: waits for it, stops the NBD
   * server, and starts the guest here (`cont`). Idempotent once done.
   */
  async finish(ref: string, request: FinishRequest): Promise<VmInfo> {
    const timeoutMs = request.timeoutMs ?? 120_000;
    const after = request.after ?? 'run';
    const record = this.hooks.find(ref);
    // Already finished (a recovering manager asks again): the VM is as it was left.
    if (!record.migration) return this.hooks.describe(record);
    const marker = this.marker(record, 'destination');
    const live = this.hooks.live(record.id);
    if (!record.runtime || !live) throw errors.unavailable(`The destination QEMU of ${this.label(record)} is gone`);
    const qmp = live.qmp;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const waiter = qmp.waitForEvent('MIGRATION', undefined, Math.max(100, Math.min(1000, deadline - Date.now())));
      waiter.catch(() => undefined);
      const info = await qmp.queryMigrate();
      if (info.status === 'completed') break;
      if (info.status === 'failed' || info.status === 'cancelled') throw errors.unavailable(`The incoming migration of ${this.label(record)} ${info.status}: ${info['error-desc'] ?? 'no reason given'}`);
      if (Date.now() > deadline) throw errors.timeout(`The incoming migration of ${this.label(record)} did not complete within ${timeoutMs} ms (${info.status ?? 'none'})`);
      await waiter.catch(() => undefined);
    }
    // Sent at once, answered in order (QEMU runs one monitor's commands one after another): the NBD
    // exports and server, the TLS object, then `cont` and the status; a clean-up that fails is left.
    const cleanups = [
      ...(marker.exports ?? []).map((id) => qmp.execute('block-export-del', { id })),
      ...(marker.exports?.length ? [qmp.execute('nbd-server-stop')] : []),
      qmp.execute('object-del', { id: tlsObject }),
    ].map((step) => step.catch(() => undefined));
    if (after === 'stop') {
      // A stopped VM moved cold: its disks are here now, its QEMU has done its job.
      await Promise.all(cleanups);
      await this.hooks.handOver(record);
    } else {
      // `cont` runs the guest and activates the images (late-block-activate); a guest saved
      // paused stays paused, its images inactive until it is resumed.
      const [, , status] = await Promise.all([Promise.all(cleanups), after === 'run' ? qmp.cont() : undefined, qmp.queryStatus()]);
      live.qemuStatus = status.status;
    }
    delete record.migration;
    await this.hooks.persist(record);
    this.release(record);
    return this.hooks.describe(record);
  }

  /** Undoes an incoming migration: the destination QEMU ends, the record and the volumes made for it go. Idempotent. */
  async abort(ref: string): Promise<void> {
    let record: VmRecord;
    try {
      record = this.hooks.find(ref);
    } catch (cause) {
      if (cause instanceof DroverError && cause.code === 'not_found') return;
      throw cause;
    }
    if (!record.migration || record.migration.role !== 'destination') {
      throw errors.conflict(`${this.label(record)} is not migrating into this host; refusing to remove it`);
    }
    const live = this.hooks.live(record.id);
    if (live) {
      const status = (await live.qmp.queryStatus().catch(() => ({ status: 'unknown' }))).status;
      if (status === 'running') throw errors.conflict(`${this.label(record)} already runs on this host; it cannot be aborted`);
      await live.qmp.yankMigration().catch(() => undefined);
    }
    await this.hooks.killAndForget(record);
    const created = record.migration.createdVolumes ?? [];
    this.release(record);
    await this.hooks.forget(record);
    for (const v of created) {
      try {
        await this.o.pools.deleteVolume(v.pool, v.volume);
      } catch (cause) {
        if (!(cause instanceof DroverError && cause.code === 'not_found')) throw cause;
      }
    }
  }
}

const VmParams = Type.Object({ vm: Type.String({ minLength: 1, maxLength: 128 }) });
const errorResponses = { 204: Type.Null(), 400: ErrorBody, 401: ErrorBody, 404: ErrorBody, 409: ErrorBody, 503: ErrorBody, 504: ErrorBody };
const Timeout = Type.Object({ timeoutMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 86_400_000 })) }, { additionalProperties: false });
const CancelBody = Type.Object({ resume: Type.Optional(Type.Boolean()) }, { additionalProperties: false });

/** The agent routes of live migration (docs/agent-api.md); the manager's certificate only, like every route. */
export async function migrationRoutes(scope: FastifyInstance, migrations: MigrationService): Promise<void> {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>();
  /** An aborted request (the manager gave up or was killed) stops a long wait. */
  const abortOf = (request: { raw: NodeJS.EventEmitter }): AbortSignal => {
    const controller = new AbortController();
    request.raw.once('close', () => controller.abort());
    return controller.signal;
  };
  app.get('/v1/migration/capabilities', { schema: { response: { 200: MigrationCapabilities } } }, async () => migrations.capabilities());
  app.get('/v1/vms/:vm/migration/plan', { schema: { params: VmParams, response: { 200: MigrationPlan, ...errorResponses } } }, async (request) => migrations.plan(request.params.vm));
  app.get('/v1/vms/:vm/migration', { schema: { params: VmParams, response: { 200: MigrationStatus, ...errorResponses } } }, async (request) => migrations.status(request.params.vm));
  app.post('/v1/vms/:vm/migration/begin', { schema: { params: VmParams, body: MigrationBegin, response: { 200: MigrationPlan, ...errorResponses } } }, async (request) =>
    migrations.begin(request.params.vm, request.body),
  );
  app.post('/v1/vms/:vm/migration/mirror', { schema: { params: VmParams, body: MirrorRequest, response: { 200: MigrationStatus, ...errorResponses } } }, async (request) =>
    migrations.mirror(request.params.vm, request.body, abortOf(request)),
  );
  app.post('/v1/vms/:vm/migration/perform', { schema: { params: VmParams, body: PerformRequest, response: { 200: MigrationStatus, ...errorResponses } } }, async (request) =>
    migrations.perform(request.params.vm, request.body),
  );
  app.post('/v1/vms/:vm/migration/await-switchover', { schema: { params: VmParams, body: SwitchoverWait, response: { 200: MigrationStatus, ...errorResponses } } }, async (request) =>
    migrations.awaitSwitchover(request.params.vm, request.body, abortOf(request)),
  );
  app.post('/v1/vms/:vm/migration/continue', { schema: { params: VmParams, body: Timeout, response: { 200: MigrationStatus, ...errorResponses } } }, async (request) =>
    migrations.continue(request.params.vm, request.body.timeoutMs ?? 120_000),
  );
  app.post('/v1/vms/:vm/migration/yank', { schema: { params: VmParams, response: { ...errorResponses } } }, async (request, reply) => {
    await migrations.yank(request.params.vm);
    return reply.status(204).send(null);
  });
  app.post('/v1/vms/:vm/migration/cancel', { schema: { params: VmParams, body: CancelBody, response: { 200: VmInfo, ...errorResponses } } }, async (request) =>
    migrations.cancel(request.params.vm, { resume: request.body.resume ?? true }),
  );
  app.post('/v1/vms/:vm/migration/confirm', { schema: { params: VmParams, body: ConfirmRequest, response: { 200: ConfirmAnswer, ...errorResponses } } }, async (request) =>
    migrations.confirm(request.params.vm, request.body),
  );
  app.post('/v1/migrations/incoming', { schema: { body: IncomingRequest, response: { 200: IncomingReady, ...errorResponses } } }, async (request) => migrations.incoming(request.body));
  app.post('/v1/migrations/incoming/:vm/finish', { schema: { params: VmParams, body: FinishRequest, response: { 200: VmInfo, ...errorResponses } } }, async (request) =>
    migrations.finish(request.params.vm, request.body),
  );
  app.post('/v1/migrations/incoming/:vm/abort', { schema: { params: VmParams, response: { ...errorResponses } } }, async (request, reply) => {
    await migrations.abort(request.params.vm);
    return reply.status(204).send(null);
  });
}

import { randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, chown, mkdir, open, readdir, readFile, rename, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { DroverError, errors } from '@drover/core';
import type { SnapshotInfo, SnapshotRequest, VmDisk, VmInfo, VmNic, VmSpec, VmState } from '@drover/api';
import {
  baseMigrationCapabilities,
  buildQemuArgv,
  killProcess,
  plainMigrationParameters,
  QmpClient,
  QemuImg,
  readProcessInfo,
  spawnQemu,
  waitForExit,
  type Accelerator,
  type DiskConfig,
  type QemuLaunchConfig,
} from '@drover/qemu';
import type { Account } from './account.js';
import { KeyedLock } from './keyed-lock.js';
import { volumeFormat, type PoolRegistry } from './pools.js';
import { seedDigest, seedFiles, writeSeedIso } from './cloud-init-seed.js';
import { SerialHub } from './serial-hub.js';
import { checkNicMode, diskPlacement, hotplugRootPorts, initialSlots, nicPlacement, randomMac, rootPortsOf, VmDevices, type DeviceSlots } from './vm-devices.js';
import { receiveStateToFile, sendFileToState } from './state-stream.js';
import type { MigrationHooks, MigrationMarker } from './migration.js';

/** What the agent keeps on disk per VM (`<stateDir>/vms/<id>/vm.json`). */
export interface VmRecord {
  id: string;
  name: string;
  spec: VmSpec;
  createdAt: string;
  snapshots: SnapshotInfo[];
  /** Present while a QEMU process exists for the VM. */
  runtime?: { pid: number; startTime: number; accel: Accelerator; startedAt: string };
  saved?: { file: string; bytes: number; savedAt: string; wasRunning: boolean };
  lastError?: string;
  /** Hotplug slots of the devices in the QEMU that runs or was saved (see vm-devices.ts); absent for a QEMU of an older agent. */
  slots?: DeviceSlots;
  /** Digest of the cloud-init seed in `cidata.iso` (see `ensureSeed`). */
  seedDigest?: string;
  /** Set while the VM migrates out of or into this host (migration.ts); survives an agent restart. */
  migration?: MigrationMarker;
}

/** In-memory companions of a live QEMU. */
export interface Live {
  qmp: QmpClient;
  serial: SerialHub;
  qemuStatus: string;
  /** Set while the agent itself ends the process, so the exit is not reported as a crash. */
  expectingExit: boolean;
}

export interface VmServiceOptions {
  stateDir: string;
  account: Account;
  pools: PoolRegistry;
  accel: Accelerator;
  capacity: { cpus: number; memoryMiB: number };
  cpuAllocationRatio: number;
  cpuModels: string[];
  defaultCpuModel: string;
  stopTimeoutMs: number;
  qmpTimeoutMs: number;
  /** fdatasync a saved state before QEMU quits (default); off trades durability on power loss for speed. */
  durableSaves: boolean;
  qemuBinary: string;
  logger: Logger;
  onChange?: (vm: VmInfo) => void;
}

const transitional: Record<string, VmState> = {
  start: 'starting',
  stop: 'stopping',
  'force-off': 'stopping',
  save: 'saving',
  restore: 'restoring',
};

function qemuStatusToState(status: string): VmState {
  return status === 'running' ? 'running' : 'paused';
}

/**
 * The VM lifecycle on this host: define, start, stop, pause, save, restore,
 * snapshots. QEMU processes are detached and outlive the agent; on start the
 * agent reattaches to every one still running (`reattach`).
 */
export class VmService {
  private readonly records = new Map<string, VmRecord>();
  private readonly live = new Map<string, Live>();
  private readonly lock = new KeyedLock();
  private readonly vmsDir: string;

  /** Disks and NICs added and removed, running or not (vm-devices.ts). */
  private readonly devices: VmDevices<VmRecord>;

  constructor(private readonly o: VmServiceOptions) {
    this.vmsDir = path.join(o.stateDir, 'vms');
    this.devices = new VmDevices<VmRecord>({
      find: (ref) => this.find(ref),
      records: () => this.records.values(),
      live: (id) => this.live.get(id),
      lock: this.lock,
      persist: (record) => this.persist(record),
      describe: (record) => this.describe(record),
      stateOf: (record) => this.stateOf(record),
      pools: o.pools,
      logger: o.logger,
      unplugTimeoutMs: o.qmpTimeoutMs,
    });
  }

  // ---------------------------------------------------------------- records

  private vmDir(id: string): string {
    return path.join(this.vmsDir, id);
  }

  /**
   * A VM's directory is root's (group drover, 0750): the agent writes its record,
   * QEMU's log and saved states there, where QEMU cannot plant links. QEMU gets
   * `run/` (its own, 0700) for what it creates itself: sockets, pidfile, serial log.
   */
  private files(id: string) {
    const dir = this.vmDir(id);
    const run = path.join(dir, 'run');
    return {
      dir,
      run,
      record: path.join(dir, 'vm.json'),
      qemuLog: path.join(dir, 'qemu.log'),
      saveSocket: path.join(dir, 'save.sock'),
      savedState: path.join(dir, 'saved.state'),
      /** The cloud-init NoCloud seed (root:drover 0640), attached read-only. */
      seed: path.join(dir, 'cidata.iso'),
      qmp: path.join(run, 'qmp.sock'),
      serial: path.join(run, 'serial.sock'),
      serialLog: path.join(run, 'serial.log'),
      vnc: path.join(run, 'vnc.sock'),
      pid: path.join(run, 'qemu.pid'),
      restoreSocket: path.join(run, 'restore.sock'),
    };
  }

  private async persist(record: VmRecord): Promise<void> {
    const file = this.files(record.id).record;
    const tmp = `${file}.tmp`;
    await writeFile(tmp, JSON.stringify(record, null, 2), { mode: 0o600 });
    await rename(tmp, file);
    this.o.onChange?.(this.describe(record));
  }

  /**
   * Makes `cidata.iso` match the VM's cloud-init (rebuilt only when its content
   * changes, or when the file is gone), or removes it when the VM has none.
   * The caller persists the record.
   */
  private async ensureSeed(record: VmRecord): Promise<void> {
    const seed = this.files(record.id).seed;
    const cloudInit = record.spec.cloudInit;
    if (!cloudInit) {
      await rm(seed, { force: true });
      delete record.seedDigest;
      return;
    }
    const files = seedFiles(cloudInit, { id: record.id, name: record.spec.name });
    const digest = seedDigest(files);
    const present = await stat(seed).then((s) => s.isFile(), () => false);
    if (present && record.seedDigest === digest) return;
    await writeSeedIso(seed, files, this.o.account.gid);
    record.seedDigest = digest;
  }

  /** Looks a VM up by id or by name. */
  private find(ref: string): VmRecord {
    const byId = this.records.get(ref);
    if (byId) return byId;
    for (const r of this.records.values()) if (r.name === ref) return r;
    throw errors.notFound('VM', ref);
  }

  private label(record: VmRecord): string {
    return `VM "${record.name}"`;
  }

  stateOf(record: VmRecord): VmState {
    const busy = this.lock.current(record.id);
    if (busy && transitional[busy]) return transitional[busy];
    if (record.runtime) {
      const live = this.live.get(record.id);
      return live ? qemuStatusToState(live.qemuStatus) : 'error';
    }
    if (record.saved) return 'saved';
    return 'stopped';
  }

  describe(record: VmRecord): VmInfo {
    const live = this.live.get(record.id);
    const busy = this.lock.current(record.id);
    return {
      id: record.id,
      name: record.name,
      state: this.stateOf(record),
      spec: record.spec,
      ...(record.runtime ? { pid: record.runtime.pid, accel: record.runtime.accel } : {}),
      ...(live ? { qemuStatus: live.qemuStatus } : {}),
      ...(busy ? { busy } : {}),
      ...(record.saved ? { savedState: { file: record.saved.file, bytes: record.saved.bytes, savedAt: record.saved.savedAt } } : {}),
      snapshots: record.snapshots,
      ...(record.lastError ? { lastError: record.lastError } : {}),
    };
  }

  list(): VmInfo[] {
    return [...this.records.values()].sort((a, b) => a.name.localeCompare(b.name)).map((r) => this.describe(r));
  }

  async get(ref: string): Promise<VmInfo> {
    const record = this.find(ref);
    const live = this.live.get(record.id);
    if (live && !this.lock.current(record.id)) {
      // Refresh from QEMU itself: events can be missed across an agent restart.
      try {
        live.qemuStatus = (await live.qmp.queryStatus()).status;
      } catch {
        /* the close handler reports a dead QEMU */
      }
    }
    return this.describe(record);
  }

  /** VMs that reference a volume, for the pool registry's in-use checks. */
  usersOf(pool: string, volume: string): Array<{ name: string; running: boolean }> {
    const users: Array<{ name: string; running: boolean }> = [];
    for (const r of this.records.values()) {
      const boot = r.spec.boot;
      const refs = [...r.spec.disks, ...(boot.kind === 'kernel' ? [boot.kernel, ...(boot.initrd ? [boot.initrd] : [])] : [])];
      if (refs.some((d) => d.pool === pool && d.volume === volume)) // A saved VM counts as running: its saved state expects the disks exactly as they are.
        users.push({ name: r.name, running: r.runtime !== undefined || r.saved !== undefined });
    }
    return users;
  }

  /** vCPUs and memory held by VMs that have a QEMU process (running or paused). */
  allocated(): { cpus: number; memoryMiB: number; vms: number } {
    let cpus = 0;
    let memoryMiB = 0;
    let vms = 0;
    for (const r of this.records.values()) {
      if (!r.runtime) continue;
      cpus += r.spec.cpus;
      memoryMiB += r.spec.memoryMiB;
      vms += 1;
    }
    return { cpus, memoryMiB, vms };
  }

  // ------------------------------------------------------------ validation

  private async validateSpec(spec: VmSpec, selfId?: string): Promise<void> {
    const { capacity, cpuModels } = this.o;
    if (spec.cpus > capacity.cpus) {
      throw errors.invalid(`VM "${spec.name}" asks for ${spec.cpus} vCPUs; this host offers at most ${capacity.cpus}`, { field: 'cpus' });
    }
    if (spec.memoryMiB > capacity.memoryMiB) {
      throw errors.invalid(`VM "${spec.name}" asks for ${spec.memoryMiB} MiB; this host has ${capacity.memoryMiB} MiB`, { field: 'memoryMiB' });
    }
    if (spec.cpuModel && !cpuModels.includes(spec.cpuModel)) {
      throw errors.invalid(`CPU model "${spec.cpuModel}" is not offered by this host; offered: ${cpuModels.join(', ')}`, { field: 'cpuModel' });
    }
    for (const r of this.records.values()) {
      if (r.id !== selfId && r.name === spec.name) throw errors.conflict(`VM "${spec.name}" already exists`);
    }
    const refs = [...spec.disks.map((d) => ({ pool: d.pool, volume: d.volume, what: 'disk' }))];
    if (spec.boot.kind === 'kernel') {
      refs.push({ ...spec.boot.kernel, what: 'kernel' });
      if (spec.boot.initrd) refs.push({ ...spec.boot.initrd, what: 'initrd' });
    }
    for (const ref of refs) {
      this.o.pools.volumePath(ref.pool, ref.volume); // throws invalid/not_found for bad pools and paths
      if (ref.what !== 'disk' && this.o.pools.get(ref.pool).iscsi) {
        throw errors.invalid(`The ${ref.what} "${ref.pool}/${ref.volume}" is on an iSCSI pool; QEMU reads a kernel or initrd from a file only`, { field: ref.what });
      }
      if (!(await this.o.pools.exists(ref.pool, ref.volume))) {
        throw errors.invalid(`The ${ref.what} volume "${ref.pool}/${ref.volume}" does not exist`, { field: ref.what });
      }
    }
    const writable = spec.disks.filter((d) => !d.readOnly && d.media !== 'cdrom');
    const seen = new Set<string>();
    for (const d of writable) {
      const key = `${d.pool}/${d.volume}`;
      if (seen.has(key)) throw errors.invalid(`Volume "${key}" is attached twice`);
      seen.add(key);
      for (const r of this.records.values()) {
        if (r.id === selfId) continue;
        if (r.spec.disks.some((o) => o.pool === d.pool && o.volume === d.volume && !o.readOnly)) {
          throw errors.conflict(`Volume "${key}" is already attached read-write to VM "${r.name}"`);
        }
      }
    }
    if (spec.boot.kind === 'cdrom' && !spec.disks.some((d) => d.media === 'cdrom')) {
      throw errors.invalid(`VM "${spec.name}" boots from a CD-ROM but has none attached`);
    }
    const macs = new Set<string>();
    for (const nic of spec.nics ?? []) {
      if (nic.mac) {
        if (macs.has(nic.mac)) throw errors.invalid(`MAC address "${nic.mac}" is used twice`);
        macs.add(nic.mac);
      }
      checkNicMode(nic);
    }
  }

  // ------------------------------------------------------------ define/delete

  async define(spec: VmSpec): Promise<VmInfo> {
    await this.validateSpec(spec);
    const id = spec.id ?? randomUUID();
    if (this.records.has(id)) throw errors.conflict(`VM id "${id}" already exists`);
    const nics = (spec.nics ?? []).map((nic) => ({ ...nic, mac: nic.mac ?? randomMac() }));
    const record: VmRecord = {
      id,
      name: spec.name,
      spec: { ...spec, id, ...(spec.nics ? { nics } : {}) },
      createdAt: new Date().toISOString(),
      snapshots: [],
    };
    const f = this.files(id);
    await mkdir(f.dir, { recursive: true });
    await chown(f.dir, 0, this.o.account.gid);
    await chmod(f.dir, 0o750);
    await mkdir(f.run, { recursive: true });
    await chown(f.run, this.o.account.uid, this.o.account.gid);
    await chmod(f.run, 0o700);
    try {
      await this.ensureSeed(record);
    } catch (cause) {
      await rm(f.dir, { recursive: true, force: true });
      throw cause;
    }
    this.records.set(id, record);
    await this.persist(record);
    return this.describe(record);
  }

  async update(ref: string, spec: VmSpec): Promise<VmInfo> {
    const record = this.find(ref);
    return this.lock.run(record.id, 'edit', this.label(record), async () => {
      if (record.runtime || record.saved) throw errors.conflict(`Cannot edit ${this.label(record)} while it is ${this.stateOf(record)}; stop it first`);
      if (spec.id && spec.id !== record.id) throw errors.invalid(`The id of ${this.label(record)} cannot change`);
      await this.validateSpec(spec, record.id);
      // Keep each NIC's MAC stable across edits: a guest's network identity must not change by itself.
      const nics = (spec.nics ?? []).map((nic, index) => ({ ...nic, mac: nic.mac ?? record.spec.nics?.[index]?.mac ?? randomMac() }));
      const previous = { spec: record.spec, name: record.name };
      record.spec = { ...spec, id: record.id, ...(spec.nics ? { nics } : {}) };
      record.name = spec.name;
      try {
        await this.ensureSeed(record); // a changed cloud-init (or name, the default hostname) gets a new seed
      } catch (cause) {
        Object.assign(record, previous);
        throw cause;
      }
      await this.persist(record);
      return this.describe(record);
    });
  }

  async remove(ref: string): Promise<void> {
    const record = this.find(ref);
    await this.lock.run(record.id, 'delete', this.label(record), async () => {
      if (record.runtime) throw errors.conflict(`Cannot delete ${this.label(record)} while it is ${this.stateOf(record)}; stop it first`);
      await rm(this.vmDir(record.id), { recursive: true, force: true });
      this.records.delete(record.id);
    });
  }

  // ------------------------------------------------------------ launching

  private async launchConfig(record: VmRecord, extra: Partial<QemuLaunchConfig> = {}): Promise<QemuLaunchConfig> {
    const spec = record.spec;
    const f = this.files(record.id);
    const disks: DiskConfig[] = [];
    for (const [index, d] of spec.disks.entries()) {
      const source = await this.o.pools.volumeSource(d.pool, d.volume, record.id);
      disks.push({
        ...diskPlacement(record.slots, index, d),
        ...source,
        format: volumeFormat(d.volume),
        readOnly: d.readOnly === true || d.media === 'cdrom',
        media: d.media ?? 'disk',
        ...(spec.boot.kind === 'disk' && index === spec.disks.findIndex((x) => x.media !== 'cdrom') ? { bootIndex: 1 } : {}),
        ...(spec.boot.kind === 'cdrom' && index === spec.disks.findIndex((x) => x.media === 'cdrom') ? { bootIndex: 1 } : {}),
        // CD-ROM first, then the first disk: an installer boots, and so does what it installed.
        ...(spec.boot.kind === 'cdrom' && index === spec.disks.findIndex((x) => x.media !== 'cdrom') ? { bootIndex: 2 } : {}),
      });
    }
    // The NoCloud seed is a read-only virtio disk, not a CD-ROM: Debian's cloud kernel has no AHCI driver.
    // It gets the root port after the hotplug ones, so the guest enumerates it after every disk (/dev/vda stays the root).
    if (spec.cloudInit) disks.push({ nodeName: 'cidata', path: f.seed, format: 'raw', readOnly: true, media: 'disk', ...(record.slots ? { port: hotplugRootPorts } : {}) });
    const boot: QemuLaunchConfig['boot'] =
      spec.boot.kind === 'kernel'
        ? {
            kind: 'kernel',
            kernel: await this.o.pools.requireVolume(spec.boot.kernel.pool, spec.boot.kernel.volume),
            ...(spec.boot.initrd ? { initrd: await this.o.pools.requireVolume(spec.boot.initrd.pool, spec.boot.initrd.volume) } : {}),
            cmdline: spec.boot.cmdline ?? '',
          }
        : { kind: spec.boot.kind };
    return {
      name: spec.name,
      uuid: record.id,
      accel: this.o.accel,
      cpus: spec.cpus,
      memoryMiB: spec.memoryMiB,
      cpuModel: spec.cpuModel ?? this.o.defaultCpuModel,
      disks,
      nics: (spec.nics ?? []).map((nic, index) => ({
        ...nicPlacement(record.slots, index),
        mac: nic.mac ?? randomMac(),
        mode: nic.mode ?? 'user',
        ...(nic.mode === 'tap' ? { ifname: nic.tap } : {}),
        hostForwards: (nic.forwards ?? []).map((fw) => ({
          protocol: fw.protocol ?? 'tcp',
          hostAddress: '127.0.0.1',
          hostPort: fw.hostPort,
          guestPort: fw.guestPort,
        })),
      })),
      // Free ports for hotplug; none for the layout of an older agent's QEMU (a restore must rebuild it exactly).
      rootPorts: record.slots ? [...rootPortsOf(record.slots), ...(spec.cloudInit ? [hotplugRootPorts] : [])] : [],
      boot,
      qmpSocket: f.qmp,
      serialSocket: f.serial,
      serialLog: f.serialLog,
      ...(spec.vnc === false ? {} : { vncSocket: f.vnc }),
      pidFile: f.pid,
      sandbox: true,
      ...extra,
    };
  }

  private checkCapacity(record: VmRecord): void {
    this.checkChineseWall(record);
    const used = this.allocated();
    const { capacity } = this.o;
    const vcpus = Math.floor(capacity.cpus * this.o.cpuAllocationRatio);
    if (used.cpus + record.spec.cpus > vcpus || used.memoryMiB + record.spec.memoryMiB > capacity.memoryMiB) {
      throw errors.conflict(
        `Cannot start ${this.label(record)}: host has ${capacity.memoryMiB - used.memoryMiB} MiB and ${vcpus - used.cpus} vCPUs free, the VM needs ${record.spec.memoryMiB} MiB and ${record.spec.cpus}`,
        { reason: 'capacity' },
      );
    }
  }

  /**
   * sHype's Chinese Wall where the action happens (every start, restore and
   * incoming migration passes here): a VM whose spec carries a security label
   * may not run beside a VM with QEMU here whose types clash with its own in
   * one of the conflict sets the manager sent with it (docs/access-control-policy.md).
   */
  private checkChineseWall(record: VmRecord): void {
    const mine = record.spec.security;
    if (!mine || mine.cwTypes.length === 0) return;
    for (const other of this.records.values()) {
      const theirs = other.spec.security;
      if (other.id === record.id || !other.runtime || !theirs) continue;
      for (const set of mine.conflictSets) {
        const own = mine.cwTypes.find((t) => set.includes(t) && !theirs.cwTypes.includes(t));
        const clash = theirs.cwTypes.find((t) => set.includes(t) && !mine.cwTypes.includes(t));
        if (own !== undefined && clash !== undefined) {
          throw new DroverError('policy_denied', `Cannot run ${this.label(record)} (${mine.label}) on this host: ${this.label(other)} (${theirs.label}) runs here, and types "${clash}" and "${own}" are in one Chinese Wall conflict set`, {
            details: { reason: 'chinese_wall', vm: other.spec.name, type: own, otherType: clash },
          });
        }
      }
    }
  }

  /** Spawns QEMU for the record and connects to it; on failure nothing is left running. */
  /** Feeds a saved state file into a QEMU started with `-incoming defer`; resolves when QEMU reports the load complete. */
  private async loadSavedState(live: Live, socket: string, file: string): Promise<void> {
    await live.qmp.migrateSetCapabilities(baseMigrationCapabilities);
    const completed = waitForMigration(live.qmp, this.o.qmpTimeoutMs * 30);
    await live.qmp.migrateIncoming(`unix:${socket}`);
    await sendFileToState(socket, file, this.o.qmpTimeoutMs * 30);
    await completed;
  }

  private async launch(record: VmRecord, extra: Partial<QemuLaunchConfig> = {}): Promise<Live> {
    const f = this.files(record.id);
    await Promise.all([f.qmp, f.serial, f.vnc, f.pid, f.saveSocket, f.restoreSocket].map((p) => rm(p, { force: true })));
    await this.ensureSeed(record);
    // A restore (incoming) rebuilds the saved machine with the slots it had; a fresh start numbers them anew.
    if (extra.incomingDefer !== true) record.slots = initialSlots(record.spec);
    const config = await this.launchConfig(record, extra);
    const argv = buildQemuArgv(config);
    const { pid, startTime, qmp } = await spawnQemu(argv, {
      keepQmp: true,
      uid: this.o.account.uid,
      gid: this.o.account.gid,
      logFile: f.qemuLog,
      cwd: f.run,
      binary: this.o.qemuBinary,
    });
    record.runtime = { pid, startTime, accel: config.accel, startedAt: new Date().toISOString() };
    delete record.lastError;
    // The record (with the new pid) is written while QMP is attached: neither needs the other,
    // and both must have succeeded before the start does.
    const persisted = this.persist(record);
    try {
      const live = await this.attach(record, qmp);
      await persisted;
      return live;
    } catch (cause) {
      await persisted.catch(() => undefined);
      await this.killAndForget(record);
      throw cause;
    }
  }

  /** Connects QMP and the serial hub to a QEMU that is (still) running. */
  private async attach(record: VmRecord, connected?: QmpClient): Promise<Live> {
    const f = this.files(record.id);
    const qmp = connected ?? (await connectWhenReady(f.qmp, record.runtime!.pid, this.o.qmpTimeoutMs));
    const live: Live = { qmp, serial: new SerialHub(f.serial), qemuStatus: 'unknown', expectingExit: false };
    live.qemuStatus = (await qmp.queryStatus()).status;
    this.devices.watch(record, live);
    qmp.on('event', (event: { event: string; data?: Record<string, unknown> }) => {
      if (event.event === 'STOP') live.qemuStatus = 'paused';
      if (event.event === 'RESUME') live.qemuStatus = 'running';
      if (event.event === 'STOP' || event.event === 'RESUME') this.o.onChange?.(this.describe(record));
    });
    qmp.on('close', () => {
      void this.onQemuGone(record, live);
    });
    live.serial.start();
    this.live.set(record.id, live);
    return live;
  }

  /** QMP closed: QEMU has exited (guest poweroff, crash, or our own quit). */
  private async onQemuGone(record: VmRecord, live: Live): Promise<void> {
    if (this.live.get(record.id) !== live) return;
    this.live.delete(record.id);
    live.serial.close();
    if (live.expectingExit) return; // the action that ended it cleans up itself
    const pid = record.runtime?.pid;
    if (pid !== undefined) await waitForExit(pid, 5_000).catch(() => undefined);
    const still = pid !== undefined ? await readProcessInfo(pid) : undefined;
    if (still?.alive && still.state !== 'Z') {
      this.o.logger.warn({ vm: record.name, pid }, 'QMP closed but QEMU is still alive; killing it');
      await killProcess(pid!, 'SIGKILL');
      await waitForExit(pid!, 5_000).catch(() => undefined);
    }
    this.o.logger.info({ vm: record.name }, 'QEMU exited');
    delete record.runtime;
    await this.cleanSockets(record);
    await this.persist(record).catch(() => undefined);
  }

  private async cleanSockets(record: VmRecord): Promise<void> {
    const f = this.files(record.id);
    await Promise.all([f.qmp, f.serial, f.vnc, f.pid, f.saveSocket, f.restoreSocket].map((p) => rm(p, { force: true })));
  }

  /** Ends the QEMU of a record without ceremony and forgets its runtime. */
  private async killAndForget(record: VmRecord): Promise<void> {
    const live = this.live.get(record.id);
    if (live) {
      live.expectingExit = true;
      this.live.delete(record.id);
      live.serial.close();
      live.qmp.close();
    }
    const pid = record.runtime?.pid;
    if (pid !== undefined) {
      const info = await readProcessInfo(pid);
      if (info?.alive && info.startTime === record.runtime?.startTime) {
        await killProcess(pid, 'SIGKILL');
        await waitForExit(pid, 10_000).catch(() => undefined);
      }
    }
    delete record.runtime;
    await this.cleanSockets(record);
    // A concurrent abort of the same migration may have removed the VM's directory already.
    await this.persist(record).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
  }

  /** Waits for QEMU to exit by itself; returns false on timeout. */
  private async awaitExit(record: VmRecord, timeoutMs: number): Promise<boolean> {
    const pid = record.runtime?.pid;
    if (pid === undefined) return true;
    return waitForExit(pid, timeoutMs, { startTime: record.runtime?.startTime });
  }

  private requireLive(record: VmRecord, action: string): Live {
    const live = this.live.get(record.id);
    if (!record.runtime || !live) {
      throw errors.conflict(`Cannot ${action} ${this.label(record)}: it is ${this.stateOf(record)}`, { state: this.stateOf(record) });
    }
    return live;
  }

  // ------------------------------------------------------------ actions

  /**
   * Starts a VM. With `spec` (a manager's start: one request where there would be
   * a define, or a `PUT`, and a start), a VM the host does not have is defined
   * first with the spec's id, which must be `ref`, and a stopped one gets the
   * spec as its definition, as `update` does; a running or saved one keeps its
   * definition and is refused below, as without a spec.
   */
  async start(ref: string, spec?: VmSpec): Promise<VmInfo> {
    if (spec) {
      if (spec.id !== ref) throw errors.invalid(`A start with a spec needs the VM's id as the spec's id; got "${spec.id ?? ''}" for "${ref}"`, { field: 'spec.id' });
      const existing = this.records.get(ref);
      if (!existing) await this.define(spec);
      else if (this.stateOf(existing) === 'stopped') await this.update(ref, spec);
    }
    const record = this.find(ref);
    await this.lock.run(record.id, 'start', this.label(record), async () => {
      if (record.runtime) throw errors.conflict(`${this.label(record)} is already ${this.stateOf(record)}`, { state: this.stateOf(record) });
      if (record.saved) throw errors.conflict(`${this.label(record)} has a saved state; restore it (or discard it) instead of starting`, { state: 'saved' });
      this.checkCapacity(record);
      await this.launch(record);
    });
    return this.describe(record);
  }

  async stop(ref: string, options: { timeoutMs?: number; force?: boolean } = {}): Promise<VmInfo> {
    const record = this.find(ref);
    const action = options.force ? 'force-off' : 'stop';
    await this.lock.run(record.id, action, this.label(record), async () => {
      const live = this.requireLive(record, action);
      if (!options.force) {
        const timeoutMs = options.timeoutMs ?? this.o.stopTimeoutMs;
        live.expectingExit = true;
        try {
          await live.qmp.systemPowerdown();
        } catch (cause) {
          this.o.logger.warn({ vm: record.name, err: cause }, 'system_powerdown failed; forcing off');
        }
        if (await this.awaitExit(record, timeoutMs)) {
          await this.forgetExited(record, live);
          return;
        }
        this.o.logger.warn({ vm: record.name, timeoutMs }, 'guest ignored ACPI shutdown; forcing off');
      }
      await this.forceOff(record, live);
    });
    return this.describe(record);
  }

  private async forceOff(record: VmRecord, live: Live, options: { forgotten?: boolean } = {}): Promise<void> {
    live.expectingExit = true;
    try {
      await live.qmp.quit();
    } catch {
      /* SIGKILL below */
    }
    if (!(await this.awaitExit(record, 5_000))) {
      await killProcess(record.runtime!.pid, 'SIGKILL');
      await this.awaitExit(record, 10_000);
    }
    await this.forgetExited(record, live, options);
  }

  /** Drops a QEMU that has exited: its sockets and the runtime in its record (written again, unless the record is `forgotten` next). */
  private async forgetExited(record: VmRecord, live: Live, options: { forgotten?: boolean } = {}): Promise<void> {
    if (this.live.get(record.id) === live) this.live.delete(record.id);
    live.serial.close();
    live.qmp.close();
    delete record.runtime;
    if (options.forgotten) return;
    await this.cleanSockets(record);
    // A concurrent abort of the same migration may have removed the VM's directory already.
    await this.persist(record).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
  }

  async pause(ref: string): Promise<VmInfo> {
    const record = this.find(ref);
    await this.lock.run(record.id, 'pause', this.label(record), async () => {
      const live = this.requireLive(record, 'pause');
      if (live.qemuStatus !== 'running') throw errors.conflict(`${this.label(record)} is not running (QEMU status "${live.qemuStatus}")`);
      await live.qmp.stop();
      live.qemuStatus = (await live.qmp.queryStatus()).status;
    });
    return this.describe(record);
  }

  async resume(ref: string): Promise<VmInfo> {
    const record = this.find(ref);
    await this.lock.run(record.id, 'resume', this.label(record), async () => {
      const live = this.requireLive(record, 'resume');
      if (live.qemuStatus === 'running') throw errors.conflict(`${this.label(record)} is already running`);
      await live.qmp.cont();
      live.qemuStatus = (await live.qmp.queryStatus()).status;
    });
    return this.describe(record);
  }

  async reset(ref: string): Promise<VmInfo> {
    const record = this.find(ref);
    await this.lock.run(record.id, 'reset', this.label(record), async () => {
      const live = this.requireLive(record, 'reset');
      await live.qmp.systemReset();
    });
    return this.describe(record);
  }

  /**
   * Saves RAM and device state to a file and ends QEMU ("hibernate"). The
   * vCPUs are stopped first: a stopped save is smaller and faster, and the
   * disks cannot change underneath the state.
   */
  async save(ref: string): Promise<VmInfo> {
    const record = this.find(ref);
    await this.lock.run(record.id, 'save', this.label(record), async () => {
      const live = this.requireLive(record, 'save');
      const f = this.files(record.id);
      const wasRunning = live.qemuStatus === 'running';
      const partial = `${f.savedState}.partial`;
      const receiver = await receiveStateToFile(f.saveSocket, partial, { owner: this.o.account, timeoutMs: this.o.qmpTimeoutMs * 30, durable: this.o.durableSaves });
      try {
        if (wasRunning) await live.qmp.stop();
        // All of them: a QEMU that migrated before (in, or out and rolled back) keeps that stream's settings.
        await live.qmp.migrateSetCapabilities(baseMigrationCapabilities);
        // The default 128 MiB/s cap also throttles saves to a file.
        await live.qmp.migrateSetParameters({ ...plainMigrationParameters, 'max-bandwidth': 64 * 1024 ** 3 });
        const completed = waitForMigration(live.qmp, this.o.qmpTimeoutMs * 30);
        await live.qmp.migrate(`unix:${f.saveSocket}`);
        await completed;
        const bytes = await receiver.done;
        await rename(partial, f.savedState);
        live.expectingExit = true;
        await live.qmp.quit().catch(() => undefined);
        if (!(await this.awaitExit(record, 10_000))) await killProcess(record.runtime!.pid, 'SIGKILL');
        record.saved = { file: f.savedState, bytes, savedAt: new Date().toISOString(), wasRunning };
        await this.forgetExited(record, live);
      } catch (cause) {
        receiver.abort();
        receiver.done.catch(() => undefined);
        await rm(partial, { force: true });
        await rm(f.saveSocket, { force: true });
        // The VM must come out of a failed save as it went in.
        if (this.live.get(record.id) === live && wasRunning) await live.qmp.cont().catch(() => undefined);
        throw cause;
      }
    });
    return this.describe(record);
  }

  async restore(ref: string): Promise<VmInfo> {
    const record = this.find(ref);
    await this.lock.run(record.id, 'restore', this.label(record), async () => {
      if (record.runtime) throw errors.conflict(`${this.label(record)} is already ${this.stateOf(record)}`);
      const saved = record.saved;
      if (!saved) throw errors.conflict(`${this.label(record)} has no saved state to restore`, { state: this.stateOf(record) });
      this.checkCapacity(record);
      const f = this.files(record.id);
      const live = await this.launch(record, { incomingDefer: true });
      try {
        await this.loadSavedState(live, f.restoreSocket, saved.file);
        if (saved.wasRunning) await live.qmp.cont();
        live.qemuStatus = (await live.qmp.queryStatus()).status;
      } catch (cause) {
        await this.killAndForget(record);
        throw cause;
      }
      // The state is consumed: the disks move on from here, an old state would no longer match them.
      await rm(saved.file, { force: true });
      delete record.saved;
      await rm(f.restoreSocket, { force: true });
      await this.persist(record);
    });
    return this.describe(record);
  }

  async discardSavedState(ref: string): Promise<VmInfo> {
    const record = this.find(ref);
    await this.lock.run(record.id, 'discard', this.label(record), async () => {
      if (!record.saved) throw errors.conflict(`${this.label(record)} has no saved state`);
      await rm(record.saved.file, { force: true });
      delete record.saved;
      await this.persist(record);
    });
    return this.describe(record);
  }

  // ------------------------------------------------------------ snapshots

  /** Writable qcow2 disks: internal snapshots live inside them. */
  private snapshotDisks(record: VmRecord): Array<{ nodeName: string; pool: string; volume: string }> {
    const disks = record.spec.disks
      .map((d, index) => ({ ...d, nodeName: diskPlacement(record.slots, index, d).nodeName }))
      .filter((d) => !d.readOnly && d.media !== 'cdrom');
    const raw = disks.find((d) => volumeFormat(d.volume) !== 'qcow2');
    if (raw) throw errors.conflict(`Cannot snapshot ${this.label(record)}: disk "${raw.pool}/${raw.volume}" is raw; snapshots need qcow2`);
    if (disks.length === 0) throw errors.conflict(`Cannot snapshot ${this.label(record)}: it has no writable disk`);
    return disks;
  }

  async createSnapshot(ref: string, request: SnapshotRequest): Promise<VmInfo> {
    const record = this.find(ref);
    await this.lock.run(record.id, 'snapshot', this.label(record), async () => {
      if (record.snapshots.some((s) => s.name === request.name)) throw errors.conflict(`${this.label(record)} already has a snapshot "${request.name}"`);
      if (record.saved) throw errors.conflict(`Cannot snapshot ${this.label(record)} while it is saved; restore it first`);
      const disks = this.snapshotDisks(record);
      const live = this.live.get(record.id);
      let withMemory = false;
      if (record.runtime && live) {
        withMemory = request.withMemory !== false;
        if (withMemory) {
          await live.qmp.snapshotSave(request.name, { vmstate: disks[0]!.nodeName, devices: disks.map((d) => d.nodeName), timeoutMs: this.o.qmpTimeoutMs * 30 });
        } else {
          await live.qmp.execute('transaction', {
            actions: disks.map((d) => ({ type: 'blockdev-snapshot-internal-sync', data: { device: d.nodeName, name: request.name } })),
          });
        }
      } else {
        for (const d of disks) await QemuImg.snapshotCreate(await this.o.pools.requireVolume(d.pool, d.volume), request.name);
      }
      record.snapshots.push({ name: request.name, createdAt: new Date().toISOString(), withMemory });
      await this.persist(record);
    });
    return this.describe(record);
  }

  async revertSnapshot(ref: string, name: string): Promise<VmInfo> {
    const record = this.find(ref);
    await this.lock.run(record.id, 'revert', this.label(record), async () => {
      const snapshot = record.snapshots.find((s) => s.name === name);
      if (!snapshot) throw errors.notFound('Snapshot', `${record.name}/${name}`);
      if (record.saved) throw errors.conflict(`Cannot revert ${this.label(record)} while it is saved; discard or restore the saved state first`);
      const disks = this.snapshotDisks(record);
      const live = this.live.get(record.id);
      if (record.runtime && live) {
        if (!snapshot.withMemory) {
          throw errors.conflict(`Snapshot "${name}" of ${this.label(record)} holds disks only; stop the VM to revert to it`);
        }
        await live.qmp.snapshotLoad(name, { vmstate: disks[0]!.nodeName, devices: disks.map((d) => d.nodeName), timeoutMs: this.o.qmpTimeoutMs * 30 });
        live.qemuStatus = (await live.qmp.queryStatus()).status;
      } else {
        for (const d of disks) await QemuImg.snapshotApply(await this.o.pools.requireVolume(d.pool, d.volume), name);
      }
    });
    return this.describe(record);
  }

  async deleteSnapshot(ref: string, name: string): Promise<VmInfo> {
    const record = this.find(ref);
    await this.lock.run(record.id, 'delete-snapshot', this.label(record), async () => {
      const index = record.snapshots.findIndex((s) => s.name === name);
      if (index < 0) throw errors.notFound('Snapshot', `${record.name}/${name}`);
      const disks = this.snapshotDisks(record);
      const live = this.live.get(record.id);
      if (record.runtime && live) {
        await live.qmp.snapshotDelete(name, { devices: disks.map((d) => d.nodeName), timeoutMs: this.o.qmpTimeoutMs * 30 });
      } else {
        for (const d of disks) await QemuImg.snapshotDelete(await this.o.pools.requireVolume(d.pool, d.volume), name);
      }
      record.snapshots.splice(index, 1);
      await this.persist(record);
    });
    return this.describe(record);
  }

  // ------------------------------------------------------------ devices (hotplug, vm-devices.ts)

  addDisk(ref: string, disk: VmDisk): Promise<VmInfo> {
    return this.devices.addDisk(ref, disk);
  }

  removeDisk(ref: string, which: string, pool?: string): Promise<VmInfo> {
    return this.devices.removeDisk(ref, which, pool);
  }

  addNic(ref: string, nic: VmNic): Promise<VmInfo> {
    return this.devices.addNic(ref, nic);
  }

  removeNic(ref: string, which: string): Promise<VmInfo> {
    return this.devices.removeNic(ref, which);
  }

  // ------------------------------------------------------------ consoles

  serialHub(ref: string): SerialHub {
    const record = this.find(ref);
    const live = this.requireLive(record, 'open the serial console of');
    return live.serial;
  }

  vncSocket(ref: string): string {
    const record = this.find(ref);
    this.requireLive(record, 'open the screen of');
    if (record.spec.vnc === false) throw errors.conflict(`${this.label(record)} has no screen (vnc: false)`);
    return this.files(record.id).vnc;
  }

  /**
   * The VM's serial log, opened for reading, or undefined when there is none. QEMU writes
   * it from its own directory: a link it may have planted there is never followed.
   */
  async openSerialLog(ref: string): Promise<FileHandle | undefined> {
    return open(this.files(this.find(ref).id).serialLog, constants.O_RDONLY | constants.O_NOFOLLOW).catch(() => undefined);
  }

  // ------------------------------------------------------------ migration (migration.ts)

  /** What live migration needs of this service: it moves QEMUs into and out of this host. */
  migrationHooks(): MigrationHooks {
    return {
      find: (ref) => this.find(ref),
      records: () => [...this.records.values()],
      live: (id) => this.live.get(id),
      lock: this.lock,
      files: (id) => this.files(id),
      openSerialLog: (id) => this.openSerialLog(id),
      persist: (record) => this.persist(record),
      describe: (record) => this.describe(record),
      define: async (spec, extra) => {
        await this.define(spec);
        const record = this.find(spec.id!);
        Object.assign(record, extra);
        await this.persist(record);
        return record;
      },
      launchIncoming: async (record) => {
        this.checkCapacity(record);
        return this.launch(record, { incomingDefer: true, startPaused: true });
      },
      launchPaused: async (record) => {
        this.checkCapacity(record);
        return this.launch(record, { startPaused: true });
      },
      // The saved state loaded into a paused QEMU; the file stays until the migration is confirmed.
      restorePaused: async (record) => {
        const saved = record.saved!;
        this.checkCapacity(record);
        const f = this.files(record.id);
        const live = await this.launch(record, { incomingDefer: true });
        try {
          await this.loadSavedState(live, f.restoreSocket, saved.file);
          live.qemuStatus = (await live.qmp.queryStatus()).status;
        } catch (cause) {
          await this.killAndForget(record);
          throw cause;
        }
        await rm(f.restoreSocket, { force: true });
        return live;
      },
      killAndForget: (record) => this.killAndForget(record),
      handOver: async (record, options) => {
        const live = this.live.get(record.id);
        if (live) await this.forceOff(record, live, options);
        else if (record.runtime) await this.killAndForget(record);
      },
      forget: async (record) => {
        await rm(this.vmDir(record.id), { recursive: true, force: true });
        this.records.delete(record.id);
      },
    };
  }

  // ------------------------------------------------------------ start-up

  /**
   * Loads every VM record and reattaches to QEMU processes that survived an
   * agent restart: same PIDs, nothing restarted. Records whose QEMU is gone
   * are cleaned up and reported stopped.
   */
  async reattach(): Promise<{ reattached: string[]; cleaned: string[] }> {
    await mkdir(this.vmsDir, { recursive: true });
    await chown(this.vmsDir, 0, this.o.account.gid);
    await chmod(this.vmsDir, 0o750);
    const reattached: string[] = [];
    const cleaned: string[] = [];
    for (const entry of await readdir(this.vmsDir, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      let record: VmRecord;
      try {
        record = JSON.parse(await readFile(path.join(this.vmsDir, entry.name, 'vm.json'), 'utf8')) as VmRecord;
      } catch (cause) {
        this.o.logger.warn({ dir: entry.name, err: cause }, 'skipping unreadable VM record');
        continue;
      }
      this.records.set(record.id, record);
      const f = this.files(record.id);
      // A QEMU may have been spawned right before a crash, with no runtime recorded yet.
      if (!record.runtime) {
        const pid = Number((await readFile(f.pid, 'utf8').catch(() => '')).trim());
        if (pid > 0) {
          const info = await readProcessInfo(pid);
          if (info?.alive && info.cmdline.some((arg) => arg.includes(f.qmp))) {
            record.runtime = { pid, startTime: info.startTime, accel: this.o.accel, startedAt: new Date().toISOString() };
          }
        }
      }
      if (record.runtime) {
        const info = await readProcessInfo(record.runtime.pid);
        const ours = info?.alive && info.state !== 'Z' && info.startTime === record.runtime.startTime && info.cmdline.some((arg) => arg.includes(f.qmp));
        if (ours) {
          try {
            await this.attach(record);
            reattached.push(record.name);
            continue;
          } catch (cause) {
            this.o.logger.error({ vm: record.name, err: cause }, 'cannot reattach to a live QEMU; ending it');
            record.lastError = `Reattach failed: ${(cause as Error).message}`;
            await this.killAndForget(record);
            cleaned.push(record.name);
            continue;
          }
        }
        delete record.runtime;
        cleaned.push(record.name);
      }
      await this.cleanSockets(record);
      await this.persist(record);
    }
    return { reattached, cleaned };
  }

  /** Detaches from every QEMU without stopping it (agent shutdown). */
  async detachAll(): Promise<void> {
    for (const live of this.live.values()) {
      live.expectingExit = true;
      live.serial.close();
      live.qmp.close();
    }
    this.live.clear();
  }
}

async function connectWhenReady(socket: string, pid: number, timeoutMs: number): Promise<QmpClient> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await stat(socket);
      return await QmpClient.connect(socket, { timeoutMs });
    } catch (cause) {
      const info = await readProcessInfo(pid);
      if (!info?.alive || info.state === 'Z') throw errors.unavailable(`QEMU (pid ${pid}) exited before its QMP socket answered`);
      if (Date.now() > deadline) {
        throw cause instanceof DroverError ? cause : errors.timeout(`QEMU (pid ${pid}) did not open its QMP socket "${socket}" within ${timeoutMs} ms`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}

/** Resolves on MIGRATION `completed`, rejects on `failed`/`cancelled` or timeout. */
function waitForMigration(qmp: QmpClient, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      qmp.off('event', onEvent);
      reject(errors.timeout(`Migration stream did not complete within ${timeoutMs} ms`));
    }, timeoutMs);
    const onEvent = (event: { event: string; data?: { status?: string } }) => {
      if (event.event !== 'MIGRATION') return;
      const status = event.data?.status;
      if (status === 'completed') {
        clearTimeout(timer);
        qmp.off('event', onEvent);
        resolve();
      } else if (status === 'failed' || status === 'cancelled') {
        clearTimeout(timer);
        qmp.off('event', onEvent);
        void qmp
          .queryMigrate()
          .then((m: unknown) => reject(errors.unavailable(`Migration stream ${status}: ${(m as { 'error-desc'?: string })['error-desc'] ?? 'no reason given'}`)))
          .catch(() => reject(errors.unavailable(`Migration stream ${status}`)));
      }
    };
    qmp.on('event', onEvent);
  });
}


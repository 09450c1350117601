import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { errors } from '@drover/core';
import type { VmDisk, VmInfo, VmNic, VmSpec, VmState } from '@drover/api';
import { deletedDeviceId, plugDisk, plugNic, QmpCommandError, releaseDiskNodes, releaseNicBackend, unplugDevice, type QmpClient } from '@drover/qemu';
import type { KeyedLock } from './keyed-lock.js';
import { volumeFormat, type PoolRegistry } from './pools.js';

/**
 * Disks and NICs added to and removed from a VM, running or not (hotplug).
 *
 * q35 can only hot-plug behind a PCIe root port. Disk slot k sits on root port
 * k (0–15) and NIC slot k on port 16 + k (16–23); a device's slot also names it
 * in QEMU (`disk<k>`, `net<k>`), so ids never move when another device goes.
 * A fresh start numbers the slots in definition order (the guest enumerates
 * the ports in that order) and makes the ports of those devices plus a few
 * spare ones (`spareDiskPorts`, `spareNicPorts`) for devices added while it
 * runs. The layout of the running QEMU is kept in the record (`slots`) while it
 * runs and while a saved state exists: a restore (or a migration) must rebuild
 * exactly the same machine, gaps included.
 */

/** The most disks and NICs a VM may have (the limits of `VmSpec`). */
export const maxDisks = 16;
export const maxNics = 8;
/** Root ports of the hotplug slots (0–23); the next index is free for other devices (the cloud-init seed). */
export const hotplugRootPorts = maxDisks + maxNics;
/**
 * Free slots a fresh start prepares. Each root port costs the guest about 65 ms of
 * CPU at boot under TCG (firmware and kernel enumerate it), so not one per possible
 * device; a VM that used them up gets new ones at its next start.
 */
export const spareDiskPorts = 6;
export const spareNicPorts = 2;

/** The device layout of a running (or saved) QEMU. */
export interface DeviceSlots {
  /** The slot of each of `spec.disks` and `spec.nics`, index by index. */
  disks: number[];
  nics: number[];
  /** The hotplug root ports the QEMU has (sorted); absent: all of 0–23. */
  ports?: number[];
}

/** The layout of a fresh start: slots in definition order, their ports and the spare ones. */
export function initialSlots(spec: VmSpec): DeviceSlots {
  const disks = spec.disks.map((_, index) => index);
  const nics = (spec.nics ?? []).map((_, index) => index);
  const diskPorts = Math.min(disks.length + spareDiskPorts, maxDisks);
  const nicPorts = Math.min(nics.length + spareNicPorts, maxNics);
  return { disks, nics, ports: [...range(0, diskPorts), ...range(maxDisks, maxDisks + nicPorts)] };
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

/** The hotplug root ports of a layout. */
export function rootPortsOf(slots: DeviceSlots): number[] {
  return slots.ports ?? range(0, hotplugRootPorts);
}

/**
 * Where disk `index` and NIC `index` go in QEMU. Without slots (a QEMU started by an
 * agent that had no hotplug, or such a saved state) the old layout: on pcie.0, no ports.
 */
export function diskPlacement(slots: DeviceSlots | undefined, index: number, disk: VmDisk): { nodeName: string; port?: number } {
  const slot = slots?.disks[index] ?? index;
  return { nodeName: `disk${slot}`, ...(slots && disk.media !== 'cdrom' ? { port: slot } : {}) };
}

export function nicPlacement(slots: DeviceSlots | undefined, index: number): { id: string; port?: number } {
  const slot = slots?.nics[index] ?? index;
  return { id: `net${slot}`, ...(slots ? { port: maxDisks + slot } : {}) };
}

export function randomMac(): string {
  // 52:54:00 is QEMU's locally administered prefix.
  const b = randomBytes(3);
  return ['52', '54', '00', ...[...b].map((x) => x.toString(16).padStart(2, '0'))].join(':');
}

/**
 * The disk a VM boots from, which cannot be removed: the first CD-ROM for a CD-ROM
 * boot, otherwise the first disk (for a kernel boot it holds the root file system
 * by convention: the appliances mount /dev/vda).
 */
export function bootDiskIndex(spec: VmSpec): number {
  return spec.boot.kind === 'cdrom' ? spec.disks.findIndex((d) => d.media === 'cdrom') : spec.disks.findIndex((d) => d.media !== 'cdrom');
}

function isWritable(disk: VmDisk): boolean {
  return disk.readOnly !== true && disk.media !== 'cdrom';
}

/**
 * The lowest free slot of a kind whose root port the running QEMU has; 409 when
 * they are used up (the next start makes new ones).
 */
function freeSlot(slots: DeviceSlots, kind: 'disks' | 'nics', vm: string): number {
  const [first, limit] = kind === 'disks' ? [0, maxDisks] : [maxDisks, maxNics];
  const ports = new Set(rootPortsOf(slots));
  for (let slot = 0; slot < limit; slot++) if (!slots[kind].includes(slot) && ports.has(first + slot)) return slot;
  const what = kind === 'disks' ? 'disk' : 'NIC';
  throw errors.conflict(`VM "${vm}" has no free ${what} hotplug slot left in its running QEMU; stop and start it to get new ones`, { kind: what });
}

/** The disk a request names: its index in `spec.disks`, or its volume name (with `pool` when two pools hold that name). */
export function findDisk(spec: VmSpec, vmName: string, which: string, pool?: string): number {
  if (/^\d+$/.test(which)) {
    const index = Number(which);
    if (index < spec.disks.length && (pool === undefined || spec.disks[index]!.pool === pool)) return index;
    throw errors.notFound('Disk', `${vmName}/${which}`);
  }
  const matches = spec.disks.flatMap((d, index) => (d.volume === which && (pool === undefined || d.pool === pool) ? [index] : []));
  if (matches.length === 0) throw errors.notFound('Disk', `${vmName}/${pool ? `${pool}/` : ''}${which}`);
  if (matches.length > 1) throw errors.conflict(`VM "${vmName}" has volume "${which}" from several pools; name the pool or the disk's index`, { indexes: matches });
  return matches[0]!;
}

/** The NIC a request names: its index in `spec.nics`, or its MAC address. */
export function findNic(spec: VmSpec, vmName: string, which: string): number {
  const nics = spec.nics ?? [];
  const index = /^\d+$/.test(which) ? Number(which) : nics.findIndex((n) => n.mac === which.toLowerCase());
  if (index < 0 || index >= nics.length) throw errors.notFound('NIC', `${vmName}/${which}`);
  return index;
}

/** What hotplug needs of a VM record (the fields VmService keeps). */
export interface DeviceRecord {
  id: string;
  name: string;
  spec: VmSpec;
  snapshots: Array<{ name: string; withMemory: boolean }>;
  runtime?: unknown;
  saved?: unknown;
  slots?: DeviceSlots;
}

/** What hotplug needs of a live QEMU. */
export interface DeviceLive {
  qmp: QmpClient;
  qemuStatus: string;
}

/** VmService's side: records, the per-VM lock, persistence. */
export interface DeviceContext<R extends DeviceRecord> {
  find(ref: string): R;
  records(): Iterable<R>;
  live(id: string): DeviceLive | undefined;
  lock: KeyedLock;
  persist(record: R): Promise<void>;
  describe(record: R): VmInfo;
  stateOf(record: R): VmState;
  pools: PoolRegistry;
  logger: Logger;
  /** How long the guest gets to release a device before a removal answers "pending". */
  unplugTimeoutMs: number;
}

/** A failed plug: QEMU refused (an image lock held elsewhere, a host port in use, ...). */
function plugFailure(what: string, vm: string, cause: unknown): unknown {
  if (!(cause instanceof QmpCommandError)) return cause;
  return errors.conflict(`Cannot hot-plug ${what} into VM "${vm}": ${cause.desc}`, { qmpClass: cause.qmpClass });
}

/** Adds and removes disks and NICs; `VmService` delegates its device routes here. */
export class VmDevices<R extends DeviceRecord> {
  /** `<vm id>/<device id>` of removals an API call is waiting for (the event is theirs to handle). */
  private readonly unplugging = new Set<string>();

  constructor(private readonly c: DeviceContext<R>) {}

  private label(record: R): string {
    return `VM "${record.name}"`;
  }

  /**
   * The live QEMU to hot-plug into, or undefined for a VM without one (its
   * definition changes and the next start has the device). A saved state
   * expects the machine exactly as it was, and a QEMU without hotplug slots
   * (started by an older agent) cannot take new devices.
   */
  private liveOf(record: R, action: string): DeviceLive | undefined {
    if (record.saved) {
      throw errors.conflict(`Cannot ${action} ${this.label(record)}: its saved state expects its devices as they were; restore it or discard the saved state first`, { state: 'saved' });
    }
    if (!record.runtime) return undefined;
    const live = this.c.live(record.id);
    const state = this.c.stateOf(record);
    if (!live) throw errors.conflict(`Cannot ${action} ${this.label(record)}: it is ${state}`, { state });
    if (!record.slots) {
      throw errors.conflict(`Cannot ${action} ${this.label(record)} while it runs: its QEMU was started without hotplug slots (by an older agent); stop and start it once`, { state });
    }
    return live;
  }

  /**
   * Snapshots pin the devices: a snapshot with memory holds the state of every
   * device (reverting needs the same machine), and every snapshot covers the
   * writable disks (a new one would lack it, a removed one would be missed).
   */
  private checkSnapshots(record: R, action: string, writableDisk: boolean): void {
    const withMemory = record.snapshots.filter((s) => s.withMemory);
    const blocking = withMemory.length > 0 ? withMemory : writableDisk ? record.snapshots : [];
    if (blocking.length === 0) return;
    const names = blocking.map((s) => `"${s.name}"`).join(', ');
    const why = withMemory.length > 0 ? 'hold the state of its devices' : 'cover its writable disks';
    throw errors.conflict(`Cannot ${action} ${this.label(record)}: its snapshots ${names} ${why}; delete them first`, { snapshots: blocking.map((s) => s.name) });
  }

  // ------------------------------------------------------------ disks

  async addDisk(ref: string, disk: VmDisk): Promise<VmInfo> {
    const record = this.c.find(ref);
    return this.c.lock.run(record.id, 'add-disk', this.label(record), async () => {
      const action = 'add a disk to';
      const spec = record.spec;
      const key = `${disk.pool}/${disk.volume}`;
      if (spec.disks.length >= maxDisks) throw errors.conflict(`Cannot ${action} ${this.label(record)}: it has ${spec.disks.length} disks, the most a VM may have`, { limit: maxDisks });
      const source = await this.c.pools.volumeSource(disk.pool, disk.volume, record.id);
      if (spec.disks.some((d) => d.pool === disk.pool && d.volume === disk.volume)) throw errors.conflict(`Volume "${key}" is already attached to ${this.label(record)}`);
      const writable = isWritable(disk);
      // Two VMs may share a volume only if neither writes to it.
      for (const other of this.c.records()) {
        if (other.id === record.id) continue;
        const theirs = other.spec.disks.find((d) => d.pool === disk.pool && d.volume === disk.volume);
        if (theirs && (writable || isWritable(theirs))) {
          throw errors.conflict(`Volume "${key}" is attached to VM "${other.name}"${isWritable(theirs) ? ' read-write' : ''}; detach it there first${writable ? ' (or attach it read-only to both)' : ''}`, { usedBy: [other.name] });
        }
      }
      if (writable) {
        const clone = await this.c.pools.firstCloneOf(disk.pool, disk.volume);
        if (clone) throw errors.conflict(`Volume "${key}" is the base of thin clone "${clone}": writing to it would corrupt the clone; attach it read-only`, { clone });
      }
      this.checkSnapshots(record, action, writable);
      const live = this.liveOf(record, action);
      const added: VmDisk = { pool: disk.pool, volume: disk.volume, ...(disk.readOnly ? { readOnly: true } : {}), ...(disk.media ? { media: disk.media } : {}) };
      if (live) {
        if (disk.media === 'cdrom') throw errors.conflict(`Cannot add a CD-ROM drive to ${this.label(record)} while it runs: q35's AHCI bus has no hotplug; stop it first`);
        const slots = record.slots!;
        const slot = freeSlot(slots, 'disks', record.name);
        const config = { nodeName: `disk${slot}`, ...source, format: volumeFormat(disk.volume), readOnly: !writable, port: slot };
        try {
          await plugDisk(live.qmp, config);
        } catch (cause) {
          throw plugFailure(`disk "${key}"`, record.name, cause);
        }
        slots.disks.push(slot);
      }
      spec.disks.push(added);
      await this.c.persist(record);
      this.c.logger.info({ vm: record.name, disk: key, live: live !== undefined }, 'disk added');
      return this.c.describe(record);
    });
  }

  async removeDisk(ref: string, which: string, pool?: string): Promise<VmInfo> {
    const record = this.c.find(ref);
    return this.c.lock.run(record.id, 'remove-disk', this.label(record), async () => {
      const action = 'remove a disk from';
      const spec = record.spec;
      const index = findDisk(spec, record.name, which, pool);
      const disk = spec.disks[index]!;
      const key = `${disk.pool}/${disk.volume}`;
      if (index === bootDiskIndex(spec)) {
        throw errors.conflict(`Disk ${index} ("${key}") is the boot disk of ${this.label(record)} and cannot be removed`, { index, boot: true });
      }
      this.checkSnapshots(record, action, isWritable(disk));
      const live = this.liveOf(record, action);
      if (!live) {
        spec.disks.splice(index, 1);
      } else {
        if (disk.media === 'cdrom') throw errors.conflict(`Cannot remove CD-ROM "${key}" from ${this.label(record)} while it runs: q35's AHCI bus has no hotplug; stop it first`);
        const slot = record.slots!.disks[index]!;
        await this.unplug(record, live, `disk${slot}-dev`, `disk "${key}"`);
        await this.forgetDisk(record, live, slot);
      }
      await this.c.persist(record);
      this.c.logger.info({ vm: record.name, disk: key, live: live !== undefined }, 'disk removed');
      return this.c.describe(record);
    });
  }

  /** Drops the disk in `slot` from the definition and its nodes from QEMU (its device is gone). */
  private async forgetDisk(record: R, live: DeviceLive, slot: number): Promise<void> {
    const index = record.slots?.disks.indexOf(slot) ?? -1;
    if (index < 0) return;
    record.spec.disks.splice(index, 1);
    record.slots!.disks.splice(index, 1);
    await releaseDiskNodes(live.qmp, `disk${slot}`).catch((cause: unknown) => this.c.logger.warn({ vm: record.name, slot, err: cause }, 'cannot remove the block nodes of an unplugged disk'));
  }

  // ------------------------------------------------------------ NICs

  async addNic(ref: string, nic: VmNic): Promise<VmInfo> {
    const record = this.c.find(ref);
    return this.c.lock.run(record.id, 'add-nic', this.label(record), async () => {
      const action = 'add a NIC to';
      const nics = record.spec.nics ?? [];
      if (nics.length >= maxNics) throw errors.conflict(`Cannot ${action} ${this.label(record)}: it has ${nics.length} NICs, the most a VM may have`, { limit: maxNics });
      checkNicMode(nic);
      const mac = nic.mac ?? randomMac();
      if (nics.some((n) => n.mac === mac)) throw errors.conflict(`MAC address "${mac}" is already used by a NIC of ${this.label(record)}`);
      const forwards = nic.forwards ?? [];
      for (const forward of forwards) {
        const protocol = forward.protocol ?? 'tcp';
        if (forwards.filter((f) => f.hostPort === forward.hostPort && (f.protocol ?? 'tcp') === protocol).length > 1) {
          throw errors.invalid(`Host port ${protocol} ${forward.hostPort} is forwarded twice`, { field: 'forwards' });
        }
        for (const other of this.c.records()) {
          const clash = (other.spec.nics ?? []).some((n) => (n.forwards ?? []).some((f) => f.hostPort === forward.hostPort && (f.protocol ?? 'tcp') === protocol));
          if (clash) throw errors.conflict(`Host port ${protocol} ${forward.hostPort} is already forwarded to VM "${other.name}"`, { usedBy: [other.name] });
        }
      }
      this.checkSnapshots(record, action, false);
      const live = this.liveOf(record, action);
      const added: VmNic = { ...nic, mac };
      if (live) {
        const slots = record.slots!;
        const slot = freeSlot(slots, 'nics', record.name);
        const hostForwards = forwards.map((f) => ({ protocol: f.protocol ?? 'tcp', hostAddress: '127.0.0.1', hostPort: f.hostPort, guestPort: f.guestPort }));
        try {
          await plugNic(live.qmp, { id: `net${slot}`, mac, mode: nic.mode ?? 'user', ...(nic.mode === 'tap' ? { ifname: nic.tap } : {}), hostForwards, port: maxDisks + slot });
        } catch (cause) {
          throw plugFailure(`NIC ${mac}`, record.name, cause);
        }
        slots.nics.push(slot);
      }
      record.spec.nics = [...nics, added];
      await this.c.persist(record);
      this.c.logger.info({ vm: record.name, mac, live: live !== undefined }, 'NIC added');
      return this.c.describe(record);
    });
  }

  async removeNic(ref: string, which: string): Promise<VmInfo> {
    const record = this.c.find(ref);
    return this.c.lock.run(record.id, 'remove-nic', this.label(record), async () => {
      const action = 'remove a NIC from';
      const index = findNic(record.spec, record.name, which);
      const mac = record.spec.nics![index]!.mac;
      this.checkSnapshots(record, action, false);
      const live = this.liveOf(record, action);
      if (!live) {
        record.spec.nics!.splice(index, 1);
      } else {
        const slot = record.slots!.nics[index]!;
        await this.unplug(record, live, `net${slot}-dev`, `NIC ${mac}`);
        await this.forgetNic(record, live, slot);
      }
      await this.c.persist(record);
      this.c.logger.info({ vm: record.name, mac, live: live !== undefined }, 'NIC removed');
      return this.c.describe(record);
    });
  }

  private async forgetNic(record: R, live: DeviceLive, slot: number): Promise<void> {
    const index = record.slots?.nics.indexOf(slot) ?? -1;
    if (index < 0) return;
    record.spec.nics!.splice(index, 1);
    record.slots!.nics.splice(index, 1);
    await releaseNicBackend(live.qmp, `net${slot}`).catch((cause: unknown) => this.c.logger.warn({ vm: record.name, slot, err: cause }, 'cannot remove the backend of an unplugged NIC'));
  }

  // ------------------------------------------------------------ removal

  /**
   * Asks the guest to release a device and waits for it. The guest must run to
   * answer; one that does not answer in time leaves the request pending, and the
   * device goes whenever the guest lets it go (`watch` then finishes the removal).
   */
  private async unplug(record: R, live: DeviceLive, deviceId: string, what: string): Promise<void> {
    if (live.qemuStatus !== 'running') {
      throw errors.conflict(`Cannot remove ${what} from ${this.label(record)} while it is paused: the guest must run to release the device; resume it first`, { state: this.c.stateOf(record) });
    }
    const key = `${record.id}/${deviceId}`;
    this.unplugging.add(key);
    let gone: boolean;
    try {
      gone = await unplugDevice(live.qmp, deviceId, this.c.unplugTimeoutMs);
    } catch (cause) {
      throw cause instanceof QmpCommandError ? errors.conflict(`Cannot remove ${what} from ${this.label(record)}: ${cause.desc}`, { qmpClass: cause.qmpClass }) : cause;
    } finally {
      this.unplugging.delete(key);
    }
    if (!gone) {
      throw errors.timeout(
        `The guest of ${this.label(record)} did not release ${what} within ${this.c.unplugTimeoutMs} ms; the removal stays requested and completes when the guest lets the device go`,
        { pending: true, device: deviceId },
      );
    }
  }

  /**
   * Follows a live QEMU: a device that leaves without an API call waiting for it
   * (a removal that answered "pending", or one the guest ejected itself) is dropped
   * from the definition too. At attach, devices that left while the agent was away
   * are found the same way.
   */
  watch(record: R, live: DeviceLive): void {
    live.qmp.on('event', (event) => {
      const id = deletedDeviceId(event);
      if (id === undefined || this.unplugging.has(`${record.id}/${id}`)) return;
      void this.deviceLeft(record, live, [id]);
    });
    if (!record.slots) return;
    void live.qmp
      .qomList('/machine/peripheral')
      .then((children) => {
        const present = new Set(children.map((child) => child.name));
        const expected = [
          ...record.spec.disks.flatMap((d, index) => (d.media === 'cdrom' ? [] : [`disk${record.slots!.disks[index]}-dev`])),
          ...(record.spec.nics ?? []).map((_, index) => `net${record.slots!.nics[index]}-dev`),
        ];
        const gone = expected.filter((id) => !present.has(id));
        if (gone.length > 0) return this.deviceLeft(record, live, gone);
        return undefined;
      })
      .catch((cause: unknown) => this.c.logger.warn({ vm: record.name, err: cause }, 'cannot list the devices of a QEMU'));
  }

  private async deviceLeft(record: R, live: DeviceLive, ids: string[]): Promise<void> {
    let changed = false;
    for (const id of ids) {
      const match = /^(disk|net)(\d+)-dev$/.exec(id);
      if (!match) continue;
      const slot = Number(match[2]);
      const before = record.spec.disks.length + (record.spec.nics?.length ?? 0);
      if (match[1] === 'disk') await this.forgetDisk(record, live, slot);
      else await this.forgetNic(record, live, slot);
      if (record.spec.disks.length + (record.spec.nics?.length ?? 0) !== before) {
        changed = true;
        this.c.logger.warn({ vm: record.name, device: id }, 'a device left the running VM without a request waiting for it; removed from its definition');
      }
    }
    if (changed) await this.c.persist(record).catch((cause: unknown) => this.c.logger.error({ vm: record.name, err: cause }, 'cannot persist the VM record'));
  }
}

/** A tap NIC names its tap and has no forwards; a user-mode NIC names no tap. */
export function checkNicMode(nic: VmNic): void {
  if (nic.mode === 'tap') {
    if (nic.tap === undefined) throw errors.invalid('A NIC in tap mode needs "tap", the tap device on its network\'s bridge', { field: 'tap' });
    if ((nic.forwards ?? []).length > 0) throw errors.invalid(`NIC on tap "${nic.tap}" has port forwards: they exist only in user mode`, { field: 'forwards' });
  } else if (nic.tap !== undefined) {
    throw errors.invalid(`NIC with tap "${nic.tap}" must have mode "tap"`, { field: 'mode' });
  }
}

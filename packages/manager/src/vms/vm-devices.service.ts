import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { DroverError, errors } from '@drover/core';
import type { VmDiskAdd, VmDiskInfo, VmInfo, VmNicAdd, VmNicInfo, VolumeInfo } from '@drover/api';
import type { AgentLink } from '../hosts/agent-link.js';
import type { OperationContext, OperationRunner } from '../operations/operation-runner.js';
import type { Store } from '../store/index.js';
import type { HostRecord, OperationRecord, VmRecord } from '../store/types.js';
import type { VmService } from './vm.service.js';

/** A disk added through the API, as the VM's spec keeps it (`addedDisks`). */
export interface AddedDisk {
  pool: string;
  volume: string;
  readOnly?: boolean;
  /** Made for the VM ({sizeBytes}): deleted with it. */
  created?: boolean;
}

/** A NIC added through the API, as the VM's spec keeps it (`addedNics`). */
export interface AddedNic {
  mac: string;
  forwards: Array<{ hostPort: number; guestPort: number }>;
}

interface DeviceSpec {
  addedDisks?: AddedDisk[];
  addedNics?: AddedNic[];
}

/**
 * States that allow each change. A running VM gets the device at once (hotplug);
 * a stopped one at its next start. A removal needs the guest running (paused, it
 * cannot release the device); a saved VM's state expects its devices as they were.
 */
const allowedStates = {
  add: ['running', 'paused', 'stopped'],
  remove: ['running', 'stopped'],
};

const defaultPool = 'default';
/** The agent waits up to its QMP timeout for the guest to release a device; leave it room. */
const agentTimeoutMs = 120_000;
const maxDisks = 16;
const maxNics = 8;

const seg = encodeURIComponent;

export interface VmDeviceServiceOptions {
  store: Store;
  runner: OperationRunner;
  link: AgentLink;
  logger: Logger;
  vms: VmService;
}

function devicesOf(vm: VmRecord): DeviceSpec {
  return vm.spec as DeviceSpec;
}

function randomMac(): string {
  // 52:54:00 is QEMU's locally administered prefix.
  return ['52', '54', '00', ...[...randomBytes(3)].map((x) => x.toString(16).padStart(2, '0'))].join(':');
}

/** Whether an agent error says the named disk or NIC (not the VM) is unknown there. */
function deviceGone(error: unknown, kind: 'Disk' | 'NIC'): boolean {
  return error instanceof DroverError && error.code === 'not_found' && error.details.kind === kind;
}

/**
 * Disks and NICs added to and removed from a VM (hotplug while it runs). Each
 * change is checked against the VM's host at once (an unknown volume is a 404,
 * one in use or a full VM a 409, before anything happens), then runs as a
 * journaled operation that asks the agent and records the device in the VM's
 * spec, so the next start (which rewrites the host's definition) keeps it.
 * Only devices added here can be removed here: the image's own disks and NIC
 * belong to the image.
 */
export class VmDeviceService {
  constructor(private readonly o: VmDeviceServiceOptions) {
    const handler = (kind: string, run: (ctx: OperationContext, vm: VmRecord, host: HostRecord) => Promise<unknown>) => ({
      run: async (ctx: OperationContext) => {
        const { vm, host } = await this.targetOf(ctx.op);
        return run(ctx, vm, host);
      },
      recover: (ctx: OperationContext) => this.recover(ctx, kind),
      compensate: (ctx: OperationContext, error: DroverError) => this.compensate(ctx, error),
    });
    o.runner.register('vm.disk.add', handler('vm.disk.add', (ctx, vm, host) => this.runAddDisk(ctx, vm, host)));
    o.runner.register('vm.disk.remove', handler('vm.disk.remove', (ctx, vm, host) => this.runRemoveDisk(ctx, vm, host)));
    o.runner.register('vm.nic.add', handler('vm.nic.add', (ctx, vm, host) => this.runAddNic(ctx, vm, host)));
    o.runner.register('vm.nic.remove', handler('vm.nic.remove', (ctx, vm, host) => this.runRemoveNic(ctx, vm, host)));
  }

  // ------------------------------------------------------------ reads

  /** The VM's host (online) and what the host has of the VM; a VM that never ran has no disks yet. */
  private async onHost(vm: VmRecord, what: string): Promise<{ host: HostRecord; info: VmInfo }> {
    if (!vm.hostId) throw errors.conflict(`Cannot ${what} VM "${vm.name}": it has not been placed on a host yet (its disks are made at its first start); start it once`, { state: vm.state });
    const host = await this.o.store.hosts.get(vm.hostId);
    if (host.state !== 'online') throw errors.conflict(`Cannot ${what} VM "${vm.name}": its host "${host.name}" is ${host.state}`, { host: host.name, state: host.state });
    const info = await this.o.link.vm(host, vm.id);
    if (!info) throw errors.conflict(`Cannot ${what} VM "${vm.name}": host "${host.name}" has no definition of it`, { host: host.name });
    return { host, info };
  }

  async listDisks(ref: string): Promise<VmDiskInfo[]> {
    const vm = await this.o.vms.find(ref);
    if (!vm.hostId) return [];
    const { info } = await this.onHost(vm, 'list the disks of');
    return this.disksOf(vm, info);
  }

  private disksOf(vm: VmRecord, info: VmInfo): VmDiskInfo[] {
    const added = devicesOf(vm).addedDisks ?? [];
    const spec = info.spec;
    const boot = spec.boot.kind === 'cdrom' ? spec.disks.findIndex((d) => d.media === 'cdrom') : spec.disks.findIndex((d) => d.media !== 'cdrom');
    return spec.disks.map((d, index) => ({
      index,
      pool: d.pool,
      volume: d.volume,
      readOnly: d.readOnly === true || d.media === 'cdrom',
      media: d.media ?? 'disk',
      boot: index === boot,
      added: added.some((a) => a.pool === d.pool && a.volume === d.volume),
    }));
  }

  async listNics(ref: string): Promise<VmNicInfo[]> {
    const vm = await this.o.vms.find(ref);
    if (!vm.hostId) return [];
    const { info } = await this.onHost(vm, 'list the NICs of');
    return this.nicsOf(vm, info);
  }

  private nicsOf(vm: VmRecord, info: VmInfo): VmNicInfo[] {
    const added = devicesOf(vm).addedNics ?? [];
    return (info.spec.nics ?? []).map((n, index) => ({
      index,
      mac: n.mac ?? '',
      forwards: (n.forwards ?? []).map((f) => ({ hostPort: f.hostPort, guestPort: f.guestPort })),
      added: added.some((a) => a.mac === n.mac),
    }));
  }

  // ------------------------------------------------------------ requests (checked now, done by an operation)

  private async begin(ref: string, change: 'add' | 'remove', what: string): Promise<{ vm: VmRecord; host: HostRecord; info: VmInfo }> {
    const vm = await this.o.vms.find(ref);
    if (!allowedStates[change].includes(vm.state)) {
      const hints: Record<string, string> = {
        paused: '; resume it first (the guest must run to release a device)',
        saved: '; restore it first (its saved state expects its devices as they were)',
        defined: '; its disks are made on a host at its first start: start it once',
      };
      const hint = hints[vm.state] ?? '';
      throw errors.conflict(`Cannot ${what} VM "${vm.name}": it is ${vm.state}${hint}`, { state: vm.state });
    }
    const busy = await this.o.runner.busyWith(vm.id);
    if (busy) throw errors.conflict(`VM "${vm.name}" is busy with operation ${busy.id} (${busy.kind})`, { operationId: busy.id });
    return { vm, ...(await this.onHost(vm, what)) };
  }

  private submit(vm: VmRecord, host: HostRecord, kind: string, params: Record<string, unknown>, actor: string, idempotencyKey?: string): Promise<OperationRecord> {
    return this.o.runner.submit(
      { kind, targetKind: 'vm', targetId: vm.id, params: { ...params, hostId: host.id, previousState: vm.state }, actor, idempotencyKey: idempotencyKey ?? null },
      `VM "${vm.name}"`,
    );
  }

  async addDisk(ref: string, request: VmDiskAdd, actor: string, idempotencyKey?: string): Promise<OperationRecord> {
    const { vm, host, info } = await this.begin(ref, 'add', 'add a disk to');
    if (info.spec.disks.length >= maxDisks) throw errors.conflict(`VM "${vm.name}" has ${info.spec.disks.length} disks, the most a VM may have`, { limit: maxDisks });
    const pool = request.pool ?? defaultPool;
    if ('volume' in request) {
      const volume = await this.o.link.call<VolumeInfo>(host, 'GET', `/v1/pools/${seg(pool)}/volumes/${seg(request.volume)}`);
      if (volume.usedBy.includes(vm.name)) throw errors.conflict(`Volume "${pool}/${request.volume}" is already attached to VM "${vm.name}"`);
      // STE: a labelled volume only for a VM sharing a type with it (docs/access-control-policy.md).
      await this.o.vms.policy.checkResourceUse(vm, 'volume', `${host.id}/${pool}/${request.volume}`, `volume "${pool}/${request.volume}"`);
      // Read-only sharing is the agent's to judge (it knows how each VM attaches the volume).
      if (volume.usedBy.length > 0 && !request.readOnly) {
        throw errors.conflict(`Volume "${pool}/${request.volume}" is attached to VM ${volume.usedBy.map((n) => `"${n}"`).join(', ')}; detach it there first`, { usedBy: volume.usedBy });
      }
      return this.submit(vm, host, 'vm.disk.add', { pool, volume: request.volume, readOnly: request.readOnly === true, create: false }, actor, idempotencyKey);
    }
    await this.o.link.call(host, 'GET', `/v1/pools/${seg(pool)}`);
    const name = request.name ?? `${vm.id}.disk-${randomBytes(3).toString('hex')}.qcow2`;
    const existing = await this.o.link.call<VolumeInfo>(host, 'GET', `/v1/pools/${seg(pool)}/volumes/${seg(name)}`).catch((error: unknown) => {
      if (error instanceof DroverError && error.code === 'not_found') return undefined;
      throw error;
    });
    if (existing) throw errors.conflict(`Volume "${pool}/${name}" already exists on host "${host.name}"; attach it with {"volume": "${name}"} or choose another name`);
    return this.submit(vm, host, 'vm.disk.add', { pool, volume: name, readOnly: false, create: true, sizeBytes: request.sizeBytes }, actor, idempotencyKey);
  }

  /** `which`: the disk's index in GET .../disks, or its volume name. */
  async removeDisk(ref: string, which: string, actor: string, idempotencyKey?: string): Promise<OperationRecord> {
    const { vm, host, info } = await this.begin(ref, 'remove', 'remove a disk from');
    const disks = this.disksOf(vm, info);
    const matches = /^\d+$/.test(which) ? disks.filter((d) => d.index === Number(which)) : disks.filter((d) => d.volume === which);
    if (matches.length === 0) {
      // Recorded but gone from the host (a removal the guest completed late, or an ejection): forget it.
      const recorded = (devicesOf(vm).addedDisks ?? []).find((d) => d.volume === which);
      if (recorded) return this.submit(vm, host, 'vm.disk.remove', { pool: recorded.pool, volume: recorded.volume }, actor, idempotencyKey);
      throw errors.notFound('Disk', `${vm.name}/${which}`);
    }
    if (matches.length > 1) throw errors.conflict(`VM "${vm.name}" has volume "${which}" from several pools; name the disk by its index`, { indexes: matches.map((d) => d.index) });
    const disk = matches[0]!;
    if (!disk.added) {
      throw errors.conflict(`Disk ${disk.index} ("${disk.pool}/${disk.volume}") of VM "${vm.name}" comes with its image${disk.boot ? ' and is its boot disk' : ''}; only disks added through this API can be removed`, { index: disk.index });
    }
    return this.submit(vm, host, 'vm.disk.remove', { pool: disk.pool, volume: disk.volume }, actor, idempotencyKey);
  }

  async addNic(ref: string, request: VmNicAdd, actor: string, idempotencyKey?: string): Promise<OperationRecord> {
    const { vm, host, info } = await this.begin(ref, 'add', 'add a NIC to');
    const nics = info.spec.nics ?? [];
    if (nics.length >= maxNics) throw errors.conflict(`VM "${vm.name}" has ${nics.length} NICs, the most a VM may have`, { limit: maxNics });
    const mac = request.mac ?? randomMac();
    if (nics.some((n) => n.mac === mac)) throw errors.conflict(`MAC address "${mac}" is already used by a NIC of VM "${vm.name}"`);
    const forwards = request.forwards ?? [];
    const ports = forwards.map((f) => f.hostPort);
    const twice = ports.find((p, i) => ports.indexOf(p) !== i);
    if (twice !== undefined) throw errors.invalid(`Host port ${twice} is forwarded twice`, { field: 'forwards' });
    // Host ports are per host: every VM there, running or not, keeps its own.
    for (const other of await this.o.link.vms(host)) {
      const taken = (other.spec.nics ?? []).flatMap((n) => n.forwards ?? []).find((f) => (f.protocol ?? 'tcp') === 'tcp' && ports.includes(f.hostPort));
      if (taken) throw errors.conflict(`Host port ${taken.hostPort} on host "${host.name}" is already forwarded to VM "${other.name}"`, { usedBy: [other.name] });
    }
    return this.submit(vm, host, 'vm.nic.add', { mac, forwards }, actor, idempotencyKey);
  }

  /** `which`: the NIC's index in GET .../nics, or its MAC address. */
  async removeNic(ref: string, which: string, actor: string, idempotencyKey?: string): Promise<OperationRecord> {
    const { vm, host, info } = await this.begin(ref, 'remove', 'remove a NIC from');
    const nics = this.nicsOf(vm, info);
    const nic = /^\d+$/.test(which) ? nics.find((n) => n.index === Number(which)) : nics.find((n) => n.mac === which.toLowerCase());
    if (!nic) {
      const recorded = (devicesOf(vm).addedNics ?? []).find((n) => n.mac === which.toLowerCase());
      if (recorded) return this.submit(vm, host, 'vm.nic.remove', { mac: recorded.mac }, actor, idempotencyKey);
      throw errors.notFound('NIC', `${vm.name}/${which}`);
    }
    if (!nic.added) throw errors.conflict(`NIC ${nic.index} (${nic.mac}) of VM "${vm.name}" comes with its image; only NICs added through this API can be removed`, { index: nic.index });
    return this.submit(vm, host, 'vm.nic.remove', { mac: nic.mac }, actor, idempotencyKey);
  }

  // ------------------------------------------------------------ operation bodies

  private async targetOf(op: OperationRecord): Promise<{ vm: VmRecord; host: HostRecord }> {
    const vm = await this.o.store.vms.get(op.targetId);
    const hostId = (op.params.hostId as string | undefined) ?? vm.hostId;
    if (!hostId) throw errors.conflict(`VM "${vm.name}" is not placed on any host`);
    return { vm, host: await this.o.store.hosts.get(hostId) };
  }

  /** Writes the VM's added devices (read afresh: the record may have moved on since the operation began). */
  private async record(vmId: string, change: (devices: Required<DeviceSpec>) => void): Promise<void> {
    const vm = await this.o.store.vms.get(vmId);
    const devices: Required<DeviceSpec> = { addedDisks: [...(devicesOf(vm).addedDisks ?? [])], addedNics: [...(devicesOf(vm).addedNics ?? [])] };
    change(devices);
    await this.o.vms.publish(await this.o.store.vms.update(vmId, { spec: { ...vm.spec, ...devices }, lastError: null }));
  }

  private diskParams(op: OperationRecord): { pool: string; volume: string; readOnly: boolean; create: boolean; sizeBytes?: number } {
    const p = op.params;
    return { pool: String(p.pool), volume: String(p.volume), readOnly: p.readOnly === true, create: p.create === true, ...(typeof p.sizeBytes === 'number' ? { sizeBytes: p.sizeBytes } : {}) };
  }

  private async runAddDisk(ctx: OperationContext, vm: VmRecord, host: HostRecord): Promise<unknown> {
    const disk = this.diskParams(ctx.op);
    if (disk.create) {
      await ctx.phase('create-volume', 20, `${disk.pool}/${disk.volume}`);
      await this.o.link.createVolume(host, disk.pool, { name: disk.volume, sizeBytes: disk.sizeBytes });
    }
    await ctx.phase('attach', 50, vm.state === 'stopped' ? 'at the next start' : 'hotplug');
    let info: VmInfo;
    try {
      info = await this.o.link.call<VmInfo>(host, 'POST', `/v1/vms/${vm.id}/disks`, { pool: disk.pool, volume: disk.volume, ...(disk.readOnly ? { readOnly: true } : {}) }, agentTimeoutMs);
    } catch (error) {
      // A volume made for this disk goes again: nobody else knows of it.
      if (disk.create) await this.o.link.deleteVolume(host, disk.pool, disk.volume).catch(() => undefined);
      throw error;
    }
    await ctx.phase('record', 90);
    await this.record(vm.id, (d) => d.addedDisks.push({ pool: disk.pool, volume: disk.volume, ...(disk.readOnly ? { readOnly: true } : {}), ...(disk.create ? { created: true } : {}) }));
    return this.result(host, info, { disk: { pool: disk.pool, volume: disk.volume, index: info.spec.disks.length - 1 } });
  }

  private async runRemoveDisk(ctx: OperationContext, vm: VmRecord, host: HostRecord): Promise<unknown> {
    const { pool, volume } = this.diskParams(ctx.op);
    await ctx.phase('detach', 30, vm.state === 'stopped' ? 'from the definition' : 'hotplug: waiting for the guest to release it');
    try {
      await this.o.link.call<VmInfo>(host, 'DELETE', `/v1/vms/${vm.id}/disks/${seg(volume)}?pool=${seg(pool)}`, undefined, agentTimeoutMs);
    } catch (error) {
      // Already gone there (a removal that completed late, or one the guest made itself): only the record is left.
      if (!deviceGone(error, 'Disk')) throw error;
    }
    await ctx.phase('record', 90);
    await this.record(vm.id, (d) => {
      d.addedDisks = d.addedDisks.filter((a) => !(a.pool === pool && a.volume === volume));
    });
    return this.result(host, await this.o.link.vm(host, vm.id), { disk: { pool, volume }, removed: true });
  }

  private async runAddNic(ctx: OperationContext, vm: VmRecord, host: HostRecord): Promise<unknown> {
    const mac = String(ctx.op.params.mac);
    const forwards = (ctx.op.params.forwards ?? []) as AddedNic['forwards'];
    await ctx.phase('attach', 50, vm.state === 'stopped' ? 'at the next start' : 'hotplug');
    const info = await this.o.link.call<VmInfo>(host, 'POST', `/v1/vms/${vm.id}/nics`, { mac, forwards }, agentTimeoutMs);
    await ctx.phase('record', 90);
    await this.record(vm.id, (d) => d.addedNics.push({ mac, forwards }));
    return this.result(host, info, { nic: { mac, index: (info.spec.nics ?? []).length - 1 } });
  }

  private async runRemoveNic(ctx: OperationContext, vm: VmRecord, host: HostRecord): Promise<unknown> {
    const mac = String(ctx.op.params.mac);
    await ctx.phase('detach', 30, vm.state === 'stopped' ? 'from the definition' : 'hotplug: waiting for the guest to release it');
    try {
      await this.o.link.call<VmInfo>(host, 'DELETE', `/v1/vms/${vm.id}/nics/${seg(mac)}`, undefined, agentTimeoutMs);
    } catch (error) {
      if (!deviceGone(error, 'NIC')) throw error;
    }
    await ctx.phase('record', 90);
    await this.record(vm.id, (d) => {
      d.addedNics = d.addedNics.filter((a) => a.mac !== mac);
    });
    return this.result(host, await this.o.link.vm(host, vm.id), { nic: { mac }, removed: true });
  }

  private result(host: HostRecord, info: VmInfo | undefined, what: Record<string, unknown>): Record<string, unknown> {
    // "live": the running guest got (or lost) the device now; otherwise at its next start.
    return { ...what, host: host.name, live: info?.state === 'running' || info?.state === 'paused' };
  }

  /**
   * A failed change leaves the VM as it was: the agent changes nothing when it
   * refuses, and a volume made for the disk was removed by the run. The error is
   * kept as the VM's last error.
   */
  private async compensate(ctx: OperationContext, error: DroverError): Promise<void> {
    const vm = await this.o.store.vms.get(ctx.op.targetId);
    await this.o.vms.publish(await this.o.store.vms.update(vm.id, { lastError: error.message }));
  }

  /**
   * After a manager restart: the host says whether the change happened (the
   * device is there, or gone). Done if so, recorded; otherwise the operation
   * fails and nothing is recorded. A volume made for a disk that never got
   * attached stays in the pool (it is not known whether the creation finished
   * when the manager died): delete it through the storage API.
   */
  private async recover(ctx: OperationContext, kind: string): Promise<unknown> {
    const { vm, host } = await this.targetOf(ctx.op);
    await ctx.phase('recover', ctx.op.progress, `after a manager restart, from phase "${ctx.op.phase}"`);
    let info = await this.o.link.vm(host, vm.id);
    for (let i = 0; i < 600 && info?.busy; i++) {
      await new Promise((r) => setTimeout(r, 200));
      info = await this.o.link.vm(host, vm.id);
    }
    const disk = this.diskParams(ctx.op);
    const mac = String(ctx.op.params.mac);
    const hasDisk = info?.spec.disks.some((d) => d.pool === disk.pool && d.volume === disk.volume) ?? false;
    const hasNic = info?.spec.nics?.some((n) => n.mac === mac) ?? false;
    const reached: Record<string, boolean> = { 'vm.disk.add': hasDisk, 'vm.disk.remove': !hasDisk, 'vm.nic.add': hasNic, 'vm.nic.remove': !hasNic };
    if (!info || !reached[kind]) {
      throw errors.unavailable(`Operation ${ctx.op.kind} was interrupted by a manager restart in phase "${ctx.op.phase}"; the host did not make the change`);
    }
    const forwards = (ctx.op.params.forwards ?? []) as AddedNic['forwards'];
    await this.record(vm.id, (d) => {
      if (kind === 'vm.disk.add' && !d.addedDisks.some((a) => a.pool === disk.pool && a.volume === disk.volume)) {
        d.addedDisks.push({ pool: disk.pool, volume: disk.volume, ...(disk.readOnly ? { readOnly: true } : {}), ...(disk.create ? { created: true } : {}) });
      }
      if (kind === 'vm.disk.remove') d.addedDisks = d.addedDisks.filter((a) => !(a.pool === disk.pool && a.volume === disk.volume));
      if (kind === 'vm.nic.add' && !d.addedNics.some((a) => a.mac === mac)) d.addedNics.push({ mac, forwards });
      if (kind === 'vm.nic.remove') d.addedNics = d.addedNics.filter((a) => a.mac !== mac);
    });
    return this.result(host, info, { recovered: true });
  }
}

/** The added devices as the host's definition lists them, after the image's (see `prepareOnHost`). */
export function addedAgentDevices(spec: DeviceSpec): { disks: Array<{ pool: string; volume: string; readOnly?: boolean }>; nics: Array<{ mac: string; forwards: AddedNic['forwards'] }> } {
  return {
    disks: (spec.addedDisks ?? []).map((d) => ({ pool: d.pool, volume: d.volume, ...(d.readOnly ? { readOnly: true } : {}) })),
    nics: (spec.addedNics ?? []).map((n) => ({ mac: n.mac, forwards: n.forwards })),
  };
}

import { errors } from '../errors.js';
import { vcpuCapacityOf } from '../scheduler/capacity.js';
import { cpuModelFilter, defaultFilters, memoryFilter, vcpuFilter } from '../scheduler/filters.js';
import { validateHostCandidates, validatePlacementRequest } from '../scheduler/validate.js';
import type { HostCandidate, HostVm, PlacementContext, PlacementFilter } from '../scheduler/types.js';
import type { PlanMove, PlannerInput, PlannerVm } from './types.js';

/** One host as the planner sees it: fixed usage (not from planned VMs) and its limits when it receives a VM. */
export interface HostSlot {
  readonly index: number;
  readonly host: HostCandidate;
  readonly online: boolean;
  /** The host as filters see it when it receives a VM: capacity reduced by the headroom. */
  readonly capacity: HostCandidate['capacity'];
  readonly memCap: number;
  readonly cpuCap: number;
  /** Usage that does not come from planned VMs (other VMs, starts in flight). */
  readonly baseMem: number;
  readonly baseCpu: number;
  /** The host's VMs that are not planned; they stay. */
  readonly fixedVms: readonly HostVm[];
}

export interface VmSlot {
  readonly index: number;
  readonly vm: PlannerVm;
  readonly home: number;
  readonly mem: number;
  readonly cpu: number;
  readonly pinned: boolean;
  readonly hostVm: HostVm;
  /** Sort key for "decreasing size": normalized by the largest online host, restricted VMs first. */
  readonly size: number;
}

const PACK: PlacementContext = { mode: 'pack' };

/**
 * VMs that only some hosts take (a CPU model, host labels or lists, labels a policy
 * filter may read) are placed before all others: left for last, they find the few
 * hosts that would take them already full.
 */
export const RESTRICTED = 10;

function restricted(vm: PlannerVm): boolean {
  return (
    vm.cpuModel !== undefined ||
    (vm.hostInclude !== undefined && vm.hostInclude.length > 0) ||
    (vm.requiredHostLabels !== undefined && Object.keys(vm.requiredHostLabels).length > 0) ||
    (vm.labels !== undefined && Object.keys(vm.labels).length > 0)
  );
}

/** The immutable part of a planning problem: hosts, VMs, filters. */
export class Cluster {
  readonly hosts: HostSlot[] = [];
  readonly vms: VmSlot[] = [];
  readonly hostIndex = new Map<string, number>();
  readonly filters: readonly PlacementFilter[];
  /** Whether the chain includes the scheduler's CPU model filter (checked early, without a view). */
  readonly checksCpuModel: boolean;
  /** Largest online memory and vCPU capacity (with headroom), for normalizing sizes. */
  readonly memScale: number;
  readonly cpuScale: number;
  /** The same numbers as flat arrays, for the planner's inner loops. */
  readonly memCaps: Float64Array;
  readonly cpuCaps: Float64Array;
  readonly vmMem: Float64Array;
  readonly vmCpu: Float64Array;

  constructor(input: PlannerInput, options: { headroom?: number; pinned?: readonly string[] } = {}) {
    if (typeof input !== 'object' || input === null) throw errors.invalid('Planner input must be an object with hosts and vms');
    if (!Array.isArray(input.hosts)) throw errors.invalid('Planner input: hosts must be a list of hosts', { field: 'hosts' });
    if (!Array.isArray(input.vms)) throw errors.invalid('Planner input: vms must be a list of VMs', { field: 'vms' });
    validateHostCandidates(input.hosts);
    if (input.filters !== undefined && !(Array.isArray(input.filters) && input.filters.every((f) => typeof f === 'function'))) {
      throw errors.invalid('Planner input: filters must be a list of placement filters', { field: 'filters' });
    }
    this.filters = input.filters ?? defaultFilters;
    this.checksCpuModel = this.filters.includes(cpuModelFilter);
    const headroom = options.headroom ?? 0;
    if (!(typeof headroom === 'number' && headroom >= 0 && headroom < 1)) {
      throw errors.invalid(`Headroom is ${JSON.stringify(headroom)}, expected a number in [0, 1)`, { field: 'headroom' });
    }
    const pinnedIds = new Set(options.pinned ?? []);
    input.hosts.forEach((host, i) => this.hostIndex.set(host.id, i));

    const planned = new Set<string>();
    const plannedMem = new Float64Array(input.hosts.length);
    const plannedCpu = new Float64Array(input.hosts.length);
    for (const vm of input.vms) {
      validatePlacementRequest(vm);
      if (planned.has(vm.vmId)) throw errors.invalid(`VM id "${vm.vmId}" appears twice in the planner's VM list`, { vmId: vm.vmId });
      planned.add(vm.vmId);
      const home = this.hostIndex.get(vm.hostId);
      if (home === undefined) {
        throw errors.invalid(`VM "${vm.name || vm.vmId}" runs on host "${String(vm.hostId)}", which is not in the host list`, {
          vmId: vm.vmId,
          field: 'hostId',
        });
      }
      plannedMem[home] = plannedMem[home]! + vm.memoryMiB;
      plannedCpu[home] = plannedCpu[home]! + vm.cpus;
    }
    for (const id of pinnedIds) {
      if (!planned.has(id)) throw errors.invalid(`Pinned VM "${id}" is not in the planner's VM list`, { vmId: id, field: 'pinned' });
    }

    let memScale = 0;
    let cpuScale = 0;
    input.hosts.forEach((host, index) => {
      const capacity = headroom === 0 ? host.capacity : { cpus: host.capacity.cpus * (1 - headroom), memoryMiB: Math.floor(host.capacity.memoryMiB * (1 - headroom)) };
      const memCap = capacity.memoryMiB;
      const cpuCap = vcpuCapacityOf({ ...host, capacity });
      const online = host.state === 'online';
      if (online) {
        memScale = Math.max(memScale, memCap);
        cpuScale = Math.max(cpuScale, cpuCap);
      }
      this.hosts.push({
        index,
        host,
        online,
        capacity,
        memCap,
        cpuCap,
        baseMem: Math.max(0, host.used.memoryMiB + host.reserved.memoryMiB - plannedMem[index]!),
        baseCpu: Math.max(0, host.used.cpus + host.reserved.cpus - plannedCpu[index]!),
        fixedVms: host.vms.filter((vm: HostVm) => !planned.has(vm.id)),
      });
    });
    this.memScale = memScale || 1;
    this.cpuScale = cpuScale || 1;
    // Hosts that are not online never fit: their limits are -1.
    this.memCaps = Float64Array.from(this.hosts, (h) => (h.online ? h.memCap : -1));
    this.cpuCaps = Float64Array.from(this.hosts, (h) => (h.online ? h.cpuCap : -1));
    this.vmMem = Float64Array.from(input.vms, (vm) => vm.memoryMiB);
    this.vmCpu = Float64Array.from(input.vms, (vm) => vm.cpus);
    input.vms.forEach((vm, index) => {
      const mem = vm.memoryMiB / this.memScale;
      const cpu = vm.cpus / this.cpuScale;
      this.vms.push({
        index,
        vm,
        home: this.hostIndex.get(vm.hostId)!,
        mem: vm.memoryMiB,
        cpu: vm.cpus,
        pinned: vm.pinned === true || pinnedIds.has(vm.vmId),
        hostVm: { id: vm.vmId, antiAffinityGroups: vm.antiAffinityGroups ?? [], labels: vm.labels ?? {} },
        size: Math.max(mem, cpu) + 1e-3 * (mem + cpu) + (restricted(vm) ? RESTRICTED : 0),
      });
    });
  }

  /** Every VM index, largest first (ties by id, so plans are deterministic); sorted once. */
  get sizeOrder(): readonly number[] {
    this.#sizeOrder ??= this.vms
      .map((v) => v.index)
      .sort((a, b) => this.vms[b]!.size - this.vms[a]!.size || (this.vms[a]!.vm.vmId < this.vms[b]!.vm.vmId ? -1 : 1));
    return this.#sizeOrder;
  }

  #sizeOrder: number[] | undefined;

  /** The VMs for which `wanted` holds, largest first. */
  bySizeDesc(wanted: (v: number) => boolean): number[] {
    return this.sizeOrder.filter(wanted);
  }

  initial(): Sim {
    const n = this.hosts.length;
    const at = new Int32Array(this.vms.length);
    const mem = new Float64Array(n);
    const cpu = new Float64Array(n);
    const members: number[][] = this.hosts.map(() => []);
    for (const h of this.hosts) {
      mem[h.index] = h.baseMem;
      cpu[h.index] = h.baseCpu;
    }
    for (const v of this.vms) {
      at[v.index] = v.home;
      mem[v.home] = mem[v.home]! + v.mem;
      cpu[v.home] = cpu[v.home]! + v.cpu;
      members[v.home]!.push(v.index);
    }
    return new Sim(this, at, mem, cpu, members, new Array<HostCandidate | undefined>(n));
  }

  /** An empty copy of the cluster: only fixed usage and pinned VMs (and VMs of hosts that are not online) in place. */
  cleared(keep: (v: VmSlot) => boolean): Sim {
    const sim = this.initial();
    for (const v of this.vms) if (!keep(v)) sim.remove(v.index);
    return sim;
  }

  hostId(index: number): string {
    return this.hosts[index]!.host.id;
  }
}

/** A mutable state of the cluster: where each planned VM is, and each host's usage. */
export class Sim {
  constructor(
    readonly c: Cluster,
    readonly at: Int32Array,
    readonly mem: Float64Array,
    readonly cpu: Float64Array,
    readonly members: number[][],
    readonly views: Array<HostCandidate | undefined>,
  ) {}

  clone(): Sim {
    return new Sim(this.c, this.at.slice(), this.mem.slice(), this.cpu.slice(), this.members.map((m) => m.slice()), this.views.slice());
  }

  /** The host as filters see it as a destination: capacity with headroom, current usage, current VMs. */
  view(h: number): HostCandidate {
    let view = this.views[h];
    if (view === undefined) {
      const slot = this.c.hosts[h]!;
      const members = this.members[h]!;
      const vms: HostVm[] = slot.fixedVms.slice();
      for (let i = 0; i < members.length; i++) vms.push(this.c.vms[members[i]!]!.hostVm);
      view = {
        ...slot.host,
        capacity: slot.capacity,
        used: { cpus: this.cpu[h]!, memoryMiB: this.mem[h]! },
        reserved: { cpus: 0, memoryMiB: 0 },
        vms,
      };
      this.views[h] = view;
    }
    return view;
  }

  /** Cheap arithmetic check first (most refusals), then the whole filter chain. */
  fitsNumerically(v: number, h: number): boolean {
    const c = this.c;
    return this.mem[h]! + c.vmMem[v]! <= c.memCaps[h]! && this.cpu[h]! + c.vmCpu[v]! <= c.cpuCaps[h]!;
  }

  passesFilters(v: number, h: number): boolean {
    const request = this.c.vms[v]!.vm;
    // The CPU model check needs no view of the host's VMs: refuse before building one.
    if (request.cpuModel !== undefined && this.c.checksCpuModel && !this.c.hosts[h]!.host.cpuModels.includes(request.cpuModel)) return false;
    const view = this.view(h);
    for (const filter of this.c.filters) {
      // Capacity was checked by fitsNumerically with the same numbers.
      if (filter === memoryFilter || filter === vcpuFilter) continue;
      if (!filter(request, view, PACK).pass) return false;
    }
    return true;
  }

  /** Capacity (with headroom) and every filter. */
  fits(v: number, h: number): boolean {
    return this.fitsNumerically(v, h) && this.passesFilters(v, h);
  }

  remove(v: number): void {
    const h = this.at[v]!;
    if (h < 0) return;
    const vm = this.c.vms[v]!;
    this.mem[h] = this.mem[h]! - vm.mem;
    this.cpu[h] = this.cpu[h]! - vm.cpu;
    const list = this.members[h]!;
    const i = list.indexOf(v);
    if (i >= 0) list.splice(i, 1);
    this.views[h] = undefined;
    this.at[v] = -1;
  }

  put(v: number, h: number): void {
    this.remove(v);
    const vm = this.c.vms[v]!;
    this.mem[h] = this.mem[h]! + vm.mem;
    this.cpu[h] = this.cpu[h]! + vm.cpu;
    this.members[h]!.push(v);
    this.views[h] = undefined;
    this.at[v] = h;
  }

  /** Whether the host runs anything: planned VMs or fixed usage. */
  occupied(h: number): boolean {
    const slot = this.c.hosts[h]!;
    return this.members[h]!.length > 0 || slot.fixedVms.length > 0 || slot.baseMem > 0 || slot.baseCpu > 0;
  }

  hostsUsed(): number {
    let n = 0;
    for (const slot of this.c.hosts) if (slot.online && this.occupied(slot.index)) n += 1;
    return n;
  }

  /** Load in [0, 1+] against the full capacity (no headroom): max of the memory and vCPU shares. */
  load(h: number): number {
    const host = this.c.hosts[h]!.host;
    const memCap = host.capacity.memoryMiB;
    const cpuCap = vcpuCapacityOf(host);
    const mem = memCap > 0 ? this.mem[h]! / memCap : this.mem[h]! > 0 ? Infinity : 0;
    const cpu = cpuCap > 0 ? this.cpu[h]! / cpuCap : this.cpu[h]! > 0 ? Infinity : 0;
    return Math.max(mem, cpu);
  }
}

/**
 * Orders the moves from `start` to the final placement `target` so that each one
 * is valid when it runs (capacity and every filter on its destination). Moves
 * that cannot run yet wait for others. A deadlock (two VMs that must swap places)
 * is broken by leaving one where it is when its host stays in use anyway (the
 * target occupies it: no host more is used) or by parking one on a third host
 * that takes it now; the first way first, and if that ends stuck, the second
 * first. Returns the moves and the state they end in, or null when no order works.
 */
export function sequenceMoves(start: Sim, target: Int32Array): { moves: PlanMove[]; end: Sim } | null {
  return sequenceWith(start, target, true) ?? sequenceWith(start, target, false);
}

function sequenceWith(start: Sim, target: Int32Array, stayFirst: boolean): { moves: PlanMove[]; end: Sim } | null {
  const c = start.c;
  const sim = start.clone();
  const moves: PlanMove[] = [];
  let pending: number[] = [];
  const occupiedAtEnd = new Set<number>();
  for (const slot of c.hosts) if (slot.fixedVms.length > 0 || slot.baseMem > 0 || slot.baseCpu > 0) occupiedAtEnd.add(slot.index);
  for (let v = 0; v < target.length; v++) {
    occupiedAtEnd.add(target[v]!);
    if (sim.at[v] !== target[v]) pending.push(v);
  }
  let parkings = 0;
  while (pending.length > 0) {
    const waiting: number[] = [];
    for (const v of pending) {
      const to = target[v]!;
      if (sim.fits(v, to)) {
        moves.push({ vmId: c.vms[v]!.vm.vmId, from: c.hostId(sim.at[v]!), to: c.hostId(to) });
        sim.put(v, to);
      } else {
        waiting.push(v);
      }
    }
    if (waiting.length === pending.length) {
      const stay = waiting.findIndex((v) => occupiedAtEnd.has(sim.at[v]!));
      if (stayFirst && stay >= 0) {
        waiting.splice(stay, 1);
        pending = waiting;
        continue;
      }
      let parked = false;
      for (const v of waiting) {
        const from = sim.at[v]!;
        for (const slot of c.hosts) {
          const h = slot.index;
          if (h === from || h === target[v] || !sim.fits(v, h)) continue;
          moves.push({ vmId: c.vms[v]!.vm.vmId, from: c.hostId(from), to: c.hostId(h) });
          sim.put(v, h);
          parked = true;
          break;
        }
        if (parked) break;
      }
      if (!parked && stay >= 0) {
        waiting.splice(stay, 1);
      } else if (!parked || parkings >= c.vms.length) {
        return null;
      }
      parkings += 1;
    }
    pending = waiting;
  }
  return { moves, end: sim };
}

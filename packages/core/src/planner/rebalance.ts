import { errors } from '../errors.js';
import { Cluster, type Sim } from './cluster.js';
import type { PlanMove, RebalanceInput, RebalancePlan } from './types.js';

/** Most loaded − least loaded online host (load = max of the memory and vCPU shares). 0 with fewer than two online hosts. */
export function imbalanceOf(sim: Sim): number {
  let max = -Infinity;
  let min = Infinity;
  let n = 0;
  for (const slot of sim.c.hosts) {
    if (!slot.online) continue;
    const load = sim.load(slot.index);
    max = Math.max(max, load);
    min = Math.min(min, load);
    n += 1;
  }
  return n < 2 ? 0 : max - min;
}

/** How many of the least loaded hosts are tried as destinations for each move (keeps a step O(VMs on the host × this)). */
const DESTINATIONS_PER_STEP = 16;

/**
 * Plans moves that spread load while the imbalance is above `threshold`: each step
 * takes the most loaded online host and moves one of its VMs to a less loaded host
 * (the move that lowers the cluster's imbalance most), checked against every
 * filter in the state at that step. Each VM moves at most once; pinned VMs never.
 * It stops at the threshold, or when no move off the hottest host helps.
 *
 * @throws DroverError `invalid` for a threshold outside [0, 1] or malformed input.
 */
export function planRebalance(input: RebalanceInput): RebalancePlan {
  const threshold = input.threshold;
  if (!(typeof threshold === 'number' && threshold >= 0 && threshold <= 1)) {
    throw errors.invalid(`Rebalance threshold is ${JSON.stringify(threshold)}, expected a number in [0, 1]`, { field: 'threshold' });
  }
  const c = new Cluster(input);
  const sim = c.initial();
  const imbalanceBefore = imbalanceOf(sim);
  const moved = new Set<number>();
  const moves: PlanMove[] = [];
  const online = c.hosts.filter((h) => h.online).map((h) => h.index);
  const loads = new Float64Array(c.hosts.length);
  for (const h of online) loads[h] = sim.load(h);
  const loadWith = (h: number, mem: number, cpu: number) => {
    const host = c.hosts[h]!;
    const memCap = host.host.capacity.memoryMiB;
    const cpuCap = host.cpuCap;
    return Math.max(memCap > 0 ? (sim.mem[h]! + mem) / memCap : 0, cpuCap > 0 ? (sim.cpu[h]! + cpu) / cpuCap : 0);
  };

  for (let step = 0; step < c.vms.length && online.length >= 2; step++) {
    let hot = online[0]!;
    let cold = online[0]!;
    for (const h of online) {
      if (loads[h]! > loads[hot]!) hot = h;
      if (loads[h]! < loads[cold]!) cold = h;
    }
    if (loads[hot]! - loads[cold]! <= threshold) break;
    const destinations = online.filter((h) => h !== hot).sort((a, b) => loads[a]! - loads[b]!).slice(0, DESTINATIONS_PER_STEP);
    const byLoad = [...online].sort((a, b) => loads[b]! - loads[a]!);
    const current = loads[hot]! - loads[cold]!;
    // The imbalance after moving a VM from `hot` to `to`: the other hosts keep their loads.
    const imbalanceAfter = (to: number, hotAfter: number, toAfter: number) => {
      let max = Math.max(hotAfter, toAfter);
      let min = Math.min(hotAfter, toAfter);
      for (const h of byLoad) if (h !== hot && h !== to) { max = Math.max(max, loads[h]!); break; }
      for (let i = byLoad.length - 1; i >= 0; i--) {
        const h = byLoad[i]!;
        if (h !== hot && h !== to) { min = Math.min(min, loads[h]!); break; }
      }
      return max - min;
    };
    let best: { v: number; to: number; after: number } | undefined;
    for (const v of sim.members[hot]!) {
      const vm = c.vms[v]!;
      if (vm.pinned || moved.has(v)) continue;
      const hotAfter = loadWith(hot, -vm.mem, -vm.cpu);
      for (const to of destinations) {
        const after = imbalanceAfter(to, hotAfter, loadWith(to, vm.mem, vm.cpu));
        if (after >= current - 1e-9 || (best && after >= best.after)) continue;
        if (!sim.fits(v, to)) continue;
        best = { v, to, after };
      }
    }
    if (!best) break;
    moves.push({ vmId: c.vms[best.v]!.vm.vmId, from: c.hostId(hot), to: c.hostId(best.to) });
    sim.put(best.v, best.to);
    moved.add(best.v);
    loads[hot] = sim.load(hot);
    loads[best.to] = sim.load(best.to);
  }
  return { moves, imbalanceBefore, imbalanceAfter: imbalanceOf(sim) };
}

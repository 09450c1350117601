import { DroverError, errors } from '../errors.js';
import { placeVm } from '../scheduler/place.js';
import { Cluster } from './cluster.js';
import type { EvacuationInput, EvacuationPlan, PlanMove, Unplaceable } from './types.js';

/**
 * Plans moving every VM off one host, largest first, each to the host the
 * scheduler would pick in `spread` mode given the moves planned before it (the
 * evacuated host itself is never a destination). Pinned VMs and VMs no other
 * host accepts are listed in `cannotMove` with the reason; nothing is planned
 * for them.
 *
 * @throws DroverError `not_found` if `hostId` is not among the hosts, `invalid` for malformed input.
 */
export function planEvacuation(input: EvacuationInput): EvacuationPlan {
  const c = new Cluster(input);
  const source = c.hostIndex.get(input.hostId);
  if (source === undefined) throw errors.notFound('host', String(input.hostId));
  const sim = c.initial();
  const moves: PlanMove[] = [];
  const cannotMove: Unplaceable[] = [];
  const mine = c.bySizeDesc((v) => c.vms[v]!.home === source);
  const sourceName = c.hosts[source]!.host.name;
  for (const v of mine) {
    const vm = c.vms[v]!;
    if (vm.pinned) {
      cannotMove.push({ vmId: vm.vm.vmId, reason: `VM "${vm.vm.name || vm.vm.vmId}" is pinned to host "${sourceName}"` });
      continue;
    }
    const others = c.hosts.filter((h) => h.index !== source).map((h) => sim.view(h.index));
    try {
      const placed = placeVm(vm.vm, others, { filters: c.filters, mode: 'spread' });
      const to = c.hostIndex.get(placed.hostId)!;
      moves.push({ vmId: vm.vm.vmId, from: input.hostId, to: placed.hostId });
      sim.put(v, to);
    } catch (error) {
      if (!(error instanceof DroverError) || error.code !== 'conflict') throw error;
      cannotMove.push({ vmId: vm.vm.vmId, reason: others.length === 0 ? `host "${sourceName}" is the only host: there is nowhere to go` : error.message });
    }
  }
  return { moves, cannotMove };
}

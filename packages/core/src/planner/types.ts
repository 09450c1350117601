import type { HostCandidate, PlacementFilter, PlacementRequest } from '../scheduler/types.js';

/**
 * A VM the planner may move: the scheduler's placement request for it (size, CPU
 * model, anti-affinity groups, labels, include/exclude lists, required host labels)
 * plus where it runs now. `vmId` is the VM's id and must be unique.
 */
export interface PlannerVm extends PlacementRequest {
  /** Id of the host the VM runs on now; must be one of the hosts given. */
  readonly hostId: string;
  /** A pinned VM is never moved (the same as listing its id in `pinned`). */
  readonly pinned?: boolean;
}

/**
 * Hosts are the scheduler's `HostCandidate`s as they are now. Their `used` and
 * `reserved` include the VMs of the `vms` list that sit on them; whatever is left
 * over (VMs not in the list, starts in flight) stays where it is and keeps its
 * share of the host. `host.vms` may list the planned VMs or not: the planner puts
 * each planned VM on its current host itself. Only `online` hosts receive VMs;
 * VMs on other hosts are left alone (and reported).
 */
export interface PlannerInput {
  readonly hosts: readonly HostCandidate[];
  readonly vms: readonly PlannerVm[];
  /** Every filter a move must pass on its destination, in the state at that step. Default: the scheduler's `defaultFilters`. */
  readonly filters?: readonly PlacementFilter[];
}

export interface PlanMove {
  readonly vmId: string;
  /** Host id the VM leaves. */
  readonly from: string;
  /** Host id the VM goes to. */
  readonly to: string;
}

export interface ConsolidationInput extends PlannerInput {
  /**
   * Share of each destination's capacity (memory and vCPUs) kept free, in [0, 1).
   * 0.1 means a host that receives a VM stays at ≤ 90 %. Hosts that receive
   * nothing may stay above it. Default 0.
   */
  readonly headroom?: number;
  /** Empty hosts kept powered on as spares: listed in `spareHosts`, not in `emptiedHosts`. Default 0. */
  readonly keepSpareHosts?: number;
  /** Ids of VMs that must not move (besides VMs with `pinned: true`). */
  readonly pinned?: readonly string[];
}

export interface Unplaceable {
  readonly vmId: string;
  readonly reason: string;
}

export interface ConsolidationPlan {
  /** Executable in this order: after each move every host respects capacity (with headroom) and every filter. */
  readonly moves: readonly PlanMove[];
  /** Online hosts with no VM after the plan (already empty or emptied by it), less the spares: the hosts that may be powered off. */
  readonly emptiedHosts: readonly string[];
  /** Empty online hosts kept on as spares (`keepSpareHosts`), preferring hosts that were already empty. */
  readonly spareHosts: readonly string[];
  /** Online hosts still running something after the plan. */
  readonly hostsUsed: number;
  /** Online hosts running something now. */
  readonly hostsUsedBefore: number;
  /** The fewest online hosts whose capacity (with headroom) covers the demand, memory and vCPUs each: ceil(total demand / host size) for equal hosts. */
  readonly lowerBound: number;
  /** First-fit decreasing from scratch under the same rules, for comparison. */
  readonly ffd: { readonly hostsUsed: number; readonly moves: number };
  /** VMs the planner leaves where they are although it was asked to plan them (on a host that is not online). */
  readonly unplaceable: readonly Unplaceable[];
}

export interface FirstFitPlan {
  readonly hostsUsed: number;
  /** VMs whose host differs from the one they run on now. */
  readonly moves: number;
  /** VM id → host id after the baseline packing. */
  readonly placement: Readonly<Record<string, string>>;
}

export interface EvacuationInput extends PlannerInput {
  /** The host to empty. Its VMs go to other online hosts (chosen as the scheduler does in `spread` mode). */
  readonly hostId: string;
}

export interface EvacuationPlan {
  readonly moves: readonly PlanMove[];
  /** VMs of the host that cannot go anywhere (pinned, or no host passes every filter), with the reason. */
  readonly cannotMove: readonly Unplaceable[];
}

export interface RebalanceInput extends PlannerInput {
  /** Stop once the imbalance (most loaded − least loaded online host, load in [0, 1]) is at most this. In [0, 1]. */
  readonly threshold: number;
}

export interface RebalancePlan {
  readonly moves: readonly PlanMove[];
  /** Load of a host = max(memory used / capacity, vCPUs used / vCPU capacity); imbalance = max − min over online hosts. */
  readonly imbalanceBefore: number;
  readonly imbalanceAfter: number;
}

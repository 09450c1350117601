import type { CompiledPolicy } from './compiled.js';
import { policyDenied } from './compiled.js';
import type { ResolvedLabel } from './types.js';

/** One VM counting on the host that bars a start: its id, label, and the clashing types. */
export interface ChineseWallConflict {
  readonly vmId: string;
  readonly vmLabel: string;
  /** The candidate's type. */
  readonly type: string;
  /** The running VM's type in the same set. */
  readonly otherType: string;
  readonly set: string;
}

export type ChineseWallVerdict = { readonly allowed: true } | { readonly allowed: false; readonly conflicts: readonly ChineseWallConflict[] };

/**
 * Xen ACM's per-host Chinese Wall accounting: how many VMs of each type count
 * on the host (`runningTypes`) and, per type, how many of them bar it
 * (`conflictAggregate`: for each conflict set one of a VM's types is in, the
 * set's other types). A VM may start only if none of its types has a non-zero
 * aggregate. A VM counts while running or paused, and while a start or an
 * incoming migration to the host is in flight.
 */
export class ChineseWallState {
  readonly runningTypes = new Map<string, number>();
  readonly conflictAggregate = new Map<string, number>();
  private readonly members = new Map<string, ResolvedLabel>();
  /** Chinese Wall type → ids of the VMs here holding it. */
  private readonly byType = new Map<string, Set<string>>();

  constructor(readonly policy: CompiledPolicy) {}

  /** VM ids counting here, with their labels. */
  get vms(): ReadonlyMap<string, ResolvedLabel> {
    return this.members;
  }

  /** Xen's pre-start check; on refusal names each VM here that bars `label` and the types involved. */
  check(label: ResolvedLabel, vmId?: string, firstOnly = false): ChineseWallVerdict {
    let barred = false;
    for (const type of label.cwTypes) if ((this.conflictAggregate.get(type) ?? 0) > 0) barred = true;
    if (!barred) return { allowed: true };
    const conflicts: ChineseWallConflict[] = [];
    if (firstOnly) {
      // The scheduler asks this of every host: go straight to a VM of a clashing type.
      for (const type of label.cwTypes) {
        for (const set of this.policy.setsOfType.get(type) ?? []) {
          for (const otherType of set.types) {
            if (otherType === type || label.cwTypes.has(otherType)) continue;
            for (const id of this.byType.get(otherType) ?? []) {
              if (id === vmId) continue;
              const other = this.members.get(id)!;
              const c = this.policy.conflicts(label, other)[0];
              if (c) return { allowed: false, conflicts: [{ vmId: id, vmLabel: other.ref, ...c }] };
            }
          }
        }
      }
      return { allowed: true };
    }
    for (const [id, other] of this.members) {
      if (id === vmId) continue;
      for (const c of this.policy.conflicts(label, other)) conflicts.push({ vmId: id, vmLabel: other.ref, ...c });
    }
    // The VM itself never bars itself (a valid label holds at most one type of a set).
    return conflicts.length === 0 ? { allowed: true } : { allowed: false, conflicts };
  }

  /** Counts `vmId` here; refuses (`policy_denied`) when it conflicts. Adding a VM already here is a no-op. */
  add(vmId: string, label: ResolvedLabel): void {
    if (this.members.has(vmId)) return;
    const verdict = this.check(label, vmId);
    if (!verdict.allowed) {
      const c = verdict.conflicts[0]!;
      throw policyDenied(`VM "${vmId}" (${label.ref}) may not run beside VM "${c.vmId}" (${c.vmLabel}): types "${c.type}" and "${c.otherType}" are in conflict set "${c.set}"`, {
        reason: 'chinese_wall',
        conflicts: verdict.conflicts,
      });
    }
    this.count(vmId, label);
  }

  /**
   * Counts `vmId` here without the check: the accounting of what already runs
   * (a host's VMs as reported), so checks against it name every VM present.
   */
  count(vmId: string, label: ResolvedLabel): void {
    if (this.members.has(vmId)) return;
    this.members.set(vmId, label);
    for (const type of label.cwTypes) {
      const ids = this.byType.get(type);
      if (ids) ids.add(vmId);
      else this.byType.set(type, new Set([vmId]));
    }
    for (const type of label.cwTypes) this.runningTypes.set(type, (this.runningTypes.get(type) ?? 0) + 1);
    for (const [type, n] of this.policy.aggregateDelta(label)) this.conflictAggregate.set(type, (this.conflictAggregate.get(type) ?? 0) + n);
  }

  /** Stops counting `vmId` (stopped, saved, migrated away); false when it did not count. */
  remove(vmId: string): boolean {
    const label = this.members.get(vmId);
    if (!label) return false;
    this.members.delete(vmId);
    for (const type of label.cwTypes) {
      const ids = this.byType.get(type);
      ids?.delete(vmId);
      if (ids?.size === 0) this.byType.delete(type);
    }
    const drop = (map: Map<string, number>, type: string, n: number) => {
      const left = (map.get(type) ?? 0) - n;
      if (left > 0) map.set(type, left);
      else map.delete(type);
    };
    for (const type of label.cwTypes) drop(this.runningTypes, type, 1);
    for (const [type, n] of this.policy.aggregateDelta(label)) drop(this.conflictAggregate, type, n);
    return true;
  }
}

/** `canRun(label, state)`: whether a VM with `label` may start on the host whose state this is. */
export function canRun(label: ResolvedLabel, host: ChineseWallState, vmId?: string): ChineseWallVerdict {
  return host.check(label, vmId);
}

import { ChineseWallState } from './chinese-wall.js';
import type { CompiledPolicy } from './compiled.js';
import type { ResolvedLabel } from './types.js';

export type SteVerdict = { readonly allowed: true; readonly common: readonly string[] } | { readonly allowed: false; readonly reason: string };

/**
 * STE: a VM may use a volume, an image or a network only if they share a type.
 * A resource without a label is outside the policy (anyone may use it); a
 * labelled resource is refused to a VM without a label.
 */
export function steShares(vm: ResolvedLabel | undefined, resource: ResolvedLabel | undefined, what = 'resource'): SteVerdict {
  if (resource === undefined) return { allowed: true, common: [] };
  if (vm === undefined) return { allowed: false, reason: `the ${what} is labelled ${resource.ref} and the VM has no security label` };
  const common = [...vm.steTypes].filter((type) => resource.steTypes.has(type));
  if (common.length > 0) return { allowed: true, common };
  return {
    allowed: false,
    reason: `the VM (${vm.ref}: ${[...vm.steTypes].join(', ') || 'no STE types'}) shares no STE type with the ${what} (${resource.ref}: ${[...resource.steTypes].join(', ') || 'no STE types'})`,
  };
}

/** STE types of `vm` that `host`'s label lacks (empty: the host covers the VM). A host without a label covers no type. */
export function hostMissingTypes(host: ResolvedLabel | undefined, vm: ResolvedLabel | undefined): string[] {
  if (vm === undefined) return [];
  return [...vm.steTypes].filter((type) => !host?.steTypes.has(type));
}

/** A VM counting on a host, as the policy re-check on load sees it. */
export interface CountedVm {
  readonly vmId: string;
  readonly vmName: string;
  readonly hostId: string;
  readonly hostName: string;
  /** `ACM:<policy>:<label>`, or none. */
  readonly label?: string | null;
  /** The host's own label, or none (the bootstrap label then). */
  readonly hostLabel?: string | null;
}

export interface PolicyViolation {
  readonly kind: 'unknown_label' | 'chinese_wall' | 'host_coverage';
  readonly vm: string;
  readonly host: string;
  readonly message: string;
  /** For `chinese_wall`: the VM it conflicts with. */
  readonly otherVm?: string;
}

/**
 * Everything counting on every host, checked against `policy` as if it were
 * loaded now: labels it lacks, Chinese Wall conflicts (each pair once), hosts
 * that do not cover a VM's STE types. Empty: the policy may be loaded.
 */
export function checkCountedVms(policy: CompiledPolicy, counted: readonly CountedVm[]): PolicyViolation[] {
  const violations: PolicyViolation[] = [];
  const byHost = new Map<string, CountedVm[]>();
  for (const vm of counted) {
    const list = byHost.get(vm.hostId);
    if (list) list.push(vm);
    else byHost.set(vm.hostId, [vm]);
  }
  for (const vms of byHost.values()) {
    const hostName = vms[0]!.hostName;
    let hostLabel: ResolvedLabel | undefined;
    try {
      hostLabel = policy.hostLabel(vms[0]!.hostLabel);
    } catch (error) {
      violations.push({ kind: 'unknown_label', vm: '', host: hostName, message: `host "${hostName}": ${(error as Error).message}` });
    }
    const labelled: Array<{ vm: CountedVm; label: ResolvedLabel }> = [];
    for (const vm of vms) {
      if (!vm.label) continue;
      try {
        labelled.push({ vm, label: policy.vmLabel(vm.label) });
      } catch (error) {
        violations.push({ kind: 'unknown_label', vm: vm.vmName, host: hostName, message: `VM "${vm.vmName}" on host "${hostName}": ${(error as Error).message}` });
      }
    }
    for (const { vm, label } of labelled) {
      const missing = hostMissingTypes(hostLabel, label);
      if (missing.length > 0) {
        violations.push({ kind: 'host_coverage', vm: vm.vmName, host: hostName, message: `host "${hostName}" (${hostLabel?.ref ?? 'no label'}) does not cover STE type${missing.length === 1 ? '' : 's'} ${missing.join(', ')} of VM "${vm.vmName}"` });
      }
    }
    const state = new ChineseWallState(policy);
    for (const { vm, label } of labelled) {
      const verdict = state.check(label, vm.vmId);
      if (verdict.allowed) {
        state.add(vm.vmId, label);
        continue;
      }
      for (const c of verdict.conflicts) {
        const other = labelled.find((l) => l.vm.vmId === c.vmId)!.vm;
        violations.push({
          kind: 'chinese_wall',
          vm: vm.vmName,
          host: hostName,
          otherVm: other.vmName,
          message: `VMs "${other.vmName}" (${c.vmLabel}) and "${vm.vmName}" (${label.ref}) both count on host "${hostName}": types "${c.otherType}" and "${c.type}" are in conflict set "${c.set}"`,
        });
      }
    }
  }
  return violations;
}

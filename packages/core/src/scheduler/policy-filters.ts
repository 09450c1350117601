import { ChineseWallState } from '../policy/chinese-wall.js';
import { hostMissingTypes } from '../policy/checks.js';
import type { CompiledPolicy } from '../policy/compiled.js';
import type { ResolvedLabel } from '../policy/types.js';
import { defineFilter } from './filters.js';
import { memoizeOnHostVms } from './host-index.js';
import type { FilterVerdict, HostCandidate, PlacementFilter } from './types.js';

/**
 * The label key holding a VM's or a host's security label (`ACM:<policy>:<label>`)
 * in `PlacementRequest.labels`, `HostVm.labels` and `HostCandidate.labels`.
 */
export const SECURITY_LABEL_KEY = 'drover.security/label';

const PASS: FilterVerdict = { pass: true };

function labelOf(labels: Readonly<Record<string, string>> | undefined): string | undefined {
  return labels !== undefined && Object.hasOwn(labels, SECURITY_LABEL_KEY) ? labels[SECURITY_LABEL_KEY] : undefined;
}

/**
 * The sHype filters for `policy`: `steHostCoverage` (the host's label, or the
 * bootstrap label, covers the VM's STE types) and `chineseWall` (no VM counting
 * on the host has a type in a conflict set with one of the VM's). Append them to
 * the chain: `placeVm(request, hosts, { filters: [...defaultFilters, ...securityPolicyFilters(policy)] })`.
 * Each filter instance keeps a per-host Chinese Wall state, memoized on the
 * host's `vms` array like the anti-affinity index. VMs whose label the policy
 * lacks are ignored here (loading a policy refuses such a state).
 */
export function securityPolicyFilters(policy: CompiledPolicy): PlacementFilter[] {
  const resolve = (ref: string | undefined): ResolvedLabel | undefined | Error => {
    if (ref === undefined) return undefined;
    try {
      return policy.vmLabel(ref);
    } catch (error) {
      return error as Error;
    }
  };
  // A placement asks both filters about every host with the same request: resolve its label once.
  const requestLabels = new WeakMap<object, ResolvedLabel | undefined | Error>();
  const requestLabel = (labels: Readonly<Record<string, string>> | undefined): ResolvedLabel | undefined | Error => {
    if (labels === undefined) return undefined;
    if (requestLabels.has(labels)) return requestLabels.get(labels);
    const label = resolve(labelOf(labels));
    requestLabels.set(labels, label);
    return label;
  };
  const stateOf = memoizeOnHostVms((vms) => {
    const state = new ChineseWallState(policy);
    const names = new Map<string, string>();
    for (const vm of vms) {
      const label = resolve(labelOf(vm.labels));
      if (label === undefined || label instanceof Error) continue;
      state.count(vm.id, label);
      names.set(vm.id, vm.name ?? vm.id);
    }
    return { state, names };
  });

  const coverage = defineFilter('steHostCoverage', (request, host) => {
    const label = requestLabel(request.labels);
    if (label === undefined) return PASS;
    if (label instanceof Error) return { pass: false, reason: label.message, short: 'unknown security label' };
    let hostLabel: ResolvedLabel | undefined;
    try {
      hostLabel = policy.hostLabel(labelOf(host.labels));
    } catch (error) {
      return { pass: false, reason: `host "${host.name}": ${(error as Error).message}`, short: 'host label unknown' };
    }
    const missing = hostMissingTypes(hostLabel, label);
    if (missing.length === 0) return PASS;
    return {
      pass: false,
      reason: `host "${host.name}" (${hostLabel?.ref ?? 'no security label'}) does not cover STE type${missing.length === 1 ? '' : 's'} ${missing.map((t) => `"${t}"`).join(', ')} of the VM (${label.ref})`,
      short: `does not cover ${missing.join(', ')}`,
    };
  });

  const chineseWall = defineFilter('chineseWall', (request, host: HostCandidate) => {
    const label = requestLabel(request.labels);
    if (label === undefined || label instanceof Error || label.cwTypes.size === 0 || host.vms.length === 0) return PASS;
    const { state, names } = stateOf(host);
    const verdict = state.check(label, request.vmId, true);
    if (verdict.allowed) return PASS;
    const c = verdict.conflicts[0]!;
    const name = names.get(c.vmId) ?? c.vmId;
    return {
      pass: false,
      reason: `host "${host.name}" runs VM "${name}" (${c.vmLabel}): its type "${c.otherType}" and this VM's type "${c.type}" are in Chinese Wall conflict set "${c.set}"`,
      short: `Chinese Wall: VM "${name}" (${c.otherType} vs ${c.type})`,
    };
  });
  return [coverage, chineseWall];
}

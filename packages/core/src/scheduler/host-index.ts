import type { HostCandidate, HostVm } from './types.js';

/**
 * Memoizes a per-host index computed from the host's VMs, so that a filter pays
 * O(VMs on the host) once per host rather than on every placement. The key is
 * the `vms` array itself (plus its length, to notice in-place pushes): a new
 * host snapshot, or the ledger's copy-on-write update, invalidates it.
 */
export function memoizeOnHostVms<T>(compute: (vms: readonly HostVm[]) => T): (host: HostCandidate) => T {
  const cache = new WeakMap<readonly HostVm[], { length: number; value: T }>();
  return (host) => {
    const hit = cache.get(host.vms);
    if (hit && hit.length === host.vms.length) return hit.value;
    const value = compute(host.vms);
    cache.set(host.vms, { length: host.vms.length, value });
    return value;
  };
}

/** Anti-affinity group → ids of the host's VMs in that group. */
export const antiAffinityIndexOf = memoizeOnHostVms((vms) => {
  const index = new Map<string, string[]>();
  for (const vm of vms) {
    for (const group of vm.antiAffinityGroups) {
      const members = index.get(group);
      if (members) members.push(vm.id);
      else index.set(group, [vm.id]);
    }
  }
  return index as ReadonlyMap<string, readonly string[]>;
});

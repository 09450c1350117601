import {
  compilePolicy,
  defaultFilters,
  placeVm,
  SECURITY_LABEL_KEY,
  securityPolicyFilters,
  type HostCandidate,
  type PlacementFilter,
  type PlacementRequest,
  type SecurityPolicy,
} from '@drover/core';
import { now, report } from './stats.js';

/**
 * Placement decisions per second with sHype's filters (a 50-type policy: 50
 * Chinese Wall types in 10 conflict sets of 5, 50 STE types, 50 VM labels) on
 * 1,000 hosts running 10,000 labelled VMs, next to the same placement without
 * the policy filters. Two figures: hosts as the manager builds them for each
 * decision (every per-host Chinese Wall index built anew), and hosts reused
 * between decisions (the indexes memoized, as in the planners' ledger).
 */
export async function runPolicyBench(options: { smoke: boolean }): Promise<boolean> {
  const HOSTS = 1000;
  const VMS_PER_HOST = 10;
  const TYPES = 50;
  const SET_SIZE = 5;
  const doc: SecurityPolicy = {
    name: 'bench50',
    steTypes: Array.from({ length: TYPES }, (_, i) => `ste_${i}`),
    cwTypes: Array.from({ length: TYPES }, (_, i) => `cw_${i}`),
    conflictSets: Array.from({ length: TYPES / SET_SIZE }, (_, s) => ({ name: `set_${s}`, types: Array.from({ length: SET_SIZE }, (_, j) => `cw_${s * SET_SIZE + j}`) })),
    vmLabels: [
      ...Array.from({ length: TYPES }, (_, i) => ({ name: `vm_${i}`, steTypes: [`ste_${i}`], cwTypes: [`cw_${i}`] })),
      { name: 'host', steTypes: Array.from({ length: TYPES }, (_, i) => `ste_${i}`), cwTypes: [] },
    ],
    resourceLabels: [],
    bootstrapLabel: 'host',
  };
  const policy = compilePolicy(doc);
  const ref = (i: number) => ({ [SECURITY_LABEL_KEY]: `ACM:bench50:vm_${i}` });
  // A deterministic random source, so both chains see the same cluster and requests.
  let seed = 42;
  const random = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const pick = (n: number) => Math.floor(random() * n);

  // Each host has picked one type per conflict set; its VMs use only those, so the cluster obeys the wall.
  const buildHosts = (): HostCandidate[] => {
    seed = 42;
    return Array.from({ length: HOSTS }, (_, h) => {
      const side = Array.from({ length: TYPES / SET_SIZE }, (_, s) => s * SET_SIZE + ((h + s) % SET_SIZE));
      const vms = Array.from({ length: VMS_PER_HOST }, (_, v) => ({ id: `vm-${h}-${v}`, name: `vm-${h}-${v}`, antiAffinityGroups: [], labels: ref(side[pick(side.length)]!) }));
      return {
        id: `h${h}`,
        name: `host-${String(h).padStart(4, '0')}`,
        state: 'online',
        capacity: { cpus: 64, memoryMiB: 262_144 },
        used: { cpus: VMS_PER_HOST, memoryMiB: VMS_PER_HOST * 1024 },
        reserved: { cpus: 0, memoryMiB: 0 },
        cpuModels: ['max'],
        labels: {},
        vms,
      } satisfies HostCandidate;
    });
  };
  const requests: PlacementRequest[] = Array.from({ length: 256 }, (_, i) => ({ vmId: `new-${i}`, name: `new-${i}`, cpus: 1, memoryMiB: 512, labels: ref(pick(TYPES)) }));

  const decisions = options.smoke ? 20 : 300;
  const measure = (chain: () => readonly PlacementFilter[], fresh: boolean): number => {
    let hosts = buildHosts();
    let filters = chain();
    let placed = 0;
    // Reused hosts: the per-host indexes are built by a first decision, not counted.
    if (!fresh) placeVm(requests[requests.length - 1]!, hosts, { filters });
    const start = now();
    for (let i = 0; i < decisions; i++) {
      if (fresh) {
        // As the manager does: the host records are read again for each decision.
        hosts = hosts.map((host) => ({ ...host, vms: [...host.vms] }));
        filters = chain();
      }
      placeVm(requests[i % requests.length]!, hosts, { filters });
      placed++;
    }
    return placed / ((now() - start) / 1000);
  };
  const withPolicy = () => [...defaultFilters, ...securityPolicyFilters(policy)];
  const without = () => defaultFilters;
  process.stdout.write(`policy: ${HOSTS} hosts, ${HOSTS * VMS_PER_HOST} VMs, ${TYPES}-type policy, ${decisions} decisions each${options.smoke ? ' (smoke)' : ''}\n`);
  // Warm-up of both chains (JIT), not counted.
  measure(without, false);
  measure(withPolicy, false);
  const baselineWarm = measure(without, false);
  const figureWarm = measure(withPolicy, false);
  const baselineFresh = measure(without, true);
  const figureFresh = measure(withPolicy, true);
  report({ name: 'placements/s, policy, hosts reused', figure: figureWarm, baseline: baselineWarm, baselineName: 'no policy', unit: 'dec/s' });
  report({ name: 'placements/s, policy, hosts re-read', figure: figureFresh, baseline: baselineFresh, baselineName: 'no policy', unit: 'dec/s' });
  process.stdout.write(`policy filter cost: ${(baselineWarm / figureWarm).toFixed(2)}× (reused), ${(baselineFresh / figureFresh).toFixed(2)}× (re-read) slower than without\n`);
  return true;
}

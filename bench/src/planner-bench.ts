import {
  defaultFilters,
  defineFilter,
  memoizeOnHostVms,
  planConsolidation,
  planFirstFitDecreasing,
  type HostCandidate,
  type HostVm,
  type PlacementFilter,
  type PlannerVm,
} from '@drover/core';
import { now, report } from './stats.js';

/**
 * The consolidation planner (`planConsolidation` in @drover/core) on a seeded
 * cluster of 1,000 equal hosts (24 CPUs × 4 = 96 vCPUs, 192 GiB) running 10,000
 * VMs of nine size classes (1–64 GiB, 1–16 vCPUs, memory-heavy and CPU-heavy ones),
 * spread at random the way a spread scheduler leaves them, with anti-affinity
 * groups, Chinese-Wall conflict sets (a filter passed in, as a policy filter is),
 * VMs needing a CPU model only some hosts offer, and pinned VMs. Headroom 10 %.
 *
 * Figures, each next to first-fit decreasing (FFD) from scratch under the same rules:
 * planning time (target ≤ 1 s), hosts used against the lower bound
 * ceil(total demand / host size) (target ≤ +2 %), and moves.
 */

/** mulberry32: a small seeded generator, so every run plans the same cluster. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CLASSES: Array<{ memoryMiB: number; cpus: number; weight: number }> = [
  { memoryMiB: 1024, cpus: 1, weight: 20 },
  { memoryMiB: 2048, cpus: 1, weight: 20 },
  { memoryMiB: 4096, cpus: 2, weight: 20 },
  { memoryMiB: 8192, cpus: 4, weight: 15 },
  { memoryMiB: 16384, cpus: 8, weight: 8 },
  { memoryMiB: 32768, cpus: 2, weight: 6 },
  { memoryMiB: 65536, cpus: 4, weight: 3 },
  { memoryMiB: 2048, cpus: 8, weight: 5 },
  { memoryMiB: 4096, cpus: 16, weight: 3 },
];

/** Datasets in conflict classes: a host may run VMs of at most one dataset per class. */
const CONFLICT_SETS: Record<string, readonly string[]> = {
  banks: ['bank-a', 'bank-b', 'bank-c'],
  oil: ['oil-x', 'oil-y'],
  telecom: ['tel-1', 'tel-2', 'tel-3', 'tel-4'],
};
const classOfDataset = new Map(Object.entries(CONFLICT_SETS).flatMap(([cls, sets]) => sets.map((d) => [d, cls] as const)));

const datasetsOf = memoizeOnHostVms((vms) => {
  const byClass = new Map<string, Set<string>>();
  for (const vm of vms) {
    const d = vm.labels.dataset;
    const cls = d === undefined ? undefined : classOfDataset.get(d);
    if (d === undefined || cls === undefined) continue;
    const set = byClass.get(cls) ?? new Set<string>();
    set.add(d);
    byClass.set(cls, set);
  }
  return byClass;
});

/** The benchmark's Chinese Wall: no two datasets of one conflict class on a host. */
export const conflictSetFilter: PlacementFilter = defineFilter('conflictSets', (request, host) => {
  const d = request.labels?.dataset;
  const cls = d === undefined ? undefined : classOfDataset.get(d);
  if (d === undefined || cls === undefined) return { pass: true };
  for (const other of datasetsOf(host).get(cls) ?? []) {
    if (other !== d) return { pass: false, reason: `host "${host.name}" runs dataset "${other}", in conflict with "${d}"`, short: `conflict with ${other}` };
  }
  return { pass: true };
});

export interface GeneratedCluster {
  hosts: HostCandidate[];
  vms: PlannerVm[];
}

export function generateCluster(options: { hosts: number; vms: number; seed: number }): GeneratedCluster {
  const random = seeded(options.seed);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
  const capacity = { cpus: 24, memoryMiB: 192 * 1024 };
  const vcpuCap = capacity.cpus * 4;
  const hostModels = Array.from({ length: options.hosts }, () => (random() < 0.3 ? ['qemu64', 'max', 'EPYC'] : ['qemu64', 'max']));
  const totalWeight = CLASSES.reduce((s, c) => s + c.weight, 0);
  const groups = Math.max(1, Math.floor(options.vms / 40));
  const datasets = [...classOfDataset.keys()];
  const mem = new Float64Array(options.hosts);
  const cpu = new Float64Array(options.hosts);
  const onHost: PlannerVm[][] = Array.from({ length: options.hosts }, () => []);
  const groupHosts = new Map<string, Set<number>>();
  const datasetHosts: Array<Map<string, string>> = Array.from({ length: options.hosts }, () => new Map());
  const vms: PlannerVm[] = [];
  for (let i = 0; i < options.vms; i++) {
    let r = random() * totalWeight;
    const size = CLASSES.find((c) => (r -= c.weight) < 0) ?? CLASSES[0]!;
    const group = random() < 0.12 ? `aa-${Math.floor(random() * groups)}` : undefined;
    const dataset = random() < 0.1 ? pick(datasets) : undefined;
    const cpuModel = random() < 0.05 ? 'EPYC' : undefined;
    for (let attempt = 0; attempt < 200; attempt++) {
      const h = Math.floor(random() * options.hosts);
      if (mem[h]! + size.memoryMiB > capacity.memoryMiB * 0.9 || cpu[h]! + size.cpus > vcpuCap * 0.9) continue;
      if (cpuModel && !hostModels[h]!.includes(cpuModel)) continue;
      if (group && groupHosts.get(group)?.has(h)) continue;
      if (dataset) {
        const held = datasetHosts[h]!.get(classOfDataset.get(dataset)!);
        if (held !== undefined && held !== dataset) continue;
        datasetHosts[h]!.set(classOfDataset.get(dataset)!, dataset);
      }
      if (group) groupHosts.set(group, (groupHosts.get(group) ?? new Set()).add(h));
      const vm: PlannerVm = {
        vmId: `vm-${i}`,
        name: `vm-${i}`,
        cpus: size.cpus,
        memoryMiB: size.memoryMiB,
        hostId: `h${h}`,
        ...(cpuModel ? { cpuModel } : {}),
        ...(group ? { antiAffinityGroups: [group] } : {}),
        ...(dataset ? { labels: { dataset } } : {}),
        ...(random() < 0.005 ? { pinned: true } : {}),
      };
      mem[h] = mem[h]! + size.memoryMiB;
      cpu[h] = cpu[h]! + size.cpus;
      onHost[h]!.push(vm);
      vms.push(vm);
      break;
    }
  }
  const hosts: HostCandidate[] = onHost.map((list, h) => ({
    id: `h${h}`,
    name: `h${h}`,
    state: 'online',
    capacity,
    used: { cpus: cpu[h]!, memoryMiB: mem[h]! },
    reserved: { cpus: 0, memoryMiB: 0 },
    cpuModels: hostModels[h]!,
    labels: {},
    vms: list.map((vm): HostVm => ({ id: vm.vmId, antiAffinityGroups: vm.antiAffinityGroups ?? [], labels: vm.labels ?? {} })),
  }));
  return { hosts, vms };
}

export async function runPlannerBench(options: { smoke: boolean }): Promise<boolean> {
  const size = options.smoke ? { hosts: 100, vms: 1000 } : { hosts: 1000, vms: 10_000 };
  const cluster = generateCluster({ ...size, seed: 42 });
  const filters = [...defaultFilters, conflictSetFilter];
  const input = { ...cluster, filters, headroom: 0.1 };
  const rounds = options.smoke ? 1 : 5;
  let planMs = Infinity;
  let ffdMs = Infinity;
  let plan = planConsolidation(input);
  let ffd = planFirstFitDecreasing(input);
  for (let round = 0; round < rounds; round++) {
    let started = now();
    plan = planConsolidation(input);
    planMs = Math.min(planMs, now() - started);
    started = now();
    ffd = planFirstFitDecreasing(input);
    ffdMs = Math.min(ffdMs, now() - started);
  }
  process.stdout.write(
    `planner: ${size.hosts} hosts, ${cluster.vms.length} VMs, ${plan.hostsUsedBefore} hosts in use, lower bound ${plan.lowerBound}, headroom 10 %, best of ${rounds}\n`,
  );
  let met = true;
  met = report({ name: 'planning time', figure: planMs, baseline: ffdMs, baselineName: 'FFD', unit: 'ms', atMost: 1000 }) && met;
  met =
    report({
      name: 'hosts used (lower bound ' + plan.lowerBound + ')',
      figure: plan.hostsUsed,
      baseline: ffd.hostsUsed,
      baselineName: 'FFD',
      unit: 'hosts',
      atMost: Math.floor(plan.lowerBound * 1.02),
    }) && met;
  report({ name: 'hosts over the lower bound', figure: (100 * (plan.hostsUsed - plan.lowerBound)) / plan.lowerBound, baseline: (100 * (ffd.hostsUsed - plan.lowerBound)) / plan.lowerBound, baselineName: 'FFD', unit: '%' });
  report({ name: 'moves', figure: plan.moves.length, baseline: ffd.moves, baselineName: 'FFD', unit: 'moves' });
  if (plan.ffd.hostsUsed !== ffd.hostsUsed) throw new Error(`the planner's FFD figure (${plan.ffd.hostsUsed}) differs from FFD run alone (${ffd.hostsUsed})`);
  return met;
}

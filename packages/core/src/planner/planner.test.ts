import { describe, expect, it } from 'vitest';
import { DroverError } from '../errors.js';
import { defaultFilters, defineFilter } from '../scheduler/filters.js';
import { testHost } from '../scheduler/fixtures.js';
import type { HostCandidate } from '../scheduler/types.js';
import { planConsolidation, planFirstFitDecreasing } from './consolidate.js';
import { planEvacuation } from './evacuate.js';
import { planRebalance } from './rebalance.js';
import type { PlannerVm } from './types.js';

/** Hosts with the given VMs on them; used/vms filled in from the VMs. */
function cluster(spec: Record<string, Array<Partial<PlannerVm> & { id: string; mem?: number; cpus?: number }>>, host: Partial<HostCandidate> = {}) {
  const vms: PlannerVm[] = [];
  const hosts = Object.entries(spec).map(([id, list]) => {
    const mine = list.map(({ id: vmId, mem, cpus, ...rest }) => ({ vmId, name: vmId, cpus: cpus ?? 1, memoryMiB: mem ?? 1024, hostId: id, ...rest }));
    vms.push(...mine);
    return testHost(id, {
      capacity: { cpus: 4, memoryMiB: 4096 },
      used: { cpus: mine.reduce((s, v) => s + v.cpus, 0), memoryMiB: mine.reduce((s, v) => s + v.memoryMiB, 0) },
      vms: mine.map((v) => ({ id: v.vmId, antiAffinityGroups: v.antiAffinityGroups ?? [], labels: v.labels ?? {} })),
      ...host,
    });
  });
  return { hosts, vms };
}

function expectInvalid(fn: () => unknown, message: RegExp) {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(DroverError);
    expect((error as DroverError).code).toBe('invalid');
    expect((error as DroverError).message).toMatch(message);
    return;
  }
  throw new Error('expected an invalid error');
}

describe('planConsolidation', () => {
  it('empties the lightly used hosts into the fuller ones with the fewest moves', () => {
    const input = cluster({
      h1: [{ id: 'a' }, { id: 'b' }],
      h2: [{ id: 'c' }],
      h3: [{ id: 'd' }],
    });
    const plan = planConsolidation(input);
    expect(plan.hostsUsed).toBe(1);
    expect(plan.hostsUsedBefore).toBe(3);
    expect(plan.lowerBound).toBe(1);
    expect(plan.moves).toEqual([
      { vmId: 'c', from: 'h2', to: 'h1' },
      { vmId: 'd', from: 'h3', to: 'h1' },
    ]);
    expect([...plan.emptiedHosts].sort()).toEqual(['h2', 'h3']);
    expect(plan.ffd.hostsUsed).toBe(1);
    expect(plan.ffd.moves).toBeGreaterThanOrEqual(2);
  });

  it('keeps headroom free on every destination', () => {
    const input = cluster({ h1: [{ id: 'a', mem: 2048 }], h2: [{ id: 'b', mem: 2048 }] });
    expect(planConsolidation(input).hostsUsed).toBe(1);
    const plan = planConsolidation({ ...input, headroom: 0.25 });
    expect(plan.moves).toEqual([]);
    expect(plan.hostsUsed).toBe(2);
    expect(plan.lowerBound).toBe(2);
  });

  it('never moves a pinned VM and never puts two VMs of an anti-affinity group together', () => {
    const input = cluster({
      h1: [{ id: 'a', antiAffinityGroups: ['web'] }],
      h2: [{ id: 'b', antiAffinityGroups: ['web'] }],
      h3: [{ id: 'c', pinned: true }],
    });
    const plan = planConsolidation(input);
    expect(plan.hostsUsed).toBe(2);
    expect(plan.moves).toHaveLength(1);
    expect(plan.moves[0]!.to).toBe('h3');
    expect(plan.moves.map((m) => m.vmId)).not.toContain('c');
    const viaList = planConsolidation({ ...cluster({ h1: [{ id: 'a' }], h2: [{ id: 'b' }] }), pinned: ['a', 'b'] });
    expect(viaList.moves).toEqual([]);
  });

  it('moves a VM that needs a CPU model only to hosts that offer it', () => {
    const input = cluster({ h1: [{ id: 'a' }, { id: 'b' }], h2: [{ id: 'x', cpuModel: 'EPYC' }] });
    const hosts = input.hosts.map((h) => (h.id === 'h2' ? { ...h, cpuModels: ['qemu64', 'EPYC'] } : h));
    const plan = planConsolidation({ ...input, hosts });
    expect(plan.moves).toEqual([
      { vmId: 'a', from: 'h1', to: 'h2' },
      { vmId: 'b', from: 'h1', to: 'h2' },
    ]);
  });

  it('obeys a filter passed in, such as a policy filter', () => {
    const noMixing = defineFilter('noMixing', (request, host) =>
      host.vms.some((vm) => vm.id !== request.vmId && vm.labels.tenant !== request.labels?.tenant) ? { pass: false, reason: `host "${host.name}" runs another tenant` } : { pass: true },
    );
    const input = cluster({ h1: [{ id: 'a', labels: { tenant: 'x' } }], h2: [{ id: 'b', labels: { tenant: 'y' } }] });
    expect(planConsolidation(input).hostsUsed).toBe(1);
    const plan = planConsolidation({ ...input, filters: [...defaultFilters, noMixing] });
    expect(plan.moves).toEqual([]);
    expect(plan.hostsUsed).toBe(2);
  });

  it('lists spares apart from the hosts that may be powered off, and leaves VMs of hosts that are not online', () => {
    const input = cluster({ h1: [{ id: 'a' }], h2: [{ id: 'b' }], h3: [], h4: [{ id: 'm' }] });
    const hosts = input.hosts.map((h) => (h.id === 'h4' ? { ...h, state: 'maintenance' as const } : h));
    const plan = planConsolidation({ ...input, hosts, keepSpareHosts: 1 });
    expect(plan.spareHosts).toEqual(['h3']);
    expect(plan.emptiedHosts).toHaveLength(1);
    expect(plan.unplaceable).toEqual([{ vmId: 'm', reason: expect.stringMatching(/maintenance/) }]);
    expect(plan.moves.map((m) => m.vmId)).not.toContain('m');
  });

  it('rejects bad input with a clear error', () => {
    const input = cluster({ h1: [{ id: 'a' }] });
    expectInvalid(() => planConsolidation({ ...input, headroom: 1 }), /Headroom is 1/);
    expectInvalid(() => planConsolidation({ ...input, keepSpareHosts: -1 }), /keepSpareHosts is -1/);
    expectInvalid(() => planConsolidation({ ...input, pinned: ['ghost'] }), /Pinned VM "ghost"/);
    expectInvalid(() => planConsolidation({ ...input, vms: [...input.vms, input.vms[0]!] }), /appears twice/);
    expectInvalid(() => planConsolidation({ ...input, vms: [{ ...input.vms[0]!, hostId: 'nope' }] }), /not in the host list/);
    expectInvalid(() => planConsolidation({ ...input, vms: [{ ...input.vms[0]!, memoryMiB: 0 }] }), /memoryMiB/);
    expectInvalid(() => planConsolidation({ hosts: input.hosts, vms: 'x' as never }), /vms must be a list/);
  });

  it('computes the FFD baseline on its own with the same rules', () => {
    const input = cluster({ h1: [{ id: 'a', mem: 3072 }], h2: [{ id: 'b', mem: 2048 }], h3: [{ id: 'c', mem: 1024 }] });
    const ffd = planFirstFitDecreasing(input);
    expect(ffd.placement).toEqual({ a: 'h1', b: 'h2', c: 'h1' });
    expect(ffd.hostsUsed).toBe(2);
    expect(ffd.moves).toBe(1);
  });
});

describe('planEvacuation', () => {
  it('spreads the VMs over the other hosts and lists what cannot move, with the reason', () => {
    const input = cluster({ h1: [{ id: 'a' }, { id: 'b' }, { id: 'p', pinned: true }, { id: 'big', mem: 5000 }], h2: [], h3: [] });
    const plan = planEvacuation({ ...input, hostId: 'h1' });
    expect(plan.moves.map((m) => m.vmId).sort()).toEqual(['a', 'b']);
    expect(new Set(plan.moves.map((m) => m.to))).toEqual(new Set(['h2', 'h3']));
    expect(plan.cannotMove).toEqual([
      { vmId: 'big', reason: expect.stringMatching(/No host can run VM "big".*MiB free/) },
      { vmId: 'p', reason: 'VM "p" is pinned to host "h1"' },
    ]);
  });

  it('says there is nowhere to go when the host is the last one, and rejects an unknown host', () => {
    const input = cluster({ h1: [{ id: 'a' }] });
    expect(planEvacuation({ ...input, hostId: 'h1' })).toEqual({
      moves: [],
      cannotMove: [{ vmId: 'a', reason: 'host "h1" is the only host: there is nowhere to go' }],
    });
    expect(() => planEvacuation({ ...input, hostId: 'h9' })).toThrow(/host "h9" does not exist/);
  });
});

describe('planRebalance', () => {
  it('moves VMs from the hottest host until the imbalance is under the threshold', () => {
    const input = cluster({ h1: [{ id: 'a' }, { id: 'b' }, { id: 'c' }, { id: 'd' }], h2: [] });
    const plan = planRebalance({ ...input, threshold: 0.1 });
    expect(plan.imbalanceBefore).toBe(1);
    expect(plan.moves).toHaveLength(2);
    expect(plan.moves.every((m) => m.from === 'h1' && m.to === 'h2')).toBe(true);
    expect(plan.imbalanceAfter).toBe(0);
    expect(planRebalance({ ...input, threshold: 1 }).moves).toEqual([]);
  });

  it('rejects a threshold outside [0, 1]', () => {
    expectInvalid(() => planRebalance({ ...cluster({ h1: [] }), threshold: 2 }), /threshold is 2/);
  });
});

describe('move order', () => {
  it('orders moves so that each one fits when it runs, parking a VM when two must swap', () => {
    // Two full hosts whose VMs must trade places (CPU models force it) and a third host to park on.
    const hosts = [
      testHost('h1', { capacity: { cpus: 1, memoryMiB: 1024 }, used: { cpus: 1, memoryMiB: 1024 }, cpuModels: ['qemu64', 'A'], vms: [{ id: 'x', antiAffinityGroups: [], labels: {} }] }),
      testHost('h2', { capacity: { cpus: 1, memoryMiB: 1024 }, used: { cpus: 1, memoryMiB: 1024 }, cpuModels: ['qemu64', 'B'], vms: [{ id: 'y', antiAffinityGroups: [], labels: {} }] }),
    ];
    const vms: PlannerVm[] = [
      { vmId: 'x', name: 'x', cpus: 1, memoryMiB: 1024, hostId: 'h1' },
      { vmId: 'y', name: 'y', cpus: 1, memoryMiB: 1024, hostId: 'h2' },
    ];
    // Nothing to gain: both hosts stay in use and nothing moves.
    const plan = planConsolidation({ hosts, vms });
    expect(plan.moves).toEqual([]);
    expect(plan.hostsUsed).toBe(2);
  });
});

import { describe, expect, it } from 'vitest';
import {
  antiAffinityFilter,
  cpuModelFilter,
  defaultFilters,
  hostExcludeFilter,
  hostIncludeFilter,
  hostLabelsFilter,
  memoryFilter,
  stateFilter,
  vcpuFilter,
} from './filters.js';
import { testHost, testRequest } from './fixtures.js';
import type { FilterVerdict, PlacementContext } from './types.js';

const ctx: PlacementContext = { mode: 'spread' };

function reasonOf(verdict: FilterVerdict): string {
  if (verdict.pass) throw new Error('expected the filter to refuse');
  return verdict.reason;
}

describe('filters', () => {
  it('are named, in a fixed order', () => {
    expect(defaultFilters.map((f) => f.name)).toEqual([
      'state',
      'hostInclude',
      'hostExclude',
      'requiredHostLabels',
      'cpuModel',
      'memory',
      'vcpus',
      'antiAffinity',
    ]);
  });

  it('state: only online hosts', () => {
    expect(stateFilter(testRequest(), testHost('h1'), ctx)).toEqual({ pass: true });
    expect(reasonOf(stateFilter(testRequest(), testHost('h2', { state: 'maintenance' }), ctx))).toBe('host "h2" is in maintenance');
    expect(reasonOf(stateFilter(testRequest(), testHost('h2', { state: 'unreachable' }), ctx))).toBe('host "h2" is unreachable');
    expect(reasonOf(stateFilter(testRequest(), testHost('h2', { state: 'powered_off' }), ctx))).toBe('host "h2" is powered off');
    expect(reasonOf(stateFilter(testRequest(), testHost('h2', { state: 'joining' }), ctx))).toBe(
      'host "h2" is still joining the cluster',
    );
  });

  it('hostInclude: by id or by name', () => {
    const host = testHost('host-0002', { name: 'h2' });
    expect(hostIncludeFilter(testRequest(), host, ctx).pass).toBe(true);
    expect(hostIncludeFilter(testRequest({ hostInclude: [] }), host, ctx).pass).toBe(true);
    expect(hostIncludeFilter(testRequest({ hostInclude: ['h2'] }), host, ctx).pass).toBe(true);
    expect(hostIncludeFilter(testRequest({ hostInclude: ['host-0002'] }), host, ctx).pass).toBe(true);
    expect(reasonOf(hostIncludeFilter(testRequest({ hostInclude: ['h1', 'h3'] }), host, ctx))).toBe(
      `host "h2" is not in the VM's host include list (h1, h3)`,
    );
  });

  it('hostExclude: by id or by name', () => {
    const host = testHost('host-0002', { name: 'h2' });
    expect(hostExcludeFilter(testRequest({ hostExclude: ['h1'] }), host, ctx).pass).toBe(true);
    expect(reasonOf(hostExcludeFilter(testRequest({ hostExclude: ['h2'] }), host, ctx))).toBe(
      `host "h2" is in the VM's host exclude list`,
    );
    expect(hostExcludeFilter(testRequest({ hostExclude: ['host-0002'] }), host, ctx).pass).toBe(false);
  });

  it('requiredHostLabels: every label with its exact value', () => {
    const host = testHost('h2', { labels: { zone: 'us', disk: 'ssd' } });
    expect(hostLabelsFilter(testRequest({ requiredHostLabels: { disk: 'ssd' } }), host, ctx).pass).toBe(true);
    expect(reasonOf(hostLabelsFilter(testRequest({ requiredHostLabels: { zone: 'eu' } }), host, ctx))).toBe(
      'host "h2" lacks required label zone=eu (has zone=us)',
    );
    expect(reasonOf(hostLabelsFilter(testRequest({ requiredHostLabels: { zone: 'eu', rack: 'r1', disk: 'ssd' } }), host, ctx))).toBe(
      'host "h2" lacks required labels zone=eu (has zone=us), rack=r1 (not set)',
    );
    // Inherited object properties are not labels.
    expect(hostLabelsFilter(testRequest({ requiredHostLabels: { toString: 'x' } }), host, ctx).pass).toBe(false);
  });

  it('cpuModel: the host must offer it', () => {
    expect(cpuModelFilter(testRequest(), testHost('h2', { cpuModels: [] }), ctx).pass).toBe(true);
    expect(cpuModelFilter(testRequest({ cpuModel: 'max' }), testHost('h2'), ctx).pass).toBe(true);
    expect(reasonOf(cpuModelFilter(testRequest({ cpuModel: 'max' }), testHost('h2', { cpuModels: ['qemu64'] }), ctx))).toBe(
      'host "h2" does not offer CPU model "max" (offers qemu64)',
    );
    expect(reasonOf(cpuModelFilter(testRequest({ cpuModel: 'max' }), testHost('h2', { cpuModels: [] }), ctx))).toBe(
      'host "h2" does not offer CPU model "max" (offers none)',
    );
  });

  it('memory: capacity − used − reserved, never overcommitted', () => {
    const full = testHost('h2', { capacity: { cpus: 8, memoryMiB: 1024 }, used: { cpus: 1, memoryMiB: 928 } });
    expect(reasonOf(memoryFilter(testRequest(), full, ctx))).toBe('host "h2" has 96 MiB free, VM needs 128 MiB');
    const exact = testHost('h2', { capacity: { cpus: 8, memoryMiB: 1024 }, used: { cpus: 1, memoryMiB: 896 } });
    expect(memoryFilter(testRequest(), exact, ctx).pass).toBe(true);
    const inFlight = testHost('h2', {
      capacity: { cpus: 8, memoryMiB: 1024 },
      used: { cpus: 1, memoryMiB: 800 },
      reserved: { cpus: 1, memoryMiB: 128 },
    });
    expect(reasonOf(memoryFilter(testRequest(), inFlight, ctx))).toBe(
      'host "h2" has 96 MiB free, VM needs 128 MiB (128 MiB reserved by starts in flight)',
    );
  });

  it('vcpus: capacity × allocation ratio − used − reserved', () => {
    // Default ratio 4: 2 CPUs give 8 vCPUs.
    const host = testHost('h2', { capacity: { cpus: 2, memoryMiB: 8192 }, used: { cpus: 6, memoryMiB: 0 } });
    expect(vcpuFilter(testRequest({ cpus: 2 }), host, ctx).pass).toBe(true);
    expect(reasonOf(vcpuFilter(testRequest({ cpus: 4 }), host, ctx))).toBe(
      'host "h2" has 2 vCPUs free, VM needs 4 (capacity 8 = 2 CPUs × ratio 4)',
    );
    const strict = testHost('h2', {
      capacity: { cpus: 3, memoryMiB: 8192 },
      cpuAllocationRatio: 1.5,
      used: { cpus: 2, memoryMiB: 0 },
      reserved: { cpus: 1, memoryMiB: 0 },
    });
    // floor(3 × 1.5) = 4, as the agent enforces it.
    expect(reasonOf(vcpuFilter(testRequest({ cpus: 2 }), strict, ctx))).toBe(
      'host "h2" has 1 vCPU free, VM needs 2 (capacity 4 = 3 CPUs × ratio 1.5, 1 reserved by starts in flight)',
    );
  });

  it('antiAffinity: no other VM of a shared group on the host', () => {
    const host = testHost('h2', {
      vms: [
        { id: 'vm-7', antiAffinityGroups: ['db'], labels: {} },
        { id: 'vm-8', antiAffinityGroups: [], labels: {} },
      ],
    });
    expect(antiAffinityFilter(testRequest(), host, ctx).pass).toBe(true);
    expect(antiAffinityFilter(testRequest({ antiAffinityGroups: ['web'] }), host, ctx).pass).toBe(true);
    expect(reasonOf(antiAffinityFilter(testRequest({ antiAffinityGroups: ['web', 'db'] }), host, ctx))).toBe(
      'host "h2" already runs VM "vm-7" of anti-affinity group "db"',
    );
    // The VM itself, listed on its current host, is not its own conflict.
    expect(antiAffinityFilter(testRequest({ vmId: 'vm-7', antiAffinityGroups: ['db'] }), host, ctx).pass).toBe(true);
  });

  it('antiAffinity sees VMs added to a host (new array or in-place push)', () => {
    const vms = [{ id: 'vm-7', antiAffinityGroups: ['db'], labels: {} }];
    const host = testHost('h2', { vms });
    const request = testRequest({ antiAffinityGroups: ['cache'] });
    expect(antiAffinityFilter(request, host, ctx).pass).toBe(true);
    expect(antiAffinityFilter(request, { ...host, vms: [...vms, { id: 'vm-9', antiAffinityGroups: ['cache'], labels: {} }] }, ctx).pass).toBe(
      false,
    );
    vms.push({ id: 'vm-9', antiAffinityGroups: ['cache'], labels: {} });
    expect(antiAffinityFilter(request, host, ctx).pass).toBe(false);
  });
});

import { describe, expect, it } from 'vitest';
import { DroverError } from '../errors.js';
import { defaultFilters, defineFilter } from './filters.js';
import { testHost, testRequest } from './fixtures.js';
import { memoizeOnHostVms } from './host-index.js';
import { ReservationLedger } from './ledger.js';

describe('ReservationLedger', () => {
  it('reserves on the chosen host so later placements see it', () => {
    const hosts = [testHost('h1', { capacity: { cpus: 1, memoryMiB: 1024 } }), testHost('h2', { capacity: { cpus: 1, memoryMiB: 1024 } })];
    const ledger = new ReservationLedger(hosts);
    const first = ledger.place(testRequest({ vmId: 'a', memoryMiB: 512 }));
    const second = ledger.place(testRequest({ vmId: 'b', memoryMiB: 512 }));
    expect(first.hostId).not.toBe(second.hostId);
    expect(ledger.host('h1')!.reserved).toEqual({ cpus: 1, memoryMiB: 512 });
    expect(ledger.reservationOf('a')).toMatchObject({ hostId: first.hostId, memoryMiB: 512, cpus: 1 });
    ledger.place(testRequest({ vmId: 'c', memoryMiB: 512 }));
    ledger.place(testRequest({ vmId: 'd', memoryMiB: 512 }));
    expect(() => ledger.place(testRequest({ vmId: 'e', memoryMiB: 1 }))).toThrow(/: h1, h2: 0 MiB free$/);
    // The input hosts are untouched.
    expect(hosts[0]!.reserved).toEqual({ cpus: 0, memoryMiB: 0 });
  });

  it('pack mode fills one host before the next', () => {
    const ledger = new ReservationLedger([testHost('h1'), testHost('h2')], { mode: 'pack' });
    const placed = ['a', 'b', 'c'].map((vmId) => ledger.place(testRequest({ vmId, memoryMiB: 1024 })).hostId);
    expect(new Set(placed).size).toBe(1);
  });

  it('counts reserved VMs for anti-affinity', () => {
    const ledger = new ReservationLedger([testHost('h1'), testHost('h2')]);
    ledger.place(testRequest({ vmId: 'db1', antiAffinityGroups: ['db'] }));
    ledger.place(testRequest({ vmId: 'db2', antiAffinityGroups: ['db'] }));
    let caught: unknown;
    try {
      ledger.place(testRequest({ vmId: 'db3', name: 'db3', antiAffinityGroups: ['db'] }));
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(DroverError);
    expect((caught as DroverError).message).toMatch(/^No host can run VM "db3" .*: h1: anti-affinity group "db" \(VM "db\d"\); h2: /);
    ledger.release('db1');
    expect(ledger.place(testRequest({ vmId: 'db3', antiAffinityGroups: ['db'] })).hostId).toBe(ledger.reservationOf('db3')!.hostId);
  });

  it('release gives back exactly what was reserved and is idempotent', () => {
    const hosts = [testHost('h1', { vms: [{ id: 'x', antiAffinityGroups: ['g'], labels: {} }] })];
    const ledger = new ReservationLedger(hosts);
    ledger.place(testRequest({ vmId: 'a', cpus: 3, memoryMiB: 300, labels: { app: 'web' } }));
    expect(ledger.hosts[0]!.vms.map((vm) => vm.id)).toEqual(['x', 'a']);
    expect(ledger.release('a')).toBe(true);
    expect(ledger.release('a')).toBe(false);
    expect(ledger.hosts).toEqual(hosts);
    expect(ledger.reservations).toEqual([]);
  });

  it('refuses a second reservation for the same VM', () => {
    const ledger = new ReservationLedger([testHost('h1')]);
    ledger.place(testRequest());
    expect(() => ledger.place(testRequest())).toThrow(/VM "web-3" already has a reservation on host "h1"/);
  });

  it('does O(hosts) work per placement and builds each per-host index once per change', () => {
    // Counted rather than timed: the machines are shared, and bench/ measures time.
    let filterCalls = 0;
    let indexBuilds = 0;
    const groupsOf = memoizeOnHostVms((vms) => {
      indexBuilds += 1;
      return new Set(vms.flatMap((vm) => vm.antiAffinityGroups));
    });
    const counting = defineFilter('counting', (request, host) => {
      filterCalls += 1;
      const clash = (request.antiAffinityGroups ?? []).some((g) => groupsOf(host).has(g));
      return clash ? { pass: false, reason: `host "${host.name}" clashes` } : { pass: true };
    });
    const hostCount = 1000;
    const hosts = Array.from({ length: hostCount }, (_, i) =>
      testHost(`h${i}`, {
        capacity: { cpus: 32, memoryMiB: 262144 },
        vms: Array.from({ length: 20 }, (_, j) => ({ id: `h${i}-vm${j}`, antiAffinityGroups: [`g${(i * 20 + j) % 500}`], labels: {} })),
      }),
    );
    const ledger = new ReservationLedger(hosts, { filters: [counting, ...defaultFilters] });
    const placements = 200;
    for (let i = 0; i < placements; i += 1) {
      ledger.place(testRequest({ vmId: `new-${i}`, memoryMiB: 1024, cpus: 2, antiAffinityGroups: [`g${i % 500}`] }));
    }
    expect(ledger.reservations).toHaveLength(placements);
    expect(filterCalls).toBe(hostCount * placements);
    // Once per host, plus once for each host whose VMs a placement changed (the last change is never read).
    expect(indexBuilds).toBe(hostCount + placements - 1);
  });
});

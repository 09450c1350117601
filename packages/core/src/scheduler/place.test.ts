import { describe, expect, it } from 'vitest';
import { DroverError } from '../errors.js';
import { defaultFilters, defineFilter } from './filters.js';
import { testHost, testRequest } from './fixtures.js';
import { explainPlacement, placeVm } from './place.js';
import type { HostCandidate } from './types.js';
import { defineWeigher, freeMemoryWeigher, withWeight } from './weighers.js';

function refusal(run: () => unknown): DroverError {
  try {
    run();
  } catch (error) {
    if (error instanceof DroverError) return error;
    throw error;
  }
  throw new Error('expected a DroverError');
}

const mem = (memoryMiB: number, usedMiB: number, extra: Partial<HostCandidate> = {}) => ({
  capacity: { cpus: 8, memoryMiB },
  used: { cpus: 0, memoryMiB: usedMiB },
  ...extra,
});

describe('placeVm', () => {
  it('spread takes the emptiest host, pack the fullest that fits', () => {
    const hosts = [testHost('busy', mem(8192, 6144)), testHost('idle', mem(8192, 1024)), testHost('full', mem(8192, 8150))];
    const spread = placeVm(testRequest({ memoryMiB: 512 }), hosts);
    expect(spread.hostName).toBe('idle');
    expect(spread.candidates).toBe(2);
    expect(Object.keys(spread.scores)).toEqual(['freeMemory', 'freeVcpus']);
    expect(placeVm(testRequest({ memoryMiB: 512 }), hosts, { mode: 'spread' }).hostName).toBe('idle');
    expect(placeVm(testRequest({ memoryMiB: 512 }), hosts, { mode: 'pack' }).hostName).toBe('busy');
  });

  it('weighs shares, not sizes: a small empty host beats a big busy one in spread mode', () => {
    const hosts = [testHost('big', mem(65536, 49152)), testHost('small', mem(4096, 0))];
    expect(placeVm(testRequest(), hosts).hostName).toBe('small');
    expect(placeVm(testRequest(), hosts, { mode: 'pack' }).hostName).toBe('big');
  });

  it('breaks ties by host name, whatever the input order', () => {
    const hosts = [testHost('id-c', { name: 'c' }), testHost('id-a', { name: 'a' }), testHost('id-b', { name: 'b' })];
    expect(placeVm(testRequest(), hosts)).toMatchObject({ hostId: 'id-a', hostName: 'a' });
    expect(placeVm(testRequest(), [...hosts].reverse())).toMatchObject({ hostId: 'id-a', hostName: 'a' });
    expect(placeVm(testRequest(), hosts, { mode: 'pack' }).hostName).toBe('a');
    expect(placeVm(testRequest(), hosts, { weighers: [] }).hostName).toBe('a');
  });

  it('refuses with conflict, a one-line summary and every host in the details', () => {
    const hosts = [testHost('h1', mem(1024, 928)), testHost('h2', { state: 'maintenance' })];
    const error = refusal(() => placeVm(testRequest(), hosts));
    expect(error.code).toBe('conflict');
    expect(error.message).toBe('No host can run VM "web-3" (128 MiB, 1 vCPU): h1: 96 MiB free; h2: in maintenance');
    expect(error.details).toMatchObject({ vmId: 'vm-1', vmName: 'web-3', cpus: 1, memoryMiB: 128 });
    expect(error.details.hosts).toEqual([
      { host: 'h1', hostId: 'h1', filter: 'memory', reason: 'host "h1" has 96 MiB free, VM needs 128 MiB' },
      { host: 'h2', hostId: 'h2', filter: 'state', reason: 'host "h2" is in maintenance' },
    ]);
  });

  it('reports the first failing filter of the chain for each host', () => {
    const hosts = [testHost('h1', { state: 'unreachable', ...mem(64, 0) })];
    expect(refusal(() => placeVm(testRequest(), hosts)).details.hosts).toEqual([
      { host: 'h1', hostId: 'h1', filter: 'state', reason: 'host "h1" is unreachable' },
    ]);
  });

  it('keeps the message one readable line on a large cluster', () => {
    const hosts = Array.from({ length: 1000 }, (_, i) =>
      testHost(`h${i}`, i % 2 === 0 ? { state: 'maintenance' } : mem(1024, 1024 - (i % 40))),
    );
    const error = refusal(() => placeVm(testRequest({ cpus: 2 }), hosts));
    expect(error.message).toMatch(/^No host can run VM "web-3" \(128 MiB, 2 vCPUs\): h0, h2, h4 and 497 more: in maintenance; /);
    expect(error.message).toMatch(/\d+ more hosts for other reasons \(see details\)$/);
    expect(error.message.length).toBeLessThan(400);
    expect(error.details.hosts).toHaveLength(1000);
  });

  it('says so when there are no hosts', () => {
    expect(refusal(() => placeVm(testRequest(), [])).message).toBe('No host can run VM "web-3" (128 MiB, 1 vCPU): there are no hosts');
  });

  it('runs appended filters (e.g. a policy filter) without changing the scheduler', () => {
    const noOddHosts = defineFilter('evenOnly', (_request, host) =>
      Number(host.id.slice(1)) % 2 === 0 ? { pass: true } : { pass: false, reason: `host "${host.name}" is odd`, short: 'odd' },
    );
    const hosts = [testHost('h1'), testHost('h2', mem(8192, 4096)), testHost('h3')];
    expect(placeVm(testRequest(), hosts).hostName).toBe('h1');
    expect(placeVm(testRequest(), hosts, { filters: [...defaultFilters, noOddHosts] }).hostName).toBe('h2');
    const error = refusal(() => placeVm(testRequest({ hostExclude: ['h2'] }), hosts, { filters: [...defaultFilters, noOddHosts] }));
    expect(error.message).toBe('No host can run VM "web-3" (128 MiB, 1 vCPU): h1, h3: odd; h2: excluded');
  });

  it('honours custom weighers and weights', () => {
    const preferLabelled = defineWeigher('ssd', 10, (_request, host) => (host.labels.disk === 'ssd' ? 1 : 0));
    const hosts = [testHost('h1'), testHost('h2', { ...mem(8192, 4096), labels: { disk: 'ssd' } })];
    expect(placeVm(testRequest(), hosts).hostName).toBe('h1');
    expect(placeVm(testRequest(), hosts, { weighers: [freeMemoryWeigher, preferLabelled] }).hostName).toBe('h2');
    expect(placeVm(testRequest(), hosts, { weighers: [freeMemoryWeigher, withWeight(preferLabelled, 0)] }).hostName).toBe('h1');
  });

  it('fails loudly on a weigher scoring outside [0, 1]', () => {
    const broken = defineWeigher('broken', 1, () => Number.NaN);
    expect(refusal(() => placeVm(testRequest(), [testHost('h1')], { weighers: [broken] })).code).toBe('internal');
  });

  it('rejects malformed requests, hosts and options as invalid, naming the value', () => {
    const cases: Array<[() => unknown, RegExp]> = [
      [() => placeVm(testRequest({ cpus: 0 }), []), /cpus is 0, expected a positive integer/],
      [() => placeVm(testRequest({ memoryMiB: 1.5 }), []), /memoryMiB is 1.5/],
      [() => placeVm(testRequest({ vmId: '' }), []), /vmId is ""/],
      [() => placeVm(testRequest({ hostExclude: [''] }), []), /hostExclude/],
      [() => placeVm(testRequest(), [testHost('h1'), testHost('h1')]), /Host id "h1" appears twice/],
      [() => placeVm(testRequest(), [testHost('h1', { used: { cpus: -1, memoryMiB: 0 } })]), /Host "h1": used is/],
      [() => placeVm(testRequest(), [testHost('h1', { cpuAllocationRatio: 0 })]), /cpuAllocationRatio is 0/],
      [() => placeVm(testRequest(), [testHost('h1', { state: 'broken' as never })]), /state is "broken"/],
      [() => placeVm(testRequest(), [testHost('h1')], { mode: 'random' as never }), /mode is "random"/],
      [() => placeVm(testRequest(), [testHost('h1')], { weighers: [withWeight(freeMemoryWeigher, -1)] }), /weight -1/],
    ];
    for (const [run, message] of cases) {
      const error = refusal(run);
      expect(error.code).toBe('invalid');
      expect(error.message).toMatch(message);
    }
  });

  it('does not modify the hosts it is given', () => {
    const hosts = [testHost('h1'), testHost('h2')];
    const before = JSON.stringify(hosts);
    placeVm(testRequest({ antiAffinityGroups: ['g'] }), hosts);
    expect(JSON.stringify(hosts)).toBe(before);
  });
});

describe('explainPlacement', () => {
  const hosts = [
    testHost('h1', { ...mem(1024, 928), state: 'maintenance' }),
    testHost('h2', mem(8192, 4096)),
    testHost('h3', mem(8192, 1024)),
  ];

  it('gives every filter verdict for every host, and scores and ranks for those that pass', () => {
    const explained = explainPlacement(testRequest(), hosts);
    expect(explained.chosen).toEqual({ hostId: 'h3', hostName: 'h3' });
    expect(explained.mode).toBe('spread');
    expect(explained.weights).toEqual({ freeMemory: 1, freeVcpus: 0.5 });
    const [h1, h2, h3] = explained.hosts;
    expect(h1!.passed).toBe(false);
    expect(h1!.filters.filter((f) => !f.pass)).toEqual([
      { filter: 'state', pass: false, reason: 'host "h1" is in maintenance' },
      { filter: 'memory', pass: false, reason: 'host "h1" has 96 MiB free, VM needs 128 MiB' },
    ]);
    expect(h1!.rank).toBeUndefined();
    expect(h1!.scores).toBeUndefined();
    expect(h2).toMatchObject({ passed: true, rank: 2 });
    expect(h3).toMatchObject({ passed: true, rank: 1 });
    expect(h3!.filters).toHaveLength(defaultFilters.length);
    expect(h3!.score).toBeCloseTo(h3!.scores!.freeMemory! + 0.5 * h3!.scores!.freeVcpus!, 12);
    expect(h3!.scores!.freeMemory).toBeCloseTo((8192 - 1024 - 128) / 8192, 12);
  });

  it('agrees with placeVm, and answers null rather than throwing when nothing fits', () => {
    for (const mode of ['spread', 'pack'] as const) {
      expect(explainPlacement(testRequest(), hosts, { mode }).chosen?.hostId).toBe(placeVm(testRequest(), hosts, { mode }).hostId);
    }
    expect(explainPlacement(testRequest({ memoryMiB: 65536 }), hosts).chosen).toBeNull();
  });
});

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DroverError } from '../errors.js';
import { ReservationLedger } from './ledger.js';
import { explainPlacement, placeVm } from './place.js';
import type { HostCandidate, HostState, HostVm, PlacementMode, PlacementRequest } from './types.js';
import { freeMemoryWeigher } from './weighers.js';

// ---- A brute-force oracle, written from the rules rather than from the filters. ----

function vcpuLimit(host: HostCandidate): number {
  return Math.floor(host.capacity.cpus * (host.cpuAllocationRatio ?? 4));
}

function violations(request: PlacementRequest, host: HostCandidate): string[] {
  const found: string[] = [];
  const named = (list: readonly string[] | undefined) => list?.some((x) => x === host.id || x === host.name) ?? false;
  if (host.state !== 'online') found.push('not online');
  if (request.hostInclude && request.hostInclude.length > 0 && !named(request.hostInclude)) found.push('not included');
  if (named(request.hostExclude)) found.push('excluded');
  for (const [key, value] of Object.entries(request.requiredHostLabels ?? {})) {
    if (!Object.hasOwn(host.labels, key) || host.labels[key] !== value) found.push(`label ${key}`);
  }
  if (request.cpuModel !== undefined && !host.cpuModels.includes(request.cpuModel)) found.push('cpu model');
  if (host.used.memoryMiB + host.reserved.memoryMiB + request.memoryMiB > host.capacity.memoryMiB) found.push('memory');
  if (host.used.cpus + host.reserved.cpus + request.cpus > vcpuLimit(host)) found.push('vcpus');
  const groups = request.antiAffinityGroups ?? [];
  if (host.vms.some((vm) => vm.id !== request.vmId && vm.antiAffinityGroups.some((g) => groups.includes(g)))) {
    found.push('anti-affinity');
  }
  return found;
}

function withinLimits(host: HostCandidate): boolean {
  return (
    host.used.memoryMiB + host.reserved.memoryMiB <= host.capacity.memoryMiB &&
    host.used.cpus + host.reserved.cpus <= vcpuLimit(host)
  );
}

// ---- Random clusters and requests. ----

type ValueOf<A> = A extends fc.Arbitrary<infer T> ? T : never;

const GROUPS = ['g1', 'g2', 'g3', 'g4'];
const MODELS = ['qemu64', 'max', 'EPYC'];

const stateArb: fc.Arbitrary<HostState> = fc.oneof(
  { arbitrary: fc.constant('online' as const), weight: 6 },
  { arbitrary: fc.constantFrom<HostState>('unreachable', 'maintenance', 'powered_off', 'joining'), weight: 1 },
);

const hostShapeArb = fc.record({
  state: stateArb,
  cpus: fc.integer({ min: 1, max: 16 }),
  memoryMiB: fc.integer({ min: 256, max: 16384 }),
  ratio: fc.option(fc.constantFrom(1, 1.5, 2, 4, 8), { nil: undefined }),
  usedShare: fc.integer({ min: 0, max: 100 }),
  reservedShare: fc.integer({ min: 0, max: 100 }),
  // Most hosts offer the baseline model, as real agents do; some offer nothing asked for.
  cpuModels: fc.oneof(
    { arbitrary: fc.subarray(MODELS.slice(1)).map((extra) => [MODELS[0]!, ...extra]), weight: 3 },
    { arbitrary: fc.subarray(MODELS), weight: 1 },
  ),
  zone: fc.option(fc.constantFrom('a', 'b'), { nil: undefined }),
  disk: fc.option(fc.constantFrom('ssd', 'hdd'), { nil: undefined }),
  vmGroups: fc.array(fc.subarray(GROUPS, { maxLength: 2 }), { maxLength: 4 }),
});

function buildHost(i: number, s: ValueOf<typeof hostShapeArb>): HostCandidate {
  const partial = { capacity: { cpus: s.cpus, memoryMiB: s.memoryMiB }, cpuAllocationRatio: s.ratio } as HostCandidate;
  const split = (limit: number) => {
    const used = Math.floor((limit * s.usedShare) / 100);
    const reserved = Math.floor(((limit - used) * s.reservedShare) / 100 / 2);
    return { used, reserved };
  };
  const mem = split(s.memoryMiB);
  const cpu = split(vcpuLimit(partial));
  const labels: Record<string, string> = {};
  if (s.zone) labels.zone = s.zone;
  if (s.disk) labels.disk = s.disk;
  const vms: HostVm[] = s.vmGroups.map((groups, j) => ({ id: `pre-${i}-${j}`, antiAffinityGroups: groups, labels: {} }));
  return {
    id: `id-${i}`,
    name: `h${i}`,
    state: s.state,
    capacity: { cpus: s.cpus, memoryMiB: s.memoryMiB },
    ...(s.ratio === undefined ? {} : { cpuAllocationRatio: s.ratio }),
    used: { cpus: cpu.used, memoryMiB: mem.used },
    reserved: { cpus: cpu.reserved, memoryMiB: mem.reserved },
    cpuModels: s.cpuModels,
    labels,
    vms,
  };
}

const clusterArb = fc.array(hostShapeArb, { minLength: 0, maxLength: 8 }).map((shapes) => shapes.map((s, i) => buildHost(i, s)));

// Host references by id or by name, plus one that matches nothing.
const hostRefArb = fc.oneof(
  fc.integer({ min: 0, max: 7 }).map((i) => `id-${i}`),
  fc.integer({ min: 0, max: 7 }).map((i) => `h${i}`),
  fc.constant('nowhere'),
);

/** `arb` about one time in `1 + absentWeight`, otherwise undefined. */
function sometimes<T>(arb: fc.Arbitrary<T>, absentWeight: number): fc.Arbitrary<T | undefined> {
  return fc.oneof({ arbitrary: fc.constant(undefined), weight: absentWeight }, { arbitrary: arb, weight: 1 });
}

const requestShapeArb = fc.record({
  cpus: fc.integer({ min: 1, max: 8 }),
  memoryMiB: fc.integer({ min: 64, max: 4096 }),
  cpuModel: sometimes(fc.constantFrom(...MODELS), 1),
  antiAffinityGroups: sometimes(fc.subarray(GROUPS, { minLength: 1, maxLength: 2 }), 1),
  hostInclude: sometimes(fc.array(hostRefArb, { maxLength: 3 }), 4),
  hostExclude: sometimes(fc.array(hostRefArb, { maxLength: 2 }), 2),
  requiredHostLabels: sometimes(fc.constantFrom<Record<string, string>>({ zone: 'a' }, { disk: 'ssd' }, { zone: 'b', disk: 'hdd' }), 4),
});

type Shape = ValueOf<typeof requestShapeArb>;

function buildRequest(k: number, s: Shape): PlacementRequest {
  const request: Record<string, unknown> = { vmId: `vm-${k}`, name: `vm${k}`, cpus: s.cpus, memoryMiB: s.memoryMiB };
  for (const [key, value] of Object.entries(s)) if (value !== undefined && !(key in request)) request[key] = value;
  return request as unknown as PlacementRequest;
}

const opArb = fc.oneof(
  { arbitrary: requestShapeArb.map((shape) => ({ kind: 'place' as const, shape })), weight: 4 },
  { arbitrary: fc.nat(40).map((which) => ({ kind: 'release' as const, which })), weight: 1 },
);

const modeArb = fc.constantFrom<PlacementMode>('spread', 'pack');

describe('placement properties', () => {
  it('placing through the ledger never breaks a rule, and refuses only when truly no host fits', () => {
    fc.assert(
      fc.property(clusterArb, fc.array(opArb, { minLength: 1, maxLength: 30 }), modeArb, (hosts, ops, mode) => {
        const ledger = new ReservationLedger(hosts, { mode });
        const placed: string[] = [];
        ops.forEach((op, k) => {
          if (op.kind === 'release') {
            const vmId = placed.splice(op.which % Math.max(1, placed.length), 1)[0];
            if (vmId !== undefined) expect(ledger.release(vmId)).toBe(true);
          } else {
            const request = buildRequest(k, op.shape);
            const before = ledger.hosts;
            let chosen: string | undefined;
            try {
              chosen = ledger.place(request).hostId;
            } catch (error) {
              if (!(error instanceof DroverError) || error.code !== 'conflict') throw error;
              // Brute force: really no host could take it, and every host is accounted for.
              for (const host of before) expect(violations(request, host), `${host.name} fits ${JSON.stringify(request)}`).not.toEqual([]);
              const listed = error.details.hosts as Array<{ host: string; reason: string }>;
              expect(listed.map((h) => h.host)).toEqual(before.map((h) => h.name));
              for (const entry of listed) expect(entry.reason).toContain(`host "${entry.host}"`);
            }
            if (chosen !== undefined) {
              const host = before.find((h) => h.id === chosen)!;
              // Online, not excluded, offers the CPU model, no anti-affinity partner, room for it...
              expect(violations(request, host)).toEqual([]);
              // ...and the ledger picked what a fresh placement on the same state picks.
              expect(placeVm(request, before, { mode }).hostId).toBe(chosen);
              expect(explainPlacement(request, before, { mode }).chosen?.hostId).toBe(chosen);
              placed.push(request.vmId);
            }
          }
          for (const host of ledger.hosts) expect(withinLimits(host), `${host.name} over its limits`).toBe(true);
        });
        // Releasing everything restores the cluster as given.
        for (const vmId of placed) ledger.release(vmId);
        expect(ledger.hosts).toEqual(hosts);
        expect(ledger.reservations).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });

  it('explainPlacement passes exactly the hosts the oracle accepts', () => {
    fc.assert(
      fc.property(clusterArb, requestShapeArb, modeArb, (hosts, shape, mode) => {
        const request = buildRequest(0, shape);
        const explained = explainPlacement(request, hosts, { mode });
        expect(explained.hosts.map((h) => h.passed)).toEqual(hosts.map((h) => violations(request, h).length === 0));
        const ranks = explained.hosts.flatMap((h) => (h.rank === undefined ? [] : [h.rank])).sort((a, b) => a - b);
        expect(ranks).toEqual(ranks.map((_, i) => i + 1));
      }),
      { numRuns: 300 },
    );
  });

  it('with memory weighing alone, spread takes the largest free share after placement and pack the smallest', () => {
    fc.assert(
      fc.property(clusterArb, requestShapeArb, modeArb, (hosts, shape, mode) => {
        const request = buildRequest(0, shape);
        const fitting = hosts.filter((h) => violations(request, h).length === 0);
        fc.pre(fitting.length > 0);
        const share = (h: HostCandidate) => (h.capacity.memoryMiB - h.used.memoryMiB - h.reserved.memoryMiB - request.memoryMiB) / h.capacity.memoryMiB;
        const chosen = hosts.find((h) => h.id === placeVm(request, hosts, { mode, weighers: [freeMemoryWeigher] }).hostId)!;
        const shares = fitting.map(share);
        const target = mode === 'spread' ? Math.max(...shares) : Math.min(...shares);
        expect(share(chosen)).toBeCloseTo(target, 12);
      }),
      { numRuns: 300 },
    );
  });
});

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ChineseWallState } from './chinese-wall.js';
import { compilePolicy } from './compiled.js';
import { formatLabelRef } from './label-ref.js';
import type { ResolvedLabel, SecurityPolicy } from './types.js';

// Three conflict sets over six types, labels holding zero to two types (never two of one set).
const policyDoc: SecurityPolicy = {
  name: 'prop',
  steTypes: ['s'],
  cwTypes: ['a', 'b', 'c', 'd', 'e', 'f'],
  conflictSets: [
    { name: 'S1', types: ['a', 'b', 'c'] },
    { name: 'S2', types: ['c', 'd'] },
    { name: 'S3', types: ['e', 'f'] },
  ],
  vmLabels: [
    { name: 'none', steTypes: ['s'], cwTypes: [] },
    { name: 'A', steTypes: ['s'], cwTypes: ['a'] },
    { name: 'B', steTypes: ['s'], cwTypes: ['b'] },
    { name: 'C', steTypes: ['s'], cwTypes: ['c'] },
    { name: 'D', steTypes: ['s'], cwTypes: ['d'] },
    { name: 'AE', steTypes: ['s'], cwTypes: ['a', 'e'] },
    { name: 'BF', steTypes: ['s'], cwTypes: ['b', 'f'] },
    { name: 'DE', steTypes: ['s'], cwTypes: ['d', 'e'] },
  ],
  resourceLabels: [],
};
const policy = compilePolicy(policyDoc);
const labels = policyDoc.vmLabels.map((l) => policy.vmLabel(formatLabelRef('prop', l.name)));

/** The oracle, from the rule itself: two labels clash when one set holds a type of each, and the types differ. */
function clash(x: ResolvedLabel, y: ResolvedLabel): boolean {
  return policyDoc.conflictSets.some((set) =>
    set.types.some((t) => x.cwTypes.has(t) && !y.cwTypes.has(t)) && set.types.some((t) => y.cwTypes.has(t) && !x.cwTypes.has(t)) &&
    set.types.some((t) => x.cwTypes.has(t)) && set.types.some((t) => y.cwTypes.has(t)),
  );
}

type Op = { kind: 'start'; vm: number; host: number } | { kind: 'stop'; vm: number } | { kind: 'migrate'; vm: number; host: number; finish: boolean } | { kind: 'finish'; vm: number };

const HOSTS = 3;
const VMS = 12;
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('start' as const), vm: fc.nat(VMS - 1), host: fc.nat(HOSTS - 1) }),
  fc.record({ kind: fc.constant('stop' as const), vm: fc.nat(VMS - 1) }),
  fc.record({ kind: fc.constant('migrate' as const), vm: fc.nat(VMS - 1), host: fc.nat(HOSTS - 1), finish: fc.boolean() }),
  fc.record({ kind: fc.constant('finish' as const), vm: fc.nat(VMS - 1) }),
);

describe('Chinese Wall over random interleavings of start, stop and migrate', () => {
  it('never lets two conflicting VMs count on one host, and admits every start the rule allows', () => {
    fc.assert(
      fc.property(fc.array(fc.nat(labels.length - 1), { minLength: VMS, maxLength: VMS }), fc.array(op, { maxLength: 120 }), (labelOf, ops) => {
        const hosts = Array.from({ length: HOSTS }, () => new ChineseWallState(policy));
        // Where each VM counts: its host, and a migration's destination while it is in flight.
        const where = new Map<number, { host: number; incoming?: number }>();
        const label = (vm: number) => labels[labelOf[vm]!]!;
        const admissible = (vm: number, host: number) => [...hosts[host]!.vms.keys()].every((id) => Number(id) === vm || !clash(label(vm), label(Number(id))));
        for (const o of ops) {
          const at = where.get(o.vm);
          if (o.kind === 'start' && !at) {
            const expected = admissible(o.vm, o.host);
            expect(hosts[o.host]!.check(label(o.vm), String(o.vm)).allowed).toBe(expected);
            if (expected) {
              hosts[o.host]!.add(String(o.vm), label(o.vm));
              where.set(o.vm, { host: o.host });
            } else {
              expect(() => hosts[o.host]!.add(String(o.vm), label(o.vm))).toThrow(/conflict set/);
            }
          } else if (o.kind === 'stop' && at && at.incoming === undefined) {
            hosts[at.host]!.remove(String(o.vm));
            where.delete(o.vm);
          } else if (o.kind === 'migrate' && at && at.incoming === undefined && at.host !== o.host) {
            // The VM counts on the destination from the moment the migration is admitted.
            if (hosts[o.host]!.check(label(o.vm), String(o.vm)).allowed) {
              hosts[o.host]!.add(String(o.vm), label(o.vm));
              where.set(o.vm, { host: at.host, incoming: o.host });
              if (o.finish) {
                hosts[at.host]!.remove(String(o.vm));
                where.set(o.vm, { host: o.host });
              }
            } else {
              expect(admissible(o.vm, o.host)).toBe(false);
            }
          } else if (o.kind === 'finish' && at?.incoming !== undefined) {
            hosts[at.host]!.remove(String(o.vm));
            where.set(o.vm, { host: at.incoming });
          }
          // The invariant, checked after every step against the oracle.
          for (const host of hosts) {
            const ids = [...host.vms.keys()].map(Number);
            for (const x of ids) for (const y of ids) if (x < y) expect(clash(label(x), label(y)), `VMs ${x} and ${y} on one host`).toBe(false);
            // Xen's counters match a recount.
            const recount = new Map<string, number>();
            for (const id of ids) for (const t of label(id).cwTypes) recount.set(t, (recount.get(t) ?? 0) + 1);
            expect(host.runningTypes).toEqual(recount);
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});

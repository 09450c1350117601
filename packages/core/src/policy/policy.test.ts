import { describe, expect, it } from 'vitest';
import { XEN_EXAMPLE_POLICY_XML } from './xen-example.js';
import { DroverError } from '../errors.js';
import { exportAcmXml, importAcmXml, MAX_POLICY_BYTES } from './acm-xml.js';
import { hostMissingTypes, checkCountedVms, steShares } from './checks.js';
import { canRun, ChineseWallState } from './chinese-wall.js';
import { compilePolicy, CompiledPolicy } from './compiled.js';
import { formatLabelRef, parseLabelRef } from './label-ref.js';
import { exportNativePolicy, parseNativePolicy, parsePolicy } from './native.js';
import type { SecurityPolicy } from './types.js';
import { validatePolicy } from './validate.js';

const xenExample = XEN_EXAMPLE_POLICY_XML;
const P = 'example.client_v1';
const ref = (label: string) => formatLabelRef(P, label);

function thrown(fn: () => unknown): DroverError {
  try {
    fn();
  } catch (error) {
    if (error instanceof DroverError) return error;
    throw error;
  }
  throw new Error('expected an error');
}

const small: SecurityPolicy = {
  name: 'small',
  steTypes: ['a', 'b'],
  cwTypes: ['x', 'y', 'z'],
  conflictSets: [{ name: 'S', types: ['x', 'y'] }],
  vmLabels: [
    { name: 'X', steTypes: ['a'], cwTypes: ['x'] },
    { name: 'Y', steTypes: ['b'], cwTypes: ['y'] },
    { name: 'Z', steTypes: ['a', 'b'], cwTypes: ['z'] },
  ],
  resourceLabels: [{ name: 'R', steTypes: ['a'] }],
  bootstrapLabel: 'Z',
};

describe("Xen's ACM XML", () => {
  it("imports Xen's example client_v1 policy", () => {
    const policy = importAcmXml(xenExample);
    expect(policy.name).toBe(P);
    expect(policy.version).toBe('1.0');
    expect(policy.steTypes).toHaveLength(6);
    expect(policy.cwTypes).toEqual(['cw_SystemManagement', 'cw_Sensitive', 'cw_Isolated', 'cw_Distrusted']);
    expect(policy.conflictSets).toEqual([{ name: 'Protection1', types: ['cw_Sensitive', 'cw_Distrusted'] }]);
    expect(policy.vmLabels.map((l) => l.name)).toEqual(['dom_HomeBanking', 'dom_Fun', 'dom_BoincClient', 'SystemManagement', 'dom_StorageDomain', 'dom_NetworkDomain']);
    expect(policy.vmLabels[0]).toEqual({ name: 'dom_HomeBanking', steTypes: ['ste_PersonalFinances'], cwTypes: ['cw_Sensitive'] });
    expect(policy.resourceLabels.map((l) => l.name)).toContain('res_HardDrive(hda)');
    expect(policy.bootstrapLabel).toBe('SystemManagement');
  });

  it('exports XML and YAML/JSON that import back to the same policy', () => {
    const policy = importAcmXml(xenExample);
    expect(importAcmXml(exportAcmXml(policy))).toEqual(policy);
    expect(parseNativePolicy(exportNativePolicy(policy, 'yaml'))).toEqual(policy);
    expect(parseNativePolicy(exportNativePolicy(policy, 'json'), 'json')).toEqual(policy);
    expect(parsePolicy(exportNativePolicy(policy, 'json'))).toEqual(policy);
  });

  it('refuses XXE (an external entity) before parsing', () => {
    const xxe = `<?xml version="1.0"?>\n<!DOCTYPE p [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n<SecurityPolicyDefinition><PolicyHeader><PolicyName>&xxe;</PolicyName></PolicyHeader></SecurityPolicyDefinition>`;
    const error = thrown(() => importAcmXml(xxe));
    expect(error.code).toBe('invalid');
    expect(error.message).toMatch(/DOCTYPE or entity declaration.*refused/);
  });

  it('refuses billion laughs (entity expansion)', () => {
    const lol = ['<?xml version="1.0"?>', '<!DOCTYPE lolz [', ' <!ENTITY lol "lol">'];
    for (let i = 1; i < 10; i++) lol.push(` <!ENTITY lol${i} "${`&lol${i === 1 ? '' : i - 1};`.repeat(10)}">`);
    lol.push(']>', '<SecurityPolicyDefinition><PolicyHeader><PolicyName>&lol9;</PolicyName></PolicyHeader></SecurityPolicyDefinition>');
    const error = thrown(() => importAcmXml(lol.join('\n')));
    expect(error.code).toBe('invalid');
    expect(error.message).toMatch(/entit/);
  });

  it('refuses undeclared entities, malformed XML, other roots and oversized documents', () => {
    expect(thrown(() => importAcmXml(xenExample.replace('example.client_v1', '&foo;'))).message).toMatch(/undeclared entity "&foo;"/);
    expect(thrown(() => importAcmXml(xenExample.replace('</PolicyHeader>', ''))).message).toMatch(/not well-formed XML.*line \d+/);
    expect(thrown(() => importAcmXml('<Other/>')).message).toMatch(/root element must be <SecurityPolicyDefinition>/);
    const big = thrown(() => importAcmXml(`<a>${' '.repeat(MAX_POLICY_BYTES)}</a>`));
    expect(big.code).toBe('too_large');
  });

  it('validates what it imports: a conflict set naming an unknown type', () => {
    const bad = xenExample.replace('<Type>cw_Distrusted</Type>\n\t\t\t</Conflict>', '<Type>cw_Nowhere</Type>\n\t\t\t</Conflict>');
    const error = thrown(() => importAcmXml(bad));
    expect(error.message).toContain('conflictSets[0].types[1]: unknown Chinese Wall type "cw_Nowhere"');
  });
});

describe('validation', () => {
  it('accepts a correct native policy', () => {
    expect(validatePolicy(small)).toEqual(small);
  });

  it.each([
    ['an unknown STE type in a label', { ...small, vmLabels: [{ name: 'X', steTypes: ['q'], cwTypes: [] }] }, 'vmLabels[0].steTypes[0]: unknown STE type "q"'],
    ['an unknown CW type in a conflict set', { ...small, conflictSets: [{ name: 'S', types: ['x', 'w'] }] }, 'conflictSets[0].types[1]: unknown Chinese Wall type "w"'],
    ['a duplicate label', { ...small, resourceLabels: [{ name: 'X', steTypes: ['a'] }] }, 'resourceLabels[0].name: duplicate label "X"'],
    ['a duplicate type', { ...small, steTypes: ['a', 'a'] }, 'steTypes[1]: duplicate STE type "a"'],
    ['a duplicate conflict set', { ...small, conflictSets: [{ name: 'S', types: ['x', 'y'] }, { name: 'S', types: ['y', 'z'] }] }, 'conflictSets[1].name: duplicate conflict set "S"'],
    ['a label holding two types of one set', { ...small, vmLabels: [{ name: 'XY', steTypes: [], cwTypes: ['x', 'y'] }], bootstrapLabel: undefined }, 'are in one conflict set ("S")'],
    ['an unknown bootstrap label', { ...small, bootstrapLabel: 'Q' }, 'bootstrap label "Q" is not a VM label'],
    ['an unknown field', { ...small, colour: 'red' }, 'unknown field "colour"'],
    ['a colon in the policy name', { ...small, name: 'a:b' }, 'may hold only letters'],
    ['a missing name', { ...small, name: undefined }, 'name: must be a non-empty string'],
  ])('refuses %s with a precise error', (_what, doc, message) => {
    const clean = JSON.parse(JSON.stringify(doc)) as unknown;
    const error = thrown(() => validatePolicy(clean));
    expect(error.code).toBe('invalid');
    expect(error.message).toContain(message);
    expect((error.details.problems as unknown[]).length).toBeGreaterThan(0);
  });

  it('reports every problem, not just the first', () => {
    const error = thrown(() => validatePolicy({ ...small, steTypes: ['a'], cwTypes: ['x'] }));
    expect(error.message).toMatch(/and \d+ more problems/);
    expect((error.details.problems as unknown[]).length).toBeGreaterThan(2);
  });

  it('refuses YAML alias bombs and unreadable YAML/JSON', () => {
    const bomb = ['a: &a ["x","x","x","x","x","x","x","x","x"]', 'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]', 'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]'].join('\n');
    expect(thrown(() => parseNativePolicy(bomb)).message).toMatch(/cannot be read.*[Aa]lias/);
    expect(thrown(() => parseNativePolicy('{ "name": ', 'json')).message).toMatch(/The JSON policy cannot be read/);
    expect(thrown(() => parseNativePolicy('- just\n- a list')).message).toMatch(/must be an object/);
  });
});

describe('labels', () => {
  const policy = compilePolicy(importAcmXml(xenExample));

  it('are referred to as ACM:<policy>:<label>', () => {
    expect(parseLabelRef('ACM:example.client_v1:res_HardDrive(hda)')).toEqual({ policy: P, label: 'res_HardDrive(hda)' });
    expect(thrown(() => parseLabelRef('dom_Fun')).message).toMatch(/not of the form ACM:<policy>:<label>/);
    expect(policy.vmLabel(ref('dom_Fun')).cwTypes).toEqual(new Set(['cw_Distrusted']));
    expect(thrown(() => policy.vmLabel('ACM:other:dom_Fun')).message).toMatch(/belongs to policy "other"/);
    expect(thrown(() => policy.vmLabel(ref('dom_Nope'))).message).toMatch(/has no VM label "dom_Nope"/);
    expect(thrown(() => policy.vmLabel(ref('res_EthernetCard'))).message).toMatch(/is a resource label/);
  });

  it('give hosts the bootstrap label unless they have their own', () => {
    expect(policy.hostLabel(undefined)?.name).toBe('SystemManagement');
    expect(policy.hostLabel(ref('dom_NetworkDomain'))?.name).toBe('dom_NetworkDomain');
    expect(new CompiledPolicy({ ...small, bootstrapLabel: undefined }).hostLabel(null)).toBeUndefined();
  });
});

describe('Chinese Wall state (per host)', () => {
  const policy = compilePolicy(importAcmXml(xenExample));
  const banking = policy.vmLabel(ref('dom_HomeBanking'));
  const fun = policy.vmLabel(ref('dom_Fun'));
  const boinc = policy.vmLabel(ref('dom_BoincClient'));

  it("keeps Xen's running-type and conflict-aggregate counts", () => {
    const host = new ChineseWallState(policy);
    host.add('bank-1', banking);
    host.add('bank-2', banking);
    expect(host.runningTypes.get('cw_Sensitive')).toBe(2);
    expect(host.conflictAggregate.get('cw_Distrusted')).toBe(2);
    expect(host.conflictAggregate.get('cw_Sensitive')).toBeUndefined();
    host.remove('bank-1');
    expect(host.conflictAggregate.get('cw_Distrusted')).toBe(1);
    host.remove('bank-2');
    expect(host.conflictAggregate.size).toBe(0);
    expect(host.runningTypes.size).toBe(0);
    expect(host.remove('bank-2')).toBe(false);
  });

  it('refuses dom_Fun beside dom_HomeBanking, naming the VM and the types', () => {
    const host = new ChineseWallState(policy);
    host.add('bank-1', banking);
    host.add('boinc-1', boinc);
    const verdict = canRun(fun, host);
    expect(verdict).toEqual({ allowed: false, conflicts: [{ vmId: 'bank-1', vmLabel: ref('dom_HomeBanking'), type: 'cw_Distrusted', otherType: 'cw_Sensitive', set: 'Protection1' }] });
    const error = thrown(() => host.add('fun-1', fun));
    expect(error.code).toBe('policy_denied');
    expect(error.message).toContain('VM "bank-1"');
    expect(error.message).toContain('conflict set "Protection1"');
    expect(host.vms.has('fun-1')).toBe(false);
    host.remove('bank-1');
    expect(canRun(fun, host).allowed).toBe(true);
  });
});

describe('STE', () => {
  const policy = compilePolicy(importAcmXml(xenExample));
  const banking = policy.vmLabel(ref('dom_HomeBanking'));
  const fun = policy.vmLabel(ref('dom_Fun'));

  it('lets a VM use a resource only when they share a type', () => {
    const partition1 = policy.resourceLabel(ref('res_LogicalDiskPartition1(hda1)'));
    expect(steShares(banking, partition1)).toEqual({ allowed: true, common: ['ste_PersonalFinances'] });
    const denied = steShares(fun, partition1, 'volume');
    expect(denied.allowed).toBe(false);
    expect(!denied.allowed && denied.reason).toMatch(/shares no STE type with the volume/);
    expect(steShares(undefined, partition1).allowed).toBe(false);
    expect(steShares(fun, undefined).allowed).toBe(true);
  });

  it('requires the host to cover the VM’s STE types', () => {
    expect(hostMissingTypes(policy.hostLabel(undefined), banking)).toEqual([]);
    expect(hostMissingTypes(policy.vmLabel(ref('dom_NetworkDomain')), policy.vmLabel(ref('dom_StorageDomain')))).toEqual(['ste_PersistentStorageA']);
    expect(hostMissingTypes(undefined, fun)).toEqual(['ste_InternetInsecure']);
  });
});

describe('re-check of running VMs on load', () => {
  it('lists every conflict and unknown label', () => {
    const policy = compilePolicy(importAcmXml(xenExample));
    const violations = checkCountedVms(policy, [
      { vmId: '1', vmName: 'bank', hostId: 'h1', hostName: 'h1', label: ref('dom_HomeBanking') },
      { vmId: '2', vmName: 'fun', hostId: 'h1', hostName: 'h1', label: ref('dom_Fun') },
      { vmId: '3', vmName: 'fun2', hostId: 'h2', hostName: 'h2', label: ref('dom_Fun') },
      { vmId: '4', vmName: 'old', hostId: 'h2', hostName: 'h2', label: 'ACM:example.client_v1:dom_Gone' },
    ]);
    expect(violations.map((v) => [v.kind, v.vm, v.otherVm ?? null])).toEqual([
      ['chinese_wall', 'fun', 'bank'],
      ['unknown_label', 'old', null],
    ]);
    expect(violations[0]!.message).toContain('types "cw_Sensitive" and "cw_Distrusted" are in conflict set "Protection1"');
  });
});

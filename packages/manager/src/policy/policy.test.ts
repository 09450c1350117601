import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportNativePolicy, importAcmXml, XEN_EXAMPLE_POLICY_XML } from '@drover/core';
import { startTestCluster, type TestCluster } from '../testing/cluster.js';

/**
 * The policy API on a real manager with one real agent (no VM runs here: the
 * enforcement with real VMs is in policy-enforcement.multihost.test.ts).
 */
let cluster: TestCluster;
const P = 'example.client_v1';
type ErrorAnswer = { error: { code: string; message: string; details: Record<string, unknown> } };

beforeAll(async () => {
  cluster = await startTestCluster({ hostName: 'ph1' });
});
afterAll(async () => {
  await cluster?.close();
});

describe('security policy API', () => {
  it('has no policy at first: 404, and a VM label is refused', async () => {
    expect((await cluster.api('GET', '/api/v1/policy')).status).toBe(404);
    const vm = await cluster.api<ErrorAnswer>('POST', '/api/v1/vms', { name: 'early', image: 'web', memoryMiB: 96, securityLabel: `ACM:${P}:dom_Fun` });
    expect(vm.status).toBe(400);
    expect(vm.body.error.message).toMatch(/no security policy is loaded/);
  });

  it.each([
    ['XXE', `<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]><SecurityPolicyDefinition><PolicyHeader><PolicyName>&x;</PolicyName></PolicyHeader></SecurityPolicyDefinition>`, 400, /DTDs and entities are refused/],
    ['billion laughs', `<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><SecurityPolicyDefinition><PolicyHeader><PolicyName>&c;</PolicyName></PolicyHeader></SecurityPolicyDefinition>`, 400, /DTDs and entities are refused/],
    ['an unknown type', XEN_EXAMPLE_POLICY_XML.replace('<Type>ste_DonatedCycles</Type>\n\t\t\t\t</SimpleTypeEnforcementTypes>', '<Type>ste_Nowhere</Type>\n\t\t\t\t</SimpleTypeEnforcementTypes>'), 400, /unknown STE type "ste_Nowhere"/],
    ['a duplicate label', XEN_EXAMPLE_POLICY_XML.replace('<Name>dom_Fun</Name>', '<Name>dom_HomeBanking</Name>'), 400, /duplicate label "dom_HomeBanking"/],
    ['a YAML alias bomb', 'a: &a [x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b,*b,*b,*b]\n', 400, /cannot be read/],
  ])('refuses %s with a clear error and changes nothing', async (_what, document, status, message) => {
    const answer = await cluster.api<ErrorAnswer>('PUT', '/api/v1/policy', { document });
    expect(answer.status).toBe(status);
    expect(answer.body.error.code).toBe('invalid');
    expect(answer.body.error.message).toMatch(message);
    expect((await cluster.api('GET', '/api/v1/policy')).status).toBe(404);
    const validation = await cluster.api<ErrorAnswer>('POST', '/api/v1/policy/validate', { document });
    expect(validation.status).toBe(status);
    expect(validation.body.error.message).toMatch(message);
  });

  it("loads Xen's example policy from its XML, shows and exports it", async () => {
    const validation = await cluster.api<{ valid: boolean; name: string; summary: { vmLabels: number } }>('POST', '/api/v1/policy/validate', { document: XEN_EXAMPLE_POLICY_XML });
    expect(validation.body).toMatchObject({ valid: true, name: P, summary: { vmLabels: 6 } });
    const loaded = await cluster.api<{ name: string; sourceFormat: string; loadedBy: string; policy: { bootstrapLabel: string } }>('PUT', '/api/v1/policy', { document: XEN_EXAMPLE_POLICY_XML });
    expect(loaded.status).toBe(200);
    expect(loaded.body).toMatchObject({ name: P, sourceFormat: 'xml', loadedBy: 'admin', policy: { bootstrapLabel: 'SystemManagement' } });
    expect((await cluster.api<{ name: string }>('GET', '/api/v1/policy')).body.name).toBe(P);
    const xml = await cluster.api<string>('GET', '/api/v1/policy/export?format=xml');
    expect(xml.headers.get('content-type')).toMatch(/application\/xml/);
    expect(importAcmXml(xml.body)).toEqual(importAcmXml(XEN_EXAMPLE_POLICY_XML));
    const yaml = await cluster.api<string>('GET', '/api/v1/policy/export?format=yaml');
    expect(yaml.body).toContain('dom_HomeBanking');
    // The native form loads too (same policy again: nothing runs, so nothing conflicts).
    const again = await cluster.api<{ sourceFormat: string }>('PUT', '/api/v1/policy', { document: exportNativePolicy(importAcmXml(XEN_EXAMPLE_POLICY_XML), 'json') });
    expect(again.body.sourceFormat).toBe('json');
  });

  it('labels VMs on create and PATCH, keeps the label across label edits, refuses unknown labels', async () => {
    const created = await cluster.api<{ labels: Record<string, string> }>('POST', '/api/v1/vms', { name: 'bank', image: 'web', memoryMiB: 96, securityLabel: `ACM:${P}:dom_HomeBanking`, labels: { team: 'a' } });
    expect(created.status).toBe(201);
    expect(created.body.labels).toEqual({ team: 'a', 'drover.security/label': `ACM:${P}:dom_HomeBanking` });
    const unknown = await cluster.api<ErrorAnswer>('POST', '/api/v1/vms', { name: 'x1', image: 'web', memoryMiB: 96, securityLabel: `ACM:${P}:dom_Nope` });
    expect(unknown.status).toBe(400);
    expect(unknown.body.error.message).toBe(`Policy "${P}" has no VM label "dom_Nope"`);
    const resource = await cluster.api<ErrorAnswer>('POST', '/api/v1/vms', { name: 'x2', image: 'web', memoryMiB: 96, labels: { 'drover.security/label': `ACM:${P}:res_EthernetCard` } });
    expect(resource.body.error.message).toMatch(/is a resource label/);
    const otherPolicy = await cluster.api<ErrorAnswer>('POST', '/api/v1/vms', { name: 'x3', image: 'web', memoryMiB: 96, securityLabel: 'ACM:other:dom_Fun' });
    expect(otherPolicy.body.error.message).toMatch(/belongs to policy "other"/);
    expect((await cluster.api<{ items: unknown[] }>('GET', '/api/v1/vms?limit=100')).body.items.length).toBe(1);

    const relabelled = await cluster.api<{ labels: Record<string, string> }>('PATCH', '/api/v1/vms/bank', { labels: { team: 'b' } });
    expect(relabelled.body.labels).toEqual({ team: 'b', 'drover.security/label': `ACM:${P}:dom_HomeBanking` });
    const fun = await cluster.api<{ labels: Record<string, string> }>('PATCH', '/api/v1/vms/bank', { securityLabel: `ACM:${P}:dom_Fun` });
    expect(fun.body.labels['drover.security/label']).toBe(`ACM:${P}:dom_Fun`);
    const removed = await cluster.api<{ labels: Record<string, string> }>('PATCH', '/api/v1/vms/bank', { securityLabel: null });
    expect(removed.body.labels).toEqual({ team: 'b' });
    await cluster.api('PATCH', '/api/v1/vms/bank', { securityLabel: `ACM:${P}:dom_HomeBanking` });
  });

  it('labels hosts and images, and refuses a VM an image it shares no STE type with', async () => {
    const host = await cluster.api<{ kind: string; objectName: string; label: string }>('PUT', '/api/v1/policy/labels', { kind: 'host', object: 'ph1', label: `ACM:${P}:dom_NetworkDomain` });
    expect(host.status).toBe(200);
    expect(host.body).toMatchObject({ kind: 'host', objectName: 'ph1', label: `ACM:${P}:dom_NetworkDomain` });
    const badHost = await cluster.api<ErrorAnswer>('PUT', '/api/v1/policy/labels', { kind: 'host', object: 'ph1', label: `ACM:${P}:res_EthernetCard` });
    expect(badHost.status).toBe(400);
    const image = await cluster.api('PUT', '/api/v1/policy/labels', { kind: 'image', object: 'web', label: `ACM:${P}:res_LogicalDiskPartition2(hda2)` });
    expect(image.status).toBe(200);
    const labels = await cluster.api<Array<{ kind: string }>>('GET', '/api/v1/policy/labels');
    expect(labels.body.map((l) => l.kind).sort()).toEqual(['host', 'image']);
    // dom_HomeBanking (ste_PersonalFinances) may not boot an image labelled ste_InternetInsecure.
    const denied = await cluster.api<ErrorAnswer>('POST', '/api/v1/vms', { name: 'bank2', image: 'web', memoryMiB: 96, securityLabel: `ACM:${P}:dom_HomeBanking` });
    expect(denied.status).toBe(403);
    expect(denied.body.error.code).toBe('policy_denied');
    expect(denied.body.error.message).toMatch(/may not use image "web:.*shares no STE type/);
    const start = await cluster.api<ErrorAnswer>('POST', '/api/v1/vms/bank/start', {});
    expect(start.status).toBe(403);
    expect(start.body.error.details.reason).toBe('ste');
    // dom_Fun shares ste_InternetInsecure with it.
    expect((await cluster.api('POST', '/api/v1/vms', { name: 'fun', image: 'web', memoryMiB: 96, securityLabel: `ACM:${P}:dom_Fun` })).status).toBe(201);
    await cluster.api('PUT', '/api/v1/policy/labels', { kind: 'image', object: 'web', label: null });
  });

  it('labels networks, and refuses a VM a NIC on a network it shares no STE type with (nothing made)', async () => {
    expect((await cluster.api('POST', '/api/v1/networks', { name: 'insecure', kind: 'isolated', subnet: '10.77.0.0/24' })).status).toBe(201);
    const labelled = await cluster.api<{ kind: string; objectName: string }>('PUT', '/api/v1/policy/labels', { kind: 'network', object: 'insecure', label: `ACM:${P}:res_LogicalDiskPartition2(hda2)` });
    expect(labelled.status).toBe(200);
    expect(labelled.body).toMatchObject({ kind: 'network', objectName: 'insecure' });
    expect((await cluster.api<ErrorAnswer>('PUT', '/api/v1/policy/labels', { kind: 'network', object: 'nonet', label: `ACM:${P}:res_EthernetCard` })).status).toBe(404);
    // dom_HomeBanking (ste_PersonalFinances) may not be on a network labelled ste_InternetInsecure.
    const denied = await cluster.api<ErrorAnswer>('POST', '/api/v1/vms', { name: 'bank3', image: 'web', memoryMiB: 96, securityLabel: `ACM:${P}:dom_HomeBanking`, networks: [{ network: 'insecure' }] });
    expect(denied.status).toBe(403);
    expect(denied.body.error).toMatchObject({ code: 'policy_denied', details: { reason: 'ste', kind: 'network' } });
    expect(denied.body.error.message).toMatch(/may not use network "insecure".*shares no STE type/);
    expect((await cluster.api('GET', '/api/v1/vms/bank3')).status).toBe(404);
    // dom_Fun shares ste_InternetInsecure with it; the NIC gets its address.
    const fun = await cluster.api<{ id: string }>('POST', '/api/v1/vms', { name: 'fun-net', image: 'web', memoryMiB: 96, securityLabel: `ACM:${P}:dom_Fun`, networks: [{ network: 'insecure' }] });
    expect(fun.status).toBe(201);
    expect((await cluster.api<{ items: Array<{ network: string; ip: string }> }>('GET', '/api/v1/vms/fun-net/networks')).body.items).toMatchObject([{ network: 'insecure', ip: '10.77.0.2' }]);
    // Relabelled after the VM was defined: its start is refused too.
    await cluster.api('PUT', '/api/v1/policy/labels', { kind: 'network', object: 'insecure', label: `ACM:${P}:res_EthernetCard` });
    const start = await cluster.api<ErrorAnswer>('POST', '/api/v1/vms/fun-net/start', {});
    expect(start.status).toBe(403);
    expect(start.body.error.details).toMatchObject({ reason: 'ste', kind: 'network' });
    expect((await cluster.api<{ state: string }>('GET', '/api/v1/vms/fun-net')).body.state).toBe('defined');
    await cluster.api('PUT', '/api/v1/policy/labels', { kind: 'network', object: 'insecure', label: null });
    expect((await cluster.api('DELETE', '/api/v1/vms/fun-net?wait=true')).status).toBeLessThan(300);
  });

  it('explains a placement: host coverage and the whole filter chain', async () => {
    // ph1 is labelled dom_NetworkDomain: it covers ste_PersonalFinances but not ste_PersistentStorageA.
    await cluster.api('POST', '/api/v1/vms', { name: 'storage', image: 'web', memoryMiB: 96, securityLabel: `ACM:${P}:dom_StorageDomain` });
    const no = await cluster.api<{ allowed: boolean; reasons: string[]; missingSteTypes: string[]; filters: Array<{ filter: string; pass: boolean }> }>('GET', '/api/v1/policy/explain?vm=storage&host=ph1');
    expect(no.status).toBe(200);
    expect(no.body.allowed).toBe(false);
    expect(no.body.missingSteTypes).toEqual(['ste_PersistentStorageA']);
    expect(no.body.reasons[0]).toMatch(/does not cover STE type ste_PersistentStorageA/);
    expect(no.body.filters.find((f) => f.filter === 'steHostCoverage')?.pass).toBe(false);
    const start = await cluster.api<ErrorAnswer>('POST', '/api/v1/vms/storage/start', {});
    expect(start.status).toBe(403);
    expect(start.body.error.code).toBe('policy_denied');
    expect(start.body.error.message).toMatch(/does not cover STE type "ste_PersistentStorageA"/);
    const yes = await cluster.api<{ allowed: boolean; hostLabel: string }>('GET', '/api/v1/policy/explain?vm=bank&host=ph1');
    expect(yes.body).toMatchObject({ allowed: true, hostLabel: `ACM:${P}:dom_NetworkDomain` });
    expect((await cluster.api('GET', '/api/v1/policy/explain?vm=nope&host=ph1')).status).toBe(404);
    await cluster.api('PUT', '/api/v1/policy/labels', { kind: 'host', object: 'ph1', label: null });
    expect((await cluster.api<{ allowed: boolean; hostLabel: string }>('GET', '/api/v1/policy/explain?vm=storage&host=ph1')).body).toMatchObject({ allowed: true, hostLabel: `ACM:${P}:SystemManagement` });
  });

  it('the agent refuses on its own to run a VM beside a conflicting one (the check where the action happens)', async () => {
    // "fun" runs once (so ph1 holds its definition with its label), then stops; "bank" runs.
    expect((await cluster.api<{ state: string }>('POST', '/api/v1/vms/fun/start?wait=true', {})).body.state).toBe('done');
    expect((await cluster.api<{ state: string }>('POST', '/api/v1/vms/fun/force-off?wait=true', {})).body.state).toBe('done');
    expect((await cluster.api<{ state: string }>('POST', '/api/v1/vms/bank/start?wait=true', {})).body.state).toBe('done');
    const refused = await cluster.api<ErrorAnswer>('POST', '/api/v1/vms/fun/start', {});
    expect(refused.status).toBe(403);
    const fun = (await cluster.api<{ id: string }>('GET', '/api/v1/vms/fun')).body;
    // Straight to the agent, past the manager's placement: it knows fun's label and conflict sets from its definition.
    const defined = await cluster.agent.vms.get(fun.id);
    expect(defined.spec.security).toEqual({ label: `ACM:${P}:dom_Fun`, cwTypes: ['cw_Distrusted'], conflictSets: [['cw_Sensitive', 'cw_Distrusted']] });
    let error: unknown;
    try {
      await cluster.agent.vms.start(fun.id);
    } catch (e) {
      error = e;
    }
    expect(error).toMatchObject({ code: 'policy_denied', details: { reason: 'chinese_wall', vm: 'bank' } });
    expect((error as Error).message).toMatch(/runs here, and types "cw_Sensitive" and "cw_Distrusted" are in one Chinese Wall conflict set/);
    expect((await cluster.agent.vms.get(fun.id)).state).toBe('stopped');
    // STE on disk attach: a volume labelled with a type "bank" lacks is refused, nothing is attached.
    expect((await cluster.api('POST', '/api/v1/hosts/ph1/pools/default/volumes', { name: 'secret.qcow2', sizeBytes: 1048576 })).status).toBe(201);
    expect((await cluster.api('PUT', '/api/v1/policy/labels', { kind: 'volume', object: 'ph1/default/secret.qcow2', label: `ACM:${P}:res_EthernetCard` })).status).toBe(200);
    const disksBefore = (await cluster.api<unknown[]>('GET', '/api/v1/vms/bank/disks')).body;
    const attach = await cluster.api<ErrorAnswer>('POST', '/api/v1/vms/bank/disks', { volume: 'secret.qcow2' });
    expect(attach.status).toBe(403);
    expect(attach.body.error.details.reason).toBe('ste');
    expect(attach.body.error.message).toMatch(/may not use volume "default\/secret.qcow2".*shares no STE type with the volume \(ACM:example.client_v1:res_EthernetCard/);
    expect((await cluster.api<unknown[]>('GET', '/api/v1/vms/bank/disks')).body).toEqual(disksBefore);
    await cluster.api('POST', '/api/v1/vms/bank/force-off?wait=true', {});
  }, 300_000);
});

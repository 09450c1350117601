import { describe, expect, it } from 'vitest';
import { XEN_EXAMPLE_POLICY_XML } from '../policy/xen-example.js';
import { DroverError } from '../errors.js';
import { importAcmXml } from '../policy/acm-xml.js';
import { compilePolicy } from '../policy/compiled.js';
import { defaultFilters } from './filters.js';
import { testHost, testRequest } from './fixtures.js';
import { ReservationLedger } from './ledger.js';
import { planEvacuation } from '../planner/evacuate.js';
import { planConsolidation } from '../planner/consolidate.js';
import { explainPlacement, placeVm } from './place.js';
import { SECURITY_LABEL_KEY, securityPolicyFilters } from './policy-filters.js';

const policy = compilePolicy(importAcmXml(XEN_EXAMPLE_POLICY_XML));
const label = (name: string) => ({ [SECURITY_LABEL_KEY]: `ACM:example.client_v1:${name}` });
const filters = [...defaultFilters, ...securityPolicyFilters(policy)];

describe('sHype placement filters', () => {
  it('place dom_Fun away from the host running dom_HomeBanking, even when that host has the most room', () => {
    const hosts = [
      testHost('h1', { capacity: { cpus: 64, memoryMiB: 65536 }, vms: [{ id: 'b1', name: 'bank', antiAffinityGroups: [], labels: label('dom_HomeBanking') }] }),
      testHost('h2'),
    ];
    const request = testRequest({ name: 'fun', labels: label('dom_Fun') });
    expect(placeVm(request, hosts).hostName).toBe('h1'); // without the policy: the roomiest host
    expect(placeVm(request, hosts, { filters }).hostName).toBe('h2');
  });

  it('explain names the conflicting VM and the types', () => {
    const hosts = [testHost('h1', { vms: [{ id: 'b1', name: 'bank', antiAffinityGroups: [], labels: label('dom_HomeBanking') }] })];
    const explanation = explainPlacement(testRequest({ name: 'fun', labels: label('dom_Fun') }), hosts, { filters });
    expect(explanation.chosen).toBeNull();
    const cw = explanation.hosts[0]!.filters.find((f) => f.filter === 'chineseWall')!;
    expect(cw.pass).toBe(false);
    expect(cw.reason).toBe('host "h1" runs VM "bank" (ACM:example.client_v1:dom_HomeBanking): its type "cw_Sensitive" and this VM\'s type "cw_Distrusted" are in Chinese Wall conflict set "Protection1"');
    let error: unknown;
    try {
      placeVm(testRequest({ name: 'fun', labels: label('dom_Fun') }), hosts, { filters });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(DroverError);
    expect((error as DroverError).message).toContain('Chinese Wall: VM "bank" (cw_Sensitive vs cw_Distrusted)');
  });

  it('lets VMs of one label, and unlabelled VMs, share a host', () => {
    const hosts = [testHost('h1', { vms: [{ id: 'b1', antiAffinityGroups: [], labels: label('dom_HomeBanking') }] })];
    expect(placeVm(testRequest({ labels: label('dom_HomeBanking') }), hosts, { filters }).hostName).toBe('h1');
    expect(placeVm(testRequest({ labels: label('dom_BoincClient') }), hosts, { filters }).hostName).toBe('h1');
    expect(placeVm(testRequest(), hosts, { filters }).hostName).toBe('h1');
  });

  it('needs the host label (or the bootstrap label) to cover the VM’s STE types', () => {
    const hosts = [testHost('net', { labels: label('dom_NetworkDomain') }), testHost('boot')];
    const storage = testRequest({ labels: label('dom_StorageDomain') });
    const explanation = explainPlacement(storage, hosts, { filters });
    expect(explanation.chosen?.hostName).toBe('boot');
    expect(explanation.hosts[0]!.filters.find((f) => f.filter === 'steHostCoverage')!.reason).toBe(
      'host "net" (ACM:example.client_v1:dom_NetworkDomain) does not cover STE type "ste_PersistentStorageA" of the VM (ACM:example.client_v1:dom_StorageDomain)',
    );
    const unknown = explainPlacement(testRequest({ labels: label('dom_Nope') }), hosts, { filters });
    expect(unknown.chosen).toBeNull();
    expect(unknown.hosts[0]!.filters.find((f) => f.filter === 'steHostCoverage')!.reason).toMatch(/has no VM label "dom_Nope"/);
  });

  it('keeps the wall across a sequence of placements (ledger): banking and fun never share a host', () => {
    const ledger = new ReservationLedger([testHost('h1'), testHost('h2'), testHost('h3')], { filters });
    const placed = new Map<string, string>();
    for (let i = 0; i < 30; i++) {
      const name = i % 2 === 0 ? 'dom_HomeBanking' : 'dom_Fun';
      try {
        placed.set(`vm${i}`, `${ledger.place(testRequest({ vmId: `vm${i}`, name: `vm${i}`, labels: label(name) })).hostName}:${name}`);
      } catch (error) {
        expect((error as DroverError).code).toBe('conflict');
      }
    }
    const byHost = new Map<string, Set<string>>();
    for (const value of placed.values()) {
      const [host, name] = value.split(':') as [string, string];
      byHost.set(host, (byHost.get(host) ?? new Set()).add(name));
    }
    for (const names of byHost.values()) expect(names.size).toBe(1);
    expect([...byHost.values()].map((s) => [...s][0]).sort()).toEqual(expect.arrayContaining(['dom_Fun', 'dom_HomeBanking']));
  });

  it('make evacuation and consolidation plans respect the wall', () => {
    const vm = (id: string, hostId: string, name: string) => ({ vmId: id, name: id, cpus: 1, memoryMiB: 128, hostId, labels: label(name) });
    const hostVm = (id: string, name: string) => ({ id, name: id, antiAffinityGroups: [], labels: label(name) });
    const hosts = [
      testHost('h1', { used: { cpus: 1, memoryMiB: 128 }, vms: [hostVm('fun', 'dom_Fun')] }),
      testHost('h2', { used: { cpus: 1, memoryMiB: 128 }, vms: [hostVm('bank', 'dom_HomeBanking')] }),
      testHost('h3', { capacity: { cpus: 1, memoryMiB: 128 }, used: { cpus: 1, memoryMiB: 128 }, vms: [hostVm('bank2', 'dom_HomeBanking')] }),
    ];
    const vms = [vm('fun', 'h1', 'dom_Fun'), vm('bank', 'h2', 'dom_HomeBanking'), vm('bank2', 'h3', 'dom_HomeBanking')];
    // Emptying h2: h3 is full, and h1 runs "fun": without the policy "bank" goes to h1, with it nowhere.
    const without = planEvacuation({ hosts, vms, hostId: 'h2' });
    expect(without.moves.map((m) => m.to)).toEqual(['h1']);
    const withPolicy = planEvacuation({ hosts, vms, hostId: 'h2', filters });
    expect(withPolicy.moves).toEqual([]);
    expect(withPolicy.cannotMove[0]!.reason).toMatch(/Chinese Wall|conflict set/);
    // Packing never puts banking and fun together.
    const packed = planConsolidation({ hosts, vms, filters });
    for (const move of packed.moves) {
      const moved = vms.find((v) => v.vmId === move.vmId)!;
      const there = vms.filter((v) => v.vmId !== moved.vmId && (packed.moves.find((m) => m.vmId === v.vmId)?.to ?? v.hostId) === move.to);
      for (const other of there) expect([moved.labels, other.labels].map((l) => Object.values(l)[0]).sort()).not.toEqual([`ACM:example.client_v1:dom_Fun`, `ACM:example.client_v1:dom_HomeBanking`].sort());
    }
  });
});

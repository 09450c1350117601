/* eslint-disable @typescript-eslint/no-explicit-any -- loosely typed JSON answers of the API, read field by field */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compilePolicy, importAcmXml, XEN_EXAMPLE_POLICY_XML, type CompiledPolicy } from '@drover/core';
import { tempDir, TestNetwork } from '@drover/agent/testing';
import type { RunningManager } from '../manager.js';
import { importTinyImage, joinSharedHosts, liveQemus, managerApi, startNetworkManager, until } from '../testing/multihost.js';
import { SECURITY_LABEL_KEY } from './policy.service.js';

/**
 * Xen's example sHype policy enforced with real VMs: three hosts, each an
 * agent in its own network namespace joined over TLS, sharing one pool
 * (memory-only live migrations), 256 MiB each, so about a dozen 64 MiB VMs
 * fit. The VMs boot an empty disk: QEMU runs, nothing inside needs to.
 */
const dataDir = tempDir('policy-mh');
const sharedDir = tempDir('policy-mh-shared');
let network: TestNetwork;
let manager: RunningManager;
let stateDirs = new Map<string, string>();
const P = 'example.client_v1';
const label = (name: string) => `ACM:${P}:${name}`;
const policy: CompiledPolicy = compilePolicy(importAcmXml(XEN_EXAMPLE_POLICY_XML));

const api = managerApi(() => manager);

async function createVm(name: string, securityLabel: string | undefined, extra: Record<string, unknown> = {}): Promise<void> {
  const created = await api('POST', '/api/v1/vms', { name, image: 'tiny', memoryMiB: 64, ...(securityLabel ? { securityLabel } : {}), ...extra });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
}

async function startVm(name: string): Promise<void> {
  const started = await api('POST', `/api/v1/vms/${name}/start?wait=true`, {});
  expect(started.body.state, JSON.stringify(started.body)).toBe('done');
}

async function vmsByName(): Promise<Map<string, any>> {
  const vms = await api('GET', '/api/v1/vms?limit=1000');
  return new Map(vms.body.items.map((vm: any) => [vm.name, vm]));
}

/** VM names with a live QEMU per host (by the host's state directory and `-name guest=NAME` in their command line). */
function qemusByHost(): Map<string, string[]> {
  const found = new Map<string, string[]>([...stateDirs.keys()].map((h) => [h, []]));
  for (const { cmdline } of liveQemus()) {
    const name = /guest=([^,\0]+)/.exec(cmdline)?.[1];
    for (const [host, dir] of stateDirs) if (name && cmdline.includes(dir)) found.get(host)!.push(name);
  }
  return found;
}

/** Pairs of VMs (by name) on one host whose labels conflict. */
function conflictsAmong(names: readonly string[], labelOf: (name: string) => string | undefined): string[] {
  const found: string[] = [];
  for (const a of names) {
    for (const b of names) {
      const la = labelOf(a);
      const lb = labelOf(b);
      if (a < b && la && lb && policy.conflicts(policy.vmLabel(la), policy.vmLabel(lb)).length > 0) found.push(`${a}+${b}`);
    }
  }
  return found;
}

/**
 * The manager's accounting read from its store — VMs holding a host, plus
 * starts, restores and incoming migrations (reservations) — and the QEMU
 * processes really running on each host: neither may ever hold two
 * conflicting VMs on one host.
 */
async function wallViolations(labels: Map<string, string | undefined>): Promise<string[]> {
  const store = manager.store;
  const violations: string[] = [];
  const hosts = (await store.hosts.list({ limit: 100 })).items;
  for (const host of hosts) {
    const counted = new Set<string>();
    const holding = await store.vms.list({ limit: 1000, filter: { hostId: host.id, state: ['running', 'paused', 'starting', 'stopping', 'saving', 'migrating'] } });
    for (const vm of holding.items) counted.add(vm.name);
    for (const r of await store.reservations.listByHost(host.id)) {
      const vm = await store.vms.tryGet(r.vmId);
      if (vm) counted.add(vm.name);
    }
    for (const pair of conflictsAmong([...counted], (n) => labels.get(n))) violations.push(`store: ${host.name}: ${pair}`);
  }
  for (const [host, names] of qemusByHost()) for (const pair of conflictsAmong(names, (n) => labels.get(n))) violations.push(`qemu: ${host}: ${pair}`);
  return violations;
}

beforeAll(async () => {
  network = await TestNetwork.create(3);
  manager = await startNetworkManager(network, dataDir);
  stateDirs = await joinSharedHosts(network, manager, api, sharedDir, 256);
  const imported = await importTinyImage(api, dataDir);
  expect(imported.state, JSON.stringify(imported)).toBe('done');
  const loaded = await api('PUT', '/api/v1/policy', { document: XEN_EXAMPLE_POLICY_XML });
  expect(loaded.status, JSON.stringify(loaded.body)).toBe(200);
}, 300_000);

async function forceOffAll(): Promise<void> {
  const vms = await api('GET', '/api/v1/vms?limit=1000').catch(() => ({ body: { items: [] } }));
  await Promise.all(
    (vms.body.items ?? []).filter((v: any) => ['running', 'paused', 'starting', 'migrating'].includes(v.state)).map((v: any) => api('POST', `/api/v1/vms/${v.id}/force-off?wait=true`, {}).catch(() => undefined)),
  );
}

afterAll(async () => {
  try {
    await forceOffAll();
  } finally {
    await manager?.close();
    await network?.destroy();
    for (const dir of [dataDir, sharedDir]) rmSync(dir, { recursive: true, force: true });
  }
});

describe("Xen's example policy with real VMs", () => {
  it('keeps dom_HomeBanking and dom_Fun apart: placement picks another host, migration onto the host is refused', async () => {
    // h2 is busier than h1 (two unlabelled VMs), h3 is out of the question for "fun": without the
    // policy, spreading would put "fun" on h1, beside "bank".
    await createVm('bank', label('dom_HomeBanking'), { hostInclude: ['h1'] });
    await startVm('bank');
    for (const name of ['plain1', 'plain2']) {
      await createVm(name, undefined, { hostInclude: ['h2'] });
      await startVm(name);
    }
    await createVm('fun', label('dom_Fun'), { hostExclude: ['h3'] });
    const explain = await api('GET', '/api/v1/policy/explain?vm=fun&host=h1');
    expect(explain.body.allowed).toBe(false);
    expect(explain.body.conflicts).toEqual([{ vm: 'bank', vmLabel: label('dom_HomeBanking'), type: 'cw_Distrusted', otherType: 'cw_Sensitive', set: 'Protection1' }]);
    expect(explain.body.filters.find((f: any) => f.filter === 'chineseWall').reason).toMatch(/runs VM "bank" .* conflict set "Protection1"/);
    await startVm('fun');
    let vms = await vmsByName();
    expect(vms.get('bank').hostName).toBe('h1');
    expect(vms.get('fun').hostName).toBe('h2');

    // Migration of "fun" onto h1 is refused before anything moves, naming the VM and the types.
    const migrate = await api('POST', '/api/v1/vms/fun/migrate', { to: 'h1' });
    expect(migrate.status).toBe(403);
    expect(migrate.body.error.code).toBe('policy_denied');
    expect(migrate.body.error.details.reason).toBe('chinese_wall');
    expect(migrate.body.error.message).toMatch(/host "h1" runs VM "bank" \(ACM:example\.client_v1:dom_HomeBanking\): its type "cw_Sensitive" and this VM's type "cw_Distrusted"/);
    // And the other way round.
    expect((await api('POST', '/api/v1/vms/bank/migrate', { to: 'h2' })).status).toBe(403);
    vms = await vmsByName();
    expect([vms.get('fun').state, vms.get('fun').hostName, vms.get('bank').hostName]).toEqual(['running', 'h2', 'h1']);

    // A paused VM still counts: a start pinned to its host is refused.
    expect((await api('POST', '/api/v1/vms/bank/pause?wait=true', {})).body.state).toBe('done');
    await createVm('fun2', label('dom_Fun'), { hostInclude: ['h1'] });
    const pinned = await api('POST', '/api/v1/vms/fun2/start', {});
    expect(pinned.status).toBe(403);
    expect(pinned.body.error.message).toMatch(/Chinese Wall/);
    expect((await api('POST', '/api/v1/vms/bank/resume?wait=true', {})).body.state).toBe('done');

    // A neutral VM (cw_Isolated) may join "bank"; then it moves next to "fun", live.
    await createVm('boinc', label('dom_BoincClient'), { hostInclude: ['h1'] });
    await startVm('boinc');
    const moved = await api('POST', '/api/v1/vms/boinc/migrate?wait=true', { to: 'h2' });
    expect(moved.body.state, JSON.stringify(moved.body)).toBe('done');
    expect((await vmsByName()).get('boinc').hostName).toBe('h2');
    const qemus = qemusByHost();
    expect(qemus.get('h1')).toEqual(['bank']);
    expect(qemus.get('h2')!.sort()).toEqual(['boinc', 'fun', 'plain1', 'plain2']);

    // Once "bank" stops, "fun" may move to h1.
    expect((await api('POST', '/api/v1/vms/bank/force-off?wait=true', {})).body.state).toBe('done');
    expect((await api('GET', '/api/v1/policy/explain?vm=fun&host=h1')).body.allowed).toBe(true);
    expect((await api('POST', '/api/v1/vms/fun/migrate?wait=true', { to: 'h1' })).body.state).toBe('done');
    // "bank" goes back to the host holding its disks, h1, where "fun" runs now: refused.
    const back = await api('POST', '/api/v1/vms/bank/start', {});
    expect(back.status).toBe(403);
    expect(back.body.error.message).toMatch(/host "h1" runs VM "fun"/);
    expect((await vmsByName()).get('bank').state).toBe('stopped');
    expect(await wallViolations(new Map([...(await vmsByName()).values()].map((vm: any) => [vm.name, vm.labels[SECURITY_LABEL_KEY]])))).toEqual([]);
  }, 600_000);

  it('refuses a policy that running VMs would violate, with the list of conflicts, and keeps the old one', async () => {
    const before = await api('GET', '/api/v1/policy');
    // "boinc" (cw_Isolated) joins "fun" (cw_Distrusted) on h1: allowed by Xen's example. A policy making
    // those two conflict is refused while both run there.
    const joined = await api('POST', '/api/v1/vms/boinc/migrate?wait=true', { to: 'h1' });
    expect(joined.body.state, JSON.stringify(joined.body)).toBe('done');
    const stricter = XEN_EXAMPLE_POLICY_XML.replace('</ConflictSets>', '<Conflict name="Protection2"><Type>cw_Isolated</Type><Type>cw_Distrusted</Type></Conflict></ConflictSets>');
    const validation = await api('POST', '/api/v1/policy/validate', { document: stricter });
    expect(validation.body.valid).toBe(false);
    const refused = await api('PUT', '/api/v1/policy', { document: stricter });
    expect(refused.status).toBe(409);
    expect(refused.body.error.details.reason).toBe('policy_violated');
    const violations = refused.body.error.details.violations;
    expect(violations.map((v: any) => [v.kind, [v.vm, v.otherVm].sort().join('+')])).toEqual(validation.body.violations.map((v: any) => [v.kind, [v.vm, v.otherVm].sort().join('+')]));
    expect(violations.some((v: any) => v.kind === 'chinese_wall' && [v.vm, v.otherVm].sort().join('+') === 'boinc+fun')).toBe(true);
    expect(violations[0].message).toMatch(/conflict set "Protection2"/);
    expect((await api('GET', '/api/v1/policy')).body).toEqual(before.body);
    // Once "boinc" stops, the stricter policy loads.
    expect((await api('POST', '/api/v1/vms/boinc/force-off?wait=true', {})).body.state).toBe('done');
    const loaded = await api('PUT', '/api/v1/policy', { document: stricter });
    expect(loaded.status, JSON.stringify(loaded.body)).toBe(200);
    // Back to Xen's example for the next test (nothing running violates it).
    expect((await api('PUT', '/api/v1/policy', { document: XEN_EXAMPLE_POLICY_XML })).status).toBe(200);
  }, 300_000);
});

describe('concurrency', () => {
  it('200 concurrent starts and migrations of conflicting 64 MiB VMs on 3 hosts: never two conflicting VMs counting on one host', async () => {
    await forceOffAll();
    const labelsByName = new Map<string, string | undefined>();
    for (const vm of (await vmsByName()).values()) labelsByName.set(vm.name, vm.labels[SECURITY_LABEL_KEY]);
    const kinds = ['dom_HomeBanking', 'dom_Fun', 'dom_HomeBanking', 'dom_Fun', 'dom_BoincClient'];
    const names = Array.from({ length: 30 }, (_, i) => `c${i}`);
    for (const [i, name] of names.entries()) {
      await createVm(name, label(kinds[i % kinds.length]!));
      labelsByName.set(name, label(kinds[i % kinds.length]!));
    }
    // A few run already, so that migrations have something to move.
    for (const name of ['c0', 'c1', 'c4']) await startVm(name);

    // The invariant, checked continuously while the storm runs.
    const seen: string[] = [];
    let checks = 0;
    let storming = true;
    const checker = (async () => {
      while (storming) {
        seen.push(...(await wallViolations(labelsByName)));
        checks++;
        await new Promise((r) => setTimeout(r, 50));
      }
    })();

    const hosts = ['h1', 'h2', 'h3'];
    let seed = 7;
    const random = (n: number) => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n;
    const requests = Array.from({ length: 200 }, (_, i) => {
      const name = names[random(names.length)]!;
      return i % 3 === 2 ? api('POST', `/api/v1/vms/${name}/migrate`, { to: hosts[random(3)] }) : api('POST', `/api/v1/vms/${name}/start`, {});
    });
    const answers = await Promise.all(requests);
    const accepted = answers.filter((a) => a.status === 202);
    // Every refusal is a clear one: the policy (403), capacity, state or busy (409), or a bad destination (the VM's own host: 409).
    expect(answers.filter((a) => ![202, 403, 409].includes(a.status)).map((a) => a.body)).toEqual([]);
    expect(answers.filter((a) => a.status === 403).every((a) => a.body.error.code === 'policy_denied')).toBe(true);
    expect(accepted.length).toBeGreaterThan(3);
    for (const answer of accepted) {
      await until(`operation ${answer.body.id}`, async () => {
        const op = await api('GET', `/api/v1/operations/${answer.body.id}`);
        return !['pending', 'running'].includes(op.body.state);
      }, 300_000);
    }
    storming = false;
    await checker;
    seen.push(...(await wallViolations(labelsByName)));
    expect(checks).toBeGreaterThan(3);
    expect(seen).toEqual([]);
    // It was a real contest: VMs of both conflicting labels ran, and the cluster filled up.
    const running = [...(await vmsByName()).values()].filter((vm: any) => vm.state === 'running');
    const runningLabels = new Set(running.map((vm: any) => vm.labels[SECURITY_LABEL_KEY]));
    expect(runningLabels.has(label('dom_HomeBanking')) && runningLabels.has(label('dom_Fun'))).toBe(true);
    expect(running.length).toBeGreaterThanOrEqual(6);
    expect(running.length).toBeLessThanOrEqual(12);
  }, 900_000);
});

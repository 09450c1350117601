import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { netnsExec, netnsTryExec, ScratchNamespaces, tempDir, TestNetwork } from '@drover/agent/testing';
import type { RunningManager } from '../manager.js';
import { closeNetworkTest, joinSharedHosts, managerApi, startNetworkManager, until } from '../testing/multihost.js';

/**
 * A VM's rules follow it through a live migration made by the manager: two
 * hosts (agents in namespaces, one shared pool), a `web` VM on a NAT network
 * guarded by a group, clients linked to both hosts. Before the migration the
 * allowed client reaches it through h1 and the other does not; after it, the
 * same holds through h2 (the manager pushed h2's state before the switchover),
 * and h1 has no tap or rule of the VM left.
 */
const dataDir = tempDir('net-mh');
const sharedDir = tempDir('net-mh-shared');
const spaces = new ScratchNamespaces();
let network: TestNetwork;
let manager: RunningManager;
let allowed: string;
let blocked: string;
const api = managerApi(() => manager);
const ns = (host: string) => network.hosts.find((h) => h.name === host)!.namespace;
const curl = (namespace: string) => netnsTryExec(namespace, 'curl', '-s', '-m', '4', 'http://10.235.10.20/health');

async function routeVia(host: 'h1' | 'h2'): Promise<void> {
  await netnsExec(allowed, 'ip', 'route', 'replace', '10.235.10.0/24', 'via', host === 'h1' ? '10.235.2.1' : '10.235.4.1');
  await netnsExec(blocked, 'ip', 'route', 'replace', '10.235.10.0/24', 'via', host === 'h1' ? '10.235.3.1' : '10.235.5.1');
}

beforeAll(async () => {
  network = await TestNetwork.create(2);
  manager = await startNetworkManager(network, dataDir);
  await joinSharedHosts(network, manager, api, sharedDir, 1024);
  allowed = await spaces.create('a');
  blocked = await spaces.create('b');
  await spaces.link(ns('h1'), 'ca', '10.235.2.1/24', allowed, 'e1', '10.235.2.2/24');
  await spaces.link(ns('h2'), 'ca', '10.235.4.1/24', allowed, 'e2', '10.235.4.2/24');
  await spaces.link(ns('h1'), 'cb', '10.235.3.1/24', blocked, 'e1', '10.235.3.2/24');
  await spaces.link(ns('h2'), 'cb', '10.235.5.1/24', blocked, 'e2', '10.235.5.2/24');
  await routeVia('h1');
}, 300_000);

afterAll(() => closeNetworkTest(manager, spaces, network, [dataDir, sharedDir]));

describe('rules follow a VM migrated by the manager', () => {
  let tap: string;

  it('guards the web VM on its first host', async () => {
    expect((await api('POST', '/api/v1/networks', { name: 'pub', kind: 'nat', subnet: '10.235.10.0/24', uplink: 'eth0' })).status).toBe(201);
    const rules = ['10.235.2.0/24', '10.235.4.0/24'].map((cidr) => ({ direction: 'ingress', protocol: 'tcp', ports: { from: 80, to: 80 }, cidr }));
    expect((await api('POST', '/api/v1/security-groups', { name: 'web', rules })).status).toBe(201);
    const created = await api('POST', '/api/v1/vms', { name: 'web-1', image: 'web', memoryMiB: 128, hostInclude: ['h1'], networks: [{ network: 'pub', securityGroups: ['web'], ip: '10.235.10.20' }] });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    tap = (await api('GET', '/api/v1/vms/web-1/networks')).body.items[0].tap;
    const started = await api('POST', '/api/v1/vms/web-1/start?wait=true', {});
    expect(started.body.state, JSON.stringify(started.body)).toBe('done');
    const ok = await until('the web server through h1', async () => {
      const answer = await curl(allowed);
      return answer.ok && answer;
    }, 240_000);
    expect(ok.stdout).toBe('ok\n');
    expect((await curl(blocked)).ok).toBe(false);
  }, 400_000);

  it('keeps the rules on the new host after a live migration, and removes them from the old one', async () => {
    const moved = await api('POST', '/api/v1/vms/web-1/migrate?wait=true', { to: 'h2' });
    expect(moved.body.state, JSON.stringify(moved.body)).toBe('done');
    expect(await netnsExec(ns('h2'), 'nft', 'list', 'table', 'bridge', 'drover')).toContain(`"${tap}"`);
    expect((await netnsTryExec(ns('h1'), 'ip', 'link', 'show', tap)).ok).toBe(false);
    expect(await netnsExec(ns('h1'), 'nft', 'list', 'ruleset')).not.toContain(tap);
    await routeVia('h2');
    const ok = await until('the web server through h2', async () => {
      const answer = await curl(allowed);
      return answer.ok && answer;
    }, 60_000);
    expect(ok.stdout).toBe('ok\n');
    expect((await curl(blocked)).ok).toBe(false);
    const explain = await api('GET', '/api/v1/vms/web-1/firewall');
    expect(explain.body.host).toBe('h2');
    expect(explain.body.ruleset.some((line: string) => line.includes(`"${tap}"`))).toBe(true);
  }, 300_000);
});

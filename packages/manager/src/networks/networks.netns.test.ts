import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { netnsExec, netnsTryExec, ScratchNamespaces, tempDir, TestNetwork } from '@drover/agent/testing';
import type { RunningManager } from '../manager.js';
import { closeNetworkTest, joinHost, managerApi, startNetworkManager, until, waitHostsOnline } from '../testing/multihost.js';

/**
 * Networks through the manager on real parts: a manager in this process, one
 * real agent in a network namespace (the host), two client namespaces linked
 * to it. A NAT network and a security group are made through the API; a `web`
 * appliance VM on it gets the manager's address by DHCP, is reachable from the
 * allowed client and not from the other; `fw explain` shows the rules; after
 * the VM is deleted its tap and rules are gone from the host.
 */
const dataDir = tempDir('net-mgr');
const spaces = new ScratchNamespaces();
let network: TestNetwork;
let manager: RunningManager;
let hostNs: string;
let allowed: string;
let blocked: string;
const api = managerApi(() => manager);

beforeAll(async () => {
  network = await TestNetwork.create(1);
  manager = await startNetworkManager(network, dataDir);
  const host = network.hosts[0]!;
  hostNs = host.namespace;
  await joinHost(network, manager, api, host, { capacity: { cpus: 2, memoryMiB: 1024 }, config: { stopTimeoutMs: 2_000 } });
  await waitHostsOnline(api, 1, 120_000);
  allowed = await spaces.create('a');
  blocked = await spaces.create('b');
  await spaces.link(hostNs, 'ca', '10.234.2.1/24', allowed, 'eth0', '10.234.2.2/24');
  await spaces.link(hostNs, 'cb', '10.234.3.1/24', blocked, 'eth0', '10.234.3.2/24');
  await netnsExec(allowed, 'ip', 'route', 'add', 'default', 'via', '10.234.2.1');
  await netnsExec(blocked, 'ip', 'route', 'add', 'default', 'via', '10.234.3.1');
}, 300_000);

afterAll(() => closeNetworkTest(manager, spaces, network, [dataDir]));

const curl = (namespace: string, url: string) => netnsTryExec(namespace, 'curl', '-s', '-m', '4', url);

describe('a VM on a Drover network, through the manager', () => {
  let tap: string;

  it('creates a NAT network and a security group, then a web VM on them that gets its address by DHCP', async () => {
    expect((await api('POST', '/api/v1/networks', { name: 'pub', kind: 'nat', subnet: '10.234.10.0/24', uplink: 'eth0' })).status).toBe(201);
    const group = await api('POST', '/api/v1/security-groups', { name: 'web', rules: [{ direction: 'ingress', protocol: 'tcp', ports: { from: 80, to: 80 }, cidr: '10.234.2.0/24', description: 'clients' }] });
    expect(group.status).toBe(201);
    const created = await api('POST', '/api/v1/vms', { name: 'web-1', image: 'web', memoryMiB: 128, networks: [{ network: 'pub', securityGroups: ['web'], ip: '10.234.10.20' }] });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const nics = await api('GET', '/api/v1/vms/web-1/networks');
    tap = nics.body.items[0].tap;
    const started = await api('POST', '/api/v1/vms/web-1/start?wait=true', {});
    expect(started.body.state, JSON.stringify(started.body)).toBe('done');
    // The tap and its rules were on the host before QEMU opened it; the guest got the manager's address from dnsmasq.
    expect(await netnsExec(hostNs, 'ip', 'link', 'show', tap)).toContain(tap);
    const log = await until('the DHCP lease on the console', async () => {
      const text = await fetch(`${manager.url}/api/v1/vms/web-1/console/serial/log`, { headers: { authorization: `Bearer ${manager.adminToken}` } }).then((r) => r.text());
      return /DROVER-READY/.test(text) && text;
    }, 240_000);
    expect(log).toContain('DROVER-INFO eth0 dhcp 10.234.10.20/24');
  }, 400_000);

  it('serves the web appliance to the allowed client only', async () => {
    const ok = await until('the web server from the allowed client', async () => {
      const answer = await curl(allowed, 'http://10.234.10.20/health');
      return answer.ok && answer;
    }, 60_000);
    expect(ok.stdout).toBe('ok\n');
    expect((await curl(blocked, 'http://10.234.10.20/health')).ok).toBe(false);
  });

  it('explains the effective rules, as loaded on the host', async () => {
    const explain = await api('GET', '/api/v1/vms/web-1/firewall');
    expect(explain.status).toBe(200);
    expect(explain.body.host).toBe('h1');
    expect(explain.body.nics[0]).toMatchObject({ network: 'pub', ip: '10.234.10.20', tap, ingressDefault: 'deny (security groups attached)' });
    expect(explain.body.text).toContain('allow tcp port 80 from 10.234.2.0/24  [web] clients');
    expect(explain.body.ruleset.some((line: string) => line.includes(`"${tap}"`))).toBe(true);
    expect(explain.body.ruleset.some((line: string) => line.includes('10.234.10.20'))).toBe(true);
  });

  it('follows a rule change at once: removing the rule closes the port', async () => {
    expect((await api('DELETE', '/api/v1/security-groups/web/rules/1')).status).toBe(200);
    expect((await curl(allowed, 'http://10.234.10.20/health')).ok).toBe(false);
    expect((await api('POST', '/api/v1/security-groups/web/rules', { direction: 'ingress', protocol: 'tcp', ports: { from: 80, to: 80 }, cidr: '10.234.2.0/24' })).status).toBe(200);
    expect((await curl(allowed, 'http://10.234.10.20/health')).ok).toBe(true);
  });

  it('removes the tap and the rules from the host when the VM is deleted', async () => {
    expect((await api('POST', '/api/v1/vms/web-1/force-off?wait=true', {})).body.state).toBe('done');
    expect((await netnsTryExec(hostNs, 'ip', 'link', 'show', tap)).ok).toBe(false);
    expect((await api('DELETE', '/api/v1/vms/web-1?wait=true')).body.state).toBe('done');
    expect((await netnsTryExec(hostNs, 'ip', 'link', 'show', tap)).ok).toBe(false);
    expect(await netnsExec(hostNs, 'nft', 'list', 'ruleset')).not.toContain(tap);
    expect(await netnsExec(hostNs, 'nft', 'list', 'ruleset')).not.toContain('10.234.10.20');
    expect((await api('DELETE', '/api/v1/networks/pub')).status).toBe(204);
  });
});

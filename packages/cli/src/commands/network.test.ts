import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeManager, runCli, type RunOptions } from '../fake-manager.js';
import { collectNetwork, parseRule } from './network.js';

let manager: FakeManager;
const configHome = mkdtempSync(path.join(os.tmpdir(), 'drover-cli-net-'));
const group = { id: 'g1', name: 'web', description: '', rules: [{ direction: 'ingress', protocol: 'tcp', ports: { from: 80, to: 80 }, cidr: '10.0.0.0/8' }], owner: 'admin', lab: null, rev: 2, createdAt: 't', updatedAt: 't' };

beforeAll(async () => {
  manager = await new FakeManager().start();
  manager.on('POST', /^\/api\/v1\/networks$/, async (request) => {
    const body = request.body as { subnet: string };
    if (body.subnet === '10.0.0.0/8') return { status: 409, body: { error: { code: 'conflict', message: 'Subnet "10.0.0.0/8" of network "x" overlaps "10.42.0.0/24" of network "pub"', details: {} } } };
    return { status: 201, body: { ...body, gateway: '10.42.0.1', nics: 0, hosts: [] } };
  });
  manager.on('GET', /^\/api\/v1\/networks$/, async () => ({ status: 200, body: { items: [{ name: 'pub', kind: 'nat', subnet: '10.42.0.0/24', gateway: '10.42.0.1', nics: 2, hosts: ['h1'], lab: null }] } }));
  manager.on('POST', /^\/api\/v1\/security-groups$/, async (request) => ({ status: 201, body: { ...group, ...(request.body as object) } }));
  manager.on('POST', /^\/api\/v1\/security-groups\/web\/rules$/, async () => ({ status: 200, body: group }));
  manager.on('DELETE', /^\/api\/v1\/security-groups\/web\/rules\/2$/, async () => ({ status: 200, body: group }));
  manager.on('GET', /^\/api\/v1\/vms\/web1\/firewall$/, async () => ({ status: 200, body: { text: 'VM web1: running on h1\neth0 ...\n' } }));
  manager.on('POST', /^\/api\/v1\/vms$/, async (request) => ({ status: 201, body: { id: 'v1', name: 'web1', state: 'defined', ...(request.body as object) } }));
});
afterAll(async () => {
  await manager.close();
  rmSync(configHome, { recursive: true, force: true });
});

function drover(argv: string[], options: RunOptions = {}) {
  return runCli(argv, { ...options, env: { DROVER_URL: manager.url, DROVER_TOKEN: manager.token, XDG_CONFIG_HOME: configHome, ...options.env } });
}

describe('drover network, sg, fw and vm create --network', () => {
  it('reads --network and rules', () => {
    expect(collectNetwork('pub:10.42.0.9,sg=web+admin,mac=52:54:00:AA:00:01')).toEqual([{ network: 'pub', ip: '10.42.0.9', securityGroups: ['web', 'admin'], mac: '52:54:00:aa:00:01' }]);
    expect(() => collectNetwork('Pub;x')).toThrow(/NAME\[:IP\]/);
    expect(() => collectNetwork('pub,color=red')).toThrow(/Unknown NIC setting/);
    expect(parseRule(['ingress', 'tcp', '8000-8100', 'from', 'group:admin'])).toEqual({ direction: 'ingress', protocol: 'tcp', ports: { from: 8000, to: 8100 }, group: 'admin' });
    expect(parseRule(['ingress', 'icmp', 'type=8', 'from', '10.0.0.0/8'])).toEqual({ direction: 'ingress', protocol: 'icmp', icmpType: 8, cidr: '10.0.0.0/8' });
    expect(() => parseRule(['inward', 'tcp'])).toThrow(/direction/);
  });

  it('creates and lists networks, printing the manager\'s refusal', async () => {
    const ok = await drover(['network', 'create', 'pub', '--kind', 'nat', '--subnet', '10.42.0.0/24', '--uplink', 'eth0', '--label', 'zone=dmz']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(manager.requestsTo('POST', '/api/v1/networks').at(-1)!.body).toEqual({ name: 'pub', kind: 'nat', subnet: '10.42.0.0/24', uplink: 'eth0', labels: { zone: 'dmz' } });
    expect(ok.stdout).toBe('Created network pub (nat 10.42.0.0/24, gateway 10.42.0.1).\n');
    const refused = await drover(['network', 'create', 'x', '--kind', 'nat', '--subnet', '10.0.0.0/8']);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/overlaps "10.42.0.0\/24"/);
    const list = await drover(['network', 'list']);
    expect(list.stdout).toMatch(/pub\s+nat\s+10.42.0.0\/24\s+10.42.0.1\s+2\s+h1/);
  });

  it('creates groups with rules, adds and removes rules, explains a VM', async () => {
    const created = await drover(['sg', 'create', 'web', '--rule', 'ingress tcp 80 from 10.0.0.0/8']);
    expect(created.code, created.stderr).toBe(0);
    expect(manager.requestsTo('POST', '/api/v1/security-groups').at(-1)!.body).toEqual({ name: 'web', rules: [{ direction: 'ingress', protocol: 'tcp', ports: { from: 80, to: 80 }, cidr: '10.0.0.0/8' }] });
    const added = await drover(['sg', 'rule-add', 'web', 'ingress', 'tcp', '443', 'from', 'group:admin']);
    expect(added.code, added.stderr).toBe(0);
    expect(manager.requestsTo('POST', '/api/v1/security-groups/web/rules').at(-1)!.body).toEqual({ direction: 'ingress', protocol: 'tcp', ports: { from: 443, to: 443 }, group: 'admin' });
    expect(added.stdout).toContain('1. ingress tcp 80 from 10.0.0.0/8');
    expect((await drover(['sg', 'rule-remove', 'web', '2'])).code).toBe(0);
    expect((await drover(['sg', 'rule-remove', 'web', 'two'])).code).not.toBe(0);
    expect((await drover(['fw', 'explain', 'web1'])).stdout).toBe('VM web1: running on h1\neth0 ...\n');
  });

  it('sends NICs of vm create --network', async () => {
    const result = await drover(['vm', 'create', 'web1', '--image', 'web', '--network', 'pub,sg=web', '--network', 'lab:10.43.0.10']);
    expect(result.code, result.stderr).toBe(0);
    expect(manager.requestsTo('POST', '/api/v1/vms').at(-1)!.body).toMatchObject({ networks: [{ network: 'pub', securityGroups: ['web'] }, { network: 'lab', ip: '10.43.0.10' }] });
  });

  it('has help for every command', async () => {
    for (const argv of [['network', '--help'], ['sg', '--help'], ['fw', 'explain', '--help'], ['sg', 'rule-add', '--help']]) {
      const help = await drover(argv);
      expect(help.stdout).toMatch(/Usage: drover/);
    }
    expect((await drover(['vm', 'create', '--help'])).stdout).toContain('--network <nic>');
  });
});

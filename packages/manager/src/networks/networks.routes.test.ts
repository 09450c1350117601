import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rejectionOf } from '@drover/core';
import { startTestCluster, type TestCluster } from '../testing/cluster.js';

/**
 * The networks API on a real manager with one real agent (no VM runs here;
 * guests on networks are in networks.netns.test.ts): CRUD, IPAM, versioned
 * writes, and every kind of bad input refused with a stable code and nothing
 * stored.
 */
let cluster: TestCluster;
type ErrorAnswer = { error: { code: string; message: string; details: Record<string, unknown> } };
type Nic = { index: number; network: string; ip: string; mac: string; tap: string; securityGroups: string[]; rev: number };

beforeAll(async () => {
  cluster = await startTestCluster({ hostName: 'nh1' });
});
afterAll(async () => {
  await cluster?.close();
});

const names = async (route: string) => (await cluster.api<{ items: Array<{ name: string }> }>('GET', route)).body.items.map((i) => i.name).sort();

describe('networks API', () => {
  it('creates networks of each kind and refuses bad ones with clear errors, storing nothing', async () => {
    const pub = await cluster.api<{ name: string; gateway: string; vni: number; rev: number }>('POST', '/api/v1/networks', { name: 'pub', kind: 'nat', subnet: '10.90.1.0/24', uplink: 'eth0', labels: { zone: 'dmz' } });
    expect(pub.status).toBe(201);
    expect(pub.body).toMatchObject({ name: 'pub', gateway: '10.90.1.1', rev: 1 });
    const lab = await cluster.api<{ vni: number }>('POST', '/api/v1/networks', { name: 'lab', kind: 'isolated', subnet: '10.90.2.0/24' });
    expect(lab.status).toBe(201);
    expect(lab.body.vni).toBe(pub.body.vni + 1);
    expect((await cluster.api('POST', '/api/v1/networks', { name: 'office', kind: 'bridged', subnet: '10.90.3.0/24', uplink: 'eth1', mtu: 1400 })).status).toBe(201);

    const bad: Array<[unknown, number, string, RegExp]> = [
      [{ name: 'over', kind: 'nat', subnet: '10.90.1.128/25' }, 409, 'conflict', /overlaps "10.90.1.0\/24" of network "pub"/],
      [{ name: 'wide', kind: 'isolated', subnet: '10.0.0.0/8' }, 409, 'conflict', /overlaps/],
      [{ name: 'hostbits', kind: 'isolated', subnet: '10.91.0.1/24' }, 400, 'invalid', /host bits are set/],
      [{ name: 'gw', kind: 'isolated', subnet: '10.91.1.0/24', gateway: '10.92.0.1' }, 400, 'invalid', /not a host address/],
      [{ name: 'nouplink', kind: 'bridged', subnet: '10.91.2.0/24' }, 400, 'invalid', /bridged but has no uplink/],
      [{ name: 'isoup', kind: 'isolated', subnet: '10.91.3.0/24', uplink: 'eth0' }, 400, 'invalid', /isolated and cannot have an uplink/],
      [{ name: 'x"; flush ruleset; "', kind: 'isolated', subnet: '10.91.4.0/24' }, 400, 'invalid', /name/],
      [{ name: 'Upper', kind: 'isolated', subnet: '10.91.5.0/24' }, 400, 'invalid', /name/],
      [{ name: 'up', kind: 'nat', subnet: '10.91.6.0/24', uplink: 'eth0;reboot' }, 400, 'invalid', /uplink/],
      [{ name: 'pub', kind: 'nat', subnet: '10.91.7.0/24' }, 409, 'conflict', /already exists/],
    ];
    for (const [body, status, code, message] of bad) {
      const answer = await cluster.api<ErrorAnswer>('POST', '/api/v1/networks', body);
      expect({ body, status: answer.status, code: answer.body.error?.code }).toEqual({ body, status, code });
      expect(answer.body.error.message).toMatch(message);
    }
    expect(await names('/api/v1/networks')).toEqual(['lab', 'office', 'pub']);
    // The service (what labs call) refuses an injected name too.
    expect((await rejectionOf(cluster.manager.networks.createNetwork({ name: 'a b', kind: 'isolated', subnet: '10.93.0.0/24' }, 'admin'))).code).toBe('invalid');
  });

  it('versions writes with If-Match', async () => {
    const stale = await cluster.api<ErrorAnswer>('PATCH', '/api/v1/networks/office', { mtu: 1300 }, { 'if-match': '"7"' });
    expect(stale.status).toBe(412);
    const edited = await cluster.api<{ mtu: number; rev: number }>('PATCH', '/api/v1/networks/office', { mtu: 1300 }, { 'if-match': '1' });
    expect(edited.body).toMatchObject({ mtu: 1300, rev: 2 });
    expect((await cluster.api('DELETE', '/api/v1/networks/office', undefined, { 'if-match': '1' })).status).toBe(412);
    expect((await cluster.api('DELETE', '/api/v1/networks/office', undefined, { 'if-match': '2' })).status).toBe(204);
  });

  it('creates security groups and refuses impossible rules, self-references, unknown groups and injected names', async () => {
    const web = await cluster.api<{ rules: unknown[]; rev: number }>('POST', '/api/v1/security-groups', {
      name: 'web',
      rules: [{ direction: 'ingress', protocol: 'tcp', ports: { from: 80, to: 80 }, cidr: '10.90.9.0/24' }, { direction: 'ingress', protocol: 'icmp', icmpType: 8 }],
    });
    expect(web.status).toBe(201);
    expect((await cluster.api('POST', '/api/v1/security-groups', { name: 'admin' })).status).toBe(201);
    const bad: Array<[unknown, string, RegExp]> = [
      [{ name: 'g1', rules: [{ direction: 'ingress', protocol: 'tcp', ports: { from: 90, to: 80 } }] }, 'invalid', /start is after the end/],
      [{ name: 'g2', rules: [{ direction: 'ingress', protocol: 'icmp', ports: { from: 1, to: 2 } }] }, 'invalid', /ports need protocol tcp or udp/],
      [{ name: 'g3', rules: [{ direction: 'ingress', protocol: 'tcp', icmpType: 3 }] }, 'invalid', /ICMP type needs protocol icmp/],
      [{ name: 'g4', rules: [{ direction: 'ingress', protocol: 'tcp', group: 'g4' }] }, 'invalid', /cannot refer to itself/],
      [{ name: 'g5', rules: [{ direction: 'ingress', protocol: 'tcp', group: 'nobody' }] }, 'invalid', /"nobody" does not exist/],
      [{ name: 'g6', rules: [{ direction: 'ingress', protocol: 'tcp', cidr: '10.0.0.0/8', group: 'web' }] }, 'invalid', /not both/],
      [{ name: 'g7', rules: [{ direction: 'ingress', protocol: 'tcp', cidr: '10.0.0.1/8' }] }, 'invalid', /host bits/],
      [{ name: 'g8', rules: [{ direction: 'ingress', protocol: 'tcp', ports: { from: 0, to: 70000 } }] }, 'invalid', /ports/],
      [{ name: 'web}; chain x {', rules: [] }, 'invalid', /name/],
      [{ name: 'web', rules: [] }, 'conflict', /already exists/],
    ];
    for (const [body, code, message] of bad) {
      const answer = await cluster.api<ErrorAnswer>('POST', '/api/v1/security-groups', body);
      expect({ body, code: answer.body.error?.code }).toEqual({ body, code });
      expect(answer.body.error.message).toMatch(message);
    }
    expect(await names('/api/v1/security-groups')).toEqual(['admin', 'web']);

    // Rules: add, remove, replace; each versioned and checked whole.
    const added = await cluster.api<{ rules: Array<{ group?: string }>; rev: number }>('POST', '/api/v1/security-groups/web/rules', { direction: 'ingress', protocol: 'tcp', ports: { from: 8000, to: 8100 }, group: 'admin' }, { 'if-match': '1' });
    expect(added.status).toBe(200);
    expect(added.body).toMatchObject({ rev: 2 });
    expect(added.body.rules).toHaveLength(3);
    expect((await cluster.api('POST', '/api/v1/security-groups/web/rules', { direction: 'ingress', protocol: 'tcp' }, { 'if-match': '1' })).status).toBe(412);
    const self = await cluster.api<ErrorAnswer>('POST', '/api/v1/security-groups/web/rules', { direction: 'ingress', protocol: 'tcp', group: 'web' });
    expect(self.body.error.code).toBe('invalid');
    expect((await cluster.api<{ rules: unknown[] }>('GET', '/api/v1/security-groups/web')).body.rules).toHaveLength(3);
    expect((await cluster.api<ErrorAnswer>('DELETE', '/api/v1/security-groups/web/rules/9')).status).toBe(404);
    // admin is referred to by web's rule: cannot go.
    const inUse = await cluster.api<ErrorAnswer>('DELETE', '/api/v1/security-groups/admin');
    expect(inUse.status).toBe(409);
    expect(inUse.body.error.message).toMatch(/rules of "web" refer to it/);
    expect((await cluster.api<{ rules: unknown[] }>('DELETE', '/api/v1/security-groups/web/rules/3')).body.rules).toHaveLength(2);
  });

  it('refuses bad host rules and keeps good ones', async () => {
    expect((await cluster.api<ErrorAnswer>('POST', '/api/v1/firewall/host-rules', { protocol: 'icmp', ports: { from: 22, to: 22 }, action: 'accept' })).body.error.code).toBe('invalid');
    expect((await cluster.api<ErrorAnswer>('POST', '/api/v1/firewall/host-rules', { protocol: 'tcp', ports: { from: 22, to: 22 }, network: 'nowhere', action: 'accept' })).body.error.code).toBe('invalid');
    const rule = await cluster.api<{ id: string; network: string }>('POST', '/api/v1/firewall/host-rules', { protocol: 'tcp', ports: { from: 22, to: 22 }, network: 'pub', cidr: '10.90.1.0/28', action: 'accept' });
    expect(rule.status).toBe(201);
    expect(rule.body.network).toBe('pub');
    expect((await cluster.api<{ items: unknown[] }>('GET', '/api/v1/firewall/host-rules')).body.items).toHaveLength(1);
    expect((await cluster.api('DELETE', `/api/v1/firewall/host-rules/${rule.body.id}`)).status).toBe(204);
  });

  it('gives a VM NICs with addresses and MACs by IPAM, and refuses bad NIC requests leaving no VM behind', async () => {
    const one = await cluster.api<{ id: string }>('POST', '/api/v1/vms', { name: 'web-1', image: 'web', memoryMiB: 96, networks: [{ network: 'pub', securityGroups: ['web'] }, { network: 'lab' }] });
    expect(one.status).toBe(201);
    const nics = (await cluster.api<{ items: Nic[] }>('GET', '/api/v1/vms/web-1/networks')).body.items;
    expect(nics.map((n) => [n.index, n.network, n.ip, n.securityGroups])).toEqual([[0, 'pub', '10.90.1.2', ['web']], [1, 'lab', '10.90.2.2', []]]);
    expect(nics[0]!.mac).toMatch(/^52:54:00(:[0-9a-f]{2}){3}$/);
    expect(nics[0]!.mac).not.toBe(nics[1]!.mac);
    expect(nics[0]!.tap).toMatch(/^dt[0-9a-f]{10}0$/);
    const two = await cluster.api('POST', '/api/v1/vms', { name: 'web-2', image: 'web', memoryMiB: 96, networks: [{ network: 'pub', ip: '10.90.1.50', mac: '52:54:00:aa:bb:cc' }] });
    expect(two.status).toBe(201);
    const three = await cluster.api('POST', '/api/v1/vms', { name: 'web-3', image: 'web', memoryMiB: 96, networks: [{ network: 'pub' }] });
    expect(three.status).toBe(201);
    expect((await cluster.api<{ items: Nic[] }>('GET', '/api/v1/vms/web-3/networks')).body.items[0]!.ip).toBe('10.90.1.3');

    const bad: Array<[unknown, number, string, RegExp]> = [
      [{ network: 'nowhere' }, 400, 'invalid', /No network "nowhere"/],
      [{ network: 'pub', securityGroups: ['nobody'] }, 400, 'invalid', /No security group "nobody"/],
      [{ network: 'pub', ip: '10.90.2.9' }, 400, 'invalid', /not a host address of subnet "10.90.1.0\/24"/],
      [{ network: 'pub', ip: '10.90.1.255' }, 400, 'invalid', /not a host address/],
      [{ network: 'pub', ip: '10.90.1.1' }, 400, 'invalid', /gateway/],
      [{ network: 'pub', ip: '10.90.1.50' }, 409, 'conflict', /already in use/],
      [{ network: 'pub', mac: '52:54:00:aa:bb:cc' }, 409, 'conflict', /already in use/],
      [{ network: 'pub', mac: '53:54:00:aa:bb:cd' }, 400, 'invalid', /multicast/],
    ];
    for (const [nic, status, code, message] of bad) {
      const answer = await cluster.api<ErrorAnswer>('POST', '/api/v1/vms', { name: 'bad-vm', image: 'web', memoryMiB: 96, networks: [{ network: 'lab' }, nic] });
      expect({ nic, status: answer.status, code: answer.body.error?.code }).toEqual({ nic, status, code });
      expect(answer.body.error.message).toMatch(message);
      expect((await cluster.api('GET', '/api/v1/vms/bad-vm')).status).toBe(404);
    }
    const badName = await cluster.api<ErrorAnswer>('POST', '/api/v1/vms', { name: 'Bad_Name', image: 'web', memoryMiB: 96, networks: [{ network: 'lab' }] });
    expect(badName.status).toBe(400);
    expect(badName.body.error.message).toMatch(/cannot have NICs on networks/);
    // Nothing of the refused VMs was kept: lab still has web-1's address only.
    expect((await cluster.api<{ items: Array<{ name: string; nics: number }> }>('GET', '/api/v1/networks')).body.items.find((n) => n.name === 'lab')!.nics).toBe(1);
  });

  it('attaches and detaches groups, explains the effective rules, and refuses deleting what is in use', async () => {
    const nic = (await cluster.api<{ items: Nic[] }>('GET', '/api/v1/vms/web-2/networks')).body.items[0]!;
    expect((await cluster.api<ErrorAnswer>('PUT', '/api/v1/vms/web-2/networks/0/security-groups', { securityGroups: ['nobody'] })).body.error.code).toBe('invalid');
    expect((await cluster.api('PUT', '/api/v1/vms/web-2/networks/0/security-groups', { securityGroups: ['web'] }, { 'if-match': String(nic.rev + 1) })).status).toBe(412);
    const attached = await cluster.api<Nic>('PUT', '/api/v1/vms/web-2/networks/0/security-groups', { securityGroups: ['web', 'admin'] }, { 'if-match': String(nic.rev) });
    expect(attached.body.securityGroups).toEqual(['web', 'admin']);
    expect((await cluster.api<ErrorAnswer>('PUT', '/api/v1/vms/web-2/networks/5/security-groups', { securityGroups: [] })).status).toBe(404);

    const explain = await cluster.api<{ nics: Array<{ ingressDefault: string; ingress: Array<{ peer: string; ports?: string }> }>; text: string }>('GET', '/api/v1/vms/web-1/firewall');
    expect(explain.status).toBe(200);
    expect(explain.body.nics[0]!.ingressDefault).toMatch(/^deny/);
    expect(explain.body.nics[0]!.ingress).toEqual([
      expect.objectContaining({ protocol: 'tcp', ports: '80', peer: '10.90.9.0/24' }),
      expect.objectContaining({ protocol: 'icmp', icmpType: 8, peer: 'anywhere' }),
    ]);
    expect(explain.body.nics[1]!.ingressDefault).toBe('deny (isolated network)');
    expect(explain.body.text).toContain('allow tcp port 80 from 10.90.9.0/24  [web]');

    const inUse = await cluster.api<ErrorAnswer>('DELETE', '/api/v1/networks/pub');
    expect(inUse.status).toBe(409);
    expect(inUse.body.error.message).toMatch(/in use by VM\(s\) "web-1", "web-2", "web-3"/);
    expect((await cluster.api<ErrorAnswer>('DELETE', '/api/v1/security-groups/web')).status).toBe(409);

    // Deleting the VMs frees their addresses; then the network can go.
    for (const vm of ['web-1', 'web-2', 'web-3']) {
      const op = await cluster.api<{ state: string }>('DELETE', `/api/v1/vms/${vm}?wait=true`);
      expect(op.body.state).toBe('done');
    }
    expect((await cluster.api('DELETE', '/api/v1/networks/pub')).status).toBe(204);
    expect(await names('/api/v1/networks')).toEqual(['lab']);
  });
});

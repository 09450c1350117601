/**
 * One network spanning two hosts (namespaces joined by an underlay veth) over
 * VXLAN: guests on both hosts talk, guests get MTU 1450 by DHCP, a security
 * group referring to another group holds across hosts, and after a live
 * migration of the web guest the rules hold on the new host (prepared there
 * before the switchover) and are gone from the old one.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QmpClient, type MigrationInfo } from '@drover/qemu';
import type { HostNetworkState, NetworkSpec, NicBinding } from './firewall-model.js';
import { HostNetworks } from './host-network.js';
import { exec, ScratchNamespaces } from './testing/scratch-netns.js';
import { TapGuest } from './testing/tap-guest.js';

const spaces = new ScratchNamespaces();
const workDir = mkdtempSync(path.join(tmpdir(), 'drover-vxlan-'));
const guests: TapGuest[] = [];
const hostNets: HostNetworks[] = [];
let h1: string;
let h2: string;
let net1: HostNetworks;
let net2: HostNetworks;
let web: TapGuest;
let cliOk: TapGuest;
let cliNo: TapGuest;

const span = (local: string, remote: string, hostAddress?: string): NetworkSpec => ({
  name: 'span', kind: 'isolated', subnet: '10.232.5.0/24', gateway: '10.232.5.1', hostAddress, bridge: 'drbr-span',
  vxlan: { vni: 4242, local, remotes: [remote], device: 'dvx4242', underlay: 'ul0' },
});
const groups: HostNetworkState['groups'] = [
  { name: 'web', rules: [{ direction: 'ingress', protocol: 'tcp', ports: { from: 80, to: 80 }, group: 'client' }] },
  { name: 'client', rules: [] },
];
const webNic: NicBinding = { vm: 'web-a', nic: 'eth0', network: 'span', tap: 'dtweba', mac: '52:54:00:e8:00:10', ip: '10.232.5.10', groups: ['web'] };
const okNic: NicBinding = { vm: 'cli-ok', nic: 'eth0', network: 'span', tap: 'dtcliok', mac: '52:54:00:e8:00:20', ip: '10.232.5.20', groups: ['client'] };
const noNic: NicBinding = { vm: 'cli-no', nic: 'eth0', network: 'span', tap: 'dtclino', mac: '52:54:00:e8:00:30', ip: '10.232.5.30', groups: [] };
const h1State = (nics: NicBinding[]): HostNetworkState => ({ networks: [span('10.232.0.11', '10.232.0.12')], groups, nics, hostRules: [], groupMembers: { client: [okNic.ip] } });
const h2State = (nics: NicBinding[]): HostNetworkState => ({ networks: [span('10.232.0.12', '10.232.0.11', '10.232.5.2')], groups, nics, hostRules: [] });

async function boot(namespace: string, nic: NicBinding): Promise<TapGuest> {
  const guest = await TapGuest.start({ name: nic.vm, namespace, workDir, tap: nic.tap, mac: nic.mac });
  guests.push(guest);
  spaces.track(guest.pid);
  return guest;
}

beforeAll(async () => {
  h1 = await spaces.create('h1');
  h2 = await spaces.create('h2');
  await spaces.link(h1, 'ul0', '10.232.0.11/24', h2, 'ul0', '10.232.0.12/24');
  net1 = new HostNetworks({ stateDir: path.join(workDir, 'h1'), namespace: h1 });
  net2 = new HostNetworks({ stateDir: path.join(workDir, 'h2'), namespace: h2 });
  hostNets.push(net1, net2);
  await net1.apply(h1State([webNic]));
  await net2.apply(h2State([okNic, noNic]));
  for (const n of hostNets) for (const pid of Object.values(n.dnsmasqPids())) spaces.track(pid);
  web = await boot(h1, webNic);
  cliOk = await boot(h2, okNic);
  cliNo = await boot(h2, noNic);
  await Promise.all(guests.map((g) => g.ready()));
}, 600_000);

afterAll(async () => {
  for (const guest of guests) guest.kill();
  for (const n of hostNets) await n.destroy().catch(() => undefined);
  await spaces.destroy();
  rmSync(workDir, { recursive: true, force: true });
});

describe('a network spanning two hosts over VXLAN', () => {
  it('gives guests their lease with MTU 1450 by DHCP', async () => {
    expect((await cliOk.sh('cat /run/drover/dhcp-eth0 /sys/class/net/eth0/mtu')).out.trim()).toBe('10.232.5.20/24\n1450');
    expect((await web.sh('cat /sys/class/net/eth0/mtu')).out.trim()).toBe('1450');
  });

  it('lets a member of the allowed group on the other host reach the web guest, and no one else', async () => {
    expect(await cliOk.fetch('http://10.232.5.10/health')).toEqual({ ok: true, body: 'ok' });
    expect((await cliNo.fetch('http://10.232.5.10/health')).ok).toBe(false);
  });

  it('keeps the rules on the new host after a live migration, and removes them from the old one', async () => {
    // Prepare the destination first: tap, binding and rules exist before the switchover.
    await net2.apply(h2State([okNic, noNic, webNic]));
    const destination = await TapGuest.start({
      name: 'web-a', fileTag: 'web-a-dst', namespace: h2, workDir, tap: webNic.tap, mac: webNic.mac, disk: web.disk, incoming: 'tcp:10.232.0.12:4444',
    });
    guests.push(destination);
    spaces.track(destination.pid);
    // The destination listens for the stream once its monitor answers.
    for (let attempt = 0; ; attempt++) {
      const ready = await QmpClient.connect(destination.qmpSocket).then((c) => c.close().then(() => true), () => false);
      if (ready) break;
      if (attempt > 200) throw new Error(`destination QEMU did not come up: ${destination.stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const qmp = await QmpClient.connect(web.qmpSocket);
    try {
      await qmp.migrate('tcp:10.232.0.12:4444');
      for (const deadline = Date.now() + 120_000; ; ) {
        const info: MigrationInfo = await qmp.queryMigrate();
        if (info.status === 'completed') break;
        if (info.status === 'failed' || Date.now() > deadline) throw new Error(`migration ${info.status}: ${JSON.stringify(info)} destination: ${destination.stderr}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      await qmp.close();
    }
    web.kill();
    await net1.apply(h1State([]));
    expect(await exec(h1, 'nft', 'list', 'ruleset')).not.toContain('dtweba');
    expect(await exec(h1, 'ip', 'link')).not.toContain('dtweba');
    expect(await exec(h2, 'nft', 'list', 'table', 'bridge', 'drover')).toContain('"dtweba"');

    expect(await cliOk.fetch('http://10.232.5.10/health', 8)).toEqual({ ok: true, body: 'ok' });
    expect((await cliNo.fetch('http://10.232.5.10/health')).ok).toBe(false);
    // The migrated guest still answers as itself.
    expect((await cliOk.fetch('http://10.232.5.10/')).body).toContain('web-a');
  });
});

/* eslint-disable @typescript-eslint/no-explicit-any -- API answers are read as loose JSON in these tests */
/**
 * Package updates through the manager, on real parts end to end: a publisher
 * manager on loopback puts a package on its channel; a second manager (this
 * process) with one real agent in a network namespace subscribes, verifies it
 * through the feed, starts three `web` VMs on a Drover network (taps, DHCP,
 * firewall and the metadata service made by the agent from the manager's
 * network state) and pushes each following VM's offer with the archive to the
 * agent when the VM runs. The auto VM's update agent installs it from the
 * metadata address and reports back (`GET /api/v1/vms/{id}/packages`); the
 * pinned VM and the held VM get nothing until the hold is released.
 */
import { rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { netnsTryExec, tempDir, TestNetwork } from '@drover/agent/testing';
import { defaultManagerConfig } from '../config.js';
import { startManager, type RunningManager } from '../manager.js';
import { joinHost, managerApi, startNetworkManager, until, waitHostsOnline } from '../testing/multihost.js';
import { motdPackage } from './test-support.js';

const dataDir = tempDir('pkg-netns');
let network: TestNetwork;
let manager: RunningManager;
let publisher: RunningManager;
let hostNs: string;
const api = managerApi(() => manager);
const pub = managerApi(() => publisher);

/** A package whose install script puts a page into the web appliance's document root. */
const motd = (version: string): string => motdPackage(dataDir, version);
const packagesOf = async (vm: string) => (await api('GET', `/api/v1/vms/${vm}/packages`)).body;
const installed = (view: any) => (view.installed as Array<{ name: string; version: string }>).map((p) => `${p.name} ${p.version}`);
const serial = (vm: string) => fetch(`${manager.url}/api/v1/vms/${vm}/console/serial/log`, { headers: { authorization: `Bearer ${manager.adminToken}` } }).then((r) => r.text());

beforeAll(async () => {
  network = await TestNetwork.create(1);
  manager = await startNetworkManager(network, path.join(dataDir, 'manager'));
  publisher = await startManager({ ...defaultManagerConfig(path.join(dataDir, 'publisher')), listen: '127.0.0.1:0', appliances: false }, { vmcast: { tickMs: 0 } });
  const host = network.hosts[0]!;
  hostNs = host.namespace;
  await joinHost(network, manager, api, host, { capacity: { cpus: 2, memoryMiB: 1024 }, config: { stopTimeoutMs: 2_000 } });
  await waitHostsOnline(api, 1, 120_000);
}, 300_000);

afterAll(async () => {
  for (const vm of ['pkg-auto', 'pkg-pinned', 'pkg-held']) await api('POST', `/api/v1/vms/${vm}/force-off?wait=true`, {}).catch(() => undefined);
  await manager?.close().catch(() => undefined);
  await publisher?.close().catch(() => undefined);
  await network?.destroy();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('package updates to guests, through the manager', () => {
  it('reach the auto VM through the metadata address of its host; pinned and held VMs get nothing', async () => {
    const key = await pub('POST', '/api/v1/vmcast/keys', { name: 'k1' });
    expect((await pub('POST', '/api/v1/vmcast/channels', { name: 'web' })).status).toBe(201);
    expect((await pub('POST', '/api/v1/vmcast/channels/web/packages', { name: 'motd', version: '1.0', archiveBase64: motd('1.0') })).status).toBe(201);
    expect((await api('POST', '/api/v1/vmcast/subscriptions', { name: 'web', url: `${publisher.url}/api/v1/vmcast/channels/web/feed.rss`, pinnedKeys: [key.body.publicKey] })).status).toBe(201);
    await api('POST', '/api/v1/vmcast/subscriptions/web/poll', {});
    expect((await api('GET', '/api/v1/vmcast/subscriptions/web/packages')).body.items.map((p: any) => [p.name, p.version, p.state])).toEqual([['motd', '1.0', 'verified']]);

    expect((await api('POST', '/api/v1/networks', { name: 'pk', kind: 'nat', subnet: '10.236.30.0/24', uplink: 'eth0' })).status).toBe(201);
    for (const [name, policy] of [['pkg-auto', 'auto'], ['pkg-pinned', 'pinned'], ['pkg-held', 'auto']] as const) {
      const created = await api('POST', '/api/v1/vms', { name, image: 'web', memoryMiB: 128, networks: [{ network: 'pk' }] });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      expect((await api('PUT', `/api/v1/vms/${name}/follow`, { channel: 'web', policy })).status).toBe(200);
    }
    expect((await api('POST', '/api/v1/vms/pkg-held/follow/hold', {})).body.held).toBe(true);
    for (const name of ['pkg-auto', 'pkg-pinned', 'pkg-held']) {
      const started = await api('POST', `/api/v1/vms/${name}/start?wait=true`, {});
      expect(started.body.state, JSON.stringify(started.body)).toBe('done');
    }

    // The start pushed the offer and the archive to the VM's agent; the guest installs and reports; the manager reads it back.
    const auto = await until('the auto VM to report motd 1.0', async () => {
      const view = await packagesOf('pkg-auto');
      return installed(view).includes('motd 1.0') && view;
    }, 300_000);
    expect(auto).toMatchObject({ channel: 'web', policy: 'auto', offered: [{ name: 'motd', version: '1.0' }], pending: [], pushedTo: 'h1' });
    expect(await serial('pkg-auto')).toMatch(/DROVER-PACKAGE installed name=motd version=1\.0/);
    const ip = (await api('GET', '/api/v1/vms/pkg-auto/networks')).body.items[0].ip;
    expect((await netnsTryExec(hostNs, 'curl', '-s', '-m', '4', `http://${ip}/motd.txt`)).stdout).toBe('motd 1.0\n');
    expect((await netnsTryExec(hostNs, 'curl', '-s', '-m', '4', `http://${ip}/packages.txt`)).stdout).toBe('motd 1.0\n');

    for (const name of ['pkg-pinned', 'pkg-held']) {
      const view = await until(`the ${name} VM's report`, async () => {
        const v = await packagesOf(name);
        return v.reportedAt !== null && v;
      }, 300_000);
      expect(view).toMatchObject({ installed: [], offered: [], pending: [] });
      expect(await serial(name)).not.toMatch(/DROVER-PACKAGE/);
    }

    // Releasing the hold offers the package to that VM's guest at once.
    expect((await api('POST', '/api/v1/vms/pkg-held/follow/unhold', {})).body.held).toBe(false);
    await until('the released VM to report motd 1.0', async () => installed(await packagesOf('pkg-held')).includes('motd 1.0'), 120_000);
    expect((await packagesOf('pkg-pinned')).installed).toEqual([]);
  }, 900_000);
});

/* eslint-disable @typescript-eslint/no-explicit-any -- API answers are read as loose JSON in these tests */
/**
 * Package updates end to end, on real parts: a publisher manager puts a
 * package on its channel; a second manager with a real agent (mutual TLS)
 * subscribes, verifies it through the feed and pushes each following VM's
 * offer and the archive to the agent; real `web` guests on a Drover network
 * (a host namespace with the bridge, dnsmasq and the firewall of
 * `HostNetworks`) run the appliance's update agent against the metadata
 * address, install what they are offered and report back; the report reaches
 * the manager (`GET /api/v1/vms/{id}/packages`, what `drover vm packages`
 * shows). The pinned and the held VM get nothing.
 *
 * guest-packages.netns.test.ts shows the same through the manager's networks
 * (the agent in a namespace starts the VMs). This one does without them and
 * also shows the standalone metadata service and a second version through the
 * feed: the guests are started in the namespace by the test (TapGuest), the
 * host's network state is applied there directly, and the metadata service
 * runs there as `drover-metadata --packages <agent state>/packages` on the
 * package directory of the test agent (which runs in the root namespace). The
 * manager's VMs are marked running on the agent's host in the store, which
 * fires the same `vm.updated` event a start does, and so the push.
 */
import { spawn } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { net } from '@drover/agent';
import { ScratchNamespaces, TapGuest, tempDir } from '@drover/agent/testing';
import { defaultManagerConfig } from '../config.js';
import { startManager, type RunningManager } from '../manager.js';
import { startTestCluster, type TestCluster } from '../testing/cluster.js';
import { motdPackage } from './test-support.js';

const metadataMain = path.resolve(import.meta.dirname, '../../../agent/dist/net/metadata-main.js');
const spaces = new ScratchNamespaces();
let dir: string;
let publisher: RunningManager;
let cluster: TestCluster;
let networks: net.HostNetworks | undefined;
const guests: Record<string, TapGuest> = {};

const state: net.HostNetworkState = {
  networks: [{ name: 'pk', kind: 'isolated', subnet: '10.232.30.0/24', gateway: '10.232.30.1', bridge: 'drbr-pk' }],
  groups: [],
  nics: [
    { vm: 'pkg-auto', nic: 'eth0', network: 'pk', tap: 'dtpka', mac: '52:54:00:e8:00:01', ip: '10.232.30.10', groups: [] },
    { vm: 'pkg-pinned', nic: 'eth0', network: 'pk', tap: 'dtpkp', mac: '52:54:00:e8:00:02', ip: '10.232.30.11', groups: [] },
    { vm: 'pkg-held', nic: 'eth0', network: 'pk', tap: 'dtpkh', mac: '52:54:00:e8:00:03', ip: '10.232.30.12', groups: [] },
  ],
  hostRules: [],
};

async function call<T = any>(m: RunningManager, method: string, route: string, body?: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(`${m.url}${route}`, { method, headers: { authorization: `Bearer ${m.adminToken}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  const text = await response.text();
  return { status: response.status, body: (text && (response.headers.get('content-type') ?? '').includes('json') ? JSON.parse(text) : text) as T };
}
const b = <T = any>(method: string, route: string, body?: unknown) => cluster.api<T>(method, route, body);

/** A package whose install script puts a page into the web appliance's document root. */
const motd = (version: string): string => motdPackage(dir, version);

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 180_000): Promise<T> {
  for (const deadline = Date.now() + timeoutMs; ; ) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}
const packagesOf = async (vm: string) => (await b<any>('GET', `/api/v1/vms/${vm}/packages`)).body;
const installed = (view: any) => (view.installed as Array<{ name: string; version: string }>).map((p) => `${p.name} ${p.version}`);

beforeAll(async () => {
  if (!existsSync(metadataMain)) throw new Error(`${metadataMain} is missing: run "npx tsc -b" first`);
  dir = tempDir('guest-pkgs-e2e');
  publisher = await startManager({ ...defaultManagerConfig(path.join(dir, 'publisher')), listen: '127.0.0.1:0', appliances: false }, { vmcast: { tickMs: 0 } });
  cluster = await startTestCluster({ vmcast: { tickMs: 0 } });

  const host = await spaces.create('h');
  networks = new net.HostNetworks({ stateDir: path.join(dir, 'net'), namespace: host });
  await networks.apply(state);
  for (const pid of Object.values(networks.dnsmasqPids())) spaces.track(pid);
  const metadataState = path.join(dir, 'metadata.json');
  writeFileSync(metadataState, JSON.stringify({ nics: state.nics, metadata: Object.fromEntries(state.nics.map((n) => [n.vm, { instanceId: `i-${n.vm}`, hostname: n.vm }])) }));
  const metadata = spawn('ip', ['netns', 'exec', host, process.execPath, metadataMain, metadataState, '--packages', path.join(cluster.agentDir, 'packages')], { stdio: ['ignore', 'pipe', 'inherit'] });
  spaces.track(metadata.pid);
  await new Promise<void>((resolve, reject) => {
    metadata.stdout.setEncoding('utf8').on('data', (d: string) => d.includes('READY') && resolve());
    metadata.once('exit', (code) => reject(new Error(`metadata service exited with ${code}`)));
  });
  for (const nic of state.nics) {
    const guest = await TapGuest.start({ name: nic.vm, namespace: host, workDir: dir, tap: nic.tap, mac: nic.mac });
    guests[nic.vm] = guest;
    spaces.track(guest.pid);
  }
  await Promise.all(Object.values(guests).map((g) => g.ready()));
}, 600_000);

afterAll(async () => {
  for (const guest of Object.values(guests)) guest.kill();
  await networks?.destroy().catch(() => undefined);
  await spaces.destroy();
  // The store says these VMs run on the agent's host; the agent never had them.
  for (const name of state.nics.map((n) => n.vm)) {
    const vm = await cluster?.manager.store.vms.tryGet((await b<any>('GET', `/api/v1/vms/${name}`).catch(() => ({ body: {} }))).body.id ?? '').catch(() => undefined);
    if (vm) await cluster.manager.store.vms.update(vm.id, { state: 'stopped' }).catch(() => undefined);
  }
  await cluster?.close();
  await publisher?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('package updates to guests', () => {
  it('travel through the feed to the metadata address; the auto guest installs and reports, the pinned and held guests get nothing', async () => {
    // Publisher: key, channel, package motd 1.0.
    const key = await call(publisher, 'POST', '/api/v1/vmcast/keys', { name: 'k1' });
    expect((await call(publisher, 'POST', '/api/v1/vmcast/channels', { name: 'web' })).status).toBe(201);
    expect((await call(publisher, 'POST', '/api/v1/vmcast/channels/web/packages', { name: 'motd', version: '1.0', archiveBase64: motd('1.0') })).status).toBe(201);

    // Subscriber: pins the key; the package is verified; a second poll transfers no body.
    expect((await b('POST', '/api/v1/vmcast/subscriptions', { name: 'web', url: `${publisher.url}/api/v1/vmcast/channels/web/feed.rss`, pinnedKeys: [key.body.publicKey], allowedHosts: ['127.0.0.1'] })).status).toBe(201);
    expect((await b<any>('POST', '/api/v1/vmcast/subscriptions/web/poll', {})).body).toMatchObject({ status: 200, imported: ['motd 1.0 (package)'], quarantined: [] });
    expect((await b<any>('POST', '/api/v1/vmcast/subscriptions/web/poll', {})).body).toMatchObject({ status: 304, bodyBytes: 0, imported: [] });

    // Three VMs follow the channel: auto, pinned, auto but held.
    const hostId = (await b<any>('GET', '/api/v1/hosts')).body.items[0].id;
    for (const [name, policy] of [['pkg-auto', 'auto'], ['pkg-pinned', 'pinned'], ['pkg-held', 'auto']] as const) {
      expect((await b('POST', '/api/v1/vms', { name, image: 'web', memoryMiB: 128 })).status).toBe(201);
      expect((await b('PUT', `/api/v1/vms/${name}/follow`, { channel: 'web', policy })).status).toBe(200);
    }
    expect((await b<any>('POST', '/api/v1/vms/pkg-held/follow/hold', {})).body.held).toBe(true);
    // They run on the agent's host now (see the file comment): the start's event pushes each offer and the archive.
    for (const name of ['pkg-auto', 'pkg-pinned', 'pkg-held']) {
      const vm = await cluster.manager.vms.find(name);
      await cluster.manager.vms.publish(await cluster.manager.store.vms.update(vm.id, { state: 'running', hostId }));
    }

    // The auto guest's update agent installs it and says so; the manager reads the report back from the agent.
    const auto = await until('the auto VM to report motd 1.0', async () => {
      const view = await packagesOf('pkg-auto');
      return installed(view).includes('motd 1.0') && view;
    });
    expect(auto).toMatchObject({ channel: 'web', policy: 'auto', offered: [{ name: 'motd', version: '1.0' }], pending: [], pushedTo: 'h1' });
    await guests['pkg-auto']!.waitFor(/DROVER-PACKAGE installed name=motd version=1\.0/);
    expect((await guests['pkg-auto']!.sh('cat /srv/www/motd.txt')).out.trim()).toBe('motd 1.0');
    expect((await guests['pkg-auto']!.fetch('http://127.0.0.1/packages.txt')).body).toBe('motd 1.0');

    // Pinned and held: their guests ask too (and report that they have nothing), but are offered nothing.
    for (const name of ['pkg-pinned', 'pkg-held']) {
      const view = await until(`the ${name} VM's report`, async () => {
        const v = await packagesOf(name);
        return v.reportedAt !== null && v;
      });
      expect(view).toMatchObject({ installed: [], offered: [], pending: [] });
      expect((await guests[name]!.sh('cat /srv/www/motd.txt 2>&1; ls /var/lib/drover/packages/installed')).out).toMatch(/No such file/);
      expect(guests[name]!.console()).not.toMatch(/DROVER-PACKAGE/);
    }

    // A new version through the feed: the auto guest moves to it; pinned and held still get nothing.
    expect((await call(publisher, 'POST', '/api/v1/vmcast/channels/web/packages', { name: 'motd', version: '1.1', archiveBase64: motd('1.1') })).status).toBe(201);
    expect((await b<any>('POST', '/api/v1/vmcast/subscriptions/web/poll', {})).body.imported).toEqual(['motd 1.1 (package)']);
    await until('the auto VM to report motd 1.1', async () => installed(await packagesOf('pkg-auto')).includes('motd 1.1'));
    expect((await guests['pkg-auto']!.sh('cat /srv/www/motd.txt')).out.trim()).toBe('motd 1.1');
    for (const name of ['pkg-pinned', 'pkg-held']) {
      expect(await packagesOf(name)).toMatchObject({ installed: [], offered: [] });
      expect((await guests[name]!.sh('test -e /srv/www/motd.txt; echo $?')).out.trim()).toBe('1');
    }
  }, 900_000);
});

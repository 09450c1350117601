/* eslint-disable @typescript-eslint/no-explicit-any -- API answers are read as loose JSON in these tests */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, tempDir } from '@drover/agent/testing';
import { buildAppliance, defaultApplianceCacheDir } from '@drover/appliances';
import { defaultManagerConfig } from '../config.js';
import { startManager, type RunningManager } from '../manager.js';
import { startTestCluster, type TestCluster } from '../testing/cluster.js';
import { buildWebRelease } from './test-support.js';

// Two managers on loopback: A publishes releases of a web appliance on a channel,
// B subscribes, verifies, imports and updates the VMs that follow the channel
// along their policy, on a real agent and real QEMU guests.

let dir: string;
let publisher: RunningManager;
let cluster: TestCluster;
let rootDisk: string;
let webPort: number;

async function call<T = any>(m: RunningManager, method: string, route: string, body?: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(`${m.url}${route}`, { method, headers: { authorization: `Bearer ${m.adminToken}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  const text = await response.text();
  return { status: response.status, body: (text && (response.headers.get('content-type') ?? '').includes('json') ? JSON.parse(text) : text) as T };
}
const b = <T = any>(method: string, route: string, body?: unknown) => cluster.api<T>(method, route, body);

/** Builds a web release, imports it into the publisher's library and publishes it on channel "web". */
async function publish(version: string, options: { broken?: boolean } = {}): Promise<void> {
  const file = buildWebRelease(rootDisk, path.join(dir, 'import'), version, options);
  const imported = await call(publisher, 'POST', '/api/v1/images?wait=true', { name: 'webapp', version, source: { path: file }, format: 'qcow2' });
  expect(imported.body.state, JSON.stringify(imported.body)).toBe('done');
  const release = await call(publisher, 'POST', '/api/v1/vmcast/channels/web/releases', { image: `webapp:${version}`, bootMethod: 'appliance-kernel', minMemoryMiB: 96, labels: { app: 'web' } });
  expect(release.status, JSON.stringify(release.body)).toBe(201);
}

async function updateOps(vmId: string): Promise<Array<{ id: string; state: string; result: any; error: any }>> {
  const ops = (await b<{ items: Array<{ id: string; kind: string; targetId: string; state: string; result: unknown; error: unknown }> }>('GET', '/api/v1/operations?limit=1000')).body.items;
  return ops.filter((op) => op.kind === 'vm.release-update' && op.targetId === `release-update:${vmId}`) as never;
}
async function waitUpdates(vmId: string, count: number) {
  for (const deadline = Date.now() + 600_000; ; ) {
    const ops = await updateOps(vmId);
    if (ops.length >= count) {
      const all = (await Promise.all(ops.map((op) => cluster.waitOp(op.id, 600_000)))) as Array<{ state: string; result: any; error: any }>;
      if (all.length >= count) return all;
    }
    if (Date.now() > deadline) throw new Error('no update operation');
    await new Promise((r) => setTimeout(r, 200));
  }
}
const page = async (file: string) => (await fetch(`http://127.0.0.1:${webPort}/${file}`)).text();
const vmImage = async (name: string) => (await b<{ spec: { image: string } }>('GET', `/api/v1/vms/${name}`)).body.spec.image;
const followOf = async (name: string) => (await b<{ items: Array<{ vm: string; pendingRelease: string | null; currentRelease: string | null }> }>('GET', '/api/v1/vmcast/follows')).body.items.find((f) => f.vm === name)!;

beforeAll(async () => {
  dir = tempDir('vmcast-channels');
  rootDisk = (await buildAppliance('web', { cacheDir: defaultApplianceCacheDir() })).rootDisk;
  publisher = await startManager({ ...defaultManagerConfig(path.join(dir, 'publisher')), listen: '127.0.0.1:0', appliances: false, imageImportDirs: [path.join(dir, 'import')] }, { vmcast: { tickMs: 0 } });
  cluster = await startTestCluster({ vmcast: { tickMs: 0, healthTimeoutMs: 120_000 } });
  webPort = await freePort();
}, 180_000);

afterAll(async () => {
  await cluster?.close();
  await publisher?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('VMcasting between two managers', () => {
  it('publishes, subscribes with conditional GET, verifies, and updates following VMs along their policy', async () => {
    // Publisher: a key, a channel, release 1.1.
    const key = await call(publisher, 'POST', '/api/v1/vmcast/keys', { name: 'k1' });
    expect(key.status).toBe(201);
    expect((await call(publisher, 'POST', '/api/v1/vmcast/channels', { name: 'web', title: 'Web appliance' })).status).toBe(201);
    await publish('1.1');
    // The feed and the catalog are public (no token), and the feed is RSS 2.0 with an enclosure.
    const feed = await fetch(`${publisher.url}/api/v1/vmcast/channels/web/feed.rss`);
    expect(feed.status).toBe(200);
    const xml = await feed.text();
    expect(xml).toMatch(/<rss version="2.0" xmlns:vmcast=/);
    expect(xml).toMatch(/<enclosure url="http:\/\/127\.0\.0\.1:\d+\/api\/v1\/vmcast\/channels\/web\/releases\/webapp\/1\.1\/image" length="\d+" type="application\/x-qemu-disk"\/>/);
    expect(xml).toMatch(/<vmcast:signature keyId="[0-9a-f]{64}" algorithm="ed25519">/);
    const catalog = (await (await fetch(`${publisher.url}/api/v1/vmcast/channels/web/catalog.json`)).json()) as { releases: Array<{ version: string; bootMethod: string }> };
    expect(catalog.releases.map((r) => [r.version, r.bootMethod])).toEqual([['1.1', 'appliance-kernel']]);

    // Subscriber: pins the publisher's key, polls twice: the second poll transfers no body.
    const sub = await b('POST', '/api/v1/vmcast/subscriptions', { name: 'web', url: `${publisher.url}/api/v1/vmcast/channels/web/feed.rss`, pinnedKeys: [key.body.publicKey], allowedHosts: ['127.0.0.1'] });
    expect(sub.status, JSON.stringify(sub.body)).toBe(201);
    const first = await b<any>('POST', '/api/v1/vmcast/subscriptions/web/poll', {});
    expect(first.body).toMatchObject({ status: 200, imported: ['webapp 1.1'], quarantined: [] });
    expect(first.body.bodyBytes).toBeGreaterThan(0);
    const second = await b<any>('POST', '/api/v1/vmcast/subscriptions/web/poll', {});
    expect(second.body).toMatchObject({ status: 304, bodyBytes: 0, imported: [] });
    const image = (await b<any>('GET', '/api/v1/images/webapp:1.1')).body;
    const published = (await call(publisher, 'GET', '/api/v1/images/webapp:1.1')).body;
    expect(image.sha256).toBe(published.sha256);

    // Four VMs of release 1.1; only the auto one runs.
    for (const name of ['auto-vm', 'notify-vm', 'pinned-vm', 'held-vm']) {
      const created = await b('POST', '/api/v1/vms', { name, image: 'webapp:1.1', memoryMiB: 128, ...(name === 'auto-vm' ? { forwards: [{ hostPort: webPort, guestPort: 80 }] } : {}) });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
    }
    expect((await b<any>('POST', '/api/v1/vms/auto-vm/start?wait=true', {})).body.state).toBe('done');
    await cluster.waitForSerial('auto-vm', /DROVER-READY appliance=web version=1\.1/);
    expect(await page('release.txt')).toBe('release 1.1\n');
    const autoId = (await b<any>('GET', '/api/v1/vms/auto-vm')).body.id;

    expect((await b('PUT', '/api/v1/vms/auto-vm/follow', { channel: 'web', policy: 'auto' })).status).toBe(200);
    expect((await b('PUT', '/api/v1/vms/notify-vm/follow', { channel: 'web', policy: 'notify' })).status).toBe(200);
    expect((await b('PUT', '/api/v1/vms/pinned-vm/follow', { channel: 'web', policy: 'pinned' })).status).toBe(200);
    expect((await b('PUT', '/api/v1/vms/held-vm/follow', { channel: 'web', policy: 'auto' })).status).toBe(200);
    expect((await b<any>('POST', '/api/v1/vms/held-vm/follow/hold', {})).body.held).toBe(true);
    expect((await followOf('auto-vm')).currentRelease).toBe('webapp:1.1');

    // Release 2.0 and a package: the auto VM updates and serves it; notify gets a pending update; pinned and held stay.
    await publish('2.0');
    mkdirSync(path.join(dir, 'motd'), { recursive: true });
    writeFileSync(path.join(dir, 'motd', 'install'), '#!/bin/sh\necho motd > /srv/www/motd.txt\n', { mode: 0o755 });
    execFileSync('tar', ['--format=ustar', '-czf', path.join(dir, 'motd.tar.gz'), '-C', path.join(dir, 'motd'), '.']);
    expect((await call(publisher, 'POST', '/api/v1/vmcast/channels/web/packages', { name: 'motd', version: '1.0', archiveBase64: readFileSync(path.join(dir, 'motd.tar.gz')).toString('base64') })).status).toBe(201);
    const third = await b<any>('POST', '/api/v1/vmcast/subscriptions/web/poll', {});
    expect(third.body).toMatchObject({ status: 200, quarantined: [] });
    expect([...third.body.imported].sort()).toEqual(['motd 1.0 (package)', 'webapp 2.0']);
    const [update] = await waitUpdates(autoId, 1);
    expect(update!.state, JSON.stringify(update)).toBe('done');
    expect(update!.result.before.image).toBe('webapp:1.1');
    expect(update!.result.after.image).toBe('webapp:2.0');
    expect(await page('release.txt')).toBe('release 2.0\n');
    expect(await vmImage('auto-vm')).toBe('webapp:2.0');
    expect(await followOf('auto-vm')).toMatchObject({ currentRelease: 'webapp:2.0', pendingRelease: null });
    expect(await followOf('notify-vm')).toMatchObject({ pendingRelease: 'webapp:2.0' });
    expect(await vmImage('notify-vm')).toBe('webapp:1.1');
    const events = await cluster.manager.store.events.since(0, 10_000);
    expect(events.some((e) => e.type === 'vmcast.update.pending' && (e.data as { vm?: string }).vm === 'notify-vm')).toBe(true);
    for (const name of ['pinned-vm', 'held-vm']) {
      expect(await vmImage(name)).toBe('webapp:1.1');
      expect((await followOf(name)).pendingRelease).toBeNull();
    }
    // The package: offered to the auto VM (pushed to the agent of the host it runs on), pending for notify, nothing for pinned and held.
    // (These guests are on QEMU user networking, without a metadata address: guest-packages.e2e.test.ts shows the guest side.)
    expect((await b<any>('GET', '/api/v1/vms/auto-vm/packages')).body).toMatchObject({ offered: [{ name: 'motd', version: '1.0' }], pending: [], pushedTo: 'h1' });
    expect((await b<any>('GET', '/api/v1/vms/notify-vm/packages')).body).toMatchObject({ offered: [], pending: [{ name: 'motd', version: '1.0' }] });
    for (const name of ['pinned-vm', 'held-vm']) expect((await b<any>('GET', `/api/v1/vms/${name}/packages`)).body).toMatchObject({ offered: [], pending: [] });

    // Release 3.0 fails its health check: the auto VM is rolled back to 2.0 and still serves it.
    await publish('3.0', { broken: true });
    expect((await b<any>('POST', '/api/v1/vmcast/subscriptions/web/poll', {})).body.imported).toEqual(['webapp 3.0']);
    const updates = await waitUpdates(autoId, 2);
    const failed = updates.find((op) => op.state !== 'done')!;
    expect(failed.state).toBe('failed');
    expect(failed.error.message).toMatch(/failed its health check .*rolled back to webapp:2\.0/);
    expect(failed.error.details).toMatchObject({ rolledBack: true, before: { image: 'webapp:2.0' }, after: { image: 'webapp:3.0' } });
    expect(await vmImage('auto-vm')).toBe('webapp:2.0');
    await cluster.waitForSerial('auto-vm', /DROVER-READY appliance=web version=2\.0[\s\S]*DROVER-FAILED[\s\S]*DROVER-READY appliance=web version=2\.0/);
    expect(await page('release.txt')).toBe('release 2.0\n');

    // The operator applies the notify VM's pending update (a stopped VM: switched, not booted).
    const applied = await b<any>('POST', '/api/v1/vms/notify-vm/follow/apply?wait=true', {});
    expect(applied.body.state, JSON.stringify(applied.body)).toBe('done');
    expect(await vmImage('notify-vm')).toBe('webapp:3.0');
    for (const name of ['pinned-vm', 'held-vm']) expect(await vmImage(name)).toBe('webapp:1.1');
  }, 900_000);
});

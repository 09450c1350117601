import { execFileSync } from 'node:child_process';
import { copyFileSync, createReadStream, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '@drover/agent';
import { freePort, tempDir, testAgentConfig } from '@drover/agent/testing';
import { buildAppliance, buildLiveIso, defaultApplianceCacheDir, type LiveIso } from '@drover/appliances';
import type { Image, Operation, Vm } from '@drover/api';
import { defaultManagerConfig } from '../config.js';
import { startManager, type RunningManager } from '../manager.js';

/**
 * Images, ISOs and cloud-init on real parts: a manager with a joined agent,
 * images imported from a path and from a local HTTP server, real QEMU guests
 * booting an ISO (the appliances' hybrid live ISO), an imported disk image as a
 * thin clone, and a cloud-init seed read by the appliance's NoCloud reader.
 */
const dataDir = tempDir('images-manager');
const agentDir = tempDir('images-agent');
const importDir = tempDir('images-import');
const outsideDir = tempDir('images-outside');
// The library lives in a files directory apart from the data directory (config `filesDir`, shared by several managers).
const filesDir = tempDir('images-files');
const libraryDir = path.join(filesDir, 'library');
let manager: RunningManager;
let agent: RunningAgent;
let live: LiveIso;
let server: http.Server;
let baseUrl = '';
/** Files the local HTTP server serves, by URL path. */
const served = new Map<string, string>();

async function api<T = unknown>(method: string, route: string, body?: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(`${manager.url}${route}`, {
    method,
    headers: { authorization: `Bearer ${manager.adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  return { status: response.status, body: (text && (response.headers.get('content-type') ?? '').includes('json') ? JSON.parse(text) : text) as T };
}

async function importImage(body: unknown): Promise<Operation> {
  const answer = await api<Operation>('POST', '/api/v1/images?wait=true', body);
  expect(answer.status).toBe(200);
  return answer.body;
}

/** The console from character `from` on, once it shows `pattern`. */
async function waitForSerial(vm: string, pattern: RegExp, from = 0, timeoutMs = 90_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const log = await api<string>('GET', `/api/v1/vms/${vm}/console/serial/log`);
    const text = typeof log.body === 'string' ? log.body.slice(from) : '';
    if (pattern.test(text)) return text;
    if (Date.now() > deadline) throw new Error(`no ${pattern} on the console of ${vm}; got:\n${String(log.body).slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function action(vm: string, name: string, body: unknown = {}): Promise<Operation> {
  const answer = await api<Operation>('POST', `/api/v1/vms/${vm}/${name}?wait=true`, body);
  expect(answer.status).toBe(200);
  return answer.body;
}

/** What the library directory holds, the work directory's leftovers included. */
function libraryFiles(): string[] {
  if (!existsSync(libraryDir)) return [];
  const top = readdirSync(libraryDir).filter((f) => f !== '.tmp');
  const work = existsSync(path.join(libraryDir, '.tmp')) ? readdirSync(path.join(libraryDir, '.tmp')).map((f) => `.tmp/${f}`) : [];
  return [...top, ...work].sort();
}

async function imageNames(): Promise<string[]> {
  return (await api<{ items: Image[] }>('GET', '/api/v1/images')).body.items.map((i) => `${i.name}:${i.version}`);
}

beforeAll(async () => {
  live = await buildLiveIso({ cacheDir: defaultApplianceCacheDir() });
  server = http.createServer((request, response) => {
    const url = request.url ?? '/';
    if (url === '/slow') {
      // A trickle that takes minutes: long enough to be cancelled while it downloads.
      response.writeHead(200, { 'content-length': String(64 * 1024 ** 2) });
      const timer = setInterval(() => response.write(Buffer.alloc(1024)), 100);
      response.on('close', () => clearInterval(timer));
      return;
    }
    if (url === '/huge') {
      // Declares more than the limit: refused before a byte is stored.
      response.writeHead(200, { 'content-length': String(512 * 1024 ** 2) });
      response.write(Buffer.alloc(1024));
      return;
    }
    const file = served.get(url);
    if (!file) {
      response.writeHead(404).end('no such file');
      return;
    }
    response.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(statSync(file).size) });
    createReadStream(file).pipe(response);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  manager = await startManager({
    ...defaultManagerConfig(dataDir),
    filesDir,
    listen: '127.0.0.1:0',
    heartbeatMs: 500,
    applianceCacheDir: defaultApplianceCacheDir(),
    imageImportDirs: [importDir],
    imageMaxBytes: 256 * 1024 ** 2,
    imageMaxVirtualBytes: 1024 ** 3,
  });
  const join = await api<{ token: string }>('POST', '/api/v1/hosts/join-tokens', {});
  agent = await startAgent(testAgentConfig(agentDir, { listen: `127.0.0.1:${await freePort()}`, hostName: 'h1' }), { join: { managerUrl: manager.url, token: join.body.token } });
  const deadline = Date.now() + 30_000;
  while ((await api<{ items: Array<{ state: string }> }>('GET', '/api/v1/hosts')).body.items[0]?.state !== 'online') {
    if (Date.now() > deadline) throw new Error('host did not come online');
    await new Promise((r) => setTimeout(r, 100));
  }
}, 120_000);

afterAll(async () => {
  try {
    const vms = await api<{ items: Vm[] }>('GET', '/api/v1/vms');
    for (const vm of vms.body.items) if (['running', 'paused'].includes(vm.state)) await api('POST', `/api/v1/vms/${vm.id}/force-off?wait=true`, {});
  } finally {
    await agent?.close();
    await manager?.close();
    await new Promise((resolve) => server?.close(resolve));
    for (const dir of [dataDir, filesDir, agentDir, importDir, outsideDir]) rmSync(dir, { recursive: true, force: true });
  }
});

describe('image import', () => {
  it('imports an ISO by path (format recognised) and boots a VM from it as a CD-ROM', async () => {
    copyFileSync(live.iso, path.join(importDir, 'live.iso'));
    const op = await importImage({ name: 'live', source: { path: path.join(importDir, 'live.iso') } });
    expect(op).toMatchObject({ kind: 'image.import', state: 'done' });
    const image = (op.result as { image: Image }).image;
    expect(image).toMatchObject({ name: 'live', version: '1', format: 'iso', sizeBytes: statSync(live.iso).size, source: path.join(importDir, 'live.iso') });
    expect((await api<Image>('GET', '/api/v1/images/live')).body.id).toBe(image.id);
    expect(libraryFiles()).toEqual(['live-1.iso']);
    expect(existsSync(path.join(dataDir, 'library'))).toBe(false);

    const created = await api<Vm>('POST', '/api/v1/vms', { name: 'iso-boot', iso: 'live', memoryMiB: 96 });
    expect(created.status).toBe(201);
    expect(created.body.spec).toMatchObject({ image: '', iso: 'live:1' });
    expect((await action('iso-boot', 'start')).state).toBe('done');
    const log = await waitForSerial('iso-boot', /DROVER-LIVE-OK/);
    expect(log).toContain('ISOLINUX');
    expect((await action('iso-boot', 'force-off')).state).toBe('done');
    // The ISO is a volume of the host's pool now, named by the image's id.
    const volume = await api<{ format: string; usedBy: string[] }>('GET', `/api/v1/hosts/h1/pools/default/volumes/image-${image.id}.iso`);
    expect(volume.body).toMatchObject({ format: 'raw', usedBy: ['iso-boot'] });
  }, 180_000);

  it('imports a disk image from a URL (raw, stored as qcow2); each VM boots a thin clone of it', async () => {
    served.set('/disk.img', live.iso); // the live ISO is hybrid: it boots as a raw disk too
    const op = await importImage({ name: 'live-disk', version: '2.0', source: { url: `${baseUrl}/disk.img` }, format: 'raw' });
    expect(op.state).toBe('done');
    const image = (op.result as { image: Image }).image;
    expect(image).toMatchObject({ name: 'live-disk', version: '2.0', format: 'qcow2', source: `${baseUrl}/disk.img` });
    expect(libraryFiles()).toEqual(['live-1.iso', 'live-disk-2.0.qcow2']);
    expect(execFileSync('qemu-img', ['info', '-f', 'qcow2', '--output=json', path.join(libraryDir, 'live-disk-2.0.qcow2')]).toString()).not.toContain('backing');

    const created = await api<Vm>('POST', '/api/v1/vms', { name: 'disk-boot', image: 'live-disk', memoryMiB: 96, diskSizeBytes: 64 * 1024 ** 2 });
    expect(created.status).toBe(201);
    expect((await action('disk-boot', 'start')).state).toBe('done');
    await waitForSerial('disk-boot', /DROVER-LIVE-OK/);
    const clone = await api<{ backing?: string; virtualBytes: number }>('GET', `/api/v1/hosts/h1/pools/default/volumes/${created.body.id}.root.qcow2`);
    expect(clone.body).toMatchObject({ backing: `image-${image.id}.qcow2`, virtualBytes: 64 * 1024 ** 2 });
    expect((await action('disk-boot', 'force-off')).state).toBe('done');
  }, 180_000);

  it('imports a qcow2 from a URL with its format recognised', async () => {
    const counter = await buildAppliance('counter', { cacheDir: defaultApplianceCacheDir() });
    served.set('/counter.qcow2', counter.rootDisk);
    const op = await importImage({ name: 'counter-root', source: { url: `${baseUrl}/counter.qcow2` } });
    expect(op.state).toBe('done');
    expect((op.result as { image: Image }).image.format).toBe('qcow2');
  });

  it('refuses untrusted or unusable images as failed operations and keeps nothing', async () => {
    const before = { images: await imageNames(), files: libraryFiles() };
    const base = path.join(importDir, 'base.raw');
    writeFileSync(base, Buffer.alloc(1024 * 1024));
    const backed = path.join(importDir, 'backed.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'raw', backed]);
    const text = path.join(importDir, 'notes.txt');
    writeFileSync(text, 'not a disk image\n');
    const big = path.join(importDir, 'big.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', big, '2G']);
    served.set('/backed.qcow2', backed);
    served.set('/notes.txt', text);

    const cases: Array<[unknown, string, RegExp]> = [
      [{ name: 'bad1', source: { path: backed } }, 'invalid', /backing file/],
      [{ name: 'bad2', source: { url: `${baseUrl}/backed.qcow2` }, format: 'qcow2' }, 'invalid', /backing file/],
      [{ name: 'bad3', source: { path: text } }, 'invalid', /format cannot be recognised/],
      [{ name: 'bad4', source: { url: `${baseUrl}/notes.txt` }, format: 'qcow2' }, 'invalid', /not a qcow2 image/],
      [{ name: 'bad5', source: { path: text }, format: 'iso' }, 'invalid', /not an ISO 9660 image/],
      [{ name: 'bad6', source: { path: text }, format: 'raw' }, 'invalid', /512-byte sectors/],
      [{ name: 'bad7', source: { path: path.join(importDir, 'live.iso') }, format: 'qcow2' }, 'invalid', /not a qcow2 image/],
      [{ name: 'bad8', source: { path: big } }, 'invalid', /virtual size 2147483648 is above the limit/],
      [{ name: 'bad9', source: { url: `${baseUrl}/missing.qcow2` } }, 'not_found', /missing\.qcow2/],
      [{ name: 'bad10', source: { url: `${baseUrl}/huge` } }, 'too_large', /limit of an image import/],
      [{ name: 'bad11', source: { url: 'http://127.0.0.1:1/closed.qcow2' } }, 'unavailable', /download of http:\/\/127\.0\.0\.1:1\/closed\.qcow2 failed/],
    ];
    for (const [body, code, message] of cases) {
      const op = await importImage(body);
      expect({ body, state: op.state, code: op.error?.code }).toEqual({ body, state: 'failed', code });
      expect(op.error?.message).toMatch(message);
      // Said with the image's name, not the manager's work file.
      expect(op.error?.message).not.toContain('.tmp');
    }
    expect(await imageNames()).toEqual(before.images);
    expect(libraryFiles()).toEqual(before.files);
  }, 120_000);

  it('cancels an import while it downloads, keeping nothing', async () => {
    const before = { images: await imageNames(), files: libraryFiles() };
    const submitted = await api<Operation>('POST', '/api/v1/images', { name: 'slow', source: { url: `${baseUrl}/slow` }, format: 'raw' });
    expect(submitted.status).toBe(202);
    const deadline = Date.now() + 10_000;
    while ((await api<Operation>('GET', `/api/v1/operations/${submitted.body.id}`)).body.phase !== 'fetch') {
      if (Date.now() > deadline) throw new Error('the import never reached its fetch phase');
      await new Promise((r) => setTimeout(r, 50));
    }
    const cancelled = await api<Operation>('POST', `/api/v1/operations/${submitted.body.id}/cancel`, {});
    expect(cancelled.status).toBe(200);
    expect(cancelled.body).toMatchObject({ state: 'cancelled', error: { code: 'cancelled' } });
    expect(await imageNames()).toEqual(before.images);
    expect(libraryFiles()).toEqual(before.files);
  });

  it('refuses bad requests at once with a 4xx, changing nothing', async () => {
    const before = await imageNames();
    const outside = path.join(outsideDir, 'x.qcow2');
    copyFileSync(live.iso, outside);
    mkdirSync(path.join(importDir, 'sub'), { recursive: true });
    const refusals: Array<[unknown, number]> = [
      [{ name: 'x', source: { path: outside } }, 403],
      [{ name: 'x', source: { path: path.join(importDir, 'nope.iso') } }, 404],
      [{ name: 'x', source: { path: path.join(importDir, 'sub') } }, 400],
      [{ name: 'x', source: { url: 'ftp://127.0.0.1/x' } }, 400],
      [{ name: 'x', source: { url: `${baseUrl}/a`, path: '/b' } }, 400],
      [{ name: 'x', source: { path: 'relative' } }, 400],
      [{ name: '../x', source: { path: outside } }, 400],
      [{ name: 'x', source: { path: outside }, format: 'vmdk' }, 400],
      [{ name: 'live', source: { path: path.join(importDir, 'live.iso') } }, 409],
    ];
    for (const [body, status] of refusals) {
      const answer = await api<{ error: { message: string } }>('POST', '/api/v1/images', body);
      expect({ body, status: answer.status }).toEqual({ body, status });
      expect(typeof answer.body.error.message).toBe('string');
    }
    expect(await imageNames()).toEqual(before);
    // VMs: an ISO is not an image to boot from, an appliance has its own disks, an unknown ISO is refused.
    for (const body of [
      { name: 'v1', image: 'live' },
      { name: 'v1', image: 'counter', diskSizeBytes: 1024 ** 3 },
      { name: 'v1', iso: 'nope' },
      { name: 'v1', iso: 'live-disk' },
      { name: 'v1' },
      { name: 'v1', image: 'live-disk', cmdline: 'drover.x=1' },
      { name: 'v1', image: 'live-disk', diskSizeBytes: 1024 * 1024 },
    ]) {
      expect({ body, status: (await api('POST', '/api/v1/vms', body)).status }).toEqual({ body, status: 400 });
    }
  });

  it('deletes an unused image from the library and its hosts, and refuses one a VM uses', async () => {
    const disk = (await api<Image>('GET', '/api/v1/images/live-disk')).body;
    const used = await api<{ error: { message: string } }>('DELETE', '/api/v1/images/live-disk:2.0');
    expect(used.status).toBe(409);
    expect(used.body.error.message).toContain('disk-boot');
    expect((await api('DELETE', '/api/v1/images/counter')).status).toBe(409); // a built-in appliance
    expect((await api<Operation>('DELETE', '/api/v1/vms/disk-boot?wait=true')).body.state).toBe('done');
    const deleted = await api<Operation>('DELETE', `/api/v1/images/${disk.id}?wait=true`);
    expect(deleted.body).toMatchObject({ kind: 'image.delete', state: 'done', result: { deleted: true, hosts: ['h1'] } });
    expect((await api('GET', `/api/v1/images/${disk.id}`)).status).toBe(404);
    expect(libraryFiles()).not.toContain('live-disk-2.0.qcow2');
    expect((await api('GET', `/api/v1/hosts/h1/pools/default/volumes/image-${disk.id}.qcow2`)).status).toBe(404);
    expect((await api('DELETE', '/api/v1/images/live-disk:2.0')).status).toBe(404);
  });
});

describe('cloud-init NoCloud', () => {
  it('seeds an appliance: default hostname, user-data on the console; a changed seed is rebuilt', async () => {
    const userData = '#!/bin/sh\necho "CLOUD-MARKER-$(hostname)-$((6 * 7))"\n';
    const created = await api<Vm>('POST', '/api/v1/vms', { name: 'seeded', image: 'counter', memoryMiB: 128, cloudInit: { userData } });
    expect(created.status).toBe(201);
    expect(created.body.spec.cloudInit).toEqual({ userDataBytes: Buffer.byteLength(userData) });
    expect((await action('seeded', 'start')).state).toBe('done');
    const first = await waitForSerial('seeded', /DROVER-READY appliance=counter/);
    expect(first).toContain(`DROVER-INFO cloud-init seed /dev/vdb instance=${created.body.id} hostname=seeded`);
    expect(first).toMatch(/^CLOUD-MARKER-seeded-42\r?$/m);
    expect(first).toMatch(/DROVER-CLOUD-INIT user-data done instance=\S+ rc=0/);

    expect((await api('PATCH', '/api/v1/vms/seeded', { cloudInit: null })).status).toBe(409); // while running
    expect((await action('seeded', 'stop', { timeoutMs: 30_000 })).state).toBe('done');
    const edited = await api<Vm>('PATCH', '/api/v1/vms/seeded', {
      cloudInit: { userData: '#!/bin/sh\necho "SECOND-MARKER-$(hostname)"\n', metaData: 'instance-id: second\nlocal-hostname: renamed\n' },
    });
    expect(edited.status).toBe(200);
    const offset = (await api<string>('GET', '/api/v1/vms/seeded/console/serial/log')).body.length;
    expect((await action('seeded', 'start')).state).toBe('done');
    const second = await waitForSerial('seeded', /SECOND-MARKER-renamed/, offset);
    expect(second).toContain('DROVER-INFO cloud-init seed /dev/vdb instance=second hostname=renamed');

    // Without a seed the guest finds none; the user-data of an instance runs once only.
    expect((await action('seeded', 'stop', { timeoutMs: 30_000 })).state).toBe('done');
    expect((await api('PATCH', '/api/v1/vms/seeded', { cloudInit: null })).status).toBe(200);
    const before = (await api<string>('GET', '/api/v1/vms/seeded/console/serial/log')).body.length;
    expect((await action('seeded', 'start')).state).toBe('done');
    const third = await waitForSerial('seeded', /DROVER-READY appliance=counter/, before);
    expect(third).not.toContain('cloud-init seed');
    expect((await action('seeded', 'force-off')).state).toBe('done');
  }, 240_000);
});

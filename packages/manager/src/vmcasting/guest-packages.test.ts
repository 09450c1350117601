/* eslint-disable @typescript-eslint/no-explicit-any -- API answers are read as loose JSON in these tests */
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '@drover/agent/testing';
import { defaultManagerConfig } from '../config.js';
import { startManager, type RunningManager } from '../manager.js';
import { parseFeed, renderFeed, type PackageFeedItem } from './feed.js';
import { canonicalManifest, newPublisherKey, signBytes, type PackageManifest } from './manifest.js';
import { inspectPackageArchive } from './package-archive.js';

// One real manager publishes packages on its own channel and subscribes to its
// own feed (loopback), plus a hostile feed server with crafted package items:
// what is offered to which VM (auto, notify, pinned, held), approvals, and
// that a package with a bad signature, an unpinned or revoked key, or altered
// bytes is quarantined and never offered. No guest here (see
// guest-packages.e2e.test.ts for the metadata address and the update agent).

let dir: string;
let manager: RunningManager;
let server: Server;
let base: string;
const droverCli = path.resolve(import.meta.dirname, '../../../cli/dist/main.js');
const hostile = newPublisherKey();
const stranger = newPublisherKey();
const feeds = new Map<string, string>();
const files = new Map<string, Buffer>();

async function api<T = any>(method: string, route: string, body?: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(`${manager.url}${route}`, { method, headers: { authorization: `Bearer ${manager.adminToken}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  const text = await response.text();
  return { status: response.status, body: (text && (response.headers.get('content-type') ?? '').includes('json') ? JSON.parse(text) : text) as T };
}

/** A tar.gz of `files` (path → content; a value `{ link }` makes a symlink). */
function archive(name: string, entries: Record<string, string | { link: string }>, format = 'ustar'): Buffer {
  const root = path.join(dir, `src-${name}`);
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  for (const [file, content] of Object.entries(entries)) {
    mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
    if (typeof content === 'string') writeFileSync(path.join(root, file), content, { mode: 0o755 });
    else symlinkSync(content.link, path.join(root, file));
  }
  const out = path.join(dir, `${name}.tar.gz`);
  execFileSync('tar', [`--format=${format}`, '-czf', out, '-C', root, '.']);
  return readFileSync(out);
}
const b64 = (buffer: Buffer) => buffer.toString('base64');
const view = async (vm: string) => (await api('GET', `/api/v1/vms/${vm}/packages`)).body;
const names = (list: Array<{ name: string; version: string }>) => list.map((p) => `${p.name} ${p.version}`);

beforeAll(async () => {
  dir = tempDir('guest-pkgs');
  manager = await startManager({ ...defaultManagerConfig(path.join(dir, 'manager')), listen: '127.0.0.1:0' }, { vmcast: { tickMs: 0 } });
  server = createServer((req, res) => {
    const url = req.url ?? '';
    if (url.startsWith('/feed/')) {
      const feed = feeds.get(url.slice(6));
      return feed === undefined ? void res.writeHead(404).end() : void res.writeHead(200, { 'content-type': 'application/rss+xml' }).end(feed);
    }
    const file = files.get(url);
    if (!file) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'application/gzip', 'content-length': String(file.length) }).end(file);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
}, 120_000);

afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
  await manager?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('package archives', () => {
  it('accepts regular files and directories with an install script (ustar and GNU headers)', () => {
    for (const format of ['ustar', 'gnu']) {
      const ok = inspectPackageArchive(archive(`ok-${format}`, { install: '#!/bin/sh\necho hi\n', 'files/www/motd.txt': 'hello\n' }, format));
      expect('entries' in ok && ok.entries.map((e) => e.path).sort()).toEqual(['files', 'files/www', 'files/www/motd.txt', 'install']);
    }
  });

  it('refuses links, escapes, a missing install script and what is not a tar.gz, with the reason', () => {
    expect(inspectPackageArchive(archive('link', { install: '#!/bin/sh\n', evil: { link: '/etc/shadow' } }))).toEqual({ refused: expect.stringMatching(/"\.\/evil" is a symbolic link/) });
    expect(inspectPackageArchive(archive('noinstall', { 'setup.sh': '#!/bin/sh\n' }))).toEqual({ refused: expect.stringMatching(/no `install` script/) });
    expect(inspectPackageArchive(Buffer.from('not gzip'))).toEqual({ refused: expect.stringMatching(/not a gzip file/) });
    // A name with "..": written by hand (tar itself will not store it).
    const header = Buffer.alloc(512);
    header.write('../escape', 0);
    header.write('0000644\0', 100);
    header.write('00000000000\0', 124);
    header.write('0', 156);
    header.write('ustar\x0000', 257, 'latin1');
    header.fill(' ', 148, 156);
    let sum = 0;
    for (const byte of header) sum += byte;
    header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    const tarball = execFileSync('gzip', ['-c'], { input: Buffer.concat([header, Buffer.alloc(1024)]) });
    expect(inspectPackageArchive(tarball)).toEqual({ refused: expect.stringMatching(/"\.\.\/escape" leaves the package directory/) });
  });
});

describe('channel packages and offers', () => {
  it('publishes signed packages in the feed and the catalog; refuses a bad archive and changes nothing', async () => {
    expect((await api('POST', '/api/v1/vmcast/keys', { name: 'k1' })).status).toBe(201);
    expect((await api('POST', '/api/v1/vmcast/channels', { name: 'web' })).status).toBe(201);
    const bad = await api('POST', '/api/v1/vmcast/channels/web/packages', { name: 'motd', version: '1.0', archiveBase64: b64(archive('bad', { install: '#!/bin/sh\n', x: { link: '/' } })) });
    expect(bad.status).toBe(400);
    expect(bad.body.error.message).toMatch(/refused: entry "\.\/x" is a symbolic link/);
    expect((await api('GET', '/api/v1/vmcast/channels/web/packages')).body.items).toEqual([]);

    const v1 = archive('motd-1.0', { install: '#!/bin/sh\necho 1.0 > /tmp/motd\n' });
    const published = await api('POST', '/api/v1/vmcast/channels/web/packages', { name: 'motd', version: '1.0', description: 'Message of the day', archiveBase64: b64(v1) });
    expect(published.status, JSON.stringify(published.body)).toBe(201);
    expect(published.body).toMatchObject({ name: 'motd', version: '1.0', state: 'published', sha256: createHash('sha256').update(v1).digest('hex'), sizeBytes: v1.length });
    expect((await api('POST', '/api/v1/vmcast/channels/web/packages', { name: 'motd', version: '1.0', archiveBase64: b64(v1) })).status).toBe(409);

    const xml = await (await fetch(`${manager.url}/api/v1/vmcast/channels/web/feed.rss`)).text();
    expect(xml).toMatch(/<enclosure url="http:\/\/127\.0\.0\.1:\d+\/api\/v1\/vmcast\/channels\/web\/packages\/motd\/1\.0\/archive" length="\d+" type="application\/gzip"\/>\n<vmcast:kind>package<\/vmcast:kind>/);
    const parsed = parseFeed(xml);
    expect(parsed.packages.map((p) => [p.manifest.name, p.manifest.version, p.manifest.description])).toEqual([['motd', '1.0', 'Message of the day']]);
    const catalog = (await (await fetch(`${manager.url}/api/v1/vmcast/channels/web/catalog.json`)).json()) as any;
    expect(catalog.packages.map((p: any) => [p.kind, p.name, p.version, p.type])).toEqual([['package', 'motd', '1.0', 'application/gzip']]);
    const served = Buffer.from(await (await fetch(parsed.packages[0]!.url)).arrayBuffer());
    expect(served.equals(v1)).toBe(true);
  });

  it('offers the latest versions to auto VMs, asks notify VMs for approval, offers nothing to pinned or held VMs', async () => {
    const key = (await api('GET', '/api/v1/vmcast/keys')).body.items[0];
    expect((await api('POST', '/api/v1/vmcast/subscriptions', { name: 'web', url: `${manager.url}/api/v1/vmcast/channels/web/feed.rss`, pinnedKeys: [key.publicKey] })).status).toBe(201);
    const first = await api('POST', '/api/v1/vmcast/subscriptions/web/poll', {});
    expect(first.body).toMatchObject({ status: 200, imported: ['motd 1.0 (package)'], quarantined: [] });
    expect((await api('GET', '/api/v1/vmcast/subscriptions/web/packages')).body.items.map((p: any) => [p.name, p.version, p.state])).toEqual([['motd', '1.0', 'verified']]);

    for (const [name, policy] of [['auto-vm', 'auto'], ['notify-vm', 'notify'], ['pinned-vm', 'pinned'], ['held-vm', 'auto'], ['loner-vm', undefined]] as const) {
      expect((await api('POST', '/api/v1/vms', { name, image: 'web', memoryMiB: 96 })).status).toBe(201);
      if (policy) expect((await api('PUT', `/api/v1/vms/${name}/follow`, { channel: 'web', policy })).status).toBe(200);
    }
    expect((await api('POST', '/api/v1/vms/held-vm/follow/hold', {})).status).toBe(200);

    expect(await view('auto-vm')).toMatchObject({ channel: 'web', policy: 'auto', held: false, offered: [{ name: 'motd', version: '1.0' }], pending: [], installed: [], reportedAt: null });
    expect(await view('notify-vm')).toMatchObject({ policy: 'notify', offered: [], pending: [{ name: 'motd', version: '1.0' }] });
    expect(await view('pinned-vm')).toMatchObject({ policy: 'pinned', offered: [], pending: [] });
    expect(await view('held-vm')).toMatchObject({ policy: 'auto', held: true, offered: [], pending: [] });
    expect(await view('loner-vm')).toMatchObject({ channel: null, policy: null, offered: [], pending: [] });

    // The CLI shows the same (`drover vm packages`), and approves.
    // (Not execFileSync: the manager answers from this process.)
    const drover = async (...argv: string[]) => (await promisify(execFile)(process.execPath, [droverCli, ...argv], { env: { PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: path.join(dir, 'xdg'), DROVER_URL: manager.url, DROVER_TOKEN: manager.adminToken }, encoding: 'utf8' })).stdout;
    expect(await drover('vm', 'packages', 'notify-vm')).toMatch(/VM notify-vm: channel web, policy notify; guest report none yet\nPACKAGE +INSTALLED +OFFERED +PENDING\nmotd +1\.0/);
    expect(await drover('vm', 'packages', 'held-vm')).toMatch(/policy auto, held;[^\n]*\nNo packages\./);

    // Approvals: only notify VMs, only pending names.
    expect((await api('POST', '/api/v1/vms/pinned-vm/packages/approve', {})).body.error.message).toMatch(/is pinned/);
    expect((await api('POST', '/api/v1/vms/held-vm/packages/approve', {})).body.error.message).toMatch(/is held/);
    expect((await api('POST', '/api/v1/vms/notify-vm/packages/approve', { names: ['nosuch'] })).status).toBe(404);
    const approved = await api('POST', '/api/v1/vms/notify-vm/packages/approve', { names: ['motd'] });
    expect(approved.status, JSON.stringify(approved.body)).toBe(200);
    expect(approved.body).toMatchObject({ offered: [{ name: 'motd', version: '1.0' }], pending: [] });
    expect((await api('POST', '/api/v1/vms/notify-vm/packages/approve', {})).status).toBe(409);

    // A new version: auto moves to it; notify keeps the approved one and waits for 1.1.
    await api('POST', '/api/v1/vmcast/channels/web/packages', { name: 'motd', version: '1.1', archiveBase64: b64(archive('motd-1.1', { install: '#!/bin/sh\necho 1.1\n' })) });
    expect((await api('POST', '/api/v1/vmcast/subscriptions/web/poll', {})).body.imported).toEqual(['motd 1.1 (package)']);
    expect(names((await view('auto-vm')).offered)).toEqual(['motd 1.1']);
    expect(await view('notify-vm')).toMatchObject({ offered: [{ name: 'motd', version: '1.0' }], pending: [{ name: 'motd', version: '1.1' }] });
    const events = await manager.store.events.since(0, 10_000);
    expect(events.filter((e) => e.type === 'vmcast.package.pending' && (e.data as any).vm === 'notify-vm').map((e) => (e.data as any).package)).toEqual(['motd 1.1']);
    for (const name of ['pinned-vm', 'held-vm']) expect((await view(name)).offered).toEqual([]);

    // Unhold: the held VM is offered the latest again; a subscriber-side key revocation stops every offer of what it signed.
    expect((await api('POST', '/api/v1/vms/held-vm/follow/unhold', {})).status).toBe(200);
    expect(names((await view('held-vm')).offered)).toEqual(['motd 1.1']);
    const sub = (await api('GET', '/api/v1/vmcast/subscriptions')).body.items.find((s: any) => s.name === 'web');
    expect((await api('POST', `/api/v1/vmcast/subscriptions/web/keys/${sub.pinnedKeys[0].keyId}/revoke`, {})).status).toBe(200);
    for (const name of ['auto-vm', 'notify-vm', 'held-vm']) expect((await view(name)).offered).toEqual([]);
  });

  it('quarantines packages with a bad signature, an unpinned or revoked key, a wrong size or altered bytes, and never offers them', async () => {
    const body = archive('evil', { install: '#!/bin/sh\necho evil\n' });
    const sha256 = createHash('sha256').update(body).digest('hex');
    files.set('/p/evil.tar.gz', body);
    files.set('/p/altered.tar.gz', Buffer.concat([body.subarray(0, body.length - 1), Buffer.from([body[body.length - 1]! ^ 1])]));
    const manifest = (name: string, over: Partial<PackageManifest> = {}): PackageManifest => ({ kind: 'package', channel: 'evil', name, version: '1.0', description: '', sha256, sizeBytes: body.length, ...over });
    const item = (m: PackageManifest, file: string, key = hostile, over: Partial<PackageFeedItem> = {}): PackageFeedItem => ({ manifest: m, url: `${base}${file}`, length: m.sizeBytes, keyId: key.keyId, signature: signBytes(canonicalManifest(m), key.privateKey), ...over });
    const good = item(manifest('good'), '/p/evil.tar.gz');
    const forged = { ...item(manifest('forged'), '/p/evil.tar.gz'), signature: signBytes(canonicalManifest(manifest('other')), hostile.privateKey) };
    const unpinned = item(manifest('unpinned'), '/p/evil.tar.gz', stranger);
    const altered = item(manifest('altered'), '/p/altered.tar.gz');
    const short = item(manifest('short', { sizeBytes: body.length + 10 }), '/p/evil.tar.gz', hostile, { length: body.length });
    // A release's signature is no package's: the manifest kinds differ.
    const asRelease = { ...item(manifest('crossed'), '/p/evil.tar.gz'), signature: signBytes(Buffer.from(JSON.stringify({ name: 'crossed' })), hostile.privateKey) };
    feeds.set('evil', renderFeed({ name: 'evil', title: 'evil', description: '', link: base }, [], [], [good, forged, unpinned, altered, short, asRelease]));
    expect((await api('POST', '/api/v1/vmcast/subscriptions', { name: 'evil', url: `${base}/feed/evil`, pinnedKeys: [hostile.publicKey] })).status).toBe(201);
    const polled = await api('POST', '/api/v1/vmcast/subscriptions/evil/poll', {});
    expect(polled.body.imported).toEqual(['good 1.0 (package)']);
    const reasons = Object.fromEntries(polled.body.quarantined.map((q: any) => [q.release.split(' ')[0], q.reason]));
    expect(reasons).toEqual({
      forged: expect.stringMatching(/signature does not verify/),
      unpinned: expect.stringMatching(/not pinned/),
      altered: expect.stringMatching(/sha256 .* differs .* altered/),
      short: expect.stringMatching(/enclosure length \d+ differs from the signed size/),
      crossed: expect.stringMatching(/signature does not verify/),
    });
    expect((await api('PUT', '/api/v1/vms/loner-vm/follow', { channel: 'evil', policy: 'auto' })).status).toBe(200);
    expect(names((await view('loner-vm')).offered)).toEqual(['good 1.0']);

    // The publisher revokes its key in the feed: what it signed is offered no more.
    feeds.set('evil', renderFeed({ name: 'evil', title: 'evil', description: '', link: base }, [{ keyId: hostile.keyId, state: 'revoked' }], [], [good]));
    await api('POST', '/api/v1/vmcast/subscriptions/evil/poll', {});
    expect((await view('loner-vm')).offered).toEqual([]);
    // A new package signed with the revoked key is quarantined with that reason.
    const late = item(manifest('late'), '/p/evil.tar.gz');
    feeds.set('evil', renderFeed({ name: 'evil', title: 'evil', description: '', link: base }, [{ keyId: hostile.keyId, state: 'revoked' }], [], [good, late]));
    expect((await api('POST', '/api/v1/vmcast/subscriptions/evil/poll', {})).body.quarantined).toEqual([{ release: 'late 1.0 (package)', reason: expect.stringMatching(/which is revoked/) }]);
    expect((await view('loner-vm')).offered).toEqual([]);
  });
});

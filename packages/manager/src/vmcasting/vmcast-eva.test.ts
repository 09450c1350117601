/* eslint-disable @typescript-eslint/no-explicit-any -- API answers are read as loose JSON in these tests */
import { execFile, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '@drover/agent/testing';
import type { EvaManifest, Operation } from '@drover/api';
import { defaultManagerConfig } from '../config.js';
import { startManager, type RunningManager } from '../manager.js';
import { writeEva } from '../packages/eva-format.js';
import { adminCall as api } from '../testing/auth-call.js';
import { renderFeed, type EvaFeedItem } from './feed.js';
import { canonicalManifest, newPublisherKey, signBytes, type EvaReleaseManifest } from './manifest.js';

// Appliance packages (.eva) through VMcasting, two real managers on loopback:
// A imports packages and publishes them on a channel (the drover CLI and the
// API); B subscribes with A's key pinned, polls, downloads, verifies and
// imports them into its packages. Altered bytes, a forged or unpinned
// signature, and a package whose own signature B does not trust are
// quarantined with their reason and leave no package on B.

let dir: string;
let a: RunningManager;
let b: RunningManager;
let server: Server;
let hostile: string;
let hostileFeed = '';
const stranger = newPublisherKey();
let keyA: { publicKey: string; keyId: string };
const ids: Record<string, string> = {};
const evaFiles: Record<string, string> = {};

const shaOf = (data: Buffer) => createHash('sha256').update(data).digest('hex');

async function upload(m: RunningManager, data: Buffer): Promise<any> {
  const response = await fetch(`${m.url}/api/v1/packages/import/upload?wait=true`, { method: 'POST', headers: { authorization: `Bearer ${m.adminToken}`, 'content-type': 'application/octet-stream' }, body: data });
  const op = (await response.json()) as Operation;
  expect(op.state, JSON.stringify(op)).toBe('done');
  return (op.result as any).package;
}

function drover(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../cli/dist/main.js');
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...argv], { env: { PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: path.join(dir, 'xdg'), DROVER_URL: a.url, DROVER_TOKEN: a.adminToken }, timeout: 120_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr }),
    );
  });
}

const poll = (name: string) => api(b, 'POST', `/api/v1/vmcast/subscriptions/${name}/poll`, {});
const packagesOfB = async () => (await api(b, 'GET', '/api/v1/packages')).body.items.map((p: any) => `${p.name}:${p.version}`).sort();
/** What B keeps of downloads and imports in progress: nothing once a poll is over. */
const leftovers = () =>
  [path.join(dir, 'b', 'library', '.vmcast'), path.join(dir, 'b', 'packages', '.staging')].flatMap((d) => (existsSync(d) ? readdirSync(d) : []));

beforeAll(async () => {
  dir = tempDir('vmcast-eva');
  writeFileSync(path.join(dir, 'root.raw'), randomBytes(1024 * 1024));
  const disk = path.join(dir, 'root.qcow2');
  execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', path.join(dir, 'root.raw'), disk]);
  const virtualSize = JSON.parse(execFileSync('qemu-img', ['info', '-f', 'qcow2', '--output=json', disk], { encoding: 'utf8' }))['virtual-size'] as number;
  const manifest = (name: string, version: string): EvaManifest => ({
    format: 'drover-eva',
    formatVersion: 1,
    name,
    version,
    description: `the ${name} appliance`,
    networks: [{ name: 'lan', kind: 'isolated', subnet: '10.31.0.0/24' }],
    securityGroups: [],
    vms: [{ name: 'app', cpus: 1, memoryMiB: 64, boot: { method: 'disk' }, disks: [{ file: 'disks/app-0.qcow2', format: 'qcow2', role: 'root', sha256: shaOf(readFileSync(disk)), sizeBytes: statSync(disk).size, virtualSizeBytes: virtualSize }], nics: [{ network: 'lan' }] }],
  });
  const config = (name: string) => ({ ...defaultManagerConfig(path.join(dir, name)), listen: '127.0.0.1:0', appliances: false });
  a = await startManager(config('a'), { vmcast: { tickMs: 0 } });
  b = await startManager(config('b'), { vmcast: { tickMs: 0 } });
  const created = await api(a, 'POST', '/api/v1/vmcast/keys', { name: 'publisher' });
  expect(created.status).toBe(201);
  keyA = created.body;
  const privateA = (await a.store.vmcast.keys.list({ limit: 1, filter: { state: 'active' } })).items[0]!;
  expect((await api(a, 'POST', '/api/v1/vmcast/channels', { name: 'apps' })).status).toBe(201);
  // A trusts a stranger's key for packages; B never does.
  expect((await api(a, 'POST', '/api/v1/packages/trusted-keys', { name: 'stranger', publicKey: stranger.publicKey })).status).toBe(201);
  for (const [name, version, key] of [['web-app', '1.0', privateA], ['web-app', '2.0', privateA], ['odd-app', '1.0', stranger]] as const) {
    const file = path.join(dir, `${name}-${version}.eva`);
    await writeEva(file, manifest(name, version), new Map([['disks/app-0.qcow2', disk]]), key);
    evaFiles[`${name}:${version}`] = file;
    ids[`${name}:${version}`] = (await upload(a, readFileSync(file))).id;
  }
  server = createServer((req, res) => {
    if (req.url === '/feed') return void res.writeHead(200, { 'content-type': 'application/rss+xml' }).end(hostileFeed);
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  hostile = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}, 180_000);

afterAll(async () => {
  await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
  await a?.close();
  await b?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('appliance packages through VMcasting', () => {
  it('publishes a package on a channel (drover channel publish-package) and refuses bad requests', async () => {
    const help = await drover(['channel', '--help']);
    expect(help.stdout).toContain('publish-package');
    const published = await drover(['channel', 'publish-package', 'apps', ids['web-app:1.0']!]);
    expect(published.code, published.stderr).toBe(0);
    expect(published.stdout).toContain('Published appliance package web-app 1.0 on channel apps.');
    const listed = await drover(['channel', 'appliance-packages', 'apps']);
    expect(listed.stdout).toMatch(/web-app\s+1\.0\s+published/);

    // Bad requests change nothing.
    expect((await api(a, 'POST', '/api/v1/vmcast/channels/apps/appliance-packages', { package: 'web-app:1.0' })).status).toBe(409);
    expect((await api(a, 'POST', '/api/v1/vmcast/channels/apps/appliance-packages', { package: 'nothing:9' })).status).toBe(404);
    expect((await api(a, 'POST', '/api/v1/vmcast/channels/nowhere/appliance-packages', { package: 'web-app:1.0' })).status).toBe(404);
    expect((await api(a, 'POST', '/api/v1/vmcast/channels/apps/appliance-packages', { package: '../x' })).status).toBe(400);
    expect((await api(a, 'POST', '/api/v1/vmcast/channels/apps/appliance-packages', {})).status).toBe(400);
    expect((await api(a, 'GET', '/api/v1/vmcast/channels/apps/appliance-packages')).body.items.map((r: any) => `${r.name}:${r.version}`)).toEqual(['web-app:1.0']);
    // Appliance packages are not image releases.
    expect((await api(a, 'GET', '/api/v1/vmcast/channels/apps/releases')).body.items).toEqual([]);

    // The feed item: the .eva enclosure type, the namespaced sha256, size, version and signature.
    const feed = await (await fetch(`${a.url}/api/v1/vmcast/channels/apps/feed.rss`)).text();
    const sha = shaOf(readFileSync(evaFiles['web-app:1.0']!));
    const size = statSync(evaFiles['web-app:1.0']!).size;
    expect(feed).toContain(`<enclosure url="${a.url}/api/v1/vmcast/channels/apps/appliance-packages/web-app/1.0/file" length="${size}" type="application/vnd.drover.eva+tar"/>`);
    expect(feed).toContain('<vmcast:kind>eva</vmcast:kind>');
    expect(feed).toContain(`<vmcast:sha256>${sha}</vmcast:sha256>`);
    expect(feed).toContain(`<vmcast:size>${size}</vmcast:size>`);
    expect(feed).toContain('<vmcast:version>1.0</vmcast:version>');
    expect(feed).toMatch(new RegExp(`<vmcast:signature keyId="${keyA.keyId}" algorithm="ed25519">[A-Za-z0-9+/=]+</vmcast:signature>`));
    const catalog = (await (await fetch(`${a.url}/api/v1/vmcast/channels/apps/catalog.json`)).json()) as any;
    expect(catalog.appliancePackages).toMatchObject([{ kind: 'eva', name: 'web-app', version: '1.0', sha256: sha, sizeBytes: size, type: 'application/vnd.drover.eva+tar', keyId: keyA.keyId }]);
    // The enclosure is served with ranges (resumed downloads).
    const part = await fetch(`${a.url}/api/v1/vmcast/channels/apps/appliance-packages/web-app/1.0/file`, { headers: { range: 'bytes=512-1023' } });
    expect(part.status).toBe(206);
    expect(Buffer.from(await part.arrayBuffer())).toEqual(readFileSync(evaFiles['web-app:1.0']!).subarray(512, 1024));
  }, 120_000);

  it('a subscriber downloads, verifies with the pinned key and imports the package', async () => {
    expect(await packagesOfB()).toEqual([]);
    const sub = await api(b, 'POST', '/api/v1/vmcast/subscriptions', { name: 'apps', url: `${a.url}/api/v1/vmcast/channels/apps/feed.rss`, pinnedKeys: [keyA.publicKey] });
    expect(sub.status).toBe(201);
    const first = await poll('apps');
    expect(first.status).toBe(200);
    expect(first.body.imported).toEqual(['web-app 1.0 (appliance package)']);
    expect(first.body.quarantined).toEqual([]);
    expect(first.body.failed).toEqual([]);
    expect(await packagesOfB()).toEqual(['web-app:1.0']);
    const onA = (await api(a, 'GET', '/api/v1/packages/web-app:1.0')).body;
    const onB = (await api(b, 'GET', '/api/v1/packages/web-app:1.0')).body;
    expect(onB.source).toBe('vmcast');
    expect(onB.manifest).toEqual(onA.manifest);
    // B keeps the same signed .eva bytes.
    const file = await fetch(`${b.url}/api/v1/packages/${onB.id}/file`, { headers: { authorization: `Bearer ${b.adminToken}` } });
    expect(shaOf(Buffer.from(await file.arrayBuffer()))).toBe(shaOf(readFileSync(evaFiles['web-app:1.0']!)));
    const releases = (await api(b, 'GET', '/api/v1/vmcast/subscriptions/apps/releases')).body.items;
    expect(releases.map((r: any) => [r.name, r.version, r.state, r.manifest.kind])).toEqual([['web-app', '1.0', 'verified', 'eva']]);
    // Polled again: nothing new, nothing imported twice.
    const again = await poll('apps');
    expect(again.body.imported).toEqual([]);
    expect(await packagesOfB()).toEqual(['web-app:1.0']);
    expect(leftovers()).toEqual([]);
  }, 120_000);

  it('altered bytes are quarantined and no package is imported', async () => {
    expect((await api(a, 'POST', '/api/v1/vmcast/channels/apps/appliance-packages', { package: ids['web-app:2.0'] })).status).toBe(201);
    // The publisher's stored .eva changes after it was signed (a byte inside the disk).
    const sha = shaOf(readFileSync(evaFiles['web-app:2.0']!));
    const blob = a.vmcast.evaBlobPath(sha);
    const fd = openSync(blob, 'r+');
    writeSync(fd, Buffer.from([0x5a]), 0, 1, statSync(blob).size - 4096);
    closeSync(fd);
    const result = await poll('apps');
    expect(result.body.imported).toEqual([]);
    expect(result.body.quarantined).toEqual([{ release: 'web-app 2.0', reason: expect.stringMatching(/its sha256 [0-9a-f]{64} differs from the signed/) }]);
    expect(await packagesOfB()).toEqual(['web-app:1.0']);
    const releases = (await api(b, 'GET', '/api/v1/vmcast/subscriptions/apps/releases')).body.items;
    expect(releases.find((r: any) => r.version === '2.0').state).toBe('quarantined');
    expect(leftovers()).toEqual([]);
  }, 120_000);

  it('a package whose own signature the subscriber does not trust is quarantined', async () => {
    // A signs the feed item, but the .eva inside is signed by a key only A trusts: the pinned key is all B trusts for it.
    expect((await api(a, 'POST', '/api/v1/vmcast/channels/apps/appliance-packages', { package: 'odd-app:1.0' })).status).toBe(201);
    const result = await poll('apps');
    expect(result.body.imported).toEqual([]);
    expect(result.body.quarantined).toEqual([{ release: 'odd-app 1.0', reason: expect.stringMatching(/signed by key .* which this manager does not trust/) }]);
    expect(await packagesOfB()).toEqual(['web-app:1.0']);
    expect(leftovers()).toEqual([]);
  }, 120_000);

  it('a forged or unpinned signature is quarantined before anything is downloaded', async () => {
    const bytes = readFileSync(evaFiles['web-app:2.0']!);
    const manifest = (name: string): EvaReleaseManifest => ({ kind: 'eva', channel: 'apps', name, version: '1.0', description: '', sha256: shaOf(bytes), sizeBytes: bytes.length });
    const url = `${a.url}/api/v1/vmcast/channels/apps/appliance-packages/web-app/1.0/file`;
    const forged: EvaFeedItem = { manifest: manifest('forged'), url, length: bytes.length, keyId: keyA.keyId, signature: signBytes(canonicalManifest(manifest('forged')), stranger.privateKey) };
    const unpinned: EvaFeedItem = { manifest: manifest('unpinned'), url, length: bytes.length, keyId: stranger.keyId, signature: signBytes(canonicalManifest(manifest('unpinned')), stranger.privateKey) };
    // Another kind's signature (a guest package's) never verifies as an appliance package's.
    const asRelease = manifest('kindswap');
    const kindswap: EvaFeedItem = { manifest: asRelease, url, length: bytes.length, keyId: keyA.keyId, signature: signBytes(canonicalManifest({ ...asRelease, kind: 'package' } as never), (await a.store.vmcast.keys.list({ limit: 1, filter: { state: 'active' } })).items[0]!.privateKey) };
    hostileFeed = renderFeed({ name: 'apps', title: 'apps', description: 'forged', link: hostile }, [], [], [], [forged, unpinned, kindswap]);
    expect((await api(b, 'POST', '/api/v1/vmcast/subscriptions', { name: 'forged', url: `${hostile}/feed`, pinnedKeys: [keyA.publicKey] })).status).toBe(201);
    const result = await poll('forged');
    expect(result.body.imported).toEqual([]);
    const reasons = Object.fromEntries(result.body.quarantined.map((q: any) => [q.release, q.reason]));
    expect(reasons['forged 1.0 (appliance package)']).toMatch(/signature does not verify with the pinned key/);
    expect(reasons['unpinned 1.0 (appliance package)']).toMatch(/not pinned for this subscription/);
    expect(reasons['kindswap 1.0 (appliance package)']).toMatch(/signature does not verify with the pinned key/);
    const releases = (await api(b, 'GET', '/api/v1/vmcast/subscriptions/forged/releases')).body.items;
    expect(releases.map((r: any) => [r.name, r.state, r.receivedBytes]).sort()).toEqual([['forged', 'quarantined', 0], ['kindswap', 'quarantined', 0], ['unpinned', 'quarantined', 0]]);
    expect(await packagesOfB()).toEqual(['web-app:1.0']);
    expect(leftovers()).toEqual([]);
  }, 120_000);
});

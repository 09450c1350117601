/* eslint-disable @typescript-eslint/no-explicit-any -- API answers are read as loose JSON in these tests */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '@drover/agent/testing';
import { defaultManagerConfig } from '../config.js';
import { startManager, type RunningManager } from '../manager.js';
import { renderFeed, type FeedItem } from './feed.js';
import { canonicalManifest, newPublisherKey, signBytes, type ReleaseManifest } from './manifest.js';

// A hostile publisher on loopback (a plain HTTP server serving crafted feeds and
// images) against a real manager: each bad feed or release is refused with its
// reason and nothing enters the library; a cut download resumes with a Range.

const maxFeedBytes = 1024 * 1024;
let dir: string;
let manager: RunningManager;
let server: Server;
let base: string;
const publisher = newPublisherKey();
const stranger = newPublisherKey();
const feeds = new Map<string, string | (() => AsyncGenerator<Buffer>)>();
const files = new Map<string, { body: Buffer; cutAt?: number }>();
const ranges: Array<{ file: string; range: string | undefined }> = [];
let feedBytesSent = 0;
let good: Buffer;
let backed: Buffer;

function manifestOf(name: string, version: string, body: Buffer, over: Partial<ReleaseManifest> = {}): ReleaseManifest {
  return { channel: 'evil', name, version, architecture: 'x86_64', format: 'qcow2', bootMethod: 'disk', sha256: createHash('sha256').update(body).digest('hex'), sizeBytes: body.length, minMemoryMiB: 64, minCpus: 1, labels: {}, ...over };
}
function item(manifest: ReleaseManifest, url: string, options: { key?: typeof publisher; keyId?: string; length?: number } = {}): FeedItem {
  const key = options.key ?? publisher;
  return { manifest, url, length: options.length ?? manifest.sizeBytes, keyId: options.keyId ?? key.keyId, signature: signBytes(canonicalManifest(manifest), key.privateKey) };
}
function feedOf(items: FeedItem[]): string {
  return renderFeed({ name: 'evil', title: 'evil', description: 'test', link: base }, [], items);
}

async function api<T = any>(method: string, route: string, body?: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(`${manager.url}${route}`, { method, headers: { authorization: `Bearer ${manager.adminToken}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}) });
  const text = await response.text();
  return { status: response.status, body: (text ? JSON.parse(text) : undefined) as T };
}
async function subscribe(name: string, feed: string, extra: Record<string, unknown> = {}) {
  const answer = await api('POST', '/api/v1/vmcast/subscriptions', { name, url: `${base}/feed/${feed}`, pinnedKeys: [publisher.publicKey], ...extra });
  expect(answer.status).toBe(201);
  return answer.body;
}
const poll = (name: string) => api('POST', `/api/v1/vmcast/subscriptions/${name}/poll`, {});
const imageCount = async () => (await api<{ items: unknown[] }>('GET', '/api/v1/images?limit=1000')).body.items.length;

beforeAll(async () => {
  dir = tempDir('vmcast-rej');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(dir, 'base.qcow2'), '4M']);
  // An image with content: 6 MiB of random data in a qcow2 (so a download can be cut in its middle).
  writeFileSync(path.join(dir, 'data.raw'), randomBytes(6 * 1024 * 1024));
  execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', path.join(dir, 'data.raw'), path.join(dir, 'good.qcow2')]);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', path.join(dir, 'base.qcow2'), '-F', 'qcow2', path.join(dir, 'backed.qcow2')]);
  good = readFileSync(path.join(dir, 'good.qcow2'));
  backed = readFileSync(path.join(dir, 'backed.qcow2'));
  server = createServer((req, res) => {
    const url = req.url ?? '';
    if (url.startsWith('/feed/')) {
      const feed = feeds.get(url.slice(6));
      if (feed === undefined) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-type': 'application/rss+xml' });
      if (typeof feed === 'string') return void res.end(feed);
      void (async () => {
        for await (const chunk of feed()) {
          if (res.destroyed) return;
          feedBytesSent += chunk.length;
          if (!res.write(chunk)) await new Promise((r) => res.once('drain', r).once('close', r));
        }
        res.end();
      })();
      return;
    }
    if (url.startsWith('/img/')) {
      const name = url.slice(5);
      const file = files.get(name);
      if (!file) return void res.writeHead(404).end();
      ranges.push({ file: name, range: req.headers.range });
      const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
      const start = m ? Number(m[1]) : 0;
      const body = file.body.subarray(start);
      res.writeHead(m ? 206 : 200, { 'content-length': String(body.length), ...(m ? { 'content-range': `bytes ${start}-${file.body.length - 1}/${file.body.length}` } : {}) });
      if (file.cutAt !== undefined && !m) {
        // The first attempt: the connection dies in the middle.
        res.write(body.subarray(0, file.cutAt), () => res.destroy());
        return;
      }
      return void res.end(body);
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  manager = await startManager({ ...defaultManagerConfig(path.join(dir, 'manager')), listen: '127.0.0.1:0', appliances: false }, { vmcast: { tickMs: 0, maxFeedBytes } });
}, 120_000);

afterAll(async () => {
  await manager?.close();
  await new Promise((r) => server?.close(r));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('VMcasting refuses untrusted input', () => {
  it('quarantines a tampered image, a wrong signature, a revoked key, a wrong size, a file:// enclosure and a backing file, importing nothing', async () => {
    const before = await imageCount();
    const tampered = Buffer.from(good);
    tampered[tampered.length - 100] = tampered[tampered.length - 100]! ^ 0xff;
    files.set('good', { body: good });
    files.set('tampered', { body: tampered });
    files.set('backed', { body: backed });
    const cases: Array<{ name: string; items: FeedItem[]; reason: RegExp; revoke?: boolean }> = [
      { name: 'tampered', items: [item(manifestOf('app', '1', good), `${base}/img/tampered`)], reason: /sha256 .* differs from the signed/ },
      { name: 'badsig', items: [item(manifestOf('app', '1', good), `${base}/img/good`, { key: stranger, keyId: publisher.keyId })], reason: /signature does not verify/ },
      { name: 'unpinned', items: [item(manifestOf('app', '1', good), `${base}/img/good`, { key: stranger })], reason: /not pinned/ },
      { name: 'revoked', items: [item(manifestOf('app', '1', good), `${base}/img/good`)], reason: /revoked/, revoke: true },
      { name: 'length', items: [item(manifestOf('app', '1', good), `${base}/img/good`, { length: good.length - 1 })], reason: /enclosure length .* differs from the signed size/ },
      { name: 'size', items: [item(manifestOf('app', '1', good, { sizeBytes: good.length - 512 }), `${base}/img/good`)], reason: /larger than its signed size .*wrong size/ },
      { name: 'fileurl', items: [item(manifestOf('app', '1', good), 'file:///etc/passwd')], reason: /uses file; only http and https/ },
      { name: 'backing', items: [item(manifestOf('app', '1', backed), `${base}/img/backed`)], reason: /backing/ },
    ];
    for (const c of cases) {
      feeds.set(c.name, feedOf(c.items));
      await subscribe(c.name, c.name);
      if (c.revoke) expect((await api('POST', `/api/v1/vmcast/subscriptions/${c.name}/keys/${publisher.keyId}/revoke`, {})).status).toBe(200);
      const result = await poll(c.name);
      expect(result.status, c.name).toBe(200);
      expect(result.body.imported, c.name).toEqual([]);
      expect(result.body.quarantined.map((q: { reason: string }) => q.reason).join(' | '), c.name).toMatch(c.reason);
      const releases = (await api(`GET`, `/api/v1/vmcast/subscriptions/${c.name}/releases`)).body.items;
      expect(releases.map((r: { state: string }) => r.state), c.name).toEqual(['quarantined']);
      expect(releases[0].reason, c.name).toMatch(c.reason);
    }
    expect(await imageCount()).toBe(before);
    // Each refusal raised an event with its reason.
    const events = (await manager.store.events.since(0, 10_000)).filter((e) => e.type === 'vmcast.release.quarantined');
    expect(events.length).toBeGreaterThanOrEqual(cases.length);
    expect(events.map((e) => String((e.data as { reason: string }).reason)).join(' | ')).toMatch(/sha256 .* differs/);
    // No half-downloaded file is left behind.
    expect(readdirSafe(path.join(dir, 'manager', 'library', '.vmcast'))).toEqual([]);
  }, 120_000);

  it('refuses a feed with XXE, a billion-laughs feed and a 1 GB feed (cut at the limit)', async () => {
    const before = await imageCount();
    feeds.set('xxe', `<?xml version="1.0"?>\n<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n<rss version="2.0"><channel><title>&xxe;</title></channel></rss>`);
    const lol = ['<!ENTITY lol "lol">', ...Array.from({ length: 9 }, (_, i) => `<!ENTITY lol${i + 1} "${`&lol${i || ''};`.repeat(10)}">`)].join('');
    feeds.set('laughs', `<?xml version="1.0"?>\n<!DOCTYPE rss [${lol}]>\n<rss version="2.0"><channel><title>&lol9;</title></channel></rss>`);
    feeds.set('huge', async function* () {
      yield Buffer.from('<?xml version="1.0"?><rss version="2.0"><channel><title>');
      const chunk = Buffer.alloc(1024 * 1024, 'a');
      for (let i = 0; i < 1024; i++) yield chunk;
      yield Buffer.from('</title></channel></rss>');
    });
    for (const [name, reason] of [
      ['xxe', /DOCTYPE or entities/],
      ['laughs', /DOCTYPE or entities/],
      ['huge', /larger than the limit of 1048576 bytes/],
    ] as const) {
      await subscribe(name, name);
      const result = await poll(name);
      expect(result.body.error, name).toMatch(reason);
      expect(result.body.imported).toEqual([]);
      const sub = (await api('GET', '/api/v1/vmcast/subscriptions')).body.items.find((s: { name: string }) => s.name === name);
      expect(sub.lastError).toMatch(reason);
      expect(sub.failures).toBe(1);
      // Backoff: the next poll is later than the normal interval.
      expect(Date.parse(sub.nextPollAt) - Date.now()).toBeGreaterThan(3600 * 1000);
    }
    // The 1 GB feed was cut near the limit, not read to its end.
    expect(feedBytesSent).toBeLessThan(64 * 1024 * 1024);
    expect(await imageCount()).toBe(before);
  }, 120_000);

  it('resumes a download cut in the middle where it stopped, and imports it verified', async () => {
    files.set('cut', { body: good, cutAt: 2 * 1024 * 1024 + 12345 });
    feeds.set('cut', feedOf([item(manifestOf('resumed', '1', good), `${base}/img/cut`)]));
    await subscribe('cut', 'cut', { allowedHosts: ['127.0.0.1'] });
    const first = await poll('cut');
    expect(first.body.imported).toEqual([]);
    expect(first.body.failed[0].reason).toMatch(/download stopped at/);
    const partial = (await api('GET', '/api/v1/vmcast/subscriptions/cut/releases')).body.items[0];
    expect(partial.state).toBe('available');
    expect(partial.receivedBytes).toBeGreaterThan(0);
    expect(partial.receivedBytes).toBeLessThan(good.length);
    // A half-downloaded file is never an image.
    expect((await api('GET', '/api/v1/images/resumed:1')).status).toBe(404);
    const second = await poll('cut');
    expect(second.body.imported).toEqual(['resumed 1']);
    const cutRanges = ranges.filter((r) => r.file === 'cut');
    expect(cutRanges.map((r) => r.range)).toEqual([undefined, `bytes=${partial.receivedBytes}-`]);
    const image = (await api('GET', '/api/v1/images/resumed:1')).body;
    expect(image.sha256).toBe(createHash('sha256').update(good).digest('hex'));
    const verified = (await api('GET', '/api/v1/vmcast/subscriptions/cut/releases')).body.items[0];
    expect(verified.state).toBe('verified');
  }, 120_000);

  it('rotates publisher keys (a new key endorsed by a pinned one is learnt) and revokes them', async () => {
    // This manager publishes to itself over loopback: k1, then k2 (k1 retired, endorsing k2).
    const k1 = (await api('POST', '/api/v1/vmcast/keys', { name: 'k1' })).body;
    expect((await api('POST', '/api/v1/vmcast/channels', { name: 'own' })).status).toBe(201);
    expect((await api('POST', '/api/v1/vmcast/channels/own/releases', { image: 'resumed:1', name: 'own', version: '1' })).status).toBe(201);
    const sub = await api('POST', '/api/v1/vmcast/subscriptions', { name: 'self', url: `${manager.url}/api/v1/vmcast/channels/own/feed.rss`, pinnedKeys: [k1.publicKey] });
    expect(sub.status).toBe(201);
    const k2 = (await api('POST', '/api/v1/vmcast/keys', { name: 'k2' })).body;
    expect((await api('GET', '/api/v1/vmcast/keys')).body.items.map((k: { name: string; state: string }) => [k.name, k.state])).toEqual([
      ['k1', 'retired'],
      ['k2', 'active'],
    ]);
    expect((await poll('self')).body.imported).toEqual(['own 1']);
    const pins = async () => (await api('GET', '/api/v1/vmcast/subscriptions')).body.items.find((x: { name: string }) => x.name === 'self').pinnedKeys;
    expect(await pins()).toEqual([
      { keyId: k1.keyId, revoked: false },
      { keyId: k2.keyId, revoked: false },
    ]);
    // Revoking k1: the feed announces it, its releases are signed again by k2, new ones by k2.
    expect((await api('POST', '/api/v1/vmcast/keys/k1/revoke', {})).body.state).toBe('revoked');
    expect((await api('GET', '/api/v1/vmcast/channels/own/releases')).body.items.map((r: { keyId: string }) => r.keyId)).toEqual([k2.keyId]);
    expect((await api('POST', '/api/v1/vmcast/channels/own/releases', { image: 'resumed:1', name: 'own', version: '2' })).status).toBe(201);
    const after = await poll('self');
    expect(after.body).toMatchObject({ status: 200, imported: ['own 2'], quarantined: [] });
    expect(await pins()).toEqual([
      { keyId: k1.keyId, revoked: true },
      { keyId: k2.keyId, revoked: false },
    ]);
    // A key endorsed by a key that is not pinned is not learnt.
    const outsider = newPublisherKey();
    feeds.set(
      'endorsed',
      renderFeed({ name: 'evil', title: 'evil', description: '', link: base }, [{ keyId: outsider.keyId, state: 'active', publicKey: outsider.publicKey, endorsedBy: stranger.keyId, endorsement: signBytes(Buffer.from(`drover-vmcast-key-endorsement:${outsider.keyId}`), stranger.privateKey) }], [
        item(manifestOf('app', '9', good), `${base}/img/good`, { key: outsider }),
      ]),
    );
    await subscribe('endorsed', 'endorsed');
    expect((await poll('endorsed')).body.quarantined[0].reason).toMatch(/not pinned/);
  });

  it('refuses an enclosure on a host off the allow-list', async () => {
    feeds.set('offlist', feedOf([item(manifestOf('app', '2', good), `http://localhost:1/img/good`)]));
    await subscribe('offlist', 'offlist', { allowedHosts: ['127.0.0.1'] });
    const result = await poll('offlist');
    expect(result.body.quarantined[0].reason).toMatch(/not on the subscription's allow-list/);
  });
});

function readdirSafe(p: string): string[] {
  try {
    return readdirSync(p);
  } catch {
    return [];
  }
}

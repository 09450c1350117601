/* eslint-disable @typescript-eslint/no-explicit-any -- API answers are read as loose JSON in these tests */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '@drover/agent/testing';
import type { EvaManifest, Operation } from '@drover/api';
import { defaultManagerConfig } from '../config.js';
import { startManager, type RunningManager } from '../manager.js';
import { adminCall as api } from '../testing/auth-call.js';
import { newPublisherKey, signBytes } from '../vmcasting/manifest.js';
import { sha256Sums, writeEva } from './eva-format.js';
import { tarHeader } from './tar.js';

// Two real managers (separate data directories, loopback) and real qemu-img:
// a package signed on one is downloaded and imported on the other with the same
// manifest and disk bytes; a corpus of malicious packages made here is refused,
// each with its reason, with nothing written outside the staging directory and
// nothing entering the library or the store.

let dir: string;
let a: RunningManager;
let b: RunningManager;
const stranger = newPublisherKey();
const maxEntryBytes = 64 * 1024 * 1024;
let disks: { webRoot: string; dbRoot: string; dbData: string; backed: string; kernel: string; initrd: string };

const sha = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');
const shaOf = (data: Buffer) => createHash('sha256').update(data).digest('hex');

async function upload(m: RunningManager, data: Buffer): Promise<Operation> {
  const response = await fetch(`${m.url}/api/v1/packages/import/upload?wait=true`, { method: 'POST', headers: { authorization: `Bearer ${m.adminToken}`, 'content-type': 'application/octet-stream' }, body: data });
  const body = (await response.json()) as Operation;
  expect(response.status, JSON.stringify(body)).toBe(200);
  return body;
}

function info(file: string): { virtualSize: number } {
  return { virtualSize: JSON.parse(execFileSync('qemu-img', ['info', '-f', 'qcow2', '--output=json', file], { encoding: 'utf8' }))['virtual-size'] };
}

function diskEntry(vm: string, n: number, file: string, role: 'root' | 'data') {
  return { file: `disks/${vm}-${n}.qcow2`, format: 'qcow2' as const, role, sha256: sha(file), sizeBytes: statSync(file).size, virtualSizeBytes: info(file).virtualSize };
}

function manifestOf(name: string, version: string, over: Partial<EvaManifest> = {}): EvaManifest {
  return {
    format: 'drover-eva',
    formatVersion: 1,
    name,
    version,
    description: 'a web server and a database',
    networks: [{ name: 'lan', kind: 'isolated', subnet: '10.20.0.0/24' }],
    securityGroups: [{ name: 'web', rules: [{ direction: 'ingress', protocol: 'tcp', ports: { from: 80, to: 80 } }] }],
    vms: [
      {
        name: 'db',
        cpus: 1,
        memoryMiB: 128,
        boot: { method: 'disk' },
        disks: [diskEntry('db', 0, disks.dbRoot, 'root'), diskEntry('db', 1, disks.dbData, 'data')],
        nics: [{ network: 'lan', ip: '10.20.0.10' }],
        healthCheck: { kind: 'tcp', port: 7000 },
      },
      {
        name: 'web',
        cpus: 1,
        memoryMiB: 96,
        boot: { method: 'appliance', kernel: 'files/vmlinuz', initrd: 'files/initrd.img', cmdline: 'console=ttyS0 quiet' },
        disks: [diskEntry('web', 0, disks.webRoot, 'root')],
        nics: [{ network: 'lan', securityGroups: ['web'] }],
        labels: { tier: 'web' },
        guest: { cmdline: 'drover.db=10.20.0.10' },
        dependsOn: ['db'],
        healthCheck: { kind: 'http', port: 80, path: '/health', expect: 'ok' },
      },
    ],
    updatePolicy: { policy: 'pinned' },
    ...over,
  };
}

function filesOf(): Map<string, string> {
  return new Map([
    ['files/vmlinuz', disks.kernel],
    ['files/initrd.img', disks.initrd],
    ['disks/db-0.qcow2', disks.dbRoot],
    ['disks/db-1.qcow2', disks.dbData],
    ['disks/web-0.qcow2', disks.webRoot],
  ]);
}

/** A tar made entry by entry, for the malicious corpus. */
type RawEntry = { name: string; type?: string; body?: Buffer; size?: number; linkName?: string };
function rawTar(entries: RawEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const body = e.body ?? Buffer.alloc(0);
    parts.push(tarHeader({ name: e.name, size: e.size ?? body.length, type: e.type ?? '0', ...(e.linkName ? { linkName: e.linkName } : {}) }));
    parts.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/** A signed package made of raw entries: SHA256SUMS over `sums` (default: every regular file), signed by `key`. */
function signedTar(manifest: EvaManifest | Buffer, entries: RawEntry[], key: { privateKey: string; keyId: string }, options: { sums?: Array<{ path: string; sha256: string }>; manifestFirst?: boolean } = {}): Buffer {
  const manifestBytes = Buffer.isBuffer(manifest) ? manifest : Buffer.from(JSON.stringify(manifest));
  const files = entries.filter((e) => (e.type ?? '0') === '0' && e.body);
  const sums = sha256Sums(options.sums ?? [{ path: 'manifest.json', sha256: shaOf(manifestBytes) }, ...files.map((e) => ({ path: e.name, sha256: shaOf(e.body!) }))]);
  const sig = Buffer.from(JSON.stringify({ algorithm: 'ed25519', keyId: key.keyId, signature: signBytes(sums, key.privateKey) }));
  const head: RawEntry = { name: 'manifest.json', body: manifestBytes };
  return rawTar([...(options.manifestFirst === false ? [] : [head]), ...entries, ...(options.manifestFirst === false ? [head] : []), { name: 'SHA256SUMS', body: sums }, { name: 'SHA256SUMS.sig', body: sig }]);
}

/** Everything under `root`, as relative paths (what a refusal must not change). */
function listing(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const name of readdirSync(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${name.name}` : name.name;
      out.push(r);
      if (name.isDirectory()) walk(path.join(d, name.name), r);
    }
  };
  if (existsSync(root)) walk(root, '');
  return out.sort();
}

let keyA: { publicKey: string; keyId: string };

beforeAll(async () => {
  dir = tempDir('packages');
  const raw = (name: string, bytes: number) => {
    const file = path.join(dir, `${name}.raw`);
    writeFileSync(file, randomBytes(bytes));
    return file;
  };
  const qcow2 = (name: string, bytes: number) => {
    const out = path.join(dir, `${name}.qcow2`);
    execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw(name, bytes), out]);
    return out;
  };
  writeFileSync(path.join(dir, 'host-secret'), 'secret of the host\n');
  const backed = path.join(dir, 'backed.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', path.join(dir, 'host-secret'), '-F', 'raw', backed, '1M']);
  disks = { webRoot: qcow2('web-root', 2 * 1024 * 1024), dbRoot: qcow2('db-root', 1024 * 1024), dbData: qcow2('db-data', 512 * 1024), backed, kernel: raw('kernel', 100_000), initrd: raw('initrd', 50_000) };
  const config = (name: string) => ({ ...defaultManagerConfig(path.join(dir, name)), listen: '127.0.0.1:0', appliances: false });
  a = await startManager(config('a'), { vmcast: { tickMs: 0 }, packageLimits: { maxEntryBytes } });
  b = await startManager(config('b'), { vmcast: { tickMs: 0 }, packageLimits: { maxEntryBytes } });
  const created = await api(a, 'POST', '/api/v1/vmcast/keys', { name: 'publisher' });
  expect(created.status).toBe(201);
  keyA = created.body;
}, 120_000);

afterAll(async () => {
  await a?.close();
  await b?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function privateKeyOfA(): Promise<{ privateKey: string; publicKey: string }> {
  const key = (await a.store.vmcast.keys.list({ limit: 10, filter: { state: 'active' } })).items[0]!;
  return { privateKey: key.privateKey, publicKey: key.publicKey };
}

describe('EVA packages', () => {
  it('a package signed on one manager imports on a second one with the same manifest and disk bytes', async () => {
    const evaFile = path.join(dir, 'web-db-1.0.eva');
    const manifest = manifestOf('web-db', '1.0');
    const written = await writeEva(evaFile, manifest, filesOf(), await privateKeyOfA());
    expect(written.keyId).toBe(keyA.keyId);
    // The file is a plain ustar: GNU tar lists it, manifest first, checksums and signature last.
    const names = execFileSync('tar', ['-tf', evaFile], { encoding: 'utf8' }).trim().split('\n');
    expect(names).toEqual(['manifest.json', 'files/', 'disks/', 'files/initrd.img', 'files/vmlinuz', 'disks/db-0.qcow2', 'disks/db-1.qcow2', 'disks/web-0.qcow2', 'SHA256SUMS', 'SHA256SUMS.sig']);

    // On A (its own key signs): imported, and the .eva is served back byte for byte.
    const opA = await upload(a, readFileSync(evaFile));
    expect(opA.state, JSON.stringify(opA)).toBe('done');
    const pkgA = (opA.result as any).package;
    const download = await fetch(`${a.url}/api/v1/packages/${pkgA.id}/file`, { headers: { authorization: `Bearer ${a.adminToken}` } });
    expect(download.status).toBe(200);
    expect(download.headers.get('content-type')).toBe('application/vnd.drover.eva+tar');
    const bytes = Buffer.from(await download.arrayBuffer());
    expect(shaOf(bytes)).toBe(written.sha256);

    // On B: refused until A's key is trusted there.
    const untrusted = await upload(b, bytes);
    expect(untrusted.state).toBe('failed');
    expect(untrusted.error?.message).toMatch(/signed by key .* which this manager does not trust/);
    expect((await api(b, 'POST', '/api/v1/packages/trusted-keys', { name: 'site-a', publicKey: keyA.publicKey })).status).toBe(201);
    const opB = await upload(b, bytes);
    expect(opB.state, JSON.stringify(opB)).toBe('done');
    const pkgB = (await api(b, 'GET', '/api/v1/packages/web-db:1.0')).body;
    expect(pkgB.manifest).toEqual(manifest);
    expect(pkgB.signerKeyId).toBe(keyA.keyId);
    expect(pkgB.source).toBe('import');
    expect(Object.keys(pkgB.images).sort()).toEqual([...filesOf().keys()].sort());
    // Every disk and boot file is an image of B's library with the very bytes of the source.
    const libraryB = path.join(dir, 'b', 'library');
    for (const [file, source] of filesOf()) {
      const image = (await api(b, 'GET', `/api/v1/images/${pkgB.images[file]}`)).body;
      expect(image.sha256, file).toBe(sha(source));
      const stored = file.startsWith('disks/') ? path.join(libraryB, `${image.name}-${image.version}.qcow2`) : image.source;
      expect(sha(stored), file).toBe(sha(source));
    }
    // The root disks carry how they boot (appliance kernel or their own disk).
    const webRoot = pkgB.images['disks/web-0.qcow2'];
    expect((await b.store.vmcast.metadata.byImage(webRoot))?.bootMethod).toBe('appliance-kernel');
    expect((await b.store.vmcast.metadata.byImage(pkgB.images['disks/db-0.qcow2']))?.bootMethod).toBe('disk');
    // Listed, and the same release again is a conflict.
    expect((await api(b, 'GET', '/api/v1/packages')).body.items.map((p: any) => `${p.name}:${p.version}`)).toEqual(['web-db:1.0']);
    const again = await upload(b, bytes);
    expect(again.error?.message).toMatch(/already imported/);

    // A package's image is not deleted on its own.
    const lone = await api(b, 'DELETE', `/api/v1/images/${webRoot}`);
    expect(lone.status).toBe(409);
    expect(lone.body.error.message).toMatch(/belongs to package web-db:1.0; delete the package instead/);
    // Delete: the record, the file and the images go.
    expect((await api(b, 'DELETE', '/api/v1/packages/web-db:1.0')).status).toBe(204);
    expect((await api(b, 'GET', '/api/v1/packages')).body.items).toEqual([]);
    expect((await api(b, 'GET', `/api/v1/images/${webRoot}`)).status).toBe(404);
    expect(readdirSync(libraryB).filter((f) => f.endsWith('.qcow2'))).toEqual([]);
  }, 120_000);

  it('refuses a package of a newer format version with a clear reason', async () => {
    const manifest = { ...manifestOf('future', '1'), formatVersion: 2 } as unknown as EvaManifest;
    const op = await upload(a, signedTar(manifest, [], { ...(await privateKeyOfA()), keyId: keyA.keyId }));
    expect(op.state).toBe('failed');
    expect(op.error?.message).toMatch(/format version 2, newer than this manager reads \(1\)/);
  });

  it('refuses the malicious corpus, each with its reason, writing nothing outside the staging directory', async () => {
    const signer = { ...(await privateKeyOfA()), keyId: keyA.keyId };
    const outside = path.join(dir, 'outside');
    mkdirSync(outside, { recursive: true });
    const canary = path.join(dir, 'a', 'packages', 'canary');
    mkdirSync(path.dirname(canary), { recursive: true });
    writeFileSync(canary, 'canary\n');
    const small = readFileSync(disks.dbData);
    const one = (over: Partial<EvaManifest['vms'][number]> = {}): EvaManifest => ({
      ...manifestOf('evil', '1'),
      networks: [],
      securityGroups: [],
      vms: [{ name: 'x', cpus: 1, memoryMiB: 64, boot: { method: 'disk' }, disks: [{ file: 'disks/x-0.qcow2', format: 'qcow2', role: 'root', sha256: shaOf(small), sizeBytes: small.length, virtualSizeBytes: info(disks.dbData).virtualSize }], nics: [], ...over }],
    });
    const backedBytes = readFileSync(disks.backed);
    const backedManifest = one({ disks: [{ file: 'disks/x-0.qcow2', format: 'qcow2', role: 'root', sha256: shaOf(backedBytes), sizeBytes: backedBytes.length, virtualSizeBytes: 1024 * 1024 }] });
    const tampered = Buffer.from(small);
    tampered[tampered.length - 1] = tampered[tampered.length - 1]! ^ 0xff;
    const strangerKey = { privateKey: stranger.privateKey, keyId: keyA.keyId };
    const disk = (body: Buffer = small): RawEntry => ({ name: 'disks/x-0.qcow2', body });
    const cases: Array<{ name: string; data: Buffer; reason: RegExp }> = [
      { name: 'path traversal', data: signedTar(one(), [{ name: '../../outside/owned', body: Buffer.from('x') }, disk()], signer), reason: /entry "\.\.\/\.\.\/outside\/owned" was refused: its path climbs out with "\.\."/ },
      { name: 'absolute path', data: signedTar(one(), [{ name: `${outside}/owned`, body: Buffer.from('x') }, disk()], signer), reason: /has an absolute path/ },
      { name: 'symlink then write-through', data: signedTar(one(), [{ name: 'disks', type: '2', linkName: outside }, disk()], signer), reason: /entry "disks" is a symbolic link; only regular files and directories/ },
      { name: 'hardlink', data: signedTar(one(), [{ name: 'disks/x-0.qcow2', type: '1', linkName: '/etc/passwd' }], signer), reason: /is a hard link; only regular files/ },
      { name: 'device node', data: signedTar(one(), [{ name: 'disks/x-0.qcow2', type: '3' }], signer), reason: /is a character device/ },
      { name: 'fifo', data: signedTar(one(), [{ name: 'disks/x-0.qcow2', type: '6' }], signer), reason: /is a FIFO/ },
      { name: 'huge sparse size header', data: signedTar(one(), [{ name: 'disks/x-0.qcow2', size: 2 ** 40 }], signer), reason: /announces 1099511627776 bytes, over the limit/ },
      { name: 'GNU sparse entry', data: signedTar(one(), [{ name: 'disks/x-0.qcow2', type: 'S', size: 512 }], signer), reason: /is a GNU sparse file/ },
      { name: 'backing file to a host file', data: signedTar(backedManifest, [disk(backedBytes)], signer), reason: /disk "disks\/x-0.qcow2" was refused as qcow2: .*backing file/ },
      { name: 'bad signature', data: signedTar(one(), [disk()], strangerKey), reason: /signature does not verify/ },
      { name: 'wrong checksum', data: signedTar(one(), [disk(tampered)], signer, { sums: [{ path: 'manifest.json', sha256: shaOf(Buffer.from(JSON.stringify(one()))) }, { path: 'disks/x-0.qcow2', sha256: shaOf(small) }] }), reason: /checksum of "disks\/x-0.qcow2" is wrong/ },
      { name: 'manifest not first', data: signedTar(one(), [disk()], signer, { manifestFirst: false }), reason: /first entry is "disks\/x-0.qcow2", not manifest.json/ },
      { name: 'duplicate names', data: signedTar(one(), [disk(), disk()], signer), reason: /entry "disks\/x-0.qcow2" appears twice/ },
      { name: 'unexpected file', data: signedTar(one(), [{ name: 'files/extra', body: Buffer.from('x') }, disk()], signer), reason: /"files\/extra" is not a file the manifest names/ },
      { name: 'not a tar', data: randomBytes(4096), reason: /not a valid tar archive/ },
    ];
    const parent = path.join(dir, 'a', 'packages');
    const before = listing(parent).filter((f) => !f.startsWith('.uploads') && !f.startsWith('.staging'));
    const packagesBefore = (await api(a, 'GET', '/api/v1/packages')).body.items.length;
    const imagesBefore = (await api(a, 'GET', '/api/v1/images?limit=1000')).body.items.length;
    for (const c of cases) {
      const op = await upload(a, c.data);
      expect(op.state, c.name).toBe('failed');
      expect(op.error?.code, c.name).toBe('invalid');
      expect(op.error?.message, c.name).toMatch(/^Package ".*" was refused: /);
      expect(op.error?.message, c.name).toMatch(c.reason);
      // Nothing outside the staging directory, and the staging directory itself is gone.
      expect(readdirSync(outside), c.name).toEqual([]);
      expect(readFileSync(canary, 'utf8'), c.name).toBe('canary\n');
      expect(listing(parent).filter((f) => !f.startsWith('.uploads') && !f.startsWith('.staging')), c.name).toEqual(before);
      expect(listing(path.join(parent, '.staging')), c.name).toEqual([]);
      expect(listing(path.join(parent, '.uploads')), c.name).toEqual([]);
      expect((await api(a, 'GET', '/api/v1/packages')).body.items.length, c.name).toBe(packagesBefore);
      expect((await api(a, 'GET', '/api/v1/images?limit=1000')).body.items.length, c.name).toBe(imagesBefore);
    }
    expect(existsSync(path.join(dir, 'owned'))).toBe(false);
    expect(readFileSync(path.join(dir, 'host-secret'), 'utf8')).toBe('secret of the host\n');
  }, 180_000);
});

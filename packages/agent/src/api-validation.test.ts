import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readQcow2Header } from './pools.js';
import { importAppliance, startTestAgent, tempDir, type ImportedAppliance, type TestAgent } from './testing/harness.js';

let t: TestAgent;
let app: ImportedAppliance;
let scratch: string;

beforeAll(async () => {
  t = await startTestAgent({ capacity: { cpus: 2, memoryMiB: 2048 } });
  app = await importAppliance(t.client, 'counter');
  scratch = tempDir('validation');
});

afterAll(async () => {
  await t?.dispose();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

function goodSpec(name = 'ok-vm'): Record<string, unknown> {
  return {
    name,
    cpus: 1,
    memoryMiB: 128,
    disks: [{ pool: 'default', volume: app.root }],
    boot: { kind: 'kernel', kernel: { pool: 'default', volume: app.kernel }, initrd: { pool: 'default', volume: app.initrd } },
  };
}

/** Everything the agent stores about VMs: nothing may change on a refused request. */
function snapshotState(): string {
  return JSON.stringify({ vms: readdirSync(path.join(t.stateDir, 'vms')).sort(), volumes: readdirSync(path.join(t.stateDir, 'pools', 'default')).sort() });
}

describe('bad input to the agent API', () => {
  const cases: Array<[string, (spec: Record<string, unknown>) => unknown, number, RegExp]> = [
    ['negative memory', (s) => ({ ...s, memoryMiB: -128 }), 400, /memoryMiB/],
    ['10,000 vCPUs', (s) => ({ ...s, cpus: 10_000 }), 400, /cpus/],
    ['more vCPUs than the host has', (s) => ({ ...s, cpus: 3 }), 400, /3 vCPUs; this host offers at most 2/],
    ['a disk path outside the pool', (s) => ({ ...s, disks: [{ pool: 'default', volume: '../../../etc/shadow' }] }), 400, /volume/],
    ['an absolute disk path', (s) => ({ ...s, disks: [{ pool: 'default', volume: '/etc/shadow' }] }), 400, /volume/],
    ['a disk in an unknown pool', (s) => ({ ...s, disks: [{ pool: 'nope', volume: 'x.qcow2' }] }), 404, /Pool "nope"/],
    ['a missing volume', (s) => ({ ...s, disks: [{ pool: 'default', volume: 'missing.qcow2' }] }), 400, /"default\/missing.qcow2" does not exist/],
    ['unknown fields', (s) => ({ ...s, colour: 'blue' }), 400, /colour/],
    ['a 10 MB name', (s) => ({ ...s, name: 'x'.repeat(10 * 1024 * 1024) }), 413, /larger than/],
    ['a long name', (s) => ({ ...s, name: 'x'.repeat(200) }), 400, /name/],
    ['a name with shell characters', (s) => ({ ...s, name: 'a;rm -rf /' }), 400, /name/],
    ['a string where a number goes', (s) => ({ ...s, cpus: '2' }), 400, /cpus/],
    ['an unoffered CPU model', (s) => ({ ...s, cpuModel: 'EPYC-Rome' }), 400, /not offered/],
    ['a kernel command line with a newline', (s) => ({ ...s, boot: { kind: 'kernel', kernel: { pool: 'default', volume: app.kernel }, cmdline: 'a\nb' } }), 400, /cmdline/],
    ['a duplicated MAC', (s) => ({ ...s, nics: [{ mac: '52:54:00:00:00:01' }, { mac: '52:54:00:00:00:01' }] }), 400, /used twice/],
  ];
  for (const [what, mutate, status, message] of cases) {
    it(`refuses ${what} with ${status} and creates nothing`, async () => {
      const before = snapshotState();
      const answer = await t.client.request<{ error: { code: string; message: string } }>('POST', '/v1/vms', mutate(goodSpec()));
      expect(answer.status).toBe(status);
      expect(answer.body.error.message).toMatch(message);
      expect(typeof answer.body.error.code).toBe('string');
      expect(snapshotState()).toBe(before);
    });
  }

  it('refuses bad JSON with 400', async () => {
    const answer = await t.client.request<{ error: { code: string } }>('POST', '/v1/vms', '{"name": ', { 'content-type': 'application/json' });
    expect(answer.status).toBe(400);
    expect(answer.body.error.code).toBe('invalid');
  });

  it('accepts an action without a body', async () => {
    const vm = await t.client.request<{ id: string }>('POST', '/v1/vms', goodSpec('bodyless'));
    const response = await fetch(`${t.client.url}/v1/vms/${vm.body.id}/pause`, { method: 'POST', headers: { authorization: `Bearer ${t.client.token}` } });
    // Not "must be object": the VM is simply not running.
    expect(response.status).toBe(409);
    expect((await t.client.request('DELETE', `/v1/vms/${vm.body.id}`)).status).toBe(204);
    expect((await fetch(`${t.client.url}/healthz?probe=1`)).status).toBe(200);
  });

  it('answers 404 for unknown VMs and routes', async () => {
    expect((await t.client.request('GET', '/v1/vms/no-such-vm')).status).toBe(404);
    expect((await t.client.request('POST', '/v1/vms/no-such-vm/start', {})).status).toBe(404);
    expect((await t.client.request('GET', '/v1/nothing-here')).status).toBe(404);
  });

  it('refuses a second VM with the same name, and a disk attached read-write twice', async () => {
    const first = await t.client.request<{ id: string }>('POST', '/v1/vms', goodSpec('dup'));
    expect(first.status).toBe(201);
    const before = snapshotState();
    expect((await t.client.request('POST', '/v1/vms', goodSpec('dup'))).status).toBe(409);
    expect((await t.client.request('POST', '/v1/vms', goodSpec('other'))).status).toBe(409);
    expect(snapshotState()).toBe(before);
    expect((await t.client.request('DELETE', `/v1/vms/${first.body.id}`)).status).toBe(204);
  });
});

describe('a start that makes its volumes (StartRequest.ensure)', () => {
  it('refuses, changing nothing, when an import or a clone\'s base is missing; otherwise makes the clone and boots', async () => {
    const id = randomUUID();
    const spec = { ...goodSpec('ensured'), id, disks: [{ pool: 'default', volume: 'ensured.root.qcow2' }] };
    const clone = { name: 'ensured.root.qcow2', cloneOf: app.root };
    const start = (volumes: unknown[]) => t.client.request<{ state?: string; error?: { code: string; message: string; details: { missingVolumes: string[] } } }>('POST', `/v1/vms/${id}/start`, { spec, ensure: { pool: 'default', volumes } });
    const before = snapshotState();
    // An import the host does not have: the start does not import (the manager does, apart).
    const noKernel = await start([{ name: 'absent.kernel', importFrom: '/nonexistent/vmlinuz', format: 'raw' }, clone]);
    expect(noKernel.status).toBe(404);
    expect(noKernel.body.error).toMatchObject({ code: 'not_found', details: { missingVolumes: ['absent.kernel'] } });
    expect(noKernel.body.error!.message).toMatch(/lacks "absent.kernel"/);
    // A clone whose base is not in the pool.
    const noBase = await start([{ name: 'ensured.root.qcow2', cloneOf: 'absent-base.qcow2' }]);
    expect(noBase.body.error).toMatchObject({ code: 'not_found', details: { missingVolumes: ['absent-base.qcow2'] } });
    expect(snapshotState()).toBe(before);
    // Everything there but the VM's own clone: made, and the VM runs on it.
    const started = await start([{ name: app.kernel, importFrom: '/nonexistent/vmlinuz', format: 'raw' }, { name: app.root, importFrom: '/nonexistent/root', format: 'qcow2' }, clone]);
    expect(started.status).toBe(200);
    expect(started.body.state).toBe('running');
    expect(await readQcow2Header(path.join(t.stateDir, 'pools', 'default', 'ensured.root.qcow2'))).toMatchObject({ backing: app.root });
    // Present now: a second start request with the same list leaves the clone as it is.
    expect((await t.client.request('POST', `/v1/vms/${id}/force-off`, {})).status).toBe(200);
    expect((await start([clone])).status).toBe(200);
    expect((await t.client.request('POST', `/v1/vms/${id}/force-off`, {})).status).toBe(200);
    expect((await t.client.request('DELETE', `/v1/vms/${id}`)).status).toBe(204);
    expect((await t.client.request('DELETE', '/v1/pools/default/volumes/ensured.root.qcow2')).status).toBe(204);
  });
});

describe('storage', () => {
  it('makes a thin clone of a 1 GiB base that uses a few hundred KiB at most', async () => {
    await t.client.createVolume('default', { name: 'base-1g.qcow2', sizeBytes: 1024 ** 3 });
    const clone = await t.client.createVolume('default', { name: 'clone-1g.qcow2', cloneOf: 'base-1g.qcow2' });
    expect(clone.virtualBytes).toBe(1024 ** 3);
    expect(clone.backing).toBe('base-1g.qcow2');
    expect(clone.allocatedBytes).toBeLessThanOrEqual(512 * 1024);
    // The answer (read from the new clone's header) is what qemu-img info says of it.
    expect(await t.client.ok('GET', '/v1/pools/default/volumes/clone-1g.qcow2')).toEqual(clone);
    const bigger = await t.client.createVolume('default', { name: 'clone-3g.qcow2', cloneOf: 'base-1g.qcow2', sizeBytes: 3 * 1024 ** 3 });
    expect(bigger).toMatchObject({ virtualBytes: 3 * 1024 ** 3, backing: 'base-1g.qcow2' });
    expect(await t.client.ok('GET', '/v1/pools/default/volumes/clone-3g.qcow2')).toEqual(bigger);
    expect((await t.client.request('DELETE', '/v1/pools/default/volumes/clone-3g.qcow2')).status).toBe(204);
    // The base of a clone cannot go while the clone exists.
    expect((await t.client.request('DELETE', '/v1/pools/default/volumes/base-1g.qcow2')).status).toBe(409);
    const grown = await t.client.ok<{ virtualBytes: number }>('POST', '/v1/pools/default/volumes/clone-1g.qcow2/resize', { sizeBytes: 2 * 1024 ** 3 });
    expect(grown.virtualBytes).toBe(2 * 1024 ** 3);
    expect((await t.client.request('POST', '/v1/pools/default/volumes/clone-1g.qcow2/resize', { sizeBytes: 1024 ** 2 })).status).toBe(400);
    expect((await t.client.request('DELETE', '/v1/pools/default/volumes/clone-1g.qcow2')).status).toBe(204);
    expect((await t.client.request('DELETE', '/v1/pools/default/volumes/base-1g.qcow2')).status).toBe(204);
    const pool = await t.client.ok<{ volumes: number; capacityBytes: number }>('GET', '/v1/pools/default');
    expect(pool.capacityBytes).toBeGreaterThan(0);
  });

  it('makes every thin clone of a base byte for byte as qemu-img does, and follows a base that was replaced', async () => {
    const pool = path.join(t.stateDir, 'pools', 'default');
    await t.client.createVolume('default', { name: 'tbase.qcow2', sizeBytes: 64 * 1024 ** 2 });
    const a = await t.client.createVolume('default', { name: 'tclone-a.qcow2', cloneOf: 'tbase.qcow2' });
    const b = await t.client.createVolume('default', { name: 'tclone-b.qcow2', cloneOf: 'tbase.qcow2' });
    const sized = await t.client.createVolume('default', { name: 'tclone-c.qcow2', cloneOf: 'tbase.qcow2', sizeBytes: 128 * 1024 ** 2 });
    // What qemu-img itself writes for the same clone, next to the base.
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', 'tbase.qcow2', path.join(pool, 'tdirect.qcow2')]);
    const direct = readFileSync(path.join(pool, 'tdirect.qcow2'));
    expect(readFileSync(path.join(pool, 'tclone-a.qcow2')).equals(direct)).toBe(true);
    expect(readFileSync(path.join(pool, 'tclone-b.qcow2')).equals(direct)).toBe(true);
    rmSync(path.join(pool, 'tdirect.qcow2'));
    expect(b).toEqual({ ...a, name: 'tclone-b.qcow2' });
    expect(sized).toMatchObject({ virtualBytes: 128 * 1024 ** 2, backing: 'tbase.qcow2' });
    execFileSync('qemu-img', ['check', '-q', '-f', 'qcow2', path.join(pool, 'tclone-b.qcow2')]);
    // The base replaced by another of the same name: the next clone follows it.
    for (const v of ['tclone-a.qcow2', 'tclone-b.qcow2', 'tclone-c.qcow2', 'tbase.qcow2']) {
      expect((await t.client.request('DELETE', `/v1/pools/default/volumes/${v}`)).status).toBe(204);
    }
    await t.client.createVolume('default', { name: 'tbase.qcow2', sizeBytes: 32 * 1024 ** 2 });
    expect(await t.client.createVolume('default', { name: 'tclone-a.qcow2', cloneOf: 'tbase.qcow2' })).toMatchObject({ virtualBytes: 32 * 1024 ** 2 });
    for (const v of ['tclone-a.qcow2', 'tbase.qcow2']) expect((await t.client.request('DELETE', `/v1/pools/default/volumes/${v}`)).status).toBe(204);
  });

  it('reads the virtual size and backing file of a qcow2 header, and nothing from other files', async () => {
    const plain = path.join(scratch, 'header-plain.qcow2');
    const child = path.join(scratch, 'header-child.qcow2');
    const raw = path.join(scratch, 'header.raw');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', plain, '5M']);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', 'header-plain.qcow2', child, '7M']);
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', raw, '1M']);
    expect(await readQcow2Header(plain)).toEqual({ virtualBytes: 5 * 1024 ** 2 });
    expect(await readQcow2Header(child)).toEqual({ virtualBytes: 7 * 1024 ** 2, backing: 'header-plain.qcow2' });
    expect(await readQcow2Header(raw)).toBeUndefined();
  });

  it('refuses to import a qcow2 whose backing file points at /etc/shadow, and imports nothing', async () => {
    const evil = path.join(scratch, 'evil.qcow2');
    execFileSync('qemu-img', ['create', '-f', 'qcow2', '-F', 'raw', '-b', '/etc/shadow', evil, '1M'], { stdio: 'ignore' });
    const before = snapshotState();
    const answer = await t.client.request<{ error: { message: string } }>('POST', '/v1/pools/default/volumes', { name: 'evil.qcow2', importFrom: evil, format: 'qcow2' });
    expect(answer.status).toBe(400);
    expect(answer.body.error.message).toMatch(/backing/i);
    expect(snapshotState()).toBe(before);
  });

  it('refuses a garbage file declared as qcow2', async () => {
    const junk = path.join(scratch, 'junk.qcow2');
    writeFileSync(junk, 'this is not an image'.repeat(100));
    const answer = await t.client.request('POST', '/v1/pools/default/volumes', { name: 'junk.qcow2', importFrom: junk, format: 'qcow2' });
    expect(answer.status).toBe(400);
  });

  it('never imports from outside the allowed directories, nor takes over a non-empty directory as a pool', async () => {
    const answer = await t.client.request<{ error: { code: string } }>('POST', '/v1/pools/default/volumes', { name: 'shadow.img', importFrom: '/etc/shadow', format: 'raw' });
    expect(answer.status).toBe(403);
    const etc = await t.client.request<{ error: { message: string } }>('POST', '/v1/pools', { name: 'etc', path: '/etc' });
    expect(etc.status).toBe(409);
    expect(etc.body.error.message).toMatch(/not empty/);
  });

  it('reads volumes of a pool while nothing holds them, and names unknown fields', async () => {
    const answer = await t.client.request<{ error: { message: string } }>('POST', '/v1/pools', { name: 'x', path: '/tmp/x', colour: 'red' });
    expect(answer.status).toBe(400);
    expect(answer.body.error.message).toMatch(/unknown field "colour"/);
  });

  it('defines and removes pools, refusing overlaps', async () => {
    const dir = path.join(scratch, 'pool2');
    expect((await t.client.request('POST', '/v1/pools', { name: 'second', path: dir, shared: true })).status).toBe(201);
    expect((await t.client.request('POST', '/v1/pools', { name: 'third', path: path.join(dir, 'sub') })).status).toBe(409);
    expect((await t.client.request('DELETE', '/v1/pools/second')).status).toBe(204);
    expect((await t.client.request('DELETE', '/v1/pools/default')).status).toBe(409);
  });
});

describe('host facts', () => {
  it('reports capacity, accelerator and CPU models', async () => {
    const facts = await t.client.ok<{ capacity: { cpus: number }; accel: string; cpuModels: string[]; qemuVersion: string }>('GET', '/v1/host');
    expect(facts.capacity.cpus).toBe(2);
    expect(['tcg', 'kvm']).toContain(facts.accel);
    expect(facts.cpuModels.length).toBeGreaterThan(0);
    expect(facts.qemuVersion).toMatch(/^\d+\.\d+/);
    const metrics = await t.client.request<string>('GET', '/metrics');
    expect(metrics.body).toContain('drover_agent_vms');
  });
});

import { execFile, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '@drover/agent';
import { freePort, tempDir, testAgentConfig } from '@drover/agent/testing';
import { defaultApplianceCacheDir } from '@drover/appliances';
import { defaultManagerConfig } from '../config.js';
import { startManager, type RunningManager } from '../manager.js';

/**
 * The storage API on real parts: a manager and a real agent joined over mutual
 * TLS; pools are directories, volumes are made by qemu-img, bytes stream through
 * the manager both ways.
 */
const dataDir = tempDir('storage-manager');
const agentDir = tempDir('storage-agent');
const scratch = tempDir('storage-scratch');
const poolDir = path.join(scratch, 'pool');
const cliMain = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../cli/dist/main.js');
let manager: RunningManager;
let agent: RunningAgent;

type ErrorAnswer = { error: { code: string; message: string } };

async function api<T = unknown>(method: string, route: string, body?: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(`${manager.url}${route}`, {
    method,
    headers: { authorization: `Bearer ${manager.adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  return { status: response.status, body: (text && (response.headers.get('content-type') ?? '').includes('json') ? JSON.parse(text) : text) as T };
}

async function upload<T = unknown>(route: string, bytes: Buffer): Promise<{ status: number; body: T }> {
  const response = await fetch(`${manager.url}${route}`, { method: 'PUT', headers: { authorization: `Bearer ${manager.adminToken}`, 'content-type': 'application/octet-stream' }, body: bytes });
  return { status: response.status, body: (await response.json()) as T };
}

async function download(route: string): Promise<{ status: number; bytes: Buffer; length: string | null }> {
  const response = await fetch(`${manager.url}${route}`, { headers: { authorization: `Bearer ${manager.adminToken}` } });
  return { status: response.status, bytes: Buffer.from(await response.arrayBuffer()), length: response.headers.get('content-length') };
}

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
const V = '/api/v1/hosts/h1/pools/st/volumes';

beforeAll(async () => {
  manager = await startManager({ ...defaultManagerConfig(dataDir), listen: '127.0.0.1:0', heartbeatMs: 500, applianceCacheDir: defaultApplianceCacheDir() });
  const join = await api<{ token: string }>('POST', '/api/v1/hosts/join-tokens', {});
  expect(join.status).toBe(201);
  agent = await startAgent(testAgentConfig(agentDir, { listen: `127.0.0.1:${await freePort()}`, hostName: 'h1' }), { join: { managerUrl: manager.url, token: join.body.token } });
  for (const deadline = Date.now() + 30_000; (await api<{ items: Array<{ state: string }> }>('GET', '/api/v1/hosts')).body.items[0]?.state !== 'online'; ) {
    if (Date.now() > deadline) throw new Error('host did not come online');
    await new Promise((r) => setTimeout(r, 100));
  }
});

afterAll(async () => {
  await agent?.close();
  await manager?.close();
  for (const dir of [dataDir, agentDir, scratch]) rmSync(dir, { recursive: true, force: true });
});

describe('storage API through the manager', () => {
  it('defines a pool on a host', async () => {
    const created = await api<{ name: string; path: string; shared: boolean; volumes: number }>('POST', '/api/v1/hosts/h1/pools', { name: 'st', path: poolDir });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ name: 'st', path: poolDir, shared: false, volumes: 0 });
    const pools = await api<Array<{ name: string }>>('GET', '/api/v1/hosts/h1/pools');
    expect(pools.body.map((p) => p.name)).toContain('st');
    expect((await api<{ name: string }>('GET', '/api/v1/hosts/h1/pools/st')).body.name).toBe('st');
    // The agent's own errors keep their code and message.
    const again = await api<ErrorAnswer>('POST', '/api/v1/hosts/h1/pools', { name: 'st', path: path.join(scratch, 'other') });
    expect(again.status).toBe(409);
    expect(again.body.error.message).toMatch(/Pool "st" already exists/);
  });

  it('creates, clones, resizes and lists volumes', async () => {
    const base = await api<{ format: string; virtualBytes: number }>('POST', V, { name: 'base.qcow2', sizeBytes: 64 * 1024 * 1024 });
    expect(base.status).toBe(201);
    expect(base.body).toMatchObject({ format: 'qcow2', virtualBytes: 64 * 1024 * 1024 });
    const clone = await api<{ backing?: string }>('POST', V, { name: 'clone.qcow2', cloneOf: 'base.qcow2' });
    expect(clone.status).toBe(201);
    expect(clone.body.backing).toBe('base.qcow2');
    const resized = await api<{ virtualBytes: number }>('POST', `${V}/clone.qcow2/resize`, { sizeBytes: 128 * 1024 * 1024 });
    expect(resized.status).toBe(200);
    expect(resized.body.virtualBytes).toBe(128 * 1024 * 1024);
    const shrink = await api<ErrorAnswer>('POST', `${V}/clone.qcow2/resize`, { sizeBytes: 1024 * 1024 });
    expect(shrink.status).toBe(400);
    const list = await api<Array<{ name: string }>>('GET', V);
    expect(list.body.map((v) => v.name)).toEqual(['base.qcow2', 'clone.qcow2']);
    expect((await api<{ name: string }>('GET', `${V}/clone.qcow2`)).body.name).toBe('clone.qcow2');
    expect((await api('GET', `${V}/missing.qcow2`)).status).toBe(404);
    // The base of a clone cannot go.
    expect((await api('DELETE', `${V}/base.qcow2`)).status).toBe(409);
  });

  it('downloads a raw volume as it is, and a qcow2 as its file', async () => {
    expect((await api('POST', V, { name: 'blank.raw', sizeBytes: 1024 * 1024 })).status).toBe(201);
    const blank = await download(`${V}/blank.raw/content`);
    expect(blank.status).toBe(200);
    expect(blank.length).toBe(String(1024 * 1024));
    expect(blank.bytes.equals(Buffer.alloc(1024 * 1024))).toBe(true);
    const qcow2 = await download(`${V}/base.qcow2/content`);
    expect(qcow2.status).toBe(200);
    expect(qcow2.bytes.equals(readFileSync(path.join(poolDir, 'base.qcow2')))).toBe(true);
  });

  it('uploads bytes into a new volume and gives back the same bytes', async () => {
    const bytes = randomBytes(1024 * 1024);
    const created = await upload<{ name: string; format: string; virtualBytes: number }>(`${V}/up.raw/content`, bytes);
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ name: 'up.raw', format: 'raw', virtualBytes: bytes.length });
    const back = await download(`${V}/up.raw/content`);
    expect(sha256(back.bytes)).toBe(sha256(bytes));
    // Only into a new volume.
    const again = await upload<ErrorAnswer>(`${V}/up.raw/content`, bytes);
    expect(again.status).toBe(409);
    expect(sha256((await download(`${V}/up.raw/content`)).bytes)).toBe(sha256(bytes));
  });

  it('refuses an uploaded qcow2 with a backing file, and leaves nothing behind', async () => {
    const evil = path.join(scratch, 'evil.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', '/etc/shadow', evil, '1M']);
    const refused = await upload<ErrorAnswer>(`${V}/evil.qcow2/content`, readFileSync(evil));
    expect(refused.status).toBe(400);
    expect(refused.body.error.message).toMatch(/backing file/);
    expect(refused.body.error.message).not.toContain(poolDir);
    expect((await api('GET', `${V}/evil.qcow2`)).status).toBe(404);
    expect(readdirSync(poolDir).filter((f) => f.startsWith('evil'))).toEqual([]);
    // Bytes that are not a qcow2 at all, under a .qcow2 name.
    const garbage = await upload<ErrorAnswer>(`${V}/garbage.qcow2/content`, randomBytes(64 * 1024));
    expect(garbage.status).toBe(400);
    expect(readdirSync(poolDir).filter((f) => f.startsWith('garbage'))).toEqual([]);
  });

  it('refuses importFrom through the manager, and JSON as volume content', async () => {
    const refused = await api<ErrorAnswer>('POST', V, { name: 'imported.raw', importFrom: '/etc/shadow', format: 'raw' });
    expect(refused.status).toBe(400);
    expect(refused.body.error.message).toMatch(/importFrom is not accepted through the manager/);
    expect((await api('GET', `${V}/imported.raw`)).status).toBe(404);
    const json = await api<ErrorAnswer>('PUT', `${V}/json.raw/content`, { bytes: 'x' });
    expect(json.status).toBe(400);
  });

  it('answers 404 for an unknown host', async () => {
    for (const [method, route, body] of [
      ['GET', '/api/v1/hosts/nope/pools', undefined],
      ['POST', '/api/v1/hosts/nope/pools', { name: 'x', path: path.join(scratch, 'x') }],
      ['GET', '/api/v1/hosts/nope/pools/st/volumes', undefined],
    ] as const) {
      const answer = await api<ErrorAnswer>(method, route, body);
      expect(answer.status).toBe(404);
      expect(answer.body.error.code).toBe('not_found');
    }
  });

  it('lists volumes with the CLI', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [cliMain, 'volume', 'list', 'h1', 'st', '--json'], {
      env: { ...process.env, DROVER_URL: manager.url, DROVER_TOKEN: manager.adminToken },
    });
    const volumes = JSON.parse(stdout) as Array<{ name: string }>;
    expect(volumes.map((v) => v.name)).toEqual(['base.qcow2', 'blank.raw', 'clone.qcow2', 'up.raw']);
  });

  it('deletes the volumes, then the pool', async () => {
    const pool = await api<ErrorAnswer>('DELETE', '/api/v1/hosts/h1/pools/st');
    expect(pool.status).toBe(409);
    for (const name of ['clone.qcow2', 'base.qcow2', 'blank.raw', 'up.raw']) expect((await api('DELETE', `${V}/${name}`)).status).toBe(204);
    expect((await api<unknown[]>('GET', V)).body).toEqual([]);
    expect((await api('DELETE', '/api/v1/hosts/h1/pools/st')).status).toBe(204);
    expect((await api('GET', '/api/v1/hosts/h1/pools/st')).status).toBe(404);
  });
});

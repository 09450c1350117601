import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPostgresStore, openSqliteStore, type Store } from '../store/index.js';
import { startPostgres, type PostgresCluster } from '../store/testing/postgres.js';

/**
 * A SQLite installation with VMs (records: no QEMU) moved to PostgreSQL with
 * `drover-manager admin migrate-store` and served by two managers; backup and
 * restore of that state. Real manager processes, a real PostgreSQL.
 */
const managerMain = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'main.js');
const root = path.join(os.tmpdir(), `drover-transfer-${process.pid}-${randomBytes(3).toString('hex')}`);
const sqliteDir = path.join(root, 'sqlite-installation');
const keyFile = path.join(root, 'secret.key');
const children: ChildProcess[] = [];
let pg: PostgresCluster;
let target: string;

interface Running {
  child: ChildProcess;
  url: string;
  token: string;
  caFingerprint: string;
}

async function spawnManager(dataDir: string, store: string, extra: string[] = []): Promise<Running> {
  mkdirSync(dataDir, { recursive: true });
  const config = path.join(dataDir, 'manager.yaml');
  writeFileSync(config, [`listen: 127.0.0.1:0`, `dataDir: ${dataDir}`, `store: ${store}`, 'appliances: false', 'webRoot: none', 'heartbeatMs: 60000', 'clusterIntervalMs: 300', 'logLevel: warn', ...extra].join('\n'));
  const ready = path.join(dataDir, `ready-${Date.now()}.json`);
  const child = spawn(process.execPath, [managerMain, '--config', config, '--ready-file', ready], { stdio: ['ignore', 'inherit', 'inherit'] });
  children.push(child);
  for (const deadline = Date.now() + 60_000; !existsSync(ready); ) {
    if (child.exitCode !== null) throw new Error(`drover-manager exited with ${child.exitCode}`);
    if (Date.now() > deadline) throw new Error('drover-manager did not become ready');
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, ...(JSON.parse(readFileSync(ready, 'utf8')) as { url: string; token: string; caFingerprint: string }) };
}

async function stop(m: Running): Promise<void> {
  if (m.child.exitCode !== null || m.child.signalCode !== null) return;
  const exited = new Promise((r) => m.child.once('exit', r));
  m.child.kill('SIGTERM');
  await exited;
}

function admin(args: string[]): { status: number; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [managerMain, 'admin', ...args], { encoding: 'utf8', timeout: 120_000 });
  return { status: run.status ?? -1, stdout: run.stdout, stderr: run.stderr };
}

async function api<T = Record<string, unknown>>(m: Running, token: string, route: string): Promise<{ status: number; body: T }> {
  const response = await fetch(`${m.url}${route}`, { headers: { authorization: `Bearer ${token}` } });
  return { status: response.status, body: (await response.json().catch(() => ({}))) as T };
}

/** What must survive a move: every record as the store decodes it (the same on both backends). */
async function contents(store: Store): Promise<Record<string, unknown>> {
  return {
    hosts: (await store.hosts.list({ limit: 1000 })).items,
    vms: (await store.vms.list({ limit: 1000 })).items,
    pools: (await store.pools.list({ limit: 1000 })).items,
    volumes: (await store.volumes.list({ limit: 1000 })).items,
    operations: (await store.operations.list({ limit: 1000 })).items,
    events: await store.events.since(0, 10_000),
    apiTokens: (await store.apiTokens.list({ limit: 1000 })).items,
    joinTokens: (await store.joinTokens.list({ limit: 1000 })).items,
    users: (await store.users.list({ limit: 1000 })).items,
  };
}

let original: Record<string, unknown>;
let originalCa: string;
let originalToken: string;

beforeAll(async () => {
  if (!existsSync(managerMain)) throw new Error(`${managerMain} is missing: run "npx tsc -b" first`);
  mkdirSync(root, { recursive: true });
  writeFileSync(keyFile, randomBytes(32).toString('hex'), { mode: 0o600 });
  pg = await startPostgres();
  target = await pg.createDatabase('moved');
  // A SQLite installation: a manager ran there (admin user and token, CA, a join token) ...
  const first = await spawnManager(sqliteDir, 'sqlite');
  originalCa = first.caFingerprint;
  originalToken = first.token;
  const joinToken = await fetch(`${first.url}/api/v1/hosts/join-tokens`, { method: 'POST', headers: { authorization: `Bearer ${first.token}`, 'content-type': 'application/json' }, body: '{}' });
  expect(joinToken.status).toBe(201);
  await stop(first);
  // ... and holds hosts, VMs, a pool with a volume and its clone, operations and events.
  const store = await openSqliteStore({ file: path.join(sqliteDir, 'drover.db') });
  const host = await store.hosts.create({ name: 'h1', address: 'https://127.0.0.1:9001', state: 'online', certSerial: '0A', certFingerprint: 'AB', capacity: { cpus: 8, memoryMiB: 16384 }, labels: { rack: 'r1' } });
  const pool = await store.pools.create({ name: 'default', path: '/var/lib/drover/pools/default', shared: false, hostIds: [host.id] });
  const base = await store.volumes.create({ poolId: pool.id, name: 'base.qcow2', hostId: host.id, sizeBytes: 2 ** 33, format: 'qcow2' });
  for (let i = 0; i < 12; i++) {
    const vm = await store.vms.create({ name: `vm-${i}`, spec: { image: 'web:1', imageId: '', cpus: 1 + (i % 2), memoryMiB: 128, cmdline: 'x "quoted" ü' }, state: i % 3 === 0 ? 'running' : 'stopped', hostId: i % 2 ? host.id : null, owner: 'admin', labels: { tier: i % 2 ? 'web' : 'db' }, autostart: i % 4 === 0 });
    await store.volumes.create({ poolId: pool.id, name: `${vm.id}.root.qcow2`, hostId: host.id, sizeBytes: 2 ** 30, format: 'qcow2', backingVolumeId: base.id, vmId: vm.id });
    await store.events.append({ type: 'vm.updated', objectKind: 'vm', objectId: vm.id, data: { name: vm.name } });
  }
  await store.operations.create({ kind: 'vm.start', targetKind: 'vm', targetId: (await store.vms.getByName('vm-1')).id, actor: 'admin', state: 'done', params: { hostId: host.id } });
  original = await contents(store);
  await store.close();
}, 180_000);

afterAll(async () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
  }
  await pg?.stop();
  rmSync(root, { recursive: true, force: true });
}, 60_000);

describe('moving a SQLite installation to PostgreSQL', () => {
  it('refuses a target that is not PostgreSQL, and a missing installation', () => {
    const bad = admin(['migrate-store', '--data-dir', sqliteDir, '--to', 'mysql://x']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('--to must be a PostgreSQL connection string');
    const missing = admin(['migrate-store', '--data-dir', path.join(root, 'nothing'), '--to', target]);
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toContain('drover.db');
  });

  it('copies every table, checks the counts, and stores the secrets sealed', () => {
    const moved = admin(['migrate-store', '--data-dir', sqliteDir, '--to', target, '--secret-key-file', keyFile]);
    expect(moved.stderr).toBe('');
    expect(moved.status).toBe(0);
    expect(moved.stdout).toMatch(/vms\s+12\n/);
    expect(moved.stdout).toMatch(/volumes\s+13\n/);
    expect(moved.stdout).toContain('row counts match');
  });

  it('refuses to copy into a database that is not empty (nothing changes)', async () => {
    const again = admin(['migrate-store', '--data-dir', sqliteDir, '--to', target]);
    expect(again.status).not.toBe(0);
    expect(again.stderr).toContain('not empty');
    const store = await openPostgresStore({ connectionString: target });
    try {
      expect((await store.vms.list({ limit: 100 })).items).toHaveLength(12);
    } finally {
      await store.close();
    }
  });

  it('is served by two managers on PostgreSQL with nothing lost: records, admin token, CA', async () => {
    const a = await spawnManager(path.join(root, 'pg-a'), target, [`secretKeyFile: ${keyFile}`]);
    const b = await spawnManager(path.join(root, 'pg-b'), target, [`secretKeyFile: ${keyFile}`]);
    for (const m of [a, b]) {
      expect(m.caFingerprint).toBe(originalCa);
      expect(m.token).toBe(originalToken);
      const vms = await api<{ items: Array<{ name: string; state: string; hostName: string | null }> }>(m, originalToken, '/api/v1/vms?limit=100');
      expect(vms.status).toBe(200);
      expect(vms.body.items.map((v) => v.name).sort()).toEqual(Array.from({ length: 12 }, (_, i) => `vm-${i}`).sort());
      expect(vms.body.items.find((v) => v.name === 'vm-1')?.hostName).toBe('h1');
    }
    const store = await openPostgresStore({ connectionString: target });
    try {
      expect(await contents(store)).toEqual(original);
      // New events continue after the copied ones (the sequence moved past them).
      const last = (original.events as Array<{ seq: number }>).at(-1)!.seq;
      expect((await store.events.append({ type: 'test', objectKind: 'vm', objectId: 'x' })).seq).toBeGreaterThan(last);
    } finally {
      await store.close();
    }
  }, 120_000);
});

describe('backup and restore', () => {
  const backupFile = path.join(root, 'drover.backup');

  it('backs up a store in use, with its secrets, readable by its owner only', () => {
    const made = admin(['backup', backupFile, '--store', target, '--data-dir', path.join(root, 'pg-a')]);
    expect(made.stderr).toBe('');
    expect(made.status).toBe(0);
    expect(statSync(backupFile).mode & 0o777).toBe(0o600);
    const parsed = JSON.parse(readFileSync(backupFile, 'utf8')) as { format: string; secrets: Record<string, string> };
    expect(parsed.format).toBe('drover-backup');
    expect(Object.keys(parsed.secrets)).toEqual(expect.arrayContaining(['ca/authority/ca.key', 'admin-token']));
  });

  it('refuses to restore over a store managers are using', async () => {
    const refused = admin(['restore', backupFile, '--store', target, '--data-dir', path.join(root, 'pg-a')]);
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toContain('A manager uses this store');
  });

  it('restores into a new database and data directory: a manager there has everything back', async () => {
    const fresh = await pg.createDatabase('restored');
    const dataDir = path.join(root, 'restored');
    const restored = admin(['restore', backupFile, '--store', fresh, '--data-dir', dataDir]);
    expect(restored.stderr).toBe('');
    expect(restored.status).toBe(0);
    expect(statSync(path.join(dataDir, 'ca', 'authority', 'ca.key')).mode & 0o777).toBe(0o600);
    // Not over a non-empty store without --force; with it, the rows are replaced.
    const twice = admin(['restore', backupFile, '--store', fresh, '--data-dir', dataDir]);
    expect(twice.status).not.toBe(0);
    expect(twice.stderr).toContain('not empty');
    expect(admin(['restore', backupFile, '--store', fresh, '--data-dir', dataDir, '--force']).status).toBe(0);
    const store = await openPostgresStore({ connectionString: fresh });
    try {
      const now = await contents(store);
      expect(now.vms).toEqual(original.vms);
      expect(now.volumes).toEqual(original.volumes);
      expect(now.hosts).toEqual(original.hosts);
      // The copied events, then what the managers appended since (the test's own at least).
      expect((now.events as unknown[]).slice(0, (original.events as unknown[]).length)).toEqual(original.events);
      expect((now.events as unknown[]).length).toBeGreaterThan((original.events as unknown[]).length);
    } finally {
      await store.close();
    }
    const m = await spawnManager(dataDir, fresh);
    expect(m.caFingerprint).toBe(originalCa);
    expect(m.token).toBe(originalToken);
    expect((await api<{ items: unknown[] }>(m, originalToken, '/api/v1/vms?limit=100')).body.items).toHaveLength(12);
    await stop(m);
  }, 120_000);
});

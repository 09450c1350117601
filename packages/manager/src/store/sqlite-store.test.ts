import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { rejectionOf } from '@drover/core';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSqliteStore } from './sqlite-store.js';
import { storeMigrations } from './migrations.js';
import { describeStoreConformance } from './testing/conformance.js';

let directory: string;
let fileCounter = 0;
const nextFile = () => path.join(directory, `store-${++fileCounter}.sqlite`);

beforeAll(() => {
  directory = mkdtempSync(path.join(os.tmpdir(), 'drover-store-sqlite-'));
});
afterAll(() => {
  rmSync(directory, { recursive: true, force: true });
});

describeStoreConformance('sqlite', {
  async newDatabase() {
    const file = nextFile();
    return { open: (options) => openSqliteStore({ file, ...options }) };
  },
});

/**
 * Another process on the same file (a second program, a backup tool): it takes
 * the write lock, inserts host "from-elsewhere" and commits after `holdMs`.
 * Resolves once the lock is held.
 */
function holdWriteLock(file: string, holdMs: number): Promise<{ done: Promise<void> }> {
  const script = `
    const Database = require('better-sqlite3');
    const db = new Database(process.argv[1]);
    db.exec('begin immediate');
    db.prepare(
      "insert into hosts (id, name, address, state, cert_serial, cert_fingerprint, capacity, cpu_models, labels, rev, created_at, updated_at) " +
      "values (?, 'from-elsewhere', 'a', 'online', '1', 'f', '{}', '[]', '{}', 1, '2030-01-01T00:00:00.000Z', '2030-01-01T00:00:00.000Z')"
    ).run(require('node:crypto').randomUUID());
    process.stdout.write('locked\\n');
    setTimeout(() => { db.exec('commit'); db.close(); }, Number(process.argv[2]));
  `;
  const child = spawn(process.execPath, ['-e', script, file, String(holdMs)], { cwd: import.meta.dirname, stdio: ['ignore', 'pipe', 'inherit'] });
  const done = new Promise<void>((resolve, reject) => child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`lock holder exited ${code}`)))));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.stdout!.once('data', () => resolve({ done }));
  });
}

describe('sqlite store', () => {
  it('keeps one file in WAL mode, creating its directory', async () => {
    const file = path.join(directory, 'data', 'nested', 'drover.sqlite');
    const store = await openSqliteStore({ file });
    await store.hosts.create({ name: 'h1', address: 'https://h1', certSerial: '1', certFingerprint: 'f', capacity: { cpus: 1, memoryMiB: 1 } });
    await store.close();
    const raw = new BetterSqlite3(file, { readonly: true });
    try {
      expect(raw.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(raw.prepare('select name from hosts').pluck().all()).toEqual(['h1']);
      expect(raw.prepare('select name from drover_migration order by name').pluck().all()).toEqual(Object.keys(storeMigrations('sqlite')).sort());
    } finally {
      raw.close();
    }
  });

  // With a deferred BEGIN the read below would see the database before the other
  // process commits, and the write after it would fail with SQLITE_BUSY_SNAPSHOT.
  it('waits for another process holding the write lock, then sees its writes (busy timeout, BEGIN IMMEDIATE)', async () => {
    const file = nextFile();
    const store = await openSqliteStore({ file, busyTimeoutMs: 5000 });
    try {
      const holder = await holdWriteLock(file, 300);
      const started = Date.now();
      const host = await store.transaction(async (tx) => {
        const existing = await tx.hosts.list();
        return tx.hosts.create({ name: `h${existing.items.length}`, address: 'a', certSerial: '1', certFingerprint: 'f', capacity: { cpus: 1, memoryMiB: 1 } });
      });
      expect(Date.now() - started).toBeGreaterThanOrEqual(200);
      expect(host.name).toBe('h1');
      await holder.done;
    } finally {
      await store.close();
    }
  });

  it('answers unavailable when another process keeps the lock past the busy timeout', async () => {
    const file = nextFile();
    const store = await openSqliteStore({ file, busyTimeoutMs: 100 });
    try {
      const holder = await holdWriteLock(file, 1500);
      const error = await rejectionOf(store.transaction((tx) => tx.hosts.list()));
      expect(error.code).toBe('unavailable');
      expect(error.message).toContain('database is locked');
      await holder.done;
      await store.transaction((tx) => tx.hosts.list());
    } finally {
      await store.close();
    }
  });

  it('has a change token that moves with every write, by this store, another store or another process', async () => {
    const file = nextFile();
    const store = await openSqliteStore({ file });
    const other = await openSqliteStore({ file });
    try {
      const first = await store.changeToken();
      expect(first).toMatch(/^\d+:\d+$/);
      await store.hosts.list();
      expect(await store.changeToken()).toBe(first);
      const host = await store.hosts.create({ name: 'h1', address: 'a', certSerial: '1', certFingerprint: 'f', capacity: { cpus: 1, memoryMiB: 1 } });
      const afterOwn = await store.changeToken();
      expect(afterOwn).not.toBe(first);
      // A transaction that rolls back may have changed rows until it did: the token moves too.
      await expect(
        store.transaction(async (tx) => {
          await tx.hosts.update(host.id, { state: 'online' });
          throw new Error('changed my mind');
        }),
      ).rejects.toThrow('changed my mind');
      const afterRollback = await store.changeToken();
      expect(afterRollback).not.toBe(afterOwn);
      expect(await store.transaction((tx) => tx.changeToken())).toBeUndefined();
      // Another connection to the same file, then another process.
      await other.hosts.update(host.id, { state: 'online' });
      const afterOther = await store.changeToken();
      expect(afterOther).not.toBe(afterRollback);
      const holder = await holdWriteLock(file, 0);
      await holder.done;
      expect(await store.changeToken()).not.toBe(afterOther);
    } finally {
      await other.close();
      await store.close();
    }
  });

  it('answers the change token while a transaction holds the connection, and it still moves with that transaction\'s writes', async () => {
    const file = nextFile();
    const store = await openSqliteStore({ file });
    try {
      const host = await store.hosts.create({ name: 'h1', address: 'a', certSerial: '1', certFingerprint: 'f', capacity: { cpus: 1, memoryMiB: 1 } });
      const before = await store.changeToken();
      let wrote!: () => void;
      const written = new Promise<void>((resolve) => (wrote = resolve));
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      const transaction = store.transaction(async (tx) => {
        await tx.hosts.update(host.id, { state: 'online' });
        wrote();
        await held;
        throw new Error('rolled back');
      });
      await written;
      // Read outside the transaction while it is open (Kysely's connection is held until it ends).
      const during = await store.changeToken();
      expect(during).not.toBe(before);
      release();
      await expect(transaction).rejects.toThrow('rolled back');
      expect((await store.hosts.get(host.id)).state).not.toBe('online');
      // Nothing kept under `before` can be answered after that transaction, committed or not.
      expect(await store.changeToken()).not.toBe(before);
    } finally {
      await store.close();
    }
  });

  it('refuses a database whose schema is newer than this version', async () => {
    const file = nextFile();
    await (await openSqliteStore({ file })).close();
    const raw = new BetterSqlite3(file);
    raw.prepare('insert into drover_migration (name, timestamp) values (?, ?)').run('9999_future', new Date().toISOString());
    raw.close();
    const error = await rejectionOf(openSqliteStore({ file }));
    expect(error.code).toBe('unavailable');
    expect(error.message).toContain('newer Drover');
  });

  it('answers unavailable for a file it cannot create', async () => {
    const error = await rejectionOf(openSqliteStore({ file: '/etc/hostname/drover/store.sqlite' }));
    expect(error.code).toBe('unavailable');
    expect(error.message).toContain('/etc/hostname/drover/store.sqlite');
  });
});

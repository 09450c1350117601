import { rejectionOf } from '@drover/core';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeMigrations } from './migrations.js';
import { openPostgresStore } from './postgres-store.js';
import { describeStoreConformance } from './testing/conformance.js';
import { startPostgres, type PostgresCluster } from './testing/postgres.js';

// No skipping when PostgreSQL is missing: startPostgres() fails with the name
// of the package to install, and so does every test below.
let cluster: PostgresCluster | undefined;

beforeAll(async () => {
  cluster = await startPostgres();
});
afterAll(async () => {
  await cluster?.stop();
});

function running(): PostgresCluster {
  if (cluster === undefined) throw new Error('The PostgreSQL test cluster did not start');
  return cluster;
}

describeStoreConformance('postgres', {
  async newDatabase() {
    const connectionString = await running().createDatabase();
    return { open: (options) => openPostgresStore({ connectionString, ...options }) };
  },
});

describe('postgres store', () => {
  it('uses PostgreSQL types: uuid ids, jsonb, timestamptz, boolean, bigint, byte-order names', async () => {
    const connectionString = await running().createDatabase();
    await (await openPostgresStore({ connectionString })).close();
    const client = new pg.Client({ connectionString });
    await client.connect();
    try {
      const { rows } = await client.query<{ column_name: string; data_type: string; collation_name: string | null }>(
        `select column_name, data_type, collation_name from information_schema.columns where table_name = 'vms' order by column_name`,
      );
      const types = Object.fromEntries(rows.map((row) => [row.column_name, row.data_type]));
      expect(types).toMatchObject({
        id: 'uuid',
        host_id: 'uuid',
        spec: 'jsonb',
        labels: 'jsonb',
        autostart: 'boolean',
        created_at: 'timestamp with time zone',
        name: 'text',
      });
      expect(rows.find((row) => row.column_name === 'name')?.collation_name).toBe('C');
      const sizes = await client.query(`select data_type from information_schema.columns where table_name = 'volumes' and column_name = 'size_bytes'`);
      expect(sizes.rows[0].data_type).toBe('bigint');
      const seq = await client.query(`select data_type from information_schema.columns where table_name = 'events' and column_name = 'seq'`);
      expect(seq.rows[0].data_type).toBe('bigint');
    } finally {
      await client.end();
    }
  });

  it('lets several managers open a new database at once: one migrates, the others wait', async () => {
    const connectionString = await running().createDatabase();
    const stores = await Promise.all(Array.from({ length: 3 }, () => openPostgresStore({ connectionString })));
    try {
      for (const store of stores) expect(await store.migrations()).toEqual(Object.keys(storeMigrations('postgres')).sort());
    } finally {
      await Promise.all(stores.map((store) => store.close()));
    }
  });

  it('shares one database between two managers: rev checks and row locks hold across them', async () => {
    const connectionString = await running().createDatabase();
    const [a, b] = [await openPostgresStore({ connectionString }), await openPostgresStore({ connectionString })];
    try {
      const host = await a.hosts.create({ name: 'h1', address: 'a', certSerial: '1', certFingerprint: 'f', capacity: { cpus: 3, memoryMiB: 3 } });
      const vms = await a.transaction(async (tx) => {
        const made = [];
        for (let index = 0; index < 10; index += 1) made.push(await tx.vms.create({ name: `vm-${index}`, spec: {}, state: 'stopped', owner: 'o' }));
        return made;
      });
      const outcomes = await Promise.all(
        vms.map((vm, index) =>
          (index % 2 ? a : b).transaction(async (tx) => {
            const locked = await tx.hosts.getForUpdate(host.id);
            const reserved = await tx.reservations.sumByHost(host.id);
            if (reserved.cpus + 1 > locked.capacity.cpus) return false;
            await tx.reservations.create({ hostId: host.id, vmId: vm.id, cpus: 1, memoryMiB: 1, expiresAt: new Date(Date.now() + 60_000) });
            return true;
          }),
        ),
      );
      expect(outcomes.filter(Boolean)).toHaveLength(3);
      await a.hosts.update(host.id, { state: 'online' }, { expectedRev: 1 });
      expect((await rejectionOf(b.hosts.update(host.id, { state: 'maintenance' }, { expectedRev: 1 }))).code).toBe('precondition_failed');
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('answers unavailable when the server cannot be reached', async () => {
    const started = Date.now();
    const error = await rejectionOf(openPostgresStore({ connectionString: `postgres://postgres@127.0.0.1:1/postgres`, connectTimeoutMs: 2000 }));
    expect(error.code).toBe('unavailable');
    expect(error.message).toContain('ECONNREFUSED');
    expect(Date.now() - started).toBeLessThan(5000);
  });
});

import { existsSync } from 'node:fs';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { findPostgresBinDir, startPostgres } from './postgres.js';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('private PostgreSQL cluster for tests', () => {
  it('says which package to install when the server binaries are missing', () => {
    expect(() => findPostgresBinDir('/nonexistent/bin')).toThrow(/install the Debian package "postgresql"/);
  });

  it('starts a cluster that takes connections and databases, and removes it on stop', async () => {
    const cluster = await startPostgres();
    try {
      expect(existsSync(cluster.dataDir)).toBe(true);
      const url = await cluster.createDatabase('harness_check');
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      const { rows } = await client.query<{ db: string; owner: string }>('select current_database() as db, current_user as owner');
      await client.end();
      expect(rows[0]).toEqual({ db: 'harness_check', owner: 'postgres' });
    } finally {
      await cluster.stop();
    }
    expect(isAlive(cluster.pid)).toBe(false);
    expect(existsSync(cluster.dataDir)).toBe(false);
    await cluster.stop();
  });
});

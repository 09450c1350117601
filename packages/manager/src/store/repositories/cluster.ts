import { sql } from 'kysely';
import { errors } from '@drover/core';
import { nowIso, type StoreContext } from '../store-context.js';
import { runQuery } from '../store-errors.js';

/** One running manager process sharing the store (migration 0011_cluster_leader). */
export interface ClusterManagerRecord {
  /** Random per process start. */
  id: string;
  name: string;
  /** Where its API answers. */
  url: string;
  version: string;
  pid: number;
  startedAt: string;
  /** Refreshed every few seconds while it runs. */
  lastSeenAt: string;
}

/** Who holds the leader lock, since when, and the term (grows at every change of leader). */
export interface ClusterLeaderRecord {
  managerId: string;
  term: number;
  since: string;
}

type Row = Record<string, unknown>;

function time(value: unknown): string {
  return value instanceof Date ? value.toISOString() : new Date(String(value)).toISOString();
}

function managerOf(row: Row): ClusterManagerRecord {
  return {
    id: String(row.id),
    name: String(row.name),
    url: String(row.url),
    version: String(row.version),
    pid: Number(row.pid),
    startedAt: time(row.started_at),
    lastSeenAt: time(row.last_seen_at),
  };
}

const activeStates = ['pending', 'running'];

/**
 * The store side of several managers on one database (cluster/): the managers
 * table, the leader's record, operation claims and sealed secrets.
 */
export class ClusterRepository {
  constructor(private readonly context: StoreContext) {}

  /** Inserts or refreshes a manager's row (its last_seen_at is the store's now). */
  async heartbeat(manager: Omit<ClusterManagerRecord, 'lastSeenAt'>): Promise<void> {
    this.context.checkUse();
    const now = nowIso(this.context);
    const row = { id: manager.id, name: manager.name, url: manager.url, version: manager.version, pid: manager.pid, started_at: manager.startedAt, last_seen_at: now };
    await runQuery(() =>
      this.context.db
        .insertInto('cluster_managers')
        .values(row)
        .onConflict((c) => c.column('id').doUpdateSet({ url: manager.url, last_seen_at: now }))
        .execute(),
    );
  }

  async managers(): Promise<ClusterManagerRecord[]> {
    this.context.checkUse();
    const rows = await runQuery(() => this.context.db.selectFrom('cluster_managers').selectAll().orderBy('started_at').orderBy('id').execute());
    return rows.map(managerOf);
  }

  /** Forgets a manager's row (its clean shutdown, or one not seen for long). */
  async removeManager(id: string): Promise<void> {
    this.context.checkUse();
    await runQuery(() => this.context.db.deleteFrom('cluster_managers').where('id', '=', id).execute());
  }

  /** Forgets rows not refreshed since `before`; returns how many. */
  async removeManagersSeenBefore(before: string): Promise<number> {
    this.context.checkUse();
    const result = await runQuery(() => this.context.db.deleteFrom('cluster_managers').where('last_seen_at', '<', before).executeTakeFirst());
    return Number(result.numDeletedRows);
  }

  async leader(): Promise<ClusterLeaderRecord | undefined> {
    this.context.checkUse();
    const row = await runQuery(() => this.context.db.selectFrom('cluster_leader').selectAll().where('slot', '=', 'leader').executeTakeFirst());
    return row ? { managerId: String(row.manager_id), term: Number(row.term), since: time(row.since) } : undefined;
  }

  /** Records `managerId` as the leader in a new term (call it holding the leader lock); returns the record. */
  async becomeLeader(managerId: string): Promise<ClusterLeaderRecord> {
    const now = nowIso(this.context);
    const write = async (db: StoreContext['db']) => {
      const current = await db.selectFrom('cluster_leader').selectAll().where('slot', '=', 'leader').executeTakeFirst();
      const term = Number(current?.term ?? 0) + 1;
      if (current) await db.updateTable('cluster_leader').set({ manager_id: managerId, term, since: now }).where('slot', '=', 'leader').execute();
      else await db.insertInto('cluster_leader').values({ slot: 'leader', manager_id: managerId, term, since: now }).execute();
      return { managerId, term, since: now };
    };
    this.context.checkUse();
    const { db } = this.context;
    return runQuery(() => (db.isTransaction ? write(db) : db.transaction().execute(write)));
  }

  /** Records that `managerId` runs the operation (in the transaction that creates or adopts it). */
  async claim(operationId: string, managerId: string): Promise<void> {
    this.context.checkUse();
    const now = nowIso(this.context);
    await runQuery(() =>
      this.context.db
        .insertInto('operation_claims')
        .values({ operation_id: operationId, manager_id: managerId, claimed_at: now })
        .onConflict((c) => c.column('operation_id').doUpdateSet({ manager_id: managerId, claimed_at: now }))
        .execute(),
    );
  }

  /** The manager that runs an operation, if one claimed it. */
  async claimOf(operationId: string): Promise<string | undefined> {
    this.context.checkUse();
    const row = await runQuery(() => this.context.db.selectFrom('operation_claims').select('manager_id').where('operation_id', '=', operationId).executeTakeFirst());
    return row ? String(row.manager_id) : undefined;
  }

  /**
   * Inside a transaction: the unfinished operations whose claimant is not among
   * `alive` (or that nobody claimed), locked (`FOR UPDATE SKIP LOCKED` on
   * PostgreSQL: rows another manager is adopting right now are skipped, not
   * waited for). Claim them with `claim` before the transaction ends.
   */
  async orphans(alive: string[], limit = 100): Promise<string[]> {
    if (!this.context.db.isTransaction) throw errors.internal('orphans() must run in a transaction');
    this.context.checkUse();
    const aliveList = alive.length > 0 ? sql.join(alive.map((id) => sql`${id}`)) : sql`''`;
    const lock = this.context.backend.rowLocks ? sql`for update of o skip locked` : sql``;
    const { rows } = await runQuery(() =>
      sql<{ id: string }>`select o.id as id from operations o left join operation_claims c on c.operation_id = o.id
        where o.state in (${sql.join(activeStates.map((s) => sql`${s}`))}) and (c.manager_id is null or c.manager_id not in (${aliveList}))
        order by o.created_at, o.id limit ${limit} ${lock}`.execute(this.context.db),
    );
    return rows.map((row) => String(row.id));
  }

  /**
   * Inside a transaction: waits until no other transaction creates an operation
   * on `targetId` (a transaction-level advisory lock on PostgreSQL; SQLite's
   * transactions are exclusive already), so a check for an operation in flight
   * followed by an insert holds across managers.
   */
  async lockTarget(targetId: string): Promise<void> {
    if (!this.context.db.isTransaction) throw errors.internal('lockTarget() must run in a transaction');
    this.context.checkUse();
    if (!this.context.backend.rowLocks) return;
    await runQuery(() => sql`select pg_advisory_xact_lock(1146244951, hashtext(${targetId}))`.execute(this.context.db));
  }

  async secret(name: string): Promise<string | undefined> {
    this.context.checkUse();
    const row = await runQuery(() => this.context.db.selectFrom('cluster_secrets').select('sealed').where('name', '=', name).executeTakeFirst());
    return row ? String(row.sealed) : undefined;
  }

  /** Stores a sealed secret unless one of that name exists; returns the stored one (the caller's or the earlier one). */
  async putSecretIfAbsent(name: string, sealed: string): Promise<string> {
    this.context.checkUse();
    await runQuery(() =>
      this.context.db
        .insertInto('cluster_secrets')
        .values({ name, sealed, updated_at: nowIso(this.context) })
        .onConflict((c) => c.column('name').doNothing())
        .execute(),
    );
    return (await this.secret(name)) as string;
  }

  /** Replaces a sealed secret. */
  async putSecret(name: string, sealed: string): Promise<void> {
    this.context.checkUse();
    const now = nowIso(this.context);
    await runQuery(() =>
      this.context.db
        .insertInto('cluster_secrets')
        .values({ name, sealed, updated_at: now })
        .onConflict((c) => c.column('name').doUpdateSet({ sealed, updated_at: now }))
        .execute(),
    );
  }

  async secretNames(): Promise<string[]> {
    this.context.checkUse();
    const rows = await runQuery(() => this.context.db.selectFrom('cluster_secrets').select('name').orderBy('name').execute());
    return rows.map((row) => String(row.name));
  }
}

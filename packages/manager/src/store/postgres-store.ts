import { Kysely, sql } from 'kysely';
import type { Backend, StoreDatabase } from './backend.js';
import { createPostgresDialect, createPostgresPool, type PostgresPoolOptions } from './postgres-dialect.js';
import { Store, type StoreOptions } from './store.js';

export interface PostgresStoreOptions extends StoreOptions, PostgresPoolOptions {}

// Any constant will do, as long as nothing else uses it as an advisory lock key
// (it is "drover e" in ASCII). Text, cast in SQL: no BigInt through the driver.
const eventAppendLock = '7237970105436610661';

/** The LISTEN/NOTIFY channel that tells other managers new events were committed. */
export const eventChannel = 'drover_events';

/**
 * SQL that differs in PostgreSQL. Transactions run at READ COMMITTED; an
 * invariant spanning rows is guarded by locking one row first
 * (`getForUpdate`, SELECT ... FOR UPDATE): concurrent transactions on the same
 * host then queue on that lock instead of failing and retrying, as they would
 * under SERIALIZABLE.
 */
export const postgresBackend: Backend = {
  kind: 'postgres',
  jsonObjectHas: (column, key, value) => sql`(${sql.ref(column)} ->> ${key}) = ${value}`,
  jsonArrayContains: (column, value) => sql`${sql.ref(column)} @> jsonb_build_array(${value}::text)`,
  joinText: (expression, separator) => sql<string | null>`string_agg(${expression}, ${separator})`,
  textContains: (column, needle) => sql`strpos(${sql.ref(column)}, ${needle}) > 0`,
  rowLocks: true,
  serializeEventAppends: async (trx) => {
    await sql`select pg_advisory_xact_lock(${eventAppendLock}::bigint)`.execute(trx);
    // Delivered at commit to every manager listening (cluster/event-relay.ts), which then
    // reads the new rows; several appends in one transaction make one notification.
    await sql`select pg_notify(${eventChannel}, '')`.execute(trx);
  },
};

/**
 * Opens the store on PostgreSQL (a `pg` pool) and migrates it to the latest
 * schema; concurrent managers migrating at once wait for each other.
 *
 * @example
 * const store = await openPostgresStore({ connectionString: 'postgres://drover@db/drover' });
 */
export async function openPostgresStore(options: PostgresStoreOptions): Promise<Store> {
  const pool = createPostgresPool(options);
  const db: StoreDatabase = new Kysely({ dialect: createPostgresDialect(pool) });
  return Store.open(db, postgresBackend, options);
}

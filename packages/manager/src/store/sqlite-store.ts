import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { errors } from '@drover/core';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, sql } from 'kysely';
import type { Backend, StoreDatabase } from './backend.js';
import { sqliteDatabase } from './sqlite-database.js';
import { DroverSqliteDialect } from './sqlite-dialect.js';
import { Store, type StoreOptions } from './store.js';

export interface SqliteStoreOptions extends StoreOptions {
  /** The database file (created with its directory if missing), or ":memory:". */
  file: string;
  /** How long a query waits for another process's write lock; 5 s by default. */
  busyTimeoutMs?: number;
}

/**
 * SQL that differs in SQLite. JSON is matched with json_each rather than
 * json_extract(col, '$.key'): a JSON path cannot quote every possible key, a
 * bound key compared to json_each.key needs no quoting at all.
 */
export const sqliteBackend: Backend = {
  kind: 'sqlite',
  jsonObjectHas: (column, key, value) =>
    sql`exists (select 1 from json_each(${sql.ref(column)}) as j where j.key = ${key} and j.type = 'text' and j.value = ${value})`,
  jsonArrayContains: (column, value) =>
    sql`exists (select 1 from json_each(${sql.ref(column)}) as j where j.type = 'text' and j.value = ${value})`,
  joinText: (expression, separator) => sql<string | null>`group_concat(${expression}, ${separator})`,
  // data_version moves when another connection commits; total_changes() counts every row this
  // connection inserted, updated or deleted (foreign-key actions included, rolled-back ones too).
  // See also openSqliteStore, which reads the same two numbers without Kysely.
  changeToken: async (db) => {
    const { rows } = await sql<{ version: number; changes: number }>`select (select data_version from pragma_data_version) as version, total_changes() as changes`.execute(db);
    return `${rows[0]!.version}:${rows[0]!.changes}`;
  },
  textContains: (column, needle) => sql`instr(${sql.ref(column)}, ${needle}) > 0`,
  rowLocks: false,
  // One writer at a time already: transactions begin immediate.
  serializeEventAppends: async () => {},
};

function openDatabase(file: string, busyTimeoutMs: number): BetterSqlite3.Database {
  try {
    if (file !== ':memory:') mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    const database = new BetterSqlite3(file, { timeout: busyTimeoutMs });
    // WAL: readers never block the writer; FULL: a committed operation
    // survives a power loss (the journal is persisted before the manager acts).
    database.pragma('journal_mode = WAL');
    database.pragma('synchronous = FULL');
    database.pragma('foreign_keys = ON');
    database.pragma(`busy_timeout = ${busyTimeoutMs}`);
    return database;
  } catch (error) {
    throw errors.unavailable(`Cannot open the store "${file}": ${error instanceof Error ? error.message : String(error)}`, { file }, error);
  }
}

/**
 * The change token read straight from the connection, synchronously: it is read
 * on every authenticated request (the token cache, the VM list), and going
 * through Kysely cost ten times the query. Reading it outside Kysely's
 * connection mutex is safe: it may then see the uncommitted rows of a
 * transaction in flight, but what it vouches for is always read later through
 * Kysely (after that transaction ended), and any write after the read still
 * moves the token, so a kept answer can miss but never be stale.
 */
function directChangeToken(database: BetterSqlite3.Database): NonNullable<Backend['changeToken']> {
  // Two statements: the pragma_data_version table-valued function cost twice the pragma itself.
  const version = database.prepare('pragma data_version').pluck();
  const changes = database.prepare('select total_changes()').pluck();
  return async (db) => {
    let token: string;
    try {
      token = `${version.get() as number}:${changes.get() as number}`;
    } catch {
      // The connection is busy with a statement still being iterated: wait for it through Kysely.
      return sqliteBackend.changeToken!(db);
    }
    return token;
  };
}

/**
 * Opens (creating if needed) the embedded store: one SQLite file, WAL mode,
 * foreign keys on, a busy timeout; migrates it to the latest schema.
 *
 * @example
 * const store = await openSqliteStore({ file: path.join(dataDir, 'drover.sqlite') });
 */
export async function openSqliteStore(options: SqliteStoreOptions): Promise<Store> {
  const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
  const database = openDatabase(options.file, busyTimeoutMs);
  const db: StoreDatabase = new Kysely({ dialect: new DroverSqliteDialect({ database: sqliteDatabase(database) }) });
  return Store.open(db, { ...sqliteBackend, changeToken: directChangeToken(database) }, options);
}

import type { Expression, Kysely, SqlBool } from 'kysely';
import type { Row } from './record-codec.js';

/**
 * The repositories are written once against Kysely; table names are chosen at
 * run time by the generic repository, so the database is typed loosely here
 * and records are typed by their codecs (record-codec.ts) instead.
 */
export type StoreDatabase = Kysely<Record<string, Row>>;

export type BackendKind = 'sqlite' | 'postgres';

/** What differs between SQLite and PostgreSQL beyond what Kysely hides. */
export interface Backend {
  readonly kind: BackendKind;
  /** The JSON object of strings in `column` maps `key` to `value`. */
  jsonObjectHas(column: string, key: string, value: string): Expression<SqlBool>;
  /** The JSON array of strings in `column` contains `value`. */
  jsonArrayContains(column: string, value: string): Expression<SqlBool>;
  /**
   * A text that differs whenever any row of the database may have changed since
   * it was last read: see `Store.changeToken`. Absent where that cannot be told
   * cheaply (PostgreSQL).
   */
  changeToken?(db: StoreDatabase): Promise<string>;
  /** The aggregate joining the text `expression` of every row with `separator`, in no particular order; NULL for no rows. */
  joinText(expression: Expression<string>, separator: string): Expression<string | null>;
  /** `column` contains `needle`, case-sensitive, with no wildcard characters. */
  textContains(column: string, needle: string): Expression<SqlBool>;
  /**
   * Whether `SELECT ... FOR UPDATE` exists. PostgreSQL: yes. SQLite: no, and not
   * needed: a transaction there holds the database's write lock from its start.
   */
  readonly rowLocks: boolean;
  /**
   * Inside a transaction: holds appends to the event feed until this transaction
   * ends, so that event seqs become visible in their order (see events.ts).
   */
  serializeEventAppends(trx: StoreDatabase): Promise<void>;
}

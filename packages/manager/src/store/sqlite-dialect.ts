import {
  CompiledQuery,
  SqliteAdapter,
  SqliteDialect,
  SqliteDriver,
  type DatabaseConnection,
  type DialectAdapter,
  type Driver,
  type SqliteDialectConfig,
} from 'kysely';

/**
 * Kysely's SQLite dialect with two changes:
 *
 * - Transactions start with BEGIN IMMEDIATE, taking the write lock at once. A
 *   deferred BEGIN that reads and then writes can fail with SQLITE_BUSY when
 *   another process (a second manager, a backup tool) writes in between, and
 *   busy_timeout does not help there. Within this process the driver's
 *   connection mutex already serializes transactions: a transaction holds the
 *   one connection from BEGIN to COMMIT, and every other query waits for it.
 * - Migrations run in a transaction: SQLite has transactional DDL, so a failed
 *   migration leaves the schema as it was.
 */
export class DroverSqliteDialect extends SqliteDialect {
  readonly #config: SqliteDialectConfig;

  constructor(config: SqliteDialectConfig) {
    super(config);
    this.#config = config;
  }

  override createDriver(): Driver {
    return new ImmediateTransactionDriver(this.#config);
  }

  override createAdapter(): DialectAdapter {
    return new TransactionalDdlAdapter();
  }
}

class ImmediateTransactionDriver extends SqliteDriver {
  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin immediate'));
  }
}

class TransactionalDdlAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }
}

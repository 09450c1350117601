import { AsyncLocalStorage } from 'node:async_hooks';
import { errors } from '@drover/core';
import { sql } from 'kysely';
import type { Backend, BackendKind, StoreDatabase } from './backend.js';
import { appliedMigrations, migrateToLatest } from './migrations.js';
import { ApiTokenRepository } from './repositories/api-tokens.js';
import { AuditLogRepository } from './repositories/audit-log.js';
import { ProjectRepository } from './repositories/projects.js';
import { RoleRepository } from './repositories/roles.js';
import { UserRepository } from './repositories/users.js';
import { EventRepository } from './repositories/events.js';
import { HostRepository } from './repositories/hosts.js';
import { IdempotencyRepository } from './repositories/idempotency.js';
import { ImageRepository } from './repositories/images.js';
import { JoinTokenRepository } from './repositories/join-tokens.js';
import { OperationRepository } from './repositories/operations.js';
import { PoolRepository } from './repositories/pools.js';
import { ReservationRepository } from './repositories/reservations.js';
import { SecurityRepository } from './repositories/security.js';
import { PowerRepository } from './repositories/power.js';
import { VmRepository } from './repositories/vms.js';
import { VolumeRepository } from './repositories/volumes.js';
import { VmcastRepositories } from './repositories/vmcasting.js';
import { ClusterRepository } from './repositories/cluster.js';
import { LabRepository } from './repositories/labs.js';
import { NetworkRepositories } from './repositories/networks.js';
import { PackageRepository, PackageTrustedKeyRepository } from './repositories/packages.js';
import type { StoreContext } from './store-context.js';
import { mapDriverError } from './store-errors.js';
import { exportTables, importTables, tableCounts, type StoreSnapshot } from './snapshot.js';

export interface StoreOptions {
  /** The clock for createdAt/updatedAt; the system clock by default. */
  now?: () => Date;
}

/** Marks the async context of a running transaction (see StoreContext.checkUse). */
interface TransactionScope {
  active: boolean;
}

/**
 * The manager's persistent state, the same on SQLite and PostgreSQL. Opened by
 * `openSqliteStore` or `openPostgresStore`; one small repository per table.
 */
export class Store {
  get hosts(): HostRepository {
    return this.#repository('hosts', () => new HostRepository(this.#context));
  }
  get vms(): VmRepository {
    return this.#repository('vms', () => new VmRepository(this.#context));
  }
  get pools(): PoolRepository {
    return this.#repository('pools', () => new PoolRepository(this.#context));
  }
  get volumes(): VolumeRepository {
    return this.#repository('volumes', () => new VolumeRepository(this.#context));
  }
  get images(): ImageRepository {
    return this.#repository('images', () => new ImageRepository(this.#context));
  }
  get operations(): OperationRepository {
    return this.#repository('operations', () => new OperationRepository(this.#context));
  }
  get apiTokens(): ApiTokenRepository {
    return this.#repository('apiTokens', () => new ApiTokenRepository(this.#context));
  }
  get joinTokens(): JoinTokenRepository {
    return this.#repository('joinTokens', () => new JoinTokenRepository(this.#context));
  }
  get idempotency(): IdempotencyRepository {
    return this.#repository('idempotency', () => new IdempotencyRepository(this.#context));
  }
  get events(): EventRepository {
    return this.#repository('events', () => new EventRepository(this.#context));
  }
  get reservations(): ReservationRepository {
    return this.#repository('reservations', () => new ReservationRepository(this.#context));
  }
  /** The active sHype policy and the security labels of hosts and resources (0003_policy). */
  get security(): SecurityRepository {
    return this.#repository('security', () => new SecurityRepository(this.#context));
  }
  /** Host power settings, evacuation records, power policy (power/). */
  get power(): PowerRepository {
    return this.#repository('power', () => new PowerRepository(this.#context));
  }
  get users(): UserRepository {
    return this.#repository('users', () => new UserRepository(this.#context));
  }
  get roles(): RoleRepository {
    return this.#repository('roles', () => new RoleRepository(this.#context));
  }
  get projects(): ProjectRepository {
    return this.#repository('projects', () => new ProjectRepository(this.#context));
  }
  get audit(): AuditLogRepository {
    return this.#repository('audit', () => new AuditLogRepository(this.#context));
  }
  /** VMcasting: appliance metadata, publisher keys, channels, subscriptions, releases, follows. */
  get vmcast(): VmcastRepositories {
    return this.#repository('vmcast', () => new VmcastRepositories(this.#context));
  }
  /** Several managers on one store: managers, leader, operation claims, sealed secrets (0011_cluster_leader). */
  get cluster(): ClusterRepository {
    return this.#repository('cluster', () => new ClusterRepository(this.#context));
  }
  /** Labs: deployments of packages or lab manifests (0009_labs). */
  get labs(): LabRepository {
    return this.#repository('labs', () => new LabRepository(this.#context));
  }
  /** Networks, security groups, VM NICs on networks, host rules (0007_networks). */
  get net(): NetworkRepositories {
    return this.#repository('net', () => new NetworkRepositories(this.#context));
  }
  /** Appliance packages and the publisher keys trusted for them (0008_packages). */
  get packages(): PackageRepository {
    return this.#repository('packages', () => new PackageRepository(this.#context));
  }
  get packageKeys(): PackageTrustedKeyRepository {
    return this.#repository('packageKeys', () => new PackageTrustedKeyRepository(this.#context));
  }

  readonly #context: StoreContext;
  readonly #scopes: AsyncLocalStorage<TransactionScope>;
  /** Repositories made on first use: a transaction's store is made for each transaction and uses a few. */
  readonly #repositories = new Map<string, unknown>();

  #repository<T>(name: string, make: () => T): T {
    let repository = this.#repositories.get(name) as T | undefined;
    if (repository === undefined) {
      repository = make();
      this.#repositories.set(name, repository);
    }
    return repository;
  }
  #closed = false;

  private constructor(context: StoreContext, scopes: AsyncLocalStorage<TransactionScope>) {
    this.#context = context;
    this.#scopes = scopes;
  }

  /** Migrates `db` and wraps it. For openSqliteStore / openPostgresStore; closes `db` when migrating fails. */
  static async open(db: StoreDatabase, backend: Backend, options: StoreOptions = {}): Promise<Store> {
    try {
      await migrateToLatest(db, backend.kind);
    } catch (error) {
      await db.destroy().catch(() => {});
      throw mapDriverError(error);
    }
    const scopes = new AsyncLocalStorage<TransactionScope>();
    const context: StoreContext = {
      db,
      backend,
      now: options.now ?? (() => new Date()),
      checkUse: () => {
        if (scopes.getStore()?.active) {
          throw errors.internal('The store was used inside one of its own transactions: use the store passed to store.transaction(fn)');
        }
      },
    };
    return new Store(context, scopes);
  }

  get backend(): BackendKind {
    return this.#context.backend.kind;
  }

  /** Whether this is the transactional store handed to a `transaction` callback. */
  get inTransaction(): boolean {
    return this.#context.db.isTransaction;
  }

  /**
   * Runs `fn` in one transaction with a store bound to it: all its writes
   * commit together, or none when `fn` throws (its error is rethrown). Called
   * on a transactional store, `fn` joins the running transaction.
   *
   * SQLite: BEGIN IMMEDIATE, and transactions run one at a time. PostgreSQL:
   * READ COMMITTED; lock the row that guards an invariant with
   * `getForUpdate`. Keep transactions short and free of other I/O (agent
   * calls, ...): on SQLite every other query waits for them.
   *
   * @example
   * const fits = await store.transaction(async (tx) => {
   *   const host = await tx.hosts.getForUpdate(hostId);
   *   const reserved = await tx.reservations.sumByHost(hostId);
   *   if (reserved.cpus + cpus > host.capacity.cpus) return false;
   *   await tx.reservations.create({ hostId, vmId, cpus, memoryMiB, expiresAt });
   *   return true;
   * });
   */
  async transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T> {
    if (this.inTransaction) return fn(this);
    this.#context.checkUse();
    const scope: TransactionScope = { active: true };
    try {
      return await this.#scopes.run(scope, () =>
        this.#context.db.transaction().execute((trx) => {
          const context: StoreContext = {
            ...this.#context,
            db: trx,
            checkUse: () => {
              if (!scope.active) throw errors.internal('A transactional store was used after its transaction ended');
            },
          };
          return fn(new Store(context, this.#scopes));
        }),
      );
    } catch (error) {
      throw mapDriverError(error);
    } finally {
      scope.active = false;
    }
  }

  /**
   * A text that differs whenever any row of the database may have changed since
   * the last read of it: on SQLite, a commit by any other connection or any row
   * written by this manager (even in a transaction that rolled back). Read it
   * before reading what you keep; the same token later means nothing changed in
   * between. Undefined on PostgreSQL (no cheap equivalent) and inside a
   * transaction.
   */
  async changeToken(): Promise<string | undefined> {
    const { backend, db } = this.#context;
    if (backend.changeToken === undefined || this.inTransaction) return undefined;
    this.#context.checkUse();
    try {
      return await backend.changeToken(db);
    } catch (error) {
      throw mapDriverError(error);
    }
  }

  /** Checks that the database answers; `unavailable` otherwise. */
  async ping(): Promise<void> {
    this.#context.checkUse();
    try {
      await sql`select 1`.execute(this.#context.db);
    } catch (error) {
      throw mapDriverError(error);
    }
  }

  /** The names of the schema migrations applied, oldest first. */
  async migrations(): Promise<string[]> {
    this.#context.checkUse();
    return appliedMigrations(this.#context.db, this.backend);
  }

  /** Every row of every table, read in one transaction (REPEATABLE READ on PostgreSQL): `drover admin backup`, `migrate-store`. */
  async exportSnapshot(): Promise<StoreSnapshot> {
    this.#context.checkUse();
    const migrations = await this.migrations();
    try {
      const builder = this.#context.db.transaction();
      return await (this.backend === 'postgres' ? builder.setIsolationLevel('repeatable read') : builder).execute((trx) => exportTables(trx, this.backend, migrations));
    } catch (error) {
      throw mapDriverError(error);
    }
  }

  /** Loads a snapshot in one transaction: into an empty store, or replacing everything with `replace` (see snapshot.ts). */
  async importSnapshot(snapshot: StoreSnapshot, options: { replace?: boolean } = {}): Promise<Record<string, number>> {
    this.#context.checkUse();
    const migrations = await this.migrations();
    try {
      return await this.#context.db.transaction().execute((trx) => importTables(trx, this.backend, migrations, snapshot, options));
    } catch (error) {
      throw mapDriverError(error);
    }
  }

  /** Rows per table (migration bookkeeping excluded). */
  async tableCounts(): Promise<Record<string, number>> {
    this.#context.checkUse();
    try {
      return await tableCounts(this.#context.db, this.backend);
    } catch (error) {
      throw mapDriverError(error);
    }
  }

  /** Closes the database (the SQLite file, the PostgreSQL pool). Closing twice is harmless. */
  async close(): Promise<void> {
    if (this.inTransaction) throw errors.internal('Cannot close a transactional store: close the store it came from');
    if (this.#closed) return;
    this.#closed = true;
    await this.#context.db.destroy();
  }
}

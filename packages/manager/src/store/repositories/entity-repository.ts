import { randomUUID } from 'node:crypto';
import { DroverError, errors } from '@drover/core';
import { sql, type Expression, type SqlBool } from 'kysely';
import { decodeCursor, encodeCursor } from '../cursor.js';
import { decodeRecord, encodeFields, fieldOfColumn, isUuid, type FieldSpec, type RecordSpec, type Row } from '../record-codec.js';
import { nowIso, type StoreContext } from '../store-context.js';
import { foreignKeyError, runQuery, uniqueConflict, type ConstraintViolation } from '../store-errors.js';
import type { ListQuery, Page, UpdateOptions } from '../types.js';
import type { FilterSpec } from './list-filters.js';

export const defaultPageSize = 100;
export const maxPageSize = 1000;

/** Everything the generic repository needs to know about one table. */
export interface EntityDefinition<R, F> {
  readonly table: string;
  /** How messages call a record: "host", "vm", ... */
  readonly kind: string;
  readonly fields: RecordSpec<R>;
  /** The sort key of lists, unique thanks to its last field (`id`). */
  readonly order: readonly (keyof R & string)[];
  readonly filters: FilterSpec<F>;
  /** Foreign-key fields, named in the message when a reference is missing. */
  readonly references: readonly (keyof R & string)[];
  /** Whether records carry `rev` and `updatedAt` (mutable records). */
  readonly versioned: boolean;
  /** Field checks beyond the column types; throws `invalid`. */
  readonly validate?: (values: Partial<Record<keyof R, unknown>>) => void;
}

const immutableFields = new Set(['id', 'rev', 'createdAt', 'updatedAt']);

/**
 * A predicate "the sort key is after `key`", as a row-value comparison
 * `(a, b) > (x, y)`: both SQLite and PostgreSQL seek straight to the position
 * in the (a, b) index, where the spelled-out OR form made SQLite scan the
 * index from its start on every page.
 */
function keysetAfter(columns: readonly string[], key: readonly string[]): Expression<SqlBool> {
  if (columns.length === 0 || columns.length !== key.length) return sql<SqlBool>`1 = 0`;
  if (columns.length === 1) return sql<SqlBool>`${sql.ref(columns[0]!)} > ${key[0]!}`;
  const left = sql.join(columns.map((c) => sql.ref(c)));
  const right = sql.join(key.map((k) => sql`${k}`));
  return sql<SqlBool>`(${left}) > (${right})`;
}

/**
 * CRUD for one table, the same on both backends: typed records in and out,
 * `rev`-checked updates in one statement, constraint violations worded as
 * DroverErrors, keyset pagination. Subclasses expose the part that fits their
 * records (images have no update, volumes no unique name, ...).
 */
export class EntityRepository<R extends { id: string }, F> {
  constructor(
    protected readonly context: StoreContext,
    protected readonly definition: EntityDefinition<R, F>,
  ) {}

  /** The record with this id; `not_found` otherwise. */
  async get(id: string): Promise<R> {
    const record = await this.tryGet(id);
    if (record === undefined) throw errors.notFound(this.definition.kind, id);
    return record;
  }

  /** The record with this id, or undefined. */
  async tryGet(id: string): Promise<R | undefined> {
    return this.tryGetWhere({ id } as Partial<Record<keyof R, string>>);
  }

  /**
   * The record, locked until the transaction ends (SELECT ... FOR UPDATE on
   * PostgreSQL; SQLite transactions are exclusive already). Lock the record that
   * guards an invariant before reading what the invariant depends on, e.g. the
   * host before summing its reservations.
   */
  async getForUpdate(id: string): Promise<R> {
    if (!this.context.db.isTransaction) {
      throw errors.internal(`Cannot lock ${this.definition.kind} "${id}" outside a transaction: use the store passed to store.transaction()`);
    }
    if (!isUuid(id)) throw errors.notFound(this.definition.kind, id);
    this.context.checkUse();
    const { db, backend } = this.context;
    const query = db.selectFrom(this.definition.table).selectAll().where('id', '=', id.toLowerCase());
    const row = await runQuery(() => (backend.rowLocks ? query.forUpdate() : query).executeTakeFirst());
    if (row === undefined) throw errors.notFound(this.definition.kind, id);
    return this.decode(row);
  }

  /** One page, in sort-key order; see ListQuery. */
  async list(query: ListQuery<F> = {}): Promise<Page<R>> {
    const { select, pageSize, orderColumns } = this.pageQuery(query);
    this.context.checkUse();
    const rows = await runQuery(() => select.selectAll().execute());
    const items = rows.slice(0, pageSize).map((row) => this.decode(row));
    const last = rows.length > pageSize ? rows[pageSize - 1] : undefined;
    return last === undefined ? { items } : { items, next: encodeCursor(orderColumns.map((column) => String(last[column]))) };
  }

  /**
   * A text that changes whenever the page `list(query)` answers changes in its
   * records or in any of their `fields` (ids, integers or timestamps): the
   * fields of every record the page query reads, the one that decides `next`
   * included, joined in one value. It is exact, not a hash: equal texts mean
   * the same records with the same values (in some order; a different order
   * only ever makes two texts differ). One value instead of one row per record,
   * for a caller that keeps what it made of a page and checks it on every read:
   * with `rev` among the fields, an unchanged text means an unchanged page.
   */
  async pageSignature(query: ListQuery<F>, fields: readonly (keyof R & string)[]): Promise<string> {
    const { db, backend } = this.context;
    const specs = fields.map((name) => {
      const spec = this.definition.fields[name] as FieldSpec;
      // Their text holds no "," or "/" (the separators) and never an empty string.
      if (!['id', 'integer', 'timestamp'].includes(spec.kind)) throw errors.internal(`A page signature cannot hold the ${spec.kind} field "${name}"`);
      return spec;
    });
    const parts = specs.map((spec) => sql<string>`coalesce(cast(${sql.ref(spec.column)} as text), '')`);
    const { select } = this.pageQuery(query);
    const page = select.select(sql<string>`${sql.join(parts, sql`|| '/' ||`)}`.as('part')).as('page');
    this.context.checkUse();
    const row = await runQuery(() => db.selectFrom(page).select(sql<string | null>`${backend.joinText(sql.ref('page.part'), ',')}`.as('signature')).executeTakeFirst());
    return (row?.['signature'] as string | null | undefined) ?? '';
  }

  /** The query of one page (filters, cursor, order, one row more than the page), selecting nothing yet. */
  private pageQuery(query: ListQuery<F>) {
    const { db, backend } = this.context;
    const { fields, order, filters, table } = this.definition;
    const limit = query.limit ?? defaultPageSize;
    if (!Number.isInteger(limit) || limit < 1) throw errors.invalid(`Invalid limit "${String(query.limit)}": it must be a positive integer`);
    const pageSize = Math.min(limit, maxPageSize);
    const orderSpecs = order.map((name) => fields[name] as FieldSpec);
    const orderColumns = orderSpecs.map((spec) => spec.column);

    let select = db.selectFrom(table);
    for (const [name, value] of Object.entries(query.filter ?? {})) {
      if (value === undefined) continue;
      const condition = (filters as Record<string, ((value: unknown, b: typeof backend) => Expression<SqlBool>) | undefined>)[name];
      if (condition === undefined) throw errors.invalid(`Unknown filter "${name}" for ${this.definition.kind} lists`, { filter: name });
      select = select.where(condition(value, backend));
    }
    if (query.after !== undefined) {
      const key = decodeCursor(query.after, orderColumns.length);
      orderSpecs.forEach((spec, index) => {
        const part = key[index]!;
        const valid = spec.kind === 'id' ? isUuid(part) : spec.kind === 'timestamp' ? !Number.isNaN(Date.parse(part)) : true;
        if (!valid) throw errors.invalid(`Invalid cursor "${query.after}"`, { cursor: query.after });
      });
      select = select.where(keysetAfter(orderColumns, key));
    }
    for (const column of orderColumns) select = select.orderBy(column);
    return { select: select.limit(pageSize + 1), pageSize, orderColumns };
  }

  /** The records with these ids that exist, in no particular order (ids that are no UUID match nothing). */
  async getMany(ids: readonly string[]): Promise<R[]> {
    const wanted = [...new Set(ids.filter(isUuid).map((id) => id.toLowerCase()))];
    if (wanted.length === 0) return [];
    this.context.checkUse();
    const rows = await runQuery(() => this.context.db.selectFrom(this.definition.table).selectAll().where('id', 'in', wanted).execute());
    return rows.map((row) => this.decode(row));
  }

  /** Deletes the record and returns it as it was; `not_found`, `precondition_failed`, or `conflict` while others refer to it. */
  async delete(id: string, options: UpdateOptions = {}): Promise<R> {
    // Read first: the answer is the record as it was, and a refusal names it.
    const current = await this.get(id);
    let query = this.context.db.deleteFrom(this.definition.table).where('id', '=', current.id);
    if (options.expectedRev !== undefined) {
      if (!this.definition.versioned) throw errors.invalid(`${this.definition.kind} records have no rev`);
      query = query.where('rev', '=', this.checkedRev(options.expectedRev));
    }
    this.context.checkUse();
    const row = await runQuery(
      () => query.returningAll().executeTakeFirst(),
      (violation) => this.violationError('delete', current, violation),
    );
    if (row !== undefined) return this.decode(row);
    throw await this.whyNotChanged('delete', id, options);
  }

  /** The id, first rev and timestamps of a new record (immutable records take id and createdAt). */
  protected newIdentity(): { id: string; rev: number; createdAt: string; updatedAt: string } {
    const now = nowIso(this.context);
    return { id: randomUUID(), rev: 1, createdAt: now, updatedAt: now };
  }

  /** Inserts a complete record (every field given, nulls included). */
  protected async insert(values: Record<keyof R, unknown>): Promise<R> {
    this.definition.validate?.(values);
    const row = encodeFields(this.definition.fields, values as Partial<R>);
    this.context.checkUse();
    const inserted = await runQuery(
      () => this.context.db.insertInto(this.definition.table).values(row).returningAll().executeTakeFirstOrThrow(),
      (violation) => this.violationError('create', values, violation),
    );
    return this.decode(inserted);
  }

  /**
   * Applies `patch` and bumps `rev` and `updatedAt` in one statement
   * (UPDATE ... WHERE id = ? [AND rev = ?]), so two writers never both win.
   */
  protected async patch(id: string, patch: object, options: UpdateOptions = {}): Promise<R> {
    if (!this.definition.versioned) throw errors.internal(`${this.definition.kind} records are immutable`);
    const changes = Object.fromEntries(Object.entries(patch).filter(([, value]) => value !== undefined));
    for (const name of Object.keys(changes)) {
      if (immutableFields.has(name)) throw errors.invalid(`Cannot update ${this.definition.kind} "${id}": "${name}" cannot be changed`, { field: name });
    }
    this.definition.validate?.(changes as Partial<Record<keyof R, unknown>>);
    if (!isUuid(id)) throw errors.notFound(this.definition.kind, id);
    const row: Row = {
      ...encodeFields(this.definition.fields, changes as Partial<R>),
      rev: sql`rev + 1`,
      updated_at: nowIso(this.context),
    };
    let query = this.context.db.updateTable(this.definition.table).set(row).where('id', '=', id.toLowerCase());
    if (options.expectedRev !== undefined) query = query.where('rev', '=', this.checkedRev(options.expectedRev));
    this.context.checkUse();
    const updated = await runQuery(
      () => query.returningAll().executeTakeFirst(),
      (violation) => this.violationError('update', { id, ...changes }, violation),
    );
    if (updated !== undefined) return this.decode(updated);
    throw await this.whyNotChanged('update', id, options);
  }

  /** The record whose fields equal `values` (a unique key), or undefined. */
  protected async tryGetWhere(values: Partial<Record<keyof R, string>>): Promise<R | undefined> {
    const { fields, table } = this.definition;
    let query = this.context.db.selectFrom(table).selectAll();
    for (const [name, value] of Object.entries(values) as [keyof R & string, string][]) {
      const spec = fields[name] as FieldSpec;
      // A malformed id names no record (and PostgreSQL would refuse it as uuid input).
      if (spec.kind === 'id' && !isUuid(value)) return undefined;
      query = query.where(spec.column, '=', spec.kind === 'id' ? value.toLowerCase() : value);
    }
    this.context.checkUse();
    const row = await runQuery(() => query.executeTakeFirst());
    return row === undefined ? undefined : this.decode(row);
  }

  protected decode(row: Row): R {
    return decodeRecord(this.definition.fields, row);
  }

  /** How messages name a record: its name when it has one, else its id. */
  protected labelOf(values: Partial<Record<string, unknown>>): string {
    const name = values['name'];
    return typeof name === 'string' ? name : String(values['id'] ?? '');
  }

  private checkedRev(rev: number): number {
    if (!Number.isSafeInteger(rev) || rev < 1) throw errors.invalid(`Invalid rev "${String(rev)}": it must be a positive integer`);
    return rev;
  }

  /** After an UPDATE/DELETE matched no row: was the record missing, or at another rev? */
  private async whyNotChanged(action: string, id: string, options: UpdateOptions): Promise<DroverError> {
    const current = await this.tryGet(id);
    if (current === undefined) return errors.notFound(this.definition.kind, id);
    const currentRev = (current as unknown as { rev: number }).rev;
    return new DroverError(
      'precondition_failed',
      `Cannot ${action} ${this.definition.kind} "${this.labelOf(current)}": expected rev ${options.expectedRev} but it is at rev ${currentRev}`,
      { details: { kind: this.definition.kind, id: current.id, expectedRev: options.expectedRev, currentRev } },
    );
  }

  private violationError(action: string, values: Partial<Record<string, unknown>>, violation: ConstraintViolation): DroverError {
    const { kind, fields, references } = this.definition;
    const label = this.labelOf(values);
    if (violation.kind === 'unique') {
      const names = violation.columns.map((columnName) => fieldOfColumn(fields, columnName));
      return uniqueConflict(action, kind, label, names.map((name) => [name, values[name]] as const));
    }
    return foreignKeyError(action, kind, label, references.map((name) => [name, values[name]] as const));
  }
}

/** A repository of records with a unique `name`: adds lookups by name. */
export class NamedEntityRepository<R extends { id: string; name: string }, F> extends EntityRepository<R, F> {
  /** The record with this name; `not_found` otherwise. */
  async getByName(name: string): Promise<R> {
    const record = await this.tryGetWhere({ name } as Partial<Record<keyof R, string>>);
    if (record === undefined) throw errors.notFound(this.definition.kind, name);
    return record;
  }

  /** The record with this id or, failing that, this name; `not_found` otherwise. */
  async find(idOrName: string): Promise<R> {
    const record = await this.tryFind(idOrName);
    if (record === undefined) throw errors.notFound(this.definition.kind, idOrName);
    return record;
  }

  async tryFind(idOrName: string): Promise<R | undefined> {
    return (await this.tryGet(idOrName)) ?? (await this.tryGetWhere({ name: idOrName } as Partial<Record<keyof R, string>>));
  }
}

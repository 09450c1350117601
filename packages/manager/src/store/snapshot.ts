import { errors } from '@drover/core';
import { sql } from 'kysely';
import type { BackendKind, StoreDatabase } from './backend.js';
import { migrationLockTableName, migrationTableName } from './migrations.js';

/**
 * Every row of every table of the store, backend-neutral: what `drover admin
 * backup` writes and `migrate-store` / `restore` load. Values are as the store
 * reads them (JSON as its text, timestamps as ISO 8601 text, booleans as
 * booleans or 0/1); `importSnapshot` converts them to the target's column types.
 */
export interface StoreSnapshot {
  format: 'drover-store-snapshot';
  version: 1;
  createdAt: string;
  backend: BackendKind;
  /** The schema migrations applied to the source, oldest first: the target must have the same. */
  migrations: string[];
  /** In dependency order (a table after the tables it refers to). */
  tables: Array<{ name: string; columns: string[]; rows: unknown[][] }>;
}

interface TableInfo {
  name: string;
  columns: Array<{ name: string; type: string; serial: boolean }>;
  /** Tables this one refers to (itself excluded), and its own columns that refer to itself. */
  references: string[];
  selfColumns: Array<{ column: string; target: string }>;
}

const skipped = new Set([migrationTableName, migrationLockTableName]);

async function tables(db: StoreDatabase, kind: BackendKind): Promise<TableInfo[]> {
  const infos: TableInfo[] = [];
  if (kind === 'sqlite') {
    const { rows } = await sql<{ name: string }>`select name from sqlite_master where type = 'table' and name not like 'sqlite_%' order by name`.execute(db);
    for (const { name } of rows) {
      if (skipped.has(name)) continue;
      const columns = (await sql<{ name: string; type: string }>`select name, type from pragma_table_info(${name})`.execute(db)).rows;
      const keys = (await sql<{ table: string; from: string; to: string | null }>`select "table", "from", "to" from pragma_foreign_key_list(${name})`.execute(db)).rows;
      infos.push({
        name,
        columns: columns.map((c) => ({ name: c.name, type: c.type.toLowerCase(), serial: false })),
        references: [...new Set(keys.filter((k) => k.table !== name).map((k) => k.table))],
        selfColumns: keys.filter((k) => k.table === name).map((k) => ({ column: k.from, target: k.to ?? 'id' })),
      });
    }
  } else {
    const { rows } = await sql<{ name: string }>`select table_name as name from information_schema.tables where table_schema = current_schema() and table_type = 'BASE TABLE' order by table_name`.execute(db);
    const keys = (
      await sql<{ from_table: string; from_column: string; to_table: string; to_column: string }>`
        select kcu.table_name as from_table, kcu.column_name as from_column, ccu.table_name as to_table, ccu.column_name as to_column
        from information_schema.table_constraints tc
        join information_schema.key_column_usage kcu on kcu.constraint_name = tc.constraint_name and kcu.table_schema = tc.table_schema
        join information_schema.constraint_column_usage ccu on ccu.constraint_name = tc.constraint_name and ccu.table_schema = tc.table_schema
        where tc.constraint_type = 'FOREIGN KEY' and tc.table_schema = current_schema()`.execute(db)
    ).rows;
    for (const { name } of rows) {
      if (skipped.has(name)) continue;
      const columns = (
        await sql<{ name: string; type: string; default: string | null }>`select column_name as name, data_type as type, column_default as default
          from information_schema.columns where table_schema = current_schema() and table_name = ${name} order by ordinal_position`.execute(db)
      ).rows;
      const own = keys.filter((k) => k.from_table === name);
      infos.push({
        name,
        columns: columns.map((c) => ({ name: c.name, type: c.type.toLowerCase(), serial: (c.default ?? '').startsWith('nextval(') })),
        references: [...new Set(own.filter((k) => k.to_table !== name).map((k) => k.to_table))],
        selfColumns: own.filter((k) => k.to_table === name).map((k) => ({ column: k.from_column, target: k.to_column })),
      });
    }
  }
  // Dependency order: a table after every table it refers to.
  const byName = new Map(infos.map((info) => [info.name, info]));
  const ordered: TableInfo[] = [];
  const placed = new Set<string>();
  const visit = (info: TableInfo, path: string[]) => {
    if (placed.has(info.name)) return;
    if (path.includes(info.name)) throw errors.internal(`The store's tables refer to each other in a cycle: ${[...path, info.name].join(' → ')}`);
    for (const ref of info.references) {
      const target = byName.get(ref);
      if (target) visit(target, [...path, info.name]);
    }
    placed.add(info.name);
    ordered.push(info);
  };
  for (const info of infos) visit(info, []);
  return ordered;
}

/** The number of rows of every table (migration bookkeeping excluded). */
export async function tableCounts(db: StoreDatabase, kind: BackendKind): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const table of await tables(db, kind)) {
    const row = await db.selectFrom(table.name).select(sql<number | string>`count(*)`.as('n')).executeTakeFirst();
    counts[table.name] = Number(row?.n ?? 0);
  }
  return counts;
}

/** Reads every table; run it in a transaction (REPEATABLE READ on PostgreSQL) for a consistent snapshot. */
export async function exportTables(db: StoreDatabase, kind: BackendKind, migrations: string[]): Promise<StoreSnapshot> {
  const out: StoreSnapshot = { format: 'drover-store-snapshot', version: 1, createdAt: new Date().toISOString(), backend: kind, migrations, tables: [] };
  for (const table of await tables(db, kind)) {
    const columns = table.columns.map((c) => c.name);
    const rows = await db.selectFrom(table.name).selectAll().execute();
    out.tables.push({ name: table.name, columns, rows: rows.map((row) => columns.map((c) => normalize(row[c]))) });
  }
  return out;
}

function normalize(value: unknown): unknown {
  if (value instanceof Date) return value.toISOString();
  if (typeof value === 'bigint') return Number(value);
  if (Buffer.isBuffer(value)) return { $base64: value.toString('base64') };
  return value;
}

/** A snapshot value as the target column wants it. */
function convert(value: unknown, type: string, kind: BackendKind): unknown {
  if (value === null || value === undefined) return null;
  if (typeof value === 'object' && value !== null && '$base64' in value) return Buffer.from(String((value as { $base64: string }).$base64), 'base64');
  if (kind === 'postgres') {
    if (type === 'boolean') return value === true || value === 1 || value === '1' || value === 't' || value === 'true';
    if ((type === 'jsonb' || type === 'json') && typeof value !== 'string') return JSON.stringify(value);
    return value;
  }
  if (typeof value === 'boolean') return value ? 1 : 0;
  if (typeof value === 'object') return JSON.stringify(value);
  return value;
}

/**
 * Loads a snapshot into an empty store of the same schema, in one transaction
 * (the caller's): tables in dependency order, rows referring to others of their
 * own table after those, sequences moved past the loaded numbers. Refuses a
 * snapshot of another schema, or a non-empty target unless `replace` (which
 * deletes every row first). Returns the rows loaded per table.
 */
export async function importTables(db: StoreDatabase, kind: BackendKind, migrations: string[], snapshot: StoreSnapshot, options: { replace?: boolean } = {}): Promise<Record<string, number>> {
  if (snapshot?.format !== 'drover-store-snapshot' || snapshot.version !== 1 || !Array.isArray(snapshot.tables)) {
    throw errors.invalid('Not a Drover store snapshot (format drover-store-snapshot, version 1)');
  }
  const missing = snapshot.migrations.filter((name) => !migrations.includes(name));
  if (missing.length > 0) throw errors.invalid(`The snapshot comes from a newer schema (migrations ${missing.join(', ')} are unknown here): use that Drover version`, { missing });
  const target = await tables(db, kind);
  const byName = new Map(target.map((t) => [t.name, t]));
  for (const table of snapshot.tables) {
    if (!byName.has(table.name)) throw errors.invalid(`The snapshot has a table "${table.name}" this store does not have`, { table: table.name });
  }
  const counts = await tableCounts(db, kind);
  const busy = Object.entries(counts).filter(([, n]) => n > 0);
  if (busy.length > 0 && !options.replace) {
    throw errors.conflict(`The target store is not empty (${busy.map(([name, n]) => `${name}: ${n}`).join(', ')}); it must be a new, empty database`, { tables: Object.fromEntries(busy) });
  }
  if (busy.length > 0) {
    for (const table of [...target].reverse()) await db.deleteFrom(table.name).execute();
  }
  const loaded: Record<string, number> = {};
  const ordered = target.map((t) => snapshot.tables.find((s) => s.name === t.name)).filter((t): t is StoreSnapshot['tables'][number] => t !== undefined);
  for (const table of ordered) {
    const info = byName.get(table.name)!;
    const types = new Map(info.columns.map((c) => [c.name, c.type]));
    for (const column of table.columns) {
      if (!types.has(column)) throw errors.invalid(`The snapshot's table "${table.name}" has a column "${column}" this store does not have`, { table: table.name, column });
    }
    let rows = table.rows.map((row) => Object.fromEntries(table.columns.map((column, i) => [column, convert(row[i], types.get(column)!, kind)])));
    // Rows that refer to rows of their own table (a clone's backing volume) go after those.
    const batches: Array<typeof rows> = [];
    if (info.selfColumns.length > 0) {
      const present = new Set<unknown>();
      while (rows.length > 0) {
        const ready = rows.filter((row) => info.selfColumns.every((s) => row[s.column] === null || row[s.column] === undefined || present.has(row[s.column])));
        if (ready.length === 0) throw errors.invalid(`The snapshot's table "${table.name}" refers to rows it does not hold`, { table: table.name });
        for (const row of ready) present.add(row[info.selfColumns[0]!.target]);
        rows = rows.filter((row) => !ready.includes(row));
        batches.push(ready);
      }
    } else {
      batches.push(rows);
    }
    for (const batch of batches) {
      for (let i = 0; i < batch.length; i += 200) await db.insertInto(table.name).values(batch.slice(i, i + 200)).execute();
    }
    loaded[table.name] = table.rows.length;
    if (kind === 'postgres') {
      for (const column of info.columns.filter((c) => c.serial)) {
        await sql`select setval(pg_get_serial_sequence(${table.name}, ${column.name}), coalesce((select max(${sql.ref(column.name)}) from ${sql.table(table.name)}), 0) + 1, false)`.execute(db);
      }
    }
  }
  return loaded;
}

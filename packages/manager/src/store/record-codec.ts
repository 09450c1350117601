import { errors } from '@drover/core';

/**
 * How a record field is stored. Both backends hand rows back in the same shape
 * (the PostgreSQL pool is configured so: jsonb as text, int8 as number,
 * timestamptz as ISO string), so one codec serves both.
 *
 * - `id`: a UUID (text in SQLite, uuid in PostgreSQL), always lowercase.
 * - `json`: TEXT in SQLite, jsonb in PostgreSQL.
 * - `boolean`: 0/1 in SQLite, boolean in PostgreSQL. Written as 0/1 on both:
 *   better-sqlite3 cannot bind booleans, and PostgreSQL reads '1'/'0' as booleans.
 * - `timestamp`: ISO 8601 text in SQLite (fixed width, so text order is time
 *   order), timestamptz in PostgreSQL.
 */
export type FieldKind = 'id' | 'text' | 'integer' | 'json' | 'boolean' | 'timestamp';

export interface FieldSpec {
  readonly column: string;
  readonly kind: FieldKind;
  readonly nullable: boolean;
}

/** The column of every field of record type R. */
export type RecordSpec<R> = { readonly [K in keyof R]-?: FieldSpec };

export type Row = Record<string, unknown>;

function field(kind: FieldKind) {
  return (column: string, options: { nullable?: boolean } = {}): FieldSpec => ({
    column,
    kind,
    nullable: options.nullable ?? false,
  });
}

export const column = {
  id: field('id'),
  text: field('text'),
  integer: field('integer'),
  json: field('json'),
  boolean: field('boolean'),
  timestamp: field('timestamp'),
};

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(value: string): boolean {
  return uuidPattern.test(value);
}

/** Normalizes a timestamp to the one text form the store keeps; `invalid` otherwise. */
export function toTimestamp(value: unknown, name: string): string {
  const date = value instanceof Date ? value : typeof value === 'string' ? new Date(value) : undefined;
  if (date === undefined || Number.isNaN(date.getTime())) {
    throw errors.invalid(`Invalid timestamp for "${name}": "${String(value)}"`, { field: name, value: String(value) });
  }
  return date.toISOString();
}

function encodeValue(name: string, spec: FieldSpec, value: unknown): unknown {
  if (value === null || value === undefined) {
    if (!spec.nullable) throw errors.invalid(`Missing value for "${name}"`, { field: name });
    return null;
  }
  switch (spec.kind) {
    case 'id':
      if (typeof value !== 'string' || !isUuid(value)) {
        throw errors.invalid(`Invalid id for "${name}": "${String(value)}"`, { field: name, value: String(value) });
      }
      return value.toLowerCase();
    case 'text':
      if (typeof value !== 'string') throw errors.invalid(`"${name}" must be a string`, { field: name });
      return value;
    case 'integer':
      if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
        throw errors.invalid(`"${name}" must be an integer, got "${String(value)}"`, { field: name, value: String(value) });
      }
      return value;
    case 'json':
      return JSON.stringify(value);
    case 'boolean':
      if (typeof value !== 'boolean') throw errors.invalid(`"${name}" must be a boolean`, { field: name });
      return value ? 1 : 0;
    case 'timestamp':
      return toTimestamp(value, name);
  }
}

function decodeValue(spec: FieldSpec, value: unknown): unknown {
  if (value === null || value === undefined) return null;
  switch (spec.kind) {
    case 'id':
    case 'text':
    case 'timestamp':
      return String(value);
    case 'integer':
      return Number(value);
    case 'json':
      return typeof value === 'string' ? JSON.parse(value) : value;
    case 'boolean':
      return value === true || value === 1;
  }
}

/**
 * The row for a record or part of one: only the fields present in `values`
 * (undefined ones are skipped), each encoded for its column.
 */
export function encodeFields<R>(spec: RecordSpec<R>, values: Partial<R>): Row {
  const row: Row = {};
  for (const [name, value] of Object.entries(values)) {
    if (value === undefined) continue;
    const fieldSpec = (spec as Record<string, FieldSpec>)[name];
    if (fieldSpec === undefined) throw errors.invalid(`Unknown field "${name}"`, { field: name });
    row[fieldSpec.column] = encodeValue(name, fieldSpec, value);
  }
  return row;
}

/** Each spec's fields as a list, made once: decoding walks it for every row of every page. */
const fieldLists = new WeakMap<object, Array<readonly [string, FieldSpec]>>();

export function decodeRecord<R>(spec: RecordSpec<R>, row: Row): R {
  let fields = fieldLists.get(spec);
  if (fields === undefined) {
    fields = Object.entries(spec as Record<string, FieldSpec>);
    fieldLists.set(spec, fields);
  }
  const record: Record<string, unknown> = {};
  for (let i = 0; i < fields.length; i++) {
    const [name, fieldSpec] = fields[i]!;
    record[name] = decodeValue(fieldSpec, row[fieldSpec.column]);
  }
  return record as R;
}

/** The field name stored in `columnName`, for messages ("name" for "name", "poolId" for "pool_id"). */
export function fieldOfColumn<R>(spec: RecordSpec<R>, columnName: string): string {
  for (const [name, fieldSpec] of Object.entries(spec as Record<string, FieldSpec>)) {
    if (fieldSpec.column === columnName) return name;
  }
  return columnName;
}

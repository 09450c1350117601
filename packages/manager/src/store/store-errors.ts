import { DroverError, errors } from '@drover/core';

/**
 * Driver errors → DroverErrors, for both backends. Constraint violations are
 * recognised here and worded by the repository that knows the object;
 * transient failures (busy database, serialization failure, deadlock, lost
 * connection) become `unavailable`, so callers may retry; anything else is a
 * bug and is rethrown unchanged.
 */

export type ConstraintViolation =
  | { kind: 'unique'; columns: string[] }
  | { kind: 'foreign_key' };

function propertyOf(error: unknown, name: string): unknown {
  return typeof error === 'object' && error !== null ? (error as Record<string, unknown>)[name] : undefined;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export function constraintViolationOf(error: unknown): ConstraintViolation | undefined {
  const code = propertyOf(error, 'code');
  if (code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
    // "UNIQUE constraint failed: volumes.pool_id, volumes.name"
    const list = messageOf(error).split('failed: ')[1] ?? '';
    const columns = list.split(',').map((part) => part.trim().split('.').pop() ?? '');
    return { kind: 'unique', columns: columns.filter((name) => name !== '') };
  }
  if (code === '23505') {
    // detail: "Key (pool_id, name)=(2f0c…, disk0) already exists."
    const detail = propertyOf(error, 'detail');
    const match = typeof detail === 'string' ? /^Key \(([^)]*)\)=/.exec(detail) : null;
    return { kind: 'unique', columns: match?.[1] ? match[1].split(',').map((part) => part.trim()) : [] };
  }
  if (code === 'SQLITE_CONSTRAINT_FOREIGNKEY' || code === '23503') return { kind: 'foreign_key' };
  return undefined;
}

// 40001 serialization_failure, 40P01 deadlock_detected, 55P03 lock_not_available,
// 53300 too_many_connections, 57P01-03 server shutting down or starting.
const transientPostgresCodes = new Set(['40001', '40P01', '55P03', '53300', '57P01', '57P02', '57P03']);
const transientNodeCodes = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH']);

function isTransient(error: unknown): boolean {
  const code = propertyOf(error, 'code');
  if (typeof code === 'string') {
    if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) return true;
    if (transientPostgresCodes.has(code) || transientNodeCodes.has(code)) return true;
    if (/^08[0-9A-Z]{3}$/.test(code)) return true; // connection_exception class
  }
  // node-postgres reports a dropped connection and a pool timeout without a code.
  return /Connection terminated|timeout exceeded when trying to connect/i.test(messageOf(error));
}

/** A DroverError for any error a query threw (see the module comment). */
export function mapDriverError(error: unknown): unknown {
  if (error instanceof DroverError) return error;
  const code = propertyOf(error, 'code');
  if (code === '57014') {
    return new DroverError('timeout', `The store did not answer in time: ${messageOf(error)}`, { cause: error });
  }
  if (isTransient(error)) {
    return errors.unavailable(`The store is unavailable: ${messageOf(error)}`, { reason: typeof code === 'string' ? code : 'connection' }, error);
  }
  return error;
}

/**
 * Runs a query, mapping its errors; `onViolation` words constraint violations
 * (return undefined to leave one to the generic mapping).
 */
export async function runQuery<T>(
  query: () => Promise<T>,
  onViolation?: (violation: ConstraintViolation) => DroverError | undefined,
): Promise<T> {
  try {
    return await query();
  } catch (error) {
    if (error instanceof DroverError) throw error;
    const violation = constraintViolationOf(error);
    const worded = violation && onViolation ? onViolation(violation) : undefined;
    if (worded) throw worded;
    throw mapDriverError(error);
  }
}

function quoted(fields: ReadonlyArray<readonly [string, unknown]>): string {
  return fields
    .map(([name, value]) => (value === undefined ? `the same ${name}` : `${name} "${String(value)}"`))
    .join(' and ');
}

/** "Cannot create host "h1": a host with name "h1" already exists". */
export function uniqueConflict(
  action: string,
  kind: string,
  label: string,
  fields: ReadonlyArray<readonly [string, unknown]>,
): DroverError {
  return errors.conflict(`Cannot ${action} ${kind} "${label}": a ${kind} with ${quoted(fields)} already exists`, {
    kind,
    fields: Object.fromEntries(fields.map(([name, value]) => [name, value === undefined ? null : String(value)])),
  });
}

/**
 * A foreign key failed: on create/update a referenced object is missing
 * (`invalid`, naming the references given); on delete others still refer to the
 * object (`conflict`).
 */
export function foreignKeyError(
  action: string,
  kind: string,
  label: string,
  references: ReadonlyArray<readonly [string, unknown]>,
): DroverError {
  if (action === 'delete') {
    return errors.conflict(`Cannot delete ${kind} "${label}": other objects still refer to it`, { kind });
  }
  const given = references.filter(([, value]) => value !== undefined && value !== null);
  const which = given.length > 0 ? ` (${quoted(given)})` : '';
  return errors.invalid(`Cannot ${action} ${kind} "${label}": a referenced object does not exist${which}`, {
    kind,
    references: Object.fromEntries(given.map(([name, value]) => [name, String(value)])),
  });
}

import { AsyncLocalStorage } from 'node:async_hooks';
import type { NewAuditRecord } from '../store/access-types.js';
import type { Store } from '../store/index.js';

/**
 * A request's audit record, written with the store transaction that does what
 * the request asked instead of in a commit of its own after it.
 *
 * A request that submits an operation is answered 202 (or 200 with `?wait=true`)
 * once the operation exists, whatever the operation later does: its record is
 * known when the operation is created. The HTTP layer (`http/server.ts`,
 * `idempotent`) opens this scope with that record; the operation runner appends it
 * in the transaction that creates the operation (`takeRequestAudit`), and the
 * answer's `onSend` hook then writes no second record, unless the answer's status
 * turned out different (it is then recorded as usual, so the log holds the truth).
 * One fsync fewer per action, and an operation is never committed unaudited.
 */
export interface RequestAudit {
  entry: NewAuditRecord;
  /** Set once the transaction holding the record has committed. */
  written: boolean;
}

const scope = new AsyncLocalStorage<RequestAudit>();

/** Runs `fn` with `audit` as the record its first operation submission writes. */
export function withRequestAudit<T>(audit: RequestAudit, fn: () => Promise<T>): Promise<T> {
  return scope.run(audit, fn);
}

/**
 * Inside a transaction: appends the current request's record if it has not been
 * written yet, and returns what to call once the transaction has committed (a
 * rolled-back transaction leaves the record to the answer's hook).
 */
export async function takeRequestAudit(tx: Store): Promise<() => void> {
  const audit = scope.getStore();
  if (!audit || audit.written) return () => undefined;
  await tx.audit.append(audit.entry);
  return () => {
    audit.written = true;
  };
}

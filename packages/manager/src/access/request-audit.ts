import { AsyncLocalStorage } from 'node:async_hooks';
import type { NewAuditRecord } from '../store/access-types.js';
import type { Store } from '../store/index.js';

/**
 * A request's audit record, written with the store transaction that does what
 * the request asked instead of in a commit of its own after it.
 *
 * The HTTP layer (`http/server.ts`, `idempotent`) opens this scope for a change
 * request. The code that makes the request's one change appends the record in
 * that change's transaction, with the status the request will be answered with
 * once that transaction has committed: `OperationRunner.submit` (an operation is
 * answered 202, or 200 with `?wait=true`, once it exists, whatever it then does)
 * and `VmService.create` (201). The answer's `onSend` hook then writes no second
 * record, unless the answer's status turned out different (it is then recorded
 * as usual, so the log holds the truth). One fsync fewer per such request, and
 * the change is never committed without its record.
 */
export interface RequestAudit {
  /** The record, with the status given. */
  entry: (status: number) => NewAuditRecord;
  /** The status a request that submits an operation is answered with. */
  operationStatus: number;
  /** The status of the record written, once the transaction holding it has committed. */
  written?: number;
}

const scope = new AsyncLocalStorage<RequestAudit>();

/** Runs `fn` in the scope of a request whose record may be written by its change (`takeRequestAudit`). */
export function withRequestAudit<T>(audit: RequestAudit, fn: () => Promise<T>): Promise<T> {
  return scope.run(audit, fn);
}

/**
 * Inside a transaction: appends the current request's record (answered with
 * `status`, by default the operation status) if none was written yet, and returns
 * what to call once the transaction has committed (a rolled-back transaction
 * leaves the record to the answer's hook). Outside a request scope, nothing.
 */
export async function takeRequestAudit(tx: Store, status?: number): Promise<() => void> {
  const audit = scope.getStore();
  if (!audit || audit.written !== undefined) return () => undefined;
  const answered = status ?? audit.operationStatus;
  await tx.audit.append(audit.entry(answered));
  return () => {
    audit.written = answered;
  };
}

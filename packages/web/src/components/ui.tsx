import { useState, type ReactNode } from 'react';
import { ApiError, errorMessage, errorTitle } from '../api/client.js';
import type { Operation } from '../api/types.js';
import { isActive, isTransient, operationFailureTitle, operationTitle, percent } from '../format.js';
import { Link } from '../router.js';
import { Dialog } from './Dialog.js';

/** An error in plain words: a headline for its kind, then the server's own message. */
export function ErrorNote({ error, onDismiss }: { error: unknown; onDismiss?: () => void }) {
  if (error === undefined || error === null) return null;
  const details = error instanceof ApiError ? error.details : {};
  const operationId = typeof details.operationId === 'string' ? details.operationId : undefined;
  const fieldErrors = Array.isArray(details.errors) ? (details.errors as Array<{ path?: string; message?: string }>) : [];
  return (
    <div className="error-note" role="alert">
      <p>
        <strong>{errorTitle(error)}:</strong> <span className="server-message">{errorMessage(error)}</span>
        {operationId && (
          <>
            {' '}
            <Link to={`/operations?focus=${operationId}`}>See the operation in progress</Link>
          </>
        )}
      </p>
      {fieldErrors.length > 1 && (
        <ul>
          {fieldErrors.slice(0, 5).map((e, i) => (
            <li key={i}>{[e.path, e.message].filter(Boolean).join(': ')}</li>
          ))}
        </ul>
      )}
      {onDismiss && (
        <button type="button" className="link-button" onClick={onDismiss}>
          Dismiss
        </button>
      )}
    </div>
  );
}

export function StateBadge({ state }: { state: string }) {
  return (
    <span className={`badge state-${state}`} data-state={state}>
      {isTransient(state) && <span className="spinner" aria-hidden="true" />}
      {state.replace('_', ' ')}
    </span>
  );
}

/** A usage bar with its numbers in text (the bar alone is decoration). */
export function Meter({ label, used, total, text }: { label: string; used: number; total: number; text: string }) {
  const p = percent(used, total);
  return (
    <div className="meter">
      <div className="meter-label">
        <span>{label}</span>
        <span>{text}</span>
      </div>
      <div className={`meter-bar${p >= 90 ? ' meter-high' : p >= 70 ? ' meter-mid' : ''}`} role="meter" aria-label={label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={p} aria-valuetext={`${p}%: ${text}`}>
        <span style={{ width: `${p}%` }} />
      </div>
    </div>
  );
}

export function OperationProgress({ op }: { op: Operation }) {
  const label = `${operationTitle(op.kind)}: ${op.state}${op.phase ? `, ${op.phase}` : ''}`;
  return (
    <div className="op-progress">
      <progress max={100} value={op.progress} aria-label={label} />
      <span className="op-progress-text">
        {op.progress}% {op.phase && <span className="muted">({op.phase})</span>}
      </span>
    </div>
  );
}

/**
 * How an operation followed in a dialog is going: live progress while it
 * runs, then "done" or its failure with the manager's own message.
 */
export function OperationOutcome({ op, running, done }: { op: Operation; running?: ReactNode; done?: ReactNode }) {
  if (isActive(op)) {
    return (
      <div className="op-outcome" role="status">
        {running && <p>{running}</p>}
        <OperationProgress op={op} />
      </div>
    );
  }
  if (op.state === 'done') {
    return (
      <p className="ok-text op-outcome" role="status">
        {done ?? 'Done.'}
      </p>
    );
  }
  return (
    <div className="error-note op-outcome" role="alert">
      <p>
        <strong>{operationFailureTitle(op)}:</strong> <span className="server-message">{op.error?.message ?? `the operation ended ${op.state.replace('_', ' ')}`}</span>{' '}
        <Link to={`/operations?focus=${op.id}`}>See the operation</Link>
      </p>
    </div>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p className="muted" role="status">
      Loading {what}…
    </p>
  );
}

export function Pager({ hasPrevious, hasNext, onPrevious, onNext, label }: { hasPrevious: boolean; hasNext: boolean; onPrevious: () => void; onNext: () => void; label: string }) {
  if (!hasPrevious && !hasNext) return null;
  return (
    <nav className="pager" aria-label={label}>
      <button type="button" onClick={onPrevious} disabled={!hasPrevious}>
        ← Previous page
      </button>
      <button type="button" onClick={onNext} disabled={!hasNext}>
        Next page →
      </button>
    </nav>
  );
}

/** Asks before a destructive step; shows the server's refusal in place. */
export function ConfirmDialog({ title, children, confirmLabel, onConfirm, onClose }: { title: string; children: ReactNode; confirmLabel: string; onConfirm: () => Promise<unknown>; onClose: () => void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  return (
    <Dialog title={title} onClose={onClose}>
      <form
        onSubmit={(event) => {
          event.preventDefault();
          setBusy(true);
          setError(undefined);
          onConfirm().then(onClose, (cause: unknown) => {
            setBusy(false);
            setError(cause);
          });
        }}
      >
        <div className="confirm-text">{children}</div>
        <ErrorNote error={error} />
        <div className="form-actions">
          <button type="button" onClick={onClose} data-autofocus>
            Cancel
          </button>
          <button type="submit" className="danger" disabled={busy}>
            {busy ? 'Working…' : confirmLabel}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

export function EmptyRow({ columns, children }: { columns: number; children: ReactNode }) {
  return (
    <tr className="empty-row">
      <td colSpan={columns}>{children}</td>
    </tr>
  );
}

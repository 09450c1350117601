import type { Operation } from '../api/types.js';
import { OperationOutcome } from './ui.js';

/**
 * The foot of a dialog that starts one operation: the operation's outcome once
 * it is under way, then Close and the primary button that starts it.
 */
export function OperationActions({
  op,
  running,
  done,
  onClose,
  label,
  disabled,
  onStart,
}: {
  op: Operation | undefined;
  running: string;
  done: string;
  onClose: () => void;
  label: string;
  disabled: boolean;
  onStart: () => void;
}) {
  return (
    <>
      {op && <OperationOutcome op={op} running={running} done={done} />}
      <div className="form-actions">
        <button type="button" onClick={onClose}>
          Close
        </button>
        <button type="button" className="primary" disabled={disabled} onClick={onStart}>
          {label}
        </button>
      </div>
    </>
  );
}

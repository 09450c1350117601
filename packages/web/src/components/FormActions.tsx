import type { ReactNode } from 'react';

/** The foot of a dialog's form: Cancel, then the primary submit button, disabled while `busy`. */
export function FormActions({ onCancel, busy, children }: { onCancel: () => void; busy: boolean; children: ReactNode }) {
  return (
    <div className="form-actions">
      <button type="button" onClick={onCancel}>
        Cancel
      </button>
      <button type="submit" className="primary" disabled={busy}>
        {children}
      </button>
    </div>
  );
}

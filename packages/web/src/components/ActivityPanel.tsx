import type { Activity } from '../live.js';
import { isActive } from '../format.js';
import { Link } from '../router.js';
import { OperationProgress } from './ui.js';
import { CloseIcon } from './icons.js';

/** What this tab started: live progress, then the outcome (a failure stays, with the server's message). */
export function ActivityPanel({ activities, onDismiss }: { activities: Activity[]; onDismiss: (id: string) => void }) {
  return (
    <aside className="activity" aria-label="Activity" aria-live="polite">
      {activities.map(({ op, label }) => (
        <div key={op.id} className={`activity-item activity-${op.state}`}>
          <div className="activity-head">
            <Link to={`/operations?focus=${op.id}`}>{label}</Link>
            <button type="button" className="icon-button" aria-label={`Dismiss ${label}`} onClick={() => onDismiss(op.id)}>
              <CloseIcon />
            </button>
          </div>
          {isActive(op) ? (
            <OperationProgress op={op} />
          ) : op.state === 'done' ? (
            <p className="ok-text">Done</p>
          ) : (
            <p className="error-text" role="alert">
              {op.state === 'rolled_back' ? 'Failed and rolled back' : op.state === 'cancelled' ? 'Cancelled' : 'Failed'}
              {op.error && (
                <>
                  : <span className="server-message">{op.error.message}</span>
                </>
              )}
            </p>
          )}
        </div>
      ))}
    </aside>
  );
}

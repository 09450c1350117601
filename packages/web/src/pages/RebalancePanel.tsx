import { useId, useState } from 'react';
import type { Operation, RebalancePlan } from '../api/types.js';
import { ErrorNote } from '../components/ui.js';
import { useApp } from '../live.js';

function isOperation(value: unknown): value is Operation {
  return typeof value === 'object' && value !== null && 'kind' in value && 'state' in value;
}

const percent = (share: number) => `${(share * 100).toFixed(1)} %`;

/**
 * The Hosts page's "Rebalance" control: the planner's plan first (which VM goes
 * where, the imbalance before and after), then the run as the operation
 * `cluster.rebalance` (live migrations), followed in the operations tray.
 */
export function RebalancePanel() {
  const { api, track } = useApp();
  const id = useId();
  const [threshold, setThreshold] = useState(20);
  const [plan, setPlan] = useState<RebalancePlan | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const body = () => ({ threshold: threshold / 100 });
  return (
    <section className="panel" aria-label="Rebalance">
      <h2>Rebalance</h2>
      <p className="muted">Spreads load over the online hosts by live-migrating VMs off the busiest ones, until the most and least loaded hosts differ by at most the threshold.</p>
      <div className="form-grid">
        <label htmlFor={`${id}-threshold`}>Threshold (%)</label>
        <input id={`${id}-threshold`} type="number" min={0} max={100} value={threshold} onChange={(e) => setThreshold(Number(e.target.value))} />
      </div>
      <div className="toolbar" role="toolbar" aria-label="Rebalance actions">
        <button
          type="button"
          onClick={() => {
            setError(undefined);
            api.rebalance({ ...body(), dryRun: true }).then((answer) => setPlan(answer as RebalancePlan), setError);
          }}
        >
          Preview rebalance
        </button>
        <button
          type="button"
          onClick={() => {
            setError(undefined);
            api.rebalance(body()).then((answer) => {
              if (isOperation(answer)) track(answer, 'Rebalance');
              setPlan(undefined);
            }, setError);
          }}
        >
          Rebalance now
        </button>
      </div>
      <ErrorNote error={error} onDismiss={() => setError(undefined)} />
      {plan && (
        <div data-testid="rebalance-plan">
          <p>
            Imbalance {percent(plan.imbalanceBefore)} → {percent(plan.imbalanceAfter)} (threshold {percent(plan.threshold)}): {plan.moves.length === 0 ? 'no VM to move.' : `${plan.moves.length} move(s).`}
          </p>
          {plan.moves.length > 0 && (
            <table>
              <thead>
                <tr>
                  <th scope="col">VM</th>
                  <th scope="col">From</th>
                  <th scope="col">To</th>
                </tr>
              </thead>
              <tbody>
                {plan.moves.map((move) => (
                  <tr key={move.vmId}>
                    <td>{move.vmName}</td>
                    <td>{move.fromHostName}</td>
                    <td>{move.toHostName}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
      )}
    </section>
  );
}

import { useEffect, useId, useState } from 'react';
import type { Host, HostEvacuationPlan, HostPowerSettings, NightPlan, Operation, PowerPolicy, RestorePlan } from '../api/types.js';
import { Dialog } from '../components/Dialog.js';
import { OperationActions } from '../components/OperationActions.js';
import { ErrorNote, Loading, OperationOutcome } from '../components/ui.js';
import { useApp, useAsync, useEvents, useOperation } from '../live.js';

function isOperation(value: unknown): value is Operation {
  return typeof value === 'object' && value !== null && 'kind' in value && 'state' in value;
}

/** The maintenance and power buttons of one host on the Hosts page. */
export function HostMaintenanceControls({ host }: { host: Host }) {
  const { api, track } = useApp();
  const [dialog, setDialog] = useState<'evacuate' | 'restore' | 'power' | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  return (
    <>
      {host.state === 'online' && (
        <button
          type="button"
          onClick={() => {
            setError(undefined);
            api.enterMaintenance(host.id).catch(setError);
          }}
        >
          Maintenance
        </button>
      )}
      {(host.state === 'online' || host.state === 'maintenance') && (
        <button type="button" onClick={() => setDialog('evacuate')}>
          Evacuate…
        </button>
      )}
      {(host.state === 'online' || host.state === 'maintenance') && (
        <button type="button" onClick={() => setDialog('restore')}>
          Restore…
        </button>
      )}
      <button type="button" onClick={() => setDialog('power')}>
        Power…
      </button>
      {error !== undefined && <ErrorNote error={error} onDismiss={() => setError(undefined)} />}
      {dialog === 'evacuate' && <EvacuateDialog host={host} onClose={() => setDialog(undefined)} track={track} />}
      {dialog === 'restore' && <RestoreDialog host={host} onClose={() => setDialog(undefined)} />}
      {dialog === 'power' && <PowerDialog host={host} onClose={() => setDialog(undefined)} />}
    </>
  );
}

/** Evacuate…: the plan first (what moves where, what stays, what cannot move and why), then the operation. */
function EvacuateDialog({ host, onClose, track }: { host: Host; onClose: () => void; track: (op: Operation, label: string) => void }) {
  const { api } = useApp();
  const plan = useAsync(async () => (await api.evacuateHost(host.id, { dryRun: true })) as HostEvacuationPlan, `evacuate-plan-${host.id}`);
  const [op, follow] = useOperation();
  const [error, setError] = useState<unknown>(undefined);
  const [concurrency, setConcurrency] = useState(2);
  const id = useId();
  const rows = plan.data
    ? [
        ...plan.data.moves.map((m) => [m.vmName, m.policy, `move to ${m.toHostName}`]),
        ...plan.data.stops.map((s) => [s.vmName, s.policy, 'stop (Restore starts it again)']),
        ...plan.data.stays.map((s) => [s.vmName, s.policy, `stays: ${s.reason}`]),
        ...plan.data.cannotMove.map((c) => [c.vmName, c.policy, `cannot move: ${c.reason}`]),
      ]
    : [];
  return (
    <Dialog title={`Evacuate ${host.name}`} onClose={onClose} wide>
      <ErrorNote error={plan.error ?? error} />
      {!plan.data && !plan.error && <Loading what="the evacuation plan" />}
      {plan.data && (
        <>
          <p>The host goes into maintenance (no new VMs) and its VMs leave by their evacuation policy.</p>
          <table className="table" aria-label="Evacuation plan">
            <thead>
              <tr>
                <th>VM</th>
                <th>Policy</th>
                <th>Plan</th>
              </tr>
            </thead>
            <tbody>
              {rows.length === 0 && (
                <tr>
                  <td colSpan={3}>No VM to move.</td>
                </tr>
              )}
              {rows.map(([vm, policy, what]) => (
                <tr key={vm} data-vm={vm}>
                  <td>{vm}</td>
                  <td>{policy}</td>
                  <td className={what!.startsWith('cannot') ? 'error-text' : undefined}>{what}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {plan.data.cannotMove.length > 0 && <p className="error-text">{plan.data.cannotMove.length} VM(s) cannot move: the evacuation would be refused and nothing would change.</p>}
          <div className="form-grid">
            <label htmlFor={`${id}-conc`}>Moves at the same time</label>
            <input id={`${id}-conc`} type="number" min={1} max={16} value={concurrency} onChange={(e) => setConcurrency(Number(e.target.value))} />
          </div>
        </>
      )}
      <OperationActions
        op={op}
        running={`Evacuating ${host.name}`}
        done={`Done: ${host.name} is evacuated.`}
        onClose={onClose}
        label="Evacuate"
        disabled={!plan.data || plan.data.cannotMove.length > 0 || op !== undefined}
        onStart={() => {
          setError(undefined);
          api.evacuateHost(host.id, { concurrency }).then((answer) => {
            if (isOperation(answer)) {
              follow(answer);
              track(answer, `Evacuate ${host.name}`);
            }
          }, setError);
        }}
      />
    </Dialog>
  );
}

/** Restore…: the VMs that left the host come back; the host leaves maintenance. */
function RestoreDialog({ host, onClose }: { host: Host; onClose: () => void }) {
  const { api } = useApp();
  const plan = useAsync(async () => (await api.restoreHost(host.id, { dryRun: true })) as RestorePlan, `restore-plan-${host.id}`);
  const [op, follow] = useOperation();
  const [error, setError] = useState<unknown>(undefined);
  return (
    <Dialog title={`Restore ${host.name}`} onClose={onClose}>
      <ErrorNote error={plan.error ?? error} />
      {plan.data && (
        <>
          <p>The host leaves maintenance and takes new VMs again.</p>
          {plan.data.returns.length === 0 ? (
            <p className="muted">No VM to bring back.</p>
          ) : (
            <ul aria-label="VMs to bring back">
              {plan.data.returns.map((r) => (
                <li key={r.vmId}>
                  {r.vmName} ({r.action}
                  {r.fromHostName ? ` from ${r.fromHostName}` : ''})
                </li>
              ))}
            </ul>
          )}
        </>
      )}
      <OperationActions
        op={op}
        running={`Restoring ${host.name}`}
        done={`Done: ${host.name} is restored.`}
        onClose={onClose}
        label="Restore"
        disabled={!plan.data || op !== undefined}
        onStart={() => {
          setError(undefined);
          api.restoreHost(host.id).then((answer) => isOperation(answer) && follow(answer), setError);
        }}
      />
    </Dialog>
  );
}

/** Power…: the host's driver settings (secrets never shown) and the power actions. */
function PowerDialog({ host, onClose }: { host: Host; onClose: () => void }) {
  const { api } = useApp();
  const id = useId();
  const current = useAsync(() => api.hostPower(host.id).catch(() => undefined), `power-${host.id}`);
  const [driver, setDriver] = useState<'ipmi' | 'wol' | 'command'>('command');
  const [fields, setFields] = useState<Record<string, string>>({});
  const [error, setError] = useState<unknown>(undefined);
  const [saved, setSaved] = useState('');
  const [op, follow] = useOperation();
  useEffect(() => {
    const settings = current.data?.settings as Record<string, unknown> | undefined;
    if (!settings) return;
    setDriver(settings.driver as 'ipmi' | 'wol' | 'command');
    setFields(Object.fromEntries(Object.entries(settings).filter(([k]) => k !== 'driver' && k !== 'passwordSet').map(([k, v]) => [k, String(v)])));
  }, [current.data]);
  const field = (name: string, label: string, type = 'text') => (
    <>
      <label htmlFor={`${id}-${name}`}>{label}</label>
      <input id={`${id}-${name}`} type={type} value={fields[name] ?? ''} onChange={(e) => setFields((f) => ({ ...f, [name]: e.target.value }))} />
    </>
  );
  const settings = (): HostPowerSettings => {
    const port = fields.port ? { port: Number(fields.port) } : {};
    if (driver === 'ipmi') return { driver, address: fields.address ?? '', username: fields.username ?? '', ...port, ...(fields.password ? { password: fields.password } : {}) };
    if (driver === 'wol') return { driver, mac: fields.mac ?? '', address: fields.address ?? '', ...port };
    return { driver, on: fields.on ?? '', off: fields.off ?? '', status: fields.status ?? '' };
  };
  return (
    <Dialog title={`Power of ${host.name}`} onClose={onClose} wide>
      <form
        className="form-grid"
        onSubmit={(event) => {
          event.preventDefault();
          setError(undefined);
          setSaved('');
          api.setHostPower(host.id, settings()).then((p) => {
            setSaved(`Saved: ${p.driver} driver (${p.actions.join(', ')}).`);
            current.setData(() => p);
          }, setError);
        }}
      >
        <label htmlFor={`${id}-driver`}>Driver</label>
        <select id={`${id}-driver`} value={driver} onChange={(e) => setDriver(e.target.value as 'ipmi' | 'wol' | 'command')}>
          <option value="command">Command (shell)</option>
          <option value="ipmi">IPMI (ipmitool over LAN)</option>
          <option value="wol">Wake-on-LAN (power on only)</option>
        </select>
        {driver === 'ipmi' && (
          <>
            {field('address', 'BMC address')}
            {field('port', 'Port')}
            {field('username', 'User')}
            {field('password', current.data?.settings.passwordSet ? 'Password (set; leave empty to keep)' : 'Password', 'password')}
          </>
        )}
        {driver === 'wol' && (
          <>
            {field('mac', 'MAC address')}
            {field('address', 'Send to (directed broadcast)')}
            {field('port', 'UDP port')}
          </>
        )}
        {driver === 'command' && (
          <>
            {field('on', 'Power on command')}
            {field('off', 'Power off command')}
            {field('status', 'Status command (prints on or off)')}
          </>
        )}
        <ErrorNote error={error} />
        {saved && (
          <p className="ok-text" role="status">
            {saved}
          </p>
        )}
        <div className="form-actions">
          {current.data && (
            <button
              type="button"
              className="danger-outline"
              onClick={() => {
                setError(undefined);
                api.removeHostPower(host.id).then(() => {
                  current.setData(() => undefined);
                  setSaved('Power settings removed.');
                }, setError);
              }}
            >
              Remove power settings
            </button>
          )}
          <button type="submit" className="primary">
            Save power settings
          </button>
        </div>
      </form>
      {current.data && (
        <div className="toolbar" role="toolbar" aria-label="Power actions">
          {(['status', 'on', 'off', 'cycle'] as const)
            .filter((a) => current.data!.actions.includes(a))
            .map((action) => (
              <button
                key={action}
                type="button"
                onClick={() => {
                  setError(undefined);
                  api.powerHost(host.id, action).then(follow, setError);
                }}
              >
                {action === 'status' ? 'Power status' : `Power ${action}`}
              </button>
            ))}
        </div>
      )}
      {op && <OperationOutcome op={op} running="Power action running" done={`Done: power is ${String((op.result as { state?: string } | null)?.state ?? 'unknown')}.`} />}
      <div className="form-actions">
        <button type="button" onClick={onClose}>
          Close
        </button>
      </div>
    </Dialog>
  );
}

const defaultPolicy: PowerPolicy = { enabled: false, timeZone: 'UTC', window: '22:00-06:00', spareHosts: 1, wattsPerHost: 200, reserveMemoryPercent: 10, headroomPercent: 10 };

/** The power policy panel: report, schedule, "run the night plan now", "wake everything". */
export function PowerPolicyPanel() {
  const { api, track } = useApp();
  const id = useId();
  const report = useAsync(() => api.powerReport(), 'power-report');
  const stored = useAsync(() => api.powerPolicy(), 'power-policy');
  const [policy, setPolicy] = useState<PowerPolicy>(defaultPolicy);
  const [error, setError] = useState<unknown>(undefined);
  const [note, setNote] = useState('');
  const [plan, setPlan] = useState<NightPlan | undefined>(undefined);
  useEffect(() => {
    if (stored.data) setPolicy(stored.data);
  }, [stored.data]);
  useEvents((event) => {
    if (event.type === 'host.updated') report.reload();
  });
  const number = (key: keyof PowerPolicy, label: string) => (
    <>
      <label htmlFor={`${id}-${key}`}>{label}</label>
      <input id={`${id}-${key}`} type="number" value={String(policy[key] ?? '')} onChange={(e) => setPolicy((p) => ({ ...p, [key]: Number(e.target.value) }))} />
    </>
  );
  return (
    <section className="panel" aria-label="Power policy">
      <h2>Power policy</h2>
      {report.data && (
        <p data-testid="power-report">
          Mode {report.data.mode}; powered off: {report.data.hostsPoweredOff.map((h) => h.hostName).join(', ') || 'none'}; {report.data.hoursOff.toFixed(2)} host-hours off, about {report.data.energySavedKWh.toFixed(2)} kWh saved.
        </p>
      )}
      <form
        className="form-grid"
        onSubmit={(event) => {
          event.preventDefault();
          setError(undefined);
          setNote('');
          api.setPowerPolicy(policy).then(() => {
            setNote('Power policy saved.');
            report.reload();
          }, setError);
        }}
      >
        <label htmlFor={`${id}-window`}>Consolidation window</label>
        <input id={`${id}-window`} value={policy.window} onChange={(e) => setPolicy((p) => ({ ...p, window: e.target.value }))} />
        <label htmlFor={`${id}-tz`}>Time zone</label>
        <input id={`${id}-tz`} value={policy.timeZone} onChange={(e) => setPolicy((p) => ({ ...p, timeZone: e.target.value }))} />
        {number('spareHosts', 'Spare hosts kept on')}
        {number('wattsPerHost', 'Watts per host')}
        {number('reserveMemoryPercent', 'Wake when free memory under (%)')}
        {number('headroomPercent', 'Headroom when packing (%)')}
        <label htmlFor={`${id}-enabled`}>Run on schedule</label>
        <input id={`${id}-enabled`} type="checkbox" checked={policy.enabled} onChange={(e) => setPolicy((p) => ({ ...p, enabled: e.target.checked }))} />
        <div className="form-actions">
          <button type="submit">Save power policy</button>
        </div>
      </form>
      <ErrorNote error={error} onDismiss={() => setError(undefined)} />
      {note && (
        <p className="ok-text" role="status">
          {note}
        </p>
      )}
      <div className="toolbar" role="toolbar" aria-label="Power policy actions">
        <button type="button" onClick={() => api.runNightPlan({ dryRun: true }).then((p) => setPlan(p as NightPlan), setError)}>
          Preview night plan
        </button>
        <button
          type="button"
          onClick={() =>
            api.runNightPlan().then((op) => {
              if (isOperation(op)) track(op, 'Night plan');
            }, setError)
          }
        >
          Run night plan now
        </button>
        <button
          type="button"
          onClick={() =>
            api.wakeHosts().then((op) => {
              if (isOperation(op)) track(op, 'Wake all hosts');
            }, setError)
          }
        >
          Wake all hosts
        </button>
      </div>
      {plan && (
        <p data-testid="night-plan">
          Night plan: {plan.moves.length} move(s), power off {plan.powerOff.map((h) => h.hostName).join(', ') || 'no host'}; {plan.hostsUsedBefore} → {plan.hostsUsed} host(s) (lower bound {plan.lowerBound}, first-fit decreasing {plan.ffd.hostsUsed}).
        </p>
      )}
    </section>
  );
}

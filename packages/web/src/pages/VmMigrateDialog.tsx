import { useId, useState } from 'react';
import { InputError, listAll } from '../api/client.js';
import type { Host, MigrateRequest, Operation, Vm } from '../api/types.js';
import { Dialog } from '../components/Dialog.js';
import { ErrorNote, OperationOutcome } from '../components/ui.js';
import { formatBytes, formatMiB, isActive, parseSize } from '../format.js';
import { useApp, useAsync, useEvents, useOperation } from '../live.js';

/** The phases in which the manager accepts a cancel (docs/migration.md, Failures and cancel). */
const cancellablePhases = new Set(['pending', 'begin', 'prepare', 'mirror', 'perform']);

export function migrationCancellable(op: Operation): boolean {
  return isActive(op) && cancellablePhases.has(op.phase || 'pending');
}

/** The live figures the manager keeps in a running `vm.migrate`'s result (and the final ones). */
interface MigrationFigures {
  status?: string;
  transferredBytes?: number;
  remainingBytes?: number;
  totalBytes?: number;
  mbps?: number;
  expectedDowntimeMs?: number;
  downtimeLimitMs?: number;
  from?: string;
  to?: string;
  qemuDowntimeMs?: number;
  guestMaxGapMs?: number;
  totalTimeMs?: number;
  mirroredBytes?: number;
  warning?: string;
}

function figures(op: Operation): MigrationFigures {
  return op.result && typeof op.result === 'object' ? (op.result as MigrationFigures) : {};
}

function freeText(host: Host): string {
  const cpus = host.capacity.cpus - host.allocated.cpus;
  const mib = host.capacity.memoryMiB - host.allocated.memoryMiB;
  return `${cpus} of ${host.capacity.cpus} vCPUs, ${formatMiB(Math.max(0, mib))} of ${formatMiB(host.capacity.memoryMiB)} free`;
}

/**
 * Migrate…: moves the VM to another host (live while it runs), then follows
 * the `vm.migrate` operation: phase, progress and the stream's figures, with
 * Cancel while the manager accepts one. Refusals in the manager's words.
 */
export function VmMigrateDialog({ vm, onClose }: { vm: Vm; onClose: () => void }) {
  const { api, track } = useApp();
  const id = useId();
  const hosts = useAsync(() => listAll((p) => api.hosts(p)).then((r) => r.items), 'migrate-hosts');
  useEvents((event) => {
    if (event.type === 'host.updated') hosts.setData((list) => list?.map((h) => (h.id === event.data.id ? event.data : h)));
  });
  // The host the VM was on when the dialog opened: the list stays put when the VM moves.
  const [from] = useState(vm.hostId);
  const others = (hosts.data ?? []).filter((h) => h.id !== from);
  const [to, setTo] = useState('');
  const [storage, setStorage] = useState(false);
  const [downtime, setDowntime] = useState('');
  const [bandwidth, setBandwidth] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const [cancelError, setCancelError] = useState<unknown>(undefined);
  const [cancelling, setCancelling] = useState(false);
  const [op, follow] = useOperation();
  const chosen = to || others.find((h) => h.state === 'online')?.name || others[0]?.name || '';
  const running = op !== undefined && isActive(op);
  const f = op ? figures(op) : {};
  const live = vm.state === 'running' || vm.state === 'paused';

  const submit = async () => {
    if (!chosen) throw new InputError('Choose a destination host');
    const body: MigrateRequest = { to: chosen };
    if (storage) body.storage = true;
    if (downtime.trim()) {
      const ms = Number(downtime.trim());
      if (!Number.isInteger(ms) || ms < 1 || ms > 60_000) throw new InputError(`Downtime limit "${downtime}" is not a whole number of milliseconds from 1 to 60000`);
      body.downtimeMs = ms;
    }
    if (bandwidth.trim()) {
      const bytes = parseSize(bandwidth.trim());
      if (bytes === undefined || bytes < 1024 * 1024) throw new InputError(`Bandwidth "${bandwidth}" is not a rate such as 100M or 1G per second (at least 1M)`);
      body.bandwidth = bytes;
    }
    const started = await api.migrateVm(vm.id, body);
    track(started, `Migrate ${vm.name} to ${chosen}`);
    return started;
  };

  return (
    <Dialog title={`Migrate ${vm.name}`} onClose={onClose}>
      <form
        className="form-grid"
        onSubmit={(event) => {
          event.preventDefault();
          setBusy(true);
          setError(undefined);
          setCancelError(undefined);
          follow(undefined);
          submit().then(
            (started) => {
              follow(started);
              setBusy(false);
            },
            (cause: unknown) => {
              setBusy(false);
              setError(cause);
            },
          );
        }}
      >
        <p className="help">
          {live
            ? `${vm.name} keeps running while its memory is copied to the other host; it pauses only for the switchover.`
            : `${vm.name} is ${vm.state}: its disks${vm.state === 'saved' ? ' and saved state' : ''} move to the other host.`}{' '}
          It is on {vm.hostName ?? 'no host yet'} now.
        </p>
        <fieldset className="plain form-grid" disabled={busy || running}>
          <label htmlFor={`${id}-to`}>Destination host</label>
          <select id={`${id}-to`} required value={chosen} onChange={(e) => setTo(e.target.value)}>
            {others.length === 0 && <option value="">{hosts.loading ? 'Loading hosts…' : 'No other host'}</option>}
            {others.map((h) => (
              <option key={h.id} value={h.name}>
                {h.name} ({h.state}; {freeText(h)})
              </option>
            ))}
          </select>
          {!hosts.loading && hosts.data && others.length === 0 && <p className="help">There is no other host to move to: join one on the Hosts page.</p>}
          <ErrorNote error={hosts.error} />
          <div className="checks">
            <label>
              <input type="checkbox" checked={storage} onChange={(e) => setStorage(e.target.checked)} /> Copy local disks (disks on a pool shared by both hosts stay where they are)
            </label>
          </div>
          <label htmlFor={`${id}-downtime`}>Downtime limit (ms)</label>
          <input id={`${id}-downtime`} inputMode="numeric" placeholder="300" value={downtime} onChange={(e) => setDowntime(e.target.value)} aria-describedby={`${id}-downtime-help`} autoComplete="off" />
          <p id={`${id}-downtime-help`} className="help">
            The longest pause allowed at the switchover, 1 to 60000 ms; 300 when empty. QEMU aims for 30 ms first and doubles that with every pass that does not converge, up to this.
          </p>
          <label htmlFor={`${id}-bandwidth`}>Bandwidth (per second)</label>
          <input id={`${id}-bandwidth`} placeholder="1G" value={bandwidth} onChange={(e) => setBandwidth(e.target.value)} aria-describedby={`${id}-bandwidth-help`} autoComplete="off" />
          <p id={`${id}-bandwidth-help`} className="help">
            For the memory stream, e.g. 100M (binary units, at least 1M); 1G when empty.
          </p>
        </fieldset>
        <ErrorNote error={error} />
        {op && (
          <div className="migration-progress" data-testid="migration-progress">
            <OperationOutcome
              op={op}
              running={`Migrating to ${chosen}: ${op.phase || 'pending'}`}
              done={`Done: ${vm.name} runs on ${f.to ?? chosen} now${f.qemuDowntimeMs !== undefined ? ` (paused ${f.qemuDowntimeMs} ms at the switchover${f.guestMaxGapMs !== undefined ? `, the guest saw a ${f.guestMaxGapMs} ms gap` : ''}${f.totalTimeMs !== undefined ? `, ${(f.totalTimeMs / 1000).toFixed(1)} s in all` : ''})` : ''}.`}
            />
            {(f.transferredBytes !== undefined || f.remainingBytes !== undefined || f.mirroredBytes !== undefined) && (
              <dl className="details compact" aria-label="Migration figures">
                {f.transferredBytes !== undefined && (
                  <>
                    <dt>Transferred</dt>
                    <dd>
                      {formatBytes(f.transferredBytes)}
                      {f.totalBytes ? ` of ${formatBytes(f.totalBytes)} memory` : ''}
                    </dd>
                  </>
                )}
                {f.remainingBytes !== undefined && isActive(op) && (
                  <>
                    <dt>Remaining</dt>
                    <dd>{formatBytes(f.remainingBytes)}</dd>
                  </>
                )}
                {f.mirroredBytes !== undefined && f.mirroredBytes > 0 && (
                  <>
                    <dt>Disks copied</dt>
                    <dd>{formatBytes(f.mirroredBytes)}</dd>
                  </>
                )}
                {f.mbps !== undefined && isActive(op) && (
                  <>
                    <dt>Rate</dt>
                    <dd>{f.mbps.toFixed(0)} Mbit/s</dd>
                  </>
                )}
                {f.downtimeLimitMs !== undefined && (
                  <>
                    <dt>Pause allowed</dt>
                    <dd>{f.downtimeLimitMs} ms{isActive(op) ? ' now' : ' at the switchover'}</dd>
                  </>
                )}
              </dl>
            )}
            {f.warning && (
              <p className="error-text">
                <strong>Warning:</strong> <span className="server-message">{f.warning}</span>
              </p>
            )}
          </div>
        )}
        <ErrorNote error={cancelError} onDismiss={() => setCancelError(undefined)} />
        <div className="form-actions">
          {op && running && (
            <button
              type="button"
              className="danger-outline"
              disabled={!migrationCancellable(op) || cancelling}
              title={migrationCancellable(op) ? undefined : 'Past the switchover the migration cannot be stopped'}
              onClick={() => {
                setCancelling(true);
                setCancelError(undefined);
                api.cancelOperation(op.id).then(
                  (fresh) => {
                    setCancelling(false);
                    follow(fresh);
                  },
                  (cause: unknown) => {
                    setCancelling(false);
                    setCancelError(cause);
                  },
                );
              }}
            >
              {cancelling ? 'Cancelling…' : 'Cancel migration'}
            </button>
          )}
          <button type="button" onClick={onClose}>
            {running ? 'Close (it goes on)' : op && !isActive(op) ? 'Close' : 'Cancel'}
          </button>
          {!(op && op.state === 'done') && (
            <button type="submit" className="primary" disabled={busy || running || !chosen}>
              {busy ? 'Working…' : 'Migrate'}
            </button>
          )}
        </div>
      </form>
    </Dialog>
  );
}

import { lazy, Suspense, useEffect, useId, useState } from 'react';
import { listAll, type VmAction } from '../api/client.js';
import type { Operation, Vm } from '../api/types.js';
import { PageTitle } from '../components/PageTitle.js';
import { ConfirmDialog, EmptyRow, ErrorNote, Loading, OperationProgress, StateBadge } from '../components/ui.js';
import { canDo, formatBytes, formatLabels, formatMiB, formatTime, isActive, operationTitle, parseLabels, type VmActionName } from '../format.js';
import { useApp, useAsync, useEvents, useResync } from '../live.js';
import { Link, navigate } from '../router.js';
import { cloudInitSummary } from '../media.js';
import { VmCloudInit } from './VmCloudInit.js';
import { VmDevices } from './VmDevices.js';
import { VmFirewall } from './NetworksPage.js';
import { VmMigrateDialog } from './VmMigrateDialog.js';
import { TableHead } from '../components/TableHead.js';

// The consoles pull in noVNC and xterm.js: loaded only when a VM page shows one.
const SerialConsole = lazy(() => import('../console/SerialConsole.js'));
const VncConsole = lazy(() => import('../console/VncConsole.js'));

interface ActionButton {
  action: VmAction | 'delete';
  label: string;
  allowed: VmActionName;
  confirm?: string;
  danger?: boolean;
  body?: Record<string, unknown>;
}

const actionButtons: ActionButton[] = [
  { action: 'start', label: 'Start', allowed: 'start' },
  { action: 'stop', label: 'Stop', allowed: 'stop' },
  { action: 'force-off', label: 'Force off', allowed: 'force-off', danger: true, confirm: 'The guest is cut off at once, like pulling the power cord: unsaved data in the guest is lost.' },
  { action: 'pause', label: 'Pause', allowed: 'pause' },
  { action: 'resume', label: 'Resume', allowed: 'resume' },
  { action: 'reset', label: 'Reset', allowed: 'reset', danger: true, confirm: 'The guest restarts at once without shutting down: unsaved data in the guest is lost.' },
  { action: 'save', label: 'Save', allowed: 'save' },
  { action: 'restore', label: 'Restore', allowed: 'restore' },
];

export function VmPage({ id }: { id: string }) {
  const { api, track } = useApp();
  const vmState = useAsync(() => api.vm(id), `vm:${id}`);
  const [deleted, setDeleted] = useState(false);
  const [ops, setOps] = useState<Operation[]>([]);
  const [actionError, setActionError] = useState<unknown>(undefined);
  const [confirming, setConfirming] = useState<ActionButton | undefined>(undefined);
  const [busyAction, setBusyAction] = useState<string | undefined>(undefined);
  const [consoleTab, setConsoleTab] = useState<'serial' | 'vnc'>('serial');
  const [migrating, setMigrating] = useState(false);
  const vm = vmState.data;

  // Operations already in flight on this VM when the page opened.
  useEffect(() => {
    if (!vm) return;
    let cancelled = false;
    Promise.all([listAll((p) => api.operations(p), { state: 'running' }), listAll((p) => api.operations(p), { state: 'pending' })]).then(
      ([running, pending]) => {
        if (cancelled) return;
        const mine = [...pending.items, ...running.items].filter((o) => o.targetId === vm.id);
        if (mine.length) setOps((list) => mergeOps(list, mine));
      },
      () => undefined,
    );
    return () => {
      cancelled = true;
    };
    // Only once the VM's id is known.
  }, [vm?.id]);

  useEvents((event) => {
    if (event.type === 'vm.updated' && (event.data.id === id || event.data.name === id || event.data.id === vm?.id)) {
      vmState.setData(() => event.data);
      setDeleted(false);
    } else if (event.type === 'vm.deleted' && (event.data.id === vm?.id || event.data.name === id)) {
      setDeleted(true);
    } else if (event.type === 'operation.updated' && vm && event.data.targetId === vm.id) {
      setOps((list) => mergeOps(list, [event.data]));
    }
  });
  useResync(vmState.reload);

  const act = async (button: ActionButton) => {
    if (!vm) return;
    setActionError(undefined);
    setBusyAction(button.action);
    try {
      const op = button.action === 'delete' ? await api.deleteVm(vm.id) : await api.vmAction(vm.id, button.action, button.body);
      track(op, `${button.label} ${vm.name}`);
      setOps((list) => mergeOps(list, [op]));
    } finally {
      setBusyAction(undefined);
    }
  };

  if (vmState.error && !vm) {
    return (
      <>
        <PageTitle title={id} />
        <ErrorNote error={vmState.error} />
        <p>
          <Link to="/vms">Back to the VM list</Link>
        </p>
      </>
    );
  }
  if (!vm) return <Loading what={`VM ${id}`} />;

  const running = vm.state === 'running' || vm.state === 'paused';
  const current = ops.find(isActive);

  return (
    <>
      <PageTitle
        title={`VM ${vm.name}`}
        actions={<StateBadge state={vm.state} />}
      >
        <span className="muted">VM</span> {vm.name}
      </PageTitle>
      {deleted && (
        <div className="notice" role="status">
          This VM has been deleted. <Link to="/vms">Back to the VM list</Link>
        </div>
      )}

      <section aria-labelledby="vm-actions" className="panel">
        <h2 id="vm-actions" className="visually-hidden">
          Actions
        </h2>
        <div className="toolbar" role="toolbar" aria-label="VM actions">
          {actionButtons.map((button) => {
            const allowed = canDo(button.allowed, vm.state) && !deleted;
            // aria-disabled, not disabled: a button that the VM's new state rules out keeps the
            // keyboard focus instead of dropping it to the page's start.
            return (
              <button
                key={button.action}
                type="button"
                className={button.danger ? 'danger-outline' : undefined}
                aria-disabled={allowed ? undefined : true}
                aria-describedby={allowed ? undefined : 'vm-action-hint'}
                onClick={() => {
                  if (!allowed || busyAction !== undefined) return;
                  if (button.confirm) setConfirming(button);
                  else act(button).catch(setActionError);
                }}
              >
                {button.label}
              </button>
            );
          })}
          {(() => {
            const allowed = canDo('migrate', vm.state) && !deleted && vm.hostId !== null;
            return (
              <button
                type="button"
                aria-disabled={allowed ? undefined : true}
                aria-describedby={allowed ? undefined : 'vm-action-hint'}
                onClick={() => {
                  if (allowed) setMigrating(true);
                }}
              >
                Migrate…
              </button>
            );
          })()}
          <span className="toolbar-gap" />
          {/* Delete is always offered: the manager says why it refuses (e.g. a running VM), in plain words. */}
          <button type="button" className="danger" disabled={deleted} onClick={() => setConfirming({ action: 'delete', label: 'Delete', allowed: 'delete', danger: true, confirm: '' })}>
            Delete…
          </button>
        </div>
        <p id="vm-action-hint" className="visually-hidden">
          Not possible while the VM is {vm.state}
        </p>
        <ErrorNote error={actionError} onDismiss={() => setActionError(undefined)} />
        {current && (
          <div className="current-op" aria-live="polite">
            <span>
              {operationTitle(current.kind)} in progress:{' '}
            </span>
            <OperationProgress op={current} />
          </div>
        )}
        {vm.lastError && (
          <p className="error-text">
            <strong>Last error:</strong> <span className="server-message">{vm.lastError}</span>
          </p>
        )}
      </section>

      <div className="vm-grid">
        <section aria-labelledby="vm-details" className="panel">
          <h2 id="vm-details">Details</h2>
          <dl className="details">
            <dt>State</dt>
            <dd>
              <StateBadge state={vm.state} />
            </dd>
            <dt>Host</dt>
            <dd>{vm.hostName ? <Link to={`/hosts#host-${vm.hostName}`}>{vm.hostName}</Link> : 'not placed yet'}</dd>
            <dt>Image</dt>
            <dd>{vm.spec.image ? <Link to="/images">{vm.spec.image}</Link> : 'none: it boots its ISO'}</dd>
            <dt>ISO (CD-ROM)</dt>
            <dd>{vm.spec.iso ?? '—'}</dd>
            {vm.spec.diskSizeBytes !== undefined && (
              <>
                <dt>Disk size</dt>
                <dd>{formatBytes(vm.spec.diskSizeBytes)}</dd>
              </>
            )}
            <dt>Cloud-init</dt>
            <dd>{cloudInitSummary(vm.spec.cloudInit) ?? 'none'}</dd>
            <dt>vCPUs</dt>
            <dd>{vm.spec.cpus}</dd>
            <dt>Memory</dt>
            <dd>{formatMiB(vm.spec.memoryMiB)}</dd>
            <dt>Labels</dt>
            <dd>{formatLabels(vm.labels) || '—'}</dd>
            <dt>Port forwards</dt>
            <dd>{vm.spec.forwards.length ? vm.spec.forwards.map((f) => `${f.hostPort} → ${f.guestPort}`).join(', ') : '—'}</dd>
            <dt>Autostart</dt>
            <dd>{vm.autostart ? 'yes' : 'no'}</dd>
            <dt>High availability</dt>
            <dd>
              <HaSwitch vm={vm} disabled={deleted} onUpdated={(updated) => vmState.setData(() => updated)} />
            </dd>
            <dt>Owner</dt>
            <dd>{vm.owner}</dd>
            <dt>Created</dt>
            <dd>{formatTime(vm.createdAt)}</dd>
            <dt>Id</dt>
            <dd>
              <code>{vm.id}</code>
            </dd>
          </dl>
        </section>
        <EditVm vm={vm} disabled={deleted} />
      </div>

      <section aria-labelledby="vm-console" className="panel">
        <h2 id="vm-console">Console</h2>
        <div className="tabs" role="tablist" aria-label="Console">
          <TabButton selected={consoleTab === 'serial'} controls="console-panel" onSelect={() => setConsoleTab('serial')} id="tab-serial">
            Serial console
          </TabButton>
          <TabButton selected={consoleTab === 'vnc'} controls="console-panel" onSelect={() => setConsoleTab('vnc')} id="tab-vnc">
            Screen (VNC)
          </TabButton>
        </div>
        <div id="console-panel" role="tabpanel" aria-labelledby={consoleTab === 'serial' ? 'tab-serial' : 'tab-vnc'} className="console-panel">
          {!running ? (
            <p className="muted">The console is available while the VM runs. It is {vm.state} now.</p>
          ) : (
            <Suspense fallback={<Loading what="the console" />}>{consoleTab === 'serial' ? <SerialConsole vm={vm} key={`serial-${vm.id}`} /> : <VncConsole vm={vm} key={`vnc-${vm.id}`} />}</Suspense>
          )}
        </div>
      </section>

      <VmDevices vm={vm} ops={ops} disabled={deleted} />

      <VmCloudInit vm={vm} disabled={deleted} />

      {!deleted && <VmFirewall vm={vm} />}

      <Snapshots vm={vm} ops={ops} disabled={deleted} />

      <section aria-labelledby="vm-ops" className="panel">
        <h2 id="vm-ops">Operations on this VM</h2>
        {ops.length === 0 ? (
          <p className="muted">None since this page opened.</p>
        ) : (
          <ul className="op-list">
            {ops.map((op) => (
              <li key={op.id} className={`op-item op-${op.state}`}>
                <div>
                  <Link to={`/operations?focus=${op.id}`}>{operationTitle(op.kind)}</Link> <StateBadge state={op.state} /> <span className="muted small">{formatTime(op.createdAt)}</span>
                </div>
                {isActive(op) ? <OperationProgress op={op} /> : op.error && <p className="error-text server-message">{op.error.message}</p>}
              </li>
            ))}
          </ul>
        )}
      </section>

      {migrating && <VmMigrateDialog vm={vm} onClose={() => setMigrating(false)} />}

      {confirming && (
        <ConfirmDialog
          title={confirming.action === 'delete' ? `Delete VM ${vm.name}?` : `${confirming.label} ${vm.name}?`}
          confirmLabel={confirming.action === 'delete' ? 'Delete VM' : confirming.label}
          onClose={() => setConfirming(undefined)}
          onConfirm={async () => {
            await act(confirming);
            if (confirming.action === 'delete') navigate('/vms');
          }}
        >
          {confirming.action === 'delete' ? (
            <p>
              The VM <strong>{vm.name}</strong>, its disks on {vm.hostName ?? 'its host'} and its saved state are removed. This cannot be undone.
            </p>
          ) : (
            <p>{confirming.confirm}</p>
          )}
        </ConfirmDialog>
      )}
    </>
  );
}

function mergeOps(list: Operation[], updates: Operation[]): Operation[] {
  const map = new Map(list.map((o) => [o.id, o]));
  for (const op of updates) {
    const old = map.get(op.id);
    if (!old || old.updatedAt <= op.updatedAt) map.set(op.id, op);
  }
  return [...map.values()].sort((a, b) => b.createdAt.localeCompare(a.createdAt)).slice(0, 20);
}

function TabButton({ selected, controls, onSelect, id, children }: { selected: boolean; controls: string; onSelect: () => void; id: string; children: string }) {
  return (
    <button
      type="button"
      role="tab"
      id={id}
      aria-selected={selected}
      aria-controls={controls}
      tabIndex={selected ? 0 : -1}
      onClick={onSelect}
      onKeyDown={(event) => {
        // Arrow keys move between tabs (the tab list is one Tab stop).
        if (event.key !== 'ArrowLeft' && event.key !== 'ArrowRight') return;
        const tabs = [...(event.currentTarget.parentElement?.querySelectorAll<HTMLButtonElement>('[role="tab"]') ?? [])];
        const index = tabs.indexOf(event.currentTarget);
        const next = tabs[(index + (event.key === 'ArrowRight' ? 1 : tabs.length - 1)) % tabs.length];
        next?.focus();
        next?.click();
      }}
    >
      {children}
    </button>
  );
}

/**
 * The VM's HA flag as a switch (`PUT /api/v1/vms/{id}/ha`): it shows the
 * manager's value (kept current by `vm.updated` events), and a refusal (a VM
 * whose disks are not all on shared pools) in the manager's words.
 */
function HaSwitch({ vm, disabled, onUpdated }: { vm: Vm; disabled: boolean; onUpdated: (vm: Vm) => void }) {
  const { api } = useApp();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const id = useId();
  const on = vm.spec.ha === true;
  return (
    <div className="ha-switch">
      <label htmlFor={`${id}-ha`}>
        <input
          id={`${id}-ha`}
          type="checkbox"
          role="switch"
          checked={on}
          aria-checked={on}
          aria-label="High availability"
          aria-describedby={`${id}-ha-help`}
          disabled={busy || disabled}
          onChange={(event) => {
            const enabled = event.target.checked;
            setBusy(true);
            setError(undefined);
            api.setVmHa(vm.id, enabled).then(
              (updated) => {
                setBusy(false);
                onUpdated(updated);
              },
              (cause: unknown) => {
                setBusy(false);
                setError(cause);
              },
            );
          }}
        />{' '}
        {busy ? 'Saving…' : on ? 'On' : 'Off'}
      </label>
      <p id={`${id}-ha-help`} className="help">
        Restarted on another host when its host is lost, once that host is fenced. Only for VMs whose disks are all on shared pools.
      </p>
      <ErrorNote error={error} onDismiss={() => setError(undefined)} />
    </div>
  );
}

function EditVm({ vm, disabled }: { vm: Vm; disabled: boolean }) {
  const { api } = useApp();
  const [cpus, setCpus] = useState(String(vm.spec.cpus));
  const [memory, setMemory] = useState(String(vm.spec.memoryMiB));
  const [labels, setLabels] = useState(formatLabels(vm.labels));
  const [autostart, setAutostart] = useState(vm.autostart);
  const [baseRev, setBaseRev] = useState(vm.rev);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const [saved, setSaved] = useState(false);
  const id = useId();
  const sizeEditable = canDo('edit', vm.state);

  // A change made elsewhere shows up in the form unless the operator is editing it.
  const pristine = cpus === String(vm.spec.cpus) && memory === String(vm.spec.memoryMiB) && labels === formatLabels(vm.labels) && autostart === vm.autostart;
  useEffect(() => {
    if (vm.rev !== baseRev && !busy) {
      setCpus(String(vm.spec.cpus));
      setMemory(String(vm.spec.memoryMiB));
      setLabels(formatLabels(vm.labels));
      setAutostart(vm.autostart);
      setBaseRev(vm.rev);
    }
  }, [vm.rev]);

  return (
    <section aria-labelledby="vm-edit" className="panel">
      <h2 id="vm-edit">Edit</h2>
      <form
        className="form-grid"
        onSubmit={(event) => {
          event.preventDefault();
          setBusy(true);
          setError(undefined);
          setSaved(false);
          (async () => {
            const body: Record<string, unknown> = {};
            if (sizeEditable && Number(cpus) !== vm.spec.cpus) body.cpus = Number(cpus);
            if (sizeEditable && Number(memory) !== vm.spec.memoryMiB) body.memoryMiB = Number(memory);
            const parsed = parseLabels(labels);
            if (formatLabels(parsed) !== formatLabels(vm.labels)) body.labels = parsed;
            if (autostart !== vm.autostart) body.autostart = autostart;
            const updated = await api.editVm(vm.id, body, baseRev);
            setBaseRev(updated.rev);
            setSaved(true);
          })().then(
            () => setBusy(false),
            (cause: unknown) => {
              setBusy(false);
              setError(cause);
            },
          );
        }}
      >
        <div className="form-row">
          <div>
            <label htmlFor={`${id}-cpus`}>vCPUs</label>
            <input id={`${id}-cpus`} type="number" min={1} max={64} required value={cpus} disabled={!sizeEditable || disabled} onChange={(e) => setCpus(e.target.value)} aria-describedby={`${id}-size-help`} />
          </div>
          <div>
            <label htmlFor={`${id}-memory`}>Memory (MiB)</label>
            <input id={`${id}-memory`} type="number" min={64} max={1048576} required value={memory} disabled={!sizeEditable || disabled} onChange={(e) => setMemory(e.target.value)} aria-describedby={`${id}-size-help`} />
          </div>
        </div>
        <p id={`${id}-size-help`} className="help">
          {sizeEditable ? 'The new size applies at the next start.' : `vCPUs and memory change only while the VM is defined or stopped (it is ${vm.state}).`}
        </p>
        <label htmlFor={`${id}-labels`}>Labels</label>
        <input id={`${id}-labels`} value={labels} disabled={disabled} onChange={(e) => setLabels(e.target.value)} placeholder="tier=web, team=ops" autoComplete="off" />
        <div className="checks">
          <label>
            <input type="checkbox" checked={autostart} disabled={disabled} onChange={(e) => setAutostart(e.target.checked)} /> Autostart when its host comes back
          </label>
        </div>
        <ErrorNote error={error} />
        {saved && pristine && (
          <p className="ok-text" role="status">
            Saved.
          </p>
        )}
        <div className="form-actions">
          <button type="submit" className="primary" disabled={busy || disabled || pristine}>
            {busy ? 'Saving…' : 'Save changes'}
          </button>
        </div>
      </form>
    </section>
  );
}

function Snapshots({ vm, ops, disabled }: { vm: Vm; ops: Operation[]; disabled: boolean }) {
  const { api, track } = useApp();
  const allowed = canDo('snapshot', vm.state);
  // Reload when a snapshot operation on this VM ends, or when the VM changes.
  const snapshotOpsDone = ops.filter((o) => o.kind.startsWith('vm.snapshot') && !isActive(o)).map((o) => o.id).join(',');
  const list = useAsync(() => (vm.hostId ? api.snapshots(vm.id) : Promise.resolve([])), `snapshots:${vm.id}`);
  const { reload } = list;
  useEffect(() => reload(), [snapshotOpsDone, vm.hostId, reload]);
  const [name, setName] = useState('');
  const [error, setError] = useState<unknown>(undefined);
  const [confirm, setConfirm] = useState<{ kind: 'revert' | 'delete'; name: string } | undefined>(undefined);
  const id = useId();

  return (
    <section aria-labelledby="vm-snapshots" className="panel">
      <h2 id="vm-snapshots">Snapshots</h2>
      <form
        className="inline-form"
        onSubmit={(event) => {
          event.preventDefault();
          setError(undefined);
          api.createSnapshot(vm.id, name.trim()).then(
            (op) => {
              track(op, `Snapshot ${vm.name} as ${name.trim()}`);
              setName('');
            },
            setError,
          );
        }}
      >
        <label htmlFor={`${id}-name`}>New snapshot name</label>
        <input id={`${id}-name`} required maxLength={63} pattern="[A-Za-z0-9][A-Za-z0-9_.\-]*" value={name} onChange={(e) => setName(e.target.value)} disabled={disabled} autoComplete="off" />
        <button type="submit" disabled={!allowed || disabled || !name.trim()} title={allowed ? undefined : `Not possible while the VM is ${vm.state}`}>
          Create snapshot
        </button>
      </form>
      <p className="help">{vm.state === 'stopped' ? 'Disks only (the VM is stopped).' : 'With memory while the VM runs; disks only when it is stopped.'}</p>
      <ErrorNote error={error ?? list.error} onDismiss={error ? () => setError(undefined) : undefined} />
      <table className="table responsive">
        <caption className="visually-hidden">Snapshots of {vm.name}</caption>
        <TableHead columns={['Name', 'Created', 'Memory']} actions />
        <tbody>
          {(list.data ?? []).length === 0 && <EmptyRow columns={4}>{list.loading ? 'Loading…' : 'No snapshot.'}</EmptyRow>}
          {(list.data ?? []).map((s) => (
            <tr key={s.name}>
              <td data-label="Name">{s.name}</td>
              <td data-label="Created">{formatTime(s.createdAt)}</td>
              <td data-label="Memory">{s.withMemory ? 'yes' : 'disks only'}</td>
              <td className="row-actions">
                <button type="button" disabled={!allowed || disabled} onClick={() => setConfirm({ kind: 'revert', name: s.name })}>
                  Revert<span className="visually-hidden"> to {s.name}</span>
                </button>
                <button type="button" className="danger-outline" disabled={!allowed || disabled} onClick={() => setConfirm({ kind: 'delete', name: s.name })}>
                  Delete<span className="visually-hidden"> snapshot {s.name}</span>
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {confirm && (
        <ConfirmDialog
          title={confirm.kind === 'revert' ? `Revert ${vm.name} to ${confirm.name}?` : `Delete snapshot ${confirm.name}?`}
          confirmLabel={confirm.kind === 'revert' ? 'Revert' : 'Delete snapshot'}
          onClose={() => setConfirm(undefined)}
          onConfirm={async () => {
            const op = confirm.kind === 'revert' ? await api.revertSnapshot(vm.id, confirm.name) : await api.deleteSnapshot(vm.id, confirm.name);
            track(op, `${confirm.kind === 'revert' ? 'Revert' : 'Delete snapshot'} ${vm.name} ${confirm.name}`);
          }}
        >
          <p>{confirm.kind === 'revert' ? 'The VM goes back to the snapshot: what changed since is lost.' : 'The snapshot is removed for good.'}</p>
        </ConfirmDialog>
      )}
    </section>
  );
}

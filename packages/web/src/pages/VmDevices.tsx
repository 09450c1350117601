import { useEffect, useId, useRef, useState, type ReactNode } from 'react';
import { InputError } from '../api/client.js';
import type { Operation, Vm, VmDiskAdd, VmDiskInfo, VmNicAdd, VmNicInfo } from '../api/types.js';
import { Dialog } from '../components/Dialog.js';
import { ConfirmDialog, EmptyRow, ErrorNote, OperationOutcome } from '../components/ui.js';
import { parseForwards } from '../filters.js';
import { canDo, formatBytes, isActive, parseSize } from '../format.js';
import { useApp, useAsync, useOperation } from '../live.js';
import { Link } from '../router.js';
import { TableHead } from '../components/TableHead.js';

function isDeviceOp(op: Operation): boolean {
  return op.kind.startsWith('vm.disk.') || op.kind.startsWith('vm.nic.');
}

/**
 * Disks and NICs of a VM as its host has them, with hotplug: a running VM
 * gets or loses the device at once, a stopped one at its next start. Only
 * devices added here can be removed here (the image's belong to the image).
 */
export function VmDevices({ vm, ops, disabled }: { vm: Vm; ops: Operation[]; disabled: boolean }) {
  const { api, track } = useApp();
  // Read again when a device operation on this VM ends, or when the VM's host, state or added devices change.
  const ended = ops.filter((o) => isDeviceOp(o) && !isActive(o)).map((o) => o.id).join(',');
  const specKey = JSON.stringify([vm.hostId, vm.state, vm.spec.addedDisks ?? [], vm.spec.addedNics ?? []]);
  const devices = useAsync(async () => {
    if (!vm.hostId) return { disks: [] as VmDiskInfo[], nics: [] as VmNicInfo[] };
    const [disks, nics] = await Promise.all([api.vmDisks(vm.id), api.vmNics(vm.id)]);
    return { disks, nics };
  }, `devices:${vm.id}`);
  const { reload } = devices;
  const first = useRef(true);
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    reload();
  }, [ended, specKey, reload]);

  const [adding, setAdding] = useState<'disk' | 'nic' | undefined>(undefined);
  const [removing, setRemoving] = useState<{ kind: 'disk'; disk: VmDiskInfo } | { kind: 'nic'; nic: VmNicInfo } | undefined>(undefined);
  const canAdd = canDo('device-add', vm.state) && !disabled && vm.hostId !== null;
  const canRemove = canDo('device-remove', vm.state) && !disabled;
  const pending = ops.filter((o) => isDeviceOp(o) && isActive(o));
  const stateHint = vm.hostId === null ? undefined : !canDo('device-add', vm.state) ? `Not possible while the VM is ${vm.state}.` : !canRemove ? `Removing needs a running or stopped VM (it is ${vm.state}).` : undefined;

  return (
    <section aria-labelledby="vm-devices" className="panel">
      <h2 id="vm-devices">Disks and network</h2>
      {vm.hostId === null ? (
        <p className="muted">The VM gets its disks and NICs on its host at its first start; add more once it has started.</p>
      ) : (
        <p className="help">
          {vm.state === 'running' || vm.state === 'paused'
            ? 'The VM runs: a disk or NIC added or removed here is plugged in or out at once; the guest sees it come or go.'
            : 'Changes are made now and the VM has them from its next start.'}{' '}
          {stateHint}
        </p>
      )}
      <ErrorNote error={devices.error} />
      {pending.length > 0 && (
        <p className="muted" role="status">
          {pending.length === 1 ? 'A device change is in progress…' : `${pending.length} device changes are in progress…`}
        </p>
      )}

      <div className="subsection-head">
        <h3 id="vm-disks">Disks</h3>
        <button type="button" disabled={!canAdd} onClick={() => setAdding('disk')}>
          Add disk…
        </button>
      </div>
      <table className="table responsive compact" aria-labelledby="vm-disks">
        <TableHead columns={['#', 'Volume', 'Media', 'Access', 'Role']} actions />
        <tbody>
          {(devices.data?.disks ?? []).length === 0 && <EmptyRow columns={6}>{devices.loading ? 'Loading…' : vm.hostId ? 'No disk.' : 'None yet.'}</EmptyRow>}
          {(devices.data?.disks ?? []).map((disk) => (
            <tr key={`${disk.pool}/${disk.volume}`} data-disk={disk.volume}>
              <td data-label="#">{disk.index}</td>
              <td data-label="Volume" className="break">
                <Link to={`/storage?host=${encodeURIComponent(vm.hostName ?? '')}&pool=${encodeURIComponent(disk.pool)}`}>
                  {disk.pool}/{disk.volume}
                </Link>
              </td>
              <td data-label="Media">{disk.media === 'cdrom' ? 'CD-ROM' : 'disk'}</td>
              <td data-label="Access">{disk.readOnly ? 'read-only' : 'read-write'}</td>
              <td data-label="Role">{disk.boot ? 'boot disk' : disk.added ? 'added' : "the VM's own"}</td>
              <td className="row-actions">
                {disk.added && (
                  <button type="button" className="danger-outline" disabled={!canRemove} onClick={() => setRemoving({ kind: 'disk', disk })}>
                    Remove…<span className="visually-hidden"> disk {disk.volume}</span>
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>

      <div className="subsection-head">
        <h3 id="vm-nics">Network interfaces</h3>
        <button type="button" disabled={!canAdd} onClick={() => setAdding('nic')}>
          Add NIC…
        </button>
      </div>
      <table className="table responsive compact" aria-labelledby="vm-nics">
        <TableHead columns={['#', 'MAC', 'Port forwards', 'Role']} actions />
        <tbody>
          {(devices.data?.nics ?? []).length === 0 && <EmptyRow columns={5}>{devices.loading ? 'Loading…' : vm.hostId ? 'No NIC.' : 'None yet.'}</EmptyRow>}
          {(devices.data?.nics ?? []).map((nic) => (
            <tr key={nic.mac} data-nic={nic.mac}>
              <td data-label="#">{nic.index}</td>
              <td data-label="MAC">
                <code>{nic.mac}</code>
              </td>
              <td data-label="Port forwards">{nic.forwards.length ? nic.forwards.map((f) => `${f.hostPort} → ${f.guestPort}`).join(', ') : '—'}</td>
              <td data-label="Role">{nic.added ? 'added' : "the VM's own"}</td>
              <td className="row-actions">
                {nic.added && (
                  <button type="button" className="danger-outline" disabled={!canRemove} onClick={() => setRemoving({ kind: 'nic', nic })}>
                    Remove…<span className="visually-hidden"> NIC {nic.mac}</span>
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>

      {adding === 'disk' && <AddDiskDialog vm={vm} onClose={() => setAdding(undefined)} />}
      {adding === 'nic' && <AddNicDialog vm={vm} onClose={() => setAdding(undefined)} />}
      {removing && (
        <ConfirmDialog
          title={removing.kind === 'disk' ? `Remove disk ${removing.disk.volume} from ${vm.name}?` : `Remove NIC ${removing.nic.mac} from ${vm.name}?`}
          confirmLabel={removing.kind === 'disk' ? 'Remove disk' : 'Remove NIC'}
          onClose={() => setRemoving(undefined)}
          onConfirm={async () => {
            if (removing.kind === 'disk') track(await api.removeVmDisk(vm.id, removing.disk.volume), `Remove disk ${removing.disk.volume} from ${vm.name}`);
            else track(await api.removeVmNic(vm.id, removing.nic.mac), `Remove NIC ${removing.nic.mac} from ${vm.name}`);
          }}
        >
          {removing.kind === 'disk' ? (
            <p>
              {vm.state === 'running' ? 'The guest must release the disk (unmount it first); ' : ''}the volume stays in pool {removing.disk.pool}: delete it on the Storage page if it is
              no longer needed.
            </p>
          ) : (
            <p>{vm.state === 'running' ? 'The guest loses the interface at once.' : 'The VM starts without it from now on.'}</p>
          )}
        </ConfirmDialog>
      )}
    </section>
  );
}

/** A form in a dialog that starts an operation, then follows it until it ends: closes when done, shows the reason when not. */
function OperationDialog({ title, submitLabel, onClose, start, children }: { title: string; submitLabel: string; onClose: () => void; start: () => Promise<Operation>; children: ReactNode }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const [op, follow] = useOperation();
  useEffect(() => {
    if (op?.state === 'done') onClose();
    if (op && !isActive(op)) setBusy(false);
  }, [op?.state]);
  return (
    <Dialog title={title} onClose={onClose}>
      <form
        className="form-grid"
        onSubmit={(event) => {
          event.preventDefault();
          setBusy(true);
          setError(undefined);
          follow(undefined);
          start().then(follow, (cause: unknown) => {
            setBusy(false);
            setError(cause);
          });
        }}
      >
        <fieldset className="plain form-grid" disabled={busy}>
          {children}
        </fieldset>
        <ErrorNote error={error} />
        {op && <OperationOutcome op={op} running="Working on the VM's host…" />}
        <div className="form-actions">
          <button type="button" onClick={onClose}>
            {op && isActive(op) ? 'Close (it goes on)' : 'Cancel'}
          </button>
          <button type="submit" className="primary" disabled={busy}>
            {busy ? 'Working…' : submitLabel}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function AddDiskDialog({ vm, onClose }: { vm: Vm; onClose: () => void }) {
  const { api, track } = useApp();
  const host = vm.hostName ?? vm.hostId ?? '';
  const pools = useAsync(() => api.pools(host), `pools:${host}`);
  const [mode, setMode] = useState<'new' | 'existing'>('new');
  const [pool, setPool] = useState('default');
  const [size, setSize] = useState('1G');
  const [name, setName] = useState('');
  const [volume, setVolume] = useState('');
  const [readOnly, setReadOnly] = useState(false);
  const volumes = useAsync(() => (mode === 'existing' && pool ? api.volumes(host, pool) : Promise.resolve([])), `volumes:${host}:${pool}:${mode}`);
  const id = useId();
  const poolList = pools.data ?? [];
  const volumeList = volumes.data ?? [];
  const chosenVolume = volume || volumeList.find((v) => v.usedBy.length === 0)?.name || '';

  return (
    <OperationDialog
      title={`Add a disk to ${vm.name}`}
      submitLabel="Add disk"
      onClose={onClose}
      start={async () => {
        let body: VmDiskAdd;
        if (mode === 'new') {
          const bytes = parseSize(size);
          if (bytes === undefined || bytes < 1024 * 1024) throw new InputError(`Size "${size}" is not a size such as 512M or 20G (at least 1M)`);
          body = { sizeBytes: bytes, pool, ...(name.trim() ? { name: name.trim() } : {}) };
        } else {
          if (!chosenVolume) throw new InputError(`Choose a volume of pool ${pool}`);
          body = { volume: chosenVolume, pool, ...(readOnly ? { readOnly } : {}) };
        }
        const op = await api.addVmDisk(vm.id, body);
        track(op, `Add disk to ${vm.name}`);
        return op;
      }}
    >
      <fieldset className="radio-group">
        <legend>Disk</legend>
        <label>
          <input type="radio" name={`${id}-mode`} checked={mode === 'new'} onChange={() => setMode('new')} /> A new empty volume, made for this VM (deleted with it)
        </label>
        <label>
          <input type="radio" name={`${id}-mode`} checked={mode === 'existing'} onChange={() => setMode('existing')} /> An existing volume of a pool on {host}
        </label>
      </fieldset>
      <label htmlFor={`${id}-pool`}>Pool</label>
      <select
        id={`${id}-pool`}
        value={pool}
        onChange={(e) => {
          setPool(e.target.value);
          setVolume('');
        }}
      >
        {poolList.length === 0 && <option value="default">default</option>}
        {poolList.map((p) => (
          <option key={p.name} value={p.name}>
            {p.name} ({formatBytes(p.availableBytes)} free)
          </option>
        ))}
      </select>
      <ErrorNote error={pools.error} />
      {mode === 'new' ? (
        <>
          <label htmlFor={`${id}-size`}>Size</label>
          <input id={`${id}-size`} required value={size} onChange={(e) => setSize(e.target.value)} aria-describedby={`${id}-size-help`} autoComplete="off" />
          <p id={`${id}-size-help`} className="help">
            For example 512M or 20G (binary units), from 1M to 64T.
          </p>
          <label htmlFor={`${id}-name`}>Volume name</label>
          <input id={`${id}-name`} maxLength={128} pattern="[A-Za-z0-9][A-Za-z0-9_.\-]*" placeholder="chosen by the manager" value={name} onChange={(e) => setName(e.target.value)} aria-describedby={`${id}-name-help`} autoComplete="off" />
          <p id={`${id}-name-help`} className="help">
            Optional and new in the pool; a name ending in .qcow2 makes a qcow2 volume, anything else raw.
          </p>
        </>
      ) : (
        <>
          <label htmlFor={`${id}-volume`}>Volume</label>
          <select id={`${id}-volume`} required value={chosenVolume} onChange={(e) => setVolume(e.target.value)}>
            {volumeList.length === 0 && <option value="">{volumes.loading ? 'Loading volumes…' : 'No volume in this pool'}</option>}
            {volumeList.map((v) => (
              <option key={v.name} value={v.name}>
                {v.name} ({v.format}, {formatBytes(v.virtualBytes)}){v.usedBy.length ? ` — used by ${v.usedBy.join(', ')}` : ''}
              </option>
            ))}
          </select>
          <ErrorNote error={volumes.error} />
          <div className="checks">
            <label>
              <input type="checkbox" checked={readOnly} onChange={(e) => setReadOnly(e.target.checked)} /> Read-only (several VMs may share a volume read-only)
            </label>
          </div>
        </>
      )}
    </OperationDialog>
  );
}

function AddNicDialog({ vm, onClose }: { vm: Vm; onClose: () => void }) {
  const { api, track } = useApp();
  const [mac, setMac] = useState('');
  const [forwards, setForwards] = useState('');
  const id = useId();
  return (
    <OperationDialog
      title={`Add a NIC to ${vm.name}`}
      submitLabel="Add NIC"
      onClose={onClose}
      start={async () => {
        const body: VmNicAdd = {};
        if (mac.trim()) body.mac = mac.trim().toLowerCase();
        const parsed = parseForwards(forwards);
        if (parsed.length) body.forwards = parsed;
        const op = await api.addVmNic(vm.id, body);
        track(op, `Add NIC to ${vm.name}`);
        return op;
      }}
    >
      <p className="help">A user-mode NIC (the guest reaches out through its host; nothing reaches in but the forwards).</p>
      <label htmlFor={`${id}-mac`}>MAC address</label>
      <input id={`${id}-mac`} pattern="[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}" placeholder="generated (52:54:00:…)" value={mac} onChange={(e) => setMac(e.target.value)} autoComplete="off" />
      <label htmlFor={`${id}-forwards`}>Port forwards</label>
      <input id={`${id}-forwards`} placeholder="8081:80" value={forwards} onChange={(e) => setForwards(e.target.value)} aria-describedby={`${id}-forwards-help`} autoComplete="off" />
      <p id={`${id}-forwards-help`} className="help">
        Optional host-port:guest-port pairs (TCP, on 127.0.0.1 of {vm.hostName ?? 'the VM\'s host'}).
      </p>
    </OperationDialog>
  );
}

import { useEffect, useId, useState, type ReactNode } from 'react';
import { InputError, listAll } from '../api/client.js';
import { uploadFile } from '../api/upload.js';
import type { PoolInfo, VolumeInfo } from '../api/types.js';
import { Dialog } from '../components/Dialog.js';
import { FormActions } from '../components/FormActions.js';
import { PageTitle } from '../components/PageTitle.js';
import { ConfirmDialog, EmptyRow, ErrorNote, Loading, Meter } from '../components/ui.js';
import { formatBytes, parseSize } from '../format.js';
import { useApp, useAsync, useEvents } from '../live.js';
import { navigate, useLocation } from '../router.js';
import { TableHead } from '../components/TableHead.js';

/** Pools and volumes are read from the host; the event stream does not carry them, so the page also polls. */
const pollMs = 10_000;

export function StoragePage() {
  const { api } = useApp();
  const { search } = useLocation();
  const hosts = useAsync(async () => (await listAll((p) => api.hosts(p))).items, 'storage-hosts');
  const hostList = hosts.data ?? [];
  const host = search.get('host') ?? hostList.find((h) => h.state === 'online')?.name ?? hostList[0]?.name ?? '';
  const poolName = search.get('pool') ?? '';
  const id = useId();

  const setParams = (patch: Record<string, string>) => {
    const params = new URLSearchParams(search);
    for (const [key, value] of Object.entries(patch)) {
      if (value) params.set(key, value);
      else params.delete(key);
    }
    navigate(`/storage?${params.toString()}`, { replace: true });
  };

  return (
    <>
      <PageTitle title="Storage" />
      <ErrorNote error={hosts.error} />
      {!hosts.data && !hosts.error && <Loading what="hosts" />}
      {hosts.data && hostList.length === 0 && <p className="muted">No host has joined yet.</p>}
      {hostList.length > 0 && (
        <div className="filters">
          <div>
            <label htmlFor={`${id}-host`}>Host</label>
            <select id={`${id}-host`} value={host} onChange={(e) => setParams({ host: e.target.value, pool: '' })}>
              {hostList.map((h) => (
                <option key={h.id} value={h.name}>
                  {h.name} ({h.state})
                </option>
              ))}
            </select>
          </div>
        </div>
      )}
      {host && <HostStorage key={host} host={host} pool={poolName} onPool={(p) => setParams({ host, pool: p })} />}
    </>
  );
}

function HostStorage({ host, pool, onPool }: { host: string; pool: string; onPool: (pool: string) => void }) {
  const { api } = useApp();
  const pools = useAsync(() => api.pools(host), `pools:${host}`);
  const [adding, setAdding] = useState(false);
  const [deleting, setDeleting] = useState<PoolInfo | undefined>(undefined);
  usePolling(pools.reload);
  const selected = pools.data?.find((p) => p.name === pool) ?? pools.data?.find((p) => p.name === 'default') ?? pools.data?.[0];

  return (
    <>
      <section className="panel" aria-labelledby="pools-title">
        <div className="section-head">
          <h2 id="pools-title">Pools on {host}</h2>
          <button type="button" onClick={pools.reload}>
            Refresh
          </button>
          <button type="button" onClick={() => setAdding(true)}>
            Add pool…
          </button>
        </div>
        <ErrorNote error={pools.error} />
        {!pools.data && !pools.error && <Loading what="pools" />}
        {pools.data && (
          <table className="table responsive">
            <caption className="visually-hidden">Storage pools on {host}</caption>
            <TableHead columns={['Pool', 'Path', 'Usage', 'Volumes']} actions />
            <tbody>
              {pools.data.length === 0 && <EmptyRow columns={5}>No pool.</EmptyRow>}
              {pools.data.map((p) => (
                <tr key={p.name} aria-current={selected?.name === p.name ? 'true' : undefined} data-pool={p.name}>
                  <td data-label="Pool">
                    <span>
                      {p.name}
                      {p.shared && <span className="badge">shared</span>}
                    </span>
                  </td>
                  <td data-label="Path">
                    <code>{p.path}</code>
                  </td>
                  <td data-label="Usage" className="meter-cell">
                    <Meter label={`Space used in ${p.name}`} used={p.capacityBytes - p.availableBytes} total={p.capacityBytes} text={`${formatBytes(p.availableBytes)} free of ${formatBytes(p.capacityBytes)}`} />
                  </td>
                  <td data-label="Volumes">{p.volumes}</td>
                  <td className="row-actions">
                    <button type="button" onClick={() => onPool(p.name)} aria-pressed={selected?.name === p.name}>
                      Volumes<span className="visually-hidden"> of {p.name}</span>
                    </button>
                    <button type="button" className="danger-outline" onClick={() => setDeleting(p)}>
                      Delete<span className="visually-hidden"> pool {p.name}</span>
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
      {selected && <Volumes key={selected.name} host={host} pool={selected.name} onChanged={pools.reload} />}
      {adding && <AddPoolDialog host={host} onClose={() => setAdding(false)} onAdded={pools.reload} />}
      {deleting && (
        <ConfirmDialog
          title={`Delete pool ${deleting.name}?`}
          confirmLabel="Delete pool"
          onClose={() => setDeleting(undefined)}
          onConfirm={async () => {
            await api.deletePool(host, deleting.name);
            pools.reload();
          }}
        >
          <p>The host forgets the pool; its directory {deleting.path} stays. A pool that holds volumes cannot be deleted.</p>
        </ConfirmDialog>
      )}
    </>
  );
}

function usePolling(reload: () => void): void {
  useEffect(() => {
    const timer = setInterval(() => {
      if (document.visibilityState === 'visible') reload();
    }, pollMs);
    return () => clearInterval(timer);
  }, [reload]);
}

function Volumes({ host, pool, onChanged }: { host: string; pool: string; onChanged: () => void }) {
  const { api } = useApp();
  const volumes = useAsync(() => api.volumes(host, pool), `volumes:${host}:${pool}`);
  const [creating, setCreating] = useState(false);
  const [uploading, setUploading] = useState(false);
  const [resizing, setResizing] = useState<VolumeInfo | undefined>(undefined);
  const [deleting, setDeleting] = useState<VolumeInfo | undefined>(undefined);
  usePolling(volumes.reload);
  // A VM that starts or is deleted adds or removes volumes.
  useEvents((event) => {
    if (event.type === 'vm.deleted' || (event.type === 'vm.updated' && event.data.hostName === host)) volumes.reload();
  });
  const changed = () => {
    volumes.reload();
    onChanged();
  };

  return (
    <section className="panel" aria-labelledby="volumes-title">
      <div className="section-head">
        <h2 id="volumes-title">Volumes in {pool}</h2>
        <button type="button" onClick={() => setCreating(true)}>
          Create volume…
        </button>
        <button type="button" onClick={() => setUploading(true)}>
          Upload…
        </button>
      </div>
      <ErrorNote error={volumes.error} />
      {!volumes.data && !volumes.error && <Loading what="volumes" />}
      {volumes.data && (
        <table className="table responsive">
          <caption className="visually-hidden">Volumes in pool {pool} on {host}</caption>
          <TableHead columns={['Volume', 'Format', 'Size', 'Allocated', 'Backing', 'Used by']} actions />
          <tbody>
            {volumes.data.length === 0 && <EmptyRow columns={7}>No volume.</EmptyRow>}
            {volumes.data.map((v) => (
              <tr key={v.name} data-volume={v.name}>
                <td data-label="Volume" className="break">
                  {v.name}
                </td>
                <td data-label="Format">{v.format}</td>
                <td data-label="Size">{formatBytes(v.virtualBytes)}</td>
                <td data-label="Allocated">{formatBytes(v.allocatedBytes)}</td>
                <td data-label="Backing" className="break">
                  {v.backing ?? '—'}
                </td>
                <td data-label="Used by" className="break">
                  {v.usedBy.length ? v.usedBy.join(', ') : '—'}
                </td>
                <td className="row-actions">
                  <a className="button" href={api.volumeContentUrl(host, pool, v.name)} download={v.name}>
                    Download<span className="visually-hidden"> {v.name}</span>
                  </a>
                  <button type="button" onClick={() => setResizing(v)}>
                    Resize<span className="visually-hidden"> {v.name}</span>
                  </button>
                  <button type="button" className="danger-outline" onClick={() => setDeleting(v)}>
                    Delete<span className="visually-hidden"> volume {v.name}</span>
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {creating && <CreateVolumeDialog host={host} pool={pool} volumes={volumes.data ?? []} onClose={() => setCreating(false)} onDone={changed} />}
      {uploading && <UploadDialog host={host} pool={pool} onClose={() => setUploading(false)} onDone={changed} />}
      {resizing && <ResizeDialog host={host} pool={pool} volume={resizing} onClose={() => setResizing(undefined)} onDone={changed} />}
      {deleting && (
        <ConfirmDialog
          title={`Delete volume ${deleting.name}?`}
          confirmLabel="Delete volume"
          onClose={() => setDeleting(undefined)}
          onConfirm={async () => {
            await api.deleteVolume(host, pool, deleting.name);
            changed();
          }}
        >
          <p>Its data is gone for good. A volume that a VM uses, or that a clone is based on, cannot be deleted.</p>
        </ConfirmDialog>
      )}
    </section>
  );
}

function sizeOrThrow(text: string, what: string): number {
  const bytes = parseSize(text);
  if (bytes === undefined || bytes <= 0) throw new InputError(`${what} "${text}" is not a size such as 512M or 2G`);
  return bytes;
}

function FormDialog({ title, submitLabel, onClose, onSubmit, children }: { title: string; submitLabel: string; onClose: () => void; onSubmit: () => Promise<void>; children: ReactNode }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  return (
    <Dialog title={title} onClose={onClose}>
      <form
        className="form-grid"
        onSubmit={(event) => {
          event.preventDefault();
          setBusy(true);
          setError(undefined);
          onSubmit().then(onClose, (cause: unknown) => {
            setBusy(false);
            setError(cause);
          });
        }}
      >
        {children}
        <ErrorNote error={error} />
        <FormActions onCancel={onClose} busy={busy}>
          {busy ? 'Working…' : submitLabel}
        </FormActions>
      </form>
    </Dialog>
  );
}

function AddPoolDialog({ host, onClose, onAdded }: { host: string; onClose: () => void; onAdded: () => void }) {
  const { api } = useApp();
  const [name, setName] = useState('');
  const [path, setPath] = useState('');
  const [shared, setShared] = useState(false);
  const id = useId();
  return (
    <FormDialog
      title={`Add a pool on ${host}`}
      submitLabel="Add pool"
      onClose={onClose}
      onSubmit={async () => {
        await api.createPool(host, { name: name.trim(), path: path.trim(), ...(shared ? { shared } : {}) });
        onAdded();
      }}
    >
      <label htmlFor={`${id}-name`}>Name</label>
      <input id={`${id}-name`} required value={name} onChange={(e) => setName(e.target.value)} autoComplete="off" />
      <label htmlFor={`${id}-path`}>Directory on the host</label>
      <input id={`${id}-path`} required placeholder="/srv/drover/pool2" value={path} onChange={(e) => setPath(e.target.value)} aria-describedby={`${id}-path-help`} autoComplete="off" />
      <p id={`${id}-path-help`} className="help">
        A new or empty directory, or one that already is a Drover pool.
      </p>
      <div className="checks">
        <label>
          <input type="checkbox" checked={shared} onChange={(e) => setShared(e.target.checked)} /> Shared (the same path or LUN is visible on several hosts)
        </label>
      </div>
    </FormDialog>
  );
}

function CreateVolumeDialog({ host, pool, volumes, onClose, onDone }: { host: string; pool: string; volumes: VolumeInfo[]; onClose: () => void; onDone: () => void }) {
  const { api } = useApp();
  const [name, setName] = useState('');
  const [size, setSize] = useState('1G');
  const [cloneOf, setCloneOf] = useState('');
  const id = useId();
  return (
    <FormDialog
      title={`Create a volume in ${pool}`}
      submitLabel="Create volume"
      onClose={onClose}
      onSubmit={async () => {
        const body = cloneOf ? { name: name.trim(), cloneOf, ...(size.trim() ? { sizeBytes: sizeOrThrow(size, 'Size') } : {}) } : { name: name.trim(), sizeBytes: sizeOrThrow(size, 'Size') };
        await api.createVolume(host, pool, body);
        onDone();
      }}
    >
      <label htmlFor={`${id}-name`}>Name</label>
      <input id={`${id}-name`} required value={name} onChange={(e) => setName(e.target.value)} placeholder="data.qcow2" aria-describedby={`${id}-name-help`} autoComplete="off" />
      <p id={`${id}-name-help`} className="help">
        A name ending in .qcow2 makes a qcow2 volume; anything else is raw.
      </p>
      <label htmlFor={`${id}-clone`}>Thin clone of</label>
      <select id={`${id}-clone`} value={cloneOf} onChange={(e) => setCloneOf(e.target.value)}>
        <option value="">Nothing: an empty volume</option>
        {volumes.map((v) => (
          <option key={v.name} value={v.name}>
            {v.name}
          </option>
        ))}
      </select>
      <label htmlFor={`${id}-size`}>Size{cloneOf ? ' (optional for a clone)' : ''}</label>
      <input id={`${id}-size`} required={!cloneOf} value={size} onChange={(e) => setSize(e.target.value)} placeholder="1G" aria-describedby={`${id}-size-help`} autoComplete="off" />
      <p id={`${id}-size-help`} className="help">
        For example 512M, 10G (binary units), from 1M to 64T.
      </p>
    </FormDialog>
  );
}

function ResizeDialog({ host, pool, volume, onClose, onDone }: { host: string; pool: string; volume: VolumeInfo; onClose: () => void; onDone: () => void }) {
  const { api } = useApp();
  const [size, setSize] = useState(formatBytes(volume.virtualBytes * 2).replace(' ', '').replace('iB', ''));
  const id = useId();
  return (
    <FormDialog
      title={`Resize ${volume.name}`}
      submitLabel="Resize"
      onClose={onClose}
      onSubmit={async () => {
        await api.resizeVolume(host, pool, volume.name, sizeOrThrow(size, 'New size'));
        onDone();
      }}
    >
      <p>Now {formatBytes(volume.virtualBytes)}. Volumes only grow.</p>
      <label htmlFor={`${id}-size`}>New size</label>
      <input id={`${id}-size`} required value={size} onChange={(e) => setSize(e.target.value)} autoComplete="off" />
    </FormDialog>
  );
}

function UploadDialog({ host, pool, onClose, onDone }: { host: string; pool: string; onClose: () => void; onDone: () => void }) {
  const { api } = useApp();
  const [file, setFile] = useState<File | undefined>(undefined);
  const [name, setName] = useState('');
  const [progress, setProgress] = useState<number | undefined>(undefined);
  const id = useId();
  return (
    <FormDialog
      title={`Upload a volume to ${pool}`}
      submitLabel="Upload"
      onClose={onClose}
      onSubmit={async () => {
        if (!file) throw new InputError('Choose a file first');
        await uploadFile('PUT', api.url(`/hosts/${encodeURIComponent(host)}/pools/${encodeURIComponent(pool)}/volumes/${encodeURIComponent(name.trim())}/content`), file, setProgress);
        onDone();
      }}
    >
      <label htmlFor={`${id}-file`}>Image file</label>
      <input
        id={`${id}-file`}
        type="file"
        required
        onChange={(e) => {
          const chosen = e.target.files?.[0];
          setFile(chosen);
          if (chosen && !name) setName(chosen.name.replace(/[^A-Za-z0-9_.-]/g, '-').replace(/^[^A-Za-z0-9]+/, ''));
        }}
      />
      <label htmlFor={`${id}-name`}>Volume name</label>
      <input id={`${id}-name`} required value={name} onChange={(e) => setName(e.target.value)} aria-describedby={`${id}-name-help`} autoComplete="off" />
      <p id={`${id}-name-help`} className="help">
        A new volume. The bytes must open in the format of the name (.qcow2 or raw); the host checks them before keeping them.
      </p>
      {progress !== undefined && (
        <div className="op-progress">
          <progress max={100} value={progress} aria-label="Upload progress" />
          <span>{progress}%</span>
        </div>
      )}
    </FormDialog>
  );
}

import { useEffect, useId, useMemo, useRef, useState } from 'react';
import { InputError, listAll } from '../api/client.js';
import type { Image, ImageImport, Operation, Vm } from '../api/types.js';
import { Dialog } from '../components/Dialog.js';
import { FormActions } from '../components/FormActions.js';
import { PageTitle } from '../components/PageTitle.js';
import { ConfirmDialog, EmptyRow, ErrorNote, Loading, OperationOutcome, OperationProgress } from '../components/ui.js';
import { formatBytes, formatTime, isActive } from '../format.js';
import { useApp, useAsync, useEvents, useOperation, useResync } from '../live.js';
import { Link } from '../router.js';
import { TableHead } from '../components/TableHead.js';

/** "appliance" | "qcow2" | "iso" in words. */
export function imageKind(format: string): string {
  if (format === 'appliance') return 'Appliance';
  if (format === 'qcow2') return 'Disk image (qcow2)';
  if (format === 'iso') return 'ISO';
  return format;
}

export function imageLabel(image: Pick<Image, 'name' | 'version'>): string {
  return `${image.name}:${image.version}`;
}

function byNameThenVersion(a: Image, b: Image): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : a.version < b.version ? -1 : a.version > b.version ? 1 : 0;
}

/** An import may be cancelled while it downloads or copies (the manager's rule: phase "fetch"). */
function importCancellable(op: Operation): boolean {
  return isActive(op) && (op.phase === 'pending' || op.phase === 'fetch');
}

const importPhases: Record<string, string> = {
  fetch: 'Fetching the file…',
  inspect: 'Checking the image (its format, no backing file, no corruption)…',
  store: 'Storing it in the library…',
  register: 'Registering it…',
};

export function ImagesPage() {
  const { api, track } = useApp();
  const images = useAsync(async () => (await listAll((p) => api.images(p))).items.sort(byNameThenVersion), 'images-page');
  // Which VMs boot or attach each image: shown, so that a refused delete is no surprise.
  const vms = useAsync(async () => new Map((await listAll((p) => api.vms(p))).items.map((v) => [v.id, v])), 'images-vms');
  const imports = useAsync(async () => {
    const [pending, running] = await Promise.all([listAll((p) => api.operations(p), { state: 'pending' }), listAll((p) => api.operations(p), { state: 'running' })]);
    return [...running.items, ...pending.items].filter((o) => o.kind === 'image.import');
  }, 'images-imports');
  const [importing, setImporting] = useState(false);
  const [deleting, setDeleting] = useState<Image | undefined>(undefined);
  const [cancelError, setCancelError] = useState<unknown>(undefined);

  useEvents((event) => {
    switch (event.type) {
      case 'image.created':
        images.setData((list) => list && [...list.filter((i) => i.id !== event.data.id), event.data].sort(byNameThenVersion));
        break;
      case 'image.deleted':
        images.setData((list) => list?.filter((i) => i.id !== event.data.id));
        break;
      case 'vm.updated':
        vms.setData((map) => map && new Map(map).set(event.data.id, event.data));
        break;
      case 'vm.deleted':
        vms.setData((map) => {
          if (!map) return map;
          const next = new Map(map);
          next.delete(event.data.id);
          return next;
        });
        break;
      case 'operation.updated':
        if (event.data.kind !== 'image.import') break;
        imports.setData((list) => {
          const without = (list ?? []).filter((o) => o.id !== event.data.id);
          return isActive(event.data) ? [...without, event.data] : without;
        });
        break;
    }
  });
  useResync(() => {
    images.reload();
    vms.reload();
    imports.reload();
  });

  const usedBy = useMemo(() => {
    const map = new Map<string, Vm[]>();
    for (const vm of vms.data?.values() ?? []) {
      for (const ref of [vm.spec.image, vm.spec.iso]) {
        if (!ref) continue;
        map.set(ref, [...(map.get(ref) ?? []), vm]);
      }
    }
    return map;
  }, [vms.data]);

  return (
    <>
      <PageTitle
        title="Images"
        actions={
          <button type="button" className="primary" onClick={() => setImporting(true)}>
            Import…
          </button>
        }
      />
      <p className="muted">
        What VMs boot: the built-in appliances, disk images (each VM boots a thin clone) and ISOs (attached as a CD-ROM). Imported images are downloaded or copied by the manager and checked as untrusted before they are kept.
      </p>

      {(imports.data?.length ?? 0) > 0 && (
        <section className="panel" aria-labelledby="imports-title">
          <h2 id="imports-title">
            Imports in progress <span className="count">{imports.data!.length}</span>
          </h2>
          <ErrorNote error={cancelError} onDismiss={() => setCancelError(undefined)} />
          <ul className="op-list">
            {imports.data!.map((op) => (
              <li key={op.id} className={`op-item op-${op.state}`} data-import={op.targetId}>
                <div className="op-line">
                  <Link to={`/operations?focus=${op.id}`}>Import {op.targetId}</Link>
                  {importCancellable(op) && (
                    <button
                      type="button"
                      onClick={() => {
                        setCancelError(undefined);
                        api.cancelOperation(op.id).then(undefined, setCancelError);
                      }}
                    >
                      Cancel<span className="visually-hidden"> the import of {op.targetId}</span>
                    </button>
                  )}
                </div>
                <OperationProgress op={op} />
              </li>
            ))}
          </ul>
        </section>
      )}

      <section className="panel" aria-labelledby="library-title">
        <h2 id="library-title">Library</h2>
        <ErrorNote error={images.error ?? vms.error} />
        {!images.data && !images.error && <Loading what="images" />}
        {images.data && (
          <table className="table responsive">
            <caption className="visually-hidden">Images in the library, by name</caption>
            <TableHead columns={['Name', 'Version', 'Kind', 'Size', 'Source', { label: 'Used by', className: 'wide-nowrap' }, 'Added']} actions />
            <tbody>
              {images.data.length === 0 && <EmptyRow columns={8}>No image yet. Import one.</EmptyRow>}
              {images.data.map((image) => {
                const users = usedBy.get(imageLabel(image)) ?? [];
                return (
                  <tr key={image.id} data-image={imageLabel(image)}>
                    <td data-label="Name" className="break wide-nowrap">
                      {image.name}
                    </td>
                    <td data-label="Version" className="wide-nowrap">
                      {image.version}
                    </td>
                    <td data-label="Kind">{imageKind(image.format)}</td>
                    <td data-label="Size" className="wide-nowrap">
                      {formatBytes(image.sizeBytes)}
                    </td>
                    <td data-label="Source" className="break source-cell">
                      <code title={image.sha256 ? `sha256 ${image.sha256}` : undefined}>{image.source}</code>
                    </td>
                    <td data-label="Used by" className="break">
                      {users.length === 0 ? (
                        '—'
                      ) : (
                        <span>
                          {users.slice(0, 5).map((vm, i) => (
                            <span key={vm.id}>
                              {i > 0 && ', '}
                              <Link to={`/vms/${encodeURIComponent(vm.name)}`}>{vm.name}</Link>
                            </span>
                          ))}
                          {users.length > 5 && ` and ${users.length - 5} more`}
                        </span>
                      )}
                    </td>
                    <td data-label="Added">{formatTime(image.createdAt)}</td>
                    <td className="row-actions">
                      {image.format === 'appliance' ? (
                        <span className="muted small">built in</span>
                      ) : (
                        <button type="button" className="danger-outline" onClick={() => setDeleting(image)}>
                          Delete…<span className="visually-hidden"> image {imageLabel(image)}</span>
                        </button>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        )}
      </section>

      {importing && <ImportImageDialog onClose={() => setImporting(false)} />}
      {deleting && (
        <ConfirmDialog
          title={`Delete image ${imageLabel(deleting)}?`}
          confirmLabel="Delete image"
          onClose={() => setDeleting(undefined)}
          onConfirm={async () => {
            track(await api.deleteImage(deleting.id), `Delete image ${imageLabel(deleting)}`);
          }}
        >
          <p>
            The image leaves the library and is removed from every online host (a host that is away keeps its copy). An image that a VM boots or attaches cannot be deleted:
            delete those VMs first.
          </p>
        </ConfirmDialog>
      )}
    </>
  );
}

function ImportImageDialog({ onClose }: { onClose: () => void }) {
  const { api, track } = useApp();
  const [name, setName] = useState('');
  const [version, setVersion] = useState('');
  const [from, setFrom] = useState<'url' | 'path'>('url');
  const [url, setUrl] = useState('');
  const [path, setPath] = useState('');
  const [format, setFormat] = useState<'' | 'qcow2' | 'raw' | 'iso'>('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const [op, follow] = useOperation();
  const [cancelling, setCancelling] = useState(false);
  const id = useId();
  const label = `${name.trim()}:${version.trim() || '1'}`;
  // The form gives way to the import's progress: the focus moves there rather than to the page's start.
  const progressRef = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (op?.id) progressRef.current?.focus();
  }, [op?.id]);

  const submit = async () => {
    const source = from === 'url' ? { url: url.trim() } : { path: path.trim() };
    if (from === 'url' && !/^https?:\/\/\S+$/.test(source.url ?? '')) throw new InputError('The URL must start with http:// or https://');
    if (from === 'path' && !(source.path ?? '').startsWith('/')) throw new InputError('The path must be absolute (start with /)');
    const body: ImageImport = { name: name.trim(), source, ...(version.trim() ? { version: version.trim() } : {}), ...(format ? { format } : {}) };
    const started = await api.importImage(body);
    track(started, `Import image ${label}`);
    follow(started);
  };

  if (op) {
    const result = (op.result as { image?: Image } | null)?.image;
    return (
      <Dialog title={`Import ${op.targetId}`} onClose={onClose}>
        <div className="form-grid" data-op={op.id} ref={progressRef} tabIndex={-1}>
          <p className="break">
            From <code>{from === 'url' ? url : path}</code>
          </p>
          <OperationOutcome
            op={op}
            running={importPhases[op.phase] ?? 'Waiting to start…'}
            done={
              <>
                Imported {op.targetId}
                {result && `: ${imageKind(result.format)}, ${formatBytes(result.sizeBytes)}`}. It is in the library now.
              </>
            }
          />
          <ErrorNote error={error} onDismiss={() => setError(undefined)} />
          <div className="form-actions">
            {importCancellable(op) && (
              <button
                type="button"
                disabled={cancelling}
                onClick={() => {
                  setCancelling(true);
                  setError(undefined);
                  api.cancelOperation(op.id).then(
                    (cancelled) => {
                      setCancelling(false);
                      follow(cancelled);
                    },
                    (cause: unknown) => {
                      setCancelling(false);
                      setError(cause);
                    },
                  );
                }}
              >
                {cancelling ? 'Cancelling…' : 'Cancel import'}
              </button>
            )}
            {!isActive(op) && op.state !== 'done' && (
              <button
                type="button"
                onClick={() => {
                  follow(undefined);
                  setBusy(false);
                }}
              >
                Change and try again
              </button>
            )}
            <button type="button" className={isActive(op) ? undefined : 'primary'} onClick={onClose} data-autofocus>
              {isActive(op) ? 'Close (the import goes on)' : 'Close'}
            </button>
          </div>
        </div>
      </Dialog>
    );
  }

  return (
    <Dialog title="Import an image" onClose={onClose}>
      <form
        className="form-grid"
        onSubmit={(event) => {
          event.preventDefault();
          setBusy(true);
          setError(undefined);
          submit().catch((cause: unknown) => {
            setBusy(false);
            setError(cause);
          });
        }}
      >
        <div className="form-row">
          <div>
            <label htmlFor={`${id}-name`}>Name</label>
            <input id={`${id}-name`} required maxLength={63} pattern="[A-Za-z0-9][A-Za-z0-9_.\-]*" value={name} onChange={(e) => setName(e.target.value)} autoComplete="off" />
          </div>
          <div>
            <label htmlFor={`${id}-version`}>Version</label>
            <input id={`${id}-version`} maxLength={63} pattern="[A-Za-z0-9][A-Za-z0-9_.+\-]*" placeholder="1" value={version} onChange={(e) => setVersion(e.target.value)} autoComplete="off" />
          </div>
        </div>
        <p className="help">A name like a VM's; the version is optional (1 by default). Each name:version is imported once.</p>

        <fieldset className="radio-group">
          <legend>Source</legend>
          <label>
            <input type="radio" name={`${id}-from`} checked={from === 'url'} onChange={() => setFrom('url')} /> A URL (http or https), downloaded by the manager
          </label>
          <label>
            <input type="radio" name={`${id}-from`} checked={from === 'path'} onChange={() => setFrom('path')} /> A file on the manager's machine
          </label>
        </fieldset>
        {from === 'url' ? (
          <>
            <label htmlFor={`${id}-url`}>URL</label>
            <input id={`${id}-url`} type="url" required maxLength={2048} placeholder="https://cloud.example/images/debian-12.qcow2" value={url} onChange={(e) => setUrl(e.target.value)} autoComplete="off" />
          </>
        ) : (
          <>
            <label htmlFor={`${id}-path`}>Path</label>
            <input id={`${id}-path`} required maxLength={1024} placeholder="/var/lib/drover/manager/import/netinst.iso" value={path} onChange={(e) => setPath(e.target.value)} aria-describedby={`${id}-path-help`} autoComplete="off" />
            <p id={`${id}-path-help`} className="help">
              Inside one of the manager's <code>imageImportDirs</code>; other paths are refused.
            </p>
          </>
        )}

        <label htmlFor={`${id}-format`}>Format</label>
        <select id={`${id}-format`} value={format} onChange={(e) => setFormat(e.target.value as typeof format)} aria-describedby={`${id}-format-help`}>
          <option value="">Recognise it from the content</option>
          <option value="qcow2">qcow2 disk image</option>
          <option value="raw">raw disk image</option>
          <option value="iso">ISO (CD-ROM)</option>
        </select>
        <p id={`${id}-format-help`} className="help">
          Disk images are stored as qcow2; ISOs as they are. A qcow2 with a backing file, an encrypted or corrupt one, and other formats (VMDK, VDI, VHD) are refused.
        </p>

        <ErrorNote error={error} />
        <FormActions onCancel={onClose} busy={busy}>
          {busy ? 'Starting…' : 'Import'}
        </FormActions>
      </form>
    </Dialog>
  );
}

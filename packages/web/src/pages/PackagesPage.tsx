import { useId, useState } from 'react';
import { InputError, listAll } from '../api/client.js';
import { uploadFile } from '../api/upload.js';
import type { Operation, Package } from '../api/types.js';
import { Dialog } from '../components/Dialog.js';
import { FormActions } from '../components/FormActions.js';
import { PageTitle } from '../components/PageTitle.js';
import { TableHead } from '../components/TableHead.js';
import { ConfirmDialog, EmptyRow, ErrorNote, Loading, OperationOutcome } from '../components/ui.js';
import { formatBytes, formatTime, isActive } from '../format.js';
import { useApp, useAsync, useEvents, useOperation, useResync } from '../live.js';

const importPhases: Record<string, string> = {
  fetch: 'Fetching the file…',
  extract: 'Extracting it into a staging directory (only regular files, no links, quotas)…',
  verify: 'Checking the checksums and the signature…',
  convert: 'Converting the OVA disks…',
  inspect: 'Inspecting the disks as untrusted images…',
  library: 'Entering the disks into the library…',
  disks: 'Copying the VMs\' disks from their hosts…',
  write: 'Writing and signing the package…',
};

function label(p: Pick<Package, 'name' | 'version'>): string {
  return `${p.name}:${p.version}`;
}

export function PackagesPage() {
  const { api } = useApp();
  const packages = useAsync(async () => (await api.packages()).items.sort((a, b) => (label(a) < label(b) ? -1 : 1)), 'packages-page');
  const [importing, setImporting] = useState(false);
  const [exporting, setExporting] = useState(false);
  const [deleting, setDeleting] = useState<Package | undefined>(undefined);

  useEvents((event) => {
    if (event.type === 'operation.updated' && (event.data.kind === 'package.import' || event.data.kind === 'package.export') && !isActive(event.data)) packages.reload();
  });
  useResync(() => packages.reload());

  return (
    <>
      <PageTitle
        title="Packages"
        actions={
          <>
            <button type="button" onClick={() => setExporting(true)}>
              Export VMs…
            </button>
            <button type="button" className="primary" onClick={() => setImporting(true)}>
              Import…
            </button>
          </>
        }
      />
      <p className="muted">
        Appliance packages: several VMs with their networks, security groups and start order in one signed .eva file (or converted from an OVA). An import is checked entry by entry,
        its signature verified with a trusted key and its disks inspected before anything enters the library.
      </p>
      <section className="panel" aria-labelledby="packages-title">
        <h2 id="packages-title">Packages</h2>
        <ErrorNote error={packages.error} />
        {!packages.data && !packages.error && <Loading what="packages" />}
        {packages.data && (
          <table className="table responsive">
            <caption className="visually-hidden">Imported packages, by name</caption>
            <TableHead columns={['Name', 'Version', 'VMs', 'Networks', 'Source', 'Signer', 'Size', 'Added']} actions />
            <tbody>
              {packages.data.length === 0 && <EmptyRow columns={9}>No package yet. Import one, or export stopped VMs.</EmptyRow>}
              {packages.data.map((p) => (
                <tr key={p.id} data-package={label(p)}>
                  <td data-label="Name" className="break">
                    {p.name}
                    {p.description && <div className="muted small">{p.description}</div>}
                  </td>
                  <td data-label="Version">{p.version}</td>
                  <td data-label="VMs" className="break">
                    {p.manifest.vms.map((v) => `${v.name}${v.dependsOn?.length ? ` (after ${v.dependsOn.join(', ')})` : ''}`).join(', ')}
                  </td>
                  <td data-label="Networks" className="break">
                    {p.manifest.networks.map((n) => `${n.name} ${n.subnet}`).join(', ') || '—'}
                  </td>
                  <td data-label="Source">{p.source}</td>
                  <td data-label="Signer">{p.signerKeyId ? <code title={p.signerKeyId}>{p.signerKeyId.slice(0, 12)}</code> : 'not signed'}</td>
                  <td data-label="Size">{p.fileSizeBytes === null ? '—' : formatBytes(p.fileSizeBytes)}</td>
                  <td data-label="Added">{formatTime(p.createdAt)}</td>
                  <td className="row-actions">
                    {p.fileSizeBytes !== null && (
                      <a className="button" href={api.packageFileUrl(p.id)} download={`${p.name}-${p.version}.eva`}>
                        Download<span className="visually-hidden"> {label(p)}</span>
                      </a>
                    )}
                    <button type="button" className="danger-outline" onClick={() => setDeleting(p)}>
                      Delete…<span className="visually-hidden"> package {label(p)}</span>
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
      {importing && <ImportPackageDialog onClose={() => setImporting(false)} />}
      {exporting && <ExportPackageDialog onClose={() => setExporting(false)} />}
      {deleting && (
        <ConfirmDialog
          title={`Delete package ${label(deleting)}?`}
          confirmLabel="Delete package"
          onClose={() => setDeleting(undefined)}
          onConfirm={async () => {
            await api.deletePackage(deleting.id);
            packages.reload();
          }}
        >
          <p>The package, its file and its disks in the image library go. A package whose disks a VM uses cannot be deleted.</p>
        </ConfirmDialog>
      )}
    </>
  );
}

function FollowOperation({ op, what, onClose, onRetry }: { op: Operation; what: string; onClose: () => void; onRetry: () => void }) {
  const result = (op.result as { package?: Package } | null)?.package;
  return (
    <div className="form-grid" data-op={op.id}>
      <OperationOutcome op={op} running={importPhases[op.phase] ?? 'Waiting to start…'} done={<>{result ? `${what} ${label(result)} with ${result.manifest.vms.length} VMs.` : `${what}.`}</>} />
      <div className="form-actions">
        {!isActive(op) && op.state !== 'done' && (
          <button type="button" onClick={onRetry}>
            Change and try again
          </button>
        )}
        <button type="button" className={isActive(op) ? undefined : 'primary'} onClick={onClose} data-autofocus>
          {isActive(op) ? 'Close (it goes on)' : 'Close'}
        </button>
      </div>
    </div>
  );
}

function ImportPackageDialog({ onClose }: { onClose: () => void }) {
  const { api, track } = useApp();
  const [file, setFile] = useState<File | undefined>(undefined);
  const [kind, setKind] = useState<'eva' | 'ova'>('eva');
  const [progress, setProgress] = useState<number | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [op, follow] = useOperation();
  const id = useId();

  if (op) {
    return (
      <Dialog title="Import a package" onClose={onClose}>
        <FollowOperation op={op} what="Imported" onClose={onClose} onRetry={() => follow(undefined)} />
      </Dialog>
    );
  }
  return (
    <Dialog title="Import a package" onClose={onClose}>
      <form
        className="form-grid"
        aria-label="Import a package"
        onSubmit={(event) => {
          event.preventDefault();
          setError(undefined);
          if (!file) return setError(new InputError('Choose a file'));
          uploadFile('POST', api.packageUploadUrl(kind), file, setProgress).then(
            (text) => {
              const started = JSON.parse(text) as Operation;
              track(started, `Import package ${file.name}`);
              follow(started);
            },
            (cause: unknown) => {
              setProgress(undefined);
              setError(cause);
            },
          );
        }}
      >
        <label htmlFor={`${id}-file`}>Package file</label>
        <input id={`${id}-file`} type="file" accept=".eva,.ova,.tar" required onChange={(e) => setFile(e.target.files?.[0])} />
        <label htmlFor={`${id}-kind`}>Kind</label>
        <select id={`${id}-kind`} value={kind} onChange={(e) => setKind(e.target.value as 'eva' | 'ova')}>
          <option value="eva">Drover package (.eva, signed)</option>
          <option value="ova">OVA (OVF appliance)</option>
        </select>
        <p className="help">An .eva must be signed by a key this manager trusts (its own publisher keys, its subscriptions' pinned keys, or a key added with drover package trust).</p>
        {progress !== undefined && <progress max={100} value={progress} aria-label="Upload progress" />}
        <ErrorNote error={error} />
        <FormActions onCancel={onClose} busy={progress !== undefined}>
          {progress !== undefined ? 'Uploading…' : 'Import'}
        </FormActions>
      </form>
    </Dialog>
  );
}

function ExportPackageDialog({ onClose }: { onClose: () => void }) {
  const { api, track } = useApp();
  const vms = useAsync(async () => (await listAll((p) => api.vms(p))).items, 'packages-export-vms');
  const [name, setName] = useState('');
  const [version, setVersion] = useState('1');
  const [description, setDescription] = useState('');
  const [chosen, setChosen] = useState<string[]>([]);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const [op, follow] = useOperation();
  const id = useId();

  if (op) {
    return (
      <Dialog title="Export VMs as a package" onClose={onClose}>
        <FollowOperation
          op={op}
          what="Exported"
          onClose={onClose}
          onRetry={() => {
            follow(undefined);
            setBusy(false);
          }}
        />
      </Dialog>
    );
  }
  return (
    <Dialog title="Export VMs as a package" onClose={onClose}>
      <form
        className="form-grid"
        aria-label="Export VMs as a package"
        onSubmit={(event) => {
          event.preventDefault();
          setError(undefined);
          if (chosen.length === 0) return setError(new InputError('Choose at least one stopped VM'));
          setBusy(true);
          api.exportPackage({ name: name.trim(), version: version.trim(), vms: chosen, ...(description.trim() ? { description: description.trim() } : {}) }).then(
            (started) => {
              track(started, `Export package ${name.trim()}:${version.trim()}`);
              follow(started);
            },
            (cause: unknown) => {
              setBusy(false);
              setError(cause);
            },
          );
        }}
      >
        <div className="form-row">
          <div>
            <label htmlFor={`${id}-name`}>Package name</label>
            <input id={`${id}-name`} required maxLength={63} pattern="[A-Za-z0-9][A-Za-z0-9_.\-]*" value={name} onChange={(e) => setName(e.target.value)} autoComplete="off" />
          </div>
          <div>
            <label htmlFor={`${id}-version`}>Package version</label>
            <input id={`${id}-version`} required maxLength={63} pattern="[A-Za-z0-9][A-Za-z0-9_.+\-]*" value={version} onChange={(e) => setVersion(e.target.value)} autoComplete="off" />
          </div>
        </div>
        <label htmlFor={`${id}-description`}>Description</label>
        <input id={`${id}-description`} maxLength={2000} value={description} onChange={(e) => setDescription(e.target.value)} autoComplete="off" />
        <fieldset>
          <legend>VMs (stopped ones can be exported)</legend>
          {!vms.data && <Loading what="VMs" />}
          {vms.data?.map((vm) => (
            <label key={vm.id}>
              <input
                type="checkbox"
                checked={chosen.includes(vm.id)}
                onChange={(e) => setChosen((list) => (e.target.checked ? [...list, vm.id] : list.filter((v) => v !== vm.id)))}
              />{' '}
              {vm.name} <span className="muted small">({vm.state})</span>
            </label>
          ))}
        </fieldset>
        <p className="help">The disks are copied as standalone qcow2 images; the file is signed with this manager's active publisher key and kept here.</p>
        <ErrorNote error={error} />
        <FormActions onCancel={onClose} busy={busy}>
          {busy ? 'Starting…' : 'Export'}
        </FormActions>
      </form>
    </Dialog>
  );
}

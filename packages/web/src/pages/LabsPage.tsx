import { useId, useState, type FormEvent } from 'react';
import { InputError } from '../api/client.js';
import type { Lab, Operation } from '../api/types.js';
import { PageTitle } from '../components/PageTitle.js';
import { TableHead } from '../components/TableHead.js';
import { ErrorNote, Loading } from '../components/ui.js';
import { useApp, useAsync, useEvents, useResync } from '../live.js';
import { Link } from '../router.js';

/**
 * Labs (docs/labs.md): deploy a shipped example or an imported package as a
 * lab; each lab with its networks and its VMs (state, start order, addresses),
 * and the actions on the whole lab: start, stop, snapshot, reset, clone,
 * export as a package (stopped), destroy. Each action is one operation, followed in the activity panel.
 */
export function LabsPage() {
  const { api, track } = useApp();
  const labs = useAsync(() => api.labs(), 'labs');
  const examples = useAsync(() => api.labExamples(), 'lab-examples');
  const [error, setError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);
  const id = useId();

  useEvents((event) => {
    // A lab's operation moving on, or one of its VMs changing state.
    if ((event.type === 'operation.updated' && event.data.kind.startsWith('lab.')) || (event.type === 'vm.updated' && event.data.labels['lab'] !== undefined)) labs.reload();
  });
  useResync(() => labs.reload());

  const run = async (label: string, action: () => Promise<Operation>) => {
    setError(undefined);
    try {
      track(await action(), label);
      labs.reload();
      return true;
    } catch (e) {
      setError(e);
      return false;
    }
  };

  const deploy = async (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const target = event.currentTarget;
    const form = new FormData(target);
    const name = String(form.get('name') ?? '').trim();
    const from = String(form.get('from') ?? '');
    const packageId = String(form.get('package') ?? '').trim();
    setBusy(true);
    const ok = await run(`Deploy lab ${name}`, async () => {
      if (!name) throw new InputError('Name the lab, e.g. class1');
      if (from === 'package' && !packageId) throw new InputError('Give the package id');
      return api.deployLab(from === 'package' ? { name, package: packageId } : { name, example: from });
    });
    setBusy(false);
    if (ok) target.reset();
  };

  return (
    <>
      <PageTitle title="Labs" />
      <p className="muted">
        A lab is a set of VMs deployed as a unit — a shipped example or an imported package — on its own networks, started in dependency order with health checks. Reset brings every disk back to
        its state at deploy; a clone is a second copy with its own addresses.
      </p>

      <section className="panel" aria-labelledby={`${id}-deploy`}>
        <h2 id={`${id}-deploy`}>Deploy a lab</h2>
        <form className="form-row" onSubmit={deploy}>
          <label>
            Name <input name="name" placeholder="class1" pattern="[a-z][a-z0-9-]*" maxLength={20} required />
          </label>
          <label>
            From{' '}
            <select name="from" defaultValue="web-db">
              {(examples.data?.items ?? []).map((e) => (
                <option key={e.name} value={e.name} title={e.description}>
                  Example: {e.name}
                </option>
              ))}
              <option value="package">Package…</option>
            </select>
          </label>
          <label>
            Package id <input name="package" placeholder="only for a package" />
          </label>
          <button type="submit" className="primary" disabled={busy}>
            Deploy
          </button>
        </form>
      </section>

      <ErrorNote error={error ?? labs.error} onDismiss={() => setError(undefined)} />
      {!labs.data && !labs.error && <Loading what="labs" />}
      {labs.data?.items.length === 0 && <p className="muted">No lab yet.</p>}
      {labs.data?.items.map((lab) => <LabPanel key={lab.id} lab={lab} run={run} />)}
    </>
  );
}

function LabPanel({ lab, run }: { lab: Lab; run: (label: string, action: () => Promise<Operation>) => Promise<boolean> }) {
  const { api } = useApp();
  const [cloneName, setCloneName] = useState('');
  const [snapshotName, setSnapshotName] = useState('');
  const [packageName, setPackageName] = useState('');
  const title = `lab-${lab.name}`;
  return (
    <section className="panel" aria-labelledby={title} data-lab={lab.name}>
      <h2 id={title}>
        {lab.name} <span className={`state state-${lab.state}`}>{lab.state}</span>
      </h2>
      <p className="muted small">
        From {lab.source.kind}
        {lab.source.ref ? ` ${lab.source.ref}` : ''} · manifest {lab.manifestName} · update policy {lab.updatePolicy} · networks{' '}
        {lab.networks.map((n) => `${n.network} ${n.subnet}`).join(', ') || '—'} ({lab.networkMode})
      </p>
      {lab.lastError && <p className="error-text">{lab.lastError}</p>}
      <table className="table responsive">
        <caption className="visually-hidden">VMs of lab {lab.name}</caption>
        <TableHead columns={['VM', 'State', 'Start order', 'Addresses']} />
        <tbody>
          {lab.vms.map((v) => (
            <tr key={v.name} data-lab-vm={v.name}>
              <td data-label="VM">{v.vmId ? <Link to={`/vms/${encodeURIComponent(v.vm)}`}>{v.vm}</Link> : v.vm}</td>
              <td data-label="State">{v.state}</td>
              <td data-label="Start order">{v.order}</td>
              <td data-label="Addresses">{v.addresses.join(', ') || '—'}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <div className="button-row">
        <button type="button" onClick={() => void run(`Start lab ${lab.name}`, () => api.labAction(lab.id, 'start'))}>
          Start<span className="visually-hidden"> lab {lab.name}</span>
        </button>
        <button type="button" onClick={() => void run(`Stop lab ${lab.name}`, () => api.labAction(lab.id, 'stop'))}>
          Stop<span className="visually-hidden"> lab {lab.name}</span>
        </button>
        <button type="button" onClick={() => void run(`Reset lab ${lab.name}`, () => api.labAction(lab.id, 'reset'))}>
          Reset<span className="visually-hidden"> lab {lab.name}</span>
        </button>
        <label>
          Snapshot name <input value={snapshotName} onChange={(e) => setSnapshotName(e.target.value)} placeholder="before-class" />
        </label>
        <button type="button" onClick={() => void run(`Snapshot lab ${lab.name}`, async () => (snapshotName ? api.snapshotLab(lab.id, snapshotName) : Promise.reject(new InputError('Name the snapshot'))))}>
          Snapshot<span className="visually-hidden"> lab {lab.name}</span>
        </button>
        <label>
          Clone as <input value={cloneName} onChange={(e) => setCloneName(e.target.value)} placeholder={`${lab.name}-2`} />
        </label>
        <button type="button" onClick={() => void run(`Clone lab ${lab.name}`, async () => (cloneName ? api.cloneLab(lab.id, cloneName) : Promise.reject(new InputError('Name the clone'))))}>
          Clone<span className="visually-hidden"> lab {lab.name}</span>
        </button>
        <label>
          Export as package <input value={packageName} onChange={(e) => setPackageName(e.target.value)} placeholder={`${lab.name}:1`} />
        </label>
        <button
          type="button"
          title="A signed .eva package of the lab's manifest and its VMs' disks (the lab must be stopped)"
          onClick={() =>
            void run(`Export lab ${lab.name}`, async () => {
              const [name, version = '1'] = packageName.trim().split(':');
              return name ? api.exportPackage({ name, version, lab: lab.id }) : Promise.reject(new InputError('Name the package (NAME or NAME:VERSION)'));
            })
          }
        >
          Export<span className="visually-hidden"> lab {lab.name}</span>
        </button>
        <button type="button" className="danger-outline" onClick={() => void run(`Destroy lab ${lab.name}`, () => api.destroyLab(lab.id))}>
          Destroy<span className="visually-hidden"> lab {lab.name}</span>
        </button>
      </div>
    </section>
  );
}

import { useEffect, useId, useState } from 'react';
import type { Vm } from '../api/types.js';
import { vmMatches, type VmFilter } from '../filters.js';
import { PageTitle } from '../components/PageTitle.js';
import { EmptyRow, ErrorNote, Loading, Pager, StateBadge } from '../components/ui.js';
import { formatLabels, formatMiB, vmStateList } from '../format.js';
import { useApp, useLivePage } from '../live.js';
import { Link, navigate, useLocation } from '../router.js';
import { CreateVmDialog } from './CreateVmDialog.js';
import { CloseIcon } from '../components/icons.js';

const pageSizes = [25, 50, 100];

export function VmListPage() {
  const { api } = useApp();
  const { search } = useLocation();
  const filter: VmFilter = { state: search.get('state') ?? '', name: search.get('name') ?? '', label: search.get('label') ?? '', host: search.get('host') ?? '' };
  const limit = pageSizes.includes(Number(search.get('limit'))) ? Number(search.get('limit')) : 25;
  const [pager, setPager] = useState<{ key: string; cursors: string[] }>({ key: '', cursors: [] });
  const [nameInput, setNameInput] = useState(filter.name);
  const [labelInput, setLabelInput] = useState(filter.label);
  const [creating, setCreating] = useState(false);
  const id = useId();
  const filterKey = `${filter.state}|${filter.name}|${filter.label}|${filter.host}|${limit}`;
  // The cursor stack belongs to one filter: a new filter starts at page 1.
  const cursors = pager.key === filterKey ? pager.cursors : [];
  const setCursors = (update: (c: string[]) => string[]) => setPager({ key: filterKey, cursors: update(cursors) });
  const cursor = cursors[cursors.length - 1];

  const page = useLivePage<Vm>({
    key: `${filterKey}|${cursor ?? ''}`,
    load: () => api.vms({ limit, ...(cursor ? { cursor } : {}), ...(filter.state ? { state: filter.state } : {}), ...(filter.name ? { name: filter.name } : {}), ...(filter.label ? { label: filter.label } : {}), ...(filter.host ? { host: filter.host } : {}) }),
    updatedType: 'vm.updated',
    removedType: 'vm.deleted',
    matches: (vm) => vmMatches(vm, filter),
  });

  const setFilter = (patch: Partial<Record<keyof VmFilter | 'limit', string>>) => {
    const params = new URLSearchParams(search);
    for (const [key, value] of Object.entries(patch)) {
      if (value) params.set(key, value);
      else params.delete(key);
    }
    const text = params.toString();
    navigate(`/vms${text ? `?${text}` : ''}`, { replace: true });
  };

  // Typing filters after a short pause.
  useEffect(() => {
    const timer = setTimeout(() => {
      if (nameInput !== filter.name || labelInput !== filter.label) setFilter({ name: nameInput, label: labelInput });
    }, 300);
    return () => clearTimeout(timer);
  });

  const items = page.data?.items ?? [];
  const filtered = Boolean(filter.state || filter.name || filter.label || filter.host);

  return (
    <>
      <PageTitle
        title="Virtual machines"
        actions={
          <button type="button" className="primary" onClick={() => setCreating(true)}>
            Create VM
          </button>
        }
      />
      <form className="filters" role="search" aria-label="Filter VMs" onSubmit={(e) => { e.preventDefault(); setFilter({ name: nameInput, label: labelInput }); }}>
        <div>
          <label htmlFor={`${id}-name`}>Name contains</label>
          <input id={`${id}-name`} type="search" value={nameInput} onChange={(e) => setNameInput(e.target.value)} autoComplete="off" />
        </div>
        <div>
          <label htmlFor={`${id}-state`}>State</label>
          <select id={`${id}-state`} value={filter.state} onChange={(e) => setFilter({ state: e.target.value })}>
            <option value="">Any state</option>
            {vmStateList.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </div>
        <div>
          <label htmlFor={`${id}-label`}>Label (key=value)</label>
          <input id={`${id}-label`} type="search" placeholder="tier=web" value={labelInput} onChange={(e) => setLabelInput(e.target.value)} autoComplete="off" />
        </div>
        <div>
          <label htmlFor={`${id}-limit`}>Per page</label>
          <select id={`${id}-limit`} value={String(limit)} onChange={(e) => setFilter({ limit: e.target.value === '25' ? '' : e.target.value })}>
            {pageSizes.map((n) => (
              <option key={n} value={n}>
                {n}
              </option>
            ))}
          </select>
        </div>
        {filter.host && (
          <p className="chip">
            Host {filter.host}{' '}
            <button type="button" className="link-button" onClick={() => setFilter({ host: '' })} aria-label={`Remove the filter on host ${filter.host}`}>
              <CloseIcon />
            </button>
          </p>
        )}
        {filtered && (
          <button type="button" className="link-button" onClick={() => { setNameInput(''); setLabelInput(''); navigate('/vms', { replace: true }); }}>
            Clear filters
          </button>
        )}
      </form>
      <ErrorNote error={page.error} />
      {page.loading && !page.data && <Loading what="VMs" />}
      {page.data && (
        <table className="table responsive" aria-busy={page.loading}>
          <caption className="visually-hidden">VMs{filtered ? ' matching the filter' : ''}, page {cursors.length + 1}</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">State</th>
              <th scope="col">Host</th>
              <th scope="col">vCPUs</th>
              <th scope="col">Memory</th>
              <th scope="col">Image</th>
              <th scope="col">Labels</th>
            </tr>
          </thead>
          <tbody>
            {items.length === 0 && <EmptyRow columns={7}>{filtered ? 'No VM matches the filter.' : 'No VM yet. Create one from an image.'}</EmptyRow>}
            {items.map((vm) => (
              <tr key={vm.id} data-vm={vm.name}>
                <td data-label="Name">
                  <Link to={`/vms/${vm.name}`}>{vm.name}</Link>
                </td>
                <td data-label="State">
                  <StateBadge state={vm.state} />
                </td>
                <td data-label="Host">{vm.hostName ?? '—'}</td>
                <td data-label="vCPUs">{vm.spec.cpus}</td>
                <td data-label="Memory">{formatMiB(vm.spec.memoryMiB)}</td>
                <td data-label="Image">{vm.spec.image}</td>
                <td data-label="Labels">{formatLabels(vm.labels) || '—'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <Pager
        label="VM pages"
        hasPrevious={cursors.length > 0}
        hasNext={Boolean(page.data?.next)}
        onPrevious={() => setCursors((c) => c.slice(0, -1))}
        onNext={() => page.data?.next && setCursors((c) => [...c, page.data!.next!])}
      />
      {creating && <CreateVmDialog onClose={() => setCreating(false)} onCreated={(vm) => navigate(`/vms/${vm.name}`)} />}
    </>
  );
}

import { useEffect, useId, useState } from 'react';
import { listAll } from '../api/client.js';
import type { Operation } from '../api/types.js';
import { newestOperations } from '../filters.js';
import { PageTitle } from '../components/PageTitle.js';
import { EmptyRow, ErrorNote, Loading, OperationProgress, Pager, StateBadge } from '../components/ui.js';
import { formatTime, isActive, operationTitle } from '../format.js';
import { useApp, useAsync, useEvents, useResync } from '../live.js';
import { Link, navigate, useLocation } from '../router.js';

function isUuid(text: string): boolean {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(text);
}

const operationStateList = ['pending', 'running', 'done', 'failed', 'cancelled', 'rolled_back'];
const perPage = 50;
export function OperationsPage() {
  const { api } = useApp();
  const { search } = useLocation();
  const state = search.get('state') ?? '';
  const focus = search.get('focus') ?? '';
  const [pageIndex, setPageIndex] = useState(0);
  const [cancelError, setCancelError] = useState<unknown>(undefined);
  const id = useId();

  const list = useAsync(() => newestOperations((p) => api.operations(p), state), `ops:${state}`);
  const active = useAsync(async () => {
    const [pending, running] = await Promise.all([listAll((p) => api.operations(p), { state: 'pending' }), listAll((p) => api.operations(p), { state: 'running' })]);
    return [...running.items, ...pending.items];
  }, 'ops-active');
  const focused = useAsync(() => (focus ? api.operation(focus) : Promise.resolve(undefined)), `op:${focus}`);
  const names = useAsync(async () => {
    const [vms, hosts, images] = await Promise.all([listAll((p) => api.vms(p), {}, 2000), listAll((p) => api.hosts(p)), listAll((p) => api.images(p))]);
    return new Map<string, string>([
      ...vms.items.map((v) => [v.id, v.name] as const),
      ...hosts.items.map((h) => [h.id, h.name] as const),
      ...images.items.map((i) => [i.id, `${i.name}:${i.version}`] as const),
    ]);
  }, 'op-names');

  useEffect(() => setPageIndex(0), [state]);

  useEvents((event) => {
    if (event.type !== 'operation.updated') {
      // Remember names, also of VMs and hosts that are gone, for the operations that name them.
      const name = event.type === 'image.created' || event.type === 'image.deleted' ? `${event.data.name}:${event.data.version}` : event.data.name;
      if (!names.data?.has(event.data.id)) names.setData((m) => new Map(m).set(event.data.id, name));
      return;
    }
    const op = event.data;
    list.setData((previous) => {
      if (!previous) return previous;
      const index = previous.items.findIndex((o) => o.id === op.id);
      const belongs = !state || op.state === state;
      if (index >= 0) {
        const items = belongs ? previous.items.map((o) => (o.id === op.id ? op : o)) : previous.items.filter((o) => o.id !== op.id);
        return { ...previous, items };
      }
      return belongs ? { ...previous, items: [op, ...previous.items] } : previous;
    });
    active.setData((previous) => {
      if (!previous) return previous;
      const without = previous.filter((o) => o.id !== op.id);
      return isActive(op) ? [...without, op] : without;
    });
    if (op.id === focus) focused.setData(() => op);
  });
  useResync(() => {
    list.reload();
    active.reload();
    focused.reload();
  });

  const cancel = (op: Operation) => {
    setCancelError(undefined);
    api.cancelOperation(op.id).then(undefined, setCancelError);
  };
  // An image import's target is its "name:version" (the image has no id yet).
  const targetName = (op: Operation) => names.data?.get(op.targetId) ?? (op.targetKind === 'image' && !isUuid(op.targetId) ? op.targetId : op.targetId.slice(0, 8));
  const items = list.data?.items ?? [];
  const pageCount = Math.max(1, Math.ceil(items.length / perPage));
  const shown = items.slice(pageIndex * perPage, (pageIndex + 1) * perPage);

  return (
    <>
      <PageTitle title="Operations" />
      <ErrorNote error={cancelError} onDismiss={() => setCancelError(undefined)} />

      {focus && (
        <section className="panel focus-op" aria-labelledby="op-focus">
          <h2 id="op-focus">Operation {focus.slice(0, 8)}</h2>
          <ErrorNote error={focused.error} />
          {focused.data && <OperationDetails op={focused.data} target={targetName(focused.data)} onCancel={cancel} />}
          <p>
            <Link to={`/operations${state ? `?state=${state}` : ''}`}>Close</Link>
          </p>
        </section>
      )}

      <section className="panel" aria-labelledby="ops-active">
        <h2 id="ops-active">
          Running now <span className="count">{active.data?.length ?? 0}</span>
        </h2>
        <ErrorNote error={active.error} />
        {active.data?.length === 0 && <p className="muted">Nothing is running.</p>}
        <ul className="op-list">
          {(active.data ?? []).map((op) => (
            <li key={op.id} className={`op-item op-${op.state}`}>
              <div className="op-line">
                <Link to={`/operations?focus=${op.id}`}>
                  {operationTitle(op.kind)} {targetName(op)}
                </Link>
                <StateBadge state={op.state} />
                <button type="button" onClick={() => cancel(op)}>
                  Cancel<span className="visually-hidden"> {operationTitle(op.kind)} {targetName(op)}</span>
                </button>
              </div>
              <OperationProgress op={op} />
            </li>
          ))}
        </ul>
      </section>

      <section className="panel" aria-labelledby="ops-history">
        <div className="section-head">
          <h2 id="ops-history">History, newest first</h2>
          <div className="filters inline">
            <label htmlFor={`${id}-state`}>State</label>
            <select id={`${id}-state`} value={state} onChange={(e) => navigate(e.target.value ? `/operations?state=${e.target.value}` : '/operations', { replace: true })}>
              <option value="">Any state</option>
              {operationStateList.map((s) => (
                <option key={s} value={s}>
                  {s.replace('_', ' ')}
                </option>
              ))}
            </select>
          </div>
        </div>
        <ErrorNote error={list.error} />
        {list.loading && !list.data && <Loading what="operations" />}
        {list.data && (
          <>
            {list.data.truncated && <p className="muted small">Showing the newest {items.length} operations.</p>}
            <table className="table responsive">
              <caption className="visually-hidden">Operations, newest first, page {pageIndex + 1} of {pageCount}</caption>
              <thead>
                <tr>
                  <th scope="col">Operation</th>
                  <th scope="col">Target</th>
                  <th scope="col">State</th>
                  <th scope="col">Progress</th>
                  <th scope="col">Started</th>
                  <th scope="col">By</th>
                </tr>
              </thead>
              <tbody>
                {shown.length === 0 && <EmptyRow columns={6}>No operation{state ? ` in state ${state}` : ''}.</EmptyRow>}
                {shown.map((op) => (
                  <tr key={op.id} data-op={op.id} aria-current={op.id === focus ? 'true' : undefined}>
                    <td data-label="Operation">
                      <Link to={`/operations?focus=${op.id}${state ? `&state=${state}` : ''}`}>{operationTitle(op.kind)}</Link>
                    </td>
                    <td data-label="Target">
                      {op.targetKind === 'vm' ? <Link to={`/vms/${op.targetId}`}>{targetName(op)}</Link> : op.targetKind === 'image' ? <Link to="/images">{targetName(op)}</Link> : targetName(op)}
                    </td>
                    <td data-label="State">
                      <div>
                        <StateBadge state={op.state} />
                        {op.error && <div className="error-text small server-message">{op.error.message}</div>}
                      </div>
                    </td>
                    <td data-label="Progress">{isActive(op) ? <OperationProgress op={op} /> : `${op.progress}%`}</td>
                    <td data-label="Started">{formatTime(op.startedAt ?? op.createdAt)}</td>
                    <td data-label="By">{op.actor}</td>
                  </tr>
                ))}
              </tbody>
            </table>
            <Pager label="Operation pages" hasPrevious={pageIndex > 0} hasNext={pageIndex + 1 < pageCount} onPrevious={() => setPageIndex((n) => n - 1)} onNext={() => setPageIndex((n) => n + 1)} />
          </>
        )}
      </section>
    </>
  );
}

function OperationDetails({ op, target, onCancel }: { op: Operation; target: string; onCancel: (op: Operation) => void }) {
  return (
    <>
      <dl className="details">
        <dt>Kind</dt>
        <dd>
          {operationTitle(op.kind)} <code>{op.kind}</code>
        </dd>
        <dt>Target</dt>
        <dd>
          {op.targetKind === 'vm' ? (
            <Link to={`/vms/${op.targetId}`}>{target}</Link>
          ) : op.targetKind === 'image' ? (
            <Link to="/images">image {target}</Link>
          ) : (
            `${op.targetKind} ${target}`
          )}
        </dd>
        <dt>State</dt>
        <dd>
          <StateBadge state={op.state} />
        </dd>
        <dt>Progress</dt>
        <dd>
          <OperationProgress op={op} />
        </dd>
        {op.error && (
          <>
            <dt>Error</dt>
            <dd className="error-text">
              <code>{op.error.code}</code> <span className="server-message">{op.error.message}</span>
            </dd>
          </>
        )}
        {op.result !== null && op.result !== undefined && (
          <>
            <dt>Result</dt>
            <dd>
              <code className="break">{JSON.stringify(op.result)}</code>
            </dd>
          </>
        )}
        <dt>Started by</dt>
        <dd>{op.actor}</dd>
        <dt>Created</dt>
        <dd>{formatTime(op.createdAt)}</dd>
        <dt>Finished</dt>
        <dd>{formatTime(op.finishedAt)}</dd>
        <dt>Id</dt>
        <dd>
          <code>{op.id}</code>
        </dd>
      </dl>
      {isActive(op) && (
        <button type="button" onClick={() => onCancel(op)}>
          Cancel this operation
        </button>
      )}
    </>
  );
}

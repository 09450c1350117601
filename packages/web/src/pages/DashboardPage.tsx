import { useState } from 'react';
import { listAll } from '../api/client.js';
import type { Host, Operation, Vm } from '../api/types.js';
import { CreateVmDialog } from './CreateVmDialog.js';
import { PageTitle } from '../components/PageTitle.js';
import { ErrorNote, Loading, Meter, OperationProgress, StateBadge } from '../components/ui.js';
import { ago, formatMiB, isActive, operationTitle, vmStateList } from '../format.js';
import { useApp, useAsync, useEvents, useResync } from '../live.js';
import { Link, navigate } from '../router.js';

interface Overview {
  hosts: Map<string, Host>;
  vms: Map<string, Vm>;
  vmsTruncated: boolean;
  ops: Map<string, Operation>;
}

export function DashboardPage() {
  const { api } = useApp();
  const [creating, setCreating] = useState(false);
  const overview = useAsync<Overview>(async () => {
    const [hosts, vms, running, pending] = await Promise.all([
      listAll((p) => api.hosts(p)),
      listAll((p) => api.vms(p)),
      listAll((p) => api.operations(p), { state: 'running' }),
      listAll((p) => api.operations(p), { state: 'pending' }),
    ]);
    return {
      hosts: new Map(hosts.items.map((h) => [h.id, h])),
      vms: new Map(vms.items.map((v) => [v.id, v])),
      vmsTruncated: vms.truncated,
      ops: new Map([...pending.items, ...running.items].map((o) => [o.id, o])),
    };
  }, 'dashboard');
  const { setData } = overview;

  useEvents((event) => {
    if (event.type === 'operation.updated' && !isActive(event.data)) {
      // An ended operation stays a moment with its outcome, then leaves.
      const id = event.data.id;
      setTimeout(() => setData((p) => {
        if (!p || !p.ops.has(id) || isActive(p.ops.get(id)!)) return p;
        const ops = new Map(p.ops);
        ops.delete(id);
        return { ...p, ops };
      }), 6000);
    }
    setData((previous) => {
      if (!previous) return previous;
      const next = { ...previous };
      switch (event.type) {
        case 'host.updated':
          next.hosts = new Map(previous.hosts).set(event.data.id, event.data);
          break;
        case 'host.removed':
          next.hosts = new Map(previous.hosts);
          next.hosts.delete(event.data.id);
          break;
        case 'vm.updated':
          next.vms = new Map(previous.vms).set(event.data.id, event.data);
          break;
        case 'vm.deleted':
          next.vms = new Map(previous.vms);
          next.vms.delete(event.data.id);
          break;
        case 'operation.updated': {
          next.ops = new Map(previous.ops);
          if (isActive(event.data) || next.ops.has(event.data.id)) next.ops.set(event.data.id, event.data);
          break;
        }
      }
      return next;
    });
  });
  useResync(overview.reload);

  const data = overview.data;
  const hosts = data ? [...data.hosts.values()].sort((a, b) => a.name.localeCompare(b.name)) : [];
  const vms = data ? [...data.vms.values()] : [];
  const ops = data ? [...data.ops.values()].sort((a, b) => a.createdAt.localeCompare(b.createdAt)) : [];
  const counts = new Map<string, number>();
  for (const vm of vms) counts.set(vm.state, (counts.get(vm.state) ?? 0) + 1);
  const recent = [...vms].sort((a, b) => b.updatedAt.localeCompare(a.updatedAt)).slice(0, 8);
  // An image import names its target "name:version"; ids are cut short.
  const vmName = (id: string) => data?.vms.get(id)?.name ?? data?.hosts.get(id)?.name ?? (id.length === 36 ? id.slice(0, 8) : id);

  return (
    <>
      <PageTitle
        title="Dashboard"
        actions={
          <button type="button" className="primary" onClick={() => setCreating(true)}>
            Create VM
          </button>
        }
      />
      <ErrorNote error={overview.error} />
      {!data && !overview.error && <Loading what="the cluster" />}
      {data && (
        <div className="dashboard">
          <section aria-labelledby="dash-hosts" className="panel">
            <h2 id="dash-hosts">
              Hosts <span className="count">{hosts.length}</span>
            </h2>
            {hosts.length === 0 && (
              <p className="muted">
                No host has joined yet. <Link to="/hosts">Make a join token</Link> and start an agent with it.
              </p>
            )}
            <ul className="host-cards">
              {hosts.map((host) => (
                <li key={host.id} className="host-card" data-host={host.name}>
                  <div className="host-card-head">
                    <Link to={`/hosts#host-${host.name}`}>{host.name}</Link>
                    <StateBadge state={host.state} />
                  </div>
                  <Meter label="vCPUs" used={host.allocated.cpus} total={host.capacity.cpus} text={`${host.allocated.cpus} of ${host.capacity.cpus}`} />
                  <Meter label="Memory" used={host.allocated.memoryMiB} total={host.capacity.memoryMiB} text={`${formatMiB(host.allocated.memoryMiB)} of ${formatMiB(host.capacity.memoryMiB)}`} />
                  <p className="muted small">
                    {host.allocated.vms} active VM{host.allocated.vms === 1 ? '' : 's'} · heartbeat {ago(host.lastHeartbeatAt)}
                  </p>
                </li>
              ))}
            </ul>
          </section>

          <section aria-labelledby="dash-vms" className="panel">
            <h2 id="dash-vms">
              VMs <span className="count">{vms.length}{data.vmsTruncated ? '+' : ''}</span>
            </h2>
            <ul className="state-counts">
              {vmStateList.filter((s) => counts.get(s)).map((state) => (
                <li key={state}>
                  <Link to={`/vms?state=${state}`}>
                    <span className="state-count">{counts.get(state)}</span> <StateBadge state={state} />
                  </Link>
                </li>
              ))}
            </ul>
            {vms.length === 0 ? (
              <p className="muted">No VM yet.</p>
            ) : (
              <table className="table compact">
                <caption className="visually-hidden">Recently changed VMs</caption>
                <thead>
                  <tr>
                    <th scope="col">Name</th>
                    <th scope="col">State</th>
                    <th scope="col">Host</th>
                  </tr>
                </thead>
                <tbody>
                  {recent.map((vm) => (
                    <tr key={vm.id}>
                      <td data-label="Name">
                        <Link to={`/vms/${vm.name}`}>{vm.name}</Link>
                      </td>
                      <td data-label="State">
                        <StateBadge state={vm.state} />
                      </td>
                      <td data-label="Host">{vm.hostName ?? '—'}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
            <p>
              <Link to="/vms">All VMs →</Link>
            </p>
          </section>

          <section aria-labelledby="dash-ops" className="panel">
            <h2 id="dash-ops">
              Running operations <span className="count">{ops.filter(isActive).length}</span>
            </h2>
            {ops.length === 0 ? (
              <p className="muted">Nothing is running.</p>
            ) : (
              <ul className="op-list">
                {ops.map((op) => (
                  <li key={op.id} className={`op-item op-${op.state}`}>
                    <div>
                      <Link to={`/operations?focus=${op.id}`}>
                        {operationTitle(op.kind)} {vmName(op.targetId)}
                      </Link>{' '}
                      <StateBadge state={op.state} />
                    </div>
                    {isActive(op) ? <OperationProgress op={op} /> : op.error && <p className="error-text">{op.error.message}</p>}
                  </li>
                ))}
              </ul>
            )}
            <p>
              <Link to="/operations">All operations →</Link>
            </p>
          </section>
        </div>
      )}
      {creating && <CreateVmDialog onClose={() => setCreating(false)} onCreated={(vm) => navigate(`/vms/${vm.name}`)} />}
    </>
  );
}

import { useEffect, useId, useRef, useState } from 'react';
import { listAll } from '../api/client.js';
import type { Host, JoinTokenAnswer } from '../api/types.js';
import { Dialog } from '../components/Dialog.js';
import { FormActions } from '../components/FormActions.js';
import { PageTitle } from '../components/PageTitle.js';
import { ConfirmDialog, ErrorNote, Loading, Meter, StateBadge } from '../components/ui.js';
import { ago, formatLabels, formatMiB, formatTime } from '../format.js';
import { useApp, useAsync, useEvents, useResync } from '../live.js';
import { Link } from '../router.js';
import { HostMaintenanceControls, PowerPolicyPanel } from './HostPower.js';
import { RebalancePanel } from './RebalancePanel.js';

export function HostsPage() {
  const { api, track } = useApp();
  const hosts = useAsync(async () => (await listAll((p) => api.hosts(p))).items, 'hosts');
  const [joining, setJoining] = useState(false);
  const [removing, setRemoving] = useState<Host | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const { setData } = hosts;

  useEvents((event) => {
    if (event.type === 'host.updated') {
      setData((list) => {
        if (!list) return list;
        const next = list.some((h) => h.id === event.data.id) ? list.map((h) => (h.id === event.data.id ? event.data : h)) : [...list, event.data];
        return next.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      });
    } else if (event.type === 'host.removed') {
      setData((list) => list?.filter((h) => h.id !== event.data.id));
    }
  });
  useResync(hosts.reload);

  // /hosts#host-h1 (from other pages) scrolls to that host once it is drawn.
  useEffect(() => {
    if (hosts.data && location.hash) document.getElementById(decodeURIComponent(location.hash.slice(1)))?.scrollIntoView();
  }, [hosts.data]);

  return (
    <>
      <PageTitle
        title="Hosts"
        actions={
          <button type="button" className="primary" onClick={() => setJoining(true)}>
            Add a host…
          </button>
        }
      />
      <ErrorNote error={hosts.error ?? error} onDismiss={error ? () => setError(undefined) : undefined} />
      {!hosts.data && !hosts.error && <Loading what="hosts" />}
      {hosts.data?.length === 0 && <p className="muted">No host has joined yet. Add one with a join token.</p>}
      <PowerPolicyPanel />
      <RebalancePanel />
      <ul className="host-list">
        {(hosts.data ?? []).map((host) => (
          <li key={host.id} id={`host-${host.name}`} className="panel host-panel" data-host={host.name}>
            <div className="host-panel-head">
              <h2>{host.name}</h2>
              <StateBadge state={host.state} />
              <span className="toolbar-gap" />
              <Link to={`/storage?host=${encodeURIComponent(host.name)}`}>Storage</Link>
              <HostMaintenanceControls host={host} />
              <button
                type="button"
                onClick={() => {
                  setError(undefined);
                  api.rotateCertificate(host.id).then((op) => track(op, `Rotate certificate of ${host.name}`), setError);
                }}
              >
                Rotate certificate
              </button>
              <button type="button" className="danger-outline" onClick={() => setRemoving(host)}>
                Remove…
              </button>
            </div>
            <div className="host-body">
              <div className="host-meters">
                <Meter label="vCPUs allocated" used={host.allocated.cpus} total={host.capacity.cpus} text={`${host.allocated.cpus} of ${host.capacity.cpus}`} />
                <Meter label="Memory allocated" used={host.allocated.memoryMiB} total={host.capacity.memoryMiB} text={`${formatMiB(host.allocated.memoryMiB)} of ${formatMiB(host.capacity.memoryMiB)}`} />
              </div>
              <dl className="details">
                <dt>Active VMs</dt>
                <dd>
                  <Link to={`/vms?host=${encodeURIComponent(host.name)}`}>{host.allocated.vms}</Link>
                </dd>
                <dt>Address</dt>
                <dd>
                  <code>{host.address}</code>
                </dd>
                <dt>Last heartbeat</dt>
                <dd>{ago(host.lastHeartbeatAt)}</dd>
                <dt>Certificate expires</dt>
                <dd>{formatTime(host.certExpiresAt)}</dd>
                <dt>CPU models</dt>
                <dd>{host.cpuModels.length ? host.cpuModels.join(', ') : '—'}</dd>
                <dt>Labels</dt>
                <dd>{formatLabels(host.labels) || '—'}</dd>
                <dt>Joined</dt>
                <dd>{formatTime(host.createdAt)}</dd>
              </dl>
            </div>
          </li>
        ))}
      </ul>
      {joining && <JoinTokenDialog onClose={() => setJoining(false)} />}
      {removing && (
        <ConfirmDialog title={`Remove host ${removing.name}?`} confirmLabel="Remove host" onClose={() => setRemoving(undefined)} onConfirm={() => api.removeHost(removing.id)}>
          <p>
            The manager revokes the host's certificate and forgets it. The agent keeps running but is refused from then on. A host that still holds VMs cannot be removed.
          </p>
        </ConfirmDialog>
      )}
    </>
  );
}

const ttlChoices = [
  { seconds: 900, label: '15 minutes' },
  { seconds: 3600, label: '1 hour' },
  { seconds: 86400, label: '1 day' },
  { seconds: 604800, label: '7 days' },
];

function JoinTokenDialog({ onClose }: { onClose: () => void }) {
  const { api } = useApp();
  const [ttl, setTtl] = useState(3600);
  const [answer, setAnswer] = useState<JoinTokenAnswer | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);
  const [copied, setCopied] = useState(false);
  const tokenField = useRef<HTMLInputElement>(null);
  const id = useId();
  // The form gives way to the answer: the focus goes to the token, not to the page behind.
  useEffect(() => {
    if (answer) tokenField.current?.focus();
  }, [answer]);
  const command = answer ? `drover-agent --join ${location.origin} --join-token ${answer.token} --ca-fingerprint ${answer.caFingerprint}` : '';

  return (
    <Dialog title="Add a host" onClose={onClose} wide>
      {!answer ? (
        <form
          className="form-grid"
          onSubmit={(event) => {
            event.preventDefault();
            setBusy(true);
            setError(undefined);
            api.joinToken(ttl).then(setAnswer, (cause: unknown) => {
              setBusy(false);
              setError(cause);
            });
          }}
        >
          <p>A one-time join token lets one agent join this cluster. It is shown once.</p>
          <label htmlFor={`${id}-ttl`}>Valid for</label>
          <select id={`${id}-ttl`} value={ttl} onChange={(e) => setTtl(Number(e.target.value))}>
            {ttlChoices.map((c) => (
              <option key={c.seconds} value={c.seconds}>
                {c.label}
              </option>
            ))}
          </select>
          <ErrorNote error={error} />
          <FormActions onCancel={onClose} busy={busy}>
            Create join token
          </FormActions>
        </form>
      ) : (
        <div className="form-grid">
          <label htmlFor={`${id}-token`}>Join token (shown once)</label>
          <input id={`${id}-token`} ref={tokenField} readOnly value={answer.token} className="mono" onFocus={(e) => e.currentTarget.select()} />
          <p className="help">Expires {formatTime(answer.expiresAt)}.</p>
          <label htmlFor={`${id}-cmd`}>On the new host, as root</label>
          <textarea id={`${id}-cmd`} readOnly rows={4} value={command} className="mono" onFocus={(e) => e.currentTarget.select()} />
          <p className="help">
            An agent on another machine joins through the manager's TLS listener (<code>tlsListen</code>): use that address instead of this page's if it differs. See docs/operations.md.
          </p>
          <div className="form-actions">
            <button
              type="button"
              onClick={() => {
                navigator.clipboard?.writeText(command).then(() => setCopied(true), () => setCopied(false));
              }}
            >
              {copied ? 'Copied' : 'Copy command'}
            </button>
            <button type="button" className="primary" onClick={onClose}>
              Done
            </button>
          </div>
        </div>
      )}
    </Dialog>
  );
}

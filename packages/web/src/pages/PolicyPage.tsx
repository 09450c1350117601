import { useId, useState } from 'react';
import { ApiError, InputError } from '../api/client.js';
import type { PolicyExplanation, PolicyInfo, PolicyValidation } from '../api/types.js';
import { PageTitle } from '../components/PageTitle.js';
import { EmptyRow, ErrorNote, Loading } from '../components/ui.js';
import { formatTime } from '../format.js';
import { useApp, useAsync } from '../live.js';
import { TableHead } from '../components/TableHead.js';

type Format = '' | 'xml' | 'yaml' | 'json';
const labelKinds = ['host', 'volume', 'image', 'network'] as const;

/**
 * The sHype security policy (docs/access-control-policy.md): the active
 * policy with its types, conflict sets and labels; loading one (Xen ACM XML
 * or YAML/JSON, validated first); labels of hosts and resources; and why a
 * VM may or may not run on a host.
 */
export function PolicyPage() {
  const { api } = useApp();
  // No policy is a normal state (404), not an error.
  const policy = useAsync(async () => {
    try {
      return await api.policy();
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return null;
      throw error;
    }
  }, 'policy');
  const labels = useAsync(() => api.policyLabels(), 'policy-labels');

  return (
    <>
      <PageTitle title="Security policy" />
      <p className="muted">
        Mandatory access control in the style of Xen&apos;s sHype: the Chinese Wall decides which VMs may share a host, Simple Type Enforcement which may share an image, a volume or a
        network. Labels are named <code>ACM:&lt;policy&gt;:&lt;label&gt;</code>.
      </p>
      <ActivePolicy info={policy.data} error={policy.error} />
      <LoadPolicy
        onLoaded={() => {
          policy.reload();
          labels.reload();
        }}
      />
      <Labels policy={policy.data ?? null} labels={labels.data} error={labels.error} onChanged={() => labels.reload()} />
      <Explain />
    </>
  );
}

function ActivePolicy({ info, error }: { info: PolicyInfo | null | undefined; error: unknown }) {
  const { api } = useApp();
  return (
    <section className="panel" aria-labelledby="active-policy-title">
      <h2 id="active-policy-title">Active policy</h2>
      <ErrorNote error={error} />
      {info === undefined && !error && <Loading what="the policy" />}
      {info === null && <p data-policy="none">No security policy is loaded: nothing restricts where VMs run or what they use.</p>}
      {info && (
        <div data-policy={info.name}>
          <p>
            <strong>{info.name}</strong>
            {info.policy.version ? ` version ${info.policy.version}` : ''} — loaded from {info.sourceFormat.toUpperCase()} by {info.loadedBy}, {formatTime(info.loadedAt)}. Export as{' '}
            <a href={api.policyExportUrl('xml')} download={`${info.name}.xml`}>XML</a>, <a href={api.policyExportUrl('yaml')} download={`${info.name}.yaml`}>YAML</a> or{' '}
            <a href={api.policyExportUrl('json')} download={`${info.name}.json`}>JSON</a>.
          </p>
          <dl className="fields">
            <dt>STE types</dt>
            <dd>{info.policy.steTypes.join(', ') || '—'}</dd>
            <dt>Chinese Wall types</dt>
            <dd>{info.policy.cwTypes.join(', ') || '—'}</dd>
            <dt>Conflict sets</dt>
            <dd>
              {info.policy.conflictSets.length === 0
                ? '—'
                : info.policy.conflictSets.map((set) => (
                    <div key={set.name} data-conflict-set={set.name}>
                      {set.name}: {set.types.join(', ')}
                    </div>
                  ))}
            </dd>
            <dt>Bootstrap label</dt>
            <dd>{info.policy.bootstrapLabel ?? '— (unlabelled hosts cover no STE type)'}</dd>
          </dl>
          <table className="table responsive">
            <caption className="visually-hidden">Labels of the policy</caption>
            <TableHead columns={['Label', 'Kind', 'STE types', 'Chinese Wall types']} />
            <tbody>
              {info.policy.vmLabels.map((l) => (
                <tr key={`vm-${l.name}`} data-label={l.name}>
                  <td data-label="Label" className="break">
                    <code>
                      ACM:{info.name}:{l.name}
                    </code>
                  </td>
                  <td data-label="Kind">VM</td>
                  <td data-label="STE types">{l.steTypes.join(', ') || '—'}</td>
                  <td data-label="Chinese Wall types">{l.cwTypes.join(', ') || '—'}</td>
                </tr>
              ))}
              {info.policy.resourceLabels.map((l) => (
                <tr key={`res-${l.name}`} data-label={l.name}>
                  <td data-label="Label" className="break">
                    <code>
                      ACM:{info.name}:{l.name}
                    </code>
                  </td>
                  <td data-label="Kind">Resource</td>
                  <td data-label="STE types">{l.steTypes.join(', ') || '—'}</td>
                  <td data-label="Chinese Wall types">—</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

function LoadPolicy({ onLoaded }: { onLoaded: () => void }) {
  const { api } = useApp();
  const id = useId();
  const [document, setDocument] = useState('');
  const [format, setFormat] = useState<Format>('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const [validation, setValidation] = useState<PolicyValidation | undefined>(undefined);
  const [loaded, setLoaded] = useState<string | undefined>(undefined);
  const body = () => {
    if (!document.trim()) throw new InputError('Paste a policy (Xen ACM XML, YAML or JSON) or choose a file');
    return { document, ...(format ? { format } : {}) };
  };
  const run = async (what: 'validate' | 'load') => {
    setBusy(true);
    setError(undefined);
    setValidation(undefined);
    setLoaded(undefined);
    try {
      if (what === 'validate') setValidation(await api.validatePolicy(body()));
      else {
        const info = await api.loadPolicy(body());
        setLoaded(info.name);
        onLoaded();
      }
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const violations = error instanceof ApiError && Array.isArray(error.details.violations) ? (error.details.violations as Array<{ message: string }>) : [];
  return (
    <section className="panel" aria-labelledby="load-policy-title">
      <h2 id="load-policy-title">Load a policy</h2>
      <p className="muted">
        Everything running is checked against the new policy; one that running VMs would violate is refused with the list of conflicts. DTDs, entities and YAML aliases are
        refused.
      </p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void run('load');
        }}
      >
        <label htmlFor={`${id}-file`}>Policy file</label>
        <input
          id={`${id}-file`}
          type="file"
          accept=".xml,.yaml,.yml,.json"
          onChange={(e) => {
            const file = e.target.files?.[0];
            if (file) void file.text().then(setDocument);
          }}
        />
        <label htmlFor={`${id}-doc`}>Policy document</label>
        <textarea id={`${id}-doc`} rows={10} spellCheck={false} value={document} onChange={(e) => setDocument(e.target.value)} placeholder="<SecurityPolicyDefinition …> or name: …" />
        <label htmlFor={`${id}-format`}>Format</label>
        <select id={`${id}-format`} value={format} onChange={(e) => setFormat(e.target.value as Format)}>
          <option value="">Recognise it</option>
          <option value="xml">Xen ACM XML</option>
          <option value="yaml">YAML</option>
          <option value="json">JSON</option>
        </select>
        <div className="form-actions">
          <button type="button" disabled={busy} onClick={() => void run('validate')}>
            Validate
          </button>
          <button type="submit" className="primary" disabled={busy}>
            Load policy
          </button>
        </div>
      </form>
      <ErrorNote error={error} onDismiss={() => setError(undefined)} />
      {violations.length > 0 && (
        <ul className="policy-violations" aria-label="Conflicts with running VMs">
          {violations.map((v, i) => (
            <li key={i}>{v.message}</li>
          ))}
        </ul>
      )}
      {loaded && (
        <p role="status" data-loaded={loaded}>
          Loaded policy {loaded}.
        </p>
      )}
      {validation && (
        <div role="status" data-valid={String(validation.valid)}>
          {validation.valid ? (
            <p>
              Policy {validation.name} is valid{validation.summary ? ` (${validation.summary.vmLabels} VM labels, ${validation.summary.resourceLabels} resource labels, ${validation.summary.conflictSets} conflict sets)` : ''}, and
              everything running obeys it.
            </p>
          ) : (
            <ul aria-label="Problems">
              {validation.problems.map((p, i) => (
                <li key={`p${i}`}>
                  {p.path ? <code>{p.path}</code> : null} {p.message}
                </li>
              ))}
              {validation.violations.map((v, i) => (
                <li key={`v${i}`}>{v.message}</li>
              ))}
            </ul>
          )}
        </div>
      )}
    </section>
  );
}

function Labels({ policy, labels, error, onChanged }: { policy: PolicyInfo | null; labels: Awaited<ReturnType<ReturnType<typeof useApp>['api']['policyLabels']>> | undefined; error: unknown; onChanged: () => void }) {
  const { api } = useApp();
  const id = useId();
  const [kind, setKind] = useState<(typeof labelKinds)[number]>('host');
  const [object, setObject] = useState('');
  const [label, setLabel] = useState('');
  const [busy, setBusy] = useState(false);
  const [actionError, setActionError] = useState<unknown>(undefined);
  const choices = policy ? (kind === 'host' ? policy.policy.vmLabels : policy.policy.resourceLabels).map((l) => `ACM:${policy.name}:${l.name}`) : [];
  const set = async (target: { kind: (typeof labelKinds)[number]; object: string }, value: string | null) => {
    setBusy(true);
    setActionError(undefined);
    try {
      if (!target.object.trim()) throw new InputError('Name the object to label');
      if (value === '') throw new InputError('Choose a label');
      await api.setPolicyLabel(target.kind, target.object.trim(), value);
      onChanged();
    } catch (e) {
      setActionError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <section className="panel" aria-labelledby="labels-title">
      <h2 id="labels-title">Labels of hosts and resources</h2>
      <p className="muted">
        A host carries a VM label (unlabelled hosts carry the bootstrap label) and must cover the STE types of the VMs it runs; volumes (<code>host/pool/volume</code>), images and
        networks carry resource labels. An unlabelled resource is open to every VM. A VM&apos;s own label is set when it is created or edited.
      </p>
      <ErrorNote error={error ?? actionError} onDismiss={() => setActionError(undefined)} />
      {!labels && !error && <Loading what="labels" />}
      {labels && (
        <table className="table responsive">
          <caption className="visually-hidden">Security labels of hosts and resources</caption>
          <TableHead columns={['Kind', 'Object', 'Label']} actions />
          <tbody>
            {labels.length === 0 && <EmptyRow columns={4}>No host or resource is labelled.</EmptyRow>}
            {labels.map((l) => (
              <tr key={`${l.kind}/${l.objectId}`} data-labelled={`${l.kind}:${l.objectName ?? l.objectId}`}>
                <td data-label="Kind">{l.kind}</td>
                <td data-label="Object" className="break">
                  {l.objectName ?? l.objectId}
                </td>
                <td data-label="Label" className="break">
                  <code>{l.label}</code>
                </td>
                <td className="row-actions">
                  <button type="button" className="danger-outline" disabled={busy} onClick={() => void set({ kind: l.kind, object: l.objectId }, null)}>
                    Remove<span className="visually-hidden"> the label of {l.kind} {l.objectName ?? l.objectId}</span>
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <form
        className="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          void set({ kind, object }, label);
        }}
      >
        <label htmlFor={`${id}-kind`}>Kind</label>
        <select id={`${id}-kind`} value={kind} onChange={(e) => setKind(e.target.value as (typeof labelKinds)[number])}>
          {labelKinds.map((k) => (
            <option key={k} value={k}>
              {k}
            </option>
          ))}
        </select>
        <label htmlFor={`${id}-object`}>Object</label>
        <input id={`${id}-object`} value={object} onChange={(e) => setObject(e.target.value)} placeholder={kind === 'volume' ? 'h1/default/disk.qcow2' : kind === 'host' ? 'h1' : 'name'} />
        <label htmlFor={`${id}-label`}>Label</label>
        <select id={`${id}-label`} value={label} onChange={(e) => setLabel(e.target.value)} disabled={!policy}>
          <option value="">{policy ? 'Choose…' : 'Load a policy first'}</option>
          {choices.map((c) => (
            <option key={c} value={c}>
              {c}
            </option>
          ))}
        </select>
        <button type="submit" disabled={busy || !policy}>
          Set label
        </button>
      </form>
    </section>
  );
}

function Explain() {
  const { api } = useApp();
  const id = useId();
  const [vm, setVm] = useState('');
  const [host, setHost] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const [answer, setAnswer] = useState<PolicyExplanation | undefined>(undefined);
  return (
    <section className="panel" aria-labelledby="explain-title">
      <h2 id="explain-title">Explain a placement</h2>
      <form
        className="inline-form"
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(undefined);
          setAnswer(undefined);
          try {
            if (!vm.trim() || !host.trim()) throw new InputError('Name a VM and a host');
            setAnswer(await api.explainPolicy(vm.trim(), host.trim()));
          } catch (err) {
            setError(err);
          } finally {
            setBusy(false);
          }
        }}
      >
        <label htmlFor={`${id}-vm`}>VM</label>
        <input id={`${id}-vm`} value={vm} onChange={(e) => setVm(e.target.value)} />
        <label htmlFor={`${id}-host`}>Host</label>
        <input id={`${id}-host`} value={host} onChange={(e) => setHost(e.target.value)} />
        <button type="submit" disabled={busy}>
          Explain
        </button>
      </form>
      <ErrorNote error={error} onDismiss={() => setError(undefined)} />
      {answer && (
        <div role="status" data-allowed={String(answer.allowed)}>
          <p>
            <strong>{answer.allowed ? 'Allowed' : 'Not allowed'}</strong>: VM {answer.vm} ({answer.vmLabel ?? 'no label'}) on host {answer.host} ({answer.hostLabel ?? 'no label'}).
          </p>
          <ul>
            {answer.reasons.map((r, i) => (
              <li key={i}>{r}</li>
            ))}
          </ul>
          {answer.filters.some((f) => !f.pass) && (
            <>
              <p className="muted">Scheduler filters refusing the host:</p>
              <ul>
                {answer.filters
                  .filter((f) => !f.pass)
                  .map((f) => (
                    <li key={f.filter}>
                      <code>{f.filter}</code>: {f.reason}
                    </li>
                  ))}
              </ul>
            </>
          )}
        </div>
      )}
    </section>
  );
}

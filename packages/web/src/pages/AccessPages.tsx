import { useId, useState, type FormEvent } from 'react';
import type { ApiToken, AuditRecord, Role, User } from '../api/types.js';
import { PageTitle } from '../components/PageTitle.js';
import { EmptyRow, ErrorNote, Loading } from '../components/ui.js';
import { formatTime } from '../format.js';
import { useApp, useAsync } from '../live.js';
import { Link, useLocation } from '../router.js';
import { TableHead } from '../components/TableHead.js';

/**
 * Who may ask: users (and projects), roles, API tokens and the audit log.
 * Each page shows only what the signed-in user may read; the manager refuses
 * the rest (403), and the page says so in its words.
 */

function AccessNav() {
  const { path } = useLocation();
  const items = [
    ['/users', 'Users and projects'],
    ['/roles', 'Roles'],
    ['/tokens', 'API tokens'],
    ['/audit', 'Audit log'],
  ] as const;
  return (
    <nav aria-label="Access control" className="subnav">
      <ul>
        {items.map(([to, label]) => (
          <li key={to}>
            <Link to={to} aria-current={path === to ? 'page' : undefined}>
              {label}
            </Link>
          </li>
        ))}
      </ul>
    </nav>
  );
}

const bindingText = (user: User) => user.bindings.map((b) => (b.scope === '*' ? b.role : `${b.role} @ ${b.scope}`)).join(', ') || '—';

/** Runs a change, keeps its error for the form, and reloads on success. */
function useChange() {
  const [error, setError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);
  const run = async (change: () => Promise<unknown>, after?: () => void) => {
    setBusy(true);
    setError(undefined);
    try {
      await change();
      after?.();
      return true;
    } catch (cause) {
      setError(cause);
      return false;
    } finally {
      setBusy(false);
    }
  };
  return { error, busy, run, clear: () => setError(undefined) };
}

export function UsersPage() {
  const { api } = useApp();
  const users = useAsync(() => api.users(), 'users');
  const roles = useAsync(() => api.roles(), 'roles');
  const projects = useAsync(() => api.projects(), 'projects');
  const change = useChange();
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [role, setRole] = useState('lab-user');
  const [scope, setScope] = useState('*');
  const [projectName, setProjectName] = useState('');
  const [maxVms, setMaxVms] = useState('');
  const id = useId();

  const addUser = (event: FormEvent) => {
    event.preventDefault();
    void change.run(() => api.createUser({ name: name.trim(), ...(password ? { password } : {}), bindings: [{ role, scope: scope.trim() || '*' }] }), () => {
      setName('');
      setPassword('');
      users.reload();
    });
  };
  const addProject = (event: FormEvent) => {
    event.preventDefault();
    void change.run(() => api.createProject({ name: projectName.trim(), ...(maxVms ? { quota: { vms: Number(maxVms) } } : {}) }), () => {
      setProjectName('');
      setMaxVms('');
      projects.reload();
    });
  };

  return (
    <section>
      <PageTitle title="Users" />
      <AccessNav />
      <ErrorNote error={change.error} onDismiss={change.clear} />
      <ErrorNote error={users.error} />
      {users.loading && !users.data ? (
        <Loading what="users" />
      ) : (
        <table className="table">
          <caption>Users</caption>
          <TableHead columns={['Name', 'Source', 'Roles', 'State', 'Actions']} />
          <tbody>
            {(users.data?.items ?? []).map((user) => (
              <tr key={user.id}>
                <td>{user.name}</td>
                <td>{user.source}</td>
                <td>{bindingText(user)}</td>
                <td>{user.disabled ? 'disabled' : 'active'}</td>
                <td>
                  {user.name !== 'admin' && (
                    <button type="button" disabled={change.busy} onClick={() => void change.run(() => api.editUser(user.name, { disabled: !user.disabled }), users.reload)}>
                      {user.disabled ? `Enable ${user.name}` : `Disable ${user.name}`}
                    </button>
                  )}{' '}
                  {user.name !== 'admin' && (
                    <button type="button" className="danger" disabled={change.busy} onClick={() => void change.run(() => api.deleteUser(user.name), users.reload)}>
                      Delete {user.name}
                    </button>
                  )}
                </td>
              </tr>
            ))}
            {users.data?.items.length === 0 && <EmptyRow columns={5}>No users.</EmptyRow>}
          </tbody>
        </table>
      )}
      <form className="card form-grid" onSubmit={addUser} aria-label="Add a user">
        <h2>Add a user</h2>
        <label htmlFor={`${id}-name`}>User name</label>
        <input id={`${id}-name`} value={name} onChange={(e) => setName(e.target.value)} required pattern="[A-Za-z0-9][A-Za-z0-9_.@\-]*" />
        <label htmlFor={`${id}-password`}>Password</label>
        <input id={`${id}-password`} type="password" autoComplete="new-password" minLength={8} value={password} onChange={(e) => setPassword(e.target.value)} />
        <label htmlFor={`${id}-role`}>Role</label>
        <select id={`${id}-role`} value={role} onChange={(e) => setRole(e.target.value)}>
          {(roles.data?.items ?? [{ name: 'lab-user' } as Role]).map((r) => (
            <option key={r.name} value={r.name}>
              {r.name}
            </option>
          ))}
        </select>
        <label htmlFor={`${id}-scope`}>Scope</label>
        <input id={`${id}-scope`} value={scope} onChange={(e) => setScope(e.target.value)} aria-describedby={`${id}-scope-help`} />
        <p id={`${id}-scope-help`} className="help">
          <code>*</code> (everything), <code>project:NAME</code> or <code>vm:ID</code>.
        </p>
        <button type="submit" className="primary" disabled={change.busy || !name.trim()}>
          Add user
        </button>
      </form>

      <h2>Projects</h2>
      <ErrorNote error={projects.error} />
      <table className="table">
        <caption>Projects, usage / quota</caption>
        <TableHead columns={['Project', 'VMs', 'vCPUs', 'Memory (MiB)', 'Actions']} />
        <tbody>
          {(projects.data?.items ?? []).map((p) => (
            <tr key={p.id}>
              <td>{p.name}</td>
              <td>
                {p.usage.vms} / {p.quota.vms ?? '∞'}
              </td>
              <td>
                {p.usage.cpus} / {p.quota.cpus ?? '∞'}
              </td>
              <td>
                {p.usage.memoryMiB} / {p.quota.memoryMiB ?? '∞'}
              </td>
              <td>
                <button type="button" className="danger" disabled={change.busy} onClick={() => void change.run(() => api.deleteProject(p.name), projects.reload)}>
                  Delete project {p.name}
                </button>
              </td>
            </tr>
          ))}
          {projects.data?.items.length === 0 && <EmptyRow columns={5}>No projects.</EmptyRow>}
        </tbody>
      </table>
      <form className="card form-grid" onSubmit={addProject} aria-label="Add a project">
        <h2>Add a project</h2>
        <label htmlFor={`${id}-project`}>Project name</label>
        <input id={`${id}-project`} value={projectName} onChange={(e) => setProjectName(e.target.value)} required />
        <label htmlFor={`${id}-maxvms`}>At most VMs</label>
        <input id={`${id}-maxvms`} type="number" min={0} value={maxVms} onChange={(e) => setMaxVms(e.target.value)} />
        <button type="submit" className="primary" disabled={change.busy || !projectName.trim()}>
          Add project
        </button>
      </form>
    </section>
  );
}

export function RolesPage() {
  const { api } = useApp();
  const roles = useAsync(() => api.roles(), 'roles');
  const change = useChange();
  const [name, setName] = useState('');
  const [permissions, setPermissions] = useState('');
  const id = useId();
  const add = (event: FormEvent) => {
    event.preventDefault();
    void change.run(() => api.createRole({ name: name.trim(), permissions: permissions.split(/[\s,]+/).filter(Boolean) }), () => {
      setName('');
      setPermissions('');
      roles.reload();
    });
  };
  return (
    <section>
      <PageTitle title="Roles" />
      <AccessNav />
      <ErrorNote error={change.error} onDismiss={change.clear} />
      <ErrorNote error={roles.error} />
      <table className="table">
        <caption>Roles and their permissions</caption>
        <TableHead columns={['Role', 'Permissions', 'Description', 'Actions']} />
        <tbody>
          {(roles.data?.items ?? []).map((r) => (
            <tr key={r.name}>
              <td>{r.name}</td>
              <td>
                <code>{r.permissions.join(' ')}</code>
                {r.ownObjectsOnly && ' (own objects only)'}
              </td>
              <td>{r.description}</td>
              <td>
                {r.builtIn ? (
                  'built in'
                ) : (
                  <button type="button" className="danger" disabled={change.busy} onClick={() => void change.run(() => api.deleteRole(r.name), roles.reload)}>
                    Delete role {r.name}
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <form className="card form-grid" onSubmit={add} aria-label="Add a custom role">
        <h2>Add a custom role</h2>
        <label htmlFor={`${id}-name`}>Role name</label>
        <input id={`${id}-name`} value={name} onChange={(e) => setName(e.target.value)} required />
        <label htmlFor={`${id}-perms`}>Permissions</label>
        <input id={`${id}-perms`} value={permissions} onChange={(e) => setPermissions(e.target.value)} required aria-describedby={`${id}-perms-help`} />
        <p id={`${id}-perms-help`} className="help">
          Patterns separated by spaces: <code>vm.read</code>, <code>vm.*</code>, <code>*.read</code>; a leading <code>!</code> takes away.
        </p>
        <button type="submit" className="primary" disabled={change.busy || !name.trim() || !permissions.trim()}>
          Add role
        </button>
      </form>
    </section>
  );
}

export function TokensPage() {
  const { api } = useApp();
  const tokens = useAsync(() => api.tokens(), 'tokens');
  const change = useChange();
  const [name, setName] = useState('');
  const [days, setDays] = useState('30');
  const [secret, setSecret] = useState<string | undefined>(undefined);
  const id = useId();
  const add = (event: FormEvent) => {
    event.preventDefault();
    setSecret(undefined);
    void change.run(async () => {
      const made = await api.createToken({ name: name.trim(), ...(days ? { expiresInSeconds: Number(days) * 86_400 } : {}) });
      setSecret(made.token);
      setName('');
      tokens.reload();
    });
  };
  const row = (t: ApiToken) => (
    <tr key={t.id}>
      <td>{t.name}</td>
      <td>{t.user ?? '—'}</td>
      <td>{t.roles?.join(', ') ?? 'all roles'}</td>
      <td>{t.projects?.join(', ') ?? 'all projects'}</td>
      <td>{t.expiresAt ? formatTime(t.expiresAt) : 'never'}</td>
      <td>
        {t.revokedAt ? (
          `revoked ${formatTime(t.revokedAt)}`
        ) : (
          <button type="button" className="danger" disabled={change.busy} onClick={() => void change.run(() => api.revokeToken(t.id), tokens.reload)}>
            Revoke {t.name}
          </button>
        )}
      </td>
    </tr>
  );
  return (
    <section>
      <PageTitle title="API tokens" />
      <AccessNav />
      <ErrorNote error={change.error} onDismiss={change.clear} />
      <ErrorNote error={tokens.error} />
      {secret && (
        <p className="notice" role="status">
          New token (shown only now): <code data-testid="new-token">{secret}</code>
        </p>
      )}
      <table className="table">
        <caption>API tokens</caption>
        <TableHead columns={['Name', 'User', 'Roles', 'Projects', 'Expires', 'State']} />
        <tbody>
          {(tokens.data?.items ?? []).map(row)}
          {tokens.data?.items.length === 0 && <EmptyRow columns={6}>No tokens.</EmptyRow>}
        </tbody>
      </table>
      <form className="card form-grid" onSubmit={add} aria-label="Make an API token">
        <h2>Make an API token</h2>
        <label htmlFor={`${id}-name`}>Token name</label>
        <input id={`${id}-name`} value={name} onChange={(e) => setName(e.target.value)} required />
        <label htmlFor={`${id}-days`}>Expires after (days)</label>
        <input id={`${id}-days`} type="number" min={1} value={days} onChange={(e) => setDays(e.target.value)} />
        <button type="submit" className="primary" disabled={change.busy || !name.trim()}>
          Make token
        </button>
      </form>
    </section>
  );
}

export function AuditPage() {
  const { api } = useApp();
  const [actor, setActor] = useState('');
  const [decision, setDecision] = useState('');
  const [filter, setFilter] = useState({ actor: '', decision: '' });
  const records = useAsync(() => api.audit({ ...(filter.actor ? { actor: filter.actor } : {}), ...(filter.decision ? { decision: filter.decision } : {}), limit: 1000 }), `audit:${filter.actor}:${filter.decision}`);
  const change = useChange();
  const [verdict, setVerdict] = useState<string | undefined>(undefined);
  const id = useId();
  const items = [...(records.data?.items ?? [])].reverse();
  return (
    <section>
      <PageTitle title="Audit log" />
      <AccessNav />
      <form
        className="filters"
        onSubmit={(event) => {
          event.preventDefault();
          setFilter({ actor: actor.trim(), decision });
        }}
      >
        <label htmlFor={`${id}-actor`}>Actor</label>
        <input id={`${id}-actor`} value={actor} onChange={(e) => setActor(e.target.value)} />
        <label htmlFor={`${id}-decision`}>Decision</label>
        <select id={`${id}-decision`} value={decision} onChange={(e) => setDecision(e.target.value)}>
          <option value="">any</option>
          <option value="allow">allow</option>
          <option value="deny">deny</option>
          <option value="error">error</option>
        </select>
        <button type="submit">Filter</button>
        <button
          type="button"
          onClick={() =>
            void change.run(async () => {
              const result = await api.verifyAudit();
              setVerdict(result.ok ? `Intact: ${result.checked} records, each chained to the one before.` : `Broken at record ${result.firstBad!.seq}: ${result.firstBad!.reason}.`);
            })
          }
        >
          Verify the chain
        </button>
        <a href={api.auditExportUrl(filter)} download="audit.jsonl">
          Export as JSON lines
        </a>
      </form>
      {verdict && (
        <p className="notice" role="status">
          {verdict}
        </p>
      )}
      <ErrorNote error={change.error} onDismiss={change.clear} />
      <ErrorNote error={records.error} />
      <table className="table">
        <caption>Audit records, newest first</caption>
        <TableHead columns={['#', 'When', 'Who', 'From', 'What', 'Status', 'Decision', 'Reason']} />
        <tbody>
          {items.map((r: AuditRecord) => (
            <tr key={r.seq}>
              <td>{r.seq}</td>
              <td>{formatTime(r.at)}</td>
              <td>{r.actor}</td>
              <td>{r.source}</td>
              <td>
                <code>{r.action}</code>
              </td>
              <td>{r.status}</td>
              <td>{r.decision}</td>
              <td>{r.reason}</td>
            </tr>
          ))}
          {records.data && items.length === 0 && <EmptyRow columns={8}>No records match.</EmptyRow>}
        </tbody>
      </table>
    </section>
  );
}

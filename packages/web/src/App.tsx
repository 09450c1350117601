import { useEffect, useMemo, useState } from 'react';
import { api as defaultApi, ApiError, type ApiClient } from './api/client.js';
import { EventStream } from './api/events.js';
import type { Session } from './api/types.js';
import { ActivityPanel } from './components/ActivityPanel.js';
import { ErrorNote, Loading } from './components/ui.js';
import { AppProvider, useActivity, useApp, useStreamStatus, type AppContextValue } from './live.js';
import { DashboardPage } from './pages/DashboardPage.js';
import { HostsPage } from './pages/HostsPage.js';
import { ImagesPage } from './pages/ImagesPage.js';
import { PackagesPage } from './pages/PackagesPage.js';
import { LabsPage } from './pages/LabsPage.js';
import { LoginPage } from './pages/LoginPage.js';
import { OperationsPage } from './pages/OperationsPage.js';
import { PolicyPage } from './pages/PolicyPage.js';
import { NetworksPage } from './pages/NetworksPage.js';
import { FeedsPage } from './pages/FeedsPage.js';
import { StoragePage } from './pages/StoragePage.js';
import { VmListPage } from './pages/VmListPage.js';
import { VmPage } from './pages/VmPage.js';
import { AuditPage, RolesPage, TokensPage, UsersPage } from './pages/AccessPages.js';
import { Link, match, navigate, useLocation } from './router.js';

type SessionState = { kind: 'checking' } | { kind: 'out'; reason?: string } | { kind: 'in'; session: Session } | { kind: 'unreachable'; error: unknown };

export function App({ api = defaultApi }: { api?: ApiClient }) {
  const [state, setState] = useState<SessionState>({ kind: 'checking' });
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    let cancelled = false;
    api.session().then(
      (session) => !cancelled && setState({ kind: 'in', session }),
      (error: unknown) => {
        if (cancelled) return;
        if (error instanceof ApiError && error.status === 401) setState({ kind: 'out' });
        else setState({ kind: 'unreachable', error });
      },
    );
    return () => {
      cancelled = true;
    };
  }, [api, attempt]);

  useEffect(() => {
    api.onUnauthenticated = () => setState((s) => (s.kind === 'in' ? { kind: 'out', reason: 'Your session has ended. Log in again.' } : s));
    return () => {
      api.onUnauthenticated = undefined;
    };
  }, [api]);

  if (state.kind === 'checking') {
    return (
      <main className="center-page">
        <Loading what="the console" />
      </main>
    );
  }
  if (state.kind === 'unreachable') {
    return (
      <main className="center-page">
        <h1>Drover</h1>
        <ErrorNote error={state.error} />
        <button type="button" onClick={() => setAttempt((n) => n + 1)}>
          Try again
        </button>
      </main>
    );
  }
  if (state.kind === 'out') {
    return (
      <LoginPage
        api={api}
        notice={state.reason}
        onLogin={(session) => {
          setState({ kind: 'in', session });
          const next = new URLSearchParams(location.search).get('next');
          if (location.pathname === '/login') navigate(next && next.startsWith('/') && !next.startsWith('//') ? next : '/', { replace: true });
        }}
      />
    );
  }
  return <Console api={api} session={state.session} onLogout={() => setState({ kind: 'out', reason: 'You logged out.' })} />;
}

function Console({ api, session, onLogout }: { api: ApiClient; session: Session; onLogout: () => void }) {
  const stream = useMemo(
    () =>
      new EventStream({
        url: api.url('/events'),
        checkSession: () => api.session().then(() => true, (error: unknown) => !(error instanceof ApiError && error.status === 401)),
        onSessionEnded: () => api.onUnauthenticated?.(),
      }),
    [api],
  );
  useEffect(() => {
    stream.start();
    return () => stream.stop();
  }, [stream]);
  const { activities, track, dismiss } = useActivity(stream);
  const value: AppContextValue = useMemo(
    () => ({
      api,
      stream,
      session,
      track,
      logout: async () => {
        await api.logout().catch(() => undefined);
        stream.stop();
        onLogout();
      },
    }),
    [api, stream, session, track, onLogout],
  );
  return (
    <AppProvider value={value}>
      <Shell />
      <ActivityPanel activities={activities} onDismiss={dismiss} />
    </AppProvider>
  );
}

const navItems = [
  { to: '/', label: 'Dashboard', active: (p: string) => p === '/' },
  { to: '/vms', label: 'VMs', active: (p: string) => p.startsWith('/vms') },
  { to: '/images', label: 'Images', active: (p: string) => p.startsWith('/images') },
  { to: '/packages', label: 'Packages', active: (p: string) => p.startsWith('/packages') },
  { to: '/feeds', label: 'Feeds', active: (p: string) => p.startsWith('/feeds') },
  { to: '/hosts', label: 'Hosts', active: (p: string) => p.startsWith('/hosts') },
  { to: '/storage', label: 'Storage', active: (p: string) => p.startsWith('/storage') },
  { to: '/networks', label: 'Networks', active: (p: string) => p.startsWith('/networks') },
  { to: '/labs', label: 'Labs', active: (p: string) => p.startsWith('/labs') },
  { to: '/policy', label: 'Policy', active: (p: string) => p.startsWith('/policy') },
  { to: '/operations', label: 'Operations', active: (p: string) => p.startsWith('/operations') },
  { to: '/users', label: 'Access', active: (p: string) => ['/users', '/roles', '/tokens', '/audit'].includes(p) },
];

function Shell() {
  const { path } = useLocation();
  useEffect(() => {
    if (path === '/login') navigate('/', { replace: true });
  }, [path]);
  return (
    <>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <Link to="/" className="brand">
          Drover
        </Link>
        <nav aria-label="Main" className="mainnav">
          <ul>
            {navItems.map((item) => (
              <li key={item.to}>
                <Link to={item.to} aria-current={item.active(path) ? 'page' : undefined}>
                  {item.label}
                </Link>
              </li>
            ))}
          </ul>
        </nav>
        <UserBox />
      </header>
      <main id="main" tabIndex={-1}>
        <Routes path={path} />
      </main>
    </>
  );
}

function UserBox() {
  const { session, logout } = useApp();
  const status = useStreamStatus();
  const statusText = status === 'live' ? 'Live' : status === 'closed' ? 'Offline' : status === 'connecting' ? 'Connecting…' : 'Reconnecting…';
  return (
    <div className="userbox">
      <span className={`stream-status stream-${status}`} role="status" title="Live updates from the manager's event stream">
        <span className="dot" aria-hidden="true" />
        {statusText}
      </span>
      <span className="actor">{session.actor}</span>
      <button type="button" onClick={() => void logout()}>
        Log out
      </button>
    </div>
  );
}

function Routes({ path }: { path: string }) {
  let params: Record<string, string> | undefined;
  if (path === '/' || path === '/login') return <DashboardPage />;
  if (path === '/vms') return <VmListPage />;
  if ((params = match('/vms/:id', path))) return <VmPage key={params.id} id={params.id!} />;
  if (path === '/images') return <ImagesPage />;
  if (path === '/packages') return <PackagesPage />;
  if (path === '/feeds') return <FeedsPage />;
  if (path === '/hosts') return <HostsPage />;
  if (path === '/storage') return <StoragePage />;
  if (path === '/operations') return <OperationsPage />;
  if (path === '/policy') return <PolicyPage />;
  if (path === '/networks') return <NetworksPage />;
  if (path === '/labs') return <LabsPage />;
  if (path === '/users') return <UsersPage />;
  if (path === '/roles') return <RolesPage />;
  if (path === '/tokens') return <TokensPage />;
  if (path === '/audit') return <AuditPage />;
  return (
    <section>
      <h1>Page not found</h1>
      <p>
        Nothing lives at <code>{path}</code>. <Link to="/">Go to the dashboard</Link>.
      </p>
    </section>
  );
}

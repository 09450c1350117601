import { useEffect, useId, useState } from 'react';
import type { ApiClient } from '../api/client.js';
import type { Session } from '../api/types.js';
import { ErrorNote } from '../components/ui.js';

/** The admin token buys a session cookie (HttpOnly); the token itself is never stored by the page. */
export function LoginPage({ api, notice, onLogin }: { api: ApiClient; notice?: string | undefined; onLogin: (session: Session) => void }) {
  const [mode, setMode] = useState<'token' | 'password'>('token');
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const userId = useId();
  const passwordId = useId();
  const [token, setToken] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const tokenId = useId();
  const helpId = useId();

  useEffect(() => {
    document.title = 'Log in · Drover';
  }, []);

  return (
    <main className="center-page" id="main">
      <form
        className="login card"
        onSubmit={(event) => {
          event.preventDefault();
          setBusy(true);
          setError(undefined);
          (mode === 'token' ? api.login(token.trim()) : api.loginWithPassword(username.trim(), password)).then(
            (session) => {
              setToken('');
              setPassword('');
              onLogin(session);
            },
            (cause: unknown) => {
              setBusy(false);
              setError(cause);
            },
          );
        }}
      >
        <h1>Drover</h1>
        <p className="muted">Virtualization control center</p>
        {notice && !error && (
          <p className="notice" role="status">
            {notice}
          </p>
        )}
        {mode === 'token' ? (
          <>
            <label htmlFor={tokenId}>Admin token</label>
            <input
              id={tokenId}
              name="token"
              type="password"
              autoComplete="current-password"
              required
              autoFocus
              value={token}
              onChange={(e) => setToken(e.target.value)}
              aria-describedby={helpId}
              aria-invalid={error ? true : undefined}
            />
            <p id={helpId} className="help">
              The manager's <code>adminToken</code>, the file <code>admin-token</code> in its data directory, or an API token.
            </p>
          </>
        ) : (
          <>
            <label htmlFor={userId}>User name</label>
            <input id={userId} name="username" autoComplete="username" required autoFocus value={username} onChange={(e) => setUsername(e.target.value)} aria-invalid={error ? true : undefined} />
            <label htmlFor={passwordId}>Password</label>
            <input id={passwordId} name="password" type="password" autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.target.value)} aria-invalid={error ? true : undefined} />
          </>
        )}
        <ErrorNote error={error} />
        <button type="button" className="link-button" onClick={() => { setMode(mode === 'token' ? 'password' : 'token'); setError(undefined); }}>
          {mode === 'token' ? 'Use a user name and password instead' : 'Use a token instead'}
        </button>
        <button type="submit" className="primary" disabled={busy || (mode === 'token' ? !token.trim() : !username.trim() || !password)}>
          {busy ? 'Logging in…' : 'Log in'}
        </button>
      </form>
    </main>
  );
}

import { useEffect, useId, useState } from 'react';
import type { ApiClient } from '../api/client.js';
import type { Session } from '../api/types.js';
import { ErrorNote } from '../components/ui.js';

/** The admin token buys a session cookie (HttpOnly); the token itself is never stored by the page. */
export function LoginPage({ api, notice, onLogin }: { api: ApiClient; notice?: string | undefined; onLogin: (session: Session) => void }) {
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
          api.login(token.trim()).then(
            (session) => {
              setToken('');
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
          The manager's <code>adminToken</code>, or the file <code>admin-token</code> in its data directory.
        </p>
        <ErrorNote error={error} />
        <button type="submit" className="primary" disabled={busy || !token.trim()}>
          {busy ? 'Logging in…' : 'Log in'}
        </button>
      </form>
    </main>
  );
}

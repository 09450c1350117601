import type { RunningManager } from '../manager.js';

export interface AuthAnswer {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

/** Who makes a call: an API token (bearer), a session cookie (with the CSRF header), or nobody. */
export type CallAuth = { token?: string; cookie?: string } | undefined;

/**
 * A JSON call to the manager that `manager()` returns at call time, as `auth`.
 * A JSON answer is parsed; any other answer's text is in `body.text`.
 */
export function authCall(manager: () => RunningManager): (auth: CallAuth, method: string, route: string, body?: unknown) => Promise<AuthAnswer> {
  return async (auth, method, route, body) => {
    const headers: Record<string, string> = {};
    if (auth?.token) headers['authorization'] = `Bearer ${auth.token}`;
    if (auth?.cookie) Object.assign(headers, { cookie: auth.cookie, 'x-drover-csrf': '1' });
    if (body !== undefined) headers['content-type'] = 'application/json';
    const response = await fetch(`${manager().url}${route}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    const text = await response.text();
    return { status: response.status, headers: response.headers, body: text && (response.headers.get('content-type') ?? '').includes('application/json') ? JSON.parse(text) : { text } };
  };
}

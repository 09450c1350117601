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

/** A JSON call to `m` with its admin token: a JSON answer parsed, any other answer's text as it is. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests read the API's answers as loose JSON
export async function adminCall<T = any>(m: RunningManager, method: string, route: string, body?: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(`${m.url}${route}`, { method, headers: { authorization: `Bearer ${m.adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await response.text();
  return { status: response.status, body: (text && (response.headers.get('content-type') ?? '').includes('json') ? JSON.parse(text) : text) as T };
}

import { randomUUID } from 'node:crypto';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DroverError, errors, isErrorCode, type ErrorCode } from '@drover/core';

/**
 * HTTP client of the manager's public REST API (`/api/v1`). It is the only place
 * where the CLI touches the network: every request has a timeout, every failure
 * becomes a `DroverError` carrying the server's code and message.
 */

export interface ClientOptions {
  /** Base URL of the manager, e.g. `https://manager.example:8300`. */
  url: string;
  token?: string | undefined;
  /** Per request, headers and body included. Default 30 s. */
  timeoutMs?: number | undefined;
  /** Pause before the single retry after a network failure. Default 300 ms. */
  retryDelayMs?: number | undefined;
  /** Aborts every request (Ctrl-C, tests). */
  signal?: AbortSignal | undefined;
  fetch?: typeof fetch | undefined;
  newIdempotencyKey?: (() => string) | undefined;
}

export type QueryValue = string | number | boolean | undefined;

export interface RequestOptions {
  query?: Record<string, QueryValue> | undefined;
  body?: unknown;
  headers?: Record<string, string> | undefined;
  /** Sends `Idempotency-Key`; a retry after a network failure reuses it. */
  idempotent?: boolean | undefined;
  /** `text` answers a Buffer (for the serial log); the default parses JSON. */
  accept?: 'json' | 'text' | undefined;
}

export interface ApiResponse<T> {
  status: number;
  headers: Headers;
  body: T;
}

export const API_PREFIX = '/api/v1';
const defaultTimeoutMs = 30_000;
const userAgent = 'drover-cli/0.1.0';

/** Path segment escaping, so a name can never change the route it is put in. */
export function seg(value: string): string {
  return encodeURIComponent(value);
}

export class DroverClient {
  readonly baseUrl: string;
  private readonly options: ClientOptions;

  constructor(options: ClientOptions) {
    this.baseUrl = normalizeBaseUrl(options.url);
    this.options = options;
  }

  async get<T>(path: string, query?: Record<string, QueryValue>): Promise<T> {
    return (await this.request<T>('GET', path, { query })).body;
  }

  /** Every POST of this API creates something or starts an action: each carries a fresh idempotency key. */
  async post<T>(path: string, body: unknown = {}, headers?: Record<string, string>): Promise<T> {
    return (await this.request<T>('POST', path, { body, headers, idempotent: true })).body;
  }

  /** Replaces a setting (PUT is idempotent by itself: no key). */
  async put<T>(path: string, body: unknown, headers?: Record<string, string>): Promise<T> {
    return (await this.request<T>('PUT', path, { body, headers })).body;
  }

  async patch<T>(path: string, body: unknown, headers?: Record<string, string>): Promise<T> {
    return (await this.request<T>('PATCH', path, { body, headers })).body;
  }

  /** Deletes answer an operation; the key makes a retried delete start it only once. */
  async delete<T>(path: string): Promise<T> {
    return (await this.request<T>('DELETE', path, { idempotent: true })).body;
  }

  async getText(path: string, query?: Record<string, QueryValue>): Promise<ApiResponse<Buffer>> {
    return this.request<Buffer>('GET', path, { query, accept: 'text' });
  }

  /**
   * Downloads a body as a stream into `destination` (never held in memory). No
   * overall timeout: a volume may take long; Ctrl-C (the client's signal) stops it.
   */
  async download(path: string, destination: NodeJS.WritableStream): Promise<number> {
    const where = `GET ${API_PREFIX}${path}`;
    const response = await this.streamingFetch('GET', path, where, {});
    let bytes = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        bytes += chunk.length;
        done(null, chunk);
      },
    });
    await pipeline(Readable.fromWeb(response.body as never), counter, destination);
    return bytes;
  }

  /** Uploads `source` (of `size` bytes) as application/octet-stream and answers the parsed JSON (PUT unless `method` says otherwise). */
  async upload<T>(path: string, source: Readable, size: number, method: 'PUT' | 'POST' = 'PUT'): Promise<T> {
    const where = `${method} ${API_PREFIX}${path}`;
    const response = await this.streamingFetch(method, path, where, { 'content-type': 'application/octet-stream', 'content-length': String(size) }, source);
    return (await response.json()) as T;
  }

  private async streamingFetch(method: string, path: string, where: string, extra: Record<string, string>, body?: Readable): Promise<Response> {
    const headers: Record<string, string> = { accept: 'application/octet-stream, application/json', 'user-agent': userAgent, ...extra };
    if (this.options.token) headers.authorization = `Bearer ${this.options.token}`;
    const doFetch = this.options.fetch ?? fetch;
    let response: Response;
    try {
      response = await doFetch(this.urlOf(path), {
        method,
        headers,
        redirect: 'manual',
        ...(this.options.signal ? { signal: this.options.signal } : {}),
        ...(body ? { body: Readable.toWeb(body) as never, duplex: 'half' } : {}),
      } as RequestInit);
    } catch (error) {
      const mapped = this.transportError(error, where, 0, false);
      throw mapped instanceof NetworkFailure ? mapped.error : mapped;
    }
    if (response.status >= 300) {
      const text = await response.text();
      if (response.status < 400) throw errors.invalid(`${where}: the manager at ${this.baseUrl} redirects to ${response.headers.get('location') ?? '(no location)'}; use that URL instead`);
      throw errorFromResponse(response.status, response.statusText, response.headers.get('content-type'), text, where);
    }
    return response;
  }

  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<ApiResponse<T>> {
    const url = this.urlOf(path, options.query);
    const headers: Record<string, string> = {
      accept: options.accept === 'text' ? 'text/plain, application/json' : 'application/json',
      'user-agent': userAgent,
      ...options.headers,
    };
    if (this.options.token) headers.authorization = `Bearer ${this.options.token}`;
    if (options.idempotent) headers['idempotency-key'] = (this.options.newIdempotencyKey ?? randomUUID)();
    let body: string | undefined;
    if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers['content-type'] = 'application/json';
    }
    const where = `${method} ${API_PREFIX}${path}`;
    try {
      return await this.attempt<T>(method, url, headers, body, where, options.accept ?? 'json');
    } catch (error) {
      // One retry, with the same idempotency key, when the request may never have
      // arrived: the server applies a keyed request once however often it is sent.
      if (!(error instanceof NetworkFailure)) throw error;
      await sleep(this.options.retryDelayMs ?? 300, this.options.signal);
      try {
        return await this.attempt<T>(method, url, headers, body, where, options.accept ?? 'json');
      } catch (again) {
        if (again instanceof NetworkFailure) throw again.error;
        throw again;
      }
    }
  }

  private urlOf(path: string, query?: Record<string, QueryValue>): string {
    const url = new URL(`${this.baseUrl}${API_PREFIX}${path}`);
    for (const [key, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== '') url.searchParams.set(key, String(value));
    }
    return url.toString();
  }

  private async attempt<T>(
    method: string,
    url: string,
    headers: Record<string, string>,
    body: string | undefined,
    where: string,
    accept: 'json' | 'text',
  ): Promise<ApiResponse<T>> {
    const timeoutMs = this.options.timeoutMs ?? defaultTimeoutMs;
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = this.options.signal ? AbortSignal.any([timeout, this.options.signal]) : timeout;
    const doFetch = this.options.fetch ?? fetch;
    let response: Response;
    let raw: Buffer;
    try {
      response = await doFetch(url, { method, headers, body, signal, redirect: 'manual' });
      raw = Buffer.from(await response.arrayBuffer());
    } catch (error) {
      throw this.transportError(error, where, timeoutMs, timeout.aborted);
    }
    if (response.status >= 300 && response.status < 400) {
      // Not followed: a redirect would carry the token to wherever it points.
      const location = response.headers.get('location') ?? '(no location)';
      throw errors.invalid(`${where}: the manager at ${this.baseUrl} redirects to ${location}; use that URL instead`, { location });
    }
    if (response.status >= 400) throw errorFromResponse(response.status, response.statusText, response.headers.get('content-type'), raw.toString('utf8'), where);
    if (accept === 'text') return { status: response.status, headers: response.headers, body: raw as T };
    if (raw.length === 0) return { status: response.status, headers: response.headers, body: undefined as T };
    try {
      return { status: response.status, headers: response.headers, body: JSON.parse(raw.toString('utf8')) as T };
    } catch {
      throw errors.internal(`${where}: the manager at ${this.baseUrl} answered HTTP ${response.status} with a body that is not JSON`);
    }
  }

  private transportError(error: unknown, where: string, timeoutMs: number, timedOut: boolean): unknown {
    if (timedOut) {
      return errors.timeout(`${where}: the manager at ${this.baseUrl} did not answer within ${formatMs(timeoutMs)}`, { url: this.baseUrl, timeoutMs });
    }
    if (this.options.signal?.aborted) return new DroverError('unavailable', `${where}: interrupted`, { cause: error });
    if (error instanceof TypeError) {
      const reason = describeCause(error);
      if (reason === 'bad port') {
        // fetch refuses some ports outright (the WHATWG "bad ports": 6000, 6667, ...).
        return errors.invalid(`Cannot use the manager URL ${this.baseUrl}: fetch refuses to connect to port ${new URL(this.baseUrl).port} (a blocked port); run the manager on another port`);
      }
      return new NetworkFailure(errors.unavailable(`Cannot reach the manager at ${this.baseUrl}: ${reason}`, { url: this.baseUrl }, error));
    }
    return error;
  }
}

/** Marks a failure before any answer arrived, the only kind that is retried. */
class NetworkFailure extends Error {
  constructor(readonly error: DroverError) {
    super(error.message);
  }
}

function describeCause(error: TypeError): string {
  const cause = error.cause as { code?: unknown; message?: unknown; errors?: unknown } | undefined;
  if (cause && typeof cause.message === 'string' && cause.message) return cause.message;
  if (cause && typeof cause.code === 'string') return cause.code;
  // AggregateError (IPv4 and IPv6 both refused) has an empty message.
  if (cause && Array.isArray(cause.errors) && cause.errors.length > 0) {
    const first = cause.errors[0] as { message?: unknown; code?: unknown };
    if (typeof first.message === 'string') return first.message;
  }
  return error.message;
}

export function normalizeBaseUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw errors.invalid(`Invalid manager URL "${text}": expected http(s)://HOST[:PORT]`, { url: text });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw errors.invalid(`Invalid manager URL "${text}": the scheme must be http or https`, { url: text });
  }
  if (url.search || url.hash || url.username || url.password) {
    throw errors.invalid(`Invalid manager URL "${text}": give no query, fragment or credentials (use --token)`, { url: text });
  }
  // Accept the URL with or without the API prefix: people paste either.
  const path = url.pathname.replace(/\/+$/, '').replace(/\/api\/v1$/, '');
  return `${url.origin}${path}`;
}

/** The error code for an HTTP status whose body carries no code this CLI knows. */
export function codeOfStatus(status: number): ErrorCode {
  switch (status) {
    case 400:
      return 'invalid';
    case 401:
      return 'unauthenticated';
    case 403:
      return 'forbidden';
    case 404:
    case 410:
      return 'not_found';
    case 408:
      return 'timeout';
    case 409:
      return 'conflict';
    case 412:
    case 428:
      return 'precondition_failed';
    case 413:
      return 'too_large';
    case 422:
      return 'unprocessable';
    case 429:
      return 'rate_limited';
    case 502:
    case 503:
      return 'unavailable';
    case 504:
      return 'timeout';
    default:
      return status >= 500 ? 'internal' : 'invalid';
  }
}

/** Maps an error answer, `{error:{code,message,details}}` or anything a proxy may send, to a DroverError. */
export function errorFromResponse(status: number, statusText: string, contentType: string | null, text: string, where: string): DroverError {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const body = isRecord(parsed) && isRecord(parsed.error) ? parsed.error : undefined;
  if (body && typeof body.message === 'string' && body.message) {
    const details: Record<string, unknown> = isRecord(body.details) ? { ...body.details } : {};
    if (isErrorCode(body.code)) return new DroverError(body.code, body.message, { details });
    if (typeof body.code === 'string') details.serverCode = body.code;
    return new DroverError(codeOfStatus(status), body.message, { details });
  }
  const snippet = contentType?.startsWith('text/plain') ? text.trim().split('\n')[0]?.slice(0, 200) : undefined;
  const message = `${where}: HTTP ${status}${statusText ? ` ${statusText}` : ''}${snippet ? `: ${snippet}` : ''}`;
  return new DroverError(codeOfStatus(status), message, { details: { status } });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

import type {
  Host, Image, ImageImport, JoinTokenAnswer, ListParams, MigrateRequest, Operation, Page, PoolInfo, Session, SnapshotInfo, Ticket, Vm, VmCreate, VmDiskAdd, VmDiskInfo, VmEdit, VmNicAdd,
  VmNicInfo, VolumeInfo,
} from './types.js';

/**
 * The console's only way to the manager: the public REST API under /api/v1.
 * The session cookie (HttpOnly, SameSite=Strict) authenticates every call;
 * anything but GET/HEAD carries `X-Drover-CSRF: 1`, which the manager demands
 * of cookie-authenticated changes (a cross-site form cannot set a header).
 */

export const csrfHeader = 'X-Drover-CSRF';

/** An error answer of the manager, `{error:{code,message,details}}`, or a failure to reach it. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** A mistake in a form, found before anything is sent. */
export class InputError extends Error {
  override name = 'InputError';
}

/** A plain-words headline for an error code; the server's own message follows it. */
export function errorTitle(error: unknown): string {
  if (error instanceof InputError) return 'Please correct the form';
  if (!(error instanceof ApiError)) return 'Something went wrong';
  switch (error.code) {
    case 'invalid': return 'The request was refused as invalid';
    case 'unauthenticated': return 'You are not logged in';
    case 'forbidden': return 'Not allowed';
    case 'not_found': return 'Not found';
    case 'conflict': return 'Not possible right now';
    case 'precondition_failed': return 'Changed elsewhere in the meantime';
    case 'too_large': return 'Too large';
    case 'unavailable': return 'Temporarily unavailable; try again';
    case 'timeout': return 'The manager timed out';
    case 'network': return 'Cannot reach the manager';
    case 'internal': return 'The manager failed';
    default: return `Error (${error.code})`;
  }
}

export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

export interface RequestOptions {
  body?: unknown;
  query?: Record<string, string | number | boolean | undefined>;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export function queryString(query: RequestOptions['query']): string {
  if (!query) return '';
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) if (value !== undefined && value !== '') params.set(key, String(value));
  const text = params.toString();
  return text ? `?${text}` : '';
}

/** Turns a non-2xx answer into an ApiError, keeping the server's code and message. */
export async function errorFromResponse(response: Response): Promise<ApiError> {
  const text = await response.text().catch(() => '');
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown; details?: unknown } };
    if (body.error && typeof body.error.message === 'string') {
      return new ApiError(response.status, typeof body.error.code === 'string' ? body.error.code : 'error', body.error.message, (body.error.details ?? {}) as Record<string, unknown>);
    }
  } catch {
    /* not JSON: fall through */
  }
  return new ApiError(response.status, statusCode(response.status), text.trim().slice(0, 300) || `The manager answered ${response.status} ${response.statusText}`.trim());
}

function statusCode(status: number): string {
  if (status === 401) return 'unauthenticated';
  if (status === 403) return 'forbidden';
  if (status === 404) return 'not_found';
  if (status === 409) return 'conflict';
  if (status === 503) return 'unavailable';
  return status >= 500 ? 'internal' : 'invalid';
}

export class ApiClient {
  /** Called with every 401 from a route other than the login itself: the session ended. */
  onUnauthenticated: (() => void) | undefined;

  constructor(
    private readonly base = '',
    private readonly fetcher: FetchLike = (input, init) => globalThis.fetch(input, init),
  ) {}

  url(path: string, query?: RequestOptions['query']): string {
    return `${this.base}/api/v1${path}${queryString(query)}`;
  }

  async raw(method: string, path: string, options: RequestOptions & { rawBody?: BodyInit; contentType?: string } = {}): Promise<Response> {
    const headers: Record<string, string> = { accept: 'application/json', ...options.headers };
    if (method !== 'GET' && method !== 'HEAD') headers[csrfHeader] = '1';
    let body: BodyInit | undefined;
    if (options.rawBody !== undefined) {
      body = options.rawBody;
      headers['content-type'] = options.contentType ?? 'application/octet-stream';
    } else if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers['content-type'] = 'application/json';
    }
    let response: Response;
    try {
      response = await this.fetcher(this.url(path, options.query), {
        method,
        headers,
        credentials: 'same-origin',
        ...(body === undefined ? {} : { body }),
        ...(options.signal ? { signal: options.signal } : {}),
      });
    } catch (cause) {
      if ((cause as Error)?.name === 'AbortError') throw cause;
      throw new ApiError(0, 'network', `The manager did not answer (${errorMessage(cause)})`);
    }
    if (!response.ok) {
      const error = await errorFromResponse(response);
      if (response.status === 401 && !path.startsWith('/session')) this.onUnauthenticated?.();
      throw error;
    }
    return response;
  }

  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const response = await this.raw(method, path, options);
    if (response.status === 204) return undefined as T;
    const text = await response.text();
    if (!text) return undefined as T;
    return (response.headers.get('content-type') ?? '').includes('json') ? (JSON.parse(text) as T) : (text as T);
  }

  // ------------------------------------------------------------------ session
  login(token: string): Promise<Session> {
    return this.request('POST', '/sessions', { body: { token } });
  }
  session(): Promise<Session> {
    return this.request('GET', '/session');
  }
  logout(): Promise<void> {
    return this.request('DELETE', '/session');
  }
  /** A single-use ticket (60 s) for one WebSocket. */
  ticket(): Promise<Ticket> {
    return this.request('POST', '/tickets', { body: {} });
  }
  /** ws(s):// URL of a stream route, with a fresh ticket. */
  async socketUrl(path: string): Promise<string> {
    const { ticket } = await this.ticket();
    const origin = this.base || globalThis.location.origin;
    return `${origin.replace(/^http/, 'ws')}/api/v1${path}?ticket=${encodeURIComponent(ticket)}`;
  }

  // ------------------------------------------------------------------ hosts
  hosts(params: ListParams = {}): Promise<Page<Host>> {
    return this.request('GET', '/hosts', { query: { ...params } });
  }
  removeHost(id: string): Promise<void> {
    return this.request('DELETE', `/hosts/${enc(id)}`);
  }
  rotateCertificate(id: string): Promise<Operation> {
    return this.request('POST', `/hosts/${enc(id)}/rotate-certificate`, { body: {} });
  }
  joinToken(ttlSeconds?: number): Promise<JoinTokenAnswer> {
    return this.request('POST', '/hosts/join-tokens', { body: ttlSeconds === undefined ? {} : { ttlSeconds } });
  }

  // ------------------------------------------------------------------ images
  images(params: ListParams = {}): Promise<Page<Image>> {
    return this.request('GET', '/images', { query: { ...params } });
  }
  /** Starts an `image.import` operation: downloaded or copied, inspected, stored. */
  importImage(body: ImageImport): Promise<Operation> {
    return this.request('POST', '/images', { body, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  /** Starts an `image.delete` operation; 409 for an appliance or an image a VM uses. */
  deleteImage(id: string): Promise<Operation> {
    return this.request('DELETE', `/images/${enc(id)}`, { headers: { 'Idempotency-Key': idempotencyKey() } });
  }

  // ------------------------------------------------------------------ VMs
  vms(params: ListParams = {}): Promise<Page<Vm>> {
    return this.request('GET', '/vms', { query: { ...params } });
  }
  vm(id: string): Promise<Vm> {
    return this.request('GET', `/vms/${enc(id)}`);
  }
  createVm(body: VmCreate): Promise<Vm> {
    return this.request('POST', '/vms', { body, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  editVm(id: string, body: VmEdit, rev?: number): Promise<Vm> {
    return this.request('PATCH', `/vms/${enc(id)}`, { body, headers: rev === undefined ? {} : { 'If-Match': String(rev) } });
  }
  deleteVm(id: string): Promise<Operation> {
    return this.request('DELETE', `/vms/${enc(id)}`, { headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  vmAction(id: string, action: VmAction, body: Record<string, unknown> = {}): Promise<Operation> {
    return this.request('POST', `/vms/${enc(id)}/${action}`, { body, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  snapshots(id: string): Promise<SnapshotInfo[]> {
    return this.request('GET', `/vms/${enc(id)}/snapshots`);
  }
  createSnapshot(id: string, name: string): Promise<Operation> {
    return this.request('POST', `/vms/${enc(id)}/snapshots`, { body: { name }, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  revertSnapshot(id: string, name: string): Promise<Operation> {
    return this.request('POST', `/vms/${enc(id)}/snapshots/${enc(name)}/revert`, { body: {}, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  deleteSnapshot(id: string, name: string): Promise<Operation> {
    return this.request('DELETE', `/vms/${enc(id)}/snapshots/${enc(name)}`, { headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  /** The VM's disks as its host has them, in the guest's order (`[]` before its first start). */
  vmDisks(id: string): Promise<VmDiskInfo[]> {
    return this.request('GET', `/vms/${enc(id)}/disks`);
  }
  addVmDisk(id: string, body: VmDiskAdd): Promise<Operation> {
    return this.request('POST', `/vms/${enc(id)}/disks`, { body, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  /** `disk`: its index or its volume name. */
  removeVmDisk(id: string, disk: string): Promise<Operation> {
    return this.request('DELETE', `/vms/${enc(id)}/disks/${enc(disk)}`, { headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  vmNics(id: string): Promise<VmNicInfo[]> {
    return this.request('GET', `/vms/${enc(id)}/nics`);
  }
  addVmNic(id: string, body: VmNicAdd): Promise<Operation> {
    return this.request('POST', `/vms/${enc(id)}/nics`, { body, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  /** `nic`: its index or its MAC. */
  removeVmNic(id: string, nic: string): Promise<Operation> {
    return this.request('DELETE', `/vms/${enc(id)}/nics/${enc(nic)}`, { headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  /** Live migration (or a cold move of a stopped/saved VM) to another host: operation `vm.migrate`. */
  migrateVm(id: string, body: MigrateRequest): Promise<Operation> {
    return this.request('POST', `/vms/${enc(id)}/migrate`, { body, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  /** The serial log from `offset`; `next` is the offset to ask for next time. */
  async serialLog(id: string, offset = 0): Promise<{ text: string; next: number }> {
    const response = await this.raw('GET', `/vms/${enc(id)}/console/serial/log`, { query: { offset }, headers: { accept: 'text/plain' } });
    const text = await response.text();
    return { text, next: Number(response.headers.get('x-log-size') ?? offset) };
  }

  // ------------------------------------------------------------------ storage
  pools(host: string): Promise<PoolInfo[]> {
    return this.request('GET', `/hosts/${enc(host)}/pools`);
  }
  createPool(host: string, body: { name: string; path: string; shared?: boolean }): Promise<PoolInfo> {
    return this.request('POST', `/hosts/${enc(host)}/pools`, { body });
  }
  deletePool(host: string, pool: string): Promise<void> {
    return this.request('DELETE', `/hosts/${enc(host)}/pools/${enc(pool)}`);
  }
  volumes(host: string, pool: string): Promise<VolumeInfo[]> {
    return this.request('GET', `/hosts/${enc(host)}/pools/${enc(pool)}/volumes`);
  }
  createVolume(host: string, pool: string, body: { name: string; sizeBytes: number } | { name: string; cloneOf: string; sizeBytes?: number }): Promise<VolumeInfo> {
    return this.request('POST', `/hosts/${enc(host)}/pools/${enc(pool)}/volumes`, { body });
  }
  resizeVolume(host: string, pool: string, volume: string, sizeBytes: number): Promise<VolumeInfo> {
    return this.request('POST', `/hosts/${enc(host)}/pools/${enc(pool)}/volumes/${enc(volume)}/resize`, { body: { sizeBytes } });
  }
  deleteVolume(host: string, pool: string, volume: string): Promise<void> {
    return this.request('DELETE', `/hosts/${enc(host)}/pools/${enc(pool)}/volumes/${enc(volume)}`);
  }
  volumeContentUrl(host: string, pool: string, volume: string): string {
    return this.url(`/hosts/${enc(host)}/pools/${enc(pool)}/volumes/${enc(volume)}/content`);
  }

  // ------------------------------------------------------------------ operations
  operations(params: ListParams = {}): Promise<Page<Operation>> {
    return this.request('GET', '/operations', { query: { ...params } });
  }
  operation(id: string): Promise<Operation> {
    return this.request('GET', `/operations/${enc(id)}`);
  }
  cancelOperation(id: string): Promise<Operation> {
    return this.request('POST', `/operations/${enc(id)}/cancel`, { body: {} });
  }
}

export type VmAction = 'start' | 'stop' | 'force-off' | 'pause' | 'resume' | 'reset' | 'save' | 'restore';

function enc(segment: string): string {
  return encodeURIComponent(segment);
}

/** A fresh Idempotency-Key, so a retried click never acts twice. */
export function idempotencyKey(): string {
  return `web-${globalThis.crypto.randomUUID()}`;
}

/** Fetches every page of a list, up to `max` items. */
export async function listAll<T>(fetchPage: (params: ListParams) => Promise<Page<T>>, params: ListParams = {}, max = 5000): Promise<{ items: T[]; truncated: boolean }> {
  const items: T[] = [];
  let cursor: string | undefined;
  do {
    const page = await fetchPage({ ...params, limit: 1000, ...(cursor ? { cursor } : {}) });
    items.push(...page.items);
    cursor = page.next;
  } while (cursor && items.length < max);
  return { items, truncated: cursor !== undefined };
}

export const api = new ApiClient();

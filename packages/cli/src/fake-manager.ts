import { randomUUID } from 'node:crypto';
import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createCli } from './program.js';
import type { Host, Image, Operation, OperationState, Snapshot, Vm } from './types.js';

/**
 * A test double of the manager's public API for the CLI's unit tests: a real HTTP
 * server on 127.0.0.1 that plays the routes the CLI uses, with an in-memory model
 * and scripted operations. It is never what the CLI runs against outside tests.
 */

export interface RecordedRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  body: unknown;
}

export interface Reply {
  status: number;
  body?: unknown;
  text?: string;
  headers?: Record<string, string>;
}

type Handler = (request: RecordedRequest, match: RegExpExecArray) => Reply | Promise<Reply>;

/** How an operation goes on: one step per GET of it. */
export type OperationScript = Array<Partial<Operation> & { state: OperationState }>;

export const defaultScript: OperationScript = [
  { state: 'running', phase: 'working', progress: 50 },
  { state: 'done', phase: 'finished', progress: 100 },
];

const now = () => new Date().toISOString();

export function makeVm(name: string, fields: Partial<Vm> = {}): Vm {
  return {
    id: randomUUID(),
    name,
    state: 'stopped',
    hostId: null,
    hostName: null,
    spec: { image: 'web', cpus: 1, memoryMiB: 256, antiAffinityGroups: [], hostInclude: [], hostExclude: [], forwards: [], cmdline: '' },
    labels: {},
    owner: 'admin',
    autostart: false,
    lastError: null,
    rev: 1,
    createdAt: now(),
    updatedAt: now(),
    ...fields,
  };
}

export function makeHost(name: string, fields: Partial<Host> = {}): Host {
  return {
    id: randomUUID(),
    name,
    address: `https://10.0.0.${name.length}:8400`,
    state: 'online',
    capacity: { cpus: 8, memoryMiB: 16384 },
    allocated: { cpus: 2, memoryMiB: 1024, vms: 2 },
    cpuModels: ['qemu64'],
    labels: {},
    certExpiresAt: null,
    lastHeartbeatAt: now(),
    rev: 1,
    createdAt: now(),
    ...fields,
  };
}

export function makeOperation(kind: string, targetId: string, fields: Partial<Operation> = {}): Operation {
  return {
    id: randomUUID(),
    kind,
    targetKind: kind.split('.')[0] ?? 'vm',
    targetId,
    state: 'pending',
    phase: 'queued',
    progress: 0,
    error: null,
    result: null,
    actor: 'admin',
    createdAt: now(),
    updatedAt: now(),
    startedAt: null,
    finishedAt: null,
    ...fields,
  };
}

export class FakeManager {
  readonly token = 'test-token-0123456789';
  readonly requests: RecordedRequest[] = [];
  readonly vms = new Map<string, Vm>();
  readonly hosts = new Map<string, Host>();
  readonly images: Image[] = [];
  readonly operations = new Map<string, { operation: Operation; script: OperationScript }>();
  readonly snapshots = new Map<string, Snapshot[]>();
  serialLog = '';
  /** The script the next operation created gets. */
  nextScript: OperationScript = defaultScript;
  /** Close this many incoming connections before answering (network failures). */
  dropConnections = 0;
  private readonly overrides: Array<{ method: string; pattern: RegExp; handler: Handler }> = [];
  private readonly server = http.createServer((req, res) => void this.handle(req, res));
  url = '';

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Answers a route differently from the model (takes precedence). */
  on(method: string, pattern: RegExp, handler: Handler): void {
    this.overrides.unshift({ method, pattern, handler });
  }

  /** Forgets the overrides given with `on`. */
  clearOverrides(): void {
    this.overrides.length = 0;
  }

  addVm(name: string, fields: Partial<Vm> = {}): Vm {
    const vm = makeVm(name, fields);
    this.vms.set(name, vm);
    return vm;
  }

  addOperation(kind: string, targetId: string, script: OperationScript = this.nextScript, fields: Partial<Operation> = {}): Operation {
    const operation = makeOperation(kind, targetId, fields);
    this.operations.set(operation.id, { operation, script: [...script] });
    return operation;
  }

  requestsTo(method: string, path: string | RegExp): RecordedRequest[] {
    return this.requests.filter((r) => r.method === method && (typeof path === 'string' ? r.path === path : path.test(r.path)));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (this.dropConnections > 0) {
      this.dropConnections -= 1;
      req.socket.destroy();
      return;
    }
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url ?? '/', 'http://x');
    const request: RecordedRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.searchParams,
      headers: req.headers,
      body: raw ? (JSON.parse(raw) as unknown) : undefined,
    };
    this.requests.push(request);
    let reply: Reply;
    try {
      reply = await this.route(request);
    } catch (error) {
      reply = { status: 500, body: { error: { code: 'internal', message: String(error), details: {} } } };
    }
    const headers: Record<string, string> = { ...reply.headers };
    let payload = '';
    if (reply.text !== undefined) {
      payload = reply.text;
      headers['content-type'] ??= 'text/plain; charset=utf-8';
    } else if (reply.body !== undefined) {
      payload = JSON.stringify(reply.body);
      headers['content-type'] = 'application/json';
    }
    res.writeHead(reply.status, headers);
    res.end(payload);
  }

  private async route(request: RecordedRequest): Promise<Reply> {
    for (const override of this.overrides) {
      const match = override.pattern.exec(request.path);
      if (match && override.method === request.method) return override.handler(request, match);
    }
    if (request.headers.authorization !== `Bearer ${this.token}`) return error(401, 'unauthenticated', 'Missing or invalid API token');
    const p = request.path.replace(/^\/api\/v1/, '');
    const m = (pattern: RegExp) => pattern.exec(p);
    let match: RegExpExecArray | null;

    if (request.method === 'GET' && p === '/vms') return { status: 200, body: this.page([...this.vms.values()], request.query, (vm, q) => filterVm(vm, q)) };
    if (request.method === 'POST' && p === '/vms') {
      const body = request.body as { name: string; image: string; cpus?: number; memoryMiB?: number; labels?: Record<string, string> };
      if (this.vms.has(body.name)) return error(409, 'conflict', `VM "${body.name}" already exists`);
      const vm = this.addVm(body.name, { state: 'defined', labels: body.labels ?? {} });
      vm.spec = { ...vm.spec, image: body.image, cpus: body.cpus ?? 1, memoryMiB: body.memoryMiB ?? 256 };
      return { status: 201, body: vm };
    }
    if ((match = m(/^\/vms\/([^/]+)$/))) {
      const vm = this.vm(match[1]!);
      if (!vm) return error(404, 'not_found', `VM "${decodeURIComponent(match[1]!)}" does not exist`);
      if (request.method === 'GET') return { status: 200, body: vm };
      if (request.method === 'PATCH') {
        const ifMatch = request.headers['if-match'];
        if (ifMatch !== undefined && Number(ifMatch) !== vm.rev) return error(412, 'precondition_failed', `VM "${vm.name}" is at revision ${vm.rev}, not ${ifMatch}`);
        const edit = request.body as { cpus?: number; memoryMiB?: number; labels?: Record<string, string>; autostart?: boolean };
        if (edit.cpus !== undefined) vm.spec.cpus = edit.cpus;
        if (edit.memoryMiB !== undefined) vm.spec.memoryMiB = edit.memoryMiB;
        if (edit.labels) vm.labels = edit.labels;
        if (edit.autostart !== undefined) vm.autostart = edit.autostart;
        vm.rev += 1;
        return { status: 200, body: vm };
      }
      if (request.method === 'DELETE') return { status: 202, body: this.addOperation('vm.delete', vm.id) };
    }
    if (request.method === 'POST' && (match = m(/^\/vms\/([^/]+)\/(start|stop|force-off|pause|resume|reset|save|restore)$/))) {
      const vm = this.vm(match[1]!);
      if (!vm) return error(404, 'not_found', `VM "${decodeURIComponent(match[1]!)}" does not exist`);
      return { status: 202, body: this.addOperation(`vm.${match[2]}`, vm.id) };
    }
    if ((match = m(/^\/vms\/([^/]+)\/snapshots$/))) {
      const vm = this.vm(match[1]!);
      if (!vm) return error(404, 'not_found', `VM "${decodeURIComponent(match[1]!)}" does not exist`);
      if (request.method === 'GET') return { status: 200, body: this.snapshots.get(vm.name) ?? [] };
      if (request.method === 'POST') return { status: 202, body: this.addOperation('vm.snapshot.create', vm.id) };
    }
    if ((match = m(/^\/vms\/([^/]+)\/snapshots\/([^/]+)(\/revert)?$/))) {
      const vm = this.vm(match[1]!);
      if (!vm) return error(404, 'not_found', `VM "${decodeURIComponent(match[1]!)}" does not exist`);
      if (request.method === 'POST' && match[3]) return { status: 202, body: this.addOperation('vm.snapshot.revert', vm.id) };
      if (request.method === 'DELETE' && !match[3]) return { status: 202, body: this.addOperation('vm.snapshot.delete', vm.id) };
    }
    if (request.method === 'GET' && (match = m(/^\/vms\/([^/]+)\/console\/serial\/log$/))) {
      const offset = Number(request.query.get('offset') ?? 0);
      const log = Buffer.from(this.serialLog);
      return { status: 200, text: log.subarray(offset).toString('utf8'), headers: { 'x-log-size': String(log.length) } };
    }

    if (request.method === 'GET' && p === '/hosts') return { status: 200, body: this.page([...this.hosts.values()], request.query, (host, q) => !q.get('state') || host.state === q.get('state')) };
    if (request.method === 'POST' && p === '/hosts/join-tokens') {
      return { status: 201, body: { token: 'join-abcdef0123456789', expiresAt: '2030-01-01T00:00:00.000Z', caFingerprint: 'sha256:AB:CD:EF' } };
    }
    if ((match = m(/^\/hosts\/([^/]+)(\/rotate-certificate)?$/))) {
      const host = this.hosts.get(decodeURIComponent(match[1]!)) ?? [...this.hosts.values()].find((h) => h.id === match![1]);
      if (!host) return error(404, 'not_found', `Host "${decodeURIComponent(match[1]!)}" does not exist`);
      if (request.method === 'GET' && !match[2]) return { status: 200, body: host };
      if (request.method === 'DELETE' && !match[2]) return { status: 202, body: this.addOperation('host.remove', host.id) };
      if (request.method === 'POST' && match[2]) return { status: 202, body: this.addOperation('host.rotate-certificate', host.id) };
    }

    if (request.method === 'GET' && p === '/images') return { status: 200, body: this.page(this.images, request.query, () => true) };

    if (request.method === 'GET' && p === '/operations') {
      return { status: 200, body: this.page([...this.operations.values()].map((o) => o.operation), request.query, (op, q) => !q.get('state') || op.state === q.get('state')) };
    }
    if ((match = m(/^\/operations\/([^/]+)(\/cancel)?$/))) {
      const entry = this.operations.get(decodeURIComponent(match[1]!));
      if (!entry) return error(404, 'not_found', `Operation "${decodeURIComponent(match[1]!)}" does not exist`);
      if (request.method === 'POST' && match[2]) {
        entry.operation = { ...entry.operation, state: 'cancelled', phase: 'cancelled' };
        entry.script = [];
        return { status: 200, body: entry.operation };
      }
      if (request.method === 'GET' && !match[2]) {
        const step = entry.script.shift();
        if (step) entry.operation = { ...entry.operation, ...step, updatedAt: now() };
        return { status: 200, body: entry.operation };
      }
    }
    return error(404, 'not_found', `No route for ${request.method} ${request.path}`);
  }

  private vm(idOrName: string): Vm | undefined {
    const key = decodeURIComponent(idOrName);
    return this.vms.get(key) ?? [...this.vms.values()].find((vm) => vm.id === key);
  }

  /** Cursor = index of the first item of the page, as a string. */
  private page<T>(all: T[], query: URLSearchParams, keep: (item: T, query: URLSearchParams) => boolean) {
    const items = all.filter((item) => keep(item, query));
    const start = Number(query.get('cursor') ?? 0);
    const limit = Number(query.get('limit') ?? 100);
    const slice = items.slice(start, start + limit);
    return start + limit < items.length ? { items: slice, next: String(start + limit) } : { items: slice };
  }
}

function filterVm(vm: Vm, query: URLSearchParams): boolean {
  const label = query.get('label');
  if (query.get('state') && vm.state !== query.get('state')) return false;
  if (query.get('host') && vm.hostName !== query.get('host')) return false;
  if (query.get('name') && !vm.name.includes(query.get('name')!)) return false;
  if (label) {
    const [key, value] = label.split('=');
    if (vm.labels[key!] !== value) return false;
  }
  return true;
}

export function error(status: number, code: string, message: string, details: Record<string, unknown> = {}): Reply {
  return { status, body: { error: { code, message, details } } };
}

/** A loopback port nothing listens on (it was free a moment ago). */
export async function closedPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  stdin?: string;
  stderrIsTTY?: boolean;
  signal?: AbortSignal;
}

/**
 * Runs the CLI in this process, as `drover ARGV` would, and captures its output.
 * HOME points nowhere so a developer's own config file never leaks in.
 */
export async function runCli(argv: string[], options: RunOptions = {}): Promise<RunResult> {
  let stdout = '';
  let stderr = '';
  const text = (chunk: string | Uint8Array) => (typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
  const cli = createCli({
    env: { HOME: '/nonexistent-drover-home', ...options.env },
    stdout: { write: (chunk) => (stdout += text(chunk)) },
    stderr: { write: (chunk) => (stderr += text(chunk)), isTTY: options.stderrIsTTY ?? false, columns: 100 },
    stdin: options.stdin === undefined ? undefined : (async function* () { yield options.stdin!; })(),
    pollIntervalMs: 5,
    consoleIntervalMs: 5,
    retryDelayMs: 5,
    signal: options.signal,
  });
  const code = await cli.run(argv);
  return { code, stdout, stderr };
}

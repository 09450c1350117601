import { createHash, timingSafeEqual } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import websocket from '@fastify/websocket';
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { Logger } from 'pino';
import { Registry, collectDefaultMetrics, Gauge } from 'prom-client';
import { DroverError, errors } from '@drover/core';
import {
  ActionQuery,
  ErrorBody,
  errorAnswer,
  Host,
  HostJoin,
  HostJoined,
  IdOrName,
  Image,
  JoinToken,
  JoinTokenCreate,
  SessionCreate,
  ListQuery,
  Name,
  Operation,
  Page,
  Vm,
  VmCreate,
  VmEdit,
} from '@drover/api';
import type { Store } from '../store/index.js';
import type { OperationRecord } from '../store/types.js';
import type { AuditDecision, NewAuditRecord } from '../store/access-types.js';
import { withRequestAudit } from '../access/request-audit.js';
import type { EventHub } from './event-hub.js';
import type { HostService } from '../hosts/host.service.js';
import { publicHost } from '../hosts/host.service.js';
import type { VmService } from '../vms/vm.service.js';
import type { OperationRunner } from '../operations/operation-runner.js';
import { publicOperation } from '../operations/operation-runner.js';
import type { AgentLink } from '../hosts/agent-link.js';
import { registerStorageRoutes } from '../storage/storage.routes.js';
import { registerVmDeviceRoutes } from '../vms/vm-devices.routes.js';
import { registerMigrationRoutes } from '../vms/migration.routes.js';
import { registerRebalanceRoutes } from '../cluster/rebalance.routes.js';
import type { RebalanceService } from '../cluster/rebalance.service.js';
import type { ClusterCoordinator } from '../cluster/coordinator.js';
import { registerClusterManagerRoutes } from '../cluster/managers.routes.js';
import { registerPowerRoutes, type PowerRouteDeps } from '../power/power.routes.js';
import { registerImageRoutes } from '../images/images.routes.js';
import { registerVmcastRoutes } from '../vmcasting/vmcast.routes.js';
import type { VmcastService } from '../vmcasting/vmcast.service.js';
import type { ImageService } from '../images/image.service.js';
import { registerPackageRoutes } from '../packages/packages.routes.js';
import type { PackageService } from '../packages/package.service.js';
import { registerLabRoutes } from '../labs/labs.routes.js';
import type { LabService } from '../labs/lab.service.js';
import { BrowserAuth, cookieValue, sessionCookie, type BrowserIdentity } from './browser-auth.js';
import { registerConsoleRoutes, StreamQuery } from './console-relay.js';
import { isConsolePage, registerWebConsole } from './web-console.js';
import { VmListJson } from './vm-list.js';
import type { AccessService, Principal, RequestAccess } from '../access/access.service.js';
import { registerAccessRoutes } from '../access/access.routes.js';
import { registerPolicyRoutes } from '../policy/policy.routes.js';
import { registerNetworkRoutes } from '../networks/network.routes.js';
import { authenticatedPermission, publicPermission } from '../access/permissions.js';
import { requireRoutePermissions } from '../access/route-permissions.js';
import '../access/fastify-types.js';

export interface ManagerServerOptions {
  store: Store;
  hub: EventHub;
  hosts: HostService;
  vms: VmService;
  runner: OperationRunner;
  link: AgentLink;
  images: ImageService;
  /** VMcasting: feeds, channels, subscriptions, update channels (vmcasting/). */
  vmcast?: VmcastService;
  /** Appliance packages (packages/). */
  packages?: PackageService;
  /** Labs (labs/). */
  labs?: LabService;
  adminToken: string;
  metricsToken: string;
  logger: Logger;
  bodyLimit?: number;
  /** Serve over TLS (the listener agents on other machines join through). */
  https?: { key: string; cert: string };
  /** Sessions (cookie) and single-use tickets for browsers and streams. */
  browserAuth: BrowserAuth;
  /** Users, roles, projects, tokens: who may ask (access/). */
  access: AccessService;
  /** The web console's built files (packages/web/dist); absent: no console. */
  webRoot?: string;
  /** Cluster load balancing (cluster/). */
  rebalance?: RebalanceService;
  /** Several managers on one store (cluster/coordinator.ts). */
  cluster?: ClusterCoordinator;
  /** Host power, maintenance and the power policy (power/). */
  power?: Pick<PowerRouteDeps, 'power' | 'maintenance' | 'policy' | 'ha'>;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Who made the request: the admin token, or a browser session. */
    identity?: { actor: string; session?: BrowserIdentity };
  }
}

/** Streams a browser opens without headers: they also accept a single-use `?ticket=`. */
function isStreamRoute(path: string): boolean {
  return path === '/api/v1/events' || path === '/api/v1/events/ws' || /^\/api\/v1\/vms\/[^/]+\/console\/(vnc|serial)$/.test(path);
}

/** A cookie-authenticated request from another site's page (the Origin header names another host). */
function foreignOrigin(request: FastifyRequest): boolean {
  const origin = request.headers.origin;
  if (origin === undefined) return false;
  try {
    return new URL(origin).host !== request.headers.host;
  } catch {
    return true;
  }
}

/** Routes anyone may call: health, the join of a new agent (it has a one-time token, not an API token), the API description. */
export const publicRoutes = ['/healthz', '/api/v1/hosts/join', '/api/v1/openapi.json'];

const errorResponses = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 412: ErrorBody, 413: ErrorBody, 503: ErrorBody };
const Ref = Type.Object({ id: IdOrName }, { additionalProperties: false });
const OpRef = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) }, { additionalProperties: false });
const SnapshotRef = Type.Object({ id: IdOrName, snapshot: Name }, { additionalProperties: false });
const EmptyBody = Type.Object({}, { additionalProperties: false });
const StopBody = Type.Object({ timeoutMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 3_600_000 })), force: Type.Optional(Type.Boolean()) }, { additionalProperties: false });

/** No query parameters: what a route without a query schema gets, so an unknown one (a typo, `?force=true`) is refused, not ignored. */
const NoQuery = Type.Object({}, { additionalProperties: false });

/** Errors Fastify meets before a route (a bad percent-escape, a parameter past maxParamLength), in the error shape of the API. */
function frameworkErrors(bodyLimit: number) {
  return (error: FastifyError, _request: FastifyRequest, reply: FastifyReply) => {
    const answer = errorAnswer(error, bodyLimit);
    void reply.status(answer.status).send(answer.body);
  };
}

/** Requests Node cannot parse (headers past its limit, a garbled request line): answered in the error shape of the API, then closed. */
function clientError(error: Error & { code?: string }, socket: Duplex): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, code, message] =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'too_large', 'Request headers (the URL included) are larger than the server accepts']
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'timeout', 'The request did not arrive in time']
        : [400, 'invalid', 'Malformed HTTP request'];
  const body = JSON.stringify({ error: { code, message, details: {} } });
  if (socket.writable) socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  socket.destroy(error);
}

function sameSecret(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

function bearer(request: FastifyRequest): string {
  const header = request.headers.authorization ?? '';
  return header.startsWith('Bearer ') ? header.slice(7) : '';
}

function parseLabel(label: string | undefined): { key: string; value: string } | undefined {
  if (!label) return undefined;
  const at = label.indexOf('=');
  return { key: label.slice(0, at), value: label.slice(at + 1) };
}

/**
 * The manager's REST API under /api/v1. Thin routes: validate (TypeBox, unknown
 * fields refused), authenticate, call a service; the services hold the logic.
 */
export async function buildManagerServer(o: ManagerServerOptions) {
  const bodyLimit = o.bodyLimit ?? 1024 * 1024;
  const app = Fastify({ loggerInstance: o.logger, bodyLimit, frameworkErrors: frameworkErrors(bodyLimit), clientErrorHandler: clientError, ...(o.https ? { https: o.https } : {}) }).withTypeProvider<TypeBoxTypeProvider>();
  app.setValidatorCompiler(TypeBoxValidatorCompiler);

  await app.register(websocket, { options: { maxPayload: 64 * 1024 } });
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Drover API', version: '1', description: 'The public API of the Drover manager. Every route needs `Authorization: Bearer <token>` except those marked public.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });

  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'drover_manager_' });
  new Gauge({
    name: 'drover_manager_operations_running',
    help: 'Operations pending or running',
    registers: [registry],
    async collect() {
      const page = await o.store.operations.list({ limit: 1000, filter: { state: ['pending', 'running'] } });
      this.set(page.items.length);
    },
  });

  app.setErrorHandler((error, request, reply) => {
    const answer = errorAnswer(error, bodyLimit);
    if (answer.unexpected) request.log.error({ err: error }, 'unexpected error');
    void reply.status(answer.status).send(answer.body);
  });
  app.setNotFoundHandler((request, reply) => {
    if (o.webRoot && isConsolePage(request)) return reply.sendFile('index.html');
    void reply.status(404).send({ error: { code: 'not_found', message: `No route ${request.method} ${request.url.split('?')[0]}`, details: {} } });
  });

  app.addHook('onRequest', async (request) => {
    const path = request.url.split('?')[0]!;
    const permission = request.routeOptions.config?.permission;
    if (path === '/metrics') {
      if (!sameSecret(bearer(request), o.metricsToken)) throw errors.unauthenticated('The metrics scrape token is required');
      return;
    }
    if (permission === publicPermission) return;
    // No route: the web console's pages are public; under /api/ the caller must still sign in before learning what exists.
    if (permission === undefined && !path.startsWith('/api/')) return;
    const principal = await authenticate(request, path);
    request.principal = principal;
    request.identity = { actor: principal.user, ...(request.identity?.session ? { session: request.identity.session } : {}) };
    if (permission === undefined || permission === authenticatedPermission) return;
    request.access = o.access.authorize(principal, permission);
  });
  /** Who the request comes from: a stream ticket, a bearer token or a session cookie; 401 naming why not. */
  async function authenticate(request: FastifyRequest, path: string): Promise<Principal> {
    // A ticket, when given, decides alone: a bad one is refused even next to a valid token.
    // (A malformed one — repeated, empty, too long — is left to the query schema: 400.)
    const ticket = request.method === 'GET' && isStreamRoute(path) ? (request.query as { ticket?: unknown } | undefined)?.ticket : undefined;
    if (typeof ticket === 'string' && ticket.length > 0 && ticket.length <= 128) {
      // A browser always names the page that opens a WebSocket: a console opened from another site is refused (the ticket stays unused).
      if (foreignOrigin(request)) throw errors.forbidden('A console or event stream must be opened from the console\'s own origin');
      const holder = o.browserAuth.redeemTicket(ticket);
      if (!holder) throw errors.unauthenticated('The ticket is unknown, used or expired; ask for a new one (POST /api/v1/tickets)');
      // A ticket made with a token carries the token's id: it is as limited as the token (and dies with it).
      const [user, tokenId] = holder.split('#') as [string, string | undefined];
      request.auditActor = user;
      return o.access.principalOf(user, 'ticket', tokenId);
    }
    const token = bearer(request);
    if (token) {
      // Read once for the request: the kept principal of the token and the kept VM list pages are checked against it.
      const change = token.length > 512 ? undefined : await o.store.changeToken();
      request.changeToken = { value: change };
      return o.access.authenticateToken(token, { change });
    }
    const session = o.browserAuth.verifySession(cookieValue(request.headers.cookie, sessionCookie));
    if (session) {
      const [user, tokenId] = session.actor.split('#') as [string, string | undefined];
      request.auditActor = user;
      if (foreignOrigin(request)) throw errors.forbidden('A request with the session cookie must come from the console\'s own origin');
      // A custom header cannot be set by a cross-site form or image: it proves the console's own script sent a change.
      if (request.method !== 'GET' && request.method !== 'HEAD' && request.headers['x-drover-csrf'] !== '1') {
        throw errors.forbidden('Changes made with the session cookie need the header X-Drover-CSRF: 1');
      }
      request.identity = { actor: user, session };
      return o.access.principalOf(user, 'session', tokenId);
    }
    throw errors.unauthenticated('A valid bearer token or session is required');
  }
  // Objects outside the caller's scope answer 404, as if they did not exist (after the params are validated).
  app.addHook('preHandler', async (request) => {
    const access = request.access;
    if (!access || access.global) return;
    const url = request.routeOptions.url ?? '';
    const params = request.params as { id?: string } | undefined;
    if (url.startsWith('/api/v1/vms/:id') && params?.id) {
      const vm = await o.store.vms.tryFind(params.id);
      if (vm && !o.access.reaches(access, await o.access.scopedVm(vm))) {
        request.auditDenial = `VM "${vm.name}" is outside the scope of user "${access.principal.user}"`;
        throw errors.notFound('VM', params.id);
      }
    } else if (url.startsWith('/api/v1/labs/:id') && params?.id) {
      const lab = await o.store.labs.tryFind(params.id);
      if (lab && !o.access.reaches(access, o.access.scopedLab(lab))) {
        request.auditDenial = `lab "${lab.name}" is outside the scope of user "${access.principal.user}"`;
        throw errors.notFound('lab', params.id);
      }
    } else if (url.startsWith('/api/v1/operations/:id') && params?.id) {
      const op = await o.store.operations.tryGet(params.id);
      if (op && !(await operationVisible(access, op))) {
        request.auditDenial = `operation "${op.id}" is outside the scope of user "${access.principal.user}"`;
        throw errors.notFound('operation', params.id);
      }
    }
  });
  /** A scoped caller sees the operations they started and those on VMs within their scope. */
  async function operationVisible(access: RequestAccess, op: OperationRecord): Promise<boolean> {
    if (access.global || op.actor === access.principal.user) return true;
    if (op.targetKind !== 'vm') return false;
    const vm = await o.store.vms.tryGet(op.targetId);
    return vm !== undefined && o.access.reaches(access, await o.access.scopedVm(vm));
  }
  /** The audit log's record of a request. */
  const auditRecord = (request: FastifyRequest, status: number, decision: AuditDecision, reason: string): NewAuditRecord => ({
    actor: request.principal?.user ?? request.auditActor ?? 'anonymous',
    action: `${request.method} ${request.routeOptions.url ?? request.url.split('?')[0]!}`,
    target: request.url.split('?')[0]!.slice(0, 512),
    source: request.ip,
    decision,
    reason: reason.slice(0, 1000),
    status,
  });
  // Every change and every denial goes to the audit log before the answer leaves.
  app.addHook('onSend', async (request, reply, payload) => {
    const status = reply.statusCode;
    const change = request.method !== 'GET' && request.method !== 'HEAD' && request.method !== 'OPTIONS';
    const denied = status === 401 || status === 403 || status === 429 || request.auditDenial !== undefined;
    if (!change && !denied) return payload;
    let reason = request.auditDenial ?? '';
    if (!reason && status >= 400 && typeof payload === 'string') {
      try {
        reason = String((JSON.parse(payload) as { error?: { message?: string } }).error?.message ?? '');
      } catch {
        reason = '';
      }
    }
    if (!reason) reason = request.routeOptions.config?.permission ?? 'no route';
    // Written with the operation the request submitted, as this answer says (access/request-audit.ts).
    if (request.requestAudit?.written === status && !denied) return payload;
    try {
      await o.store.audit.append(auditRecord(request, status, denied ? 'deny' : status >= 400 ? 'error' : 'allow', reason));
    } catch (error) {
      request.log.error({ err: error }, 'cannot write the audit log');
    }
    return payload;
  });
  app.addHook('preValidation', async (request) => {
    if ((request.method === 'POST' || request.method === 'PATCH') && request.body === undefined) request.body = {};
    // A malformed key is refused on every route, also on those that do not replay: the client has a bug.
    idempotencyKey(request);
  });
  app.addHook('onRoute', (route) => {
    if (route.url.startsWith('/api/v1/') && !route.schema?.hide && !route.schema?.querystring) route.schema = { ...route.schema, querystring: NoQuery };
  });
  // Every route says who may call it (config.permission), or the manager does not start.
  requireRoutePermissions(app as unknown as FastifyInstance);

  const actor = (request: FastifyRequest) => request.identity?.actor ?? 'admin';
  const idempotencyKey = (request: FastifyRequest) => {
    const key = request.headers['idempotency-key'];
    if (key === undefined) return undefined;
    if (typeof key !== 'string' || !/^[A-Za-z0-9_.:-]{8,128}$/.test(key)) throw errors.invalid('Idempotency-Key must be 8–128 letters, digits or "_.:-"');
    return key;
  };

  /**
   * Replays the stored answer of a POST already made with this Idempotency-Key
   * (same body), refuses the key with another body, or records the new answer.
   */
  async function idempotent(request: FastifyRequest, reply: FastifyReply, run: (key: string | undefined) => Promise<{ status: number; body: unknown }>) {
    const key = idempotencyKey(request);
    const requestHash = createHash('sha256').update(`${request.method} ${request.url} ${JSON.stringify(request.body ?? {})}`).digest('hex');
    if (key) {
      const previous = await o.store.idempotency.get(key, actor(request));
      if (previous) {
        if (previous.requestHash !== requestHash) throw errors.conflict(`Idempotency-Key "${key}" was used for a different request`);
        return reply.status(previous.status).header('idempotent-replay', 'true').send(previous.response);
      }
    }
    // The request's audit record commits with its change where that change says so (an operation
    // it submits, a VM it defines: access/request-audit.ts); the onSend hook writes it otherwise.
    const permission = request.routeOptions.config?.permission ?? 'no route';
    request.requestAudit = { entry: (status) => auditRecord(request, status, 'allow', permission), operationStatus: (request.query as { wait?: boolean } | undefined)?.wait ? 200 : 202 };
    const answer = await withRequestAudit(request.requestAudit, () => run(key));
    if (key) await o.store.idempotency.put({ key, actor: actor(request), requestHash, status: answer.status, response: answer.body });
    return reply.status(answer.status).send(answer.body);
  }

  async function operationAnswer(op: OperationRecord, wait: boolean | undefined): Promise<{ status: number; body: unknown }> {
    if (!wait) return { status: 202, body: publicOperation(op) };
    return { status: 200, body: publicOperation(await o.runner.wait(op.id, 600_000)) };
  }

  // For load balancers: 200 while this manager can serve (its store answers), 503 otherwise; says whether it leads.
  app.get('/healthz', { config: { permission: 'public' }, schema: { hide: true } }, async () => {
    await o.store.ping();
    return { ok: true, ...(o.cluster ? { manager: o.cluster.managerId, leader: o.cluster.isLeader } : {}) };
  });
  app.get('/metrics', { config: { permission: 'public' }, schema: { hide: true } }, async (_request, reply) => {
    void reply.header('content-type', registry.contentType);
    return registry.metrics();
  });
  app.get('/api/v1/openapi.json', { config: { permission: 'public' }, schema: { hide: true } }, async () => app.swagger());

  // ---------------------------------------------------------------- sessions (browsers) and tickets (streams)
  const SessionInfo = Type.Object({ actor: Type.String(), expiresAt: Type.Union([Type.String(), Type.Null()]) });
  const secure = o.https ? '; Secure' : '';
  app.post('/api/v1/sessions', { config: { permission: 'public' }, schema: { tags: ['sessions'], summary: 'Sign in with a user name and password (local or LDAP) or with an API token: answers with the session cookie (HttpOnly, SameSite=Strict) the web console uses; 429 with Retry-After after repeated failures', body: SessionCreate, response: { 201: SessionInfo, 429: ErrorBody, ...errorResponses } } }, async (request, reply) => {
    const body = request.body;
    let holder: string;
    try {
      if ('token' in body) {
        const wait = o.access.limiter.retryAfter(request.ip, '(token)');
        if (wait > 0) throw new DroverError('rate_limited', `Too many failed sign-ins; try again in ${wait} s`, { details: { retryAfterSeconds: wait } });
        try {
          const principal = await o.access.authenticateToken(body.token);
          // The session is as limited as the token it was made with, and ends with it.
          holder = `${principal.user}#${principal.tokenId!}`;
          request.auditActor = principal.user;
        } catch (error) {
          o.access.limiter.fail(request.ip, '(token)');
          throw error;
        }
      } else {
        request.auditActor = body.username;
        holder = await o.access.login(body.username, body.password, request.ip);
        // Checks the new user now holds a role (an LDAP user in no mapped group gets none).
        await o.access.principalOf(holder, 'session');
      }
    } catch (error) {
      if (error instanceof DroverError && error.code === 'rate_limited') void reply.header('retry-after', String(error.details['retryAfterSeconds']));
      throw error;
    }
    const session = o.browserAuth.issueSession(holder);
    void reply.header('set-cookie', `${sessionCookie}=${session.value}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${session.maxAgeSeconds}${secure}`);
    return reply.status(201).send({ actor: holder.split('#')[0]!, expiresAt: session.identity.expiresAt });
  });
  app.get('/api/v1/session', { config: { permission: 'authenticated' }, schema: { tags: ['sessions'], summary: 'Who is signed in (expiresAt is null for a bearer token)', response: { 200: SessionInfo, ...errorResponses } } }, async (request) => ({
    actor: actor(request),
    expiresAt: request.identity?.session?.expiresAt ?? null,
  }));
  app.delete('/api/v1/session', { config: { permission: 'authenticated' }, schema: { tags: ['sessions'], summary: 'Sign out: the session cookie is refused from now on', response: { 204: Type.Null(), ...errorResponses } } }, async (request, reply) => {
    if (request.identity?.session) o.browserAuth.endSession(request.identity.session);
    void reply.header('set-cookie', `${sessionCookie}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0${secure}`);
    return reply.status(204).send(null);
  });
  app.post('/api/v1/tickets', { config: { permission: 'authenticated' }, schema: { tags: ['sessions'], summary: 'A single-use ticket (60 s) that authenticates one stream request as ?ticket=', body: EmptyBody, response: { 201: Type.Object({ ticket: Type.String(), expiresAt: Type.String() }), ...errorResponses } } }, async (request, reply) =>
    reply.status(201).send(o.browserAuth.issueTicket(request.principal!.tokenId ? `${request.principal!.user}#${request.principal!.tokenId}` : request.principal!.user)),
  );

  // ---------------------------------------------------------------- hosts
  app.get('/api/v1/hosts', { config: { permission: 'host.read' }, schema: { tags: ['hosts'], summary: 'List hosts', querystring: ListQuery, response: { 200: Page(Host), ...errorResponses } } }, async (request) => {
    const q = request.query;
    const page = await o.store.hosts.list({
      ...(q.limit ? { limit: q.limit } : {}),
      ...(q.cursor ? { after: q.cursor } : {}),
      filter: { ...(q.state ? { state: q.state as never } : {}), ...(q.name ? { name: q.name } : {}), ...(q.label ? { label: parseLabel(q.label)! } : {}) },
    });
    return { items: await Promise.all(page.items.map(async (h) => publicHost(h, await o.hosts.allocated(h.id)))), ...(page.next ? { next: page.next } : {}) };
  });
  app.get('/api/v1/hosts/:id', { config: { permission: 'host.read' }, schema: { tags: ['hosts'], summary: 'Show a host', params: Ref, response: { 200: Host, ...errorResponses } } }, async (request) => {
    const host = await o.store.hosts.find(request.params.id);
    return publicHost(host, await o.hosts.allocated(host.id));
  });
  app.delete('/api/v1/hosts/:id', { config: { permission: 'host.write' }, schema: { tags: ['hosts'], summary: 'Remove a host that runs no VM (revokes its certificate)', params: Ref, response: { 204: Type.Null(), ...errorResponses } } }, async (request, reply) => {
    await o.hosts.remove(await o.store.hosts.find(request.params.id));
    return reply.status(204).send(null);
  });
  app.post('/api/v1/hosts/:id/rotate-certificate', { config: { permission: 'host.write' }, schema: { tags: ['hosts'], summary: 'Give a host a new certificate and revoke the old one', params: Ref, querystring: ActionQuery, body: EmptyBody, response: { 200: Operation, 202: Operation, ...errorResponses } } }, async (request, reply) =>
    idempotent(request, reply, async (key) => {
      const host = await o.store.hosts.find(request.params.id);
      const op = await o.runner.submit({ kind: 'host.rotate-certificate', targetKind: 'host', targetId: host.id, actor: actor(request), idempotencyKey: key ?? null }, `Host "${host.name}"`);
      return operationAnswer(op, request.query.wait);
    }),
  );
  app.post('/api/v1/hosts/join-tokens', { config: { permission: 'host.write' }, schema: { tags: ['hosts'], summary: 'Make a one-time token for an agent to join', body: JoinTokenCreate, response: { 201: JoinToken, ...errorResponses } } }, async (request, reply) =>
    reply.status(201).send(await o.hosts.createJoinToken(request.body.ttlSeconds)),
  );
  app.post('/api/v1/hosts/join', { config: { permission: 'public' }, schema: { tags: ['hosts'], summary: 'An agent joins with a one-time token and a CSR (public)', body: HostJoin, response: { 201: HostJoined, ...errorResponses } } }, async (request, reply) =>
    reply.status(201).send(await o.hosts.join(request.body)),
  );

  // ---------------------------------------------------------------- images
  app.get('/api/v1/images', { config: { permission: 'image.read' }, schema: { tags: ['images'], summary: 'List the image library (appliances, imported disk images and ISOs)', querystring: ListQuery, response: { 200: Page(Image), ...errorResponses } } }, async (request) => {
    const q = request.query;
    const page = await o.store.images.list({ ...(q.limit ? { limit: q.limit } : {}), ...(q.cursor ? { after: q.cursor } : {}), filter: { ...(q.name ? { name: q.name } : {}) } });
    return { items: page.items, ...(page.next ? { next: page.next } : {}) };
  });
  await registerImageRoutes(app, { images: o.images, idempotent, operationAnswer, actor });
  if (o.vmcast) await registerVmcastRoutes(app, { vmcast: o.vmcast, store: o.store, idempotent, operationAnswer, actor });
  if (o.packages) await registerPackageRoutes(app, { packages: o.packages, idempotent, operationAnswer, actor });
  if (o.labs) await registerLabRoutes(app, { labs: o.labs, vms: o.vms, access: o.access, idempotent, operationAnswer, actor });

  // ---------------------------------------------------------------- vms
  // Answered as JSON text made from each VM's kept JSON, checked against the store on every request (vm-list.ts).
  const vmList = new VmListJson(o.store);
  app.get('/api/v1/vms', { config: { permission: 'vm.read' }, schema: { tags: ['vms'], summary: 'List VMs', querystring: ListQuery, response: { 200: Page(Vm), ...errorResponses } } }, async (request, reply) => {
    const q = request.query;
    const hostId = q.host ? (await o.store.hosts.find(q.host)).id : undefined;
    if (request.access && !request.access.global) {
      // A caller limited to projects, objects or their own VMs: the page holds only those (it may come out shorter than the limit).
      const page = await o.store.vms.list({
        ...(q.limit ? { limit: q.limit } : {}),
        ...(q.cursor ? { after: q.cursor } : {}),
        filter: { ...(q.state ? { state: q.state } : {}), ...(hostId ? { hostId } : {}), ...(q.name ? { name: q.name } : {}), ...(q.label ? { label: parseLabel(q.label)! } : {}) },
      });
      const visible = await o.access.visibleVms(request.access, page.items);
      return { items: await Promise.all(visible.map((vm) => o.vms.toPublic(vm))), ...(page.next ? { next: page.next } : {}) };
    }
    const page = await vmList.page(
      {
        ...(q.limit ? { limit: q.limit } : {}),
        ...(q.cursor ? { after: q.cursor } : {}),
        filter: { ...(q.state ? { state: q.state } : {}), ...(hostId ? { hostId } : {}), ...(q.name ? { name: q.name } : {}), ...(q.label ? { label: parseLabel(q.label)! } : {}) },
      },
      // The route's serializer for one VM: the same JSON the Page(Vm) schema makes.
      reply.compileSerializationSchema(Vm as unknown as Record<string, unknown>, '200') as (vm: Vm) => string,
      request.changeToken,
    );
    // Bytes with a JSON content type: Fastify sends them as they are, without serializing again.
    return reply.type('application/json; charset=utf-8').send(page as never);
  });
  app.post('/api/v1/vms', { config: { permission: 'vm.write' }, schema: { tags: ['vms'], summary: 'Define a VM from an image', body: VmCreate, response: { 201: Vm, ...errorResponses } } }, async (request, reply) =>
    idempotent(request, reply, async () => {
      const { project, ...create } = request.body;
      const diskGiB = Math.ceil((create.diskSizeBytes ?? 0) / 1024 ** 3);
      const vm = await o.access.createInProject(request.access, project, (admit) => o.vms.create(create, actor(request), (spec) => admit({ ...spec, diskGiB })));
      return { status: 201, body: await o.vms.toPublic(vm) };
    }),
  );
  app.get('/api/v1/vms/:id', { config: { permission: 'vm.read' }, schema: { tags: ['vms'], summary: 'Show a VM', params: Ref, response: { 200: Vm, ...errorResponses } } }, async (request) =>
    o.vms.toPublic(await o.vms.find(request.params.id)),
  );
  app.patch('/api/v1/vms/:id', { config: { permission: 'vm.write' }, schema: { tags: ['vms'], summary: 'Edit a VM (CPUs and memory only while stopped); If-Match: <rev> refuses a stale edit with 412', params: Ref, body: VmEdit, response: { 200: Vm, ...errorResponses } } }, async (request) => {
    const ifMatch = request.headers['if-match'];
    let expectedRev: number | undefined;
    if (ifMatch !== undefined) {
      expectedRev = Number(String(ifMatch).replaceAll('"', ''));
      if (!Number.isInteger(expectedRev) || expectedRev < 1) throw errors.invalid(`If-Match must be a revision number, got "${String(ifMatch)}"`);
    }
    const vm = await o.vms.find(request.params.id);
    const spec = vm.spec as { cpus?: number; memoryMiB?: number };
    const next = { cpus: request.body.cpus ?? spec.cpus ?? 1, memoryMiB: request.body.memoryMiB ?? spec.memoryMiB ?? 0 };
    return o.vms.toPublic(await o.access.editInProject(vm, next, () => o.vms.edit(request.params.id, request.body, expectedRev)));
  });
  app.delete('/api/v1/vms/:id', { config: { permission: 'vm.write' }, schema: { tags: ['vms'], summary: 'Delete a stopped VM and its disks', params: Ref, querystring: ActionQuery, response: { 200: Operation, 202: Operation, ...errorResponses } } }, async (request, reply) =>
    idempotent(request, reply, async (key) => operationAnswer(await o.vms.remove(request.params.id, actor(request), key), request.query.wait)),
  );
  for (const action of ['start', 'force-off', 'pause', 'resume', 'reset', 'save', 'restore']) {
    app.post(
      `/api/v1/vms/:id/${action}`,
      { config: { permission: 'vm.write' }, schema: { tags: ['vms'], summary: `${action} a VM (answers 202 with the operation, or 200 when it ended with ?wait=true)`, params: Ref, querystring: ActionQuery, body: EmptyBody, response: { 200: Operation, 202: Operation, ...errorResponses } } },
      async (request, reply) => idempotent(request, reply, async (key) => operationAnswer(await o.vms.action(request.params.id, action, {}, actor(request), key), request.query.wait)),
    );
  }
  app.post('/api/v1/vms/:id/stop', { config: { permission: 'vm.write' }, schema: { tags: ['vms'], summary: 'Stop a VM: ACPI shutdown, forced off after timeoutMs (or at once with force)', params: Ref, querystring: ActionQuery, body: StopBody, response: { 200: Operation, 202: Operation, ...errorResponses } } }, async (request, reply) =>
    idempotent(request, reply, async (key) => {
      const action = request.body.force ? 'force-off' : 'stop';
      const params = request.body.timeoutMs !== undefined ? { timeoutMs: request.body.timeoutMs } : {};
      return operationAnswer(await o.vms.action(request.params.id, action, params, actor(request), key), request.query.wait);
    }),
  );
  app.get('/api/v1/vms/:id/snapshots', { config: { permission: 'vm.read' }, schema: { tags: ['vms'], summary: 'List a VM\'s snapshots', params: Ref } }, async (request) => {
    const vm = await o.vms.find(request.params.id);
    if (!vm.hostId) return [];
    const info = await o.link.vm(await o.store.hosts.get(vm.hostId), vm.id);
    return info?.snapshots ?? [];
  });
  app.post('/api/v1/vms/:id/snapshots', { config: { permission: 'vm.write' }, schema: { tags: ['vms'], summary: 'Snapshot a VM (with memory when it runs)', params: Ref, querystring: ActionQuery, body: Type.Object({ name: Name }, { additionalProperties: false }), response: { 200: Operation, 202: Operation, ...errorResponses } } }, async (request, reply) =>
    idempotent(request, reply, async (key) => operationAnswer(await o.vms.action(request.params.id, 'snapshot.create', { name: request.body.name }, actor(request), key), request.query.wait)),
  );
  app.post('/api/v1/vms/:id/snapshots/:snapshot/revert', { config: { permission: 'vm.write' }, schema: { tags: ['vms'], summary: 'Revert a VM to a snapshot', params: SnapshotRef, querystring: ActionQuery, body: EmptyBody, response: { 200: Operation, 202: Operation, ...errorResponses } } }, async (request, reply) =>
    idempotent(request, reply, async (key) => operationAnswer(await o.vms.action(request.params.id, 'snapshot.revert', { name: request.params.snapshot }, actor(request), key), request.query.wait)),
  );
  app.delete('/api/v1/vms/:id/snapshots/:snapshot', { config: { permission: 'vm.write' }, schema: { tags: ['vms'], summary: 'Delete a snapshot', params: SnapshotRef, querystring: ActionQuery, response: { 200: Operation, 202: Operation, ...errorResponses } } }, async (request, reply) =>
    idempotent(request, reply, async (key) => operationAnswer(await o.vms.action(request.params.id, 'snapshot.delete', { name: request.params.snapshot }, actor(request), key), request.query.wait)),
  );
  app.get('/api/v1/vms/:id/console/serial/log', { config: { permission: 'vm.console' }, schema: { tags: ['vms'], summary: 'What the VM printed on its serial console, from a byte offset (x-log-size: the next offset)', params: Ref, querystring: Type.Object({ offset: Type.Optional(Type.Integer({ minimum: 0 })) }, { additionalProperties: false }) } }, async (request, reply) => {
    const vm = await o.vms.find(request.params.id);
    if (!vm.hostId) throw errors.conflict(`VM "${vm.name}" has never run`);
    const log = await o.link.serialLog(await o.store.hosts.get(vm.hostId), vm.id, request.query.offset ?? 0);
    return reply.header('content-type', 'text/plain; charset=utf-8').header('x-log-size', String(log.next)).send(log.text);
  });

  await registerStorageRoutes(app, { store: o.store, link: o.link });
  await registerVmDeviceRoutes(app, { vms: o.vms, idempotent, operationAnswer, actor });
  await registerMigrationRoutes(app, { vms: o.vms, idempotent, operationAnswer, actor });
  if (o.rebalance) await registerRebalanceRoutes(app, { rebalance: o.rebalance, idempotent, operationAnswer, actor });
  if (o.cluster) await registerClusterManagerRoutes(app, { cluster: o.cluster });
  if (o.power) await registerPowerRoutes(app, { ...o.power, hosts: o.hosts, vms: o.vms, idempotent, operationAnswer, actor });
  await registerConsoleRoutes(app, { store: o.store, link: o.link });
  await registerAccessRoutes(app, { store: o.store, access: o.access });
  await registerPolicyRoutes(app, { vms: o.vms, actor });
  await registerNetworkRoutes(app, { vms: o.vms, actor });

  // ---------------------------------------------------------------- operations
  app.get('/api/v1/operations', { config: { permission: 'operation.read' }, schema: { tags: ['operations'], summary: 'List operations, newest last', querystring: ListQuery, response: { 200: Page(Operation), ...errorResponses } } }, async (request) => {
    const q = request.query;
    const page = await o.store.operations.list({ ...(q.limit ? { limit: q.limit } : {}), ...(q.cursor ? { after: q.cursor } : {}), filter: { ...(q.state ? { state: q.state as never } : {}) } });
    const access = request.access;
    const items = access && !access.global ? (await Promise.all(page.items.map(async (op) => ((await operationVisible(access, op)) ? [op] : [])))).flat() : page.items;
    return { items: items.map(publicOperation), ...(page.next ? { next: page.next } : {}) };
  });
  app.post('/api/v1/operations/:id/cancel', { config: { permission: 'operation.write' }, schema: { tags: ['operations'], summary: 'Cancel an operation (409 when its kind cannot be interrupted in its phase)', params: OpRef, body: EmptyBody, response: { 200: Operation, ...errorResponses } } }, async (request) =>
    publicOperation(await o.runner.cancel(request.params.id, actor(request))),
  );
  app.get('/api/v1/operations/:id', { config: { permission: 'operation.read' }, schema: { tags: ['operations'], summary: 'Show an operation', params: OpRef, response: { 200: Operation, ...errorResponses } } }, async (request) =>
    publicOperation(await o.runner.get(request.params.id)),
  );

  // ---------------------------------------------------------------- events
  /** The same change feed as the SSE stream, over a WebSocket (one JSON message per event). */
  app.get('/api/v1/events/ws', { config: { permission: 'event.read' }, websocket: true, schema: { tags: ['events'], summary: 'Change events over a WebSocket: {"seq","type","data"} per message', querystring: StreamQuery } }, (socket) => {
    const unsubscribe = o.hub.subscribe((e) => socket.send(JSON.stringify({ seq: e.seq, type: e.type, data: e.data })));
    socket.on('close', unsubscribe);
  });
  app.get('/api/v1/events', { config: { permission: 'event.read' }, schema: { tags: ['events'], summary: 'Server-sent events: operation.updated, vm.updated, host.updated ... (Last-Event-ID resumes)', querystring: StreamQuery } }, async (request, reply) => {
    // Checked before the stream opens: past that point an error has no answer and the request hangs.
    const lastEventId = request.headers['last-event-id'];
    const last = lastEventId === undefined ? undefined : Number(lastEventId);
    if (last !== undefined && (!Number.isSafeInteger(last) || last < 0)) throw errors.invalid(`Last-Event-ID must be an event number, got "${String(lastEventId)}"`);
    reply.hijack();
    const out = reply.raw;
    out.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
    // Sent at once, so a browser's EventSource opens now, not at the first event or keep-alive.
    out.write(': connected\n\n');
    const send = (e: { seq: number; type: string; data: unknown }) => out.write(`id: ${e.seq}\nevent: ${e.type}\ndata: ${JSON.stringify(e.data)}\n\n`);
    const pending: Array<{ seq: number; type: string; data: unknown }> = [];
    let replaying = true;
    const unsubscribe = o.hub.subscribe((e) => (replaying ? pending.push(e) : send(e)));
    let lastSent = 0;
    if (last !== undefined) {
      for (const e of await o.store.events.since(last, 1000)) {
        send(e);
        lastSent = e.seq;
      }
    }
    replaying = false;
    for (const e of pending) if (e.seq > lastSent) send(e);
    const keepAlive = setInterval(() => out.write(': keep-alive\n\n'), 15_000);
    request.raw.on('close', () => {
      clearInterval(keepAlive);
      unsubscribe();
    });
  });

  if (o.webRoot) await registerWebConsole(app, o.webRoot);

  return app;
}

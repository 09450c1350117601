import { timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import type { Server as TlsServer } from 'node:tls';
import type { Readable } from 'node:stream';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import websocket from '@fastify/websocket';
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { Logger } from 'pino';
import { Registry, Gauge, Counter, collectDefaultMetrics } from 'prom-client';
import { errors } from '@drover/core';
import {
  errorAnswer,
  ErrorBody,
  HostFacts,
  maxVolumeUploadBytes,
  Name,
  PoolInfo,
  PoolSpec,
  SnapshotRequest,
  StartRequest,
  StopRequest,
  VmDisk,
  VmInfo,
  VmNic,
  VmSpec,
  VolumeCreate,
  VolumeInfo,
  VolumeName,
  VolumeResize,
  NetworkStateAnswer,
  NetworkStateBody,
} from '@drover/api';
import type { PoolRegistry } from './pools.js';
import {
  applyAgentTlsContext,
  createAgentIdentity,
  describeCertificate,
  loadAgentCrl,
  loadAgentIdentity,
  maxCrlBytes,
  requireManagerCertificate,
  saveAgentCertificate,
  saveAgentCrl,
  trackAgentConnections,
  type AgentTlsOptions,
  type CrlFacts,
} from './tls/index.js';
import type { VmService } from './vm-service.js';
import { migrationRoutes, type MigrationService } from './migration.js';
import type { NetworkStateService } from './net/network-state.service.js';
import type { GuestPackageStore } from './net/guest-packages.js';
import { guestPackageRoutes } from './net/guest-packages.routes.js';

export interface AgentServerOptions {
  /** Bearer token (standalone agent); ignored when `tls` is set. */
  token: string;
  /** Joined to a cluster: HTTPS with mutual TLS, and only the manager's certificate is accepted. */
  tls?: AgentTlsOptions;
  /** Where the cluster identity lives (certificate rotation writes there). */
  tlsDir?: string;
  vms: VmService;
  pools: PoolRegistry;
  facts: () => Promise<HostFacts>;
  logger: Logger;
  /** Largest accepted request body; bigger ones get 413. */
  bodyLimit?: number;
  /** Live migration routes (migration.ts); absent on a standalone agent. */
  migrations?: MigrationService;
  /** Networks and firewall of this host (net/); absent: no network routes. */
  networks?: NetworkStateService;
  /** Package updates for guests (net/guest-packages.ts); absent: no package routes. */
  guestPackages?: GuestPackageStore;
}

const VmParams = Type.Object({ vm: Type.String({ minLength: 1, maxLength: 128 }) });
const SnapshotParams = Type.Object({ vm: Type.String({ minLength: 1, maxLength: 128 }), snapshot: Name });
/** A disk of a VM: its index in the VM's disks, or its volume name. */
const DiskParams = Type.Object({ vm: Type.String({ minLength: 1, maxLength: 128 }), disk: Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$' }) });
const DiskQuery = Type.Object({ pool: Type.Optional(Name) }, { additionalProperties: false });
/** A NIC of a VM: its index in the VM's NICs, or its MAC address. */
const NicParams = Type.Object({ vm: Type.String({ minLength: 1, maxLength: 128 }), nic: Type.String({ minLength: 1, maxLength: 63, pattern: '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' }) });
const PoolParams = Type.Object({ pool: Name });
const VolumeParams = Type.Object({ pool: Name, volume: VolumeName });
const LogQuery = Type.Object(
  { offset: Type.Optional(Type.Integer({ minimum: 0 })), tail: Type.Optional(Type.Integer({ minimum: 1, maximum: 1024 * 1024, description: 'Only the last N bytes (instead of offset)' })) },
  { additionalProperties: false },
);
const CrlStatus = Type.Object({
  /** Decimal. */
  crlNumber: Type.String(),
  lastUpdate: Type.String(),
  nextUpdate: Type.String(),
  /** How many serials the CRL lists. */
  revokedSerials: Type.Integer(),
});
const CrlInstalled = Type.Object({ ...CrlStatus.properties, changed: Type.Boolean() });
const errorResponses = { 204: Type.Null(), 400: ErrorBody, 401: ErrorBody, 404: ErrorBody, 409: ErrorBody, 413: ErrorBody };

function sameToken(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}


/**
 * The agent's HTTP API. Routes are thin: they validate (TypeBox schemas from
 * @drover/api, unknown fields refused) and call the VM service or the pool
 * registry, which hold the logic. Every route but /healthz needs the bearer
 * token; the control plane will put mutual TLS in front of this.
 */
export async function buildAgentServer(o: AgentServerOptions) {
  const bodyLimit = o.bodyLimit ?? 1024 * 1024;
  const app = Fastify({
    loggerInstance: o.logger,
    bodyLimit,
    ...(o.tls ? { https: o.tls } : {}),
  }).withTypeProvider<TypeBoxTypeProvider>();
  app.setValidatorCompiler(TypeBoxValidatorCompiler);

  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'drover_agent_' });
  const vmGauge = new Gauge({
    name: 'drover_agent_vms',
    help: 'VMs on this host by state',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const vm of o.vms.list()) this.inc({ state: vm.state });
    },
  });
  void vmGauge;
  const actions = new Counter({ name: 'drover_agent_requests_total', help: 'API requests by route and status', labelNames: ['route', 'status'], registers: [registry] });

  await app.register(websocket, { options: { maxPayload: 1024 * 1024 } });

  app.setErrorHandler((error, request, reply) => {
    const answer = errorAnswer(error, bodyLimit);
    if (answer.unexpected) request.log.error({ err: error }, 'unexpected error');
    void reply.status(answer.status).send(answer.body);
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).send({ error: { code: 'not_found', message: `No route ${request.method} ${request.url}`, details: {} } });
  });

  app.addHook('onRequest', async (request: FastifyRequest) => {
    if (request.url.split('?')[0] === '/healthz') return;
    if (o.tls) {
      // The TLS layer already refused anyone without a valid, unrevoked cluster certificate.
      requireManagerCertificate(request.raw.socket);
      return;
    }
    const header = request.headers.authorization ?? '';
    const token = header.startsWith('Bearer ') ? header.slice(7) : '';
    if (!token || !sameToken(token, o.token)) throw errors.unauthenticated('A valid bearer token is required');
  });
  // Actions take an optional JSON body: a bare POST means "no options".
  app.addHook('preValidation', async (request) => {
    if (request.method === 'POST' && request.body === undefined) request.body = {};
  });
  app.addHook('onResponse', async (request, reply) => {
    actions.inc({ route: request.routeOptions.url ?? 'unknown', status: String(reply.statusCode) });
  });

  app.get('/healthz', async () => ({ ok: true }));
  app.get('/metrics', async (_request, reply) => {
    void reply.header('content-type', registry.contentType);
    return registry.metrics();
  });

  app.get('/v1/host', { schema: { response: { 200: HostFacts } } }, async () => o.facts());

  // ---------------------------------------------------------------- VMs
  app.get('/v1/vms', { schema: { response: { 200: Type.Array(VmInfo) } } }, async () => o.vms.list());
  app.post('/v1/vms', { schema: { body: VmSpec, response: { 201: VmInfo, ...errorResponses } } }, async (request, reply) => {
    const vm = await o.vms.define(request.body);
    return reply.status(201).send(vm);
  });
  app.get('/v1/vms/:vm', { schema: { params: VmParams, response: { 200: VmInfo, ...errorResponses } } }, async (request) => o.vms.get(request.params.vm));
  app.put('/v1/vms/:vm', { schema: { params: VmParams, body: VmSpec, response: { 200: VmInfo, ...errorResponses } } }, async (request) =>
    o.vms.update(request.params.vm, request.body),
  );
  app.delete('/v1/vms/:vm', { schema: { params: VmParams, response: { ...errorResponses } } }, async (request, reply) => {
    await o.vms.remove(request.params.vm);
    return reply.status(204).send(null);
  });

  const EmptyBody = Type.Optional(Type.Object({}, { additionalProperties: false }));
  const simple: Array<[string, (vm: string) => Promise<VmInfo>]> = [
    ['pause', (vm) => o.vms.pause(vm)],
    ['resume', (vm) => o.vms.resume(vm)],
    ['reset', (vm) => o.vms.reset(vm)],
    ['force-off', (vm) => o.vms.stop(vm, { force: true })],
    ['save', (vm) => o.vms.save(vm)],
    ['restore', (vm) => o.vms.restore(vm)],
    ['discard-saved-state', (vm) => o.vms.discardSavedState(vm)],
  ];
  for (const [action, run] of simple) {
    app.post(`/v1/vms/:vm/${action}`, { schema: { params: VmParams, body: EmptyBody, response: { 200: VmInfo, ...errorResponses } } }, async (request) =>
      run(request.params.vm),
    );
  }
  // With a spec: defined (or its definition replaced) and started in one request, as a manager's start does.
  app.post('/v1/vms/:vm/start', { schema: { params: VmParams, body: Type.Optional(StartRequest), response: { 200: VmInfo, ...errorResponses } } }, async (request) => {
    const ensure = request.body?.ensure;
    if (ensure) await o.pools.requireVolumes(ensure, request.params.vm);
    return o.vms.start(request.params.vm, request.body?.spec);
  });
  app.post('/v1/vms/:vm/stop', { schema: { params: VmParams, body: Type.Optional(StopRequest), response: { 200: VmInfo, ...errorResponses } } }, async (request) =>
    o.vms.stop(request.params.vm, request.body ?? {}),
  );

  app.post('/v1/vms/:vm/snapshots', { schema: { params: VmParams, body: SnapshotRequest, response: { 201: VmInfo, ...errorResponses } } }, async (request, reply) =>
    reply.status(201).send(await o.vms.createSnapshot(request.params.vm, request.body)),
  );
  app.get('/v1/vms/:vm/snapshots', { schema: { params: VmParams } }, async (request) => (await o.vms.get(request.params.vm)).snapshots);
  app.post('/v1/vms/:vm/snapshots/:snapshot/revert', { schema: { params: SnapshotParams, body: EmptyBody, response: { 200: VmInfo, ...errorResponses } } }, async (request) =>
    o.vms.revertSnapshot(request.params.vm, request.params.snapshot),
  );
  app.delete('/v1/vms/:vm/snapshots/:snapshot', { schema: { params: SnapshotParams, response: { 200: VmInfo, ...errorResponses } } }, async (request) =>
    o.vms.deleteSnapshot(request.params.vm, request.params.snapshot),
  );

  // ---------------------------------------------------------------- devices (hotplug when the VM runs)
  app.post('/v1/vms/:vm/disks', { schema: { params: VmParams, body: VmDisk, response: { 201: VmInfo, ...errorResponses } } }, async (request, reply) =>
    reply.status(201).send(await o.vms.addDisk(request.params.vm, request.body)),
  );
  app.delete('/v1/vms/:vm/disks/:disk', { schema: { params: DiskParams, querystring: DiskQuery, response: { 200: VmInfo, ...errorResponses } } }, async (request) =>
    o.vms.removeDisk(request.params.vm, request.params.disk, request.query.pool),
  );
  app.post('/v1/vms/:vm/nics', { schema: { params: VmParams, body: VmNic, response: { 201: VmInfo, ...errorResponses } } }, async (request, reply) =>
    reply.status(201).send(await o.vms.addNic(request.params.vm, request.body)),
  );
  app.delete('/v1/vms/:vm/nics/:nic', { schema: { params: NicParams, response: { 200: VmInfo, ...errorResponses } } }, async (request) =>
    o.vms.removeNic(request.params.vm, request.params.nic),
  );

  // ---------------------------------------------------------------- consoles
  /** The serial log from a byte offset: history that no live stream can replay. */
  app.get('/v1/vms/:vm/console/serial/log', { schema: { params: VmParams, querystring: LogQuery } }, async (request, reply) => {
    const handle = await o.vms.openSerialLog(request.params.vm);
    const size = handle ? (await handle.stat()).size : 0;
    const offset = request.query.tail !== undefined ? Math.max(0, size - request.query.tail) : Math.min(request.query.offset ?? 0, size);
    void reply.header('content-type', 'text/plain; charset=utf-8').header('x-log-size', String(size));
    if (!handle || size === offset) {
      await handle?.close();
      return reply.send('');
    }
    return reply.send(handle.createReadStream({ start: offset, end: size - 1 }));
  });

  app.get('/v1/vms/:vm/console/serial', { websocket: true, schema: { params: VmParams } }, (socket, request) => {
    let hub;
    try {
      hub = o.vms.serialHub((request.params as { vm: string }).vm);
    } catch (cause) {
      socket.close(1011, (cause as Error).message.slice(0, 120));
      return;
    }
    const onData = (chunk: Buffer) => socket.send(chunk);
    const onEnd = () => socket.close(1000, 'VM stopped');
    hub.on('data', onData);
    hub.once('end', onEnd);
    socket.on('message', (data: Buffer) => hub.write(data));
    socket.on('close', () => {
      hub.off('data', onData);
      hub.off('end', onEnd);
    });
  });

  app.get('/v1/vms/:vm/console/vnc', { websocket: true, schema: { params: VmParams } }, (socket, request) => {
    let path: string;
    try {
      path = o.vms.vncSocket((request.params as { vm: string }).vm);
    } catch (cause) {
      socket.close(1011, (cause as Error).message.slice(0, 120));
      return;
    }
    // One VNC connection per viewer: QEMU's VNC server shares the screen between clients.
    const vnc = net.connect(path);
    vnc.on('data', (chunk) => socket.send(chunk));
    vnc.on('close', () => socket.close(1000, 'VNC closed'));
    vnc.on('error', () => socket.close(1011, 'VNC unavailable'));
    socket.on('message', (data: Buffer) => vnc.write(data));
    socket.on('close', () => vnc.destroy());
  });

  // ---------------------------------------------------------------- identity (certificate rotation, CRL)
  if (o.tls && o.tlsDir) {
    const tlsDir = o.tlsDir;
    const tlsServer = app.server as unknown as TlsServer;
    trackAgentConnections(tlsServer);
    /**
     * The one way the running server takes a new certificate or CRL (rotation, CRL
     * push): the files as they are now on disk become the TLS context at once, the
     * listener stays, and open connections of a peer the CRL revokes are closed
     * (`keep`, the connection asking, is left to close after its answer).
     */
    let reloading: Promise<unknown> = Promise.resolve();
    const reloadTls = (keep: FastifyRequest['raw']['socket']): Promise<CrlFacts | undefined> => {
      // One reload at a time, so the context applied last is read last.
      const run = async () => {
        const identity = await loadAgentIdentity(tlsDir);
        if (!identity) throw errors.internal(`the identity in ${tlsDir} vanished`);
        const crl = await loadAgentCrl(tlsDir);
        const closed = applyAgentTlsContext(tlsServer, identity, { revokedSerials: crl?.revokedSerials ?? [], keep });
        if (closed > 0) o.logger.info({ closed, crlNumber: crl?.crlNumber.toString() }, 'closed connections of revoked clients');
        return crl;
      };
      const result = reloading.then(run, run);
      reloading = result.catch(() => undefined);
      return result;
    };
    /** A caller whose own certificate was just revoked gets its answer, then its connection closes. */
    const closeIfRevoked = (request: FastifyRequest, reply: FastifyReply, crl: CrlFacts | undefined) => {
      const caller = requireManagerCertificate(request.raw.socket);
      if (crl?.revokedSerials.includes(caller.serial)) void reply.header('connection', 'close');
    };
    const crlStatus = (crl: CrlFacts) => ({
      crlNumber: crl.crlNumber.toString(),
      lastUpdate: crl.lastUpdate.toISOString(),
      nextUpdate: crl.nextUpdate.toISOString(),
      revokedSerials: crl.revokedSerials.length,
    });

    /** Step 1: a new key and CSR for the same name and addresses; the current certificate keeps serving. */
    app.post('/v1/identity/csr', { schema: { body: EmptyBody } }, async () => {
      const current = await loadAgentIdentity(tlsDir);
      if (!current) throw errors.conflict('This agent has not joined a cluster');
      const facts = describeCertificate(current.certPem);
      const { csrPem } = await createAgentIdentity(tlsDir, { commonName: facts.commonName, sanIps: facts.sanIps, sanDns: facts.sanDns });
      return { csrPem, commonName: facts.commonName, sanIps: facts.sanIps, sanDns: facts.sanDns, serial: facts.serial };
    });
    /** Step 2: the signed certificate; checked against the new key, then new connections use it. */
    app.post(
      '/v1/identity/certificate',
      { schema: { body: Type.Object({ certPem: Type.String({ maxLength: 16384 }), crlPem: Type.Optional(Type.String({ maxLength: maxCrlBytes })) }, { additionalProperties: false }) } },
      async (request, reply) => {
        const current = await loadAgentIdentity(tlsDir);
        if (!current) throw errors.conflict('This agent has not joined a cluster');
        const identity = await saveAgentCertificate(tlsDir, request.body.certPem, current.caPem, request.body.crlPem);
        closeIfRevoked(request, reply, await reloadTls(request.raw.socket));
        return { serial: describeCertificate(identity.certPem).serial };
      },
    );

    /** The installed CRL: number, validity, how many serials it lists. */
    app.get('/v1/identity/crl', { schema: { response: { 200: CrlStatus, ...errorResponses } } }, async () => {
      const crl = await loadAgentCrl(tlsDir);
      if (!crl) throw errors.notFound('crl', 'installed');
      return crlStatus(crl);
    });
    /**
     * A CRL pushed by the manager: signed by the cluster CA and usable now (else 400),
     * not older than the installed one (else 409). Written atomically, then in force
     * for every new connection at once; the same number again changes nothing.
     */
    app.put(
      '/v1/identity/crl',
      {
        bodyLimit: 2 * maxCrlBytes,
        schema: { body: Type.Object({ crlPem: Type.String({ minLength: 1, maxLength: maxCrlBytes }) }, { additionalProperties: false }), response: { 200: CrlInstalled, ...errorResponses } },
      },
      async (request, reply) => {
        const saved = await saveAgentCrl(tlsDir, request.body.crlPem);
        if (!saved.changed) return { ...crlStatus(saved), changed: false };
        const crl = await reloadTls(request.raw.socket);
        closeIfRevoked(request, reply, crl);
        request.log.info({ crlNumber: saved.crlNumber.toString(), nextUpdate: saved.nextUpdate.toISOString() }, 'CRL installed');
        return { ...crlStatus(crl ?? saved), changed: true };
      },
    );
  }

  // ---------------------------------------------------------------- storage
  if (o.networks) {
    const networks = o.networks;
    // The whole desired network state of this host; invalid input changes nothing (400).
    app.put('/v1/network-state', { schema: { body: NetworkStateBody, response: { 200: NetworkStateAnswer, ...errorResponses } } }, async (request) => networks.apply(request.body));
    app.get('/v1/network-state/ruleset', { schema: { response: { 200: NetworkStateAnswer, ...errorResponses } } }, async () => networks.current());
  }

  app.get('/v1/pools', { schema: { response: { 200: Type.Array(PoolInfo) } } }, async () => o.pools.list());
  app.post('/v1/pools', { schema: { body: PoolSpec, response: { 201: PoolInfo, ...errorResponses } } }, async (request, reply) =>
    reply.status(201).send(await o.pools.define(request.body)),
  );
  app.get('/v1/pools/:pool', { schema: { params: PoolParams, response: { 200: PoolInfo, ...errorResponses } } }, async (request) => o.pools.describe(request.params.pool));
  app.delete('/v1/pools/:pool', { schema: { params: PoolParams, response: { ...errorResponses } } }, async (request, reply) => {
    await o.pools.remove(request.params.pool);
    return reply.status(204).send(null);
  });
  app.get('/v1/pools/:pool/volumes', { schema: { params: PoolParams, response: { 200: Type.Array(VolumeInfo), ...errorResponses } } }, async (request) =>
    o.pools.listVolumes(request.params.pool),
  );
  app.post('/v1/pools/:pool/volumes', { schema: { params: PoolParams, body: VolumeCreate, response: { 201: VolumeInfo, ...errorResponses } } }, async (request, reply) =>
    reply.status(201).send(await o.pools.createVolume(request.params.pool, request.body)),
  );
  app.get('/v1/pools/:pool/volumes/:volume', { schema: { params: VolumeParams, response: { 200: VolumeInfo, ...errorResponses } } }, async (request) =>
    o.pools.describeVolume(request.params.pool, request.params.volume),
  );
  app.post('/v1/pools/:pool/volumes/:volume/resize', { schema: { params: VolumeParams, body: VolumeResize, response: { 200: VolumeInfo, ...errorResponses } } }, async (request) =>
    o.pools.resizeVolume(request.params.pool, request.params.volume, request.body.sizeBytes),
  );
  app.delete('/v1/pools/:pool/volumes/:volume', { schema: { params: VolumeParams, response: { ...errorResponses } } }, async (request, reply) => {
    await o.pools.deleteVolume(request.params.pool, request.params.volume);
    return reply.status(204).send(null);
  });
  await app.register(async (scope) => volumeContentRoutes(scope as unknown as FastifyInstance, o.pools));
  if (o.migrations) await app.register(async (scope) => migrationRoutes(scope as unknown as FastifyInstance, o.migrations!));
  if (o.guestPackages) await app.register(async (scope) => guestPackageRoutes(scope as unknown as FastifyInstance, o.guestPackages!));

  return app;
}

/**
 * A volume's bytes: download as they are, upload into a new volume. In their
 * own scope, so only these routes take `application/octet-stream`, as a stream
 * (never buffered whole), up to `maxVolumeUploadBytes`.
 */
async function volumeContentRoutes(scope: FastifyInstance, pools: PoolRegistry): Promise<void> {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>();
  app.addContentTypeParser('application/octet-stream', (_request, payload, done) => done(null, payload));
  app.get('/v1/pools/:pool/volumes/:volume/content', { schema: { params: VolumeParams } }, async (request, reply) => {
    const { handle, size } = await pools.openVolumeForRead(request.params.pool, request.params.volume);
    void reply.header('content-type', 'application/octet-stream').header('content-length', String(size));
    if (size === 0) {
      await handle.close();
      return reply.send(Buffer.alloc(0));
    }
    return reply.send(handle.createReadStream());
  });
  app.put('/v1/pools/:pool/volumes/:volume/content', { bodyLimit: maxVolumeUploadBytes, schema: { params: VolumeParams, response: { 201: VolumeInfo, ...errorResponses } } }, async (request, reply) => {
    try {
      const body = request.body as Readable | undefined;
      if (!body || typeof (body as Partial<Readable>).pipe !== 'function' || !(request.headers['content-type'] ?? '').startsWith('application/octet-stream')) {
        throw errors.invalid('The volume content must be sent as application/octet-stream');
      }
      const declared = Number(request.headers['content-length'] ?? 0);
      if (declared > maxVolumeUploadBytes) throw errors.tooLarge(`The upload is larger than ${maxVolumeUploadBytes} bytes`, { limit: maxVolumeUploadBytes });
      return reply.status(201).send(await pools.uploadVolume(request.params.pool, request.params.volume, body, maxVolumeUploadBytes));
    } catch (error) {
      // Refused before the body was read (the volume exists ...): drop the rest and close after the answer.
      if (!request.raw.readableEnded) {
        void reply.header('connection', 'close');
        request.raw.unpipe();
        request.raw.resume();
      }
      throw error;
    }
  });
}

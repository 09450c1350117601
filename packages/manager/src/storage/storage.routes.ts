import type { Readable } from 'node:stream';
import { Transform } from 'node:stream';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, RawServerDefault } from 'fastify';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { errors } from '@drover/core';
import { ErrorBody, IdOrName, maxVolumeUploadBytes, Name, PoolInfo, PoolSpec, VolumeCreate, VolumeInfo, VolumeName, VolumeResize } from '@drover/api';
import type { AgentLink } from '../hosts/agent-link.js';
import type { Store } from '../store/index.js';
import type { HostRecord } from '../store/types.js';
import type { ManagerApp } from '../http/app-type.js';

export interface StorageRouteDeps {
  store: Store;
  link: AgentLink;
}

const errorResponses = { 400: ErrorBody, 401: ErrorBody, 404: ErrorBody, 409: ErrorBody, 413: ErrorBody, 503: ErrorBody };
const HostRef = Type.Object({ id: IdOrName }, { additionalProperties: false });
const PoolRef = Type.Object({ id: IdOrName, pool: Name }, { additionalProperties: false });
/** A volume in a URL: VolumeName, but at most 100 characters (the router's limit for one path segment, the agent's too). */
const VolumeParam = Type.String({ ...VolumeName, maxLength: 100 });
const VolumeRef = Type.Object({ id: IdOrName, pool: Name, volume: VolumeParam }, { additionalProperties: false });
/** Create (`{name, sizeBytes}`) or thin clone (`{name, cloneOf}`): the agent's VolumeCreate without `importFrom`. */
const ManagerVolumeCreate = Type.Union([VolumeCreate.anyOf[0], VolumeCreate.anyOf[1]]);

const seg = encodeURIComponent;

/**
 * Storage of one host, proxied to its agent: pools (a pool marked `shared` is
 * the same directory or LUN on several hosts; define it on each), and volumes
 * (create, thin clone, resize, delete, download and upload their bytes).
 * Thin routes: the agent holds the logic and its errors keep their code and
 * message. Only an online host is asked (409 otherwise).
 */
export async function registerStorageRoutes(parent: ManagerApp, deps: StorageRouteDeps): Promise<void> {
  // Its own scope: only the upload route takes application/octet-stream, as a stream.
  await parent.register(async (scope) => storageRoutes(scope.withTypeProvider<TypeBoxTypeProvider>(), deps));
}

async function storageRoutes(app: FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, FastifyBaseLogger, TypeBoxTypeProvider>, { store, link }: StorageRouteDeps): Promise<void> {
  app.addContentTypeParser('application/octet-stream', (request, payload, done) => {
    if (request.routeOptions.url?.endsWith('/content')) done(null, payload);
    else done(Object.assign(new Error(`Unsupported Media Type: application/octet-stream`), { statusCode: 415 }), undefined);
  });

  async function onlineHost(id: string): Promise<HostRecord> {
    const host = await store.hosts.find(id);
    if (host.state !== 'online') throw errors.conflict(`Host "${host.name}" is ${host.state}: its storage is reachable only while it is online`, { host: host.name, state: host.state });
    return host;
  }
  const poolPath = (p: { pool: string }) => `/v1/pools/${seg(p.pool)}`;
  const volumePath = (p: { pool: string; volume: string }) => `${poolPath(p)}/volumes/${seg(p.volume)}`;

  // ------------------------------------------------------------ pools
  app.get('/api/v1/hosts/:id/pools', { config: { permission: 'storage.read' }, schema: { tags: ['storage'], summary: "List a host's storage pools (read from the host)", params: HostRef } }, async (request) =>
    link.call<PoolInfo[]>(await onlineHost(request.params.id), 'GET', '/v1/pools'),
  );
  app.post('/api/v1/hosts/:id/pools', { config: { permission: 'storage.write' }, schema: { tags: ['storage'], summary: 'Define a storage pool on a host: a new or empty directory, or an iSCSI target whose LUNs QEMU opens itself; shared: the same path or target on several hosts', params: HostRef, body: PoolSpec, response: { 201: PoolInfo, ...errorResponses } } }, async (request, reply) =>
    reply.status(201).send(await link.call<PoolInfo>(await onlineHost(request.params.id), 'POST', '/v1/pools', request.body)),
  );
  app.get('/api/v1/hosts/:id/pools/:pool', { config: { permission: 'storage.read' }, schema: { tags: ['storage'], summary: 'Show a storage pool of a host', params: PoolRef } }, async (request) =>
    link.call<PoolInfo>(await onlineHost(request.params.id), 'GET', poolPath(request.params)),
  );
  app.delete('/api/v1/hosts/:id/pools/:pool', { config: { permission: 'storage.write' }, schema: { tags: ['storage'], summary: 'Forget an empty storage pool of a host (its directory stays)', params: PoolRef, response: { 204: Type.Null(), ...errorResponses } } }, async (request, reply) => {
    await link.call(await onlineHost(request.params.id), 'DELETE', poolPath(request.params));
    return reply.status(204).send(null);
  });

  // ------------------------------------------------------------ volumes
  app.get('/api/v1/hosts/:id/pools/:pool/volumes', { config: { permission: 'storage.read' }, schema: { tags: ['storage'], summary: 'List the volumes of a pool', params: PoolRef } }, async (request) =>
    link.call<VolumeInfo[]>(await onlineHost(request.params.id), 'GET', `${poolPath(request.params)}/volumes`),
  );
  app.post(
    '/api/v1/hosts/:id/pools/:pool/volumes',
    {
      config: { permission: 'storage.write' },
      schema: { tags: ['storage'], summary: 'Create a volume ({name, sizeBytes}) or a thin qcow2 clone ({name, cloneOf}); the format follows the name (.qcow2 or raw)', params: PoolRef, body: ManagerVolumeCreate, response: { 201: VolumeInfo, ...errorResponses } },
      // Before the schema, so the answer says why rather than "unknown field".
      preValidation: async (request) => {
        const body = request.body as Record<string, unknown> | null;
        if (body && typeof body === 'object' && 'importFrom' in body) {
          throw errors.invalid('importFrom is not accepted through the manager: paths on a host are not for API callers to name; upload the bytes with PUT .../volumes/:volume/content instead');
        }
      },
    },
    async (request, reply) => {
      const host = await onlineHost(request.params.id);
      return reply.status(201).send(await link.call<VolumeInfo>(host, 'POST', `${poolPath(request.params)}/volumes`, request.body, 300_000));
    },
  );
  app.get('/api/v1/hosts/:id/pools/:pool/volumes/:volume', { config: { permission: 'storage.read' }, schema: { tags: ['storage'], summary: 'Show a volume', params: VolumeRef } }, async (request) =>
    link.call<VolumeInfo>(await onlineHost(request.params.id), 'GET', volumePath(request.params)),
  );
  app.post('/api/v1/hosts/:id/pools/:pool/volumes/:volume/resize', { config: { permission: 'storage.write' }, schema: { tags: ['storage'], summary: 'Grow a volume (never shrinks; not while a running VM uses it)', params: VolumeRef, body: VolumeResize, response: { 200: VolumeInfo, ...errorResponses } } }, async (request) =>
    link.call<VolumeInfo>(await onlineHost(request.params.id), 'POST', `${volumePath(request.params)}/resize`, request.body, 300_000),
  );
  app.delete('/api/v1/hosts/:id/pools/:pool/volumes/:volume', { config: { permission: 'storage.write' }, schema: { tags: ['storage'], summary: 'Delete a volume (not while a VM uses it or a clone is based on it)', params: VolumeRef, response: { 204: Type.Null(), ...errorResponses } } }, async (request, reply) => {
    await link.call(await onlineHost(request.params.id), 'DELETE', volumePath(request.params));
    return reply.status(204).send(null);
  });

  // ------------------------------------------------------------ content
  app.get('/api/v1/hosts/:id/pools/:pool/volumes/:volume/content', { config: { permission: 'storage.read' }, schema: { tags: ['storage'], summary: "Download a volume's bytes: raw as it is, qcow2 as the qcow2 file (application/octet-stream)", params: VolumeRef } }, async (request, reply) => {
    const answer = await link.stream(await onlineHost(request.params.id), 'GET', `${volumePath(request.params)}/content`);
    void reply.header('content-type', 'application/octet-stream').header('content-disposition', `attachment; filename="${request.params.volume}"`);
    const length = answer.headers['content-length'];
    if (length !== undefined) void reply.header('content-length', length);
    return reply.send(answer);
  });
  app.put(
    '/api/v1/hosts/:id/pools/:pool/volumes/:volume/content',
    { config: { permission: 'storage.write' }, bodyLimit: maxVolumeUploadBytes, schema: { tags: ['storage'], summary: 'Upload the bytes of a NEW volume (application/octet-stream, at most 8 GiB; a qcow2 with a backing or data file is refused)', params: VolumeRef, response: { 201: VolumeInfo, ...errorResponses } } },
    async (request, reply) => {
      try {
        return await uploadVolume(request.params, request.body as Readable | undefined, request.headers, reply);
      } catch (error) {
        abandonUpload(request.raw, reply);
        throw error;
      }
    },
  );

  /** Streams the client's bytes to the agent (counted against the limit) and answers the agent's VolumeInfo. */
  async function uploadVolume(params: { id: string; pool: string; volume: string }, body: Readable | undefined, headers: IncomingHttpHeaders, reply: FastifyReply) {
    const host = await onlineHost(params.id);
    if (!body || typeof (body as Partial<Readable>).pipe !== 'function' || !(headers['content-type'] ?? '').startsWith('application/octet-stream')) {
      throw errors.invalid('The volume content must be sent as application/octet-stream');
    }
    const tooLarge = () => errors.tooLarge(`The upload is larger than ${maxVolumeUploadBytes} bytes`, { limit: maxVolumeUploadBytes });
    const declared = headers['content-length'];
    if (declared !== undefined && Number(declared) > maxVolumeUploadBytes) throw tooLarge();
    let size = 0;
    const counted = body.pipe(
      new Transform({
        transform(chunk: Buffer, _encoding, done) {
          size += chunk.length;
          if (size > maxVolumeUploadBytes) done(tooLarge());
          else done(null, chunk);
        },
      }),
    );
    body.once('error', (error) => counted.destroy(error));
    const answer = await link.stream(host, 'PUT', `${volumePath(params)}/content`, {
      body: counted,
      headers: { 'content-type': 'application/octet-stream', ...(declared !== undefined ? { 'content-length': declared } : {}) },
    });
    const chunks: Buffer[] = [];
    for await (const chunk of answer as AsyncIterable<Buffer>) chunks.push(chunk);
    return reply.status(201).send(JSON.parse(Buffer.concat(chunks).toString('utf8')) as VolumeInfo);
  }
}

/**
 * An upload refused before its body was read (unknown host, volume exists, ...):
 * the rest is discarded and the connection closed after the answer, so the
 * client's unread bytes cannot stall the next request on it.
 */
export function abandonUpload(raw: IncomingMessage, reply: FastifyReply): void {
  if (raw.readableEnded) return;
  void reply.header('connection', 'close');
  raw.unpipe();
  raw.resume();
}

import { createReadStream } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest, RawServerDefault } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import { Type } from 'typebox';
import {
  evaMediaType,
  ActionQuery,
  ErrorBody,
  Operation,
  VmcastApply,
  VmcastChannel,
  VmcastChannelCreate,
  VmcastFollow,
  VmcastFollowRequest,
  VmcastKey,
  VmcastKeyCreate,
  VmcastPollResult,
  VmcastPackage,
  VmcastPackagePublish,
  VmcastPackageReleasePublish,
  VmcastPublish,
  VmcastRelease,
  VmPackages,
  VmPackagesApprove,
  VmcastSubscription,
  VmcastSubscriptionCreate,
} from '@drover/api';
import type { OperationRecord, Store, VmcastChannelRecord, VmcastFollowRecord, VmcastKeyRecord, VmcastPackageRecord, VmcastReleaseRecord, VmcastSubscriptionRecord } from '../store/index.js';
import { keyIdOf } from './manifest.js';
import type { VmcastService } from './vmcast.service.js';

type ManagerApp = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, Logger, TypeBoxTypeProvider>;
type Answer = { status: number; body: unknown };

export interface VmcastRouteDeps {
  vmcast: VmcastService;
  store: Store;
  idempotent: (request: FastifyRequest, reply: FastifyReply, run: (key: string | undefined) => Promise<Answer>) => Promise<FastifyReply>;
  operationAnswer: (op: OperationRecord, wait: boolean | undefined) => Promise<Answer>;
  actor: (request: FastifyRequest) => string;
}

const errorResponses = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 413: ErrorBody, 503: ErrorBody };
const Ref = Type.Object({ id: Type.String({ minLength: 1, maxLength: 100 }) }, { additionalProperties: false });
const ChannelRef = Type.Object({ channel: Type.String({ minLength: 1, maxLength: 100 }) }, { additionalProperties: false });
const ImageRef = Type.Object({ channel: Type.String({ minLength: 1, maxLength: 100 }), name: Type.String({ minLength: 1, maxLength: 100 }), version: Type.String({ minLength: 1, maxLength: 100 }) }, { additionalProperties: false });
const KeyRef = Type.Object({ id: Type.String({ minLength: 1, maxLength: 100 }), keyId: Type.String({ minLength: 1, maxLength: 64, description: 'the key id: 64 hex digits' }) }, { additionalProperties: false });
const list = <T extends Parameters<typeof Type.Array>[0]>(item: T) => Type.Object({ items: Type.Array(item) });

export function publicKey(k: VmcastKeyRecord) {
  return { id: k.id, name: k.name, keyId: keyIdOf(k.publicKey), publicKey: k.publicKey, state: k.state as 'active', createdAt: k.createdAt, updatedAt: k.updatedAt };
}
export function publicChannel(c: VmcastChannelRecord) {
  return { id: c.id, name: c.name, title: c.title, description: c.description, feedPath: `/api/v1/vmcast/channels/${c.name}/feed.rss`, catalogPath: `/api/v1/vmcast/channels/${c.name}/catalog.json`, createdAt: c.createdAt };
}
export function publicSubscription(s: VmcastSubscriptionRecord) {
  return {
    id: s.id,
    name: s.name,
    url: s.url,
    pinnedKeys: s.pinnedKeys.map((k) => ({ keyId: k.keyId, revoked: k.revoked === true })),
    allowedHosts: s.allowedHosts,
    pollSeconds: s.pollSeconds,
    etag: s.etag,
    lastModified: s.lastModified,
    failures: s.failures,
    nextPollAt: s.nextPollAt,
    lastPolledAt: s.lastPolledAt,
    lastError: s.lastError,
    createdAt: s.createdAt,
  };
}

/**
 * VMcasting routes. The feed, the catalog and the release images are public
 * (`permission: 'public'`): subscribers read them without a token; what makes
 * them trustworthy is the signature, not the channel they travel on.
 */
export async function registerVmcastRoutes(app: ManagerApp, deps: VmcastRouteDeps): Promise<void> {
  const { vmcast, store, idempotent, operationAnswer, actor } = deps;
  const names = async (r: VmcastReleaseRecord) => ({
    channel: r.channelId ? ((await store.vmcast.channels.tryGet(r.channelId))?.name ?? null) : null,
    subscription: r.subscriptionId ? ((await store.vmcast.subscriptions.tryGet(r.subscriptionId))?.name ?? null) : null,
  });
  const publicRelease = async (r: VmcastReleaseRecord) => ({
    id: r.id,
    ...(await names(r)),
    name: r.name,
    version: r.version,
    state: r.state as 'published',
    manifest: r.manifest,
    url: r.url,
    keyId: r.keyId,
    imageId: r.imageId,
    reason: r.reason,
    receivedBytes: r.receivedBytes,
    createdAt: r.createdAt,
    updatedAt: r.updatedAt,
  });
  const publicFollow = async (f: VmcastFollowRecord) => {
    const vm = await store.vms.tryGet(f.vmId);
    const sub = await store.vmcast.subscriptions.tryGet(f.subscriptionId);
    const label = async (id: string | null) => {
      const r = id ? await store.vmcast.releases.tryGet(id) : undefined;
      return r ? `${r.name}:${r.version}` : null;
    };
    return { vmId: f.vmId, vm: vm?.name ?? f.vmId, channel: sub?.name ?? f.subscriptionId, policy: f.policy as 'auto', held: f.held, currentRelease: await label(f.currentReleaseId), pendingRelease: await label(f.pendingReleaseId), maintenanceWindow: f.maintenanceWindow, updatedAt: f.updatedAt };
  };
  const publicPackage = async (p: VmcastPackageRecord) => ({
    id: p.id,
    channel: p.channelId ? ((await store.vmcast.channels.tryGet(p.channelId))?.name ?? null) : null,
    subscription: p.subscriptionId ? ((await store.vmcast.subscriptions.tryGet(p.subscriptionId))?.name ?? null) : null,
    name: p.name,
    version: p.version,
    state: p.state as 'published',
    description: String((p.manifest as { description?: string }).description ?? ''),
    sha256: p.sha256,
    sizeBytes: p.sizeBytes,
    url: p.url,
    keyId: p.keyId,
    reason: p.reason,
    createdAt: p.createdAt,
    updatedAt: p.updatedAt,
  });
  const baseUrl = (request: FastifyRequest) => `${request.protocol}://${request.headers.host ?? request.hostname}`;

  // ---------------------------------------------------------------- publisher
  app.get('/api/v1/vmcast/keys', { config: { permission: 'vmcast.read' }, schema: { tags: ['vmcast'], summary: "List this manager's publisher keys (public halves)", response: { 200: list(VmcastKey), ...errorResponses } } }, async () => ({
    items: (await vmcast.listKeys()).map(publicKey),
  }));
  app.post('/api/v1/vmcast/keys', { config: { permission: 'vmcast.write' }, schema: { tags: ['vmcast'], summary: 'Create an Ed25519 publisher key; it becomes the active one and the previous one is retired (rotation)', body: VmcastKeyCreate, response: { 201: VmcastKey, ...errorResponses } } }, async (request, reply) =>
    reply.status(201).send(publicKey(await vmcast.createKey(request.body.name))),
  );
  app.post('/api/v1/vmcast/keys/:id/revoke', { config: { permission: 'vmcast.write' }, schema: { tags: ['vmcast'], summary: 'Revoke a publisher key: feeds announce it, releases it signed are signed again with the active key', params: Ref, response: { 200: VmcastKey, ...errorResponses } } }, async (request) =>
    publicKey(await vmcast.revokeKey(request.params.id)),
  );
  app.get('/api/v1/vmcast/channels', { config: { permission: 'vmcast.read' }, schema: { tags: ['vmcast'], summary: 'List the channels this manager publishes', response: { 200: list(VmcastChannel), ...errorResponses } } }, async () => ({
    items: (await vmcast.listChannels()).map(publicChannel),
  }));
  app.post('/api/v1/vmcast/channels', { config: { permission: 'vmcast.write' }, schema: { tags: ['vmcast'], summary: 'Create a channel to publish appliance releases on', body: VmcastChannelCreate, response: { 201: VmcastChannel, ...errorResponses } } }, async (request, reply) =>
    reply.status(201).send(publicChannel(await vmcast.createChannel(request.body))),
  );
  app.get('/api/v1/vmcast/channels/:channel/releases', { config: { permission: 'vmcast.read' }, schema: { tags: ['vmcast'], summary: "List a channel's published releases, newest first", params: ChannelRef, response: { 200: list(VmcastRelease), ...errorResponses } } }, async (request) => ({
    items: await Promise.all((await vmcast.channelReleases(request.params.channel)).map(publicRelease)),
  }));
  app.post('/api/v1/vmcast/channels/:channel/releases', { config: { permission: 'vmcast.write' }, schema: { tags: ['vmcast'], summary: 'Publish a qcow2 image of the library as a release of the channel, signed with the active key', params: ChannelRef, body: VmcastPublish, response: { 201: VmcastRelease, ...errorResponses } } }, async (request, reply) =>
    reply.status(201).send(await publicRelease(await vmcast.publish(request.params.channel, request.body))),
  );
  app.get('/api/v1/vmcast/channels/:channel/feed.rss', { config: { permission: 'public' }, schema: { tags: ['vmcast'], security: [], summary: "The channel's RSS 2.0 feed with the vmcast extension (public; ETag and Last-Modified, 304 when unchanged)", params: ChannelRef } }, async (request, reply) => {
    const feed = await vmcast.feed(request.params.channel, baseUrl(request));
    void reply.header('etag', feed.etag).header('last-modified', feed.lastModified).header('cache-control', 'no-cache');
    const inm = request.headers['if-none-match'];
    const ims = request.headers['if-modified-since'];
    if (inm !== undefined ? inm === feed.etag : ims !== undefined && Date.parse(ims) >= Date.parse(feed.lastModified)) return reply.status(304).send();
    return reply.type('application/rss+xml; charset=utf-8').send(feed.body);
  });
  app.get('/api/v1/vmcast/channels/:channel/catalog.json', { config: { permission: 'public' }, schema: { tags: ['vmcast'], security: [], summary: "The channel's releases as JSON, beside the feed (public)", params: ChannelRef } }, async (request) =>
    vmcast.catalog(request.params.channel, baseUrl(request)),
  );
  app.get('/api/v1/vmcast/channels/:channel/releases/:name/:version/image', { config: { permission: 'public' }, schema: { tags: ['vmcast'], security: [], summary: "A release's image, the feed's enclosure (public; HTTP Range for resumed downloads)", params: ImageRef } }, async (request, reply) => {
    const { file, size } = await vmcast.releaseImage(request.params.channel, request.params.name, request.params.version);
    return sendRanged(request, reply, file, size, 'application/x-qemu-disk');
  });

  // ---------------------------------------------------------------- appliance packages (.eva, publisher)
  app.get('/api/v1/vmcast/channels/:channel/appliance-packages', { config: { permission: 'vmcast.read' }, schema: { tags: ['vmcast'], summary: "List a channel's published appliance packages (.eva), newest first", params: ChannelRef, response: { 200: list(VmcastRelease), ...errorResponses } } }, async (request) => ({
    items: await Promise.all((await vmcast.channelAppliancePackages(request.params.channel)).map(publicRelease)),
  }));
  app.post('/api/v1/vmcast/channels/:channel/appliance-packages', { config: { permission: 'vmcast.write' }, schema: { tags: ['vmcast'], summary: 'Publish an imported appliance package (.eva) on the channel, signed with the active key; subscribers import it', params: ChannelRef, body: VmcastPackageReleasePublish, response: { 201: VmcastRelease, ...errorResponses } } }, async (request, reply) =>
    reply.status(201).send(await publicRelease(await vmcast.publishPackage(request.params.channel, request.body.package))),
  );
  app.get('/api/v1/vmcast/channels/:channel/appliance-packages/:name/:version/file', { config: { permission: 'public' }, schema: { tags: ['vmcast'], security: [], summary: "An appliance package's .eva file, the feed's enclosure (public; HTTP Range for resumed downloads)", params: ImageRef } }, async (request, reply) => {
    const { file, size } = await vmcast.appliancePackageFile(request.params.channel, request.params.name, request.params.version);
    return sendRanged(request, reply, file, size, evaMediaType);
  });
  async function sendRanged(request: FastifyRequest, reply: FastifyReply, file: string, size: number, type: string): Promise<FastifyReply> {
    void reply.header('accept-ranges', 'bytes').type(type);
    const range = request.headers.range;
    if (range) {
      const m = /^bytes=(\d+)-(\d*)$/.exec(range);
      const start = m ? Number(m[1]) : Number.NaN;
      const end = m && m[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
      if (!m || start >= size || start > end) return reply.status(416).header('content-range', `bytes */${size}`).send();
      return reply.status(206).header('content-range', `bytes ${start}-${end}/${size}`).header('content-length', String(end - start + 1)).send(createReadStream(file, { start, end }));
    }
    return reply.header('content-length', String(size)).send(createReadStream(file));
  }

  // ---------------------------------------------------------------- packages (publisher)
  const PackageRef = Type.Object({ channel: Type.String({ minLength: 1, maxLength: 100 }), name: Type.String({ minLength: 1, maxLength: 100 }), version: Type.String({ minLength: 1, maxLength: 100 }) }, { additionalProperties: false });
  app.get('/api/v1/vmcast/channels/:channel/packages', { config: { permission: 'vmcast.read' }, schema: { tags: ['vmcast'], summary: "List a channel's published packages (guest updates), by name, newest first", params: ChannelRef, response: { 200: list(VmcastPackage), ...errorResponses } } }, async (request) => ({
    items: await Promise.all((await vmcast.packages.channelPackages(request.params.channel)).map(publicPackage)),
  }));
  app.post('/api/v1/vmcast/channels/:channel/packages', { config: { permission: 'vmcast.write' }, schema: { tags: ['vmcast'], summary: 'Publish a package on the channel: a tar.gz (base64) of files with an `install` script, signed with the active key; guests of following VMs install it', params: ChannelRef, body: VmcastPackagePublish, response: { 201: VmcastPackage, ...errorResponses } } }, async (request, reply) =>
    reply.status(201).send(await publicPackage(await vmcast.packages.publish(request.params.channel, request.body))),
  );
  app.get('/api/v1/vmcast/channels/:channel/packages/:name/:version/archive', { config: { permission: 'public' }, schema: { tags: ['vmcast'], security: [], summary: "A package's archive, the feed's enclosure (public: the signature makes it trustworthy)", params: PackageRef } }, async (request, reply) => {
    const { file, size } = await vmcast.packages.packageArchive(request.params.channel, request.params.name, request.params.version);
    return reply.type('application/gzip').header('content-length', String(size)).send(createReadStream(file));
  });

  // ---------------------------------------------------------------- subscriber
  app.get('/api/v1/vmcast/subscriptions', { config: { permission: 'vmcast.read' }, schema: { tags: ['vmcast'], summary: 'List feed subscriptions (each is a channel local VMs can follow)', response: { 200: list(VmcastSubscription), ...errorResponses } } }, async () => ({
    items: (await vmcast.listSubscriptions()).map(publicSubscription),
  }));
  app.post('/api/v1/vmcast/subscriptions', { config: { permission: 'vmcast.write' }, schema: { tags: ['vmcast'], summary: "Subscribe to a feed, pinning the publisher's keys", body: VmcastSubscriptionCreate, response: { 201: VmcastSubscription, ...errorResponses } } }, async (request, reply) =>
    reply.status(201).send(publicSubscription(await vmcast.subscribe(request.body))),
  );
  app.delete('/api/v1/vmcast/subscriptions/:id', { config: { permission: 'vmcast.write' }, schema: { tags: ['vmcast'], summary: 'Unsubscribe (images already imported stay in the library)', params: Ref, response: { 204: Type.Null(), ...errorResponses } } }, async (request, reply) => {
    await vmcast.unsubscribe(request.params.id);
    return reply.status(204).send(null);
  });
  app.post('/api/v1/vmcast/subscriptions/:id/poll', { config: { permission: 'vmcast.write' }, schema: { tags: ['vmcast'], summary: 'Poll the feed now (conditional GET), download, verify and import new releases', params: Ref, response: { 200: VmcastPollResult, ...errorResponses } } }, async (request) =>
    vmcast.poll(request.params.id),
  );
  app.post('/api/v1/vmcast/subscriptions/:id/keys/:keyId/revoke', { config: { permission: 'vmcast.write' }, schema: { tags: ['vmcast'], summary: 'Mark a pinned publisher key revoked: what it signed is refused', params: KeyRef, response: { 200: VmcastSubscription, ...errorResponses } } }, async (request) =>
    publicSubscription(await vmcast.revokePinnedKey(request.params.id, request.params.keyId)),
  );
  app.get('/api/v1/vmcast/subscriptions/:id/releases', { config: { permission: 'vmcast.read' }, schema: { tags: ['vmcast'], summary: "List a subscription's releases (available, verified, quarantined with the reason)", params: Ref, response: { 200: list(VmcastRelease), ...errorResponses } } }, async (request) => ({
    items: await Promise.all((await vmcast.subscriptionReleases(request.params.id)).map(publicRelease)),
  }));

  app.get('/api/v1/vmcast/subscriptions/:id/packages', { config: { permission: 'vmcast.read' }, schema: { tags: ['vmcast'], summary: "List a subscription's packages (available, verified, quarantined with the reason)", params: Ref, response: { 200: list(VmcastPackage), ...errorResponses } } }, async (request) => ({
    items: await Promise.all((await vmcast.packages.subscriptionPackages(request.params.id)).map(publicPackage)),
  }));

  // ---------------------------------------------------------------- packages of a VM
  app.get('/api/v1/vms/:id/packages', { config: { permission: 'vm.read' }, schema: { tags: ['vmcast'], summary: "A VM's packages: installed (the guest's report, read from its host's agent now), offered, pending approval", params: Ref, response: { 200: VmPackages, ...errorResponses } } }, async (request) =>
    vmcast.packages.view(request.params.id),
  );
  app.post('/api/v1/vms/:id/packages/approve', { config: { permission: 'vm.write' }, schema: { tags: ['vmcast'], summary: "Approve a notify VM's pending packages (all, or {names}): they are offered to its guest", params: Ref, body: VmPackagesApprove, response: { 200: VmPackages, ...errorResponses } } }, async (request) =>
    vmcast.packages.approve(request.params.id, request.body.names, actor(request)),
  );

  // ---------------------------------------------------------------- update channels
  app.get('/api/v1/vmcast/follows', { config: { permission: 'vmcast.read' }, schema: { tags: ['vmcast'], summary: 'List the VMs that follow a channel, with policy, hold and pending update', response: { 200: list(VmcastFollow), ...errorResponses } } }, async () => ({
    items: await Promise.all((await vmcast.listFollows()).map(publicFollow)),
  }));
  app.put('/api/v1/vms/:id/follow', { config: { permission: 'vm.write' }, schema: { tags: ['vmcast'], summary: 'Make a VM follow a channel with a policy: auto, notify or pinned', params: Ref, body: VmcastFollowRequest, response: { 200: VmcastFollow, ...errorResponses } } }, async (request) =>
    publicFollow(await vmcast.follow(request.params.id, request.body)),
  );
  app.delete('/api/v1/vms/:id/follow', { config: { permission: 'vm.write' }, schema: { tags: ['vmcast'], summary: 'Stop following a channel', params: Ref, response: { 204: Type.Null(), ...errorResponses } } }, async (request, reply) => {
    await vmcast.unfollow(request.params.id);
    return reply.status(204).send(null);
  });
  for (const [action, held] of [['hold', true], ['unhold', false]] as const) {
    app.post(`/api/v1/vms/:id/follow/${action}`, { config: { permission: 'vm.write' }, schema: { tags: ['vmcast'], summary: held ? 'Hold a VM: no update reaches it whatever its policy' : 'Release the hold of a VM', params: Ref, response: { 200: VmcastFollow, ...errorResponses } } }, async (request) =>
      publicFollow(await vmcast.hold(request.params.id, held)),
    );
  }
  app.post('/api/v1/vms/:id/follow/apply', { config: { permission: 'vm.write' }, schema: { tags: ['vmcast'], summary: "Apply the VM's pending update (or {version}) now: stop, switch root disk, boot, health check, roll back on failure (an operation)", params: Ref, querystring: ActionQuery, body: VmcastApply, response: { 200: Operation, 202: Operation, ...errorResponses } } }, async (request, reply) =>
    idempotent(request, reply, async () => operationAnswer(await vmcast.apply(request.params.id, actor(request), request.body.version), request.query.wait)),
  );
}

import { createHash } from 'node:crypto';
import { constants, createReadStream, createWriteStream } from 'node:fs';
import { chmod, link, mkdir, open, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { DroverError, errors, isDroverError } from '@drover/core';
import { QemuImg } from '@drover/qemu';
import type { AgentLink } from '../hosts/agent-link.js';
import type { EventHub } from '../http/event-hub.js';
import { sniffBytes, sniffImageFormat } from '../images/image-format.js';
import { shownUrl } from '../images/image.service.js';
import type { ImageLibrary } from '../images/image-library.js';
import { vmPool } from '../images/vm-media.js';
import type { OperationContext, OperationRunner } from '../operations/operation-runner.js';
import type {
  FollowPolicy,
  ImageRecord,
  OperationRecord,
  PinnedKey,
  Store,
  VmcastChannelRecord,
  VmcastFollowRecord,
  VmcastKeyRecord,
  VmcastReleaseRecord,
  VmcastSubscriptionRecord,
} from '../store/index.js';
import type { VmService } from '../vms/vm.service.js';
import { enclosureType, evaEnclosureType, parseFeed, renderFeed, type EvaFeedItem, type FeedItem, type FeedKey } from './feed.js';
import { GuestPackageService } from './guest-packages.service.js';
import { itemRefusal } from './item-checks.js';
import { canonicalManifest, endorsementBytes, isEvaManifest, keyIdOf, newPublisherKey, signBytes, verifyBytes, type EvaReleaseManifest, type ReleaseManifest } from './manifest.js';

/** What VMcasting needs of the appliance package service (packages/manager/src/packages/package.service.ts). */
export interface AppliancePackages {
  find(ref: string): Promise<{ id: string; name: string; version: string; manifest: unknown }>;
  file(ref: string): Promise<{ file: string; size: number; name: string }>;
  importFile(file: string, options: { actor: string; source: 'vmcast'; origin: string; trustKeys?: string[] }): Promise<{ id: string; name: string; version: string }>;
}

export interface VmcastServiceOptions {
  store: Store;
  runner: OperationRunner;
  hub: EventHub;
  link: AgentLink;
  library: ImageLibrary;
  vms: VmService;
  logger: Logger;
  /** The largest feed read; a longer one is cut there and refused (default 4 MiB). */
  maxFeedBytes?: number;
  /** The largest release image downloaded. */
  maxImageBytes: number;
  maxVirtualBytes: number;
  downloadTimeoutMs: number;
  /** How long an updated VM has to print DROVER-READY (default 180 s). */
  healthTimeoutMs?: number;
  /** Polls subscriptions that are due every this many ms (0: never by itself; the API polls on demand). */
  tickMs?: number;
}

export interface PublishRequest {
  image: string;
  version?: string;
  name?: string;
  architecture?: string;
  bootMethod?: 'disk' | 'appliance-kernel';
  minMemoryMiB?: number;
  minCpus?: number;
  labels?: Record<string, string>;
}

export interface SubscribeRequest {
  name: string;
  url: string;
  pinnedKeys: string[];
  allowedHosts?: string[];
  pollSeconds?: number;
}

/** What one poll did. */
export interface PollResult {
  subscription: string;
  /** 200 (a new feed), 304 (unchanged) or 0 (refused before an answer). */
  status: number;
  bodyBytes: number;
  imported: string[];
  quarantined: Array<{ release: string; reason: string }>;
  failed: Array<{ release: string; reason: string }>;
  error?: string;
}

export interface FollowRequest {
  channel: string;
  policy: FollowPolicy;
  maintenanceWindow?: string;
}

const nameOk = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
const releaseVersionOk = /^[A-Za-z0-9_.+-]{1,64}$/;

/** Compares dotted versions numerically where both parts are numbers, else as text. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.');
  const pb = b.split('.');
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '0';
    const y = pb[i] ?? '0';
    const d = /^\d+$/.test(x) && /^\d+$/.test(y) ? Number(x) - Number(y) : x.localeCompare(y);
    if (d !== 0) return d;
  }
  return 0;
}

/** Is `now` (UTC) inside "HH:MM-HH:MM" (which may wrap midnight)? */
export function inWindow(window: string | undefined, now = new Date()): boolean {
  if (!window) return true;
  const m = /^(\d\d):(\d\d)-(\d\d):(\d\d)$/.exec(window);
  if (!m) return false;
  const minutes = now.getUTCHours() * 60 + now.getUTCMinutes();
  const from = Number(m[1]) * 60 + Number(m[2]);
  const to = Number(m[3]) * 60 + Number(m[4]);
  return from <= to ? minutes >= from && minutes < to : minutes >= from || minutes < to;
}

class RefusedRelease extends Error {}

/**
 * VMcasting: this manager as a publisher (keys, channels, releases signed with
 * Ed25519, an RSS 2.0 feed and a JSON catalog per channel, images served with
 * HTTP ranges) and as a subscriber (feeds polled with conditional GET and
 * backoff, releases downloaded with resume, verified and inspected before they
 * enter the image library, VMs updated along their channel's policy).
 */
export class VmcastService {
  private readonly locks = new Map<string, Promise<unknown>>();
  private timer: NodeJS.Timeout | undefined;
  private readonly maxFeedBytes: number;
  private appliancePackages: AppliancePackages | undefined;
  /** Package updates to guests: channel packages, offers pushed to agents, guests' reports. */
  readonly packages: GuestPackageService;

  constructor(private readonly o: VmcastServiceOptions) {
    this.maxFeedBytes = o.maxFeedBytes ?? 4 * 1024 * 1024;
    this.packages = new GuestPackageService({
      store: o.store,
      link: o.link,
      hub: o.hub,
      logger: o.logger,
      dir: path.join(o.library.libraryDir, 'packages'),
      event: (type, kind, id, data) => this.event(type, kind, id, data),
      checkUrl: (url, allowedHosts, what) => this.checkUrl(url, allowedHosts, what),
      downloadTimeoutMs: o.downloadTimeoutMs,
      findVm: (ref) => o.vms.find(ref),
    });
    this.packages.listen();
    o.runner.register('vm.release-update', {
      run: (ctx) => this.runUpdate(ctx),
      // A manager that died mid-update leaves the VM with whichever spec was stored; the update is asked again.
      recover: async (ctx) => {
        throw errors.unavailable(`The release update of VM "${String(ctx.op.params.vmName)}" was interrupted by a manager restart in phase "${ctx.op.phase}"; apply it again`);
      },
    });
  }

  /** Appliance packages (.eva) published on channels come from, and subscribed ones go into, this service. */
  useAppliancePackages(packages: AppliancePackages): void {
    this.appliancePackages = packages;
  }

  private needPackages(): AppliancePackages {
    if (!this.appliancePackages) throw errors.unavailable('Appliance packages are not available on this manager');
    return this.appliancePackages;
  }

  /** Starts polling due subscriptions (and applying auto updates whose window opened). */
  start(): void {
    if (!this.o.tickMs) return;
    this.timer = setInterval(() => void this.tick().catch((error: unknown) => this.o.logger.warn({ err: error }, 'vmcast tick failed')), this.o.tickMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.packages.close();
  }

  private async tick(): Promise<void> {
    const now = Date.now();
    for (const sub of (await this.o.store.vmcast.subscriptions.list({ limit: 1000 })).items) {
      if (sub.nextPollAt === null || Date.parse(sub.nextPollAt) <= now) await this.poll(sub.name);
    }
    for (const follow of await this.o.store.vmcast.follows.all()) {
      if (follow.policy === 'auto' && !follow.held && follow.pendingReleaseId && inWindow(this.windowOf(follow))) {
        await this.submitUpdate(follow, follow.pendingReleaseId, 'vmcast').catch(() => undefined);
      }
    }
    await this.packages.refreshAll();
  }

  private windowOf(follow: VmcastFollowRecord): string | undefined {
    return follow.maintenanceWindow ?? undefined;
  }

  private async serialized<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(key) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(fn);
    this.locks.set(key, next);
    try {
      return await next;
    } finally {
      if (this.locks.get(key) === next) this.locks.delete(key);
    }
  }

  private async event(type: string, kind: string, id: string, data: Record<string, unknown>): Promise<void> {
    const event = await this.o.store.events.append({ type, objectKind: kind, objectId: id, data });
    this.o.hub.publish({ ...event, data });
  }

  // ================================================================ publisher

  async listKeys(): Promise<VmcastKeyRecord[]> {
    return (await this.o.store.vmcast.keys.list({ limit: 1000 })).items;
  }

  /** A new active key; the previous active one becomes retired (it still verifies, and endorses the new one in the feed). */
  async createKey(name: string): Promise<VmcastKeyRecord> {
    if (!nameOk.test(name)) throw errors.invalid(`Invalid key name "${name}": lowercase letters, digits, "_.-", at most 63`, { field: 'name' });
    const pair = newPublisherKey();
    return this.o.store.transaction(async (tx) => {
      for (const key of (await tx.vmcast.keys.list({ limit: 1000, filter: { state: 'active' } })).items) await tx.vmcast.keys.update(key.id, { state: 'retired' });
      return tx.vmcast.keys.create({ name, publicKey: pair.publicKey, privateKey: pair.privateKey, state: 'active' });
    });
  }

  /** Revokes a key: its signatures are refused from now on; releases it signed are signed again with the active key. */
  async revokeKey(ref: string): Promise<VmcastKeyRecord> {
    const key = await this.o.store.vmcast.keys.find(ref);
    const revoked = await this.o.store.vmcast.keys.update(key.id, { state: 'revoked' });
    const active = await this.activeKey().catch(() => undefined);
    const keyId = keyIdOf(key.publicKey);
    for (const channel of (await this.o.store.vmcast.channels.list({ limit: 1000 })).items) {
      for (const release of await this.o.store.vmcast.releases.all({ channelId: channel.id })) {
        if (release.keyId !== keyId || !active) continue;
        const manifest = release.manifest as unknown as ReleaseManifest;
        await this.o.store.vmcast.releases.delete(release.id);
        await this.o.store.vmcast.releases.create({ ...this.releaseFields(release), keyId: keyIdOf(active.publicKey), signature: signBytes(canonicalManifest(manifest), active.privateKey) });
      }
    }
    await this.packages.resign(keyId, active);
    await this.event('vmcast.key.revoked', 'vmcast-key', key.id, { name: key.name, keyId });
    return revoked;
  }

  private releaseFields(r: VmcastReleaseRecord): Omit<VmcastReleaseRecord, 'id' | 'rev' | 'createdAt' | 'updatedAt'> {
    return { channelId: r.channelId, subscriptionId: r.subscriptionId, name: r.name, version: r.version, state: r.state, manifest: r.manifest, url: r.url, keyId: r.keyId, signature: r.signature, imageId: r.imageId, reason: r.reason, receivedBytes: r.receivedBytes };
  }

  private async activeKey(): Promise<VmcastKeyRecord> {
    const key = (await this.o.store.vmcast.keys.list({ limit: 1, filter: { state: 'active' } })).items[0];
    if (!key) throw errors.conflict('This manager has no active publisher key; create one (POST /api/v1/vmcast/keys)');
    return key;
  }

  async listChannels(): Promise<VmcastChannelRecord[]> {
    return (await this.o.store.vmcast.channels.list({ limit: 1000 })).items;
  }

  async createChannel(request: { name: string; title?: string; description?: string }): Promise<VmcastChannelRecord> {
    if (!nameOk.test(request.name)) throw errors.invalid(`Invalid channel name "${request.name}": lowercase letters, digits, "_.-", at most 63`, { field: 'name' });
    return this.o.store.vmcast.channels.create({ name: request.name, title: request.title ?? request.name, description: request.description ?? `Drover appliance channel ${request.name}` });
  }

  async channelReleases(ref: string): Promise<VmcastReleaseRecord[]> {
    const channel = await this.o.store.vmcast.channels.find(ref);
    return (await this.o.store.vmcast.releases.all({ channelId: channel.id })).filter((r) => !isEvaManifest(r.manifest)).sort((a, b) => compareVersions(b.version, a.version));
  }

  /** A channel's appliance packages (.eva), newest first. */
  async channelAppliancePackages(ref: string): Promise<VmcastReleaseRecord[]> {
    const channel = await this.o.store.vmcast.channels.find(ref);
    return (await this.o.store.vmcast.releases.all({ channelId: channel.id })).filter((r) => isEvaManifest(r.manifest)).sort((a, b) => compareVersions(b.version, a.version));
  }

  /** The content-addressed file of an appliance package's `.eva`: `<libraryDir>/sha256/<hex>.eva`. */
  evaBlobPath(sha256: string): string {
    return path.join(this.o.library.libraryDir, 'sha256', `${sha256}.eva`);
  }

  /**
   * Publishes an imported appliance package (by id or "name:version") on a
   * channel: its `.eva` file enters the content-addressed store, a manifest
   * (`kind: 'eva'`, sha256, size) is signed with the active key.
   */
  async publishPackage(channelRef: string, packageRef: string): Promise<VmcastReleaseRecord> {
    const channel = await this.o.store.vmcast.channels.find(channelRef);
    const packages = this.needPackages();
    const pkg = await packages.find(packageRef);
    const { file, size } = await packages.file(pkg.id);
    const existing = (await this.channelAppliancePackages(channel.id)).find((r) => r.name === pkg.name && r.version === pkg.version);
    if (existing) throw errors.conflict(`Channel "${channel.name}" already has appliance package ${pkg.name} ${pkg.version}`, { id: existing.id });
    const key = await this.activeKey();
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
    const sha256 = hash.digest('hex');
    const description = (pkg.manifest as { description?: unknown }).description;
    const manifest: EvaReleaseManifest = { kind: 'eva', channel: channel.name, name: pkg.name, version: pkg.version, description: typeof description === 'string' ? description : '', sha256, sizeBytes: size };
    await this.storeBlob(file, sha256, this.evaBlobPath(sha256));
    const release = await this.o.store.vmcast.releases.create({
      channelId: channel.id,
      subscriptionId: null,
      name: pkg.name,
      version: pkg.version,
      state: 'published',
      manifest: manifest as unknown as Record<string, unknown>,
      url: '',
      keyId: keyIdOf(key.publicKey),
      signature: signBytes(canonicalManifest(manifest), key.privateKey),
      imageId: null,
      reason: null,
      receivedBytes: size,
    });
    await this.event('vmcast.release.published', 'vmcast-release', release.id, { channel: channel.name, kind: 'eva', name: pkg.name, version: pkg.version, sha256, package: pkg.id });
    return release;
  }

  /** The `.eva` file of an appliance package published on a channel (the feed's enclosure). */
  async appliancePackageFile(channelRef: string, name: string, version: string): Promise<{ file: string; size: number }> {
    const release = (await this.channelAppliancePackages(channelRef)).find((r) => r.name === name && r.version === version);
    if (!release) throw errors.notFound('Appliance package', `${channelRef}/${name}/${version}`);
    const m = release.manifest as unknown as EvaReleaseManifest;
    return { file: this.evaBlobPath(m.sha256), size: m.sizeBytes };
  }

  private evaUrl(baseUrl: string, channel: string, name: string, version: string): string {
    return `${baseUrl}/api/v1/vmcast/channels/${encodeURIComponent(channel)}/appliance-packages/${encodeURIComponent(name)}/${encodeURIComponent(version)}/file`;
  }

  private async evaFeedItems(channelId: string, channelName: string, baseUrl: string): Promise<EvaFeedItem[]> {
    return (await this.channelAppliancePackages(channelId)).map((r) => {
      const manifest = r.manifest as unknown as EvaReleaseManifest;
      return { manifest, url: this.evaUrl(baseUrl, channelName, r.name, r.version), length: manifest.sizeBytes, keyId: r.keyId, signature: r.signature, pubDate: r.createdAt };
    });
  }

  /** The content-addressed file of a sha256 in the library: `<libraryDir>/sha256/<hex>.qcow2`. */
  blobPath(sha256: string): string {
    return path.join(this.o.library.libraryDir, 'sha256', `${sha256}.qcow2`);
  }

  /**
   * Publishes a library image (qcow2) as a release of a channel: its bytes
   * enter the content-addressed store, its manifest is signed with the active key.
   */
  async publish(channelRef: string, request: PublishRequest): Promise<VmcastReleaseRecord> {
    const channel = await this.o.store.vmcast.channels.find(channelRef);
    const key = await this.activeKey();
    const image = await this.o.library.resolve(request.image);
    if (image.format !== 'qcow2') throw errors.invalid(`Image "${image.name}:${image.version}" is ${image.format}; only qcow2 images can be published`, { field: 'image' });
    const version = request.version ?? image.version;
    const name = request.name ?? image.name;
    const existing = (await this.channelReleases(channel.id)).find((r) => r.version === version && r.name === name);
    if (existing) throw errors.conflict(`Channel "${channel.name}" already has release ${name} ${version}`, { id: existing.id });
    const metadata = await this.o.store.vmcast.metadata.byImage(image.id);
    const manifest: ReleaseManifest = {
      channel: channel.name,
      name,
      version,
      architecture: request.architecture ?? metadata?.architecture ?? 'x86_64',
      format: 'qcow2',
      bootMethod: request.bootMethod ?? (metadata?.bootMethod as ReleaseManifest['bootMethod'] | undefined) ?? 'disk',
      sha256: image.sha256,
      sizeBytes: image.sizeBytes,
      minMemoryMiB: request.minMemoryMiB ?? metadata?.minMemoryMiB ?? 64,
      minCpus: request.minCpus ?? metadata?.minCpus ?? 1,
      labels: request.labels ?? metadata?.labels ?? {},
    };
    await this.storeBlob(this.o.library.fileOf(image), image.sha256);
    const release = await this.o.store.vmcast.releases.create({
      channelId: channel.id,
      subscriptionId: null,
      name,
      version,
      state: 'published',
      manifest: manifest as unknown as Record<string, unknown>,
      url: '',
      keyId: keyIdOf(key.publicKey),
      signature: signBytes(canonicalManifest(manifest), key.privateKey),
      imageId: image.id,
      reason: null,
      receivedBytes: manifest.sizeBytes,
    });
    await this.event('vmcast.release.published', 'vmcast-release', release.id, { channel: channel.name, name, version, sha256: manifest.sha256 });
    return release;
  }

  /** Puts `file` into the content-addressed store under its sha256 (a hard link where possible). */
  private async storeBlob(file: string, sha256: string, blob = this.blobPath(sha256)): Promise<string> {
    await mkdir(path.dirname(blob), { recursive: true, mode: 0o700 });
    if (await stat(blob).then(() => true, () => false)) return blob;
    await link(file, blob).catch(async () => {
      const partial = `${blob}.partial`;
      await pipeline(createReadStream(file), createWriteStream(partial, { mode: 0o600 }));
      await rename(partial, blob);
    });
    return blob;
  }

  private enclosureUrl(baseUrl: string, channel: string, version: string, name: string): string {
    return `${baseUrl}/api/v1/vmcast/channels/${encodeURIComponent(channel)}/releases/${encodeURIComponent(name)}/${encodeURIComponent(version)}/image`;
  }

  private async feedKeys(): Promise<FeedKey[]> {
    const keys = await this.listKeys();
    const out: FeedKey[] = [];
    const valid = keys.filter((k) => k.state !== 'revoked');
    for (const key of keys) {
      const keyId = keyIdOf(key.publicKey);
      if (key.state === 'revoked') {
        out.push({ keyId, state: 'revoked' });
        continue;
      }
      out.push({ keyId, state: key.state as FeedKey['state'], publicKey: key.publicKey });
      // Each other valid key vouches for this one: a subscriber that pinned any of them learns a rotated key.
      for (const other of valid) {
        if (other.id === key.id) continue;
        out.push({ keyId, state: key.state as FeedKey['state'], publicKey: key.publicKey, endorsedBy: keyIdOf(other.publicKey), endorsement: signBytes(endorsementBytes(keyId), other.privateKey) });
      }
    }
    return out;
  }

  /** The RSS 2.0 feed of a channel, its ETag and Last-Modified. */
  async feed(channelRef: string, baseUrl: string): Promise<{ body: string; etag: string; lastModified: string }> {
    const channel = await this.o.store.vmcast.channels.find(channelRef);
    const releases = await this.channelReleases(channel.id);
    const items: FeedItem[] = releases.map((r) => {
      const manifest = r.manifest as unknown as ReleaseManifest;
      return { manifest, url: this.enclosureUrl(baseUrl, channel.name, r.version, r.name), length: manifest.sizeBytes, keyId: r.keyId, signature: r.signature, pubDate: r.createdAt };
    });
    const packages = await this.packages.feedItems(channel.id, channel.name, baseUrl);
    const evas = await this.evaFeedItems(channel.id, channel.name, baseUrl);
    const body = renderFeed({ name: channel.name, title: channel.title, description: channel.description, link: `${baseUrl}/api/v1/vmcast/channels/${channel.name}/catalog.json` }, await this.feedKeys(), items, packages, evas);
    const packageTimes = (await this.o.store.vmcast.packages.all({ channelId: channel.id })).map((p) => p.updatedAt);
    const newest = [channel.updatedAt, ...releases.map((r) => r.updatedAt), ...evas.map((e) => e.pubDate!), ...packageTimes, ...(await this.listKeys()).map((k) => k.updatedAt)].sort().at(-1)!;
    return { body, etag: `"${createHash('sha256').update(body).digest('hex').slice(0, 32)}"`, lastModified: new Date(newest).toUTCString() };
  }

  /** The same releases as JSON. */
  async catalog(channelRef: string, baseUrl: string): Promise<Record<string, unknown>> {
    const channel = await this.o.store.vmcast.channels.find(channelRef);
    const releases = await this.channelReleases(channel.id);
    return {
      channel: channel.name,
      title: channel.title,
      description: channel.description,
      feed: `${baseUrl}/api/v1/vmcast/channels/${channel.name}/feed.rss`,
      keys: (await this.feedKeys()).filter((k) => !k.endorsedBy),
      releases: releases.map((r) => ({
        ...(r.manifest as unknown as ReleaseManifest),
        url: this.enclosureUrl(baseUrl, channel.name, r.version, r.name),
        type: enclosureType,
        keyId: r.keyId,
        signature: r.signature,
        publishedAt: r.createdAt,
      })),
      packages: (await this.packages.feedItems(channel.id, channel.name, baseUrl)).map((p) => ({ ...p.manifest, url: p.url, type: 'application/gzip', keyId: p.keyId, signature: p.signature, publishedAt: p.pubDate })),
      appliancePackages: (await this.evaFeedItems(channel.id, channel.name, baseUrl)).map((p) => ({ ...p.manifest, url: p.url, type: evaEnclosureType, keyId: p.keyId, signature: p.signature, publishedAt: p.pubDate })),
    };
  }

  /** The file and size of a published release's image (served with ranges by the route). */
  async releaseImage(channelRef: string, name: string, version: string): Promise<{ file: string; size: number }> {
    const channel = await this.o.store.vmcast.channels.find(channelRef);
    const release = (await this.channelReleases(channel.id)).find((r) => r.version === version && r.name === name);
    if (!release) throw errors.notFound('Release', `${channel.name}/${name}/${version}`);
    const manifest = release.manifest as unknown as ReleaseManifest;
    return { file: this.blobPath(manifest.sha256), size: manifest.sizeBytes };
  }

  // ================================================================ subscriber

  async listSubscriptions(): Promise<VmcastSubscriptionRecord[]> {
    return (await this.o.store.vmcast.subscriptions.list({ limit: 1000 })).items;
  }

  async subscribe(request: SubscribeRequest): Promise<VmcastSubscriptionRecord> {
    if (!nameOk.test(request.name)) throw errors.invalid(`Invalid subscription name "${request.name}": lowercase letters, digits, "_.-", at most 63`, { field: 'name' });
    // The allow-list is for enclosures (images may come from a mirror); the feed URL is the operator's own choice.
    this.checkUrl(request.url, [], 'The feed URL');
    if (request.pinnedKeys.length === 0) throw errors.invalid('A subscription needs at least one pinned publisher key (PEM)', { field: 'pinnedKeys' });
    const pinnedKeys: PinnedKey[] = request.pinnedKeys.map((pem) => ({ keyId: keyIdOf(pem), publicKey: pem }));
    return this.o.store.vmcast.subscriptions.create({ name: request.name, url: request.url, pinnedKeys, allowedHosts: request.allowedHosts ?? [], pollSeconds: request.pollSeconds ?? 3600 });
  }

  async unsubscribe(ref: string): Promise<void> {
    const sub = await this.o.store.vmcast.subscriptions.find(ref);
    await this.o.store.vmcast.subscriptions.delete(sub.id);
  }

  /** Marks a pinned key revoked on this side: what it signed is refused from now on. */
  async revokePinnedKey(ref: string, keyId: string): Promise<VmcastSubscriptionRecord> {
    const sub = await this.o.store.vmcast.subscriptions.find(ref);
    if (!sub.pinnedKeys.some((k) => k.keyId === keyId)) throw errors.notFound('Pinned key', `${sub.name}/${keyId}`);
    return this.o.store.vmcast.subscriptions.update(sub.id, { pinnedKeys: sub.pinnedKeys.map((k) => (k.keyId === keyId ? { ...k, revoked: true } : k)) });
  }

  async subscriptionReleases(ref: string): Promise<VmcastReleaseRecord[]> {
    const sub = await this.o.store.vmcast.subscriptions.find(ref);
    return (await this.o.store.vmcast.releases.all({ subscriptionId: sub.id })).sort((a, b) => compareVersions(b.version, a.version));
  }

  /** http/https only, and on the allow-list when there is one; `invalid` with the reason otherwise. */
  private checkUrl(url: string, allowedHosts: string[], what: string): URL {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw errors.invalid(`${what} "${url.slice(0, 200)}" is not a valid URL`, { reasons: ['url'] });
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw errors.invalid(`${what} "${shownUrl(url)}" uses ${parsed.protocol.replace(':', '')}; only http and https are allowed`, { reasons: ['scheme'] });
    if (allowedHosts.length > 0 && !allowedHosts.includes(parsed.hostname) && !allowedHosts.includes(parsed.host)) {
      throw errors.invalid(`${what} "${shownUrl(url)}" is on host "${parsed.host}", which is not on the subscription's allow-list (${allowedHosts.join(', ')})`, { reasons: ['host'] });
    }
    return parsed;
  }

  /** Polls one subscription now (serialized with the timer's polls). */
  async poll(ref: string): Promise<PollResult> {
    const sub = await this.o.store.vmcast.subscriptions.find(ref);
    return this.serialized(`poll:${sub.id}`, () => this.pollNow(sub.id));
  }

  private async pollNow(id: string): Promise<PollResult> {
    const sub = await this.o.store.vmcast.subscriptions.get(id);
    const result: PollResult = { subscription: sub.name, status: 0, bodyBytes: 0, imported: [], quarantined: [], failed: [] };
    let feedText: string | undefined;
    try {
      this.checkUrl(sub.url, [], 'The feed URL');
      const headers: Record<string, string> = { accept: 'application/rss+xml, application/xml;q=0.9' };
      if (sub.etag) headers['if-none-match'] = sub.etag;
      if (sub.lastModified) headers['if-modified-since'] = sub.lastModified;
      const response = await fetch(sub.url, { headers, redirect: 'error', signal: AbortSignal.timeout(60_000) });
      result.status = response.status;
      if (response.status === 304) {
        await response.body?.cancel().catch(() => undefined);
      } else if (!response.ok || !response.body) {
        await response.body?.cancel().catch(() => undefined);
        throw errors.unavailable(`The feed ${shownUrl(sub.url)} was answered ${response.status}`);
      } else {
        const { text, bytes } = await this.readLimited(response, shownUrl(sub.url));
        result.bodyBytes = bytes;
        feedText = text;
        await this.o.store.vmcast.subscriptions.update(sub.id, { etag: response.headers.get('etag'), lastModified: response.headers.get('last-modified') });
      }
      if (feedText !== undefined) await this.ingest(sub.id, feedText, result);
      await this.o.store.vmcast.subscriptions.update(sub.id, { failures: 0, lastError: null, lastPolledAt: new Date().toISOString(), nextPollAt: new Date(Date.now() + sub.pollSeconds * 1000).toISOString() });
    } catch (error) {
      const message = error instanceof Error ? (isDroverError(error) ? error.message : `The feed ${shownUrl(sub.url)} could not be read: ${(error as { cause?: Error }).cause?.message ?? error.message}`) : String(error);
      result.error = message;
      const failures = sub.failures + 1;
      // Backoff: the interval doubles with each failure in a row, up to a day.
      const delay = Math.min(sub.pollSeconds * 2 ** failures, 86_400) * 1000;
      await this.o.store.vmcast.subscriptions.update(sub.id, { failures, lastError: message, lastPolledAt: new Date().toISOString(), nextPollAt: new Date(Date.now() + delay).toISOString() });
      await this.event('vmcast.feed.rejected', 'vmcast-subscription', sub.id, { subscription: sub.name, reason: message });
    }
    // Releases seen earlier whose download was cut: resumed now.
    for (const release of await this.o.store.vmcast.releases.all({ subscriptionId: sub.id, state: ['available', 'downloading'] })) {
      await this.download(release.id, result);
    }
    return result;
  }

  /** Reads a body up to the feed limit; past it the connection is cut and the feed refused. */
  private async readLimited(response: Response, shown: string): Promise<{ text: string; bytes: number }> {
    const declared = Number(response.headers.get('content-length') ?? Number.NaN);
    if (declared > this.maxFeedBytes) {
      await response.body!.cancel().catch(() => undefined);
      throw errors.tooLarge(`The feed ${shown} was refused: it announces ${declared} bytes, over the limit of ${this.maxFeedBytes}`, { limit: this.maxFeedBytes });
    }
    const chunks: Buffer[] = [];
    let bytes = 0;
    const reader = response.body!.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      bytes += value.byteLength;
      if (bytes > this.maxFeedBytes) {
        await reader.cancel().catch(() => undefined);
        throw errors.tooLarge(`The feed ${shown} was refused: it is larger than the limit of ${this.maxFeedBytes} bytes (reading stopped there)`, { limit: this.maxFeedBytes });
      }
      chunks.push(Buffer.from(value));
    }
    return { text: Buffer.concat(chunks).toString('utf8'), bytes };
  }

  /** Learns keys and records the feed's new releases: each one checked (URL, size, signature) before anything is downloaded. */
  private async ingest(subId: string, text: string, result: PollResult): Promise<void> {
    const feed = parseFeed(text);
    let sub = await this.o.store.vmcast.subscriptions.get(subId);
    // Keys: a revocation is always taken (it only removes trust); a new key only when a pinned, valid key endorses it.
    let pins = [...sub.pinnedKeys];
    for (const key of feed.keys) {
      if (key.state === 'revoked') pins = pins.map((p) => (p.keyId === key.keyId ? { ...p, revoked: true } : p));
    }
    for (const key of feed.keys) {
      if (key.state === 'revoked' || !key.publicKey || !key.endorsedBy || !key.endorsement || pins.some((p) => p.keyId === key.keyId)) continue;
      const endorser = pins.find((p) => p.keyId === key.endorsedBy && !p.revoked);
      if (!endorser) continue;
      let id: string;
      try {
        id = keyIdOf(key.publicKey);
      } catch {
        continue;
      }
      if (id === key.keyId && verifyBytes(endorsementBytes(id), key.endorsement, endorser.publicKey)) pins.push({ keyId: id, publicKey: key.publicKey });
    }
    if (JSON.stringify(pins) !== JSON.stringify(sub.pinnedKeys)) sub = await this.o.store.vmcast.subscriptions.update(sub.id, { pinnedKeys: pins });
    const known = await this.o.store.vmcast.releases.all({ subscriptionId: sub.id });
    for (const bad of feed.malformed) {
      result.quarantined.push({ release: bad.title, reason: bad.reason });
      await this.event('vmcast.release.quarantined', 'vmcast-subscription', sub.id, { subscription: sub.name, release: bad.title, reason: `The item "${bad.title}" was refused: ${bad.reason}` });
    }
    for (const item of feed.items) {
      const m = item.manifest;
      if (known.some((r) => !isEvaManifest(r.manifest) && r.name === m.name && r.version === m.version)) continue;
      await this.recordItem(sub, item, `${m.name} ${m.version}`, 'its name or version is not a valid image name', result);
    }
    await this.ingestEvas(sub, feed.evas, known, result);
    await this.packages.ingest(sub, feed.packages, result);
  }

  /** Records a release or appliance package item: available, or quarantined with the reason it was refused before download (see itemRefusal). */
  private async recordItem(sub: VmcastSubscriptionRecord, item: FeedItem | EvaFeedItem, label: string, invalidName: string, result: PollResult): Promise<void> {
    const m = item.manifest;
    const reason = itemRefusal(sub, item, { checkUrl: (url, allowedHosts, what) => this.checkUrl(url, allowedHosts, what), maxBytes: this.o.maxImageBytes, nameOk, versionOk: releaseVersionOk, invalidName });
    const release = await this.o.store.vmcast.releases.create({
      channelId: null,
      subscriptionId: sub.id,
      name: m.name,
      version: m.version,
      state: reason ? 'quarantined' : 'available',
      manifest: m as unknown as Record<string, unknown>,
      url: item.url,
      keyId: item.keyId,
      signature: item.signature,
      imageId: null,
      reason: reason ?? null,
      receivedBytes: 0,
    });
    if (reason) await this.quarantined(release, label, reason, result);
  }

  /** The feed's appliance packages: checked like releases (URL, size, pinned key, signature) before anything is downloaded. */
  private async ingestEvas(sub: VmcastSubscriptionRecord, evas: EvaFeedItem[], known: VmcastReleaseRecord[], result: PollResult): Promise<void> {
    for (const item of evas) {
      const m = item.manifest;
      if (known.some((r) => isEvaManifest(r.manifest) && r.name === m.name && r.version === m.version)) continue;
      await this.recordItem(sub, item, `${m.name} ${m.version} (appliance package)`, 'its name or version is not a valid package name', result);
    }
  }

  /**
   * A downloaded `.eva` whose size and sha256 match its signed manifest is
   * imported by the package service with the subscription's pinned key that
   * signed the item as a trusted key; a refused package is quarantined.
   */
  private async importEva(release: VmcastReleaseRecord, part: string, sub: VmcastSubscriptionRecord): Promise<{ id: string; name: string; version: string }> {
    const pin = sub.pinnedKeys.find((p) => p.keyId === release.keyId && !p.revoked);
    if (!pin) throw new RefusedRelease(`its key ${release.keyId.slice(0, 16)}… is no longer pinned (or was revoked)`);
    try {
      return await this.needPackages().importFile(part, { actor: 'vmcast', source: 'vmcast', origin: `vmcast:${sub.name} ${shownUrl(release.url)}`, trustKeys: [pin.publicKey] });
    } catch (cause) {
      if (isDroverError(cause) && (cause.code === 'invalid' || cause.code === 'conflict')) throw new RefusedRelease(cause.message);
      throw cause;
    }
  }

  private async quarantined(release: VmcastReleaseRecord, label: string, reason: string, result: PollResult): Promise<void> {
    const sub = release.subscriptionId ? await this.o.store.vmcast.subscriptions.get(release.subscriptionId) : undefined;
    result.quarantined.push({ release: label, reason });
    await this.event('vmcast.release.quarantined', 'vmcast-release', release.id, { subscription: sub?.name, name: release.name, version: release.version, reason: `Release "${label}" was quarantined: ${reason}` });
  }

  private partPath(releaseId: string): string {
    return path.join(this.o.library.libraryDir, '.vmcast', `${releaseId}.part`);
  }

  /** Progress of downloads running now, by release id (bytes so far). */
  readonly progress = new Map<string, number>();

  /**
   * Downloads a release into `<libraryDir>/.vmcast/<id>.part`, resuming with a
   * Range request where an earlier attempt stopped; then checks size, sha256 and
   * the image itself (forced qcow2, no backing file, no data file) before it
   * enters the library. A refused release is quarantined and its bytes removed;
   * a cut download keeps its bytes for the next attempt and is never used.
   */
  private async download(releaseId: string, result: PollResult): Promise<void> {
    let release = await this.o.store.vmcast.releases.get(releaseId);
    const m = release.manifest as unknown as ReleaseManifest;
    const label = `${m.name} ${m.version}`;
    const part = this.partPath(release.id);
    await mkdir(path.dirname(part), { recursive: true, mode: 0o700 });
    const sub = await this.o.store.vmcast.subscriptions.get(release.subscriptionId!);
    const quarantine = async (reason: string) => {
      await rm(part, { force: true });
      release = await this.o.store.vmcast.releases.update(release.id, { state: 'quarantined', reason });
      await this.quarantined(release, label, reason, result);
    };
    try {
      this.checkUrl(release.url, sub.allowedHosts, 'The enclosure URL');
    } catch (cause) {
      await quarantine((cause as Error).message);
      return;
    }
    const have = await stat(part).then((s) => s.size, () => 0);
    const hash = createHash('sha256');
    if (have > 0) for await (const chunk of createReadStream(part)) hash.update(chunk as Buffer);
    let received = have;
    release = await this.o.store.vmcast.releases.update(release.id, { state: 'downloading', receivedBytes: have });
    try {
      if (have < m.sizeBytes) {
        const response = await fetch(release.url, { headers: have > 0 ? { range: `bytes=${have}-` } : {}, redirect: 'error', signal: AbortSignal.timeout(this.o.downloadTimeoutMs) });
        if (!response.ok || !response.body) {
          await response.body?.cancel().catch(() => undefined);
          throw errors.unavailable(`The download of ${shownUrl(release.url)} was answered ${response.status}`);
        }
        let append = have > 0;
        if (have > 0 && response.status !== 206) {
          // The server ignored the range: start over.
          append = false;
          received = 0;
          hash.destroy();
        }
        const digest = append ? hash : createHash('sha256');
        const file = await open(part, constants.O_WRONLY | constants.O_CREAT | constants.O_NOFOLLOW | (append ? constants.O_APPEND : constants.O_TRUNC), 0o600);
        let lastSaved = received;
        const counter = new Transform({
          transform: (chunk: Buffer, _e, done) => {
            received += chunk.length;
            if (received > m.sizeBytes) return done(new RefusedRelease(`it is larger than its signed size ${m.sizeBytes} (wrong size)`));
            digest.update(chunk);
            this.progress.set(release.id, received);
            if (received - lastSaved >= 64 * 1024 * 1024) {
              lastSaved = received;
              void this.o.store.vmcast.releases.update(release.id, { receivedBytes: received }).catch(() => undefined);
            }
            done(null, chunk);
          },
        });
        try {
          await pipeline(Readable.fromWeb(response.body as import('node:stream/web').ReadableStream), counter, createWriteStream('', { fd: file }) as Writable);
        } finally {
          this.progress.delete(release.id);
        }
        if (received !== m.sizeBytes) throw new RefusedRelease(`it has ${received} bytes where ${m.sizeBytes} were signed (wrong size)`);
        const sha = digest.digest('hex');
        if (sha !== m.sha256) throw new RefusedRelease(`its sha256 ${sha} differs from the signed ${m.sha256} (the image was altered)`);
      } else {
        if (have > m.sizeBytes) throw new RefusedRelease(`it has more bytes than its signed size ${m.sizeBytes} (wrong size)`);
        const sha = hash.digest('hex');
        if (sha !== m.sha256) throw new RefusedRelease(`its sha256 ${sha} differs from the signed ${m.sha256} (the image was altered)`);
      }
      if (isEvaManifest(release.manifest)) {
        const pkg = await this.importEva(release, part, sub);
        await rm(part, { force: true });
        release = await this.o.store.vmcast.releases.update(release.id, { state: 'verified', reason: null, receivedBytes: m.sizeBytes });
        result.imported.push(`${label} (appliance package)`);
        await this.event('vmcast.release.verified', 'vmcast-release', release.id, { subscription: sub.name, kind: 'eva', name: m.name, version: m.version, package: pkg.id });
        return;
      }
      await this.inspect(part, label);
      const image = await this.enterLibrary(release, part, sub);
      release = await this.o.store.vmcast.releases.update(release.id, { state: 'verified', imageId: image.id, reason: null, receivedBytes: m.sizeBytes });
      result.imported.push(label);
      await this.event('vmcast.release.verified', 'vmcast-release', release.id, { subscription: sub.name, name: m.name, version: m.version, image: `${image.name}:${image.version}` });
      await this.offer(release);
    } catch (cause) {
      if (cause instanceof RefusedRelease) return quarantine(cause.message);
      const reason = isDroverError(cause) ? cause.message : `the download stopped at ${received} of ${m.sizeBytes} bytes: ${(cause as { cause?: Error }).cause?.message ?? (cause as Error).message}`;
      await this.o.store.vmcast.releases.update(release.id, { state: 'available', receivedBytes: await stat(part).then((s) => s.size, () => 0), reason });
      result.failed.push({ release: label, reason });
    }
  }

  /** The untrusted-image checks of image imports: format from the content, qemu-img with the format forced. */
  private async inspect(file: string, label: string): Promise<void> {
    const handle = await open(file, 'r');
    const header = Buffer.alloc(sniffBytes);
    try {
      const { bytesRead } = await handle.read(header, 0, header.length, 0);
      header.fill(0, bytesRead);
    } finally {
      await handle.close();
    }
    if (sniffImageFormat(header) !== 'qcow2') throw new RefusedRelease('it is not a qcow2 image (no qcow2 header)');
    try {
      await QemuImg.inspectUntrusted(file, 'qcow2', { maxVirtualSizeBytes: this.o.maxVirtualBytes });
      const check = await QemuImg.check(file, 'qcow2');
      if (check.corruptions > 0 || check.checkErrors > 0) throw new RefusedRelease(`qemu-img check found ${check.corruptions} corruptions and ${check.checkErrors} errors`);
    } catch (cause) {
      if (cause instanceof RefusedRelease) throw cause;
      const reasons = isDroverError(cause) ? (cause.details as { reasons?: string[] }).reasons : undefined;
      if (reasons) throw new RefusedRelease(`the image ${label} was refused as qcow2: ${reasons.join('; ')}`);
      throw cause;
    }
  }

  /** Moves a verified download into the content-addressed store and registers it as an image with its metadata. */
  private async enterLibrary(release: VmcastReleaseRecord, part: string, sub: VmcastSubscriptionRecord): Promise<ImageRecord> {
    const m = release.manifest as unknown as ReleaseManifest;
    const blob = this.blobPath(m.sha256);
    await mkdir(path.dirname(blob), { recursive: true, mode: 0o700 });
    await chmod(part, 0o600);
    await rename(part, blob);
    const existing = await this.o.store.images.getRelease(m.name, m.version).catch(() => undefined);
    if (existing) {
      if (existing.sha256 === m.sha256) return existing;
      throw new RefusedRelease(`the library already has a different image "${m.name}:${m.version}"`);
    }
    const named = this.o.library.fileOf({ name: m.name, version: m.version, format: 'qcow2' });
    await mkdir(path.dirname(named), { recursive: true, mode: 0o700 });
    await rm(named, { force: true });
    await link(blob, named);
    const image = await this.o.store.images.create({ name: m.name, version: m.version, format: 'qcow2', sizeBytes: m.sizeBytes, sha256: m.sha256, source: `vmcast:${sub.name} ${shownUrl(release.url)}` });
    await this.o.store.vmcast.metadata.create({ imageId: image.id, architecture: m.architecture, bootMethod: m.bootMethod, minMemoryMiB: m.minMemoryMiB, minCpus: m.minCpus, labels: m.labels });
    return image;
  }

  // ================================================================ update channels

  async follow(vmRef: string, request: FollowRequest): Promise<VmcastFollowRecord> {
    const vm = await this.o.vms.find(vmRef);
    const sub = await this.o.store.vmcast.subscriptions.find(request.channel);
    if (request.maintenanceWindow !== undefined && !/^(\d\d):(\d\d)-(\d\d):(\d\d)$/.test(request.maintenanceWindow)) {
      throw errors.invalid(`Invalid maintenance window "${request.maintenanceWindow}": expected "HH:MM-HH:MM" (UTC)`, { field: 'maintenanceWindow' });
    }
    const imageId = (vm.spec as { imageId?: string }).imageId;
    const current = (await this.o.store.vmcast.releases.all({ subscriptionId: sub.id })).find((r) => r.imageId === imageId);
    const existing = await this.o.store.vmcast.follows.byVm(vm.id);
    const follow = existing
      ? await this.o.store.vmcast.follows.update(existing.id, { subscriptionId: sub.id, policy: request.policy, maintenanceWindow: request.maintenanceWindow ?? null, ...(current ? { currentReleaseId: current.id } : {}) })
      : await this.o.store.vmcast.follows.create({ vmId: vm.id, subscriptionId: sub.id, policy: request.policy, held: false, currentReleaseId: current?.id ?? null, maintenanceWindow: request.maintenanceWindow ?? null });
    await this.event('vmcast.follow.changed', 'vm', vm.id, { vm: vm.name, channel: sub.name, policy: request.policy });
    await this.packages.push(vm.id).catch((error: unknown) => this.o.logger.warn({ vm: vm.name, err: error }, 'package offer not pushed'));
    return follow;
  }

  async unfollow(vmRef: string): Promise<void> {
    const follow = await this.followOf(vmRef);
    await this.o.store.vmcast.follows.delete(follow.id);
    await this.packages.push(follow.vmId).catch((error: unknown) => this.o.logger.warn({ vmId: follow.vmId, err: error }, 'package offer not pushed'));
  }

  async followOf(vmRef: string): Promise<VmcastFollowRecord> {
    const vm = await this.o.vms.find(vmRef);
    const follow = await this.o.store.vmcast.follows.byVm(vm.id);
    if (!follow) throw errors.notFound('Channel follow of VM', vm.name);
    return follow;
  }

  async listFollows(): Promise<VmcastFollowRecord[]> {
    return this.o.store.vmcast.follows.all();
  }

  async hold(vmRef: string, held: boolean): Promise<VmcastFollowRecord> {
    const follow = await this.followOf(vmRef);
    const updated = await this.o.store.vmcast.follows.update(follow.id, { held });
    await this.packages.push(follow.vmId).catch((error: unknown) => this.o.logger.warn({ vmId: follow.vmId, err: error }, 'package offer not pushed'));
    return updated;
  }

  /** A release became verified: auto followers update (inside their window), notify followers get a pending update; pinned and held ones are left alone. */
  private async offer(release: VmcastReleaseRecord): Promise<void> {
    for (const follow of await this.o.store.vmcast.follows.all({ subscriptionId: release.subscriptionId! })) {
      if (follow.policy === 'pinned' || follow.held) continue;
      if (follow.currentReleaseId) {
        const current = await this.o.store.vmcast.releases.tryGet(follow.currentReleaseId);
        if (current && compareVersions(release.version, current.version) <= 0) continue;
      }
      const vm = await this.o.store.vms.tryGet(follow.vmId);
      if (!vm) continue;
      await this.o.store.vmcast.follows.update(follow.id, { pendingReleaseId: release.id });
      if (follow.policy === 'notify' || !inWindow(this.windowOf(follow))) {
        await this.event('vmcast.update.pending', 'vm', vm.id, { vm: vm.name, release: `${release.name} ${release.version}`, releaseId: release.id });
        continue;
      }
      await this.submitUpdate(follow, release.id, 'vmcast').catch((error: unknown) => this.o.logger.warn({ vm: vm.name, err: error }, 'auto update not started'));
    }
  }

  /** Applies a VM's pending update (or `releaseRef`, a version of its channel) now, as an operation. */
  async apply(vmRef: string, actor: string, version?: string): Promise<OperationRecord> {
    const follow = await this.followOf(vmRef);
    let releaseId = follow.pendingReleaseId;
    if (version !== undefined) {
      const release = (await this.o.store.vmcast.releases.all({ subscriptionId: follow.subscriptionId })).find((r) => r.version === version && r.state === 'verified' && !isEvaManifest(r.manifest));
      if (!release) throw errors.notFound('Verified release', version);
      releaseId = release.id;
    }
    if (!releaseId) throw errors.conflict(`VM "${vmRef}" has no pending update`);
    if (follow.held) throw errors.conflict(`VM "${vmRef}" is held: release the hold first`);
    return this.submitUpdate(follow, releaseId, actor);
  }

  private async submitUpdate(follow: VmcastFollowRecord, releaseId: string, actor: string): Promise<OperationRecord> {
    const vm = await this.o.store.vms.get(follow.vmId);
    const release = await this.o.store.vmcast.releases.get(releaseId);
    if (release.state !== 'verified' || !release.imageId) throw errors.conflict(`Release ${release.name} ${release.version} is ${release.state}, not verified`);
    const spec = vm.spec as { image: string; imageId: string; rootVolume?: string };
    return this.o.runner.submit(
      {
        kind: 'vm.release-update',
        targetKind: 'vm',
        targetId: `release-update:${vm.id}`,
        params: { vmId: vm.id, vmName: vm.name, followId: follow.id, releaseId, before: { image: spec.image, imageId: spec.imageId, rootVolume: spec.rootVolume ?? null }, after: { image: `${release.name}:${release.version}`, imageId: release.imageId } },
        actor,
        idempotencyKey: null,
      },
      `VM "${vm.name}"`,
    );
  }

  private async vmAction(vmId: string, action: string, params: Record<string, unknown> = {}): Promise<void> {
    const op = await this.o.vms.action(vmId, action, params, 'vmcast');
    const done = await this.o.runner.wait(op.id, 600_000);
    if (done.state !== 'done') throw errors.unavailable(`The ${action} of the VM failed: ${JSON.stringify(done.error)}`);
  }

  private async serialText(vmId: string): Promise<string> {
    const vm = await this.o.store.vms.get(vmId);
    if (!vm.hostId) return '';
    const host = await this.o.store.hosts.get(vm.hostId);
    return (await this.o.link.serialLog(host, vm.id, 0)).text;
  }

  /** Waits for the VM's boot after `offset` to print DROVER-READY (healthy) or DROVER-FAILED / nothing in time (unhealthy). */
  private async healthCheck(vmId: string, offset: number): Promise<{ ok: boolean; reason: string }> {
    const deadline = Date.now() + (this.o.healthTimeoutMs ?? 180_000);
    for (;;) {
      const full = await this.serialText(vmId).catch(() => '');
      const text = full.length >= offset ? full.slice(offset) : full;
      const failed = /^DROVER-(FAILED|PANIC)[^\n]*/m.exec(text);
      if (failed) return { ok: false, reason: failed[0].trim() };
      const ready = /^DROVER-READY[^\n]*/m.exec(text);
      if (ready) return { ok: true, reason: ready[0].trim() };
      if (Date.now() > deadline) return { ok: false, reason: 'no DROVER-READY line in time' };
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  private async setMedia(vmId: string, media: { image: string; imageId: string; rootVolume: string | null; imageFormat?: 'qcow2' }): Promise<void> {
    const vm = await this.o.store.vms.get(vmId);
    const spec: Record<string, unknown> = { ...(vm.spec as Record<string, unknown>), image: media.image, imageId: media.imageId };
    if (media.rootVolume) spec['rootVolume'] = media.rootVolume;
    else delete spec['rootVolume'];
    const image = await this.o.store.images.get(media.imageId);
    if (image.format === 'appliance') delete spec['imageFormat'];
    else spec['imageFormat'] = 'qcow2';
    await this.o.vms.publish(await this.o.store.vms.update(vmId, { spec }));
  }

  /**
   * One update: stop the VM, keep its current root disk untouched (the
   * rollback point), switch to a new thin clone of the release's root disk
   * (data and added disks stay), boot, health check; on failure boot the
   * previous root disk again. The result records before and after.
   */
  private async runUpdate(ctx: OperationContext): Promise<unknown> {
    const p = ctx.op.params as { vmId: string; vmName: string; followId: string; releaseId: string; before: { image: string; imageId: string; rootVolume: string | null }; after: { image: string; imageId: string } };
    const release = await this.o.store.vmcast.releases.get(p.releaseId);
    const vm = await this.o.store.vms.get(p.vmId);
    const wasRunning = vm.state === 'running';
    await ctx.phase('stop', 10, wasRunning ? 'stopping the VM' : `the VM is ${vm.state}`);
    if (wasRunning) await this.vmAction(vm.id, 'stop', { timeoutMs: 30_000 });
    await ctx.phase('switch', 30, `${p.before.image} → ${p.after.image}`);
    const newRoot = `${vm.id}.root-${release.id.slice(0, 8)}.qcow2`;
    await this.setMedia(vm.id, { image: p.after.image, imageId: p.after.imageId, rootVolume: newRoot });
    let health: { ok: boolean; reason: string } = { ok: true, reason: 'not started (the VM was not running)' };
    if (wasRunning) {
      await ctx.phase('boot', 50);
      const offset = (await this.serialText(vm.id).catch(() => '')).length;
      try {
        await this.vmAction(vm.id, 'start');
        await ctx.phase('health', 70);
        health = await this.healthCheck(vm.id, offset);
      } catch (error) {
        health = { ok: false, reason: error instanceof Error ? error.message : String(error) };
      }
    }
    if (!health.ok) {
      await ctx.phase('rollback', 85, health.reason);
      const now = await this.o.store.vms.get(vm.id);
      if (now.state === 'running') await this.vmAction(vm.id, 'force-off');
      await this.setMedia(vm.id, p.before);
      await this.vmAction(vm.id, 'start');
      await this.dropVolume(vm.id, newRoot);
      await this.o.store.vmcast.follows.update(p.followId, { pendingReleaseId: null }).catch(() => undefined);
      await this.event('vmcast.update.rolled_back', 'vm', vm.id, { vm: vm.name, release: `${release.name} ${release.version}`, reason: health.reason, before: p.before.image, after: p.after.image });
      throw new DroverError('unavailable', `The update of VM "${vm.name}" to ${release.name} ${release.version} failed its health check (${health.reason}); it was rolled back to ${p.before.image}`, {
        details: { before: p.before, after: p.after, rolledBack: true, reason: health.reason },
      });
    }
    await ctx.phase('confirm', 95, health.reason);
    await this.dropVolume(vm.id, p.before.rootVolume ?? `${vm.id}.root.qcow2`);
    await this.o.store.vmcast.follows.update(p.followId, { currentReleaseId: release.id, pendingReleaseId: null }).catch(() => undefined);
    await this.event('vmcast.update.applied', 'vm', vm.id, { vm: vm.name, before: p.before.image, after: p.after.image });
    return { before: p.before, after: { ...p.after, rootVolume: newRoot }, health: health.reason };
  }

  /** Removes a root disk no longer used (best effort: a host that is away keeps it). */
  private async dropVolume(vmId: string, volume: string): Promise<void> {
    const vm = await this.o.store.vms.get(vmId);
    if (!vm.hostId) return;
    const host = await this.o.store.hosts.get(vm.hostId);
    await this.o.link.deleteVolume(host, vmPool, volume).catch((error: unknown) => this.o.logger.warn({ vm: vm.name, volume, err: error }, 'old root disk kept'));
  }
}

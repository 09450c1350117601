import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { errors, isDroverError } from '@drover/core';
import type { GuestPackageState } from '@drover/api';
import type { AgentLink } from '../hosts/agent-link.js';
import type { DroverEvent, EventHub } from '../http/event-hub.js';
import type { HostRecord, PackageVersionEntry, Store, VmcastPackageRecord, VmcastSubscriptionRecord, VmRecord } from '../store/index.js';
import type { PackageFeedItem } from './feed.js';
import { canonicalManifest, keyIdOf, signBytes, verifyBytes, type PackageManifest } from './manifest.js';
import { checkPinnedSignature, itemRefusal } from './item-checks.js';
import { inspectPackageArchive, maxPackageBytes } from './package-archive.js';
import { compareVersions, type PollResult } from './vmcast.service.js';

export interface GuestPackageServiceOptions {
  store: Store;
  link: AgentLink;
  hub: EventHub;
  logger: Logger;
  /** Where package archives are kept: `<dir>/<sha256>.tar.gz`. */
  dir: string;
  event: (type: string, kind: string, id: string, data: Record<string, unknown>) => Promise<void>;
  /** http/https and the allow-list (the subscription's), or `invalid`. */
  checkUrl: (url: string, allowedHosts: string[], what: string) => URL;
  downloadTimeoutMs: number;
  /** A VM by id or name (`not_found` otherwise). */
  findVm: (ref: string) => Promise<VmRecord>;
}

export interface PackagePublishRequest {
  name: string;
  version: string;
  description?: string;
  archiveBase64: string;
}

/** What a VM has, is offered and waits for (`drover vm packages`). */
export interface VmPackagesView {
  vmId: string;
  vm: string;
  channel: string | null;
  policy: 'auto' | 'notify' | 'pinned' | null;
  held: boolean;
  installed: PackageVersionEntry[];
  reportedAt: string | null;
  offered: PackageVersionEntry[];
  pending: PackageVersionEntry[];
  pushedTo: string | null;
  pushedAt: string | null;
}

const nameOk = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
const versionOk = /^[A-Za-z0-9_.+-]{1,64}$/;
/** VM states in which the guest may be asking for packages: its host gets the offer. */
const onHostStates = ['starting', 'running', 'paused'];

/**
 * Package updates to guests: a channel carries packages (a signed tar.gz of
 * files plus an `install` script) next to its releases. Subscribers verify
 * them like releases (pinned key, signature, size, sha256, and the archive's
 * entries) before anything is offered. Each VM that follows the channel gets
 * an offer along its policy (auto: the latest versions; notify: what the
 * operator approved; pinned or held: nothing), pushed to its host's agent with
 * the archives; the guest's update agent pulls them from the metadata address
 * and reports what it installed, which the manager reads back from the agent.
 */
export class GuestPackageService {
  private readonly pushes = new Map<string, Promise<unknown>>();
  private unsubscribe: (() => void) | undefined;

  constructor(private readonly o: GuestPackageServiceOptions) {}

  /** Pushes a VM's offer again whenever it runs somewhere (a start, a restart, a migration's switchover). */
  listen(): void {
    this.unsubscribe ??= this.o.hub.subscribe((event: DroverEvent) => {
      if (event.type !== 'vm.updated' || (event.data as { state?: string }).state !== 'running') return;
      void this.pushIfFollowing(event.objectId);
    });
  }

  close(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  blobPath(sha256: string): string {
    return path.join(this.o.dir, `${sha256}.tar.gz`);
  }

  // ================================================================ publisher

  async publish(channelRef: string, request: PackagePublishRequest): Promise<VmcastPackageRecord> {
    const channel = await this.o.store.vmcast.channels.find(channelRef);
    if (!nameOk.test(request.name)) throw errors.invalid(`Invalid package name "${request.name}": lowercase letters, digits, "_.-", at most 63`, { field: 'name' });
    if (!versionOk.test(request.version)) throw errors.invalid(`Invalid package version "${request.version}"`, { field: 'version' });
    const archive = Buffer.from(request.archiveBase64, 'base64');
    if (archive.length === 0 || archive.toString('base64').replace(/=+$/, '') !== request.archiveBase64.replace(/\s/g, '').replace(/=+$/, '')) {
      throw errors.invalid('The package archive is not valid base64', { field: 'archiveBase64' });
    }
    if (archive.length > maxPackageBytes) throw errors.tooLarge(`The package archive is ${archive.length} bytes, over the limit of ${maxPackageBytes}`, { limit: maxPackageBytes });
    const inspected = inspectPackageArchive(archive);
    if ('refused' in inspected) throw errors.invalid(`The package archive was refused: ${inspected.refused}`, { field: 'archiveBase64' });
    const existing = (await this.o.store.vmcast.packages.all({ channelId: channel.id, name: request.name })).find((p) => p.version === request.version);
    if (existing) throw errors.conflict(`Channel "${channel.name}" already has package ${request.name} ${request.version}`, { id: existing.id });
    const key = (await this.o.store.vmcast.keys.list({ limit: 1, filter: { state: 'active' } })).items[0];
    if (!key) throw errors.conflict('This manager has no active publisher key; create one (POST /api/v1/vmcast/keys)');
    const sha256 = createHash('sha256').update(archive).digest('hex');
    await this.storeBlob(sha256, archive);
    const manifest: PackageManifest = { kind: 'package', channel: channel.name, name: request.name, version: request.version, description: request.description ?? '', sha256, sizeBytes: archive.length };
    const pkg = await this.o.store.vmcast.packages.create({
      channelId: channel.id,
      subscriptionId: null,
      name: manifest.name,
      version: manifest.version,
      state: 'published',
      manifest: manifest as unknown as Record<string, unknown>,
      sha256,
      sizeBytes: archive.length,
      url: '',
      keyId: keyIdOf(key.publicKey),
      signature: signBytes(canonicalManifest(manifest), key.privateKey),
      reason: null,
    });
    await this.o.event('vmcast.package.published', 'vmcast-package', pkg.id, { channel: channel.name, name: pkg.name, version: pkg.version, sha256 });
    return pkg;
  }

  private async storeBlob(sha256: string, bytes: Buffer): Promise<void> {
    await mkdir(this.o.dir, { recursive: true, mode: 0o700 });
    const blob = this.blobPath(sha256);
    const partial = `${blob}.partial`;
    await writeFile(partial, bytes, { mode: 0o600 });
    await rename(partial, blob);
  }

  /** Packages a revoked key signed are signed again with the active key (as releases are). */
  async resign(revokedKeyId: string, active: { publicKey: string; privateKey: string } | undefined): Promise<void> {
    if (!active) return;
    for (const pkg of await this.o.store.vmcast.packages.all({ state: 'published' })) {
      if (pkg.keyId !== revokedKeyId) continue;
      await this.o.store.vmcast.packages.update(pkg.id, { keyId: keyIdOf(active.publicKey), signature: signBytes(canonicalManifest(pkg.manifest as unknown as PackageManifest), active.privateKey) });
    }
  }

  async channelPackages(channelRef: string): Promise<VmcastPackageRecord[]> {
    const channel = await this.o.store.vmcast.channels.find(channelRef);
    return (await this.o.store.vmcast.packages.all({ channelId: channel.id })).sort(byNameThenNewest);
  }

  async subscriptionPackages(ref: string): Promise<VmcastPackageRecord[]> {
    const sub = await this.o.store.vmcast.subscriptions.find(ref);
    return (await this.o.store.vmcast.packages.all({ subscriptionId: sub.id })).sort(byNameThenNewest);
  }

  archiveUrl(baseUrl: string, channel: string, name: string, version: string): string {
    return `${baseUrl}/api/v1/vmcast/channels/${encodeURIComponent(channel)}/packages/${encodeURIComponent(name)}/${encodeURIComponent(version)}/archive`;
  }

  /** The feed items of a channel's packages. */
  async feedItems(channelId: string, channelName: string, baseUrl: string): Promise<PackageFeedItem[]> {
    return (await this.o.store.vmcast.packages.all({ channelId })).sort(byNameThenNewest).map((p) => ({
      manifest: p.manifest as unknown as PackageManifest,
      url: this.archiveUrl(baseUrl, channelName, p.name, p.version),
      length: p.sizeBytes,
      keyId: p.keyId,
      signature: p.signature,
      pubDate: p.createdAt,
    }));
  }

  /** The file of a published package (the feed's enclosure). */
  async packageArchive(channelRef: string, name: string, version: string): Promise<{ file: string; size: number }> {
    const channel = await this.o.store.vmcast.channels.find(channelRef);
    const pkg = (await this.o.store.vmcast.packages.all({ channelId: channel.id, name })).find((p) => p.version === version);
    if (!pkg) throw errors.notFound('Package', `${channel.name}/${name}/${version}`);
    return { file: this.blobPath(pkg.sha256), size: pkg.sizeBytes };
  }

  // ================================================================ subscriber

  /** The feed's package items: each checked (URL, size, pinned key, signature) before anything is downloaded; then downloads and offers. */
  async ingest(sub: VmcastSubscriptionRecord, items: PackageFeedItem[], result: PollResult): Promise<void> {
    const known = await this.o.store.vmcast.packages.all({ subscriptionId: sub.id });
    for (const item of items) {
      const m = item.manifest;
      const label = `${m.name} ${m.version} (package)`;
      const same = known.find((p) => p.name === m.name && p.version === m.version);
      if (same) {
        // Re-signed by the publisher after a key revocation: the same bytes under a valid pinned key.
        const pin = sub.pinnedKeys.find((p) => p.keyId === item.keyId && !p.revoked);
        if (same.keyId !== item.keyId && same.sha256 === m.sha256 && pin && verifyBytes(canonicalManifest(m), item.signature, pin.publicKey)) {
          await this.o.store.vmcast.packages.update(same.id, { keyId: item.keyId, signature: item.signature });
        }
        continue;
      }
      const reason = itemRefusal(sub, item, { checkUrl: this.o.checkUrl, maxBytes: maxPackageBytes, nameOk, versionOk, invalidName: 'its name or version is not valid' });
      const pkg = await this.o.store.vmcast.packages.create({
        channelId: null,
        subscriptionId: sub.id,
        name: m.name,
        version: m.version,
        state: reason ? 'quarantined' : 'available',
        manifest: m as unknown as Record<string, unknown>,
        sha256: m.sha256,
        sizeBytes: m.sizeBytes,
        url: item.url,
        keyId: item.keyId,
        signature: item.signature,
        reason: reason ?? null,
      });
      if (reason) await this.quarantined(pkg, sub, label, reason, result);
    }
    const fresh = new Set<string>();
    for (const pkg of await this.o.store.vmcast.packages.all({ subscriptionId: sub.id, state: 'available' })) {
      if (await this.download(pkg, sub, result)) fresh.add(pkg.id);
    }
    if (fresh.size > 0 || items.length > 0) await this.offerChannel(sub.id, fresh);
  }

  private async quarantined(pkg: VmcastPackageRecord, sub: VmcastSubscriptionRecord, label: string, reason: string, result: PollResult): Promise<void> {
    result.quarantined.push({ release: label, reason });
    await this.o.event('vmcast.package.quarantined', 'vmcast-package', pkg.id, { subscription: sub.name, name: pkg.name, version: pkg.version, reason: `Package "${pkg.name} ${pkg.version}" was quarantined: ${reason}` });
  }

  /** Downloads a package (small: held in memory, bounded), checks size, sha256 and entries; true once verified. */
  private async download(pkg: VmcastPackageRecord, sub: VmcastSubscriptionRecord, result: PollResult): Promise<boolean> {
    const label = `${pkg.name} ${pkg.version} (package)`;
    const quarantine = async (reason: string) => {
      const updated = await this.o.store.vmcast.packages.update(pkg.id, { state: 'quarantined', reason });
      await this.quarantined(updated, sub, label, reason, result);
      return false;
    };
    try {
      this.o.checkUrl(pkg.url, sub.allowedHosts, 'The enclosure URL');
    } catch (cause) {
      return quarantine((cause as Error).message);
    }
    let bytes: Buffer;
    try {
      const response = await fetch(pkg.url, { redirect: 'error', signal: AbortSignal.timeout(this.o.downloadTimeoutMs) });
      if (!response.ok || !response.body) {
        await response.body?.cancel().catch(() => undefined);
        throw errors.unavailable(`The download of ${pkg.url} was answered ${response.status}`);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      const reader = response.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        size += value.byteLength;
        if (size > pkg.sizeBytes) {
          await reader.cancel().catch(() => undefined);
          return quarantine(`it is larger than its signed size ${pkg.sizeBytes} (wrong size)`);
        }
        chunks.push(Buffer.from(value));
      }
      bytes = Buffer.concat(chunks);
    } catch (cause) {
      const reason = isDroverError(cause) ? cause.message : `the download stopped: ${(cause as { cause?: Error }).cause?.message ?? (cause as Error).message}`;
      await this.o.store.vmcast.packages.update(pkg.id, { reason });
      result.failed.push({ release: label, reason });
      return false;
    }
    if (bytes.length !== pkg.sizeBytes) return quarantine(`it has ${bytes.length} bytes where ${pkg.sizeBytes} were signed (wrong size)`);
    const sha = createHash('sha256').update(bytes).digest('hex');
    if (sha !== pkg.sha256) return quarantine(`its sha256 ${sha} differs from the signed ${pkg.sha256} (the archive was altered)`);
    const inspected = inspectPackageArchive(bytes);
    if ('refused' in inspected) return quarantine(`the archive was refused: ${inspected.refused}`);
    await this.storeBlob(sha, bytes);
    await this.o.store.vmcast.packages.update(pkg.id, { state: 'verified', reason: null });
    result.imported.push(label);
    await this.o.event('vmcast.package.verified', 'vmcast-package', pkg.id, { subscription: sub.name, name: pkg.name, version: pkg.version, sha256: sha });
    return true;
  }

  // ================================================================ offers

  /** The newest verified package of each name whose signature still verifies with a valid pinned key. */
  private async latestVerified(sub: VmcastSubscriptionRecord): Promise<Map<string, VmcastPackageRecord[]>> {
    const byName = new Map<string, VmcastPackageRecord[]>();
    for (const pkg of await this.o.store.vmcast.packages.all({ subscriptionId: sub.id, state: 'verified' })) {
      try {
        checkPinnedSignature(sub, pkg.manifest as unknown as PackageManifest, pkg.keyId, pkg.signature);
      } catch {
        continue; // its key was revoked since (or unpinned): never offered
      }
      byName.set(pkg.name, [...(byName.get(pkg.name) ?? []), pkg]);
    }
    for (const list of byName.values()) list.sort((a, b) => compareVersions(b.version, a.version));
    return byName;
  }

  /** What a VM is offered and what waits for approval, along its follow (none, pinned or held: nothing). */
  async offerFor(vmId: string): Promise<{ offered: VmcastPackageRecord[]; pending: VmcastPackageRecord[] }> {
    const follow = await this.o.store.vmcast.follows.byVm(vmId);
    if (!follow || follow.policy === 'pinned' || follow.held) return { offered: [], pending: [] };
    const sub = await this.o.store.vmcast.subscriptions.get(follow.subscriptionId);
    const approved = (await this.o.store.vmcast.vmPackages.byVm(vmId))?.approved ?? {};
    const offered: VmcastPackageRecord[] = [];
    const pending: VmcastPackageRecord[] = [];
    for (const versions of (await this.latestVerified(sub)).values()) {
      const newest = versions[0]!;
      if (follow.policy === 'auto') {
        offered.push(newest);
        continue;
      }
      const ok = versions.find((p) => p.version === approved[p.name]);
      if (ok) offered.push(ok);
      if (ok !== newest) pending.push(newest);
    }
    return { offered: offered.sort(byNameThenNewest), pending: pending.sort(byNameThenNewest) };
  }

  /** Pushes every follower's offer again; `fresh` (packages verified just now) raise `vmcast.package.pending` for notify VMs. */
  private async offerChannel(subscriptionId: string, fresh: ReadonlySet<string>): Promise<void> {
    for (const follow of await this.o.store.vmcast.follows.all({ subscriptionId })) {
      const { pending } = await this.offerFor(follow.vmId);
      const vm = await this.o.store.vms.tryGet(follow.vmId);
      for (const p of pending) {
        if (!fresh.has(p.id)) continue;
        await this.o.event('vmcast.package.pending', 'vm', follow.vmId, { vm: vm?.name, package: `${p.name} ${p.version}` });
      }
      await this.push(follow.vmId).catch((error: unknown) => this.o.logger.warn({ vm: vm?.name, err: error }, 'package offer not pushed'));
    }
  }

  private async pushIfFollowing(vmId: string): Promise<void> {
    const follows = await this.o.store.vmcast.follows.byVm(vmId).catch(() => undefined);
    const row = await this.o.store.vmcast.vmPackages.byVm(vmId).catch(() => undefined);
    if (!follows && !row) return;
    await this.push(vmId).catch((error: unknown) => this.o.logger.warn({ vmId, err: error }, 'package offer not pushed'));
  }

  /**
   * Pushes a VM's offer to the agent of the host it is on: the archives it
   * lacks first, then the offer. One push at a time per VM; the host it left
   * (a migration) forgets its offer. A VM on no host: nothing to push (the
   * next start pushes).
   */
  push(vmId: string): Promise<void> {
    const previous = this.pushes.get(vmId) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(() => this.pushNow(vmId));
    this.pushes.set(vmId, next);
    void next.finally(() => {
      if (this.pushes.get(vmId) === next) this.pushes.delete(vmId);
    }).catch(() => undefined);
    return next;
  }

  private async pushNow(vmId: string): Promise<void> {
    const vm = await this.o.store.vms.tryGet(vmId);
    if (!vm) return;
    const { offered } = await this.offerFor(vmId);
    const row = await this.o.store.vmcast.vmPackages.byVm(vmId);
    if (row?.pushedHostId && row.pushedHostId !== vm.hostId) {
      const old = await this.o.store.hosts.tryGet(row.pushedHostId);
      if (old) await this.o.link.call(old, 'DELETE', `/v1/vms/${vm.id}/package-offer`).catch(() => undefined);
    }
    if (!vm.hostId || !onHostStates.includes(vm.state)) {
      await this.o.store.vmcast.vmPackages.put(vmId, { offered: offered.map(entry), pushedHostId: null });
      return;
    }
    const host = await this.o.store.hosts.get(vm.hostId);
    for (const pkg of offered) await this.ensureArchive(host, pkg);
    await this.o.link.call(host, 'PUT', `/v1/vms/${vm.id}/package-offer`, { vmName: vm.name, packages: offered.map((p) => ({ name: p.name, version: p.version, sha256: p.sha256, sizeBytes: p.sizeBytes })) });
    await this.o.store.vmcast.vmPackages.put(vmId, { offered: offered.map(entry), pushedHostId: host.id, pushedAt: new Date().toISOString() });
  }

  private async ensureArchive(host: HostRecord, pkg: VmcastPackageRecord): Promise<void> {
    const present = await this.o.link.call<{ present: boolean }>(host, 'GET', `/v1/package-cache/${pkg.sha256}`);
    if (present.present) return;
    const file = this.blobPath(pkg.sha256);
    const size = (await stat(file)).size;
    const answer = await this.o.link.stream(host, 'PUT', `/v1/package-cache/${pkg.sha256}`, {
      body: createReadStream(file),
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
    });
    answer.resume();
    await new Promise((resolve, reject) => answer.once('end', resolve).once('error', reject));
  }

  /** Reads the guest's report from the agent of the VM's host and keeps it when it is newer. */
  async refreshReport(vmId: string): Promise<void> {
    const vm = await this.o.store.vms.tryGet(vmId);
    if (!vm?.hostId || !onHostStates.includes(vm.state)) return;
    const host = await this.o.store.hosts.get(vm.hostId);
    const state = await this.o.link.call<GuestPackageState>(host, 'GET', `/v1/vms/${vm.id}/packages`, undefined, 10_000);
    if (!state.reportedAt) return;
    const row = await this.o.store.vmcast.vmPackages.byVm(vmId);
    if (row?.reportedAt && Date.parse(row.reportedAt) >= Date.parse(state.reportedAt)) return;
    await this.o.store.vmcast.vmPackages.put(vmId, { installed: state.installed, reportedAt: state.reportedAt });
    await this.o.event('vmcast.package.reported', 'vm', vm.id, { vm: vm.name, installed: state.installed.map((p) => `${p.name} ${p.version}`) });
  }

  /** Refreshes the reports of the VMs that follow a channel (the vmcast tick). */
  async refreshAll(): Promise<void> {
    for (const follow of await this.o.store.vmcast.follows.all()) await this.refreshReport(follow.vmId).catch(() => undefined);
  }

  async view(vmRef: string): Promise<VmPackagesView> {
    const vm = await this.findVm(vmRef);
    await this.refreshReport(vm.id).catch((error: unknown) => this.o.logger.debug({ vm: vm.name, err: error }, 'package report not read'));
    const follow = await this.o.store.vmcast.follows.byVm(vm.id);
    const sub = follow ? await this.o.store.vmcast.subscriptions.tryGet(follow.subscriptionId) : undefined;
    const row = await this.o.store.vmcast.vmPackages.byVm(vm.id);
    const { offered, pending } = await this.offerFor(vm.id);
    const pushedHost = row?.pushedHostId ? await this.o.store.hosts.tryGet(row.pushedHostId) : undefined;
    return {
      vmId: vm.id,
      vm: vm.name,
      channel: sub?.name ?? null,
      policy: (follow?.policy as VmPackagesView['policy']) ?? null,
      held: follow?.held ?? false,
      installed: row?.installed ?? [],
      reportedAt: row?.reportedAt ?? null,
      offered: offered.map(entry),
      pending: pending.map(entry),
      pushedTo: pushedHost?.name ?? null,
      pushedAt: row?.pushedAt ?? null,
    };
  }

  /** Approves pending packages of a `notify` VM (all, or those named): they are offered from now on. */
  async approve(vmRef: string, names: string[] | undefined, actor: string): Promise<VmPackagesView> {
    const vm = await this.findVm(vmRef);
    const follow = await this.o.store.vmcast.follows.byVm(vm.id);
    if (!follow) throw errors.conflict(`VM "${vm.name}" follows no channel: there is nothing to approve`);
    if (follow.policy === 'pinned') throw errors.conflict(`VM "${vm.name}" is pinned: nothing is offered to it (change its policy first)`);
    if (follow.held) throw errors.conflict(`VM "${vm.name}" is held: release the hold first`);
    const { pending } = await this.offerFor(vm.id);
    const unknown = (names ?? []).filter((n) => !pending.some((p) => p.name === n));
    if (unknown.length > 0) throw errors.notFound('Pending package', `${vm.name}/${unknown.join(',')}`);
    const chosen = names ? pending.filter((p) => names.includes(p.name)) : pending;
    if (chosen.length === 0) throw errors.conflict(`VM "${vm.name}" has no pending package`);
    const approved = { ...((await this.o.store.vmcast.vmPackages.byVm(vm.id))?.approved ?? {}) };
    for (const p of chosen) approved[p.name] = p.version;
    await this.o.store.vmcast.vmPackages.put(vm.id, { approved });
    await this.o.event('vmcast.package.approved', 'vm', vm.id, { vm: vm.name, packages: chosen.map((p) => `${p.name} ${p.version}`), actor });
    await this.push(vm.id).catch((error: unknown) => this.o.logger.warn({ vm: vm.name, err: error }, 'package offer not pushed'));
    return this.view(vm.id);
  }

  private findVm(ref: string): Promise<VmRecord> {
    return this.o.findVm(ref);
  }
}

function entry(p: { name: string; version: string }): PackageVersionEntry {
  return { name: p.name, version: p.version };
}

function byNameThenNewest(a: { name: string; version: string }, b: { name: string; version: string }): number {
  return a.name.localeCompare(b.name) || compareVersions(b.version, a.version);
}

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentLink } from '../hosts/agent-link.js';
import { EventHub } from '../http/event-hub.js';
import { openSqliteStore } from '../store/sqlite-store.js';
import type { Store, VmRecord } from '../store/index.js';
import { GuestPackageService } from './guest-packages.service.js';
import { canonicalManifest, newPublisherKey, signBytes, type PackageManifest } from './manifest.js';

// The push of offers, with the agent link replaced by a recorder (a unit test:
// guest-packages.e2e/netns tests run the real agents): the push follows the VM
// when it runs on another host (a migration's switchover, a restart elsewhere)
// and the host it left forgets the offer; a stopped VM gets no push.

const dir = mkdtempSync(path.join(tmpdir(), 'drover-pkg-push-'));
let store: Store;
let service: GuestPackageService;
const hub = new EventHub();
const calls: string[] = [];
const link = {
  async call(host: { name: string }, method: string, route: string, body?: unknown) {
    calls.push(`${host.name} ${method} ${route}${body && method === 'PUT' ? ` ${JSON.stringify((body as { packages: Array<{ name: string; version: string }> }).packages.map((p) => `${p.name} ${p.version}`))}` : ''}`);
    return route.startsWith('/v1/package-cache/') ? { present: false } : {};
  },
  async stream(host: { name: string }, method: string, route: string, options: { body?: Readable }) {
    for await (const chunk of options.body ?? []) void chunk;
    calls.push(`${host.name} ${method} ${route}`);
    return Readable.from([]);
  },
};
let vm: VmRecord;
let h1: string;
let h2: string;

beforeAll(async () => {
  store = await openSqliteStore({ file: path.join(dir, 'drover.db') });
  service = new GuestPackageService({
    store,
    link: link as unknown as AgentLink,
    hub,
    logger: pino({ level: 'silent' }),
    dir: path.join(dir, 'packages'),
    event: async () => undefined,
    checkUrl: (url) => new URL(url),
    downloadTimeoutMs: 1000,
    findVm: (ref) => store.vms.get(ref),
  });
  service.listen();
  const key = newPublisherKey();
  const sub = await store.vmcast.subscriptions.create({ name: 'web', url: 'http://127.0.0.1/feed.rss', pinnedKeys: [{ keyId: key.keyId, publicKey: key.publicKey }], allowedHosts: [], pollSeconds: 60 });
  const sha256 = 'c'.repeat(64);
  mkdirSync(path.join(dir, 'packages'));
  writeFileSync(service.blobPath(sha256), 'archive');
  const manifest: PackageManifest = { kind: 'package', channel: 'web', name: 'motd', version: '1.0', description: '', sha256, sizeBytes: 7 };
  await store.vmcast.packages.create({ channelId: null, subscriptionId: sub.id, name: 'motd', version: '1.0', state: 'verified', manifest: manifest as never, sha256, sizeBytes: 7, url: 'http://127.0.0.1/p', keyId: key.keyId, signature: signBytes(canonicalManifest(manifest), key.privateKey), reason: null });
  const base = { address: 'https://127.0.0.1:1', certSerial: '01', certFingerprint: 'sha256:00', capacity: { cpus: 2, memoryMiB: 2048 } };
  h1 = (await store.hosts.create({ name: 'h1', ...base })).id;
  h2 = (await store.hosts.create({ name: 'h2', ...base })).id;
  vm = (await store.vms.create({ name: 'web-1', spec: { cpus: 1, memoryMiB: 128, disks: [] }, state: 'stopped', owner: 'admin' }))!;
  await store.vmcast.follows.create({ vmId: vm.id, subscriptionId: sub.id, policy: 'auto', held: false, currentReleaseId: null, maintenanceWindow: null });
}, 60_000);

afterAll(async () => {
  service?.close();
  await store?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** What a start or a migration publishes: the VM record, running on `hostId`. */
async function runsOn(hostId: string): Promise<void> {
  const updated = await store.vms.update(vm.id, { state: 'running', hostId });
  hub.publish({ seq: 0, type: 'vm.updated', objectKind: 'vm', objectId: vm.id, data: { state: updated.state }, createdAt: new Date().toISOString() } as never);
  // The event alone pushes (no explicit push here): wait until it reached the host.
  for (let i = 0; (await store.vmcast.vmPackages.byVm(vm.id))?.pushedHostId !== hostId; i++) {
    if (i > 250) throw new Error(`no push to ${hostId}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('pushing package offers', () => {
  it('pushes nothing for a VM on no host, then the archive and the offer to the host it starts on', async () => {
    await service.push(vm.id);
    expect(calls).toEqual([]);
    await runsOn(h1);
    expect(calls.slice(0, 3)).toEqual([`h1 GET /v1/package-cache/${'c'.repeat(64)}`, `h1 PUT /v1/package-cache/${'c'.repeat(64)}`, `h1 PUT /v1/vms/${vm.id}/package-offer ["motd 1.0"]`]);
    expect((await store.vmcast.vmPackages.byVm(vm.id))).toMatchObject({ pushedHostId: h1, offered: [{ name: 'motd', version: '1.0' }] });
  });

  it('follows the VM to another host (a migration) and takes the offer off the host it left', async () => {
    calls.length = 0;
    await runsOn(h2);
    expect(calls).toContain(`h1 DELETE /v1/vms/${vm.id}/package-offer`);
    expect(calls).toContain(`h2 PUT /v1/vms/${vm.id}/package-offer ["motd 1.0"]`);
    expect(calls.some((c) => c.startsWith('h1 PUT'))).toBe(false);
    expect((await store.vmcast.vmPackages.byVm(vm.id))?.pushedHostId).toBe(h2);
  });

  it('pushes an empty offer once the VM is held', async () => {
    calls.length = 0;
    const follow = (await store.vmcast.follows.byVm(vm.id))!;
    await store.vmcast.follows.update(follow.id, { held: true });
    await service.push(vm.id);
    expect(calls).toEqual([`h2 PUT /v1/vms/${vm.id}/package-offer []`]);
  });
});

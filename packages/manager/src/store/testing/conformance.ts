import { DroverError, rejectionOf } from '@drover/core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Store, StoreOptions } from '../store.js';
import { storeMigrations } from '../migrations.js';

/** Every migration this version knows, in order (each engineer's appended one included). */
const allMigrations = Object.keys(storeMigrations('sqlite')).sort();
import type { HostRecord, ListQuery, NewHost, NewVm, OperationFilter, Page, VmFilter, VmRecord } from '../types.js';

/** One backend under test: how to get fresh databases of it. */
export interface StoreHarness {
  /** Once before the suite (start a server, make a directory). */
  setUp?(): Promise<void>;
  /** Once after the suite, even when tests failed. */
  tearDown?(): Promise<void>;
  /** A new, empty database. `open` may be called more than once (a restart, a second manager). */
  newDatabase(): Promise<{ open(options?: StoreOptions): Promise<Store> }>;
}

/** A clock the tests move by hand, so timestamps and expiry are exact. */
class TestClock {
  static readonly start = Date.parse('2030-01-01T00:00:00.000Z');
  time = TestClock.start;
  readonly now = () => new Date(this.time);
  iso(offsetMs = 0): string {
    return new Date(this.time + offsetMs).toISOString();
  }
  tick(ms = 1000): void {
    this.time += ms;
  }
}

const missingId = '00000000-0000-4000-8000-000000000000';

function hostInput(name: string, extra: Partial<NewHost> = {}): NewHost {
  return {
    name,
    address: `https://${name}.lab:8443`,
    certSerial: '0a1b2c',
    certFingerprint: 'sha256:aa:bb:cc',
    capacity: { cpus: 8, memoryMiB: 16_384 },
    ...extra,
  };
}

function vmInput(name: string, extra: Partial<NewVm> = {}): NewVm {
  return { name, spec: { cpus: 1, memoryMiB: 256, disks: [{ volume: 'root', bus: 'virtio' }] }, state: 'stopped', owner: 'alice', ...extra };
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Every item of a paginated list, and how many pages it took. */
async function listAll<T, F>(list: (query: ListQuery<F>) => Promise<Page<T>>, query: ListQuery<F> = {}): Promise<{ items: T[]; pages: number }> {
  const items: T[] = [];
  let pages = 0;
  let after = query.after;
  do {
    const page = await list({ ...query, after });
    items.push(...page.items);
    pages += 1;
    after = page.next;
    if (pages > 10_000) throw new Error('pagination does not end');
  } while (after !== undefined);
  return { items, pages };
}

const byNameThenId = (a: { name: string; id: string }, b: { name: string; id: string }) =>
  a.name < b.name ? -1 : a.name > b.name ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;

/**
 * The store's contract, run once per backend: every case here must pass on
 * SQLite and on PostgreSQL alike.
 */
export function describeStoreConformance(name: string, harness: StoreHarness): void {
  describe(`store conformance: ${name}`, () => {
    const clock = new TestClock();
    const opened: Store[] = [];
    let database: Awaited<ReturnType<StoreHarness['newDatabase']>>;
    let store: Store;

    async function open(): Promise<Store> {
      const opening = await database.open({ now: clock.now });
      opened.push(opening);
      return opening;
    }

    beforeAll(async () => {
      await harness.setUp?.();
    });
    afterAll(async () => {
      await harness.tearDown?.();
    });
    beforeEach(async () => {
      clock.time = TestClock.start;
      database = await harness.newDatabase();
      store = await open();
    });
    afterEach(async () => {
      for (const each of opened.splice(0)) await each.close();
    });

    describe('schema and migrations', () => {
      it('migrates a new database and reports the applied migrations', async () => {
        expect(store.backend).toBe(name);
        expect(await store.migrations()).toEqual(allMigrations);
        await store.ping();
      });

      it('reopens a database without migrating twice, keeping its data', async () => {
        const host = await store.hosts.create(hostInput('h1'));
        await store.close();
        const again = await open();
        expect(await again.migrations()).toEqual(allMigrations);
        expect(await again.hosts.get(host.id)).toEqual(host);
      });

      it('closes idempotently', async () => {
        await store.close();
        await store.close();
      });
    });

    describe('hosts', () => {
      it('creates a host with defaults, rev 1 and timestamps from the clock', async () => {
        const host = await store.hosts.create(hostInput('h1'));
        expect(host).toEqual({
          id: expect.stringMatching(/^[0-9a-f-]{36}$/),
          name: 'h1',
          address: 'https://h1.lab:8443',
          state: 'joining',
          certSerial: '0a1b2c',
          certFingerprint: 'sha256:aa:bb:cc',
          certExpiresAt: null,
          capacity: { cpus: 8, memoryMiB: 16_384 },
          cpuModels: [],
          labels: {},
          lastHeartbeatAt: null,
          rev: 1,
          createdAt: clock.iso(),
          updatedAt: clock.iso(),
        } satisfies HostRecord);
      });

      it('reads a host by id, by name, and by either with find', async () => {
        const host = await store.hosts.create(hostInput('h1', { labels: { rack: 'r1' }, cpuModels: ['Skylake-Server', 'qemu64'] }));
        expect(await store.hosts.get(host.id)).toEqual(host);
        expect(await store.hosts.get(host.id.toUpperCase())).toEqual(host);
        expect(await store.hosts.getByName('h1')).toEqual(host);
        expect(await store.hosts.find('h1')).toEqual(host);
        expect(await store.hosts.find(host.id)).toEqual(host);
        expect(await store.hosts.tryFind('nope')).toBeUndefined();
      });

      it('normalizes timestamps to ISO 8601 UTC and refuses invalid ones', async () => {
        const host = await store.hosts.create(
          hostInput('h1', { certExpiresAt: '2031-06-01T12:00:00+02:00', lastHeartbeatAt: new Date('2030-01-01T00:00:05Z') }),
        );
        expect(host.certExpiresAt).toBe('2031-06-01T10:00:00.000Z');
        expect(host.lastHeartbeatAt).toBe('2030-01-01T00:00:05.000Z');
        const error = await rejectionOf(store.hosts.create(hostInput('h2', { certExpiresAt: 'next tuesday' })));
        expect(error.code).toBe('invalid');
        expect(error.message).toContain('"next tuesday"');
      });

      it('refuses an unknown state', async () => {
        const error = await rejectionOf(store.hosts.create(hostInput('h1', { state: 'exploded' as never })));
        expect(error.code).toBe('invalid');
        expect(error.message).toContain('"exploded"');
      });

      it('updates fields, bumping rev and updatedAt', async () => {
        const host = await store.hosts.create(hostInput('h1'));
        clock.tick(5000);
        const updated = await store.hosts.update(host.id, { state: 'online', labels: { zone: 'a' }, lastHeartbeatAt: clock.iso() });
        expect(updated).toEqual({ ...host, state: 'online', labels: { zone: 'a' }, lastHeartbeatAt: clock.iso(), rev: 2, updatedAt: clock.iso() });
        expect(await store.hosts.get(host.id)).toEqual(updated);
        const touched = await store.hosts.update(host.id, {});
        expect(touched.rev).toBe(3);
      });

      it('deletes a host and returns it', async () => {
        const host = await store.hosts.create(hostInput('h1'));
        expect(await store.hosts.delete(host.id)).toEqual(host);
        expect((await rejectionOf(store.hosts.get(host.id))).code).toBe('not_found');
      });
    });

    describe('not found', () => {
      it('answers not_found for missing and malformed ids and names', async () => {
        // Thunks: a rejected promise must be awaited before the next one is made.
        for (const attempt of [
          () => store.hosts.get(missingId),
          () => store.hosts.get('not-a-uuid'),
          () => store.hosts.getByName('nope'),
          () => store.hosts.find('nope'),
          () => store.hosts.update(missingId, { state: 'online' }),
          () => store.hosts.update('garbage', { state: 'online' }),
          () => store.hosts.delete(missingId),
          () => store.vms.get(missingId),
          () => store.pools.getByName('nope'),
          () => store.volumes.getInPool(missingId, 'disk'),
          () => store.images.getRelease('debian', '1'),
          () => store.operations.get(missingId),
          () => store.apiTokens.get(missingId),
          () => store.apiTokens.revoke(missingId),
          () => store.reservations.get(missingId),
        ]) {
          const error = await rejectionOf(attempt());
          expect(error.code).toBe('not_found');
        }
        const error = await rejectionOf(store.vms.get(missingId));
        expect(error.message).toBe(`vm "${missingId}" does not exist`);
      });
    });

    describe('unique conflicts', () => {
      it('refuses a second host with the same name, naming the field and value', async () => {
        await store.hosts.create(hostInput('h1'));
        const error = await rejectionOf(store.hosts.create(hostInput('h1')));
        expect(error.code).toBe('conflict');
        expect(error.message).toBe('Cannot create host "h1": a host with name "h1" already exists');
        expect(error.details).toMatchObject({ kind: 'host', fields: { name: 'h1' } });
      });

      it('refuses a rename onto a taken name', async () => {
        await store.vms.create(vmInput('web-1'));
        const other = await store.vms.create(vmInput('web-2'));
        const error = await rejectionOf(store.vms.update(other.id, { name: 'web-1' }));
        expect(error.code).toBe('conflict');
        expect(error.message).toContain('name "web-1"');
        expect((await store.vms.get(other.id)).name).toBe('web-2');
      });

      it('keeps volume names unique per pool only, naming both fields', async () => {
        const a = await store.pools.create({ name: 'a', path: '/srv/a' });
        const b = await store.pools.create({ name: 'b', path: '/srv/b' });
        await store.volumes.create({ poolId: a.id, name: 'disk0', sizeBytes: 1, format: 'qcow2' });
        await store.volumes.create({ poolId: b.id, name: 'disk0', sizeBytes: 1, format: 'qcow2' });
        const error = await rejectionOf(store.volumes.create({ poolId: a.id, name: 'disk0', sizeBytes: 1, format: 'raw' }));
        expect(error.code).toBe('conflict');
        expect(error.message).toBe(`Cannot create volume "disk0": a volume with poolId "${a.id}" and name "disk0" already exists`);
      });

      it('refuses a second image release with the same name and version', async () => {
        const image = { name: 'debian-web', version: '1.0', format: 'qcow2', sizeBytes: 10, sha256: 'a'.repeat(64), source: 'feed' };
        await store.images.create(image);
        const error = await rejectionOf(store.images.create(image));
        expect(error.code).toBe('conflict');
        expect(error.message).toContain('name "debian-web" and version "1.0"');
      });

      it('refuses a token hash twice', async () => {
        await store.apiTokens.create({ name: 'ci', tokenHash: 'h-1', role: 'operator' });
        expect((await rejectionOf(store.apiTokens.create({ name: 'ci-2', tokenHash: 'h-1', role: 'viewer' }))).code).toBe('conflict');
        await store.joinTokens.create({ tokenHash: 'j-1', expiresAt: clock.iso(60_000) });
        expect((await rejectionOf(store.joinTokens.create({ tokenHash: 'j-1', expiresAt: clock.iso(60_000) }))).code).toBe('conflict');
      });
    });

    describe('optimistic locking with rev', () => {
      it('updates when the expected rev matches', async () => {
        const vm = await store.vms.create(vmInput('web-1'));
        const updated = await store.vms.update(vm.id, { state: 'running' }, { expectedRev: 1 });
        expect(updated.rev).toBe(2);
        expect((await store.vms.update(vm.id, { state: 'stopped' }, { expectedRev: 2 })).rev).toBe(3);
      });

      it('refuses a stale rev with precondition_failed naming the object and both revs', async () => {
        const vm = await store.vms.create(vmInput('web-1'));
        await store.vms.update(vm.id, { state: 'running' });
        const error = await rejectionOf(store.vms.update(vm.id, { state: 'paused' }, { expectedRev: 1 }));
        expect(error.code).toBe('precondition_failed');
        expect(error.message).toBe('Cannot update vm "web-1": expected rev 1 but it is at rev 2');
        expect(error.details).toMatchObject({ expectedRev: 1, currentRev: 2, id: vm.id });
        expect((await store.vms.get(vm.id)).state).toBe('running');
      });

      it('refuses a stale rev on delete', async () => {
        const pool = await store.pools.create({ name: 'p', path: '/srv/p' });
        await store.pools.update(pool.id, { shared: true });
        expect((await rejectionOf(store.pools.delete(pool.id, { expectedRev: 1 }))).code).toBe('precondition_failed');
        expect((await store.pools.delete(pool.id, { expectedRev: 2 })).shared).toBe(true);
      });

      it('lets exactly one of several concurrent writers at the same rev win', async () => {
        const vm = await store.vms.create(vmInput('web-1'));
        const results = await Promise.allSettled(
          Array.from({ length: 8 }, (_, index) => store.vms.update(vm.id, { lastError: `writer ${index}` }, { expectedRev: 1 })),
        );
        expect(results.filter((result) => result.status === 'fulfilled')).toHaveLength(1);
        for (const result of results) {
          if (result.status === 'rejected') expect(result.reason).toMatchObject({ code: 'precondition_failed' });
        }
        expect((await store.vms.get(vm.id)).rev).toBe(2);
      });

      it('refuses changes to id, rev and timestamps', async () => {
        const vm = await store.vms.create(vmInput('web-1'));
        const error = await rejectionOf(store.vms.update(vm.id, { rev: 9 } as never));
        expect(error.code).toBe('invalid');
      });
    });

    describe('vms', () => {
      it('round-trips an opaque spec, labels and booleans', async () => {
        const spec = { cpus: 2, nested: { list: [1, 'two', null, true], empty: {} }, text: 'ünïcødé "quoted"' };
        const vm = await store.vms.create(vmInput('web-1', { spec, labels: { tier: 'web' }, autostart: true }));
        const read = await store.vms.get(vm.id);
        expect(read.spec).toEqual(spec);
        expect(read.autostart).toBe(true);
        expect(read.labels).toEqual({ tier: 'web' });
        expect(read.hostId).toBeNull();
        expect((await store.vms.update(vm.id, { autostart: false })).autostart).toBe(false);
      });

      it('refuses a host that does not exist, and unplaces VMs of a deleted host', async () => {
        const error = await rejectionOf(store.vms.create(vmInput('web-1', { hostId: missingId })));
        expect(error.code).toBe('invalid');
        expect(error.message).toContain(`hostId "${missingId}"`);
        const host = await store.hosts.create(hostInput('h1'));
        const vm = await store.vms.create(vmInput('web-1', { hostId: host.id }));
        await store.hosts.delete(host.id);
        expect((await store.vms.get(vm.id)).hostId).toBeNull();
      });
    });

    describe('pools and volumes', () => {
      it('keeps pools with their hosts, and filters on them', async () => {
        const h1 = await store.hosts.create(hostInput('h1'));
        const h2 = await store.hosts.create(hostInput('h2'));
        const local = await store.pools.create({ name: 'local-h1', path: '/var/lib/drover/pool', hostIds: [h1.id] });
        const nfs = await store.pools.create({ name: 'nfs', path: '/mnt/nfs', shared: true, hostIds: [h1.id, h2.id] });
        expect(local).toMatchObject({ shared: false, hostIds: [h1.id], rev: 1 });
        expect((await store.pools.list({ filter: { hostId: h2.id } })).items.map((pool) => pool.name)).toEqual(['nfs']);
        expect((await store.pools.list({ filter: { hostId: h1.id } })).items.map((pool) => pool.name)).toEqual(['local-h1', 'nfs']);
        expect((await store.pools.list({ filter: { shared: true } })).items).toEqual([nfs]);
        expect((await store.pools.list({ filter: { shared: false } })).items).toEqual([local]);
      });

      it('creates, reads, updates and deletes volumes, sizes beyond 32 bits included', async () => {
        const pool = await store.pools.create({ name: 'p', path: '/srv/p' });
        const size = 3 * 2 ** 40 + 5;
        const volume = await store.volumes.create({ poolId: pool.id, name: 'disk0', sizeBytes: size, format: 'qcow2' });
        expect(volume).toMatchObject({ poolId: pool.id, hostId: null, sizeBytes: size, backingVolumeId: null, vmId: null, rev: 1 });
        expect(await store.volumes.getInPool(pool.id, 'disk0')).toEqual(volume);
        const grown = await store.volumes.update(volume.id, { sizeBytes: size * 2 }, { expectedRev: 1 });
        expect(grown.sizeBytes).toBe(size * 2);
        expect(await store.volumes.delete(volume.id)).toEqual(grown);
      });

      it('guards references: missing pool, pool with volumes, backing file with clones, deleted VM', async () => {
        const missing = await rejectionOf(store.volumes.create({ poolId: missingId, name: 'x', sizeBytes: 1, format: 'raw' }));
        expect(missing.code).toBe('invalid');
        const pool = await store.pools.create({ name: 'p', path: '/srv/p' });
        const vm = await store.vms.create(vmInput('web-1'));
        const base = await store.volumes.create({ poolId: pool.id, name: 'base', sizeBytes: 1, format: 'qcow2' });
        const clone = await store.volumes.create({ poolId: pool.id, name: 'clone', sizeBytes: 1, format: 'qcow2', backingVolumeId: base.id, vmId: vm.id });
        const poolInUse = await rejectionOf(store.pools.delete(pool.id));
        expect(poolInUse.code).toBe('conflict');
        expect(poolInUse.message).toBe('Cannot delete pool "p": other objects still refer to it');
        expect((await rejectionOf(store.volumes.delete(base.id))).code).toBe('conflict');
        await store.vms.delete(vm.id);
        expect((await store.volumes.get(clone.id)).vmId).toBeNull();
        expect((await store.volumes.list({ filter: { backingVolumeId: base.id } })).items).toHaveLength(1);
        await store.volumes.delete(clone.id);
        await store.volumes.delete(base.id);
        await store.pools.delete(pool.id);
      });
    });

    describe('images', () => {
      it('keeps immutable releases, found by name and version', async () => {
        const input = { name: 'debian-web', version: '1.0', format: 'qcow2', sizeBytes: 2 ** 33, sha256: 'b'.repeat(64), source: 'https://feeds.lab/web.rss' };
        const first = await store.images.create(input);
        clock.tick();
        await store.images.create({ ...input, version: '1.1' });
        await store.images.create({ ...input, name: 'debian-web-extra' });
        expect(first).toEqual({ ...input, id: expect.any(String), createdAt: clock.iso(-1000) });
        expect(await store.images.getRelease('debian-web', '1.0')).toEqual(first);
        expect((await store.images.list({ filter: { exactName: 'debian-web' } })).items.map((image) => image.version).sort()).toEqual(['1.0', '1.1']);
        expect((await store.images.list({ filter: { name: 'web' } })).items).toHaveLength(3);
        expect('update' in store.images).toBe(false);
        expect((await rejectionOf(store.images.create({ ...input, version: '2', sha256: 'nothex' }))).code).toBe('invalid');
        await store.images.delete(first.id);
        expect((await rejectionOf(store.images.get(first.id))).code).toBe('not_found');
      });
    });

    describe('operations', () => {
      it('creates pending operations and records their progress', async () => {
        const op = await store.operations.create({ kind: 'vm.start', targetKind: 'vm', targetId: 'v-1', params: { hostId: 'h' }, actor: 'alice', idempotencyKey: 'k1' });
        expect(op).toMatchObject({
          state: 'pending',
          phase: 'pending',
          progress: 0,
          params: { hostId: 'h' },
          result: null,
          error: null,
          journal: [],
          idempotencyKey: 'k1',
          startedAt: null,
          finishedAt: null,
          rev: 1,
        });
        clock.tick();
        const running = await store.operations.update(
          op.id,
          { state: 'running', phase: 'prepare', progress: 40, startedAt: clock.iso(), journal: [{ phase: 'prepare', at: clock.iso(), note: 'host h1' }] },
          { expectedRev: op.rev },
        );
        expect(running).toMatchObject({ state: 'running', phase: 'prepare', progress: 40, rev: 2, startedAt: clock.iso() });
        const failed = await store.operations.update(op.id, {
          state: 'failed',
          error: { code: 'unavailable', message: 'Agent "h1" is unreachable', details: { host: 'h1' } },
          result: { partial: true },
          finishedAt: clock.iso(),
        });
        expect(await store.operations.get(op.id)).toEqual(failed);
        expect(failed.error).toEqual({ code: 'unavailable', message: 'Agent "h1" is unreachable', details: { host: 'h1' } });
        expect(failed.journal).toEqual([{ phase: 'prepare', at: clock.iso(), note: 'host h1' }]);
      });

      it('refuses progress outside 0–100 and unknown states', async () => {
        const op = await store.operations.create({ kind: 'vm.stop', targetKind: 'vm', targetId: 'v', actor: 'a' });
        expect((await rejectionOf(store.operations.update(op.id, { progress: 101 }))).code).toBe('invalid');
        expect((await rejectionOf(store.operations.update(op.id, { progress: 2.5 }))).code).toBe('invalid');
        expect((await rejectionOf(store.operations.update(op.id, { state: 'half-done' as never }))).code).toBe('invalid');
      });

      it('lists oldest first, filtered, across pages', async () => {
        const created = [];
        for (let index = 0; index < 25; index += 1) {
          created.push(
            await store.operations.create({
              kind: index % 2 ? 'vm.start' : 'vm.stop',
              targetKind: 'vm',
              targetId: `vm-${index % 3}`,
              state: index % 5 === 0 ? 'running' : 'done',
              actor: 'alice',
            }),
          );
          if (index % 4 !== 0) clock.tick(); // some share a timestamp: the id breaks the tie
        }
        const all = await listAll((query: ListQuery<OperationFilter>) => store.operations.list(query), { limit: 7 });
        expect(all.pages).toBe(4);
        const expected = [...created].sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : a.id < b.id ? -1 : 1));
        expect(all.items.map((op) => op.id)).toEqual(expected.map((op) => op.id));
        const unfinished = await store.operations.list({ filter: { state: ['pending', 'running'] } });
        expect(unfinished.items.map((op) => op.id)).toEqual(expected.filter((op) => op.state === 'running').map((op) => op.id));
        const target = await store.operations.list({ filter: { targetKind: 'vm', targetId: 'vm-1', kind: 'vm.start' } });
        expect(target.items.map((op) => op.id)).toEqual(expected.filter((op) => op.targetId === 'vm-1' && op.kind === 'vm.start').map((op) => op.id));
      });
    });

    describe('list pagination and filters (250 VMs)', () => {
      let hosts: HostRecord[];
      let vms: VmRecord[];

      beforeEach(async () => {
        hosts = [await store.hosts.create(hostInput('h1')), await store.hosts.create(hostInput('h2'))];
        vms = await store.transaction(async (tx) => {
          const made: VmRecord[] = [];
          // Created out of name order, so the order of the list is the store's doing.
          for (let index = 249; index >= 0; index -= 1) {
            made.push(
              await tx.vms.create(
                vmInput(`vm-${String(index).padStart(3, '0')}`, {
                  state: index % 3 === 0 ? 'running' : 'stopped',
                  hostId: index % 5 === 0 ? null : hosts[index % 2]!.id,
                  owner: index % 10 === 0 ? 'bob' : 'alice',
                  labels: { tier: index % 2 ? 'web' : 'db', 'team.name "x"': `t${index % 4}` },
                }),
              ),
            );
          }
          return made;
        });
        vms.sort(byNameThenId);
      });

      async function expectListed(filter: VmFilter, expected: VmRecord[], limit = 100) {
        const { items, pages } = await listAll((query: ListQuery<VmFilter>) => store.vms.list(query), { filter, limit });
        expect(items.map((vm) => vm.name)).toEqual(expected.map((vm) => vm.name));
        expect(pages).toBe(Math.max(1, Math.ceil(expected.length / limit)));
      }

      it('pages through every VM in (name, id) order without repeats', async () => {
        const first = await store.vms.list({ limit: 100 });
        expect(first.items).toHaveLength(100);
        expect(first.next).toMatch(/^[A-Za-z0-9_-]+$/);
        await expectListed({}, vms);
        await expectListed({}, vms, 1000);
        const exact = await listAll((query: ListQuery<VmFilter>) => store.vms.list(query), { limit: 125 });
        expect(exact.pages).toBe(2);
        expect((await store.vms.list()).items).toHaveLength(100);
      });

      it('filters by state, host, no host, owner, label and name', async () => {
        await expectListed({ state: 'running' }, vms.filter((vm) => vm.state === 'running'), 30);
        await expectListed({ state: ['running', 'paused'] }, vms.filter((vm) => vm.state === 'running'));
        await expectListed({ hostId: hosts[0]!.id }, vms.filter((vm) => vm.hostId === hosts[0]!.id), 40);
        await expectListed({ hostId: null }, vms.filter((vm) => vm.hostId === null));
        await expectListed({ owner: 'bob' }, vms.filter((vm) => vm.owner === 'bob'));
        await expectListed({ label: { key: 'tier', value: 'web' } }, vms.filter((vm) => vm.labels['tier'] === 'web'), 50);
        await expectListed({ label: { key: 'team.name "x"', value: 't3' } }, vms.filter((vm) => vm.labels['team.name "x"'] === 't3'));
        await expectListed({ label: { key: 'tier', value: 'nope' } }, []);
        await expectListed({ name: 'vm-1' }, vms.filter((vm) => vm.name.includes('vm-1')));
        await expectListed({ name: '9' }, vms.filter((vm) => vm.name.includes('9')), 20);
        await expectListed(
          { state: 'stopped', hostId: hosts[1]!.id, label: { key: 'tier', value: 'web' }, name: 'vm-2' },
          vms.filter((vm) => vm.state === 'stopped' && vm.hostId === hosts[1]!.id && vm.labels['tier'] === 'web' && vm.name.includes('vm-2')),
        );
      });

      it('keeps cursors stable while VMs are added and removed', async () => {
        const first = await store.vms.list({ limit: 100 });
        // Before the cursor: never shows up. After it: shows up once.
        await store.vms.create(vmInput('vm-000a'));
        await store.vms.create(vmInput('vm-150a'));
        await store.vms.delete(vms[200]!.id);
        const rest = await listAll((query: ListQuery<VmFilter>) => store.vms.list(query), { limit: 100, after: first.next });
        const names = rest.items.map((vm) => vm.name);
        expect(names).toContain('vm-150a');
        expect(names).not.toContain('vm-000a');
        expect(names).not.toContain(vms[200]!.name);
        expect(names[0]).toBe('vm-100');
        expect(new Set([...first.items.map((vm) => vm.name), ...names]).size).toBe(100 + names.length);
        // The same cursor gives the same page again.
        expect((await store.vms.list({ limit: 100, after: first.next })).items[0]!.name).toBe('vm-100');
      });

      it('refuses invalid cursors, limits and filters', async () => {
        for (const attempt of [
          () => store.vms.list({ after: 'garbage!' }),
          () => store.vms.list({ after: Buffer.from('["a"]').toString('base64url') }),
          () => store.vms.list({ after: Buffer.from('["a","not-a-uuid"]').toString('base64url') }),
          () => store.operations.list({ after: Buffer.from(`["yesterday","${missingId}"]`).toString('base64url') }),
          () => store.vms.list({ limit: 0 }),
          () => store.vms.list({ limit: 1.5 }),
          () => store.vms.list({ filter: { colour: 'red' } as VmFilter }),
        ]) {
          expect((await rejectionOf(attempt())).code).toBe('invalid');
        }
      });

      it('clamps the page size to 1000', async () => {
        expect((await store.vms.list({ limit: 5000 })).items).toHaveLength(250);
      });

      it('signs a page: the same text while the page is the same, another as soon as it changes', async () => {
        const fields = ['id', 'rev', 'hostId'] as const;
        const sign = (query: ListQuery<VmFilter>) => store.vms.pageSignature(query, fields);
        const first = await store.vms.list({ limit: 100 });
        const second = { limit: 100, after: first.next! };
        const onHost = { limit: 10, filter: { hostId: hosts[0]!.id } };
        const [a, b, c] = [await sign({ limit: 100 }), await sign(second), await sign(onHost)];
        expect(new Set([a, b, c]).size).toBe(3);
        expect([await sign({ limit: 100 }), await sign(second), await sign(onHost)]).toEqual([a, b, c]);
        // It holds every record of the page (and the one after it) with the fields asked for.
        for (const vm of first.items) expect(a).toContain(`${vm.id}/${vm.rev}/${vm.hostId ?? ''}`);
        expect(await store.vms.pageSignature({ limit: 3 }, ['id'])).toMatch(/^[0-9a-f-]{36}(,[0-9a-f-]{36}){3}$/);

        // A write to a VM of another page changes nothing here.
        await store.vms.update(vms[150]!.id, { state: 'paused' });
        expect(await sign({ limit: 100 })).toBe(a);
        expect(await sign(second)).not.toBe(b);
        // An update in the page, an insert into it, a removal from it.
        await store.vms.update(first.items[5]!.id, { labels: { tier: 'cache' } });
        const updated = await sign({ limit: 100 });
        expect(updated).not.toBe(a);
        await store.vms.create(vmInput('vm-000b'));
        const inserted = await sign({ limit: 100 });
        expect(inserted).not.toBe(updated);
        await store.vms.delete(first.items[7]!.id);
        expect(await sign({ limit: 100 })).not.toBe(inserted);
        // A host's removal unplaces its VMs without touching their rev: hostId shows it.
        const before = await sign(onHost);
        await store.hosts.delete(hosts[0]!.id);
        expect(await sign({ ...onHost, filter: {} })).not.toBe(before);
        expect(await sign(onHost)).toBe('');
        // The last page gets a next one.
        const last = await store.vms.list({ limit: 100, after: (await store.vms.list({ limit: 200 })).next! });
        expect(last.next).toBeUndefined();
        const lastQuery = { limit: 100, after: (await store.vms.list({ limit: 200 })).next! };
        const lastSignature = await sign(lastQuery);
        await store.vms.create(vmInput('vm-999'));
        expect(await sign(lastQuery)).not.toBe(lastSignature);
        // Only fields whose text is unambiguous; the list's own checks apply.
        expect((await rejectionOf(store.vms.pageSignature({}, ['name']))).code).toBe('internal');
        expect((await rejectionOf(store.vms.pageSignature({ after: 'garbage!' }, ['id']))).code).toBe('invalid');
      });

      it('has a change token only where it can tell cheaply, and never inside a transaction', async () => {
        const token = await store.changeToken();
        if (store.backend === 'postgres') expect(token).toBeUndefined();
        else {
          expect(await store.changeToken()).toBe(token);
          await store.vms.update(vms[0]!.id, { state: 'paused' });
          expect(await store.changeToken()).not.toBe(token);
        }
        expect(await store.transaction((tx) => tx.changeToken())).toBeUndefined();
      });

      it('reads many records by id at once, skipping missing and malformed ids', async () => {
        const wanted = [vms[3]!, vms[100]!, vms[249]!];
        const found = await store.vms.getMany([wanted[1]!.id, missingId, 'not-a-uuid', wanted[0]!.id.toUpperCase(), wanted[2]!.id, wanted[1]!.id]);
        expect(found.sort(byNameThenId)).toEqual(wanted);
        expect(await store.vms.getMany([])).toEqual([]);
        expect((await store.hosts.getMany([hosts[1]!.id])).map((host) => host.name)).toEqual(['h2']);
      });
    });

    describe('list order and text search', () => {
      it('sorts names byte-wise on every backend', async () => {
        for (const vmName of ['beta', 'Zeta', 'alpha', 'Alpha', '_x', 'a-b', 'a_b', 'éclair']) await store.vms.create(vmInput(vmName));
        const names = (await store.vms.list()).items.map((vm) => vm.name);
        expect(names).toEqual(['Alpha', 'Zeta', '_x', 'a-b', 'a_b', 'alpha', 'beta', 'éclair']);
      });

      it('matches name substrings literally, case-sensitively', async () => {
        for (const vmName of ['100%', '100x', 'a_b', 'axb', 'Web', 'web']) await store.vms.create(vmInput(vmName));
        expect((await store.vms.list({ filter: { name: '%' } })).items.map((vm) => vm.name)).toEqual(['100%']);
        expect((await store.vms.list({ filter: { name: '_' } })).items.map((vm) => vm.name)).toEqual(['a_b']);
        expect((await store.vms.list({ filter: { name: 'we' } })).items.map((vm) => vm.name)).toEqual(['web']);
      });
    });

    describe('access control (0002_access)', () => {
      it('keeps users, custom roles, projects with their VMs, and token scopes', async () => {
        const user = await store.users.create({ name: 'alice', source: 'local', passwordHash: 'scrypt$x', bindings: [{ role: 'operator', scope: 'project:red' }] });
        expect(user).toMatchObject({ name: 'alice', source: 'local', disabled: false, rev: 1, groupsCheckedAt: null, defaultProject: null });
        expect(await store.users.tryGetByName('alice')).toEqual(user);
        await expect(store.users.create({ name: 'alice', source: 'local' })).rejects.toMatchObject({ code: 'conflict' });
        await expect(store.users.create({ name: 'x', source: 'nis' as never })).rejects.toMatchObject({ code: 'invalid' });
        const updated = await store.users.update(user.id, { disabled: true, groupsCheckedAt: clock.iso() });
        expect(updated).toMatchObject({ disabled: true, rev: 2, groupsCheckedAt: clock.iso() });
        const role = await store.roles.create({ name: 'viewer', permissions: ['*.read', '!audit.read'] });
        expect((await store.roles.getByName('viewer')).permissions).toEqual(['*.read', '!audit.read']);
        const project = await store.projects.create({ name: 'red', quota: { vms: 2, memoryMiB: 1024 } });
        const vm = await store.vms.create(vmInput('in-red'));
        await store.projects.assignVm(vm.id, project.id);
        expect(await store.projects.vmIds(project.id)).toEqual([vm.id]);
        expect(await store.projects.vmCount(project.id)).toBe(1);
        expect((await store.projects.projectsOfVms([vm.id, missingId, 'not-a-uuid'])).get(vm.id)).toBe(project.id);
        await store.vms.delete(vm.id);
        expect(await store.projects.vmCount(project.id)).toBe(0);
        const token = await store.apiTokens.create({ name: 't', tokenHash: 'h-scope', role: 'operator', userName: 'alice', scope: { projects: ['red'] } });
        expect(await store.apiTokens.findByHash('h-scope')).toMatchObject({ userName: 'alice', scope: { projects: ['red'] } });
        expect((await store.apiTokens.list({ filter: { userName: 'alice' } })).items.map((t) => t.id)).toEqual([token.id]);
        await store.roles.delete(role.id);
      });

      it('chains audit records by sha256, one at a time even when appended together', async () => {
        const first = await store.audit.append({ actor: 'alice', action: 'POST /api/v1/vms', target: '/api/v1/vms', source: '127.0.0.1', decision: 'allow', reason: 'vm.write', status: 201 });
        expect(first).toMatchObject({ seq: 1, prevHash: '0'.repeat(64), at: clock.iso() });
        const appended = await Promise.all(
          Array.from({ length: 20 }, (_, i) => store.audit.append({ actor: `u${i}`, action: 'GET /x', target: '/x', source: '::1', decision: 'deny', reason: 'no', status: 403 })),
        );
        expect(appended.map((r) => r.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i + 2));
        expect(await store.audit.verify()).toEqual({ ok: true, checked: 21 });
        expect((await store.audit.list({ actor: 'alice' })).map((r) => r.seq)).toEqual([1]);
        expect((await store.audit.list({ decision: 'deny', limit: 5 })).length).toBe(5);
        expect((await store.audit.list({ action: 'vms' })).map((r) => r.seq)).toEqual([1]);
        await store.transaction(async (tx) => {
          await tx.audit.append({ actor: 'bob', action: 'DELETE /y', target: '/y', source: '::1', decision: 'error', reason: 'gone', status: 404 });
        });
        expect(await store.audit.verify()).toMatchObject({ ok: true, checked: 22 });
      });
    });

    describe('API tokens', () => {
      it('finds tokens by hash, lists them and revokes them once', async () => {
        const token = await store.apiTokens.create({ name: 'ci', tokenHash: 'hash-1', role: 'operator', expiresAt: clock.iso(86_400_000) });
        await store.apiTokens.create({ name: 'ci', tokenHash: 'hash-2', role: 'viewer' });
        expect(token).toMatchObject({ name: 'ci', role: 'operator', revokedAt: null, expiresAt: clock.iso(86_400_000), createdAt: clock.iso() });
        expect(await store.apiTokens.findByHash('hash-1')).toEqual(token);
        expect(await store.apiTokens.findByHash('hash-3')).toBeUndefined();
        expect((await store.apiTokens.list({ filter: { role: 'viewer' } })).items.map((each) => each.tokenHash)).toEqual(['hash-2']);
        clock.tick();
        const revoked = await store.apiTokens.revoke(token.id);
        expect(revoked.revokedAt).toBe(clock.iso());
        clock.tick();
        expect((await store.apiTokens.revoke(token.id)).revokedAt).toBe(revoked.revokedAt);
        await store.apiTokens.delete(token.id);
        expect(await store.apiTokens.findByHash('hash-1')).toBeUndefined();
      });
    });

    describe('join tokens', () => {
      it('can be used once', async () => {
        const token = await store.joinTokens.create({ tokenHash: 'j1', expiresAt: clock.iso(60_000) });
        expect(token.usedAt).toBeNull();
        const used = await store.joinTokens.consume('j1', clock.iso(1000));
        expect(used).toEqual({ ...token, usedAt: clock.iso(1000) });
        const again = await rejectionOf(store.joinTokens.consume('j1', clock.iso(2000)));
        expect(again.code).toBe('conflict');
        expect(again.message).toContain('already used');
        expect(again.message).not.toContain('j1');
      });

      it('refuses unknown and expired tokens', async () => {
        expect((await rejectionOf(store.joinTokens.consume('nope'))).code).toBe('not_found');
        await store.joinTokens.create({ tokenHash: 'j1', expiresAt: clock.iso(60_000) });
        const expired = await rejectionOf(store.joinTokens.consume('j1', clock.iso(60_000)));
        expect(expired.code).toBe('precondition_failed');
        expect(expired.message).toContain('expired');
        expect((await store.joinTokens.get((await store.joinTokens.list()).items[0]!.id)).usedAt).toBeNull();
      });

      it('goes to exactly one of several hosts presenting it at once', async () => {
        await store.joinTokens.create({ tokenHash: 'j1', expiresAt: clock.iso(60_000) });
        const results = await Promise.allSettled(Array.from({ length: 10 }, () => store.joinTokens.consume('j1')));
        expect(results.filter((result) => result.status === 'fulfilled')).toHaveLength(1);
      });

      it('deletes expired tokens', async () => {
        await store.joinTokens.create({ tokenHash: 'old', expiresAt: clock.iso(1000) });
        await store.joinTokens.create({ tokenHash: 'new', expiresAt: clock.iso(60_000) });
        expect(await store.joinTokens.deleteExpired(clock.iso(30_000))).toBe(1);
        expect((await store.joinTokens.list()).items.map((token) => token.tokenHash)).toEqual(['new']);
      });
    });

    describe('idempotency records', () => {
      it('round-trips a stored answer per key and actor', async () => {
        const record = await store.idempotency.put({ key: 'k1', actor: 'alice', requestHash: 'rh', status: 202, response: { operation: { id: 'op-1' }, list: [1, 2] } });
        expect(record).toEqual({ key: 'k1', actor: 'alice', requestHash: 'rh', status: 202, response: { operation: { id: 'op-1' }, list: [1, 2] }, createdAt: clock.iso() });
        expect(await store.idempotency.get('k1', 'alice')).toEqual(record);
        expect(await store.idempotency.get('k1', 'bob')).toBeUndefined();
        await store.idempotency.put({ key: 'k1', actor: 'bob', requestHash: 'other', status: 201, response: null });
        expect((await store.idempotency.get('k1', 'bob'))?.response).toBeNull();
      });

      it('refuses a second answer for the same key and actor', async () => {
        await store.idempotency.put({ key: 'k1', actor: 'alice', requestHash: 'rh', status: 202, response: {} });
        const error = await rejectionOf(store.idempotency.put({ key: 'k1', actor: 'alice', requestHash: 'rh', status: 202, response: {} }));
        expect(error.code).toBe('conflict');
        expect(error.message).toContain('Idempotency-Key "k1"');
      });

      it('forgets old answers', async () => {
        await store.idempotency.put({ key: 'old', actor: 'a', requestHash: 'rh', status: 200, response: {} });
        clock.tick(86_400_000);
        await store.idempotency.put({ key: 'new', actor: 'a', requestHash: 'rh', status: 200, response: {} });
        expect(await store.idempotency.deleteOlderThan(clock.iso(-1000))).toBe(1);
        expect(await store.idempotency.get('old', 'a')).toBeUndefined();
        expect(await store.idempotency.get('new', 'a')).toBeDefined();
      });
    });

    describe('events', () => {
      it('appends with growing seqs and reads them back since a seq', async () => {
        expect(await store.events.lastSeq()).toBe(0);
        const appended = [];
        for (let index = 0; index < 12; index += 1) {
          appended.push(await store.events.append({ type: 'vm.updated', objectKind: 'vm', objectId: `v${index}`, data: { index } }));
        }
        expect(appended[0]).toEqual({ seq: appended[0]!.seq, type: 'vm.updated', objectKind: 'vm', objectId: 'v0', data: { index: 0 }, createdAt: clock.iso() });
        const seqs = appended.map((event) => event.seq);
        expect([...seqs].sort((a, b) => a - b)).toEqual(seqs);
        expect(new Set(seqs).size).toBe(12);
        expect(await store.events.since(0)).toEqual(appended);
        expect(await store.events.since(seqs[4]!)).toEqual(appended.slice(5));
        expect(await store.events.since(seqs[4]!, 3)).toEqual(appended.slice(5, 8));
        expect(await store.events.since(seqs[11]!)).toEqual([]);
        expect(await store.events.lastSeq()).toBe(seqs[11]);
        expect((await rejectionOf(store.events.since(-1))).code).toBe('invalid');
      });

      it('never reuses a seq, even after pruning', async () => {
        await store.events.append({ type: 'a', objectKind: 'vm', objectId: 'v' });
        clock.tick(10_000);
        const kept = await store.events.append({ type: 'b', objectKind: 'vm', objectId: 'v' });
        expect(await store.events.deleteOlderThan(clock.iso(-1))).toBe(1);
        expect(await store.events.since(0)).toEqual([kept]);
        const last = await store.events.append({ type: 'c', objectKind: 'vm', objectId: 'v' });
        await store.events.deleteOlderThan(clock.iso(1));
        const after = await store.events.append({ type: 'd', objectKind: 'vm', objectId: 'v' });
        expect(after.seq).toBeGreaterThan(last.seq);
      });

      it('drops events appended in a transaction that rolls back', async () => {
        await rejectionOf(
          store.transaction(async (tx) => {
            await tx.events.append({ type: 'vm.created', objectKind: 'vm', objectId: 'v' });
            throw new DroverError('conflict', 'changed my mind');
          }),
        );
        expect(await store.events.since(0)).toEqual([]);
      });

      it('makes seqs visible in order: an append waits for a transaction that appended first', async () => {
        let appended!: () => void;
        let release!: () => void;
        const hasAppended = new Promise<void>((resolve) => (appended = resolve));
        const gate = new Promise<void>((resolve) => (release = resolve));
        const first = store.transaction(async (tx) => {
          const event = await tx.events.append({ type: 'first', objectKind: 'vm', objectId: 'v' });
          appended();
          await gate;
          return event;
        });
        await hasAppended;
        let secondDone = false;
        const second = store.events.append({ type: 'second', objectKind: 'vm', objectId: 'v' }).then((event) => {
          secondDone = true;
          return event;
        });
        await delay(200);
        expect(secondDone).toBe(false);
        release();
        const [a, b] = await Promise.all([first, second]);
        expect(b.seq).toBeGreaterThan(a.seq);
        expect((await store.events.since(0)).map((event) => event.type)).toEqual(['first', 'second']);
      });
    });

    describe('host power and evacuations (0005_power)', () => {
      it('keeps power settings per host, the time off, evacuation records and settings', async () => {
        const host = await store.hosts.create(hostInput('h1'));
        const other = await store.hosts.create(hostInput('h2'));
        const vm = (await store.vms.create(vmInput('a')))!;
        expect(await store.power.getHostPower(host.id)).toBeUndefined();
        const put = await store.power.putHostPower(host.id, { driver: 'command', on: 'a', off: 'b', status: 'c' });
        expect(put).toEqual({ hostId: host.id, config: { driver: 'command', on: 'a', off: 'b', status: 'c' }, poweredOffAt: null, offMsTotal: 0, updatedAt: clock.iso(0) });
        await store.power.markPower(host.id, true, new Date(clock.iso(0)));
        expect((await store.power.getHostPower(host.id))!.poweredOffAt).toBe(clock.iso(0));
        await store.power.markPower(host.id, false, new Date(clock.iso(90_000)));
        const back = (await store.power.getHostPower(host.id))!;
        expect([back.poweredOffAt, back.offMsTotal]).toEqual([null, 90_000]);
        await store.power.putHostPower(host.id, { driver: 'wol', mac: '52:54:00:00:00:01', address: '10.0.0.255' });
        expect((await store.power.getHostPower(host.id))!.offMsTotal).toBe(90_000);
        expect((await store.power.listHostPower()).map((p) => p.hostId)).toEqual([host.id]);

        const record = await store.power.addEvacuation({ hostId: host.id, vmId: vm.id, policy: 'live-migrate', toHostId: other.id, operationId: 'op-1' });
        expect(await store.power.listEvacuations(host.id)).toEqual([{ ...record, createdAt: clock.iso(0) }]);
        await store.power.deleteEvacuation(record.id);
        expect(await store.power.listEvacuations(host.id)).toEqual([]);

        expect(await store.power.getSetting('policy')).toBeUndefined();
        await store.power.putSetting('policy', { window: '22:00-06:00' });
        await store.power.putSetting('policy', { window: '23:00-05:00' });
        expect(await store.power.getSetting('policy')).toEqual({ window: '23:00-05:00' });

        await store.power.addEvacuation({ hostId: host.id, vmId: vm.id, policy: 'stop', toHostId: null, operationId: 'op-2' });
        await store.hosts.delete(host.id);
        expect(await store.power.getHostPower(host.id)).toBeUndefined();
        expect(await store.power.listEvacuations(host.id)).toEqual([]);
      });
    });

    describe('networks (0007_networks)', () => {
      it('keeps networks, security groups, VM NICs and host rules; uniques, references and cascades hold', async () => {
        const base = { kind: 'nat', subnet: '10.50.0.0/24', gateway: '10.50.0.1', uplink: 'eth0', mtu: null, labels: { zone: 'a' }, owner: 'alice', lab: null };
        const net = await store.net.networks.create({ ...base, name: 'pub', vni: 4096 });
        expect(await store.net.networks.getByName('pub')).toEqual(net);
        expect((await rejectionOf(store.net.networks.create({ ...base, name: 'pub', vni: 4097 }))).code).toBe('conflict');
        expect((await rejectionOf(store.net.networks.create({ ...base, name: 'other', vni: 4096 }))).code).toBe('conflict');
        expect((await rejectionOf(store.net.networks.create({ ...base, name: 'bad', kind: 'wormhole', vni: 4098 }))).code).toBe('invalid');
        const edited = await store.net.networks.update(net.id, { mtu: 1400 }, { expectedRev: 1 });
        expect(edited).toMatchObject({ mtu: 1400, rev: 2, labels: { zone: 'a' } });
        expect((await rejectionOf(store.net.networks.update(net.id, { mtu: 1300 }, { expectedRev: 1 }))).code).toBe('precondition_failed');

        const web = await store.net.groups.create({ name: 'web', description: '', rules: [{ direction: 'ingress', protocol: 'tcp', ports: { from: 80, to: 80 }, cidr: '10.0.0.0/8' }], owner: 'alice', lab: null });
        expect((await store.net.groups.update(web.id, { rules: [] }, { expectedRev: 1 })).rules).toEqual([]);
        expect((await rejectionOf(store.net.groups.create({ name: 'web', description: '', rules: [], owner: 'bob', lab: null }))).code).toBe('conflict');

        const vm = (await store.vms.create(vmInput('netvm')))!;
        const nic = { vmId: vm.id, nicIndex: 0, networkId: net.id, mac: '52:54:00:00:00:01', ip: '10.50.0.2', tap: 'dtnetvm0', groups: ['web'], settings: { lab: 'x' } };
        const created = await store.net.nics.create(nic);
        expect(await store.net.nics.ofVm(vm.id)).toEqual([created]);
        expect((await rejectionOf(store.net.nics.create({ ...nic, nicIndex: 1, mac: '52:54:00:00:00:02', tap: 'dtnetvm1' }))).code).toBe('conflict'); // same address on the network
        expect((await rejectionOf(store.net.nics.create({ ...nic, nicIndex: 1, ip: '10.50.0.3', tap: 'dtnetvm1' }))).code).toBe('conflict'); // same MAC
        expect((await rejectionOf(store.net.nics.create({ ...nic, nicIndex: 0, ip: '10.50.0.3', mac: '52:54:00:00:00:02', tap: 'dtnetvm1' }))).code).toBe('conflict'); // same index
        expect((await rejectionOf(store.net.nics.create({ ...nic, networkId: missingId, nicIndex: 1, ip: '10.50.0.3', mac: '52:54:00:00:00:02', tap: 'dtnetvm1' }))).code).toBe('invalid');
        expect((await store.net.nics.update(created.id, { groups: [] })).groups).toEqual([]);
        // A network with NICs cannot go.
        expect((await rejectionOf(store.net.networks.delete(net.id))).code).toBe('conflict');

        const rule = await store.net.hostRules.create({ networkId: net.id, protocol: 'tcp', ports: { from: 22, to: 22 }, cidr: '10.50.0.0/28', action: 'accept' });
        clock.tick();
        await store.net.hostRules.create({ networkId: null, protocol: 'any', ports: null, cidr: null, action: 'drop' });
        expect((await store.net.hostRules.all()).map((r) => r.id)[0]).toBe(rule.id);
        expect((await rejectionOf(store.net.hostRules.create({ networkId: null, protocol: 'gre', ports: null, cidr: null, action: 'drop' }))).code).toBe('invalid');

        // Deleting the VM takes its NICs; then the network goes, with its host rules.
        await store.vms.delete(vm.id);
        expect(await store.net.nics.all()).toEqual([]);
        await store.net.networks.delete(net.id);
        expect((await store.net.hostRules.all()).map((r) => r.networkId)).toEqual([null]);
      });
    });

    describe('VMcasting (0006_vmcasting)', () => {
      it('keeps appliance metadata, keys, channels, subscriptions, releases and follows; cascades and uniques hold', async () => {
        const image = await store.images.create({ name: 'webapp', version: '2.0', format: 'qcow2', sizeBytes: 10, sha256: 'a'.repeat(64), source: 'vmcast:web' });
        const meta = await store.vmcast.metadata.create({ imageId: image.id, architecture: 'x86_64', bootMethod: 'appliance-kernel', minMemoryMiB: 96, minCpus: 1, labels: { app: 'web' } });
        expect(await store.vmcast.metadata.byImage(image.id)).toEqual(meta);
        expect((await rejectionOf(store.vmcast.metadata.create({ imageId: image.id, architecture: 'x', bootMethod: 'floppy', minMemoryMiB: 1, minCpus: 1, labels: {} }))).code).toBe('invalid');

        const key = await store.vmcast.keys.create({ name: 'k1', publicKey: 'pub', privateKey: 'priv', state: 'active' });
        expect((await store.vmcast.keys.update(key.id, { state: 'retired' })).rev).toBe(2);
        expect((await rejectionOf(store.vmcast.keys.create({ name: 'k1', publicKey: 'p', privateKey: 'q', state: 'active' }))).code).toBe('conflict');
        const channel = await store.vmcast.channels.create({ name: 'web', title: 'Web', description: '' });
        const sub = await store.vmcast.subscriptions.create({ name: 'web', url: 'http://pub/feed.rss', pinnedKeys: [{ keyId: 'k', publicKey: 'pem' }], allowedHosts: ['pub'], pollSeconds: 60 });
        const polled = await store.vmcast.subscriptions.update(sub.id, { etag: '"e"', failures: 2, nextPollAt: clock.iso(60_000), pinnedKeys: [{ keyId: 'k', publicKey: 'pem', revoked: true }] });
        expect(polled).toMatchObject({ etag: '"e"', lastModified: null, failures: 2, nextPollAt: clock.iso(60_000), pinnedKeys: [{ keyId: 'k', publicKey: 'pem', revoked: true }] });

        const base = { name: 'webapp', manifest: { sizeBytes: 10 }, url: 'http://pub/i', keyId: 'k', signature: 's', imageId: null, reason: null, receivedBytes: 0 };
        const published = await store.vmcast.releases.create({ ...base, channelId: channel.id, subscriptionId: null, version: '2.0', state: 'published' });
        const received = await store.vmcast.releases.create({ ...base, channelId: null, subscriptionId: sub.id, version: '2.0', state: 'available' });
        await store.vmcast.releases.create({ ...base, channelId: null, subscriptionId: sub.id, version: '3.0', state: 'quarantined', reason: 'bad signature' });
        expect((await store.vmcast.releases.all({ channelId: channel.id })).map((r) => r.id)).toEqual([published.id]);
        expect((await store.vmcast.releases.all({ subscriptionId: sub.id, state: ['available', 'downloading'] })).map((r) => r.id)).toEqual([received.id]);
        const verified = await store.vmcast.releases.update(received.id, { state: 'verified', imageId: image.id, receivedBytes: 10 });
        expect(verified).toMatchObject({ state: 'verified', imageId: image.id, receivedBytes: 10, manifest: { sizeBytes: 10 } });

        const vm = (await store.vms.create(vmInput('follower')))!;
        const follow = await store.vmcast.follows.create({ vmId: vm.id, subscriptionId: sub.id, policy: 'notify', held: false, currentReleaseId: null, maintenanceWindow: '02:00-04:00' });
        expect((await store.vmcast.follows.update(follow.id, { held: true, pendingReleaseId: received.id })).held).toBe(true);
        expect((await store.vmcast.follows.byVm(vm.id))!).toMatchObject({ policy: 'notify', held: true, pendingReleaseId: received.id, maintenanceWindow: '02:00-04:00' });
        expect((await rejectionOf(store.vmcast.follows.create({ vmId: vm.id, subscriptionId: sub.id, policy: 'auto', held: false, currentReleaseId: null, maintenanceWindow: null }))).code).toBe('conflict');
        expect((await rejectionOf(store.vmcast.follows.update(follow.id, { policy: 'sometimes' }))).code).toBe('invalid');

        // Deleting the image keeps the release (image_id set null) and drops its metadata; deleting the subscription drops its releases and follows.
        await store.images.delete(image.id);
        expect(await store.vmcast.metadata.byImage(image.id)).toBeUndefined();
        expect((await store.vmcast.releases.get(received.id)).imageId).toBeNull();
        await store.vmcast.subscriptions.delete(sub.id);
        expect(await store.vmcast.releases.all({ subscriptionId: sub.id })).toEqual([]);
        expect(await store.vmcast.follows.byVm(vm.id)).toBeUndefined();
        expect((await store.vmcast.releases.all({ channelId: channel.id })).length).toBe(1);
      });
    });

    describe('guest packages (0010_guest_packages)', () => {
      it('keeps channel packages and each VM\'s packages; cascades hold', async () => {
        const channel = await store.vmcast.channels.create({ name: 'pk', title: 'Pk', description: '' });
        const sub = await store.vmcast.subscriptions.create({ name: 'pk', url: 'http://pub/feed.rss', pinnedKeys: [], allowedHosts: [], pollSeconds: 60 });
        const base = { name: 'motd', manifest: { kind: 'package' }, sha256: 'b'.repeat(64), sizeBytes: 5_000_000_000, url: 'http://pub/p', keyId: 'k', signature: 's', reason: null };
        const published = await store.vmcast.packages.create({ ...base, channelId: channel.id, subscriptionId: null, version: '1.0', state: 'published' });
        const received = await store.vmcast.packages.create({ ...base, channelId: null, subscriptionId: sub.id, version: '1.0', state: 'available' });
        expect((await store.vmcast.packages.all({ channelId: channel.id })).map((p) => p.id)).toEqual([published.id]);
        expect((await store.vmcast.packages.update(received.id, { state: 'verified' })).state).toBe('verified');
        expect((await store.vmcast.packages.all({ subscriptionId: sub.id, state: 'verified' }))[0]).toMatchObject({ sizeBytes: 5_000_000_000, manifest: { kind: 'package' } });
        expect((await rejectionOf(store.vmcast.packages.update(received.id, { state: 'lost' }))).code).toBe('invalid');

        const vm = (await store.vms.create(vmInput('pkg-vm')))!;
        const row = await store.vmcast.vmPackages.put(vm.id, { approved: { motd: '1.0' } });
        expect(row).toMatchObject({ approved: { motd: '1.0' }, offered: [], installed: [], reportedAt: null });
        const reported = await store.vmcast.vmPackages.put(vm.id, { installed: [{ name: 'motd', version: '1.0' }], reportedAt: clock.iso(0) });
        expect(reported).toMatchObject({ id: row.id, approved: { motd: '1.0' }, installed: [{ name: 'motd', version: '1.0' }] });
        await store.vmcast.subscriptions.delete(sub.id);
        expect(await store.vmcast.packages.all({ subscriptionId: sub.id })).toEqual([]);
        await store.vms.delete(vm.id);
        expect(await store.vmcast.vmPackages.byVm(vm.id)).toBeUndefined();
      });
    });

    describe('appliance packages (0008_packages)', () => {
      it('keeps packages with their manifest and images, one per name:version, and trusted keys', async () => {
        const image = await store.images.create({ name: 'shop.web-0', version: '1', format: 'qcow2', sizeBytes: 10, sha256: 'c'.repeat(64), source: 'package:shop:1' });
        const input = {
          name: 'shop',
          version: '1',
          description: null,
          formatVersion: 1,
          manifest: { format: 'drover-eva', formatVersion: 1, vms: [{ name: 'web', disks: [{ file: 'disks/web-0.qcow2' }] }] },
          images: { 'disks/web-0.qcow2': image.id },
          signerKeyId: 'd'.repeat(64),
          source: 'import',
          origin: 'upload',
          fileSizeBytes: 5_000_000_000,
          fileSha256: 'e'.repeat(64),
          owner: 'admin',
        };
        const created = await store.packages.create(input);
        expect(await store.packages.get(created.id)).toEqual(created);
        expect(created).toMatchObject({ ...input, images: { 'disks/web-0.qcow2': image.id } });
        expect(await store.packages.tryRelease('shop', '1')).toEqual(created);
        expect(await store.packages.tryRelease('shop', '2')).toBeUndefined();
        expect((await rejectionOf(store.packages.create(input))).code).toBe('conflict');
        expect((await rejectionOf(store.packages.create({ ...input, version: '2', source: 'floppy' }))).code).toBe('invalid');
        const ova = await store.packages.create({ ...input, version: '2', source: 'ova', signerKeyId: null, fileSizeBytes: null, fileSha256: null });
        expect(ova).toMatchObject({ signerKeyId: null, fileSizeBytes: null, fileSha256: null });
        // Ordered by name, then id.
        expect((await store.packages.list({ filter: { exactName: 'shop' } })).items.map((p) => p.id)).toEqual([created.id, ova.id].sort());
        await store.packages.delete(created.id);
        expect((await store.packages.all()).map((p) => p.id)).toEqual([ova.id]);

        const key = await store.packageKeys.create({ keyId: 'f'.repeat(64), name: 'site-a', publicKey: 'pem' });
        expect(await store.packageKeys.tryFind('site-a')).toEqual(key);
        expect(await store.packageKeys.tryFind('f'.repeat(64))).toEqual(key);
        expect((await rejectionOf(store.packageKeys.create({ keyId: 'f'.repeat(64), name: 'other', publicKey: 'pem' }))).code).toBe('conflict');
        expect((await rejectionOf(store.packageKeys.create({ keyId: 'nothex', name: 'bad', publicKey: 'pem' }))).code).toBe('invalid');
      });
    });

    describe('labs (0009_labs)', () => {
      it('keeps labs with their networks, groups and VMs, one per name, rev-checked', async () => {
        const input = {
          name: 'class1',
          state: 'deploying',
          source: { kind: 'example', ref: 'web-db' },
          manifest: { name: 'web-db', networks: [], vms: [{ name: 'db-1', image: 'db' }] },
          networkMode: 'networks',
          networks: [{ name: 'lan', network: 'class1-lan', kind: 'isolated', subnet: '10.213.0.0/24', manifestSubnet: '10.10.0.0/24', made: false }],
          groups: [{ name: 'db', group: 'class1-db', made: false }],
          vms: [{ name: 'db-1', vm: 'class1-db-1', vmId: null, order: 0, addresses: ['10.213.0.11'], endpoints: [] }],
          labels: { course: 'net101' },
          updatePolicy: 'pinned',
          owner: 'admin',
          project: null,
          lastError: null,
        };
        const id = '3f0c6a52-4b43-4d0e-9d7e-2b8a1f6c0a11';
        const lab = await store.labs.create(input, id);
        expect(lab).toMatchObject({ ...input, id, rev: 1 });
        expect(await store.labs.find('class1')).toEqual(lab);
        expect((await rejectionOf(store.labs.create(input))).code).toBe('conflict');
        const updated = await store.labs.update(lab.id, { state: 'running', networks: [{ ...input.networks[0]!, made: true }] }, { expectedRev: 1 });
        expect(updated).toMatchObject({ state: 'running', rev: 2, networks: [{ made: true }] });
        expect((await rejectionOf(store.labs.update(lab.id, { state: 'stopped' }, { expectedRev: 1 }))).code).toBe('precondition_failed');
        expect((await store.labs.list({ filter: { state: 'running' } })).items.map((l) => l.name)).toEqual(['class1']);
        await store.labs.delete(lab.id);
        expect(await store.labs.tryFind('class1')).toBeUndefined();
      });
    });

    describe('security policy and labels (0003_policy)', () => {
      it('keeps one active policy, replaced on load, and labels per object', async () => {
        expect(await store.security.activePolicy()).toBeUndefined();
        await store.security.putActivePolicy({ name: 'p1', document: { name: 'p1', steTypes: ['a'] }, sourceFormat: 'xml', loadedBy: 'admin' });
        const second = await store.security.putActivePolicy({ name: 'p2', document: { name: 'p2' }, sourceFormat: 'yaml', loadedBy: 'alice' });
        expect(second).toEqual({ name: 'p2', document: { name: 'p2' }, sourceFormat: 'yaml', loadedBy: 'alice', loadedAt: second.loadedAt });
        expect((await store.security.activePolicy())!.name).toBe('p2');
        await store.security.setLabel('host', 'h-1', 'ACM:p2:dom_A');
        await store.security.setLabel('host', 'h-1', 'ACM:p2:dom_B');
        await store.security.setLabel('volume', 'h-1/default/v.qcow2', 'ACM:p2:res_A');
        expect(await store.security.label('host', 'h-1')).toBe('ACM:p2:dom_B');
        expect((await store.security.labels()).map((l) => [l.kind, l.objectId, l.label])).toEqual([
          ['host', 'h-1', 'ACM:p2:dom_B'],
          ['volume', 'h-1/default/v.qcow2', 'ACM:p2:res_A'],
        ]);
        expect((await store.security.labels('volume')).length).toBe(1);
        await store.security.setLabel('host', 'h-1', null);
        expect(await store.security.label('host', 'h-1')).toBeUndefined();
      });
    });

    describe('reservations', () => {
      it('holds capacity per VM, sums it per host and releases it', async () => {
        const host = await store.hosts.create(hostInput('h1'));
        const other = await store.hosts.create(hostInput('h2'));
        const [a, b, c] = [await store.vms.create(vmInput('a')), await store.vms.create(vmInput('b')), await store.vms.create(vmInput('c'))];
        expect(await store.reservations.sumByHost(host.id)).toEqual({ cpus: 0, memoryMiB: 0 });
        const ra = await store.reservations.create({ hostId: host.id, vmId: a!.id, cpus: 2, memoryMiB: 1024, expiresAt: clock.iso(60_000) });
        clock.tick();
        const rb = await store.reservations.create({ hostId: host.id, vmId: b!.id, cpus: 1, memoryMiB: 512, expiresAt: clock.iso(60_000) });
        await store.reservations.create({ hostId: other.id, vmId: c!.id, cpus: 4, memoryMiB: 4096, expiresAt: clock.iso(60_000) });
        expect(ra).toEqual({ id: expect.any(String), hostId: host.id, vmId: a!.id, cpus: 2, memoryMiB: 1024, expiresAt: clock.iso(59_000), createdAt: clock.iso(-1000) });
        expect(await store.reservations.sumByHost(host.id)).toEqual({ cpus: 3, memoryMiB: 1536 });
        expect(await store.reservations.listByHost(host.id)).toEqual([ra, rb]);
        const twice = await rejectionOf(store.reservations.create({ hostId: host.id, vmId: a!.id, cpus: 1, memoryMiB: 1, expiresAt: clock.iso(60_000) }));
        expect(twice.code).toBe('conflict');
        expect(twice.message).toContain(`vmId "${a!.id}"`);
        expect(await store.reservations.deleteByVm(a!.id)).toBe(true);
        expect(await store.reservations.deleteByVm(a!.id)).toBe(false);
        expect(await store.reservations.sumByHost(host.id)).toEqual({ cpus: 1, memoryMiB: 512 });
        await store.hosts.delete(other.id);
        expect(await store.reservations.deleteByVm(c!.id)).toBe(false);
      });

      it('expires reservations', async () => {
        const host = await store.hosts.create(hostInput('h1'));
        const [a, b] = [await store.vms.create(vmInput('a')), await store.vms.create(vmInput('b'))];
        await store.reservations.create({ hostId: host.id, vmId: a!.id, cpus: 2, memoryMiB: 100, expiresAt: clock.iso(10_000) });
        await store.reservations.create({ hostId: host.id, vmId: b!.id, cpus: 1, memoryMiB: 50, expiresAt: clock.iso(60_000) });
        expect(await store.reservations.sumByHost(host.id, { now: clock.iso(30_000) })).toEqual({ cpus: 1, memoryMiB: 50 });
        expect(await store.reservations.sumByHost(host.id)).toEqual({ cpus: 3, memoryMiB: 150 });
        expect(await store.reservations.deleteExpired(clock.iso(30_000))).toBe(1);
        expect(await store.reservations.sumByHost(host.id)).toEqual({ cpus: 1, memoryMiB: 50 });
      });

      it('refuses a reservation on a host or for a VM that does not exist', async () => {
        const error = await rejectionOf(store.reservations.create({ hostId: missingId, vmId: missingId, cpus: 1, memoryMiB: 1, expiresAt: clock.iso(1000) }));
        expect(error.code).toBe('invalid');
      });
    });

    describe('transactions', () => {
      it('commits everything fn wrote', async () => {
        const vm = await store.transaction(async (tx) => {
          expect(tx.inTransaction).toBe(true);
          const host = await tx.hosts.create(hostInput('h1'));
          return tx.vms.create(vmInput('web-1', { hostId: host.id }));
        });
        expect((await store.vms.get(vm.id)).hostId).toBe((await store.hosts.getByName('h1')).id);
        expect(store.inTransaction).toBe(false);
      });

      it('rolls everything back when fn throws, and rethrows its error', async () => {
        const host = await store.hosts.create(hostInput('h1'));
        const failure = new Error('placement failed');
        const thrown = await store
          .transaction(async (tx) => {
            await tx.hosts.update(host.id, { state: 'maintenance' });
            await tx.vms.create(vmInput('web-1', { hostId: host.id }));
            await tx.events.append({ type: 'vm.created', objectKind: 'vm', objectId: 'x' });
            throw failure;
          })
          .catch((error: unknown) => error);
        expect(thrown).toBe(failure);
        expect(await store.hosts.get(host.id)).toEqual(host);
        expect(await store.vms.tryFind('web-1')).toBeUndefined();
        expect(await store.events.lastSeq()).toBe(0);
      });

      it('rolls back when a statement fails inside', async () => {
        await store.hosts.create(hostInput('h1'));
        const error = await rejectionOf(
          store.transaction(async (tx) => {
            await tx.hosts.create(hostInput('h2'));
            await tx.hosts.create(hostInput('h1'));
          }),
        );
        expect(error.code).toBe('conflict');
        expect(await store.hosts.tryFind('h2')).toBeUndefined();
      });

      it('joins the running transaction when nested', async () => {
        await rejectionOf(
          store.transaction(async (tx) => {
            await tx.transaction(async (inner) => {
              expect(inner).toBe(tx);
              await inner.hosts.create(hostInput('h1'));
            });
            throw new DroverError('conflict', 'undo');
          }),
        );
        expect(await store.hosts.tryFind('h1')).toBeUndefined();
      });

      it('refuses the outer store inside a transaction (instead of deadlocking) and a transactional store after it', async () => {
        let leaked: Store | undefined;
        const error = await rejectionOf(
          store.transaction(async (tx) => {
            leaked = tx;
            await store.hosts.list();
          }),
        );
        expect(error.code).toBe('internal');
        expect(error.message).toContain('store.transaction(fn)');
        expect((await rejectionOf(leaked!.hosts.list())).code).toBe('internal');
        await store.hosts.list();
      });

      it('locks rows only inside transactions', async () => {
        const host = await store.hosts.create(hostInput('h1'));
        expect((await rejectionOf(store.hosts.getForUpdate(host.id))).code).toBe('internal');
        expect(await store.transaction((tx) => tx.hosts.getForUpdate(host.id))).toEqual(host);
        expect((await rejectionOf(store.transaction((tx) => tx.hosts.getForUpdate(missingId)))).code).toBe('not_found');
      });

      it('never overcommits: of 20 concurrent starts on a host with room for 5, exactly 5 reserve', async () => {
        const host = await store.hosts.create(hostInput('h1', { capacity: { cpus: 5, memoryMiB: 5 * 512 } }));
        const vms = await store.transaction(async (tx) => {
          const made: VmRecord[] = [];
          for (let index = 0; index < 20; index += 1) made.push(await tx.vms.create(vmInput(`vm-${index}`)));
          return made;
        });
        const outcomes = await Promise.all(
          vms.map((vm) =>
            store.transaction(async (tx) => {
              const locked = await tx.hosts.getForUpdate(host.id);
              const reserved = await tx.reservations.sumByHost(host.id);
              // Let the other transactions run here if the backend would let them.
              await delay(5);
              if (reserved.cpus + 1 > locked.capacity.cpus) return false;
              await tx.reservations.create({ hostId: host.id, vmId: vm.id, cpus: 1, memoryMiB: 512, expiresAt: clock.iso(60_000) });
              await tx.events.append({ type: 'reservation.created', objectKind: 'vm', objectId: vm.id });
              return true;
            }),
          ),
        );
        expect(outcomes.filter(Boolean)).toHaveLength(5);
        expect(await store.reservations.sumByHost(host.id)).toEqual({ cpus: 5, memoryMiB: 5 * 512 });
        expect(await store.events.since(0)).toHaveLength(5);
      });
    });

    describe('cluster: managers, leader, operation claims, secrets, snapshots', () => {
      it('keeps one row per manager, forgets rows not seen, and grows the leader term', async () => {
        const manager = { id: 'm-1', name: 'box/1', url: 'http://127.0.0.1:1', version: '0.1.0', pid: 1, startedAt: clock.iso() };
        await store.cluster.heartbeat(manager);
        clock.time += 5000;
        await store.cluster.heartbeat({ ...manager, url: 'http://127.0.0.1:2' });
        await store.cluster.heartbeat({ ...manager, id: 'm-2' });
        const rows = await store.cluster.managers();
        expect(rows.map((m) => [m.id, m.url, m.lastSeenAt])).toEqual([
          ['m-1', 'http://127.0.0.1:2', clock.iso()],
          ['m-2', 'http://127.0.0.1:1', clock.iso()],
        ]);
        expect(await store.cluster.removeManagersSeenBefore(clock.iso(1))).toBe(2);
        expect(await store.cluster.leader()).toBeUndefined();
        expect((await store.cluster.becomeLeader('m-1')).term).toBe(1);
        expect(await store.cluster.becomeLeader('m-2')).toEqual({ managerId: 'm-2', term: 2, since: clock.iso() });
        expect((await store.cluster.leader())?.managerId).toBe('m-2');
      });

      it('finds the unfinished operations of managers that are gone and moves their claim', async () => {
        const op = (state: 'pending' | 'running' | 'done', targetId: string) => store.operations.create({ kind: 'vm.start', targetKind: 'vm', targetId, actor: 'alice', state });
        const mine = await op('running', 't1');
        const theirs = await op('running', 't2');
        const unclaimed = await op('pending', 't3');
        const finished = await op('done', 't4');
        await store.transaction(async (tx) => {
          await tx.cluster.claim(mine.id, 'alive');
          await tx.cluster.claim(theirs.id, 'dead');
          await tx.cluster.claim(finished.id, 'dead');
        });
        const orphans = await store.transaction(async (tx) => {
          const found = await tx.cluster.orphans(['alive']);
          for (const id of found) await tx.cluster.claim(id, 'alive');
          return found;
        });
        expect(orphans.sort()).toEqual([theirs.id, unclaimed.id].sort());
        expect(await store.cluster.claimOf(theirs.id)).toBe('alive');
        expect(await store.transaction((tx) => tx.cluster.orphans(['alive']))).toEqual([]);
        expect((await rejectionOf(store.cluster.orphans(['alive'])) as DroverError).code).toBe('internal');
        expect((await rejectionOf(store.cluster.lockTarget('t1')) as DroverError).code).toBe('internal');
        // Deleting an operation deletes its claim.
        await store.operations.delete(theirs.id);
        expect(await store.cluster.claimOf(theirs.id)).toBeUndefined();
      });

      it('keeps the first sealed secret of a name', async () => {
        expect(await store.cluster.putSecretIfAbsent('ca/authority/ca.key', 'first')).toBe('first');
        expect(await store.cluster.putSecretIfAbsent('ca/authority/ca.key', 'second')).toBe('first');
        await store.cluster.putSecret('admin-token', 'x');
        expect(await store.cluster.secretNames()).toEqual(['admin-token', 'ca/authority/ca.key']);
      });

      it('exports every table and loads it into an empty store of the same backend, refusing a non-empty one', async () => {
        const host = await store.hosts.create(hostInput('h1', { labels: { rack: 'r1' } }));
        const pool = await store.pools.create({ name: 'default', path: '/p', shared: true, hostIds: [host.id] });
        const vm = await store.vms.create(vmInput('vm-1', { hostId: host.id, autostart: true, labels: { tier: 'web' } }));
        // A clone created before its base's row sorts first: the load must still put the base first.
        const base = await store.volumes.create({ poolId: pool.id, name: 'zz-base', sizeBytes: 10, format: 'qcow2' });
        await store.volumes.create({ poolId: pool.id, name: 'aa-clone', sizeBytes: 10, format: 'qcow2', backingVolumeId: base.id, vmId: vm.id });
        await store.events.append({ type: 'vm.updated', objectKind: 'vm', objectId: vm.id, data: { nested: { a: [1, 'two'] } } });
        const snapshot = await store.exportSnapshot();
        expect(snapshot.migrations).toEqual(allMigrations);
        const copy = await (await harness.newDatabase()).open({ now: clock.now });
        opened.push(copy);
        const loaded = await copy.importSnapshot(JSON.parse(JSON.stringify(snapshot)));
        expect(loaded).toEqual(await store.tableCounts());
        expect(await copy.tableCounts()).toEqual(await store.tableCounts());
        expect(await copy.vms.get(vm.id)).toEqual(vm);
        expect((await copy.volumes.list({})).items).toEqual((await store.volumes.list({})).items);
        expect(await copy.events.since(0)).toEqual(await store.events.since(0));
        // New rows continue the copied numbering.
        expect((await copy.events.append({ type: 'next', objectKind: 'vm', objectId: vm.id })).seq).toBeGreaterThan((await store.events.lastSeq()));
        const refused = (await rejectionOf(copy.importSnapshot(snapshot))) as DroverError;
        expect(refused.code).toBe('conflict');
        expect(refused.message).toContain('not empty');
        expect((await copy.events.since(0)).length).toBe(2);
        await copy.importSnapshot(snapshot, { replace: true });
        expect(await copy.tableCounts()).toEqual(await store.tableCounts());
        expect((await rejectionOf(copy.importSnapshot({ ...snapshot, migrations: [...snapshot.migrations, '9999_future'] }))).message).toContain('newer schema');
        expect((await rejectionOf(copy.importSnapshot({ format: 'x' } as never))).message).toContain('Not a Drover store snapshot');
      });
    });
  });
}

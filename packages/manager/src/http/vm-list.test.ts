import { rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Value } from 'typebox/value';
import { Page, Vm } from '@drover/api';
import { tempDir } from '@drover/agent/testing';
import { defaultManagerConfig } from '../config.js';
import { startManager, type RunningManager } from '../manager.js';
import { openSqliteStore, type Store } from '../store/index.js';
import type { HostRecord, NewVm, VmFilter, VmRecord } from '../store/types.js';
import { publicVm } from '../vms/vm.service.js';
import { VmListJson } from './vm-list.js';

function vmInput(name: string, extra: Partial<NewVm> = {}): NewVm {
  return {
    name,
    spec: { image: 'counter:1', imageId: '5d3b8a51-8f5c-4c39-9d1a-3f7c2f1e0a11', cpus: 1, memoryMiB: 128, antiAffinityGroups: [], hostInclude: [], hostExclude: [], forwards: [], cmdline: '' },
    state: 'stopped',
    owner: 'admin',
    labels: { tier: 'web' },
    ...extra,
  };
}

function hostInput(name: string) {
  return { name, address: `https://${name}:8443`, certSerial: '0a', certFingerprint: 'f', capacity: { cpus: 8, memoryMiB: 8192 } };
}

describe('VmListJson: each VM JSON kept, checked against the store on every page', () => {
  let dir: string;
  let store: Store;
  let hosts: HostRecord[];
  let renders: string[];
  const render = (vm: Vm) => {
    renders.push(vm.name);
    return JSON.stringify(vm);
  };

  /** What the page must be: the store's page with each VM made public from a fresh read. */
  async function expected(query: Parameters<Store['vms']['list']>[0]) {
    const page = await store.vms.list(query);
    const names = new Map((await store.hosts.list({ limit: 1000 })).items.map((h) => [h.id, h.name]));
    return { items: page.items.map((vm) => publicVm(vm, vm.hostId ? (names.get(vm.hostId) ?? null) : null)), ...(page.next ? { next: page.next } : {}) };
  }

  beforeEach(async () => {
    dir = tempDir('vm-list');
    store = await openSqliteStore({ file: path.join(dir, 'drover.db') });
    hosts = [await store.hosts.create(hostInput('h1')), await store.hosts.create(hostInput('h2'))];
    for (let i = 0; i < 25; i++) {
      await store.vms.create(vmInput(`vm-${String(i).padStart(2, '0')}`, { hostId: i % 3 === 0 ? null : hosts[i % 2]!.id, state: i % 2 ? 'stopped' : 'running', labels: { tier: i % 2 ? 'web' : 'db' } }));
    }
    renders = [];
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers the same pages as the store, with the same cursors and filters, rendering each VM once', async () => {
    const list = new VmListJson(store);
    for (const [filter, limit] of [
      [{}, 10],
      [{ state: 'running' }, 4],
      [{ hostId: hosts[1]!.id }, 3],
      [{ hostId: null }, 100],
      [{ label: { key: 'tier', value: 'web' }, name: 'vm-1' }, 2],
    ] as Array<[VmFilter, number]>) {
      let after: string | undefined;
      do {
        const query = { filter, limit, ...(after ? { after } : {}) };
        const page = JSON.parse(String(await list.page(query, render))) as { items: Vm[]; next?: string };
        expect(page).toEqual(await expected(query));
        after = page.next;
      } while (after);
    }
    // Every VM was rendered once, however many pages and filters showed it.
    expect(renders.sort()).toEqual([...new Set(renders)].sort());
    expect(renders).toHaveLength(25);
    renders = [];
    await list.page({ limit: 100 }, render);
    expect(renders).toEqual([]);
  });

  it('never answers a VM as it was before a write: edits, state changes, deletes, new VMs', async () => {
    const list = new VmListJson(store);
    const query = { limit: 100 };
    await list.page(query, render);
    const [first, second, third] = (await store.vms.list({ limit: 3 })).items as [VmRecord, VmRecord, VmRecord];
    await store.vms.update(first.id, { labels: { tier: 'cache' } });
    await store.vms.update(second.id, { state: 'error', lastError: 'it broke' });
    await store.vms.delete(third.id);
    await store.vms.create(vmInput('vm-new'));
    renders = [];
    const page = JSON.parse(String(await list.page(query, render))) as { items: Vm[] };
    expect(page).toEqual(await expected(query));
    expect(page.items.find((vm) => vm.id === first.id)!.labels).toEqual({ tier: 'cache' });
    expect(page.items.find((vm) => vm.id === second.id)).toMatchObject({ state: 'error', lastError: 'it broke' });
    expect(page.items.some((vm) => vm.id === third.id)).toBe(false);
    // Only what changed was rendered again.
    expect(renders.sort()).toEqual([first.name, second.name, 'vm-new'].sort());
  });

  it('answers kept pages through writes that do not touch them, and sees writes made by another connection', async () => {
    const list = new VmListJson(store);
    const query = { limit: 10 };
    const before = await list.page(query, render);
    renders = [];
    // Writes elsewhere (an event, a VM on a later page): the page is checked again, unchanged, not made again.
    await store.events.append({ type: 'test', objectKind: 'vm', objectId: 'x' });
    const later = (await store.vms.list({ limit: 100 })).items[20]!;
    await store.vms.update(later.id, { state: 'paused' });
    expect(await list.page(query, render)).toBe(before);
    expect(renders).toEqual([]);
    // Another store on the same file (another manager, a tool): its write shows at once.
    const other = await openSqliteStore({ file: path.join(dir, 'drover.db') });
    try {
      const first = (await store.vms.list(query)).items[0]!;
      await other.vms.update(first.id, { labels: { tier: 'from-elsewhere' } });
      const page = JSON.parse(String(await list.page(query, render))) as { items: Vm[] };
      expect(page).toEqual(await expected(query));
      expect(page.items[0]!.labels).toEqual({ tier: 'from-elsewhere' });
      expect(renders).toEqual([first.name]);
    } finally {
      await other.close();
    }
  });

  it('follows its hosts: a rename, and a removal that unplaces VMs without touching their rev', async () => {
    const list = new VmListJson(store);
    const query = { limit: 100 };
    await list.page(query, render);
    await store.hosts.update(hosts[0]!.id, { name: 'h1-renamed' });
    let page = JSON.parse(String(await list.page(query, render))) as { items: Vm[] };
    expect(page).toEqual(await expected(query));
    expect(page.items.filter((vm) => vm.hostId === hosts[0]!.id).every((vm) => vm.hostName === 'h1-renamed')).toBe(true);

    const onH2 = page.items.filter((vm) => vm.hostId === hosts[1]!.id);
    expect(onH2.length).toBeGreaterThan(0);
    await store.hosts.delete(hosts[1]!.id);
    page = JSON.parse(String(await list.page(query, render))) as { items: Vm[] };
    expect(page).toEqual(await expected(query));
    for (const vm of onH2) expect(page.items.find((each) => each.id === vm.id)).toMatchObject({ hostId: null, hostName: null, rev: vm.rev });
  });

  it('keeps at most its limits of VMs and pages and still answers every page right', async () => {
    const list = new VmListJson(store, { vms: 5, pageBytes: 3000 });
    for (let round = 0; round < 2; round++) {
      let after: string | undefined;
      do {
        const query = { limit: 4, ...(after ? { after } : {}) };
        const page = JSON.parse(String(await list.page(query, render))) as { items: Vm[]; next?: string };
        expect(page).toEqual(await expected(query));
        expect(list.size.vms).toBeLessThanOrEqual(5);
        expect(list.size.pages).toBeLessThanOrEqual(3);
        after = page.next;
      } while (after);
    }
  });
});

describe('GET /api/v1/vms', () => {
  const dataDir = tempDir('vm-list-route');
  let manager: RunningManager;

  async function get(route: string): Promise<{ status: number; contentType: string | null; body: { items: Vm[]; next?: string } }> {
    const response = await fetch(`${manager.url}${route}`, { headers: { authorization: `Bearer ${manager.adminToken}` } });
    return { status: response.status, contentType: response.headers.get('content-type'), body: (await response.json()) as { items: Vm[]; next?: string } };
  }

  beforeAll(async () => {
    manager = await startManager({ ...defaultManagerConfig(dataDir), listen: '127.0.0.1:0', appliances: false });
    const host = await manager.store.hosts.create({ ...hostInput('rack-1'), state: 'powered_off' });
    for (let i = 0; i < 12; i++) await manager.store.vms.create(vmInput(`web-${String(i).padStart(2, '0')}`, { hostId: i % 2 ? host.id : null, labels: { n: String(i % 3) } }));
  });
  afterAll(async () => {
    await manager?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('answers pages in the API schema, following cursors and filters, and shows every change at once', async () => {
    const first = await get('/api/v1/vms?limit=5');
    expect(first.status).toBe(200);
    expect(first.contentType).toBe('application/json; charset=utf-8');
    expect(Value.Check(Page(Vm), first.body)).toBe(true);
    expect(first.body.items.map((vm) => vm.name)).toEqual(['web-00', 'web-01', 'web-02', 'web-03', 'web-04']);
    expect(first.body.items[1]).toMatchObject({ hostName: 'rack-1' });
    expect(first.body.items[0]).toEqual(await manager.vms.toPublic(await manager.store.vms.getByName('web-00')));
    const second = await get(`/api/v1/vms?limit=5&cursor=${first.body.next}`);
    expect(second.body.items.map((vm) => vm.name)).toEqual(['web-05', 'web-06', 'web-07', 'web-08', 'web-09']);
    expect((await get('/api/v1/vms?label=n%3D1&host=rack-1')).body.items.map((vm) => vm.name)).toEqual(['web-01', 'web-07']);

    // An edit through the API (If-Match), and a state change behind the route's back: both show at once.
    const vm = first.body.items[2]!;
    const edited = await fetch(`${manager.url}/api/v1/vms/${vm.id}`, {
      method: 'PATCH',
      headers: { authorization: `Bearer ${manager.adminToken}`, 'content-type': 'application/json', 'if-match': String(vm.rev) },
      body: JSON.stringify({ labels: { n: 'edited' } }),
    });
    expect(edited.status).toBe(200);
    await manager.store.vms.update(first.body.items[3]!.id, { state: 'error', lastError: 'gone wrong' });
    const again = await get('/api/v1/vms?limit=5');
    expect(again.body.items[2]).toMatchObject({ labels: { n: 'edited' }, rev: vm.rev + 1 });
    expect(again.body.items[3]).toMatchObject({ state: 'error', lastError: 'gone wrong' });
    expect(again.body.items).toEqual(await Promise.all((await manager.store.vms.list({ limit: 5 })).items.map((each) => manager.vms.toPublic(each))));
  });
});

import { describe, expect, it, vi } from 'vitest';
import { ApiClient, ApiError, errorTitle, InputError, listAll, queryString } from '../src/api/client.js';
import { EventStream, type EventSourceLike } from '../src/api/events.js';
import type { Operation, Vm } from '../src/api/types.js';
import { newestOperations, parseForwards, vmMatches } from '../src/filters.js';
import { ago, canDo, formatBytes, newerOperation, operationFailureTitle, parseLabels, parseSize, percent } from '../src/format.js';
import { cloudInitSeed, cloudInitSummary, emptyCloudInit } from '../src/media.js';

/** The console's logic without a browser: the API client, the event stream and the list helpers. */

function fakeFetch(answer: (url: string, init: RequestInit) => Response) {
  const calls: Array<{ url: string; init: RequestInit }> = [];
  const fetcher = async (url: string, init: RequestInit = {}) => {
    calls.push({ url, init });
    return answer(url, init);
  };
  return { calls, fetcher };
}

const json = (status: number, body: unknown) => new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });

describe('ApiClient', () => {
  it('sends X-Drover-CSRF on every change and never on a read', async () => {
    const { calls, fetcher } = fakeFetch(() => json(200, { items: [] }));
    const api = new ApiClient('', fetcher);
    await api.vms({ state: 'running', name: '' });
    await api.vmAction('web-1', 'start');
    await api.editVm('web-1', { cpus: 2 }, 7);
    await api.deleteVm('web-1');
    const headers = calls.map((c) => c.init.headers as Record<string, string>);
    expect(calls[0]!.url).toBe('/api/v1/vms?state=running');
    expect(headers[0]!['X-Drover-CSRF']).toBeUndefined();
    for (const h of headers.slice(1)) expect(h['X-Drover-CSRF']).toBe('1');
    expect(calls[1]).toMatchObject({ url: '/api/v1/vms/web-1/start', init: { method: 'POST', body: '{}' } });
    expect(headers[1]!['Idempotency-Key']).toMatch(/^web-[0-9a-f-]{36}$/);
    expect(headers[2]!['If-Match']).toBe('7');
    expect(calls.every((c) => c.init.credentials === 'same-origin')).toBe(true);
  });

  it('turns the error shape into an ApiError with the server message', async () => {
    const { fetcher } = fakeFetch(() => json(409, { error: { code: 'conflict', message: 'Cannot delete VM "web-1": it is running', details: { state: 'running' } } }));
    const error = await new ApiClient('', fetcher).deleteVm('web-1').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({ status: 409, code: 'conflict', message: 'Cannot delete VM "web-1": it is running', details: { state: 'running' } });
    expect(errorTitle(error)).toBe('Not possible right now');
  });

  it('reports a non-JSON answer and an unreachable manager in words', async () => {
    const text = await new ApiClient('', async () => new Response('Bad gateway', { status: 502 })).vms().catch((e: unknown) => e);
    expect(text).toMatchObject({ status: 502, code: 'internal', message: 'Bad gateway' });
    const down = await new ApiClient('', async () => {
      throw new TypeError('Failed to fetch');
    }).vms().catch((e: unknown) => e);
    expect(down).toMatchObject({ status: 0, code: 'network' });
    expect(errorTitle(down)).toBe('Cannot reach the manager');
    expect(errorTitle(new InputError('x'))).toBe('Please correct the form');
  });

  it('calls onUnauthenticated on a 401, except for the session routes themselves', async () => {
    const { fetcher } = fakeFetch(() => json(401, { error: { code: 'unauthenticated', message: 'Log in first', details: {} } }));
    const api = new ApiClient('', fetcher);
    const ended = vi.fn();
    api.onUnauthenticated = ended;
    await expect(api.login('wrong')).rejects.toThrow('Log in first');
    await expect(api.session()).rejects.toThrow();
    expect(ended).not.toHaveBeenCalled();
    await expect(api.hosts()).rejects.toThrow();
    expect(ended).toHaveBeenCalledTimes(1);
  });

  it('asks for a ticket and builds the stream URL with it', async () => {
    const { calls, fetcher } = fakeFetch(() => json(201, { ticket: 'abc_-1', expiresAt: 'x' }));
    const url = await new ApiClient('http://127.0.0.1:8300', fetcher).socketUrl('/vms/v1/console/vnc');
    expect(url).toBe('ws://127.0.0.1:8300/api/v1/vms/v1/console/vnc?ticket=abc_-1');
    expect((calls[0]!.init.headers as Record<string, string>)['X-Drover-CSRF']).toBe('1');
  });

  it('reads the serial log with its next offset, and walks every page of a list', async () => {
    const { fetcher } = fakeFetch((url) => {
      if (url.includes('serial')) return new Response('boot\n', { status: 200, headers: { 'x-log-size': '5', 'content-type': 'text/plain' } });
      const cursor = new URL(url, 'http://x').searchParams.get('cursor');
      return json(200, cursor ? { items: [3] } : { items: [1, 2], next: 'c1' });
    });
    const api = new ApiClient('', fetcher);
    expect(await api.serialLog('v')).toEqual({ text: 'boot\n', next: 5 });
    expect(await listAll((p) => api.request<{ items: number[]; next?: string }>('GET', '/x', { query: { ...p } }))).toEqual({ items: [1, 2, 3], truncated: false });
    expect(queryString({ a: 1, b: undefined, c: '', d: true })).toBe('?a=1&d=true');
  });
});

class FakeSource implements EventSourceLike {
  static all: FakeSource[] = [];
  readyState = 0;
  onopen: EventSourceLike['onopen'] = null;
  onerror: EventSourceLike['onerror'] = null;
  listeners = new Map<string, (event: MessageEvent) => void>();
  closed = false;
  constructor(readonly url: string) {
    FakeSource.all.push(this);
  }
  addEventListener(type: string, listener: (event: MessageEvent) => void) {
    this.listeners.set(type, listener);
  }
  close() {
    this.closed = true;
    this.readyState = 2;
  }
  open() {
    this.readyState = 1;
    this.onopen?.call(this, new Event('open'));
  }
  fail(closed: boolean) {
    this.readyState = closed ? 2 : 0;
    this.onerror?.call(this, new Event('error'));
  }
  emit(type: string, id: number, data: unknown) {
    this.listeners.get(type)?.({ data: JSON.stringify(data), lastEventId: String(id) } as MessageEvent);
  }
}

describe('images, media and devices', () => {
  it('reaches the image and device routes with an Idempotency-Key for each change', async () => {
    const { calls, fetcher } = fakeFetch(() => json(202, { id: 'o' }));
    const api = new ApiClient('', fetcher);
    await api.importImage({ name: 'debian', source: { url: 'https://example.org/d.qcow2' }, format: 'qcow2' });
    await api.deleteImage('debian:1');
    await api.addVmDisk('web-1', { sizeBytes: 1048576, name: 'data.qcow2' });
    await api.removeVmDisk('web-1', 'data.qcow2');
    await api.addVmNic('web-1', { mac: '52:54:00:00:00:01' });
    await api.removeVmNic('web-1', '52:54:00:00:00:01');
    expect(calls.map((c) => `${c.init.method} ${c.url}`)).toEqual([
      'POST /api/v1/images',
      'DELETE /api/v1/images/debian%3A1',
      'POST /api/v1/vms/web-1/disks',
      'DELETE /api/v1/vms/web-1/disks/data.qcow2',
      'POST /api/v1/vms/web-1/nics',
      'DELETE /api/v1/vms/web-1/nics/52%3A54%3A00%3A00%3A00%3A01',
    ]);
    expect(JSON.parse(String(calls[0]!.init.body))).toEqual({ name: 'debian', source: { url: 'https://example.org/d.qcow2' }, format: 'qcow2' });
    for (const call of calls) expect((call.init.headers as Record<string, string>)['Idempotency-Key']).toMatch(/^web-/);
  });

  it('builds a cloud-init seed from the form (none when empty) and describes a VM\'s seed by its sizes', () => {
    expect(cloudInitSeed(emptyCloudInit)).toBeUndefined();
    expect(cloudInitSeed({ userData: '  ', metaData: '', networkConfig: '\n' })).toBeUndefined();
    expect(cloudInitSeed({ userData: '#cloud-config\n', metaData: '', networkConfig: '' })).toEqual({ userData: '#cloud-config\n' });
    expect(cloudInitSeed({ userData: '', metaData: 'instance-id: x\n', networkConfig: '' })).toEqual({ userData: '', metaData: 'instance-id: x\n' });
    expect(cloudInitSummary(undefined)).toBeUndefined();
    expect(cloudInitSummary({ userDataBytes: 21, metaDataBytes: 2048 })).toBe('user-data 21 B, meta-data 2 KiB');
  });

  it('keeps the later view of an operation and words its failure by kind and code', () => {
    const op = { id: 'o', kind: 'image.import', state: 'running', updatedAt: '2026-01-01T00:00:01Z', error: null } as Operation;
    const ended = { ...op, state: 'failed', error: { code: 'invalid', message: 'it has a backing file', details: {} } } as Operation;
    expect(newerOperation(op, ended)).toBe(ended); // a tie: the ended one wins
    expect(newerOperation(ended, op)).toBe(ended);
    expect(newerOperation(ended, { ...op, updatedAt: '2026-01-01T00:00:02Z' }).state).toBe('running');
    expect(operationFailureTitle(ended)).toBe('The image was refused');
    expect(operationFailureTitle({ ...ended, state: 'cancelled', error: { code: 'cancelled', message: '', details: {} } })).toBe('Cancelled');
    expect(operationFailureTitle({ ...ended, kind: 'vm.disk.add', state: 'rolled_back', error: { code: 'conflict', message: '', details: {} } })).toBe('Not possible right now; nothing was changed');
  });
});

describe('EventStream', () => {
  it('hands events to subscribers and asks for a resync after an interruption', async () => {
    FakeSource.all = [];
    const stream = new EventStream({ url: '/api/v1/events', create: (url) => new FakeSource(url), retryMs: () => 0, checkSession: async () => true });
    const seen: string[] = [];
    const statuses: string[] = [];
    const resync = vi.fn();
    stream.subscribe((e) => seen.push(`${e.seq}:${e.type}:${(e.data as { name: string }).name}`));
    stream.onResync(resync);
    stream.onStatus((s) => statuses.push(s));
    stream.start();
    const first = FakeSource.all[0]!;
    first.open();
    first.emit('vm.updated', 41, { id: '1', name: 'web-1' });
    first.emit('vm.deleted', 42, { id: '1', name: 'web-1' });
    expect(seen).toEqual(['41:vm.updated:web-1', '42:vm.deleted:web-1']);
    expect(stream.lastSeq).toBe(42);
    // The browser retries by itself (readyState CONNECTING): no new source, a resync once it is back.
    first.fail(false);
    first.open();
    expect(resync).toHaveBeenCalledTimes(1);
    // It gave up (CLOSED): the stream checks the session and opens a new source.
    first.fail(true);
    await vi.waitFor(() => expect(FakeSource.all.length).toBe(2));
    FakeSource.all[1]!.open();
    expect(resync).toHaveBeenCalledTimes(2);
    expect(statuses).toEqual(['connecting', 'live', 'reconnecting', 'live', 'reconnecting', 'live']);
    stream.stop();
    expect(FakeSource.all[1]!.closed).toBe(true);
  });

  it('stops and reports when the session ended', async () => {
    FakeSource.all = [];
    const ended = vi.fn();
    const stream = new EventStream({ create: (url) => new FakeSource(url), retryMs: () => 0, checkSession: async () => false, onSessionEnded: ended });
    stream.start();
    FakeSource.all[0]!.fail(true);
    await vi.waitFor(() => expect(ended).toHaveBeenCalled());
    expect(stream.status).toBe('closed');
    expect(FakeSource.all.length).toBe(1);
  });
});

describe('formatting and parsing', () => {
  it('formats and parses sizes in binary units', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(128 * 1024 ** 2)).toBe('128 MiB');
    expect(parseSize('256M')).toBe(256 * 1024 ** 2);
    expect(parseSize('1.5 GiB')).toBe(1.5 * 1024 ** 3);
    expect(parseSize('1048576')).toBe(1048576);
    expect(parseSize('ten')).toBeUndefined();
    expect(percent(3, 4)).toBe(75);
    expect(percent(1, 0)).toBe(0);
  });

  it('follows the manager\'s table of allowed actions', () => {
    expect(canDo('start', 'stopped')).toBe(true);
    expect(canDo('start', 'running')).toBe(false);
    expect(canDo('delete', 'running')).toBe(false);
    expect(canDo('edit', 'defined')).toBe(true);
    expect(canDo('force-off', 'error')).toBe(true);
  });

  it('parses labels and forwards, refusing bad entries in words', () => {
    expect(parseLabels('tier=web, team = ops ,')).toEqual({ tier: 'web', team: 'ops' });
    expect(() => parseLabels('tier')).toThrow(InputError);
    expect(parseForwards('8080:80, 2222:22')).toEqual([{ hostPort: 8080, guestPort: 80 }, { hostPort: 2222, guestPort: 22 }]);
    expect(() => parseForwards('80')).toThrow('Port forward "80" is not HOSTPORT:GUESTPORT');
    expect(ago(new Date(Date.now() - 120_000).toISOString())).toBe('2 min ago');
    expect(ago(null)).toBe('never');
  });

  it('matches a VM against the list filters the way the manager does', () => {
    const vm = { name: 'web-1', state: 'running', hostName: 'h1', hostId: 'hid', labels: { tier: 'web' } } as unknown as Vm;
    expect(vmMatches(vm, { state: '', name: '', label: '' })).toBe(true);
    expect(vmMatches(vm, { state: 'running', name: 'eb-', label: 'tier=web', host: 'h1' })).toBe(true);
    expect(vmMatches(vm, { state: 'stopped', name: '', label: '' })).toBe(false);
    expect(vmMatches(vm, { state: '', name: 'Web', label: '' })).toBe(false);
    expect(vmMatches(vm, { state: '', name: '', label: 'tier=db' })).toBe(false);
    expect(vmMatches(vm, { state: '', name: '', label: '', host: 'h2' })).toBe(false);
  });

  it('walks the operations to the newest and keeps the tail, newest first', async () => {
    const ops = Array.from({ length: 25 }, (_, i) => ({ id: String(i) }) as Operation);
    const fetchPage = async ({ limit, cursor }: { limit: number; cursor?: string }) => {
      const start = cursor ? Number(cursor) : 0;
      const items = ops.slice(start, start + limit);
      return { items, ...(start + limit < ops.length ? { next: String(start + limit) } : {}) };
    };
    const all = await newestOperations(fetchPage, '', { pageSize: 10 });
    expect(all.items.map((o) => o.id).slice(0, 3)).toEqual(['24', '23', '22']);
    expect(all).toMatchObject({ truncated: false });
    const tail = await newestOperations(fetchPage, '', { pageSize: 10, keep: 5 });
    expect(tail.items.map((o) => o.id)).toEqual(['24', '23', '22', '21', '20']);
    expect(tail.truncated).toBe(true);
  });
});

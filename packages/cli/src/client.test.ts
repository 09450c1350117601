import { rejectionOf } from '@drover/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeOfStatus, DroverClient, errorFromResponse, normalizeBaseUrl } from './client.js';
import { closedPort, error, FakeManager } from './fake-manager.js';
import type { Operation, Page, Vm } from './types.js';

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
let manager: FakeManager;

beforeAll(async () => {
  manager = await new FakeManager().start();
});
afterAll(async () => {
  await manager.close();
});

function client(fields: Partial<ConstructorParameters<typeof DroverClient>[0]> = {}) {
  return new DroverClient({ url: manager.url, token: manager.token, retryDelayMs: 5, ...fields });
}

describe('DroverClient', () => {
  it('sends the bearer token, JSON and a fresh Idempotency-Key on every POST', async () => {
    manager.addVm('keyed');
    await client().post<Operation>('/vms/keyed/start', {});
    await client().post<Operation>('/vms/keyed/start', {});
    const [first, second] = manager.requestsTo('POST', '/api/v1/vms/keyed/start');
    expect(first!.headers.authorization).toBe(`Bearer ${manager.token}`);
    expect(first!.headers['content-type']).toBe('application/json');
    expect(first!.headers['idempotency-key']).toMatch(uuid);
    expect(second!.headers['idempotency-key']).toMatch(uuid);
    expect(second!.headers['idempotency-key']).not.toBe(first!.headers['idempotency-key']);
  });

  it('sends no Idempotency-Key on reads, and encodes query values', async () => {
    await client().get<Page<Vm>>('/vms', { label: 'tier=web', state: undefined, limit: 5 });
    const request = manager.requests.at(-1)!;
    expect(request.headers['idempotency-key']).toBeUndefined();
    expect(request.query.get('label')).toBe('tier=web');
    expect(request.query.get('limit')).toBe('5');
    expect(request.query.has('state')).toBe(false);
  });

  it('maps the error body to a DroverError with the server code, message and details', async () => {
    manager.on('GET', /^\/api\/v1\/vms\/busy$/, () => error(409, 'conflict', 'VM "busy" is migrating', { state: 'migrating' }));
    const failure = await rejectionOf(client().get('/vms/busy'));
    expect(failure.code).toBe('conflict');
    expect(failure.message).toBe('VM "busy" is migrating');
    expect(failure.details).toEqual({ state: 'migrating' });
    expect((await rejectionOf(client().get('/vms/nope'))).code).toBe('not_found');
    expect((await rejectionOf(client({ token: 'wrong' }).get('/vms'))).code).toBe('unauthenticated');
  });

  it('retries once after a network failure, with the same Idempotency-Key', async () => {
    manager.addVm('flaky');
    manager.dropConnections = 1;
    const before = manager.requests.length;
    const operation = await client().post<Operation>('/vms/flaky/stop', {});
    expect(operation.kind).toBe('vm.stop');
    // The dropped request never got recorded: only the retry did, with the key both carried.
    const recorded = manager.requests.slice(before);
    expect(recorded).toHaveLength(1);
    expect(recorded[0]!.headers['idempotency-key']).toMatch(uuid);
  });

  it('uses the same key for the attempt and its retry', async () => {
    const seen: string[] = [];
    let calls = 0;
    const fakeFetch: typeof fetch = async (_url, init) => {
      seen.push(new Headers(init?.headers).get('idempotency-key') ?? '');
      calls += 1;
      if (calls === 1) throw new TypeError('fetch failed', { cause: { code: 'ECONNRESET', message: 'socket hang up' } });
      return new Response(JSON.stringify({ ok: true }), { status: 202, headers: { 'content-type': 'application/json' } });
    };
    await client({ fetch: fakeFetch }).post('/vms/x/start', {});
    expect(seen).toHaveLength(2);
    expect(seen[0]).toMatch(uuid);
    expect(seen[1]).toBe(seen[0]);
  });

  it('reports an unreachable manager as unavailable, after one retry', async () => {
    manager.dropConnections = 2;
    const failure = await rejectionOf(client().get('/vms'));
    expect(failure.code).toBe('unavailable');
    expect(failure.message).toContain(`Cannot reach the manager at ${manager.url}`);
    const closed = await rejectionOf(new DroverClient({ url: `http://127.0.0.1:${await closedPort()}`, retryDelayMs: 1 }).get('/vms'));
    expect(closed.code).toBe('unavailable');
    expect(closed.message).toMatch(/ECONNREFUSED/);
  });

  it("refuses fetch's blocked ports clearly, without retrying", async () => {
    const failure = await rejectionOf(new DroverClient({ url: 'http://127.0.0.1:6000', retryDelayMs: 1 }).get('/vms'));
    expect(failure.code).toBe('invalid');
    expect(failure.message).toMatch(/refuses to connect to port 6000/);
  });

  it('gives up after its timeout with a timeout error', async () => {
    manager.on('GET', /^\/api\/v1\/slow$/, () => new Promise((resolve) => setTimeout(() => resolve({ status: 200, body: {} }), 2000)));
    const failure = await rejectionOf(client({ timeoutMs: 100 }).get('/slow'));
    expect(failure.code).toBe('timeout');
    expect(failure.message).toMatch(/did not answer within 100 ms/);
  });

  it('reads text answers with their headers', async () => {
    manager.addVm('con');
    manager.serialLog = 'hello\n';
    const { body, headers } = await client().getText('/vms/con/console/serial/log', { offset: 2 });
    expect(body.toString()).toBe('llo\n');
    expect(headers.get('x-log-size')).toBe('6');
  });
});

describe('error mapping without a known code', () => {
  it('maps statuses sensibly', () => {
    expect(codeOfStatus(400)).toBe('invalid');
    expect(codeOfStatus(401)).toBe('unauthenticated');
    expect(codeOfStatus(403)).toBe('forbidden');
    expect(codeOfStatus(404)).toBe('not_found');
    expect(codeOfStatus(409)).toBe('conflict');
    expect(codeOfStatus(412)).toBe('precondition_failed');
    expect(codeOfStatus(418)).toBe('invalid');
    expect(codeOfStatus(429)).toBe('rate_limited');
    expect(codeOfStatus(500)).toBe('internal');
    expect(codeOfStatus(502)).toBe('unavailable');
    expect(codeOfStatus(504)).toBe('timeout');
  });

  it('keeps the message of an unknown code and says which one it was', () => {
    const mapped = errorFromResponse(422, '', 'application/json', JSON.stringify({ error: { code: 'quota_exceeded', message: 'Quota of 10 VMs reached', details: {} } }), 'POST /api/v1/vms');
    expect(mapped.code).toBe('unprocessable');
    expect(mapped.message).toBe('Quota of 10 VMs reached');
    expect(mapped.details.serverCode).toBe('quota_exceeded');
  });

  it('describes an answer that is not an error body (a proxy page)', () => {
    const mapped = errorFromResponse(502, 'Bad Gateway', 'text/html', '<html>nginx</html>', 'GET /api/v1/vms');
    expect(mapped.code).toBe('unavailable');
    expect(mapped.message).toBe('GET /api/v1/vms: HTTP 502 Bad Gateway');
  });
});

describe('normalizeBaseUrl', () => {
  it('accepts the URL with or without the API prefix and a trailing slash', () => {
    expect(normalizeBaseUrl('http://m:8300/')).toBe('http://m:8300');
    expect(normalizeBaseUrl('https://m/drover/api/v1/')).toBe('https://m/drover');
  });

  it('refuses what is not an http(s) URL', () => {
    expect(() => normalizeBaseUrl('manager:8300')).toThrow(/scheme must be http or https/);
    expect(() => normalizeBaseUrl('not a url')).toThrow(/Invalid manager URL/);
    expect(() => normalizeBaseUrl('https://user:pw@m')).toThrow(/credentials/);
  });
});

import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Value } from 'typebox/value';
import { tempDir } from '@drover/agent/testing';
import { XEN_EXAMPLE_POLICY_XML } from '@drover/core';
import { defaultApplianceCacheDir } from '@drover/appliances';
import { defaultManagerConfig } from '../config.js';
import { startManager } from '../manager.js';
import { makeCsr } from '../pki/test-support.js';
import { publicRoutes } from './server.js';
import {
  bodyCases,
  fillPath,
  KiB,
  knownHeaderMutations,
  listRoutes,
  pathValueCases,
  queryCases,
  routesOf,
  validValue,
  type Expectation,
  type OpenApiDocument,
  type Route,
  type Seeds,
} from './testing/openapi-fuzz.js';

/**
 * Bad input over every route of the manager's API, generated from its OpenAPI
 * document (a route added later is covered as soon as it is published): path
 * parameters naming nothing or malformed, bad query strings, bad bodies, bad
 * or missing credentials and headers. Every answer must be a 4xx with the
 * error shape `{ error: { code, message, details } }`, never a 5xx; and after
 * each group of cases the lists (VMs, hosts, operations, images) and the event
 * journal must be exactly as before: a bad request creates and changes nothing.
 *
 * Each case is a valid baseline request (real ids of fixtures made first, a
 * body made from the schema) that is wrong in exactly one way, so a check the
 * server forgot shows as an answer that is not a 4xx, or as something created.
 */

const dataDir = tempDir('route-fuzz');
// Sign-in rate limiting is off the table here (access-users.test.ts shows it): wrong tokens must keep answering 401.
const manager = await startManager({ ...defaultManagerConfig(dataDir), listen: '127.0.0.1:0', heartbeatMs: 500, applianceCacheDir: defaultApplianceCacheDir(), loginMaxFailures: 1_000_000 }, { vmcast: { tickMs: 0 } }); // no background feed polls: the fuzz checks that nothing changes
const doc = (await (await fetch(`${manager.url}/api/v1/openapi.json`)).json()) as OpenApiDocument;
const routes = routesOf(doc);
// The audit log is left out: it grows with every refused request, by design (each denial is recorded).
const lists = listRoutes(routes).filter((list) => list.path !== '/api/v1/audit');

const requestTimeoutMs = 5_000;
const concurrency = 4;

/** The id of a real object per collection (the path segment before a parameter), made in beforeAll. */
const fixtures: Record<string, string> = {};
/** Collections the fuzz makes no fixture for (reads of them answer not_found). */
const withoutFixture = new Set(['packages', 'labs']);
const seeds: Seeds = {};
let before: Snapshot;
const counts = new Map<string, number>();

interface Case {
  group: string;
  label: string;
  method: string;
  /** Path and query, encoded. */
  target: string;
  headers?: Record<string, string>;
  body?: string;
  expect: Expectation;
}

type Answer = { status: number; contentType: string; text: string } | { error: string };

function auth(): Record<string, string> {
  return { authorization: `Bearer ${manager.adminToken}` };
}

async function send(c: Case): Promise<Answer> {
  try {
    const response = await fetch(`${manager.url}${c.target}`, {
      method: c.method,
      headers: c.headers ?? auth(),
      redirect: 'manual',
      signal: AbortSignal.timeout(requestTimeoutMs),
      ...(c.body === undefined ? {} : { body: c.body }),
    });
    return { status: response.status, contentType: response.headers.get('content-type') ?? '', text: await response.text() };
  } catch (error) {
    const e = error as Error & { cause?: unknown };
    return { error: `${e.name}: ${e.message}${e.cause ? ` (${String(e.cause)})` : ''}` };
  }
}

function shapeProblem(answer: { contentType: string; text: string }): string | undefined {
  if (!answer.contentType.includes('application/json')) return `content-type "${answer.contentType}" is not JSON`;
  let body: unknown;
  try {
    body = JSON.parse(answer.text);
  } catch {
    return 'body is not JSON';
  }
  const error = (body as { error?: unknown } | null)?.error as { code?: unknown; message?: unknown; details?: unknown } | undefined;
  if (typeof error !== 'object' || error === null) return 'no "error" object';
  if (typeof error.code !== 'string' || error.code === '') return 'error.code is not a non-empty string';
  if (typeof error.message !== 'string' || error.message === '') return 'error.message is not a non-empty string';
  if (typeof error.details !== 'object' || error.details === null || Array.isArray(error.details)) return 'error.details is not an object';
  return undefined;
}

function verdict(c: Case, answer: Answer): string | undefined {
  const where = `${c.method} ${c.target.length > 120 ? `${c.target.slice(0, 117)}...` : c.target} [${c.label}]`;
  if ('error' in answer) return `${where}: no answer: ${answer.error}`;
  const excerpt = answer.text.slice(0, 240);
  if (answer.status >= 500) return `${where}: ${answer.status} ${excerpt}`;
  if (c.expect === 'below-500') {
    if (answer.status < 400) return undefined;
  } else if (!c.expect.includes(answer.status)) {
    return `${where}: expected ${c.expect.join(' or ')}, got ${answer.status} ${excerpt}`;
  }
  const problem = shapeProblem(answer);
  return problem ? `${where}: ${answer.status} without the error shape (${problem}): ${excerpt}` : undefined;
}

// ------------------------------------------------------------ nothing created, nothing changed

interface Snapshot {
  lists: Record<string, Array<Record<string, unknown>>>;
  lastEventSeq: number;
}

async function snapshot(): Promise<Snapshot> {
  const out: Snapshot = { lists: {}, lastEventSeq: await manager.store.events.lastSeq() };
  for (const list of lists) {
    const items: Array<Record<string, unknown>> = [];
    const pages = list.queryParams.some((p) => p.name === 'cursor');
    let cursor: string | undefined;
    do {
      const query = new URLSearchParams(list.queryParams.some((p) => p.name === 'limit') ? { limit: '1000' } : {});
      if (cursor) query.set('cursor', cursor);
      const response = await fetch(`${manager.url}${list.path}?${query.toString()}`, { headers: auth() });
      expect(response.status, `GET ${list.path}`).toBe(200);
      const page = (await response.json()) as { items: Array<Record<string, unknown>>; next?: string };
      for (const item of page.items) items.push(Object.fromEntries(['id', 'rev', 'state', 'updatedAt'].filter((k) => k in item).map((k) => [k, item[k]])));
      cursor = pages ? page.next : undefined;
    } while (cursor);
    out.lists[list.path] = items;
  }
  return out;
}

/** Runs the cases (a few at a time), then checks that nothing was created or changed; fails listing every wrong answer. */
async function run(cases: Case[]): Promise<void> {
  expect(cases.length).toBeGreaterThan(0);
  const failures: string[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < cases.length) {
        const c = cases[next++]!;
        counts.set(c.group, (counts.get(c.group) ?? 0) + 1);
        const problem = verdict(c, await send(c));
        if (problem) failures.push(problem);
      }
    }),
  );
  const after = await snapshot();
  if (JSON.stringify(after) !== JSON.stringify(before)) failures.push(`something was created or changed:\n before ${JSON.stringify(before)}\n after  ${JSON.stringify(after)}`);
  expect(failures).toEqual([]);
}

// ------------------------------------------------------------ baseline requests

function isPublic(route: Route): boolean {
  return route.declaredPublic || publicRoutes.includes(route.path);
}

/** The collection a path parameter belongs to: the segment before it (`/vms/{id}` → vms). */
function collectionOf(route: Route, param: string): string {
  const segments = route.path.split('/');
  return segments[segments.indexOf(`{${param}}`) - 1] ?? '';
}

function baselinePathValues(route: Route): Record<string, string> {
  return Object.fromEntries(route.pathParams.map((p) => [p.name, fixtures[collectionOf(route, p.name)] ?? encodeURIComponent(String(validValue(p.schema, p.name, {})))]));
}

const baselines = new Map<Route, string>();
function baselineBody(route: Route): string | undefined {
  if (!route.body) return undefined;
  if (!baselines.has(route)) baselines.set(route, JSON.stringify(validValue(route.body.schema, '(body)', seeds)));
  return baselines.get(route);
}

/** A case: the route's baseline request with some parts replaced. */
function caseOf(route: Route, group: string, label: string, expect: Expectation, change: { path?: Record<string, string>; query?: string; headers?: Record<string, string>; body?: string; contentType?: string } = {}): Case {
  const body = change.body ?? baselineBody(route);
  const headers = change.headers ?? { ...auth(), ...(body === undefined ? {} : { 'content-type': change.contentType ?? route.body?.mediaType ?? 'application/json' }) };
  const path = fillPath(route.path, { ...baselinePathValues(route), ...change.path });
  return { group, label, method: route.method, target: change.query === undefined ? path : `${path}?${change.query}`, headers, ...(body === undefined ? {} : { body }), expect };
}

// ------------------------------------------------------------ setup

async function call<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: T }> {
  const response = await fetch(`${manager.url}${path}`, {
    method,
    headers: { ...auth(), ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, body: (await response.json()) as T };
}

beforeAll(async () => {
  const images = await call<{ items: Array<{ name: string; id: string }> }>('GET', '/api/v1/images');
  expect(images.body.items.length).toBeGreaterThan(0);
  const image = images.body.items[0]!.name;

  // A VM (edited once, so it has a revision before the current one) ...
  const vm = await call<{ id: string; rev: number }>('POST', '/api/v1/vms', { name: 'fuzz-fixture', image });
  expect(vm.status).toBe(201);
  expect((await call('PATCH', `/api/v1/vms/${vm.body.id}`, { autostart: false }, { 'if-match': String(vm.body.rev) })).status).toBe(200);
  // ... an operation (the deletion of another VM) ...
  const doomed = await call<{ id: string }>('POST', '/api/v1/vms', { name: 'fuzz-doomed', image });
  expect(doomed.status).toBe(201);
  const deletion = await call<{ id: string; state: string }>('DELETE', `/api/v1/vms/${doomed.body.id}?wait=true`);
  expect(deletion.body.state).toBe('done');
  // ... and a host: it joins with a real token and CSR, and is never reached (nothing listens at its address).
  const join = await call<{ token: string }>('POST', '/api/v1/hosts/join-tokens', {});
  const host = await call<{ hostId: string }>('POST', '/api/v1/hosts/join', { token: join.body.token, csr: makeCsr('/CN=fuzz-host').csrPem, name: 'fuzz-host', address: 'https://127.0.0.1:9' });
  expect(host.status).toBe(201);
  Object.assign(fixtures, { vms: vm.body.id, operations: deletion.body.id, hosts: host.body.hostId, images: images.body.items[0]!.id });
  // ... and a user, a custom role, a project and an API token.
  expect((await call('POST', '/api/v1/projects', { name: 'fuzz-project' })).status).toBe(201);
  expect((await call('POST', '/api/v1/roles', { name: 'fuzz-role', permissions: ['vm.read'] })).status).toBe(201);
  expect((await call('POST', '/api/v1/users', { name: 'fuzz-user', bindings: [{ role: 'fuzz-role', scope: '*' }] })).status).toBe(201);
  const token = await call<{ info: { id: string } }>('POST', '/api/v1/tokens', { name: 'fuzz-token', user: 'fuzz-user' });
  Object.assign(fixtures, { users: 'fuzz-user', roles: 'fuzz-role', projects: 'fuzz-project', tokens: token.body.info.id });
  // ... and VMcasting: a publisher key, a channel, a subscription (never polled: nothing listens at its URL).
  const key = await call<{ publicKey: string }>('POST', '/api/v1/vmcast/keys', { name: 'fuzz-key' });
  expect((await call('POST', '/api/v1/vmcast/channels', { name: 'fuzz-channel' })).status).toBe(201);
  expect((await call('POST', '/api/v1/vmcast/subscriptions', { name: 'fuzz-sub', url: 'http://127.0.0.1:9/feed.rss', pinnedKeys: [key.body.publicKey] })).status).toBe(201);
  Object.assign(fixtures, { channels: 'fuzz-channel', subscriptions: 'fuzz-sub', keys: 'fuzz-key' });
  // ... and a network with a security group (networks/).
  expect((await call('POST', '/api/v1/networks', { name: 'fuzz-net', kind: 'isolated', subnet: '10.251.0.0/24' })).status).toBe(201);
  expect((await call('POST', '/api/v1/security-groups', { name: 'fuzz-sg' })).status).toBe(201);
  // Edited once each, so they have a revision before the current one.
  expect((await call('PATCH', '/api/v1/networks/fuzz-net', { mtu: 1400 })).status).toBe(200);
  expect((await call('PUT', '/api/v1/security-groups/fuzz-sg/rules', { rules: [] })).status).toBe(200);
  Object.assign(fixtures, { networks: 'fuzz-net', 'security-groups': 'fuzz-sg' });
  // ... and a security policy, so that its reads answer 200.
  expect((await call('PUT', '/api/v1/policy', { document: XEN_EXAMPLE_POLICY_XML })).status).toBe(200);

  // Bodies are made from the schemas; what a schema cannot say comes from here. The join token is real
  // and unused, so a join that forgot a check would go through (and show as a new host).
  const spare = await call<{ token: string }>('POST', '/api/v1/hosts/join-tokens', {});
  Object.assign(seeds, { image, name: 'fuzz-probe', token: spare.body.token, csr: makeCsr('/CN=fuzz-probe').csrPem, address: 'https://127.0.0.1:9', path: '/var/lib/drover/fuzz-pool', mac: '52:54:00:00:00:01', url: 'http://127.0.0.1:9/fuzz.qcow2', scope: '*', role: 'auditor', subnet: '10.252.0.0/24', cidr: '10.253.0.0/24', gateway: '10.252.0.1', ip: '10.251.0.9' });

  before = await snapshot();
});

afterAll(async () => {
  await manager.close();
  rmSync(dataDir, { recursive: true, force: true });
  const total = [...counts.values()].reduce((a, b) => a + b, 0);
  console.log(`route fuzz: ${total} generated cases over ${routes.length} routes (${[...counts].map(([group, n]) => `${group} ${n}`).join(', ')})`);
});

// ------------------------------------------------------------ the cases

describe('the route table', () => {
  it('is published, with the lists to watch', () => {
    expect(routes.length).toBeGreaterThan(10);
    expect(lists.map((l) => l.path)).toEqual(expect.arrayContaining(['/api/v1/vms', '/api/v1/hosts', '/api/v1/operations', '/api/v1/images']));
  });

  it('gives every body route a baseline its schema accepts', () => {
    for (const route of routes) {
      if (!route.body) continue;
      const { baseline } = bodyCases(route.body.schema, route.body.mediaType, seeds);
      expect(Value.Check(route.body.schema as never, baseline), `${route.method} ${route.path}: ${JSON.stringify(baseline).slice(0, 200)}`).toBe(true);
    }
  });

  it('answers the baseline of every read with the right status', async () => {
    // Reads are safe to send as they are: the fixtures exist, so they answer 200 (or 409 for a
    // VM's serial log: it never ran). Streams are left out: they answer with a stream.
    const failures: string[] = [];
    for (const route of routes.filter((r) => r.method === 'GET' && r.okSchema !== undefined)) {
      // Required query parameters (policy explain's vm and host) name the fixtures.
      const required = route.queryParams.filter((p) => p.required);
      const known: Record<string, string | undefined> = { vm: fixtures.vms, host: fixtures.hosts };
      const query = required.length === 0 ? undefined : new URLSearchParams(required.map((p): [string, string] => [p.name, String(known[p.name] ?? validValue(p.schema, p.name, seeds))])).toString();
      const answer = await send(caseOf(route, 'baseline', 'baseline', [200], query === undefined ? {} : { query }));
      // No fixture for these (a package needs a signed file, a lab running VMs; their own tests read
      // real ones): a read of one answers not_found, and nothing else.
      const fixtureless = route.pathParams.some((p) => withoutFixture.has(collectionOf(route, p.name)));
      if (fixtureless && !('error' in answer) && answer.status === 404 && answer.text.includes('"not_found"')) continue;
      if ('error' in answer || answer.status >= 300) failures.push(`GET ${route.path}: ${'error' in answer ? answer.error : `${answer.status} ${answer.text.slice(0, 200)}`}`);
    }
    expect(failures).toEqual([]);
  });
});

for (const route of routes) {
  describe(`${route.method} ${route.path}`, () => {
    if (route.pathParams.length > 0) {
      it('refuses path parameters that name nothing or are malformed', async () => {
        const cases: Case[] = [];
        route.pathParams.forEach((param, index) => {
          // Under a real parent, the parent's state may refuse the action before the child is looked up.
          const underFixture = route.pathParams.slice(0, index).some((p) => fixtures[collectionOf(route, p.name)] !== undefined);
          for (const c of pathValueCases(param.schema)) {
            const expect: number[] = c.wellFormed ? (underFixture ? [404, 409] : [404]) : [400, 404, 414];
            cases.push(caseOf(route, 'path', `{${param.name}} ${c.label}`, expect, { path: { [param.name]: c.value } }));
          }
        });
        await run(cases);
      });
    }

    it('refuses bad query strings', async () => {
      await run(queryCases(route.queryParams, route.method === 'GET').map((c) => caseOf(route, 'query', c.label, c.expect, { query: c.query })));
    });

    if (route.body) {
      it('refuses bad bodies', async () => {
        const { cases } = bodyCases(route.body!.schema, route.body!.mediaType, seeds);
        await run(cases.map((c) => caseOf(route, 'body', c.label, c.expect, { body: c.text, contentType: c.contentType })));
      });
    }

    it('refuses missing or wrong credentials and malformed headers', async () => {
      const body = baselineBody(route);
      const json: Record<string, string> = body === undefined ? {} : { 'content-type': route.body?.mediaType ?? 'application/json' };
      const cases: Case[] = [];
      const add = (label: string, headers: Record<string, string>, expect: number[]) => cases.push(caseOf(route, 'headers', label, expect, { headers: { ...json, ...headers } }));
      if (!isPublic(route)) {
        const token = manager.adminToken;
        add('no Authorization', {}, [401]);
        add('a wrong token', { authorization: `Bearer ${'x'.repeat(token.length)}` }, [401]);
        add('an empty bearer token', { authorization: 'Bearer ' }, [401]);
        add('the token without its scheme', { authorization: token }, [401]);
        add('the token as Basic credentials', { authorization: `Basic ${Buffer.from(`admin:${token}`).toString('base64')}` }, [401]);
        add('the token with a character more', { authorization: `Bearer ${token}x` }, [401]);
        add('the token with a character less', { authorization: `Bearer ${token.slice(0, -1)}` }, [401]);
        add('the token twice', { authorization: `Bearer ${token}, Bearer ${token}` }, [401]);
        add('the metrics token', { authorization: `Bearer ${manager.metricsToken}` }, [401]);
        add('an 8 KiB token', { authorization: `Bearer ${'x'.repeat(8 * KiB)}` }, [401]);
      }
      for (const [label, key] of [
        ['too short', 'short'],
        ['with spaces', 'has spaces in it'],
        ['with a slash', 'fuzz/key/value'],
        ['129 characters', 'k'.repeat(129)],
        ['empty', ''],
      ] as const) {
        add(`a malformed Idempotency-Key (${label})`, { ...auth(), 'idempotency-key': key }, [400]);
      }
      add('20 KiB of headers', { ...auth(), 'x-fuzz': 'x'.repeat(20 * KiB) }, [400, 431]);
      await run(cases);
    });

    // Headers a route reads but the document cannot declare are named in its summary.
    for (const [header, values] of Object.entries(knownHeaderMutations)) {
      if (!route.summary.includes(header)) continue;
      it(`refuses a bad or stale ${header}`, async () => {
        const cases = values.map((value) => caseOf(route, header, `${header}: ${JSON.stringify(value.length > 40 ? `${value.slice(0, 37)}...` : value)}`, [400], { headers: { ...auth(), ...(route.body ? { 'content-type': route.body.mediaType } : {}), [header.toLowerCase()]: value } }));
        if (header === 'If-Match') {
          // A revision that is not the current one: the object as read by the same path.
          const current = await call<{ rev?: number }>('GET', fillPath(route.path, baselinePathValues(route)));
          expect(typeof current.body.rev, `GET ${route.path} gives a rev`).toBe('number');
          const rev = current.body.rev!;
          expect(rev, 'the fixture was edited once, so it has a previous revision').toBeGreaterThan(1);
          for (const [label, stale] of [
            ['the previous revision', rev - 1],
            ['the first revision', 1],
            ['a future revision', rev + 1000],
            ['a quoted previous revision', `"${rev - 1}"`],
          ] as const) {
            // A route without a body (a versioned DELETE) gets no content-type: Fastify refuses an empty JSON body.
            cases.push(caseOf(route, header, `If-Match: ${label}`, [412], { headers: { ...auth(), ...(route.body ? { 'content-type': route.body.mediaType } : {}), 'if-match': String(stale) } }));
          }
          // A stale revision with an edit that would change something must change nothing.
          const edit = Object.entries(route.body?.schema.properties ?? {}).find(([, s]) => s.type === 'boolean');
          if (edit) cases.push(caseOf(route, header, `If-Match: the previous revision with an edit`, [412], { headers: { ...auth(), 'content-type': 'application/json', 'if-match': String(rev - 1) }, body: JSON.stringify({ [edit[0]]: true }) }));
        }
        await run(cases);
      });
    }
  });
}

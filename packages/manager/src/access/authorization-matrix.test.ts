import { rmSync } from 'node:fs';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '@drover/agent/testing';
import { defaultApplianceCacheDir } from '@drover/appliances';
import { defaultManagerConfig } from '../config.js';
import { startManager, type RunningManager } from '../manager.js';
import { requireRoutePermissions } from './route-permissions.js';

/**
 * The authorization matrix, generated from the live route table (the OpenAPI
 * document, where each route publishes its `x-permission`): every route ×
 * every built-in role → allowed (anything but 401/403) or 403. The expected
 * answer comes from the roles as documented (docs/access-control-users.md),
 * written out here on their own, not from the code under test.
 *
 * Requests name objects that do not exist and carry a body with an unknown
 * field, so an allowed request is refused later (400/404) and changes nothing.
 */

const roles = ['admin', 'operator', 'auditor', 'lab-user'] as const;
type BuiltIn = (typeof roles)[number];

/** The documented meaning of each built-in role. */
function expectedAllowed(role: BuiltIn, permission: string): boolean {
  if (permission === 'public' || permission === 'authenticated') return true;
  const [area, verb] = permission.split('.') as [string, string];
  switch (role) {
    case 'admin':
      return true;
    case 'operator':
      return !['user.write', 'role.write', 'project.write', 'policy.write'].includes(permission) && area !== 'audit';
    case 'auditor':
      return verb === 'read';
    case 'lab-user':
      return ['vm.read', 'vm.write', 'vm.console', 'image.read', 'operation.read', 'operation.write', 'project.read'].includes(permission) || area === 'lab';
  }
}

interface OpenApi {
  paths: Record<string, Record<string, { 'x-permission'?: string }>>;
}

const dataDir = tempDir('authz-matrix');
let manager: RunningManager;
const tokens: Record<string, string> = {};

async function call(token: string | undefined, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const controller = new AbortController();
  const response = await fetch(`${manager.url}${path}`, {
    method,
    signal: controller.signal,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const type = response.headers.get('content-type') ?? '';
  // A stream (server-sent events) stays open: its status is all we need.
  const text = type.includes('event-stream') ? '' : await response.text();
  controller.abort();
  return { status: response.status, body: (text && type.includes('application/json') ? JSON.parse(text) : { text }) as Record<string, unknown> };
}

beforeAll(async () => {
  manager = await startManager({ ...defaultManagerConfig(dataDir), listen: '127.0.0.1:0', heartbeatMs: 500, applianceCacheDir: defaultApplianceCacheDir() });
  tokens['admin'] = manager.adminToken;
  for (const [name, role] of [['op', 'operator'], ['aud', 'auditor'], ['lab1', 'lab-user'], ['lab2', 'lab-user']] as const) {
    expect((await call(manager.adminToken, 'POST', '/api/v1/users', { name, password: `pw-${name}-123`, bindings: [{ role, scope: '*' }] })).status).toBe(201);
    const made = await call(manager.adminToken, 'POST', '/api/v1/tokens', { name: `${name}-token`, user: name });
    expect(made.status).toBe(201);
    tokens[name] = made.body['token'] as string;
  }
  tokens['operator'] = tokens['op']!;
  tokens['auditor'] = tokens['aud']!;
  tokens['lab-user'] = tokens['lab1']!;
});

afterAll(async () => {
  await manager?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('authorization matrix', () => {
  it('refuses to start when a route declares no permission', async () => {
    const app = Fastify();
    requireRoutePermissions(app);
    app.get('/declared', { config: { permission: 'vm.read' } }, async () => 'ok');
    app.get('/undeclared', async () => 'oops');
    await expect(app.ready()).rejects.toThrow(/GET \/undeclared/);
    const good = Fastify();
    requireRoutePermissions(good);
    good.get('/declared', { config: { permission: 'public' } }, async () => 'ok');
    await expect(good.ready()).resolves.toBeDefined();
    await good.close();
  });

  it('every route × every built-in role: allowed or 403, as the role says', async () => {
    const doc = (await call(undefined, 'GET', '/api/v1/openapi.json')).body as unknown as OpenApi;
    const cases: Array<{ method: string; path: string; permission: string }> = [];
    for (const [path, methods] of Object.entries(doc.paths)) {
      for (const [method, operation] of Object.entries(methods)) {
        const permission = operation['x-permission'];
        // A route without a rule fails the matrix (and the manager would not have started).
        expect(permission, `${method.toUpperCase()} ${path} declares no permission`).toMatch(/^(public|authenticated|[a-z][a-z0-9-]*\.[a-z][a-z0-9-]*)$/);
        cases.push({ method: method.toUpperCase(), path: path.replace(/\{[^}]+\}/g, 'zz-missing'), permission: permission! });
      }
    }
    expect(cases.length).toBeGreaterThan(40);
    const wrong: string[] = [];
    for (const { method, path, permission } of cases) {
      for (const role of roles) {
        const withBody = method === 'POST' || method === 'PATCH' || method === 'PUT';
        const answer = await call(tokens[role], method, path, withBody ? { zzUnknownField: true } : undefined);
        const allowed = expectedAllowed(role, permission);
        const ok = allowed ? answer.status !== 401 && answer.status !== 403 : answer.status === 403;
        if (!ok) wrong.push(`${role} ${method} ${path} (${permission}): expected ${allowed ? 'allowed' : '403'}, got ${answer.status}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it('a lab-user gets 404 on another lab-user\'s VM, and lists only their own', async () => {
    const made = await call(tokens['lab1'], 'POST', '/api/v1/vms', { name: 'lab1-vm', image: 'counter' });
    expect(made.status, JSON.stringify(made.body)).toBe(201);
    const id = made.body['id'] as string;
    expect((await call(tokens['lab1'], 'GET', '/api/v1/vms/lab1-vm')).status).toBe(200);
    for (const ref of ['lab1-vm', id]) {
      const other = await call(tokens['lab2'], 'GET', `/api/v1/vms/${ref}`);
      expect(other.status).toBe(404);
      expect((other.body as { error: { code: string } }).error.code).toBe('not_found');
      expect((await call(tokens['lab2'], 'POST', `/api/v1/vms/${ref}/start`, {})).status).toBe(404);
      expect((await call(tokens['lab2'], 'DELETE', `/api/v1/vms/${ref}`)).status).toBe(404);
    }
    const lab2List = await call(tokens['lab2'], 'GET', '/api/v1/vms');
    expect((lab2List.body['items'] as Array<{ name: string }>).map((vm) => vm.name)).not.toContain('lab1-vm');
    const lab1List = await call(tokens['lab1'], 'GET', '/api/v1/vms');
    expect((lab1List.body['items'] as Array<{ name: string }>).map((vm) => vm.name)).toEqual(['lab1-vm']);
    // The operator (everything) sees it; the VM is still there.
    expect((await call(tokens['operator'], 'GET', `/api/v1/vms/${id}`)).status).toBe(200);
    // The hidden VM's 404 is a denial in the audit log.
    const audit = await call(manager.adminToken, 'GET', '/api/v1/audit?actor=lab2&decision=deny');
    expect((audit.body['items'] as Array<{ reason: string; status: number }>).some((r) => r.status === 404 && r.reason.includes('outside the scope'))).toBe(true);
  });
});

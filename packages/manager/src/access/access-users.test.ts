import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rejectionOf } from '@drover/core';
import { tempDir } from '@drover/agent/testing';
import { defaultApplianceCacheDir } from '@drover/appliances';
import { defaultManagerConfig } from '../config.js';
import { startManager, type RunningManager } from '../manager.js';
import { authCall, type AuthAnswer } from '../testing/auth-call.js';
import { withRequestAudit, type RequestAudit } from './request-audit.js';

/**
 * Users, sessions, API tokens, rate limiting, projects with quotas and the
 * audit log, on a real manager: each bad credential is a clear 401 (or 429)
 * and a denial in the audit log; a modified audit record breaks the chain.
 */

const dataDir = tempDir('access-users');
const cliMain = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../cli/dist/main.js');

/** Runs the built `drover` CLI against the manager. */
function drover(args: string[], options: { token?: string; stdin?: string } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [cliMain, ...args], { env: { PATH: process.env.PATH, HOME: dataDir, DROVER_URL: manager.url, DROVER_TOKEN: options.token ?? manager.adminToken }, timeout: 60_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
    child.stdin?.end(options.stdin ?? '');
  });
}
let manager: RunningManager;

const call = authCall(() => manager);

const admin = () => ({ token: manager.adminToken });
const message = (answer: AuthAnswer) => (answer.body['error'] as { message: string } | undefined)?.message ?? '';

async function lastAudit(filter = ''): Promise<Array<{ actor: string; decision: string; reason: string; status: number; action: string }>> {
  const answer = await call(admin(), 'GET', `/api/v1/audit?limit=1000${filter}`);
  return answer.body['items'] as never;
}

async function signIn(username: string, password: string): Promise<AuthAnswer & { cookie?: string }> {
  const answer = await call(undefined, 'POST', '/api/v1/sessions', { username, password });
  const cookie = answer.headers.get('set-cookie')?.split(';')[0];
  return { ...answer, ...(cookie ? { cookie } : {}) };
}

beforeAll(async () => {
  manager = await startManager({ ...defaultManagerConfig(dataDir), listen: '127.0.0.1:0', heartbeatMs: 500, applianceCacheDir: defaultApplianceCacheDir(), loginMaxFailures: 3, loginWindowSeconds: 600 });
});

afterAll(async () => {
  await manager?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('local users and sessions', () => {
  it('signs a local user in with a scrypt-hashed password; wrong ones are clear 401s in the audit log', async () => {
    expect((await call(admin(), 'POST', '/api/v1/users', { name: 'alice', password: 'correct horse', bindings: [{ role: 'operator', scope: '*' }] })).status).toBe(201);
    const stored = await manager.store.users.getByName('alice');
    expect(stored.passwordHash).toMatch(/^scrypt\$32768\$8\$1\$/);
    expect(stored.passwordHash).not.toContain('correct horse');

    const good = await signIn('alice', 'correct horse');
    expect(good.status).toBe(201);
    expect(good.headers.get('set-cookie')).toMatch(/HttpOnly; SameSite=Strict/);
    expect((await call({ cookie: good.cookie! }, 'GET', '/api/v1/session')).body['actor']).toBe('alice');
    expect((await call({ cookie: good.cookie! }, 'GET', '/api/v1/hosts')).status).toBe(200);
    // Operators may not manage users.
    expect((await call({ cookie: good.cookie! }, 'POST', '/api/v1/users', { name: 'mallory' })).status).toBe(403);

    const wrong = await signIn('alice', 'wrong horse');
    expect(wrong.status).toBe(401);
    expect(message(wrong)).toBe('Wrong user name or password');
    const nobody = await signIn('nobody', 'whatever1');
    expect(nobody.status).toBe(401);
    expect(message(nobody)).toBe('Wrong user name or password');
    const denials = await lastAudit('&decision=deny&action=sessions');
    expect(denials.map((r) => [r.actor, r.status])).toEqual(expect.arrayContaining([['alice', 401], ['nobody', 401]]));
  });

  it('a disabled user\'s session is refused from their next request', async () => {
    expect((await call(admin(), 'POST', '/api/v1/users', { name: 'bob', password: 'bob-password', bindings: [{ role: 'auditor', scope: '*' }] })).status).toBe(201);
    const session = await signIn('bob', 'bob-password');
    expect((await call({ cookie: session.cookie! }, 'GET', '/api/v1/vms')).status).toBe(200);
    expect((await call(admin(), 'PATCH', '/api/v1/users/bob', { disabled: true })).status).toBe(200);
    const refused = await call({ cookie: session.cookie! }, 'GET', '/api/v1/vms');
    expect(refused.status).toBe(401);
    expect(message(refused)).toBe('User "bob" is disabled');
  });

  it('rate-limits failed sign-ins with 429 and Retry-After, even for the right password', async () => {
    expect((await call(admin(), 'POST', '/api/v1/users', { name: 'carol', password: 'carol-password', bindings: [{ role: 'auditor', scope: '*' }] })).status).toBe(201);
    for (let i = 0; i < 3; i += 1) expect((await signIn('carol', `bad-${i}-password`)).status).toBe(401);
    const limited = await signIn('carol', 'carol-password');
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(limited.cookie).toBeUndefined();
    expect((await lastAudit('&actor=carol&decision=deny')).some((r) => r.status === 429)).toBe(true);
  });

  it('keeps the admin token working for the CLI and for the console sign-in', async () => {
    expect((await call(admin(), 'PATCH', '/api/v1/users/admin', { disabled: true })).status).toBe(409);
    expect((await call(admin(), 'PATCH', '/api/v1/users/admin', { bindings: [{ role: 'auditor', scope: '*' }] })).status).toBe(409);
    expect((await call(admin(), 'DELETE', '/api/v1/users/admin')).status).toBe(409);
    expect((await call(admin(), 'GET', '/api/v1/session')).body['actor']).toBe('admin');
    const session = await call(undefined, 'POST', '/api/v1/sessions', { token: manager.adminToken });
    expect(session.status).toBe(201);
    expect(session.body['actor']).toBe('admin');
  });
});

describe('console tickets', () => {
  it('are single-use, short-lived, refused from another origin, and as limited as their token', async () => {
    const ticket = async (token: string) => (await call({ token }, 'POST', '/api/v1/tickets', {})).body as { ticket: string; expiresAt: string };
    const first = await ticket(manager.adminToken);
    expect(Date.parse(first.expiresAt) - Date.now()).toBeLessThanOrEqual(60_000);
    const stream = (t: string, origin?: string) =>
      fetch(`${manager.url}/api/v1/vms/no-such-vm/console/serial?ticket=${encodeURIComponent(t)}`, { headers: origin ? { origin } : {} }).then((r) => r.status);
    // Another site's page: refused, and the ticket is not used up.
    expect(await stream(first.ticket, 'https://evil.example')).toBe(403);
    // Our own origin: the ticket is good (the VM does not exist: 404) ...
    expect(await stream(first.ticket, manager.url)).toBe(404);
    // ... once.
    expect(await stream(first.ticket)).toBe(401);
    expect(await stream('not-a-ticket-at-all')).toBe(401);
    // A ticket made with a lab-user's token reaches only what the token reaches.
    expect((await call(admin(), 'POST', '/api/v1/users', { name: 'tess', bindings: [{ role: 'lab-user', scope: '*' }] })).status).toBe(201);
    expect((await call(admin(), 'POST', '/api/v1/vms', { name: 'not-tess', image: 'counter' })).status).toBe(201);
    const tess = (await call(admin(), 'POST', '/api/v1/tokens', { name: 'tess', user: 'tess' })).body['token'] as string;
    const hers = await ticket(tess);
    const answer = await fetch(`${manager.url}/api/v1/vms/not-tess/console/serial?ticket=${encodeURIComponent(hers.ticket)}`);
    expect(answer.status).toBe(404);
    expect((await lastAudit('&actor=tess&decision=deny')).some((r) => r.reason.includes('outside the scope'))).toBe(true);
  });
});

describe('API tokens', () => {
  it('stores only a hash; forged, expired and revoked tokens are clear 401s, each denial audited', async () => {
    const made = await call(admin(), 'POST', '/api/v1/tokens', { name: 'ci', user: 'alice', expiresInSeconds: 3600 });
    expect(made.status).toBe(201);
    const token = made.body['token'] as string;
    const info = made.body['info'] as { id: string; user: string; expiresAt: string };
    expect(info.user).toBe('alice');
    const record = await manager.store.apiTokens.get(info.id);
    expect(record.tokenHash).toBe(createHash('sha256').update(token).digest('hex'));
    expect(JSON.stringify(record)).not.toContain(token);
    expect((await call({ token }, 'GET', '/api/v1/session')).body['actor']).toBe('alice');

    const forged = await call({ token: `${token.slice(0, -2)}xx` }, 'GET', '/api/v1/vms');
    expect(forged.status).toBe(401);
    expect(message(forged)).toMatch(/not valid \(unknown token\)/);

    const old = await manager.store.apiTokens.create({ name: 'old', tokenHash: createHash('sha256').update('drv_expired-secret').digest('hex'), role: '*', userName: 'alice', expiresAt: new Date(Date.now() - 1000) });
    const expired = await call({ token: 'drv_expired-secret' }, 'GET', '/api/v1/vms');
    expect(expired.status).toBe(401);
    expect(message(expired)).toBe(`API token "old" expired at ${old.expiresAt}`);

    expect((await call(admin(), 'DELETE', `/api/v1/tokens/${info.id}`)).status).toBe(200);
    const revoked = await call({ token }, 'GET', '/api/v1/vms');
    expect(revoked.status).toBe(401);
    expect(message(revoked)).toMatch(/^API token "ci" was revoked at /);

    const denials = await lastAudit('&decision=deny');
    for (const reason of [/unknown token/, /expired at/, /was revoked at/]) expect(denials.some((r) => r.status === 401 && reason.test(r.reason))).toBe(true);
  });

  it('a user makes and revokes their own tokens only; a token is limited to its roles and projects', async () => {
    const alice = (await signIn('alice', 'correct horse')).cookie!;
    expect((await call({ cookie: alice }, 'POST', '/api/v1/tokens', { name: 'for-bob', user: 'bob' })).status).toBe(403);
    expect((await call({ cookie: alice }, 'POST', '/api/v1/tokens', { name: 'admin-please', roles: ['admin'] })).status).toBe(400);
    expect((await call(admin(), 'POST', '/api/v1/projects', { name: 'red', quota: { vms: 1 } })).status).toBe(201);
    const made = await call({ cookie: alice }, 'POST', '/api/v1/tokens', { name: 'red-only', projects: ['red'] });
    expect(made.status).toBe(201);
    const red = made.body['token'] as string;
    // Limited to project red: no hosts (not a project's object), no VM outside red.
    expect((await call({ token: red }, 'GET', '/api/v1/hosts')).status).toBe(403);
    expect((await call(admin(), 'POST', '/api/v1/vms', { name: 'outside', image: 'counter' })).status).toBe(201);
    expect((await call({ token: red }, 'GET', '/api/v1/vms/outside')).status).toBe(404);
    const inRed = await call({ token: red }, 'POST', '/api/v1/vms', { name: 'in-red', image: 'counter', project: 'red' });
    expect(inRed.status).toBe(201);
    expect((await call({ token: red }, 'GET', '/api/v1/vms/in-red')).status).toBe(200);
    expect(((await call({ token: red }, 'GET', '/api/v1/vms')).body['items'] as Array<{ name: string }>).map((v) => v.name)).toEqual(['in-red']);
    // Bob's tokens are not Alice's to see or revoke.
    const bobToken = await call(admin(), 'POST', '/api/v1/tokens', { name: 'bobs', user: 'bob' });
    expect((await call({ cookie: alice }, 'DELETE', `/api/v1/tokens/${(bobToken.body['info'] as { id: string }).id}`)).status).toBe(404);
    // A lab-user lists only their own tokens (user.read shows everyone's, without secrets).
    expect((await call(admin(), 'POST', '/api/v1/users', { name: 'erin', password: 'erin-password', bindings: [{ role: 'lab-user', scope: '*' }] })).status).toBe(201);
    const erin = (await signIn('erin', 'erin-password')).cookie!;
    expect((await call({ cookie: erin }, 'POST', '/api/v1/tokens', { name: 'mine' })).status).toBe(201);
    expect(((await call({ cookie: erin }, 'GET', '/api/v1/tokens')).body['items'] as Array<{ user: string; name: string }>).map((t) => [t.user, t.name])).toEqual([['erin', 'mine']]);
  });
});

describe('projects and quotas', () => {
  it('refuses a VM past the project\'s quota at create and at edit, changing nothing', async () => {
    expect((await call(admin(), 'POST', '/api/v1/projects', { name: 'small', quota: { vms: 2, cpus: 2, memoryMiB: 4096 } })).status).toBe(201);
    expect((await call(admin(), 'POST', '/api/v1/vms', { name: 's1', image: 'counter', cpus: 1, project: 'small' })).status).toBe(201);
    const tooBig = await call(admin(), 'POST', '/api/v1/vms', { name: 's2', image: 'counter', cpus: 2, project: 'small' });
    expect(tooBig.status).toBe(409);
    expect(message(tooBig)).toMatch(/Project "small" is over its cpus quota: 1 used \+ 2 asked > 2/);
    expect((await call(admin(), 'GET', '/api/v1/vms/s2')).status).toBe(404);
    const editTooBig = await call(admin(), 'PATCH', '/api/v1/vms/s1', { cpus: 3 });
    expect(editTooBig.status).toBe(409);
    expect((await call(admin(), 'GET', '/api/v1/vms/s1')).body['spec']).toMatchObject({ cpus: 1 });
    expect((await call(admin(), 'POST', '/api/v1/vms', { name: 's2', image: 'counter', cpus: 1, project: 'small' })).status).toBe(201);
    const third = await call(admin(), 'POST', '/api/v1/vms', { name: 's3', image: 'counter', cpus: 1, project: 'small' });
    expect(third.status).toBe(409);
    expect(message(third)).toMatch(/vms quota/);
    const project = await call(admin(), 'GET', '/api/v1/projects/small');
    expect(project.body['usage']).toMatchObject({ vms: 2, cpus: 2 });
    expect((await call(admin(), 'DELETE', '/api/v1/projects/small')).status).toBe(409);
  });
});

describe('drover user|role|project|token|audit', () => {
  it('manages users, roles, projects and tokens from the CLI', async () => {
    expect((await drover(['project', 'create', 'class-a', '--max-vms', '3'])).code).toBe(0);
    const made = await drover(['user', 'create', 'frank', '--role', 'lab-user@project:class-a', '--project', 'class-a', '--password-stdin'], { stdin: 'frank-password\n' });
    expect(made.code, made.stderr).toBe(0);
    expect(made.stdout).toMatch(/Created user frank \(lab-user@project:class-a\)/);
    expect((await signIn('frank', 'frank-password')).status).toBe(201);
    const listed = await drover(['user', 'list']);
    expect(listed.stdout).toMatch(/frank\s+local\s+lab-user@project:class-a\s+class-a/);
    expect((await drover(['role', 'create', 'viewer', '--permission', 'vm.read', '--permission', 'vm.console'])).code).toBe(0);
    expect((await drover(['role', 'list'])).stdout).toMatch(/viewer\s+no\s+vm.read vm.console/);
    const token = await drover(['token', 'create', 'frank-cli', '--user', 'frank', '--expires-in', '3600']);
    expect(token.code, token.stderr).toBe(0);
    const secret = token.stdout.trim();
    expect(secret).toMatch(/^drv_/);
    // Frank's token: his VMs in his project, nothing else.
    expect((await drover(['vm', 'list'], { token: secret })).code).toBe(0);
    const hosts = await drover(['host', 'list'], { token: secret });
    expect(hosts.code).toBe(5);
    expect(hosts.stderr).toMatch(/may not host.read/);
    const badRole = await drover(['user', 'create', 'gina', '--role', 'wizard']);
    expect(badRole.code).toBe(3);
    expect(badRole.stderr).toMatch(/role "wizard" does not exist/);
    const help = await drover(['token', 'create', '--help']);
    expect(help.stdout).toMatch(/--expires-in <seconds>/);
  });
});

describe('audit log', () => {
  it('writes an action\'s record with the operation it submits: one record, the answer\'s status, in the chain', async () => {
    const auditOf = async (id: string) => (await lastAudit('&action=DELETE')).filter((r) => (r as unknown as { target: string }).target === `/api/v1/vms/${id}`);
    // Answered 202 at once, and 200 when waited for: one record each, as answered.
    for (const [name, query, status] of [['audit-a', '', 202], ['audit-b', '?wait=true', 200]] as const) {
      const vm = await call(admin(), 'POST', '/api/v1/vms', { name, image: 'counter' });
      expect(vm.status).toBe(201);
      const id = vm.body['id'] as string;
      const removed = await call(admin(), 'DELETE', `/api/v1/vms/${id}${query}`);
      expect(removed.status).toBe(status);
      await call(admin(), 'GET', `/api/v1/operations/${removed.body['id'] as string}`);
      expect(await auditOf(id)).toEqual([expect.objectContaining({ actor: 'admin', decision: 'allow', status, action: 'DELETE /api/v1/vms/:id' })]);
    }
    // A VM's definition commits its request's record (201) with it; a refused one writes none.
    const entry = (status: number) => ({ actor: 'admin', action: 'POST /api/v1/vms', target: '/api/v1/vms', source: '127.0.0.1', decision: 'allow' as const, reason: 'vm.write', status });
    const defined: RequestAudit = { entry, operationStatus: 202 };
    let seq = 0;
    for (let page = await manager.store.audit.list({ limit: 1000 }); page.length > 0; page = await manager.store.audit.list({ after: seq, limit: 1000 })) seq = page.at(-1)!.seq;
    await withRequestAudit(defined, () => manager.vms.create({ name: 'audit-c', image: 'counter' }, 'admin'));
    expect(defined.written).toBe(201);
    expect((await manager.store.audit.list({ after: seq })).map((r) => r.status)).toEqual([201]);
    const duplicate: RequestAudit = { entry, operationStatus: 202 };
    expect(await rejectionOf(withRequestAudit(duplicate, () => manager.vms.create({ name: 'audit-c', image: 'counter' }, 'admin')))).toMatchObject({ code: 'conflict' });
    expect(duplicate.written).toBeUndefined();
    expect(await manager.store.audit.list({ after: seq + 1 })).toEqual([]);
    // A refused submission writes no operation and is recorded as answered.
    const missing = await call(admin(), 'DELETE', '/api/v1/vms/no-such-vm');
    expect(missing.status).toBe(404);
    expect(await auditOf('no-such-vm')).toEqual([expect.objectContaining({ decision: 'error', status: 404 })]);
    expect((await call(admin(), 'GET', '/api/v1/audit/verify')).body).toMatchObject({ ok: true });
  });

  it('records changes with who, what, from where; exports JSON lines; a modified record makes verify fail', async () => {
    const records = await lastAudit();
    const created = records.find((r) => r.action === 'POST /api/v1/users' && r.status === 201);
    expect(created).toMatchObject({ actor: 'admin', decision: 'allow' });
    expect(records.every((r) => (r as unknown as { source: string }).source === '127.0.0.1')).toBe(true);

    const exported = await fetch(`${manager.url}/api/v1/audit/export`, { headers: { authorization: `Bearer ${manager.adminToken}` } });
    expect(exported.headers.get('content-type')).toMatch(/ndjson/);
    const lines = (await exported.text()).trim().split('\n').map((line) => JSON.parse(line) as { seq: number; hash: string; prevHash: string });
    expect(lines.length).toBeGreaterThan(10);
    for (let i = 1; i < lines.length; i += 1) expect(lines[i]!.prevHash).toBe(lines[i - 1]!.hash);

    expect((await call(admin(), 'GET', '/api/v1/audit/verify')).body).toMatchObject({ ok: true });
    const intact = await drover(['audit', 'verify']);
    expect(intact.code).toBe(0);
    expect(intact.stdout).toMatch(/The audit log is intact: \d+ records/);
    const shown = await drover(['audit', '--actor', 'frank', '--json']);
    expect(JSON.parse(shown.stdout).every((r: { actor: string }) => r.actor === 'frank')).toBe(true);
    const file = path.join(dataDir, 'audit.jsonl');
    expect((await drover(['audit', '--export', file])).stdout).toMatch(/Wrote \d+ audit records/);
    // Someone with the database file rewrites history.
    const db = new Database(path.join(dataDir, 'drover.db'));
    try {
      db.prepare("update audit_log set actor = 'someone-else' where seq = 3").run();
    } finally {
      db.close();
    }
    const verdict = await call(admin(), 'GET', '/api/v1/audit/verify');
    expect(verdict.body).toMatchObject({ ok: false, firstBad: { seq: 3, reason: expect.stringMatching(/modified/) } });
    const cli = await drover(['audit', 'verify']);
    expect(cli.code).toBe(4);
    expect(cli.stderr).toMatch(/The audit log is broken at record 3: its content does not match its hash/);
  });
});

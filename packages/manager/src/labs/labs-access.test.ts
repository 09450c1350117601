import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCluster, type TestCluster } from '../testing/cluster.js';
import { authCall, type AuthAnswer } from '../testing/auth-call.js';

// Per-lab ownership on a real manager and agent (one small web appliance per
// lab, QEMU user networking): two users with the built-in lab-user role each
// deploy a lab; each lists, reads and acts on only their own (another's answers
// 404, as if it did not exist, and the denial is audited); the admin sees both.

let cluster: TestCluster;
const call = authCall(() => cluster.manager);
const admin = () => ({ token: cluster.manager.adminToken });
const tokens: Record<string, string> = {};

const manifest = (name: string) => ({ name, networks: [], vms: [{ name: 'web', image: 'web', memoryMiB: 96 }] });
const names = (answer: AuthAnswer) => (answer.body['items'] as Array<{ name: string }>).map((l) => l.name).sort();

async function waitOp(auth: { token: string }, answer: AuthAnswer): Promise<string> {
  expect(answer.status, JSON.stringify(answer.body)).toBe(202);
  const id = answer.body['id'] as string;
  for (const deadline = Date.now() + 600_000; ; ) {
    const op = await call(auth, 'GET', `/api/v1/operations/${id}`);
    const state = op.body['state'] as string;
    if (!['pending', 'running'].includes(state)) return state;
    if (Date.now() > deadline) throw new Error(`operation ${id} did not end`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

beforeAll(async () => {
  cluster = await startTestCluster({ labs: { networkMode: 'user', healthTimeoutMs: 240_000 } });
  for (const user of ['alice', 'bob']) {
    expect((await call(admin(), 'POST', '/api/v1/users', { name: user, bindings: [{ role: 'lab-user', scope: '*' }] })).status).toBe(201);
    tokens[user] = (await call(admin(), 'POST', '/api/v1/tokens', { name: user, user })).body['token'] as string;
  }
}, 180_000);

afterAll(async () => {
  await cluster?.close();
});

describe('labs of lab-users', () => {
  it('each lab-user sees and acts on only their own labs', async () => {
    const alice = { token: tokens['alice']! };
    const bob = { token: tokens['bob']! };
    expect(await waitOp(alice, await call(alice, 'POST', '/api/v1/labs', { name: 'al', manifest: manifest('al') }))).toBe('done');
    expect(await waitOp(bob, await call(bob, 'POST', '/api/v1/labs', { name: 'bo', manifest: manifest('bo') }))).toBe('done');

    expect(names(await call(alice, 'GET', '/api/v1/labs'))).toEqual(['al']);
    expect(names(await call(bob, 'GET', '/api/v1/labs'))).toEqual(['bo']);
    expect(names(await call(admin(), 'GET', '/api/v1/labs'))).toEqual(['al', 'bo']);
    const own = await call(alice, 'GET', '/api/v1/labs/al');
    expect(own.status).toBe(200);
    expect(own.body['owner']).toBe('alice');

    // Bob's lab, by name or id, does not exist for Alice: nothing she asks of it happens.
    const bo = (await call(admin(), 'GET', '/api/v1/labs/bo')).body as { id: string };
    for (const [method, route, body] of [
      ['GET', '/api/v1/labs/bo', undefined],
      ['GET', `/api/v1/labs/${bo.id}`, undefined],
      ['POST', '/api/v1/labs/bo/stop', {}],
      ['POST', '/api/v1/labs/bo/reset', {}],
      ['POST', '/api/v1/labs/bo/snapshot', { name: 'peek' }],
      ['POST', '/api/v1/labs/bo/clone', { name: 'mine' }],
      ['DELETE', '/api/v1/labs/bo', undefined],
    ] as const) {
      const answer = await call(alice, method, route, body);
      expect(answer.status, `${method} ${route}: ${JSON.stringify(answer.body)}`).toBe(404);
    }
    expect((await call(admin(), 'GET', '/api/v1/labs/bo')).body['state']).toBe('running');
    expect(names(await call(admin(), 'GET', '/api/v1/labs'))).toEqual(['al', 'bo']);
    expect((await call(admin(), 'GET', '/api/v1/operations?limit=1000')).body['items']).not.toContainEqual(expect.objectContaining({ actor: 'alice', targetId: bo.id }));
    const audit = (await call(admin(), 'GET', '/api/v1/audit?limit=1000&actor=alice&decision=deny')).body['items'] as Array<{ reason: string }>;
    expect(audit.some((r) => r.reason.includes('lab "bo" is outside the scope of user "alice"'))).toBe(true);

    // Each acts on their own: Alice stops hers, Bob destroys his.
    expect(await waitOp(alice, await call(alice, 'POST', '/api/v1/labs/al/stop', {}))).toBe('done');
    expect(await waitOp(bob, await call(bob, 'DELETE', '/api/v1/labs/bo'))).toBe('done');
    expect(await waitOp(alice, await call(alice, 'DELETE', '/api/v1/labs/al'))).toBe('done');
    expect(names(await call(admin(), 'GET', '/api/v1/labs'))).toEqual([]);
  }, 900_000);
});

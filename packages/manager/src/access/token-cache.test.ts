import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openSqliteStore, type Store } from '../store/index.js';
import { AccessService, tokenHash } from './access.service.js';
import type { LdapDirectory } from './ldap-directory.js';

/**
 * A bearer token's principal is kept between requests (authenticateToken), on
 * a real SQLite store: answered again without reading the token or its user,
 * and refused at once after anything changed that could matter — a
 * revocation, a disabled user, new role bindings, a write by another
 * connection or process to the same file, or the token's expiry.
 */

let directory: string;
let store: Store;
let access: AccessService;
let clock: number;
/** How many times the token and its user were read from the store. */
let reads: number;

beforeAll(() => {
  directory = mkdtempSync(path.join(os.tmpdir(), 'drover-token-cache-'));
});
afterAll(() => rmSync(directory, { recursive: true, force: true }));

let fileCounter = 0;
beforeEach(async () => {
  store = await openSqliteStore({ file: path.join(directory, `store-${++fileCounter}.sqlite`) });
  clock = Date.parse('2030-01-01T00:00:00.000Z');
  reads = 0;
  for (const [repository, method] of [
    [store.apiTokens, 'findByHash'],
    [store.users, 'tryGetByName'],
  ] as Array<[object, string]>) {
    const methods = repository as Record<string, (...args: unknown[]) => Promise<unknown>>;
    const original = methods[method]!.bind(repository);
    methods[method] = (...args: unknown[]) => {
      reads += 1;
      return original(...args);
    };
  }
  access = new AccessService({ store, logger: pino({ level: 'silent' }), now: () => clock });
});
afterEach(async () => {
  await store.close();
});

async function makeToken(secret: string, options: { user?: string; expiresAt?: string; source?: 'local' | 'ldap' } = {}) {
  const user = options.user ?? 'alice';
  if (!(await store.users.tryGetByName(user))) {
    await store.users.create({ name: user, source: options.source ?? 'local', bindings: [{ role: 'admin', scope: '*' }], ...(options.source === 'ldap' ? { groupsCheckedAt: new Date(clock).toISOString() } : {}) });
  }
  const record = await store.apiTokens.create({ name: secret, tokenHash: tokenHash(secret), role: 'admin', userName: user, ...(options.expiresAt ? { expiresAt: options.expiresAt } : {}) });
  reads = 0;
  return record;
}

const refusal = (token: string) => access.authenticateToken(token).then(() => 'accepted', (error: Error) => error.message);

describe('the kept principal of a bearer token', () => {
  it('is answered again while nothing changed, without reading the token or its user', async () => {
    await makeToken('drv_one');
    const first = await access.authenticateToken('drv_one');
    expect(first.user).toBe('alice');
    expect(reads).toBe(2);
    for (let i = 0; i < 3; i++) expect(await access.authenticateToken('drv_one')).toEqual(first);
    expect(reads).toBe(2);
    // Reading the store changes nothing: still kept.
    await store.users.list();
    await access.authenticateToken('drv_one');
    expect(reads).toBe(2);
  });

  it('is dropped by a revocation, a disabled user and new role bindings', async () => {
    const token = await makeToken('drv_two');
    await makeToken('drv_other');
    await access.authenticateToken('drv_two');
    const user = (await store.users.tryGetByName('alice'))!;
    await store.users.update(user.id, { bindings: [{ role: 'auditor', scope: '*' }] });
    expect((await access.authenticateToken('drv_two')).grants.map((g) => g.role)).toEqual(['auditor']);
    await store.users.update(user.id, { disabled: true });
    expect(await refusal('drv_two')).toBe('User "alice" is disabled');
    await store.users.update(user.id, { disabled: false });
    await access.authenticateToken('drv_two');
    await store.apiTokens.revoke(token.id);
    expect(await refusal('drv_two')).toMatch(/^API token "drv_two" was revoked at /);
    // Another token of the same user is unaffected.
    expect((await access.authenticateToken('drv_other')).user).toBe('alice');
  });

  it('is dropped when another connection or process writes to the same file', async () => {
    const token = await makeToken('drv_three');
    await access.authenticateToken('drv_three');
    const other = new BetterSqlite3(path.join(directory, `store-${fileCounter}.sqlite`));
    try {
      other.prepare('update api_tokens set revoked_at = ? where id = ?').run('2029-12-31T00:00:00.000Z', token.id);
    } finally {
      other.close();
    }
    expect(await refusal('drv_three')).toBe('API token "drv_three" was revoked at 2029-12-31T00:00:00.000Z');
  });

  it('ends at the token\'s expiry, with nothing written', async () => {
    await makeToken('drv_four', { expiresAt: new Date(clock + 60_000).toISOString() });
    await access.authenticateToken('drv_four');
    clock += 59_000;
    await access.authenticateToken('drv_four');
    expect(reads).toBe(2);
    clock += 1_000;
    expect(await refusal('drv_four')).toBe(`API token "drv_four" expired at ${new Date(clock).toISOString()}`);
  });

  it('is never kept for an LDAP user (their groups are re-read by age)', async () => {
    const ldap = { refreshSeconds: 3600 } as LdapDirectory;
    access = new AccessService({ store, logger: pino({ level: 'silent' }), now: () => clock, ldap });
    await makeToken('drv_five', { user: 'lena', source: 'ldap' });
    await access.authenticateToken('drv_five');
    await access.authenticateToken('drv_five');
    expect(reads).toBe(4);
  });

  it('unknown tokens are refused every time', async () => {
    await makeToken('drv_six');
    expect(await refusal('drv_nope')).toBe('That bearer token is not valid (unknown token)');
    expect(await refusal('drv_nope')).toBe('That bearer token is not valid (unknown token)');
    expect(await refusal('x'.repeat(513))).toBe('That bearer token is not valid');
  });
});

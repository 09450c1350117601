import { rmSync } from 'node:fs';
import { Attribute, Change, Client } from 'ldapts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '@drover/agent/testing';
import { defaultApplianceCacheDir } from '@drover/appliances';
import { defaultManagerConfig } from '../config.js';
import { startManager, type RunningManager } from '../manager.js';
import { authCall } from '../testing/auth-call.js';
import { LdapDirectory } from './ldap-directory.js';
import { startSlapd, type TestSlapd } from './testing/slapd.js';

/**
 * Users from a real slapd (started here with a generated slapd.conf, over
 * LDAPS and StartTLS): bind, search, group → role mapping; a user removed
 * from their group loses access within the refresh interval (2 s here), for
 * their session and their API token alike.
 */

let slapd: TestSlapd;
let manager: RunningManager;
const dataDir = tempDir('ldap-manager');

const call = authCall(() => manager);

function directory(overrides: Partial<ConstructorParameters<typeof LdapDirectory>[0]> = {}) {
  return new LdapDirectory({
    url: slapd.ldapsUrl,
    caPem: slapd.caPem,
    bindDn: `uid=svc,ou=people,${slapd.suffix}`,
    bindPassword: 'svc-secret',
    userBase: `ou=people,${slapd.suffix}`,
    groupBase: `ou=groups,${slapd.suffix}`,
    groupRoles: { 'lab-admins': [{ role: 'operator', scope: '*' }], auditors: [{ role: 'auditor', scope: '*' }] },
    ...overrides,
  });
}

beforeAll(async () => {
  slapd = await startSlapd(
    [
      { uid: 'lina', password: 'lina-secret' },
      { uid: 'omar', password: 'omar-secret' },
      { uid: 'pia', password: 'pia-secret' },
    ],
    { 'lab-admins': ['lina', 'omar'], auditors: [], unrelated: ['pia'] },
  );
  const settings = directory().settings;
  manager = await startManager({
    ...defaultManagerConfig(dataDir),
    listen: '127.0.0.1:0',
    heartbeatMs: 500,
    applianceCacheDir: defaultApplianceCacheDir(),
    appliances: false,
    ldap: {
      url: settings.url,
      caFile: slapd.caFile,
      bindDn: settings.bindDn,
      bindPassword: settings.bindPassword,
      userBase: settings.userBase,
      groupBase: settings.groupBase,
      groupRoles: settings.groupRoles,
      refreshSeconds: 2,
    },
  });
});

afterAll(async () => {
  await manager?.close();
  await slapd?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

async function removeFromGroup(group: string, uid: string): Promise<void> {
  const client = new Client({ url: slapd.url, timeout: 5000 });
  try {
    await client.bind(slapd.rootDn, slapd.rootPassword);
    await client.modify(`cn=${group},ou=groups,${slapd.suffix}`, new Change({ operation: 'delete', modification: new Attribute({ type: 'member', values: [`uid=${uid},ou=people,${slapd.suffix}`] }) }));
  } finally {
    await client.unbind();
  }
}

/** Polls until `request` answers 401 (the refresh interval is 2 s; the deadline only stops a broken test). */
async function until401(request: () => Promise<{ status: number }>): Promise<number> {
  for (const deadline = Date.now() + 20_000; ; ) {
    const { status } = await request();
    if (status === 401 || Date.now() > deadline) return status;
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('LDAP directory', () => {
  it('binds and searches over LDAPS and StartTLS, mapping groups to roles', async () => {
    const overLdaps = await directory().authenticate('lina', 'lina-secret');
    expect(overLdaps).toMatchObject({ dn: `uid=lina,ou=people,${slapd.suffix}`, bindings: [{ role: 'operator', scope: '*' }] });
    expect(overLdaps!.groups).toContain('lab-admins');
    const overStartTls = await directory({ url: slapd.url, startTls: true }).authenticate('omar', 'omar-secret');
    expect(overStartTls?.bindings).toEqual([{ role: 'operator', scope: '*' }]);
    expect(await directory().authenticate('lina', 'wrong')).toBeUndefined();
    expect(await directory().authenticate('lina', '')).toBeUndefined();
    expect(await directory().authenticate('nobody', 'x')).toBeUndefined();
    // A filter injection finds no one.
    expect(await directory().authenticate('*)(uid=*', 'lina-secret')).toBeUndefined();
    // StartTLS against a CA the client does not trust fails rather than going on in clear.
    await expect(directory({ url: slapd.url, startTls: true, caPem: undefined }).lookup('lina')).rejects.toThrow();
  });

  it('signs LDAP users in; a wrong password or a user in no mapped group is refused', async () => {
    const lina = await call(undefined, 'POST', '/api/v1/sessions', { username: 'lina', password: 'lina-secret' });
    expect(lina.status).toBe(201);
    const user = await call({ token: manager.adminToken }, 'GET', '/api/v1/users/lina');
    expect(user.body).toMatchObject({ source: 'ldap', bindings: [{ role: 'operator', scope: '*' }] });
    expect((await call(undefined, 'POST', '/api/v1/sessions', { username: 'lina', password: 'nope' })).status).toBe(401);
    const pia = await call(undefined, 'POST', '/api/v1/sessions', { username: 'pia', password: 'pia-secret' });
    expect(pia.status).toBe(401);
  });

  it('a user removed from the group loses access within the refresh interval: session and token alike', async () => {
    const signIn = await call(undefined, 'POST', '/api/v1/sessions', { username: 'omar', password: 'omar-secret' });
    expect(signIn.status).toBe(201);
    const cookie = signIn.headers.get('set-cookie')!.split(';')[0]!;
    const made = await call({ cookie }, 'POST', '/api/v1/tokens', { name: 'omar-cli' });
    expect(made.status).toBe(201);
    const token = made.body['token'] as string;
    expect((await call({ cookie }, 'GET', '/api/v1/hosts')).status).toBe(200);
    expect((await call({ token }, 'GET', '/api/v1/hosts')).status).toBe(200);

    await removeFromGroup('lab-admins', 'omar');
    expect(await until401(() => call({ cookie }, 'GET', '/api/v1/hosts'))).toBe(401);
    expect(await until401(() => call({ token }, 'GET', '/api/v1/hosts'))).toBe(401);
    const refused = await call({ token }, 'GET', '/api/v1/vms');
    expect((refused.body['error'] as { message: string }).message).toMatch(/no longer in any group/);
    // Lina, still in the group, keeps her access.
    const lina = await call(undefined, 'POST', '/api/v1/sessions', { username: 'lina', password: 'lina-secret' });
    expect((await call({ cookie: lina.headers.get('set-cookie')!.split(';')[0]! }, 'GET', '/api/v1/hosts')).status).toBe(200);
    const denials = await call({ token: manager.adminToken }, 'GET', '/api/v1/audit?actor=omar&decision=deny');
    expect((denials.body['items'] as unknown[]).length).toBeGreaterThan(0);
  });
});

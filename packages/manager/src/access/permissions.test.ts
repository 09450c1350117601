import { describe, expect, it } from 'vitest';
import { restrictGrants } from './access.service.js';
import { LoginLimiter } from './login-limiter.js';
import { hashPassword, verifyPassword } from './passwords.js';
import { builtInRoles, checkPermissionPatterns, checkScope, covers, grants, isRoutePermission, resolveGrants, type ScopedObject } from './permissions.js';

const vm = (owner: string, project: string | null, id = '11111111-2222-4333-8444-555555555555'): ScopedObject => ({ kind: 'vm', id, owner, project });

describe('permission patterns', () => {
  it('match by area and verb, and "!" takes away', () => {
    expect(grants(['*'], 'user.write')).toBe(true);
    expect(grants(['*.read'], 'audit.read')).toBe(true);
    expect(grants(['*.read'], 'vm.write')).toBe(false);
    expect(grants(['vm.*'], 'vm.console')).toBe(true);
    expect(grants(['vm.*'], 'host.read')).toBe(false);
    expect(grants(builtInRoles['operator']!.permissions, 'host.power')).toBe(true);
    expect(grants(builtInRoles['operator']!.permissions, 'user.write')).toBe(false);
    expect(grants(builtInRoles['operator']!.permissions, 'audit.read')).toBe(false);
    expect(grants(builtInRoles['lab-user']!.permissions, 'vm.migrate')).toBe(false);
    expect(grants([], 'vm.read')).toBe(false);
  });

  it('refuses malformed patterns, scopes and route permissions', () => {
    for (const bad of [[], ['vm'], ['VM.read'], ['vm.read.x'], ['**'], ['!']]) expect(() => checkPermissionPatterns(bad)).toThrow(/permission|at least one/);
    expect(() => checkPermissionPatterns(['vm.read', '!vm.write', '*.read', '*'])).not.toThrow();
    for (const bad of ['', 'project:', 'vm:nope', 'host:h1', '**']) expect(() => checkScope(bad)).toThrow(/Invalid scope/);
    expect(isRoutePermission('vm.read')).toBe(true);
    expect(isRoutePermission('public')).toBe(true);
    expect(isRoutePermission(undefined)).toBe(false);
    expect(isRoutePermission('vm')).toBe(false);
  });
});

describe('scopes', () => {
  it('reach everything, a project, one object, or (lab-user) own objects only', () => {
    const [everything] = resolveGrants([{ role: 'operator', scope: '*' }], new Map());
    const [red] = resolveGrants([{ role: 'operator', scope: 'project:red' }], new Map());
    const [one] = resolveGrants([{ role: 'auditor', scope: 'vm:11111111-2222-4333-8444-555555555555' }], new Map());
    const [lab] = resolveGrants([{ role: 'lab-user', scope: '*' }], new Map());
    expect(covers(everything!, vm('bob', null), 'alice')).toBe(true);
    expect(covers(red!, vm('bob', 'red'), 'alice')).toBe(true);
    expect(covers(red!, vm('bob', 'blue'), 'alice')).toBe(false);
    expect(covers(red!, vm('bob', null), 'alice')).toBe(false);
    expect(covers(one!, vm('bob', null), 'alice')).toBe(true);
    expect(covers(one!, vm('bob', null, '99999999-2222-4333-8444-555555555555'), 'alice')).toBe(false);
    expect(covers(lab!, vm('alice', null), 'alice')).toBe(true);
    expect(covers(lab!, vm('bob', null), 'alice')).toBe(false);
  });

  it('drops bindings of unknown (deleted) roles, and resolves custom ones', () => {
    const out = resolveGrants([{ role: 'gone', scope: '*' }, { role: 'viewer', scope: '*' }], new Map([['viewer', ['vm.read']]]));
    expect(out).toEqual([{ role: 'viewer', permissions: ['vm.read'], scope: '*', ownObjectsOnly: false }]);
  });

  it('a token scope narrows roles and turns "everything" into its projects', () => {
    const all = resolveGrants([{ role: 'operator', scope: '*' }, { role: 'auditor', scope: 'project:blue' }], new Map());
    expect(restrictGrants(all, null)).toBe(all);
    expect(restrictGrants(all, { roles: ['auditor'] }).map((g) => g.role)).toEqual(['auditor']);
    expect(restrictGrants(all, { projects: ['red'] }).map((g) => `${g.role}@${g.scope}`)).toEqual(['operator@project:red']);
  });
});

describe('passwords and sign-in limits', () => {
  it('hashes with scrypt, salted, and verifies', async () => {
    const one = await hashPassword('correct horse');
    const two = await hashPassword('correct horse');
    expect(one).not.toBe(two);
    expect(await verifyPassword('correct horse', one)).toBe(true);
    expect(await verifyPassword('correct horsf', one)).toBe(false);
    expect(await verifyPassword('x', 'not-a-hash')).toBe(false);
  });

  it('refuses after too many failures until the oldest leaves the window', () => {
    let now = 0;
    const limiter = new LoginLimiter(3, 60_000, () => now);
    for (let i = 0; i < 3; i += 1) {
      expect(limiter.retryAfter('1.2.3.4', 'alice')).toBe(0);
      limiter.fail('1.2.3.4', 'alice');
      now += 1000;
    }
    expect(limiter.retryAfter('1.2.3.4', 'alice')).toBe(57);
    expect(limiter.retryAfter('1.2.3.4', 'bob')).toBe(0);
    expect(limiter.retryAfter('5.6.7.8', 'alice')).toBe(0);
    now = 60_001;
    expect(limiter.retryAfter('1.2.3.4', 'alice')).toBe(0);
  });
});

import { createHash, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { DroverError, errors } from '@drover/core';
import type { Store } from '../store/index.js';
import type { ApiTokenRecord, ApiTokenScope, ProjectQuota, ProjectRecord, RoleBinding, UserRecord, VmRecord } from '../store/index.js';
import type { LdapDirectory } from './ldap-directory.js';
import { LoginLimiter } from './login-limiter.js';
import { dummyHash, hashPassword, verifyPassword } from './passwords.js';
import {
  builtInRoles,
  checkPermissionPatterns,
  checkScope,
  covers,
  grants,
  isGlobal,
  resolveGrants,
  type Grant,
  type ScopedObject,
} from './permissions.js';

/** Who is asking, resolved on every request from the store (so a removed user or role takes effect at once). */
export interface Principal {
  user: string;
  via: 'token' | 'session' | 'ticket';
  tokenId?: string;
  grants: Grant[];
}

/** What a request may do: the grants that give its route's permission. */
export interface RequestAccess {
  principal: Principal;
  permission: string;
  grants: Grant[];
  /** Some grant reaches everything: no per-object check is needed. */
  global: boolean;
}

/** Areas whose objects can be reached through a project, one object or ownership; the others need a grant over everything. */
const scopableAreas = new Set(['vm', 'lab', 'operation', 'image', 'project']);

export const adminUser = 'admin';
const userNamePattern = /^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$/;
/** How many resolved bearer tokens are kept at most. */
const keptTokenPrincipals = 1000;

export function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export interface AccessServiceOptions {
  store: Store;
  logger: Logger;
  ldap?: LdapDirectory;
  loginMaxFailures?: number;
  loginWindowMs?: number;
  now?: () => number;
}

export interface NewTokenInput {
  name: string;
  user: string;
  roles?: string[];
  projects?: string[];
  expiresInSeconds?: number;
}

/**
 * Users, roles, projects and API tokens, and the decisions made with them:
 * who a credential is (authenticate), whether they may use a permission
 * (authorize) and whether an object is within their reach (covers).
 */
export class AccessService {
  readonly limiter: LoginLimiter;
  private readonly now: () => number;
  private readonly refreshing = new Map<string, Promise<UserRecord>>();
  private readonly quotaLocks = new Map<string, Promise<unknown>>();
  /** Resolved bearer tokens, by token, oldest first (see authenticateToken). */
  private readonly tokenPrincipals = new Map<string, { change: string; expiresAtMs: number; principal: Principal }>();
  /** Users last seen coming from LDAP: their principals are never kept. */
  private readonly ldapUsers = new Set<string>();

  constructor(private readonly o: AccessServiceOptions) {
    this.now = o.now ?? Date.now;
    this.limiter = new LoginLimiter(o.loginMaxFailures ?? 5, o.loginWindowMs ?? 60_000, this.now);
  }

  get ldap(): LdapDirectory | undefined {
    return this.o.ldap;
  }

  /** The admin user, and the admin token (made at first start) as one of its tokens. */
  async bootstrap(adminToken: string): Promise<void> {
    const { store } = this.o;
    if (!(await store.users.tryGetByName(adminUser))) {
      await store.users.create({ name: adminUser, source: 'local', bindings: [{ role: 'admin', scope: '*' }] }).catch(async (error: unknown) => {
        // Another manager on the same store made it first.
        if (!(await store.users.tryGetByName(adminUser))) throw error;
      });
    }
    const hash = tokenHash(adminToken);
    if (!(await store.apiTokens.findByHash(hash))) {
      await store.apiTokens.create({ name: 'admin-token', tokenHash: hash, role: 'admin', userName: adminUser, scope: null }).catch(async (error: unknown) => {
        if (!(await store.apiTokens.findByHash(hash))) throw error;
      });
    }
  }

  // ------------------------------------------------------------ authentication

  /**
   * The principal of a bearer token; 401 naming why (unknown, expired, revoked, user gone).
   *
   * Resolving a token takes several store reads, more than the rest of a list
   * request, so the principal of each valid token is kept with the store's
   * `changeToken` read before those reads. It is answered again only while the
   * change token is the same, that is while no row of the database changed (a
   * revoked or deleted token, a disabled or removed user, a changed role all
   * write a row), and only while the token has not expired. Never kept:
   * principals of LDAP users (their groups are re-read by age) and anything on
   * a store without a change token (PostgreSQL), which are resolved every time.
   * `read.change`, when given, is a change token the caller has just read (the
   * HTTP server reads it once a request, for this and the VM list).
   */
  async authenticateToken(token: string, read?: { change: string | undefined }): Promise<Principal> {
    if (token.length > 512) throw errors.unauthenticated('That bearer token is not valid');
    const change = read ? read.change : await this.o.store.changeToken();
    const kept = change === undefined ? undefined : this.tokenPrincipals.get(token);
    if (kept !== undefined && kept.change === change && kept.expiresAtMs > this.now()) return kept.principal;
    const record = await this.o.store.apiTokens.findByHash(tokenHash(token));
    if (!record) throw errors.unauthenticated('That bearer token is not valid (unknown token)');
    if (record.revokedAt !== null) throw errors.unauthenticated(`API token "${record.name}" was revoked at ${record.revokedAt}`);
    const expiresAtMs = record.expiresAt === null ? Number.POSITIVE_INFINITY : Date.parse(record.expiresAt);
    if (expiresAtMs <= this.now()) throw errors.unauthenticated(`API token "${record.name}" expired at ${record.expiresAt}`);
    // Tokens made before users existed act for the admin.
    const userName = record.userName ?? adminUser;
    const principal = await this.principalOf(userName, 'token');
    const resolved: Principal = { ...principal, tokenId: record.id, grants: restrictGrants(principal.grants, record.scope) };
    this.tokenPrincipals.delete(token);
    if (change !== undefined && !this.ldapUsers.has(userName)) {
      if (this.tokenPrincipals.size >= keptTokenPrincipals) this.tokenPrincipals.delete(this.tokenPrincipals.keys().next().value!);
      this.tokenPrincipals.set(token, { change, expiresAtMs, principal: resolved });
    }
    return resolved;
  }

  /**
   * The principal of a user name (from a session or ticket): the user must
   * still exist, be enabled and, for LDAP users, still hold a role through a
   * group (re-read when older than the refresh interval).
   */
  async principalOf(name: string, via: Principal['via'], tokenId?: string): Promise<Principal> {
    let user = await this.o.store.users.tryGetByName(name);
    if (!user) throw errors.unauthenticated(`User "${name}" no longer exists`);
    if (user.disabled) throw errors.unauthenticated(`User "${name}" is disabled`);
    if (user.source === 'ldap') {
      this.ldapUsers.add(user.name);
      user = await this.freshLdapUser(user);
    } else this.ldapUsers.delete(user.name);
    if (user.bindings.length === 0) throw errors.unauthenticated(`User "${name}" holds no role (no longer in any group that grants one)`);
    let grantsOf = await this.grantsOf(user.bindings);
    if (tokenId) {
      const token = await this.o.store.apiTokens.tryGet(tokenId);
      if (!token || token.revokedAt !== null || (token.expiresAt !== null && Date.parse(token.expiresAt) <= this.now())) throw errors.unauthenticated('The token behind this ticket is no longer valid');
      grantsOf = restrictGrants(grantsOf, token.scope);
    }
    return { user: user.name, via, ...(tokenId ? { tokenId } : {}), grants: grantsOf };
  }

  private async freshLdapUser(user: UserRecord): Promise<UserRecord> {
    const ldap = this.o.ldap;
    if (!ldap) throw errors.unauthenticated(`User "${user.name}" comes from LDAP, which is not configured`);
    const checked = user.groupsCheckedAt ? Date.parse(user.groupsCheckedAt) : 0;
    if (this.now() - checked < ldap.refreshSeconds * 1000) return user;
    const running = this.refreshing.get(user.name);
    if (running) return running;
    const refresh = (async () => {
      const found = await ldap.lookup(user.name);
      this.o.logger.info({ user: user.name, groups: found?.groups ?? null }, 'LDAP groups re-read');
      return this.o.store.users.update(user.id, { bindings: found?.bindings ?? [], ldapDn: found?.dn ?? user.ldapDn, groupsCheckedAt: new Date(this.now()).toISOString() });
    })().finally(() => this.refreshing.delete(user.name));
    this.refreshing.set(user.name, refresh);
    return refresh;
  }

  async grantsOf(bindings: readonly RoleBinding[]): Promise<Grant[]> {
    const custom = new Map<string, string[]>();
    for (const binding of bindings) {
      if (builtInRoles[binding.role] || custom.has(binding.role)) continue;
      const role = await this.o.store.roles.tryGetByName(binding.role);
      if (role) custom.set(role.name, role.permissions);
    }
    return resolveGrants(bindings, custom);
  }

  /**
   * Checks a user name and password (local users first, then LDAP); the user's
   * name on success. 429 (with the seconds to wait) after too many failures
   * from one address; 401 otherwise, the same for an unknown user and a wrong password.
   */
  async login(name: string, password: string, address: string): Promise<string> {
    const wait = this.limiter.retryAfter(address, name);
    if (wait > 0) throw new DroverError('rate_limited', `Too many failed sign-ins; try again in ${wait} s`, { details: { retryAfterSeconds: wait } });
    const user = await this.o.store.users.tryGetByName(name);
    let ok = false;
    if (user?.source === 'local' || (!user && !this.o.ldap)) {
      ok = await verifyPassword(password, user?.passwordHash ?? dummyHash);
      if (ok && user?.disabled) ok = false;
    } else if (this.o.ldap && (!user || user.source === 'ldap')) {
      const found = await this.o.ldap.authenticate(name, password);
      if (found) {
        const values = { bindings: found.bindings, ldapDn: found.dn, groupsCheckedAt: new Date(this.now()).toISOString() };
        if (user) await this.o.store.users.update(user.id, values);
        else await this.o.store.users.create({ name, source: 'ldap', ...values });
        ok = found.bindings.length > 0 && !user?.disabled;
      }
    }
    if (!ok) {
      this.limiter.fail(address, name);
      throw errors.unauthenticated('Wrong user name or password');
    }
    this.limiter.succeed(address, name);
    return name;
  }

  // ------------------------------------------------------------ authorization

  /** The grants that give `permission`, or 403. */
  authorize(principal: Principal, permission: string): RequestAccess {
    const giving = principal.grants.filter((grant) => grants(grant.permissions, permission));
    if (giving.length === 0) throw errors.forbidden(`User "${principal.user}" may not ${permission}`, { permission, user: principal.user });
    const global = giving.some(isGlobal);
    if (!global && !scopableAreas.has(permission.split('.')[0]!)) {
      throw errors.forbidden(`User "${principal.user}" may ${permission} only within ${giving.map((g) => (g.ownObjectsOnly ? 'their own objects' : g.scope)).join(', ')}, and this is not one of them`, { permission, user: principal.user });
    }
    return { principal, permission, grants: giving, global };
  }

  /** The VM as a scoped object (with its project's name). */
  async scopedVm(vm: VmRecord): Promise<ScopedObject> {
    const projectId = (await this.o.store.projects.projectsOfVms([vm.id])).get(vm.id);
    const project = projectId ? await this.o.store.projects.tryGet(projectId) : undefined;
    return { kind: 'vm', id: vm.id, owner: vm.owner, project: project?.name ?? null };
  }

  /** A lab as a scoped object: its owner (who deployed it) and its project's name. */
  scopedLab(lab: { id: string; owner: string; project: string | null }): ScopedObject {
    return { kind: 'lab', id: lab.id, owner: lab.owner, project: lab.project };
  }

  /** Which of `vms` the access reaches (all of them for a global grant). */
  async visibleVms<T extends VmRecord>(access: RequestAccess | undefined, vms: T[]): Promise<T[]> {
    if (!access || access.global) return vms;
    const projectOf = await this.o.store.projects.projectsOfVms(vms.map((vm) => vm.id));
    const names = new Map<string, string>();
    for (const id of new Set(projectOf.values())) names.set(id, (await this.o.store.projects.tryGet(id))?.name ?? '');
    return vms.filter((vm) => {
      const projectId = projectOf.get(vm.id);
      const object: ScopedObject = { kind: 'vm', id: vm.id, owner: vm.owner, project: projectId ? (names.get(projectId) ?? null) : null };
      return access.grants.some((grant) => covers(grant, object, access.principal.user));
    });
  }

  reaches(access: RequestAccess, object: ScopedObject): boolean {
    return access.global || access.grants.some((grant) => covers(grant, object, access.principal.user));
  }

  // ------------------------------------------------------------ projects and quotas

  /**
   * Runs `create` for a new VM in `projectName` (or in no project) after
   * checking the caller may create there and the project's quota; one at a
   * time per project in this manager, so two creates cannot both take the last slot.
   */
  async createInProject(
    access: RequestAccess | undefined,
    projectName: string | undefined,
    create: (admit: (need: { cpus: number; memoryMiB: number; diskGiB: number }) => Promise<void>) => Promise<VmRecord>,
  ): Promise<VmRecord> {
    const userName = access?.principal.user;
    const user = userName ? await this.o.store.users.tryGetByName(userName) : undefined;
    const name = projectName ?? user?.defaultProject ?? undefined;
    if (access && !access.global) {
      const allowed = access.grants.some((g) => g.scope === '*' || (name !== undefined && g.scope === `project:${name}`));
      if (!allowed) throw name === undefined ? errors.forbidden(`User "${access.principal.user}" must name a project to create a VM in`) : errors.notFound('project', name);
    }
    if (name === undefined) return create(async () => undefined);
    const project = await this.o.store.projects.tryFind(name);
    if (!project) throw errors.notFound('project', name);
    return this.inProjectLock(project.id, async () => {
      const vm = await create((need) => this.checkQuota(project, { vms: 1, ...need }));
      await this.o.store.projects.assignVm(vm.id, project.id);
      return vm;
    });
  }

  /** Checks a change of a VM's CPUs or memory against its project's quota, then runs `edit`. */
  async editInProject<T>(vm: VmRecord, next: { cpus: number; memoryMiB: number }, edit: () => Promise<T>): Promise<T> {
    const projectId = (await this.o.store.projects.projectsOfVms([vm.id])).get(vm.id);
    if (!projectId) return edit();
    const project = await this.o.store.projects.get(projectId);
    const spec = vm.spec as { cpus?: number; memoryMiB?: number };
    return this.inProjectLock(projectId, async () => {
      await this.checkQuota(project, { vms: 0, cpus: next.cpus - (spec.cpus ?? 1), memoryMiB: next.memoryMiB - (spec.memoryMiB ?? 0), diskGiB: 0 });
      return edit();
    });
  }

  private async inProjectLock<T>(projectId: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.quotaLocks.get(projectId) ?? Promise.resolve();
    const run = previous.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.quotaLocks.set(projectId, tail);
    void tail.then(() => {
      if (this.quotaLocks.get(projectId) === tail) this.quotaLocks.delete(projectId);
    });
    return run;
  }

  /** What a project's VMs use. */
  async usage(project: ProjectRecord): Promise<Required<ProjectQuota>> {
    const ids = await this.o.store.projects.vmIds(project.id);
    const vms = await this.o.store.vms.getMany(ids);
    const total = { vms: vms.length, cpus: 0, memoryMiB: 0, diskGiB: 0 };
    for (const vm of vms) {
      const spec = vm.spec as { cpus?: number; memoryMiB?: number; diskSizeBytes?: number };
      total.cpus += spec.cpus ?? 1;
      total.memoryMiB += spec.memoryMiB ?? 0;
      total.diskGiB += Math.ceil((spec.diskSizeBytes ?? 0) / 1024 ** 3);
    }
    return total;
  }

  private async checkQuota(project: ProjectRecord, delta: Required<ProjectQuota>): Promise<void> {
    const used = await this.usage(project);
    for (const key of ['vms', 'cpus', 'memoryMiB', 'diskGiB'] as const) {
      const limit = project.quota[key];
      if (limit !== undefined && delta[key] > 0 && used[key] + delta[key] > limit) {
        throw errors.conflict(`Project "${project.name}" is over its ${key} quota: ${used[key]} used + ${delta[key]} asked > ${limit}`, { project: project.name, quota: key, used: used[key], asked: delta[key], limit });
      }
    }
  }

  // ------------------------------------------------------------ users, roles, tokens

  async createUser(input: { name: string; password?: string; bindings?: RoleBinding[]; defaultProject?: string }): Promise<UserRecord> {
    if (!userNamePattern.test(input.name)) throw errors.invalid(`Invalid user name "${input.name}": letters, digits and "_.@-", at most 63`, { field: 'name' });
    await this.checkBindings(input.bindings ?? []);
    if (input.defaultProject) await this.o.store.projects.getByName(input.defaultProject);
    return this.o.store.users.create({
      name: input.name,
      source: 'local',
      passwordHash: input.password ? await hashPassword(input.password) : null,
      bindings: input.bindings ?? [],
      defaultProject: input.defaultProject ?? null,
    });
  }

  async editUser(ref: string, patch: { password?: string; bindings?: RoleBinding[]; disabled?: boolean; defaultProject?: string | null }): Promise<UserRecord> {
    const user = await this.o.store.users.find(ref);
    // The admin token (drover up, the CLI) must keep working: the admin user stays enabled and an admin over everything.
    if (user.name === adminUser && (patch.disabled === true || (patch.bindings && !patch.bindings.some((b) => b.role === 'admin' && b.scope === '*')))) {
      throw errors.conflict('The admin user cannot be disabled nor lose the admin role over "*" (it holds the admin token)');
    }
    if (patch.bindings) await this.checkBindings(patch.bindings);
    if (patch.password !== undefined && user.source !== 'local') throw errors.invalid(`User "${user.name}" comes from LDAP: change the password in the directory`);
    if (patch.defaultProject) await this.o.store.projects.getByName(patch.defaultProject);
    return this.o.store.users.update(user.id, {
      ...(patch.password !== undefined ? { passwordHash: await hashPassword(patch.password) } : {}),
      ...(patch.bindings ? { bindings: patch.bindings } : {}),
      ...(patch.disabled !== undefined ? { disabled: patch.disabled } : {}),
      ...(patch.defaultProject !== undefined ? { defaultProject: patch.defaultProject } : {}),
    });
  }

  async deleteUser(ref: string): Promise<UserRecord> {
    const user = await this.o.store.users.find(ref);
    if (user.name === adminUser) throw errors.conflict('The admin user cannot be deleted (it holds the admin token); disable other users instead');
    for (const token of await this.tokensOf(user.name)) if (token.revokedAt === null) await this.o.store.apiTokens.revoke(token.id);
    return this.o.store.users.delete(user.id);
  }

  private async checkBindings(bindings: readonly RoleBinding[]): Promise<void> {
    for (const binding of bindings) {
      checkScope(binding.scope);
      if (!builtInRoles[binding.role] && !(await this.o.store.roles.tryGetByName(binding.role))) throw errors.notFound('role', binding.role);
      if (binding.scope.startsWith('project:')) await this.o.store.projects.getByName(binding.scope.slice(8));
    }
  }

  async createRole(input: { name: string; description?: string; permissions: string[] }) {
    if (builtInRoles[input.name]) throw errors.conflict(`Role "${input.name}" is built in`);
    if (!userNamePattern.test(input.name)) throw errors.invalid(`Invalid role name "${input.name}"`, { field: 'name' });
    checkPermissionPatterns(input.permissions);
    return this.o.store.roles.create(input);
  }

  async editRole(ref: string, patch: { description?: string; permissions?: string[] }) {
    if (builtInRoles[ref]) throw errors.conflict(`Role "${ref}" is built in and cannot be changed`);
    if (patch.permissions) checkPermissionPatterns(patch.permissions);
    const role = await this.o.store.roles.find(ref);
    return this.o.store.roles.update(role.id, patch);
  }

  async deleteRole(ref: string) {
    if (builtInRoles[ref]) throw errors.conflict(`Role "${ref}" is built in and cannot be deleted`);
    const role = await this.o.store.roles.find(ref);
    const users = await this.o.store.users.list({ limit: 1000 });
    const holders = users.items.filter((u) => u.bindings.some((b) => b.role === role.name)).map((u) => u.name);
    if (holders.length > 0) throw errors.conflict(`Role "${role.name}" is held by ${holders.join(', ')}`, { users: holders });
    return this.o.store.roles.delete(role.id);
  }

  async tokensOf(user: string): Promise<ApiTokenRecord[]> {
    return (await this.o.store.apiTokens.list({ limit: 1000, filter: { userName: user } })).items;
  }

  /** A new token: its secret (shown once) and its record. Its roles and projects must be ones the user holds. */
  async createToken(input: NewTokenInput): Promise<{ token: string; record: ApiTokenRecord }> {
    const user = await this.o.store.users.getByName(input.user);
    for (const role of input.roles ?? []) {
      if (!user.bindings.some((b) => b.role === role)) throw errors.invalid(`User "${user.name}" does not hold role "${role}"`, { field: 'roles', value: role });
    }
    for (const project of input.projects ?? []) await this.o.store.projects.getByName(project);
    const token = `drv_${randomBytes(32).toString('base64url')}`;
    const scope: ApiTokenScope | null = input.roles || input.projects ? { ...(input.roles ? { roles: input.roles } : {}), ...(input.projects ? { projects: input.projects } : {}) } : null;
    const record = await this.o.store.apiTokens.create({
      name: input.name,
      tokenHash: tokenHash(token),
      role: input.roles?.join(',') || '*',
      userName: user.name,
      scope,
      expiresAt: input.expiresInSeconds ? new Date(this.now() + input.expiresInSeconds * 1000).toISOString() : null,
    });
    return { token, record };
  }
}

/** A token's scope narrows its user's grants: only its roles, and only within its projects. */
export function restrictGrants(all: Grant[], scope: ApiTokenScope | null): Grant[] {
  if (!scope) return all;
  let out = scope.roles ? all.filter((grant) => scope.roles!.includes(grant.role)) : all;
  if (scope.projects) {
    const projects = scope.projects;
    out = out.flatMap((grant) => {
      if (grant.scope === '*') return projects.map((p) => ({ ...grant, scope: `project:${p}` }));
      if (grant.scope.startsWith('project:')) return projects.includes(grant.scope.slice(8)) ? [grant] : [];
      return [grant];
    });
  }
  return out;
}

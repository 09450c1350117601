import { Type } from 'typebox';
import { errors } from '@drover/core';
import {
  ApiToken,
  ApiTokenCreate,
  ApiTokenCreated,
  AuditQuery,
  AuditRecord,
  AuditVerification,
  ErrorBody,
  Project,
  ProjectCreate,
  ProjectEdit,
  Role,
  RoleCreate,
  RoleEdit,
  User,
  UserCreate,
  UserEdit,
} from '@drover/api';
import type { FastifyRequest } from 'fastify';
import type { ManagerApp } from '../http/app-type.js';
import type { ApiTokenRecord, ProjectRecord, Store, UserRecord } from '../store/index.js';
import type { AccessService } from './access.service.js';
import { builtInRoles } from './permissions.js';
import './fastify-types.js';

const errorResponses = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 412: ErrorBody };
const NameRef = Type.Object({ name: Type.String({ minLength: 1, maxLength: 63, pattern: '^[A-Za-z0-9][A-Za-z0-9_.@-]*$' }) }, { additionalProperties: false });
const IdRef = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) }, { additionalProperties: false });
const Items = <T extends Parameters<typeof Type.Array>[0]>(item: T) => Type.Object({ items: Type.Array(item) });

export function publicUser(user: UserRecord) {
  return {
    id: user.id,
    name: user.name,
    source: user.source,
    bindings: user.bindings,
    defaultProject: user.defaultProject,
    disabled: user.disabled,
    hasPassword: user.passwordHash !== null,
    groupsCheckedAt: user.groupsCheckedAt,
    createdAt: user.createdAt,
  };
}

export function publicToken(token: ApiTokenRecord) {
  return {
    id: token.id,
    name: token.name,
    user: token.userName,
    roles: token.scope?.roles ?? null,
    projects: token.scope?.projects ?? null,
    createdAt: token.createdAt,
    expiresAt: token.expiresAt,
    revokedAt: token.revokedAt,
  };
}

/**
 * Users, roles, projects, API tokens and the audit log. Thin: the checks are
 * in AccessService; these routes only add "whose": a caller without
 * `user.read`/`user.write` over everything sees and manages only their own tokens.
 */
export async function registerAccessRoutes(app: ManagerApp, o: { store: Store; access: AccessService }): Promise<void> {
  const { store, access } = o;
  const caller = (request: FastifyRequest) => {
    if (!request.principal) throw errors.unauthenticated();
    return request.principal;
  };
  /** Whether the caller holds `permission` over everything (not just their own things). */
  const mayAll = (request: FastifyRequest, permission: string) => {
    try {
      return access.authorize(caller(request), permission).global;
    } catch {
      return false;
    }
  };
  const publicProject = async (project: ProjectRecord) => ({
    id: project.id,
    name: project.name,
    description: project.description,
    quota: project.quota,
    usage: await access.usage(project),
    createdAt: project.createdAt,
  });
  const projectVisible = (request: FastifyRequest, project: ProjectRecord) =>
    request.access?.global !== false || request.access.grants.some((g) => g.scope === '*' || g.scope === `project:${project.name}`);

  // ---------------------------------------------------------------- users
  app.get('/api/v1/users', { config: { permission: 'user.read' }, schema: { tags: ['access'], summary: 'List users (local and those LDAP signed in)', response: { 200: Items(User), ...errorResponses } } }, async () => ({
    items: (await store.users.list({ limit: 1000 })).items.map(publicUser),
  }));
  app.post('/api/v1/users', { config: { permission: 'user.write' }, schema: { tags: ['access'], summary: 'Create a local user (scrypt-hashed password) with roles over scopes', body: UserCreate, response: { 201: User, ...errorResponses } } }, async (request, reply) =>
    reply.status(201).send(publicUser(await access.createUser(request.body))),
  );
  app.get('/api/v1/users/:name', { config: { permission: 'user.read' }, schema: { tags: ['access'], summary: 'Show a user', params: NameRef, response: { 200: User, ...errorResponses } } }, async (request) =>
    publicUser(await store.users.find(request.params.name)),
  );
  app.patch('/api/v1/users/:name', { config: { permission: 'user.write' }, schema: { tags: ['access'], summary: 'Change a user\'s password, roles, default project, or disable them (takes effect on their next request)', params: NameRef, body: UserEdit, response: { 200: User, ...errorResponses } } }, async (request) =>
    publicUser(await access.editUser(request.params.name, request.body)),
  );
  app.delete('/api/v1/users/:name', { config: { permission: 'user.write' }, schema: { tags: ['access'], summary: 'Delete a user; their tokens are revoked and their sessions refused', params: NameRef, response: { 204: Type.Null(), ...errorResponses } } }, async (request, reply) => {
    await access.deleteUser(request.params.name);
    return reply.status(204).send(null);
  });

  // ---------------------------------------------------------------- roles
  const builtIns = () => Object.values(builtInRoles).map((r) => ({ name: r.name, description: r.description, permissions: r.permissions, builtIn: true, ownObjectsOnly: r.ownObjectsOnly ?? false }));
  const customRole = (r: { name: string; description: string; permissions: string[] }) => ({ name: r.name, description: r.description, permissions: r.permissions, builtIn: false, ownObjectsOnly: false });
  app.get('/api/v1/roles', { config: { permission: 'role.read' }, schema: { tags: ['access'], summary: 'List roles: the built-in ones and custom ones', response: { 200: Items(Role), ...errorResponses } } }, async () => ({
    items: [...builtIns(), ...(await store.roles.list({ limit: 1000 })).items.map(customRole)],
  }));
  app.post('/api/v1/roles', { config: { permission: 'role.write' }, schema: { tags: ['access'], summary: 'Create a custom role: a set of permission patterns', body: RoleCreate, response: { 201: Role, ...errorResponses } } }, async (request, reply) =>
    reply.status(201).send(customRole(await access.createRole(request.body))),
  );
  app.get('/api/v1/roles/:name', { config: { permission: 'role.read' }, schema: { tags: ['access'], summary: 'Show a role', params: NameRef, response: { 200: Role, ...errorResponses } } }, async (request) => {
    const builtIn = builtIns().find((r) => r.name === request.params.name);
    return builtIn ?? customRole(await store.roles.find(request.params.name));
  });
  app.patch('/api/v1/roles/:name', { config: { permission: 'role.write' }, schema: { tags: ['access'], summary: 'Change a custom role', params: NameRef, body: RoleEdit, response: { 200: Role, ...errorResponses } } }, async (request) =>
    customRole(await access.editRole(request.params.name, request.body)),
  );
  app.delete('/api/v1/roles/:name', { config: { permission: 'role.write' }, schema: { tags: ['access'], summary: 'Delete a custom role nobody holds', params: NameRef, response: { 204: Type.Null(), ...errorResponses } } }, async (request, reply) => {
    await access.deleteRole(request.params.name);
    return reply.status(204).send(null);
  });

  // ---------------------------------------------------------------- projects
  app.get('/api/v1/projects', { config: { permission: 'project.read' }, schema: { tags: ['access'], summary: 'List projects (those within the caller\'s scope) with quota and usage', response: { 200: Items(Project), ...errorResponses } } }, async (request) => {
    const all = (await store.projects.list({ limit: 1000 })).items.filter((p) => projectVisible(request, p));
    return { items: await Promise.all(all.map(publicProject)) };
  });
  app.post('/api/v1/projects', { config: { permission: 'project.write' }, schema: { tags: ['access'], summary: 'Create a project (tenant) with quotas on VMs, vCPUs, memory and disk', body: ProjectCreate, response: { 201: Project, ...errorResponses } } }, async (request, reply) =>
    reply.status(201).send(await publicProject(await store.projects.create(request.body))),
  );
  app.get('/api/v1/projects/:name', { config: { permission: 'project.read' }, schema: { tags: ['access'], summary: 'Show a project with its quota and usage', params: NameRef, response: { 200: Project, ...errorResponses } } }, async (request) => {
    const project = await store.projects.find(request.params.name);
    if (!projectVisible(request, project)) {
      request.auditDenial = `project "${project.name}" is outside the caller's scope`;
      throw errors.notFound('project', request.params.name);
    }
    return publicProject(project);
  });
  app.patch('/api/v1/projects/:name', { config: { permission: 'project.write' }, schema: { tags: ['access'], summary: 'Change a project\'s description or quota (a lower quota does not remove VMs; it refuses new ones)', params: NameRef, body: ProjectEdit, response: { 200: Project, ...errorResponses } } }, async (request) => {
    const project = await store.projects.find(request.params.name);
    return publicProject(await store.projects.update(project.id, request.body));
  });
  app.delete('/api/v1/projects/:name', { config: { permission: 'project.write' }, schema: { tags: ['access'], summary: 'Delete a project that holds no VM', params: NameRef, response: { 204: Type.Null(), ...errorResponses } } }, async (request, reply) => {
    const project = await store.projects.find(request.params.name);
    const count = await store.projects.vmCount(project.id);
    if (count > 0) throw errors.conflict(`Project "${project.name}" still holds ${count} VM(s)`, { vms: count });
    await store.projects.delete(project.id);
    return reply.status(204).send(null);
  });

  // ---------------------------------------------------------------- tokens
  app.get('/api/v1/tokens', { config: { permission: 'authenticated' }, schema: { tags: ['access'], summary: 'List API tokens: the caller\'s own, or everyone\'s with user.read (never their secrets)', response: { 200: Items(ApiToken), ...errorResponses } } }, async (request) => {
    const tokens = mayAll(request, 'user.read') ? (await store.apiTokens.list({ limit: 1000 })).items : await access.tokensOf(caller(request).user);
    return { items: tokens.map(publicToken) };
  });
  app.post('/api/v1/tokens', { config: { permission: 'authenticated' }, schema: { tags: ['access'], summary: 'Make an API token (hashed at rest; shown once), limited to some roles and projects, expiring', body: ApiTokenCreate, response: { 201: ApiTokenCreated, ...errorResponses } } }, async (request, reply) => {
    const me = caller(request).user;
    const user = request.body.user ?? me;
    if (user !== me && !mayAll(request, 'user.write')) throw errors.forbidden(`User "${me}" may make tokens only for themselves`);
    const { token, record } = await access.createToken({ ...request.body, user });
    return reply.status(201).send({ token, info: publicToken(record) });
  });
  app.delete('/api/v1/tokens/:id', { config: { permission: 'authenticated' }, schema: { tags: ['access'], summary: 'Revoke an API token (refused from now on)', params: IdRef, response: { 200: ApiToken, ...errorResponses } } }, async (request) => {
    const token = await store.apiTokens.tryGet(request.params.id);
    if (!token || (token.userName !== caller(request).user && !mayAll(request, 'user.write'))) throw errors.notFound('API token', request.params.id);
    return publicToken(await store.apiTokens.revoke(token.id));
  });

  // ---------------------------------------------------------------- audit
  const auditQuery = (q: AuditQuery) => ({
    ...(q.actor ? { actor: q.actor } : {}),
    ...(q.decision ? { decision: q.decision } : {}),
    ...(q.action ? { action: q.action } : {}),
    ...(q.since ? { since: new Date(q.since).toISOString() } : {}),
    ...(q.until ? { until: new Date(q.until).toISOString() } : {}),
    ...(q.after !== undefined ? { after: q.after } : {}),
  });
  app.get('/api/v1/audit', { config: { permission: 'audit.read' }, schema: { tags: ['audit'], summary: 'Audit records, oldest first: every change and every denial (filters: actor, decision, action, since, until; page with after=<last seq>)', querystring: AuditQuery, response: { 200: Items(AuditRecord), ...errorResponses } } }, async (request) => ({
    items: await store.audit.list({ ...auditQuery(request.query), limit: request.query.limit ?? 100 }),
  }));
  app.get('/api/v1/audit/export', { config: { permission: 'audit.read' }, schema: { tags: ['audit'], summary: 'The audit log as JSON lines (one record per line, with its hash chain), same filters', querystring: AuditQuery } }, async (request, reply) => {
    const lines: string[] = [];
    let after = request.query.after ?? 0;
    const max = request.query.limit ?? Number.MAX_SAFE_INTEGER;
    for (;;) {
      const page = await store.audit.list({ ...auditQuery(request.query), after, limit: 1000 });
      for (const record of page) if (lines.length < max) lines.push(JSON.stringify(record));
      if (page.length < 1000 || lines.length >= max) break;
      after = page[page.length - 1]!.seq;
    }
    return reply.type('application/x-ndjson; charset=utf-8').send(lines.length ? `${lines.join('\n')}\n` : '');
  });
  app.get('/api/v1/audit/verify', { config: { permission: 'audit.read' }, schema: { tags: ['audit'], summary: 'Check the hash chain of the whole audit log: ok, or the first record modified, missing or out of place', response: { 200: AuditVerification, ...errorResponses } } }, async () =>
    store.audit.verify(),
  );
}

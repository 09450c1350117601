import { Type, type Static } from 'typebox';
import { Name, StringEnum } from './common.js';

/**
 * Users, roles, projects, API tokens and the audit log (`/api/v1/users`,
 * `/roles`, `/projects`, `/tokens`, `/audit`).
 */

const Ts = Type.String({ description: 'ISO 8601' });
export const UserName = Type.String({ minLength: 1, maxLength: 63, pattern: '^[A-Za-z0-9][A-Za-z0-9_.@-]*$', description: 'Letters, digits and "_.@-"' });
export const Scope = Type.String({ minLength: 1, maxLength: 80, pattern: '^(\\*|project:[A-Za-z0-9][A-Za-z0-9_.-]*|vm:[0-9a-f-]{36})$', description: '"*" (everything), "project:<name>" or "vm:<id>"' });
export const RoleBinding = Type.Object({ role: UserName, scope: Scope }, { additionalProperties: false, description: 'A role held over a scope' });
export type RoleBinding = Static<typeof RoleBinding>;
const Password = Type.String({ minLength: 8, maxLength: 256, description: 'At least 8 characters' });

export const User = Type.Object({
  id: Type.String(),
  name: Type.String(),
  source: StringEnum(['local', 'ldap']),
  bindings: Type.Array(RoleBinding),
  defaultProject: Type.Union([Type.String(), Type.Null()]),
  disabled: Type.Boolean(),
  hasPassword: Type.Boolean(),
  groupsCheckedAt: Type.Union([Ts, Type.Null()]),
  createdAt: Ts,
});
export type User = Static<typeof User>;
export const UserCreate = Type.Object(
  { name: UserName, password: Type.Optional(Password), bindings: Type.Optional(Type.Array(RoleBinding, { maxItems: 64 })), defaultProject: Type.Optional(Name) },
  { additionalProperties: false },
);
export const UserEdit = Type.Object(
  {
    password: Type.Optional(Password),
    bindings: Type.Optional(Type.Array(RoleBinding, { maxItems: 64 })),
    disabled: Type.Optional(Type.Boolean()),
    defaultProject: Type.Optional(Type.Union([Name, Type.Null()])),
  },
  { additionalProperties: false },
);

const PermissionPattern = Type.String({ minLength: 1, maxLength: 64, pattern: '^!?[a-z*][a-z0-9*.-]*$', description: '"area.verb", "area.*", "*.verb" or "*"; a leading "!" takes away' });
export const Role = Type.Object({
  name: Type.String(),
  description: Type.String(),
  permissions: Type.Array(Type.String()),
  builtIn: Type.Boolean(),
  ownObjectsOnly: Type.Boolean(),
});
export type Role = Static<typeof Role>;
export const RoleCreate = Type.Object(
  { name: UserName, description: Type.Optional(Type.String({ maxLength: 255 })), permissions: Type.Array(PermissionPattern, { minItems: 1, maxItems: 128 }) },
  { additionalProperties: false },
);
export const RoleEdit = Type.Object(
  { description: Type.Optional(Type.String({ maxLength: 255 })), permissions: Type.Optional(Type.Array(PermissionPattern, { minItems: 1, maxItems: 128 })) },
  { additionalProperties: false },
);

export const ProjectQuota = Type.Object(
  {
    vms: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000 })),
    cpus: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000_000 })),
    memoryMiB: Type.Optional(Type.Integer({ minimum: 0, maximum: 1024 ** 3 })),
    diskGiB: Type.Optional(Type.Integer({ minimum: 0, maximum: 1024 ** 3 })),
  },
  { additionalProperties: false, description: 'Limits; an absent one is no limit' },
);
export const Project = Type.Object({
  id: Type.String(),
  name: Type.String(),
  description: Type.String(),
  quota: ProjectQuota,
  usage: Type.Object({ vms: Type.Integer(), cpus: Type.Integer(), memoryMiB: Type.Integer(), diskGiB: Type.Integer() }),
  createdAt: Ts,
});
export type Project = Static<typeof Project>;
export const ProjectCreate = Type.Object({ name: Name, description: Type.Optional(Type.String({ maxLength: 255 })), quota: Type.Optional(ProjectQuota) }, { additionalProperties: false });
export const ProjectEdit = Type.Object({ description: Type.Optional(Type.String({ maxLength: 255 })), quota: Type.Optional(ProjectQuota) }, { additionalProperties: false });

export const ApiToken = Type.Object({
  id: Type.String(),
  name: Type.String(),
  user: Type.Union([Type.String(), Type.Null()]),
  roles: Type.Union([Type.Array(Type.String()), Type.Null()], { description: 'null: all of its user\'s roles' }),
  projects: Type.Union([Type.Array(Type.String()), Type.Null()], { description: 'null: not limited to projects' }),
  createdAt: Ts,
  expiresAt: Type.Union([Ts, Type.Null()]),
  revokedAt: Type.Union([Ts, Type.Null()]),
});
export type ApiToken = Static<typeof ApiToken>;
export const ApiTokenCreate = Type.Object(
  {
    name: Name,
    user: Type.Optional(UserName),
    roles: Type.Optional(Type.Array(UserName, { minItems: 1, maxItems: 16 })),
    projects: Type.Optional(Type.Array(Name, { minItems: 1, maxItems: 64 })),
    expiresInSeconds: Type.Optional(Type.Integer({ minimum: 60, maximum: 10 * 365 * 86_400 })),
  },
  { additionalProperties: false },
);
export const ApiTokenCreated = Type.Object({ token: Type.String({ description: 'Shown once; send it as "Authorization: Bearer <token>"' }), info: ApiToken });

export const AuditRecord = Type.Object({
  seq: Type.Integer(),
  at: Ts,
  actor: Type.String(),
  action: Type.String(),
  target: Type.String(),
  source: Type.String(),
  decision: StringEnum(['allow', 'deny', 'error']),
  reason: Type.String(),
  status: Type.Integer(),
  prevHash: Type.String(),
  hash: Type.String(),
});
export type AuditRecord = Static<typeof AuditRecord>;
const IsoTime = Type.String({ pattern: '^\\d{4}-\\d{2}-\\d{2}(T\\d{2}:\\d{2}(:\\d{2}(\\.\\d+)?)?(Z|[+-]\\d{2}:\\d{2})?)?$', description: 'ISO 8601 date or time' });
export const AuditQuery = Type.Object(
  {
    actor: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
    decision: Type.Optional(StringEnum(['allow', 'deny', 'error'])),
    action: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    since: Type.Optional(IsoTime),
    until: Type.Optional(IsoTime),
    after: Type.Optional(Type.Integer({ minimum: 0 })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
  },
  { additionalProperties: false },
);
export type AuditQuery = Static<typeof AuditQuery>;
export const AuditVerification = Type.Object({
  ok: Type.Boolean(),
  checked: Type.Integer(),
  firstBad: Type.Optional(Type.Object({ seq: Type.Integer(), reason: Type.String() })),
});

export const SessionCreate = Type.Union(
  [
    Type.Object({ token: Type.String({ minLength: 1, maxLength: 512 }) }, { additionalProperties: false }),
    Type.Object({ username: UserName, password: Type.String({ minLength: 1, maxLength: 256 }) }, { additionalProperties: false }),
  ],
  { description: 'Sign in with an API token (the admin token of `drover up`), or with a user name and password (local or LDAP)' },
);
export type SessionCreate = Static<typeof SessionCreate>;

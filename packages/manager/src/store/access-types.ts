import type { OneOrMany } from './types.js';

/**
 * Records of access control: users, custom roles, projects (tenants) and the
 * audit log. Built-in roles live in code (access/roles.ts), not here.
 */

/** A role granted over a scope: `*` (everything), `project:<name>` or `<kind>:<id>` (one object). */
export interface RoleBinding {
  role: string;
  scope: string;
}

export const userSources = ['local', 'ldap'] as const;
export type UserSource = (typeof userSources)[number];

export interface UserRecord {
  id: string;
  name: string;
  source: UserSource;
  /** scrypt hash of a local user's password (null: no password login). */
  passwordHash: string | null;
  bindings: RoleBinding[];
  /** An LDAP user's DN, as found at the last login. */
  ldapDn: string | null;
  /** When an LDAP user's groups were last read (their bindings come from them). */
  groupsCheckedAt: string | null;
  /** The project new VMs of this user go to when the request names none. */
  defaultProject: string | null;
  disabled: boolean;
  rev: number;
  createdAt: string;
  updatedAt: string;
}

export interface NewUser {
  name: string;
  source: UserSource;
  passwordHash?: string | null;
  bindings?: RoleBinding[];
  ldapDn?: string | null;
  groupsCheckedAt?: string | null;
  defaultProject?: string | null;
  disabled?: boolean;
}

export type UserPatch = Partial<Omit<NewUser, 'name' | 'source'>>;

export interface UserFilter {
  source?: OneOrMany<string>;
  name?: string;
}

export interface RoleRecord {
  id: string;
  name: string;
  description: string;
  /** Permission patterns: `vm.read`, `vm.*`, `*.read`, `*`; `!pattern` takes away. */
  permissions: string[];
  rev: number;
  createdAt: string;
  updatedAt: string;
}

export interface NewRole {
  name: string;
  description?: string;
  permissions: string[];
}

export interface RoleFilter {
  name?: string;
}

/** Limits of a project; an absent limit is no limit. */
export interface ProjectQuota {
  vms?: number;
  cpus?: number;
  memoryMiB?: number;
  diskGiB?: number;
}

export interface ProjectRecord {
  id: string;
  name: string;
  description: string;
  quota: ProjectQuota;
  rev: number;
  createdAt: string;
  updatedAt: string;
}

export interface NewProject {
  name: string;
  description?: string;
  quota?: ProjectQuota;
}

export interface ProjectFilter {
  name?: string;
}

export const auditDecisions = ['allow', 'deny', 'error'] as const;
export type AuditDecision = (typeof auditDecisions)[number];

/** One record of the audit log. `hash` = sha256 of the previous hash and this record's fields. */
export interface AuditRecord {
  seq: number;
  at: string;
  actor: string;
  action: string;
  target: string;
  source: string;
  decision: AuditDecision;
  reason: string;
  status: number;
  prevHash: string;
  hash: string;
}

export type NewAuditRecord = Omit<AuditRecord, 'seq' | 'at' | 'prevHash' | 'hash'>;

export interface AuditQuery {
  actor?: string;
  decision?: AuditDecision;
  /** Substring of the action (`POST /api/v1/vms`, `session.login`, ...). */
  action?: string;
  since?: string;
  until?: string;
  /** Records with seq greater than this. */
  after?: number;
  limit?: number;
}

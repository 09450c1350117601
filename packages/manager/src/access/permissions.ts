import { errors } from '@drover/core';
import type { RoleBinding } from '../store/access-types.js';

/**
 * The authorization model. Every route declares one permission `<area>.<verb>`
 * (`vm.read`, `vm.write`, `host.power`, ...) or one of two markers:
 * `public` (no credentials: health, agent join, sign-in) and `authenticated`
 * (any signed-in caller: who am I, sign out, tickets, own tokens).
 *
 * A role is a set of permission patterns (`vm.*`, `*.read`, `*`; `!pattern`
 * takes away); a user holds roles over scopes: `*` (everything),
 * `project:<name>` (the objects of one project) or `vm:<id>` (one object).
 */
export const publicPermission = 'public';
export const authenticatedPermission = 'authenticated';

const permissionPattern = /^[a-z][a-z0-9-]*\.[a-z][a-z0-9-]*$/;
const patternPattern = /^!?(\*|[a-z][a-z0-9-]*\.(\*|[a-z][a-z0-9-]*)|\*\.[a-z][a-z0-9-]*)$/;

/** Whether `permission` is a well-formed route permission. */
export function isRoutePermission(permission: unknown): permission is string {
  return typeof permission === 'string' && (permission === publicPermission || permission === authenticatedPermission || permissionPattern.test(permission));
}

export interface RoleDefinition {
  name: string;
  description: string;
  permissions: string[];
  /** The role reaches only objects the user owns (VMs they created), whatever the binding's scope. */
  ownObjectsOnly?: boolean;
  builtIn: boolean;
}

/** The built-in roles. Custom roles are stored and may not take these names. */
export const builtInRoles: Record<string, RoleDefinition> = {
  admin: { name: 'admin', description: 'Everything, users and roles included', permissions: ['*'], builtIn: true },
  operator: {
    name: 'operator',
    description: 'Runs the cluster: hosts, VMs, storage, images, networks; not users, roles, projects or policies',
    permissions: ['*', '!user.write', '!role.write', '!project.write', '!policy.write', '!audit.*'],
    builtIn: true,
  },
  auditor: { name: 'auditor', description: 'Reads everything, the audit log included; changes nothing', permissions: ['*.read'], builtIn: true },
  'lab-user': {
    name: 'lab-user',
    description: 'Creates and uses their own VMs and labs only; reads the image library',
    // Listed one by one: a new VM permission (moving VMs between hosts, security labels) is not theirs unless added here.
    permissions: ['vm.read', 'vm.write', 'vm.console', 'lab.*', 'image.read', 'operation.read', 'operation.write', 'project.read'],
    ownObjectsOnly: true,
    builtIn: true,
  },
};

export function checkPermissionPatterns(patterns: readonly string[]): void {
  if (patterns.length === 0) throw errors.invalid('A role needs at least one permission pattern');
  for (const pattern of patterns) {
    if (!patternPattern.test(pattern)) throw errors.invalid(`Invalid permission pattern "${pattern}": expected "area.verb", "area.*", "*.verb" or "*", optionally with a leading "!"`, { field: 'permissions', value: pattern });
  }
}

export function checkScope(scope: string): void {
  if (scope === '*' || /^project:[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(scope) || /^vm:[0-9a-f-]{36}$/.test(scope)) return;
  throw errors.invalid(`Invalid scope "${scope}": expected "*", "project:<name>" or "vm:<id>"`, { field: 'scope', value: scope });
}

function matches(pattern: string, permission: string): boolean {
  if (pattern === '*') return true;
  const [pArea, pVerb] = pattern.split('.') as [string, string];
  const [area, verb] = permission.split('.') as [string, string];
  return (pArea === '*' || pArea === area) && (pVerb === '*' || pVerb === verb);
}

/** Whether a set of patterns grants `permission`: some pattern matches and no `!pattern` does. */
export function grants(patterns: readonly string[], permission: string): boolean {
  let granted = false;
  for (const pattern of patterns) {
    if (pattern.startsWith('!')) {
      if (matches(pattern.slice(1), permission)) return false;
    } else if (matches(pattern, permission)) granted = true;
  }
  return granted;
}

/** One role over one scope, resolved: what an authorization decision works on. */
export interface Grant {
  role: string;
  permissions: string[];
  scope: string;
  ownObjectsOnly: boolean;
}

/** An object a request addresses, for scope checks. */
export interface ScopedObject {
  kind: 'vm' | 'lab';
  id: string;
  owner: string;
  /** The project's name, or null. */
  project: string | null;
}

/** Whether a grant reaches everything (not one project, object or the user's own objects). */
export function isGlobal(grant: Grant): boolean {
  return grant.scope === '*' && !grant.ownObjectsOnly;
}

/** Whether `grant` reaches `object` for `user`. */
export function covers(grant: Grant, object: ScopedObject, user: string): boolean {
  if (grant.ownObjectsOnly && object.owner !== user) return false;
  if (grant.scope === '*') return true;
  if (grant.scope.startsWith('project:')) return object.project !== null && grant.scope.slice(8) === object.project;
  return grant.scope === `${object.kind}:${object.id}`;
}

/** The grants of `bindings`, dropping those whose role is unknown (a deleted custom role grants nothing). */
export function resolveGrants(bindings: readonly RoleBinding[], customRoles: ReadonlyMap<string, string[]>): Grant[] {
  const out: Grant[] = [];
  for (const binding of bindings) {
    const builtIn = builtInRoles[binding.role];
    const permissions = builtIn?.permissions ?? customRoles.get(binding.role);
    if (!permissions) continue;
    out.push({ role: binding.role, permissions, scope: binding.scope, ownObjectsOnly: builtIn?.ownObjectsOnly ?? false });
  }
  return out;
}

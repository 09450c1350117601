import { writeFile } from 'node:fs/promises';
import { DroverError, errors } from '@drover/core';
import type { ApiToken, AuditRecord, Project, Role, User } from '@drover/api';
import { apiCommand, collectList, positiveInt, type Cli } from '../cli.js';
import { seg } from '../client.js';
import { formatFields, formatTable } from '../output.js';

/** `--role operator` or `--role lab-user@project:red`: a role over a scope (everything by default). */
export function parseBinding(value: string): { role: string; scope: string } {
  const at = value.indexOf('@');
  const binding = at < 0 ? { role: value, scope: '*' } : { role: value.slice(0, at), scope: value.slice(at + 1) };
  if (!binding.role || !binding.scope) throw errors.invalid(`Invalid role "${value}": use ROLE or ROLE@SCOPE (SCOPE: *, project:NAME or vm:ID)`);
  return binding;
}

const bindingsText = (user: User) => user.bindings.map((b) => (b.scope === '*' ? b.role : `${b.role}@${b.scope}`)).join(', ') || '-';

function userTable(users: User[]): string {
  return formatTable(['NAME', 'SOURCE', 'ROLES', 'PROJECT', 'DISABLED'], users.map((u) => [u.name, u.source, bindingsText(u), u.defaultProject ?? '-', u.disabled ? 'yes' : 'no']));
}

function userDetails(user: User): string {
  return formatFields([
    ['Name', user.name],
    ['Source', user.source],
    ['Roles', bindingsText(user)],
    ['Default project', user.defaultProject ?? '-'],
    ['Disabled', user.disabled ? 'yes' : 'no'],
    ['Password', user.hasPassword ? 'set' : '-'],
    ['Groups read', user.groupsCheckedAt ?? '-'],
    ['Created', user.createdAt],
  ]);
}

function tokenTable(tokens: ApiToken[]): string {
  return formatTable(
    ['ID', 'NAME', 'USER', 'ROLES', 'PROJECTS', 'EXPIRES', 'REVOKED'],
    tokens.map((t) => [t.id, t.name, t.user ?? '-', t.roles?.join(',') ?? 'all', t.projects?.join(',') ?? 'all', t.expiresAt ?? 'never', t.revokedAt ?? '-']),
  );
}

function auditTable(records: AuditRecord[]): string {
  return formatTable(['SEQ', 'AT', 'ACTOR', 'SOURCE', 'ACTION', 'STATUS', 'DECISION', 'REASON'], records.map((r) => [String(r.seq), r.at, r.actor, r.source, r.action, String(r.status), r.decision, r.reason.slice(0, 80)]));
}

/** Reads a password from --password-stdin (first line), so it never shows in `ps` or the shell history. */
async function readPassword(stdin: AsyncIterable<string | Buffer> | undefined): Promise<string> {
  if (!stdin) throw errors.invalid('--password-stdin needs the password on standard input');
  let text = '';
  for await (const chunk of stdin) text += chunk.toString();
  const password = text.split('\n')[0]!.replace(/\r$/, '');
  if (password.length < 8) throw errors.invalid('The password must have at least 8 characters');
  return password;
}

/** `drover user|role|project|token|audit`: who may ask, and what they did. */
export function registerAccessCommands(cli: Cli): void {
  // ---------------------------------------------------------------- users
  const user = cli.program.command('user').description('Users: local ones (password) and those an LDAP directory signed in');
  apiCommand(user, 'list', 'List users').alias('ls').action(
    cli.action(async (session) => {
      const { items } = await (await session.client()).get<{ items: User[] }>('/users');
      session.print(items, () => userTable(items));
    }),
  );
  apiCommand(user, 'show <user>', 'Show a user').action(
    cli.action(async (session, [name]) => {
      const found = await (await session.client()).get<User>(`/users/${seg(name!)}`);
      session.print(found, () => userDetails(found));
    }),
  );
  apiCommand(user, 'create <user>', 'Create a local user')
    .option('--role <role[@scope]>', 'a role over a scope (repeatable): admin, operator, auditor, lab-user or a custom role; scope *, project:NAME or vm:ID', collectList)
    .option('--password-stdin', 'read the password (at least 8 characters) from standard input')
    .option('--project <project>', 'the default project of the VMs they create')
    .addHelpText(
      'after',
      `
Examples:
  $ echo 's3cret-pass' | drover user create alice --role operator --password-stdin
  $ drover user create bob --role lab-user@project:class-a --project class-a --password-stdin < pw.txt`,
    )
    .action(
      cli.action<{ role?: string[]; passwordStdin?: boolean; project?: string }>(async (session, [name], options) => {
        const body = {
          name: name!,
          ...(options.role ? { bindings: options.role.map(parseBinding) } : {}),
          ...(options.passwordStdin ? { password: await readPassword(session.ctx.stdin) } : {}),
          ...(options.project ? { defaultProject: options.project } : {}),
        };
        const created = await (await session.client()).post<User>('/users', body);
        session.print(created, () => `Created user ${created.name} (${bindingsText(created)}).\n`);
      }),
    );
  apiCommand(user, 'edit <user>', "Change a user's roles, password, default project, or disable them")
    .option('--role <role[@scope]>', 'replace the roles (repeatable)', collectList)
    .option('--password-stdin', 'set a new password read from standard input')
    .option('--project <project>', 'the default project ("none" to clear it)')
    .option('--disable', 'refuse their sessions and tokens from their next request')
    .option('--enable', 'allow them again')
    .action(
      cli.action<{ role?: string[]; passwordStdin?: boolean; project?: string; disable?: boolean; enable?: boolean }>(async (session, [name], options) => {
        if (options.disable && options.enable) throw errors.invalid('Give at most one of --disable and --enable');
        const body = {
          ...(options.role ? { bindings: options.role.map(parseBinding) } : {}),
          ...(options.passwordStdin ? { password: await readPassword(session.ctx.stdin) } : {}),
          ...(options.project ? { defaultProject: options.project === 'none' ? null : options.project } : {}),
          ...(options.disable ? { disabled: true } : options.enable ? { disabled: false } : {}),
        };
        const updated = await (await session.client()).patch<User>(`/users/${seg(name!)}`, body);
        session.print(updated, () => userDetails(updated));
      }),
    );
  apiCommand(user, 'delete <user>', 'Delete a user (their tokens are revoked)').alias('rm').action(
    cli.action(async (session, [name]) => {
      await (await session.client()).delete(`/users/${seg(name!)}`);
      session.print({ deleted: name }, () => `Deleted user ${name}.\n`);
    }),
  );

  // ---------------------------------------------------------------- roles
  const role = cli.program.command('role').description('Roles: sets of permissions ("area.verb" patterns) held over scopes');
  apiCommand(role, 'list', 'List the built-in and custom roles').alias('ls').action(
    cli.action(async (session) => {
      const { items } = await (await session.client()).get<{ items: Role[] }>('/roles');
      session.print(items, () => formatTable(['NAME', 'BUILT-IN', 'PERMISSIONS', 'DESCRIPTION'], items.map((r) => [r.name, r.builtIn ? 'yes' : 'no', r.permissions.join(' ') + (r.ownObjectsOnly ? ' (own objects only)' : ''), r.description])));
    }),
  );
  apiCommand(role, 'create <role>', 'Create a custom role')
    .requiredOption('--permission <pattern>', 'a permission pattern (repeatable): vm.read, vm.*, *.read, *; a leading ! takes away', collectList)
    .option('--description <text>', 'what the role is for')
    .addHelpText(
      'after',
      `
Permissions are "area.verb": vm.read, vm.write, vm.console, vm.migrate, host.read,
host.write, host.power, storage.read, storage.write, image.read, image.write,
operation.read, operation.write, event.read, user.read, user.write, role.read,
role.write, project.read, project.write, audit.read, policy.read, policy.write, ...
(the OpenAPI document names each route's permission as x-permission).

Example:
  $ drover role create vm-viewer --permission 'vm.read' --permission 'vm.console'`,
    )
    .action(
      cli.action<{ permission: string[]; description?: string }>(async (session, [name], options) => {
        const created = await (await session.client()).post<Role>('/roles', { name: name!, permissions: options.permission, ...(options.description ? { description: options.description } : {}) });
        session.print(created, () => `Created role ${created.name}: ${created.permissions.join(' ')}.\n`);
      }),
    );
  apiCommand(role, 'delete <role>', 'Delete a custom role nobody holds').alias('rm').action(
    cli.action(async (session, [name]) => {
      await (await session.client()).delete(`/roles/${seg(name!)}`);
      session.print({ deleted: name }, () => `Deleted role ${name}.\n`);
    }),
  );

  // ---------------------------------------------------------------- projects
  const project = cli.program.command('project').description('Projects: tenants whose VMs count against quotas');
  const quotaOptions = (command: ReturnType<typeof apiCommand>) =>
    command
      .option('--max-vms <n>', 'at most this many VMs', positiveInt('--max-vms', 0))
      .option('--max-cpus <n>', 'at most this many vCPUs in all', positiveInt('--max-cpus', 0))
      .option('--max-memory <MiB>', 'at most this much memory in all (MiB)', positiveInt('--max-memory', 0))
      .option('--max-disk <GiB>', 'at most this much disk in all (GiB)', positiveInt('--max-disk', 0));
  type QuotaOptions = { maxVms?: number; maxCpus?: number; maxMemory?: number; maxDisk?: number; description?: string };
  const quota = (o: QuotaOptions) => ({
    ...(o.maxVms !== undefined ? { vms: o.maxVms } : {}),
    ...(o.maxCpus !== undefined ? { cpus: o.maxCpus } : {}),
    ...(o.maxMemory !== undefined ? { memoryMiB: o.maxMemory } : {}),
    ...(o.maxDisk !== undefined ? { diskGiB: o.maxDisk } : {}),
  });
  const limit = (used: number, max: number | undefined) => `${used}/${max ?? '∞'}`;
  const projectRow = (p: Project) => [p.name, limit(p.usage.vms, p.quota.vms), limit(p.usage.cpus, p.quota.cpus), limit(p.usage.memoryMiB, p.quota.memoryMiB), limit(p.usage.diskGiB, p.quota.diskGiB), p.description];
  const projectHeaders = ['NAME', 'VMS', 'VCPUS', 'MEMORY MIB', 'DISK GIB', 'DESCRIPTION'];
  apiCommand(project, 'list', 'List projects with usage and quota').alias('ls').action(
    cli.action(async (session) => {
      const { items } = await (await session.client()).get<{ items: Project[] }>('/projects');
      session.print(items, () => formatTable(projectHeaders, items.map(projectRow)));
    }),
  );
  apiCommand(project, 'show <project>', 'Show a project with usage and quota').action(
    cli.action(async (session, [name]) => {
      const found = await (await session.client()).get<Project>(`/projects/${seg(name!)}`);
      session.print(found, () => formatTable(projectHeaders, [projectRow(found)]));
    }),
  );
  quotaOptions(apiCommand(project, 'create <project>', 'Create a project'))
    .option('--description <text>', 'what the project is')
    .addHelpText('after', `\nExample:\n  $ drover project create class-a --max-vms 20 --max-cpus 40 --max-memory 20480\n  $ drover vm create web1 --image web --project class-a`)
    .action(
      cli.action<QuotaOptions>(async (session, [name], options) => {
        const created = await (await session.client()).post<Project>('/projects', { name: name!, quota: quota(options), ...(options.description ? { description: options.description } : {}) });
        session.print(created, () => `Created project ${created.name}.\n`);
      }),
    );
  quotaOptions(apiCommand(project, 'edit <project>', "Change a project's quota (a lower one refuses new VMs, removes none)"))
    .option('--description <text>', 'what the project is')
    .action(
      cli.action<QuotaOptions>(async (session, [name], options) => {
        const client = await session.client();
        const current = await client.get<Project>(`/projects/${seg(name!)}`);
        const updated = await client.patch<Project>(`/projects/${seg(name!)}`, { quota: { ...current.quota, ...quota(options) }, ...(options.description ? { description: options.description } : {}) });
        session.print(updated, () => formatTable(projectHeaders, [projectRow(updated)]));
      }),
    );
  apiCommand(project, 'delete <project>', 'Delete a project that holds no VM').alias('rm').action(
    cli.action(async (session, [name]) => {
      await (await session.client()).delete(`/projects/${seg(name!)}`);
      session.print({ deleted: name }, () => `Deleted project ${name}.\n`);
    }),
  );

  // ---------------------------------------------------------------- tokens
  const token = cli.program.command('token').description('API tokens: for scripts and the CLI (hashed at rest, expiring, revocable)');
  apiCommand(token, 'list', 'List your API tokens (everyone\'s with user.read)').alias('ls').action(
    cli.action(async (session) => {
      const { items } = await (await session.client()).get<{ items: ApiToken[] }>('/tokens');
      session.print(items, () => tokenTable(items));
    }),
  );
  apiCommand(token, 'create <name>', 'Make an API token; its secret is printed once')
    .option('--user <user>', 'for another user (needs user.write)')
    .option('--role <role>', 'limit it to this role of the user (repeatable)', collectList)
    .option('--project <project>', 'limit it to this project (repeatable)', collectList)
    .option('--expires-in <seconds>', 'expire after this many seconds (at least 60)', positiveInt('--expires-in', 60))
    .addHelpText('after', `\nExample:\n  $ drover token create ci --project class-a --expires-in 86400\n  $ DROVER_TOKEN=drv_... drover vm list`)
    .action(
      cli.action<{ user?: string; role?: string[]; project?: string[]; expiresIn?: number }>(async (session, [name], options) => {
        const made = await (await session.client()).post<{ token: string; info: ApiToken }>('/tokens', {
          name: name!,
          ...(options.user ? { user: options.user } : {}),
          ...(options.role ? { roles: options.role } : {}),
          ...(options.project ? { projects: options.project } : {}),
          ...(options.expiresIn ? { expiresInSeconds: options.expiresIn } : {}),
        });
        session.print(made, () => `${made.token}\n`);
        if (!session.json) session.note(`Token ${made.info.name} (${made.info.id}) for ${made.info.user}; it is shown only now.\n`);
      }),
    );
  apiCommand(token, 'revoke <id>', 'Revoke an API token: refused from now on').action(
    cli.action(async (session, [id]) => {
      const revoked = await (await session.client()).delete<ApiToken>(`/tokens/${seg(id!)}`);
      session.print(revoked, () => `Revoked token ${revoked.name} (${revoked.id}).\n`);
    }),
  );

  // ---------------------------------------------------------------- audit
  type AuditOptions = { actor?: string; decision?: string; action?: string; since?: string; until?: string; limit?: number; export?: string };
  const auditQuery = (o: AuditOptions) => ({ actor: o.actor, decision: o.decision, action: o.action, since: o.since, until: o.until });
  const audit = apiCommand(cli.program, 'audit', 'The audit log: every change and every denial, hash-chained (shows records, oldest first)');
  audit
    .option('--actor <user>', 'only this user')
    .option('--decision <d>', 'allow, deny or error')
    .option('--action <text>', 'actions containing this text (e.g. "POST /api/v1/vms", sessions)')
    .option('--since <time>', 'from this ISO 8601 date or time')
    .option('--until <time>', 'before this ISO 8601 date or time')
    .option('--limit <n>', 'at most this many records (default 100, at most 1000)', positiveInt('--limit', 1, 1000))
    .option('--export <file>', 'write every matching record to FILE as JSON lines instead')
    .addHelpText(
      'after',
      `
Examples:
  $ drover audit --decision deny --since 2026-11-26
  $ drover audit --actor alice --limit 20
  $ drover audit --export audit.jsonl
  $ drover audit verify`,
    )
    .action(
      cli.action<AuditOptions>(async (session, _args, options) => {
        const client = await session.client();
        if (options.export) {
          const answer = await client.getText('/audit/export', auditQuery(options));
          await writeFile(options.export, answer.body);
          const lines = answer.body.toString('utf8').split('\n').filter(Boolean).length;
          session.print({ exported: lines, file: options.export }, () => `Wrote ${lines} audit records to ${options.export}.\n`);
          return;
        }
        const { items } = await client.get<{ items: AuditRecord[] }>('/audit', { ...auditQuery(options), limit: options.limit });
        session.print(items, () => auditTable(items));
      }),
    );
  apiCommand(audit, 'verify', 'Check the hash chain of the whole audit log (exit 4 when a record was modified, removed or moved)').action(
      cli.action(async (session) => {
        const verdict = await (await session.client()).get<{ ok: boolean; checked: number; firstBad?: { seq: number; reason: string } }>('/audit/verify');
        if (!verdict.ok) {
          throw new DroverError('conflict', `The audit log is broken at record ${verdict.firstBad!.seq}: ${verdict.firstBad!.reason} (${verdict.checked} records before it are intact)`, { details: verdict as unknown as Record<string, unknown> });
        }
        session.print(verdict, () => `The audit log is intact: ${verdict.checked} records, each chained to the one before.\n`);
      }),
    );
}

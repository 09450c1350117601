import { apiCommand, labelQuery, positiveInt, type Cli } from '../cli.js';
import { seg } from '../client.js';
import { formatAge, formatFields, formatLabels, formatMiB, formatTable, orDash } from '../output.js';
import type { Host, JoinToken, Operation } from '../types.js';
import { fetchList, printPage, withListOptions, withWaitOption, type ListOptions } from './common.js';
import { registerHostMaintenanceCommands } from './power.js';

export function hostTable(hosts: Host[], now = Date.now()): string {
  return formatTable(
    ['NAME', 'STATE', 'ADDRESS', 'CPUS', 'MEMORY', 'VMS', 'HEARTBEAT'],
    hosts.map((host) => [
      host.name,
      host.state,
      host.address,
      `${host.allocated.cpus}/${host.capacity.cpus}`,
      `${formatMiB(host.allocated.memoryMiB)}/${formatMiB(host.capacity.memoryMiB)}`,
      String(host.allocated.vms),
      host.lastHeartbeatAt ? `${formatAge(host.lastHeartbeatAt, now)} ago` : '-',
    ]),
  );
}

export function hostDetails(host: Host): string {
  return formatFields([
    ['Name', host.name],
    ['ID', host.id],
    ['State', host.state],
    ['Address', host.address],
    ['CPUs', `${host.allocated.cpus} allocated of ${host.capacity.cpus}`],
    ['Memory', `${formatMiB(host.allocated.memoryMiB)} allocated of ${formatMiB(host.capacity.memoryMiB)}`],
    ['VMs', String(host.allocated.vms)],
    ['CPU models', orDash(host.cpuModels.join(', '))],
    ['Labels', formatLabels(host.labels)],
    ['Certificate expires', orDash(host.certExpiresAt)],
    ['Last heartbeat', orDash(host.lastHeartbeatAt)],
    ['Revision', String(host.rev)],
    ['Created', host.createdAt],
  ]);
}

export function registerHostCommands(cli: Cli): void {
  const host = cli.program
    .command('host')
    .description('Hypervisor hosts: list, inspect, add (join tokens), remove, rotate certificates')
    .addHelpText(
      'after',
      `
Examples:
  $ drover host list
  $ drover host join-token --ttl 600
  $ drover host rotate-cert h2
  $ drover host remove h3`,
    );

  withListOptions(apiCommand(host, 'list', 'List hosts as a table'), 'hosts')
    .alias('ls')
    .option('--state <state>', 'only hosts in this state (joining, online, unreachable, maintenance, powered_off)')
    .option('--name <name>', 'only hosts whose name matches')
    .option('--label <key=value>', 'only hosts with this label', labelQuery)
    .action(
      cli.action<ListOptions & { state?: string; name?: string; label?: string }>(async (session, _args, options) => {
        const page = await fetchList<Host>(session, '/hosts', { state: options.state, name: options.name, label: options.label }, options);
        printPage(session, page, (items) => hostTable(items), 'drover host list');
      }),
    );

  apiCommand(host, 'show <host>', 'Show one host in detail (by name or id)').action(
    cli.action(async (session, [name]) => {
      const found = await (await session.client()).get<Host>(`/hosts/${seg(name!)}`);
      session.print(found, () => hostDetails(found));
    }),
  );

  apiCommand(host, 'remove <host>', 'Remove a host from the cluster (it must run no VMs; its certificate is revoked)')
    .alias('rm')
    .action(
      cli.action(async (session, [name]) => {
        // The manager removes a host at once (204): there is no operation to follow.
        await (await session.client()).delete<unknown>(`/hosts/${seg(name!)}`);
        session.print({ removed: name }, () => `Removed host ${name}.\n`);
      }),
    );

  apiCommand(host, 'join-token', 'Create a one-time token for a new host to join the cluster')
    .option('--ttl <seconds>', 'how long the token stays valid (60 to 604800; server default 3600)', positiveInt('--ttl', 60, 7 * 24 * 3600))
    .addHelpText(
      'after',
      `
The token is shown once. Give it, with the CA fingerprint, to the new host's agent
(drover-agent --join), which pins the fingerprint before it trusts the manager.

Example:
  $ drover host join-token --ttl 900`,
    )
    .action(
      cli.action<{ ttl?: number }>(async (session, _args, options) => {
        const token = await (await session.client()).post<JoinToken>('/hosts/join-tokens', options.ttl === undefined ? {} : { ttlSeconds: options.ttl });
        session.print(token, () =>
          formatFields([
            ['Join token', token.token],
            ['Expires', token.expiresAt],
            ['CA fingerprint', token.caFingerprint],
          ]),
        );
      }),
    );

  withWaitOption(apiCommand(host, 'rotate-cert <host>', "Issue a new certificate for a host's agent")).action(
    cli.action<{ wait: boolean }>(async (session, [name], options) => {
      const operation = await (await session.client()).post<Operation>(`/hosts/${seg(name!)}/rotate-certificate`, {});
      await session.followOperation(operation, { wait: options.wait, label: `rotate-cert ${name}`, done: () => `Rotated the certificate of host ${name}.` });
    }),
  );

  registerHostMaintenanceCommands(cli, host);
}

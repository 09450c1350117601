import type { Command } from 'commander';
import { errors } from '@drover/core';
import { apiCommand, positiveInt, type Cli } from '../cli.js';
import { seg } from '../client.js';
import { formatFields, formatTable } from '../output.js';
import type { Operation } from '../types.js';
import { withWaitOption } from './common.js';

/** What POST .../evacuate answers with dryRun. */
export interface EvacuationPlanView {
  hostName: string;
  moves: Array<{ vmName: string; policy: string; toHostName: string }>;
  stops: Array<{ vmName: string; policy: string }>;
  stays: Array<{ vmName: string; policy: string; reason: string }>;
  cannotMove: Array<{ vmName: string; policy: string; reason: string }>;
}

export function evacuationPlanText(plan: EvacuationPlanView): string {
  const rows = [
    ...plan.moves.map((m) => [m.vmName, m.policy, `move to ${m.toHostName}`]),
    ...plan.stops.map((s) => [s.vmName, s.policy, 'stop (restore starts it)']),
    ...plan.stays.map((s) => [s.vmName, s.policy, `stays: ${s.reason}`]),
    ...plan.cannotMove.map((c) => [c.vmName, c.policy, `CANNOT MOVE: ${c.reason}`]),
  ];
  const head = `Evacuation plan for host ${plan.hostName} (dry run, nothing changed):\n`;
  const tail = plan.cannotMove.length > 0 ? `\n${plan.cannotMove.length} VM(s) cannot move: the evacuation would be refused.\n` : '';
  return head + (rows.length ? formatTable(['VM', 'POLICY', 'PLAN'], rows) : 'No VM to move.\n') + tail;
}

function powerAction(value: string): string {
  if (!['on', 'off', 'cycle', 'status'].includes(value)) throw errors.invalid(`Unknown power action "${value}": use on, off, cycle or status`);
  return value;
}

/** `drover host maintenance|evacuate|restore|power|power-config` (added to `drover host`). */
export function registerHostMaintenanceCommands(cli: Cli, host: Command): void {
  apiCommand(host, 'maintenance <host>', 'Put a host into maintenance: it keeps its VMs and takes no new ones').action(
    cli.action(async (session, [name]) => {
      const updated = await (await session.client()).post<{ name: string; state: string }>(`/hosts/${seg(name!)}/maintenance`, {});
      session.print(updated, () => `Host ${updated.name} is in ${updated.state}.\n`);
    }),
  );

  withWaitOption(apiCommand(host, 'evacuate <host>', "Move a host's VMs away by each VM's evacuation policy (the host enters maintenance)"))
    .option('--dry-run', 'only show the plan: what moves where, what stays, what cannot move and why')
    .option('--concurrency <n>', 'moves at the same time (default 2)', positiveInt('--concurrency', 1, 16))
    .addHelpText(
      'after',
      `
Each VM's evacuation policy (drover vm edit VM --evacuation-policy P, or the API's
"evacuationPolicy") says what happens to it: live-migrate (default), cold-migrate
(stop, move, start), stop (stays, stopped), stay (left running). If any VM cannot
move, nothing starts and the reasons are listed. Evacuating the last host is refused.

Examples:
  $ drover host evacuate h2 --dry-run
  $ drover host evacuate h2 --concurrency 4
  $ drover host restore h2`,
    )
    .action(
      cli.action<{ wait: boolean; dryRun?: boolean; concurrency?: number }>(async (session, [name], options) => {
        const body = { ...(options.dryRun ? { dryRun: true } : {}), ...(options.concurrency ? { concurrency: options.concurrency } : {}) };
        const answer = await (await session.client()).post<Operation | EvacuationPlanView>(`/hosts/${seg(name!)}/evacuate`, body);
        if (options.dryRun) {
          session.print(answer, () => evacuationPlanText(answer as EvacuationPlanView));
          return;
        }
        await session.followOperation(answer as Operation, {
          wait: options.wait,
          label: `evacuate ${name}`,
          done: (final) => {
            const result = (final.result ?? {}) as { moved?: string[]; stopped?: string[]; stayed?: string[] };
            return `Evacuated host ${name}: ${result.moved?.length ?? 0} moved, ${result.stopped?.length ?? 0} stopped, ${result.stayed?.length ?? 0} stayed.`;
          },
        });
      }),
    );

  withWaitOption(apiCommand(host, 'restore <host>', 'Take a host out of maintenance and bring back exactly the VMs that left it'))
    .option('--dry-run', 'only list the VMs that would come back')
    .action(
      cli.action<{ wait: boolean; dryRun?: boolean }>(async (session, [name], options) => {
        const answer = await (await session.client()).post<Operation | { hostName: string; returns: Array<{ vmName: string; action: string; fromHostName: string | null }> }>(`/hosts/${seg(name!)}/restore`, options.dryRun ? { dryRun: true } : {});
        if (options.dryRun) {
          const plan = answer as { hostName: string; returns: Array<{ vmName: string; action: string; fromHostName: string | null }> };
          session.print(plan, () => `Restore plan for host ${plan.hostName} (dry run):\n` + (plan.returns.length ? formatTable(['VM', 'FROM', 'ACTION'], plan.returns.map((r) => [r.vmName, r.fromHostName ?? '-', r.action])) : 'No VM to bring back.\n'));
          return;
        }
        await session.followOperation(answer as Operation, {
          wait: options.wait,
          label: `restore ${name}`,
          done: (final) => `Restored host ${name}: ${((final.result ?? {}) as { returned?: string[] }).returned?.length ?? 0} VM(s) back.`,
        });
      }),
    );

  withWaitOption(apiCommand(host, 'power <host> <action>', 'Power a host on, off, cycle it, or read its power status (on|off|cycle|status)'))
    .addHelpText('after', `\nOff and cycle are refused while the host runs VMs: evacuate it first.\n\nExamples:\n  $ drover host power h3 status\n  $ drover host power h3 off`)
    .action(
      cli.action<{ wait: boolean }>(async (session, [name, action], options) => {
        const checked = powerAction(action!);
        const operation = await (await session.client()).post<Operation>(`/hosts/${seg(name!)}/power/${checked}`, {});
        await session.followOperation(operation, {
          wait: options.wait,
          label: `power ${checked} ${name}`,
          done: (final) => `Host ${name}: power ${((final.result ?? {}) as { state?: string }).state ?? 'unknown'}.`,
        });
      }),
    );

  apiCommand(host, 'power-config <host>', "Set a host's power driver (ipmi, wol or command)")
    .requiredOption('--driver <driver>', 'ipmi, wol (power on only) or command')
    .option('--address <address>', 'ipmi: the BMC address; wol: where the magic packet goes (directed broadcast)')
    .option('--port <port>', 'ipmi: RMCP+ port (623); wol: UDP port (9)', positiveInt('--port', 1, 65535))
    .option('--username <user>', 'ipmi: user name')
    .option('--password-env <VAR>', 'ipmi: read the password from this environment variable (kept by the manager, never shown)')
    .option('--mac <mac>', 'wol: the host\'s MAC address')
    .option('--on <command>', 'command: shell command that powers the host on')
    .option('--off <command>', 'command: shell command that powers the host off')
    .option('--status <command>', 'command: shell command that prints "on" or "off"')
    .option('--timeout-ms <ms>', 'time limit of one driver call (default 15000)', positiveInt('--timeout-ms', 100, 600_000))
    .addHelpText('after', `\nExamples:\n  $ BMC_PW=... drover host power-config h2 --driver ipmi --address 10.0.0.12 --username admin --password-env BMC_PW\n  $ drover host power-config h3 --driver wol --mac 52:54:00:12:34:56 --address 10.0.0.255\n  $ drover host power-config h4 --driver command --on "ssh pdu on 4" --off "ssh pdu off 4" --status "ssh pdu status 4"`)
    .action(
      cli.action<{ driver: string; address?: string; port?: number; username?: string; passwordEnv?: string; mac?: string; on?: string; off?: string; status?: string; timeoutMs?: number }>(async (session, [name], o) => {
        const common = o.timeoutMs ? { timeoutMs: o.timeoutMs } : {};
        let body: Record<string, unknown>;
        if (o.driver === 'ipmi') {
          const password = o.passwordEnv ? session.ctx.env[o.passwordEnv] : undefined;
          if (o.passwordEnv && !password) throw errors.invalid(`--password-env: the variable ${o.passwordEnv} is not set`);
          body = { driver: 'ipmi', address: o.address, username: o.username, ...(o.port ? { port: o.port } : {}), ...(password ? { password } : {}), ...common };
        } else if (o.driver === 'wol') body = { driver: 'wol', mac: o.mac, address: o.address, ...(o.port ? { port: o.port } : {}), ...common };
        else if (o.driver === 'command') body = { driver: 'command', on: o.on, off: o.off, status: o.status, ...common };
        else throw errors.invalid(`--driver must be ipmi, wol or command, not "${o.driver}"`);
        const power = await (await session.client()).put<{ hostName: string; driver: string; actions: string[] }>(`/hosts/${seg(name!)}/power`, body);
        session.print(power, () => `Host ${power.hostName}: power driver ${power.driver} (${power.actions.join(', ')}).\n`);
      }),
    );
}

interface PolicyOptions {
  window: string;
  timeZone: string;
  spare: number;
  watts: number;
  reserve: number;
  headroom: number;
  enable?: boolean;
}

/** `drover power policy|policy-set|report|night-plan|wake`. */
export function registerPowerCommands(cli: Cli): void {
  const power = cli.program.command('power').description('Power policy: night-time consolidation, powering hosts off and waking them, energy report');

  apiCommand(power, 'policy', 'Show the power policy').action(
    cli.action(async (session) => {
      const policy = await (await session.client()).get<Record<string, unknown> | null>('/power/policy');
      session.print(policy, () => (policy ? formatFields(Object.entries(policy).map(([k, v]) => [k, String(v)])) : 'No power policy set.\n'));
    }),
  );

  apiCommand(power, 'policy-set', 'Set the power policy')
    .requiredOption('--window <HH:MM-HH:MM>', 'the nightly consolidation window, e.g. 22:00-06:00')
    .option('--time-zone <zone>', 'IANA time zone of the window', 'UTC')
    .option('--spare <n>', 'emptied hosts kept on', positiveInt('--spare', 0, 1000), 1)
    .option('--watts <w>', 'watts a host draws while on (energy estimate)', positiveInt('--watts', 0, 100_000), 200)
    .option('--reserve <percent>', 'wake hosts when free memory drops under this share', positiveInt('--reserve', 0, 100), 10)
    .option('--headroom <percent>', 'capacity kept free on each host when packing', positiveInt('--headroom', 0, 90), 10)
    .option('--enable', 'run the schedule by itself (otherwise only manual runs)')
    .addHelpText('after', '\nExample:\n  $ drover power policy-set --window 22:00-06:00 --time-zone Europe/Berlin --spare 1 --watts 180 --enable')
    .action(
      cli.action<PolicyOptions>(async (session, _args, o) => {
        const body = { enabled: o.enable === true, timeZone: o.timeZone, window: o.window, spareHosts: o.spare, wattsPerHost: o.watts, reserveMemoryPercent: o.reserve, headroomPercent: o.headroom };
        const saved = await (await session.client()).put<Record<string, unknown>>('/power/policy', body);
        session.print(saved, () => `Power policy set: consolidate ${o.window} (${o.timeZone}), keep ${o.spare} spare host(s)${o.enable ? '' : ' (manual runs only)'}.\n`);
      }),
    );

  apiCommand(power, 'report', 'Hosts powered off, hours off and the energy saved').action(
    cli.action(async (session) => {
      const report = await (await session.client()).get<{ mode: string; hostsPoweredOff: Array<{ hostName: string; since: string }>; hoursOff: number; energySavedKWh: number }>('/power/report');
      session.print(report, () =>
        formatFields([
          ['Mode', report.mode],
          ['Powered off', report.hostsPoweredOff.map((h) => `${h.hostName} (since ${h.since})`).join(', ') || '-'],
          ['Host-hours off', report.hoursOff.toFixed(2)],
          ['Energy saved', `${report.energySavedKWh.toFixed(2)} kWh`],
        ]),
      );
    }),
  );

  for (const [verb, route, what] of [
    ['night-plan', '/power/night-plan', 'Run the night plan now: pack the VMs, power the emptied hosts off'],
    ['wake', '/power/wake', 'Wake every host Drover powered off, wait for their agents, rebalance'],
  ] as const) {
    withWaitOption(apiCommand(power, verb, what))
      .option('--dry-run', 'only show what would happen')
      .action(
        cli.action<{ wait: boolean; dryRun?: boolean }>(async (session, _args, options) => {
          const answer = await (await session.client()).post<Operation | Record<string, unknown>>(route, options.dryRun ? { dryRun: true } : {});
          if (options.dryRun) {
            session.print(answer, () => `${JSON.stringify(answer, null, 2)}\n`);
            return;
          }
          await session.followOperation(answer as Operation, { wait: options.wait, label: verb, done: (final) => `${verb}: ${JSON.stringify(final.result ?? {})}` });
        }),
      );
  }
}

/** `drover vm ha VM on|off` (added to `drover vm`). */
export function registerVmHaCommand(cli: Cli, vm: Command): void {
  apiCommand(vm, 'ha <vm> <on|off>', 'Mark a VM highly available (restarted on another host after its host is lost and fenced), or not')
    .addHelpText('after', '\nOnly for VMs whose disks are on shared pools. The lost host is powered off through its power driver first.\n\nExample:\n  $ drover vm ha db1 on')
    .action(
      cli.action(async (session, [name, state]) => {
        if (state !== 'on' && state !== 'off') throw errors.invalid(`Give "on" or "off", not "${state}"`);
        const updated = await (await session.client()).put<{ name: string }>(`/vms/${seg(name!)}/ha`, { enabled: state === 'on' });
        session.print(updated, () => `VM ${updated.name}: HA ${state}.\n`);
      }),
    );
}

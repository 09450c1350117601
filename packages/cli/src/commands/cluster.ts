import { errors } from '@drover/core';
import { apiCommand, positiveInt, type Cli } from '../cli.js';
import { formatTable } from '../output.js';
import type { Operation } from '../types.js';
import { withWaitOption } from './common.js';

/** What POST /cluster/rebalance answers with dryRun. */
export interface RebalancePlanView {
  threshold: number;
  imbalanceBefore: number;
  imbalanceAfter: number;
  moves: Array<{ vmName: string; fromHostName: string; toHostName: string }>;
}

const percent = (share: number) => `${(share * 100).toFixed(1)} %`;

export function rebalancePlanText(plan: RebalancePlanView): string {
  const head = `Rebalance plan (dry run, nothing changed): imbalance ${percent(plan.imbalanceBefore)} → ${percent(plan.imbalanceAfter)}, threshold ${percent(plan.threshold)}\n`;
  if (plan.moves.length === 0) return `${head}No VM to move.\n`;
  return head + formatTable(['VM', 'FROM', 'TO'], plan.moves.map((m) => [m.vmName, m.fromHostName, m.toHostName]));
}

/** What GET /cluster/managers answers. */
export interface ClusterManagersView {
  backend: string;
  self: string;
  leader: { managerId: string; term: number; since: string } | null;
  managers: Array<{ id: string; name: string; url: string; startedAt: string; alive: boolean; leader: boolean }>;
}

export function clusterManagersText(view: ClusterManagersView): string {
  const rows = view.managers.map((m) => [m.id.slice(0, 8), m.name, m.url, m.alive ? 'alive' : 'gone', m.leader ? `leader (term ${view.leader?.term ?? '?'})` : '', m.id === view.self ? '*' : '']);
  return `Store: ${view.backend}\n${formatTable(['ID', 'NAME', 'URL', 'STATE', 'ROLE', 'ANSWERED'], rows)}`;
}

/** A share in [0, 1] given as a percentage (0–100). */
function thresholdPercent(value: string): number {
  const n = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value) || !(n >= 0 && n <= 100)) throw errors.invalid(`--threshold must be a percentage from 0 to 100, got "${value}"`);
  return n / 100;
}

/** `drover cluster rebalance [--dry-run] [--threshold PERCENT] [--concurrency N]`. */
export function registerClusterCommands(cli: Cli): void {
  const cluster = cli.program.command('cluster').description('Cluster-wide actions: load balancing, the managers');
  apiCommand(cluster, 'managers', 'The managers sharing the store, which are alive and which one leads (runs the background work)')
    .addHelpText('after', '\nSeveral managers on one PostgreSQL store elect one leader; see docs/scale-out.md.\n\nExample:\n  $ drover cluster managers')
    .action(
      cli.action(async (session) => {
        const view = await (await session.client()).get<ClusterManagersView>('/cluster/managers');
        session.print(view, () => clusterManagersText(view));
      }),
    );
  withWaitOption(apiCommand(cluster, 'rebalance', 'Spread load over the online hosts by live-migrating VMs off the busiest ones'))
    .option('--dry-run', 'only show the plan: which VM goes where, the imbalance before and after')
    .option('--threshold <percent>', 'move VMs until the most and least loaded hosts differ by at most this (default: the manager\'s, 20)', thresholdPercent)
    .option('--concurrency <n>', 'live migrations at once (default 2)', positiveInt('--concurrency', 1, 16))
    .addHelpText(
      'after',
      '\nA host\'s load is the larger of its memory and vCPU shares in use; the imbalance is the\nmost loaded online host\'s load minus the least loaded one\'s. VMs move by live migration.\n\nExamples:\n  $ drover cluster rebalance --dry-run\n  $ drover cluster rebalance --threshold 10 --concurrency 4',
    )
    .action(
      cli.action<{ wait: boolean; dryRun?: boolean; threshold?: number; concurrency?: number }>(async (session, _args, o) => {
        const body = { ...(o.dryRun ? { dryRun: true } : {}), ...(o.threshold !== undefined ? { threshold: o.threshold } : {}), ...(o.concurrency !== undefined ? { concurrency: o.concurrency } : {}) };
        const answer = await (await session.client()).post<Operation | RebalancePlanView>('/cluster/rebalance', body);
        if (o.dryRun) {
          session.print(answer, () => rebalancePlanText(answer as RebalancePlanView));
          return;
        }
        await session.followOperation(answer as Operation, {
          wait: o.wait,
          label: 'rebalance',
          done: (final) => {
            const r = (final.result ?? {}) as { moved?: number; planned?: number; imbalanceAfter?: number };
            return `Rebalanced: ${r.moved ?? 0} of ${r.planned ?? 0} VM(s) moved, imbalance now ${percent(r.imbalanceAfter ?? 0)}`;
          },
        });
      }),
    );
}

import { apiCommand, type Cli } from '../cli.js';
import { seg } from '../client.js';
import { formatAge, formatFields, formatTable, orDash } from '../output.js';
import type { Operation } from '../types.js';
import { fetchList, printPage, withListOptions, type ListOptions } from './common.js';

export function operationTable(operations: Operation[], now = Date.now()): string {
  return formatTable(
    ['ID', 'KIND', 'TARGET', 'STATE', 'PHASE', 'PROGRESS', 'AGE'],
    operations.map((op) => [op.id, op.kind, `${op.targetKind}/${op.targetId}`, op.state, orDash(op.phase), `${op.progress}%`, formatAge(op.createdAt, now)]),
  );
}

export function operationDetails(op: Operation): string {
  return formatFields([
    ['ID', op.id],
    ['Kind', op.kind],
    ['Target', `${op.targetKind}/${op.targetId}`],
    ['State', op.state],
    ['Phase', orDash(op.phase)],
    ['Progress', `${op.progress}%`],
    ['Error', op.error ? `${op.error.code}: ${op.error.message}` : '-'],
    ['Actor', op.actor],
    ['Created', op.createdAt],
    ['Started', orDash(op.startedAt)],
    ['Finished', orDash(op.finishedAt)],
  ]);
}

export function registerOperationCommands(cli: Cli): void {
  const op = cli.program
    .command('op')
    .alias('operation')
    .description('Operations: every change the manager makes, with phase, progress and result')
    .addHelpText(
      'after',
      `
Examples:
  $ drover op list --state running
  $ drover op watch 2f0c6a1e-8d3b-4c55-9a4e-0b1f7d9e6c21
  $ drover op cancel 2f0c6a1e-8d3b-4c55-9a4e-0b1f7d9e6c21`,
    );

  withListOptions(apiCommand(op, 'list', 'List operations, oldest first (follow --all or the last page for the newest)'), 'operations')
    .alias('ls')
    .option('--state <state>', 'only operations in this state (pending, running, done, failed, cancelled, rolled_back)')
    .action(
      cli.action<ListOptions & { state?: string }>(async (session, _args, options) => {
        const page = await fetchList<Operation>(session, '/operations', { state: options.state }, options);
        printPage(session, page, (items) => operationTable(items), 'drover op list');
      }),
    );

  apiCommand(op, 'show <id>', 'Show one operation').action(
    cli.action(async (session, [id]) => {
      const found = await (await session.client()).get<Operation>(`/operations/${seg(id!)}`);
      session.print(found, () => operationDetails(found));
    }),
  );

  apiCommand(op, 'watch <id>', 'Follow an operation until it ends; the exit code tells how it ended').action(
    cli.action(async (session, [id]) => {
      const found = await (await session.client()).get<Operation>(`/operations/${seg(id!)}`);
      await session.followOperation(found, { wait: true, label: found.kind, done: (final) => `Operation ${final.id} (${final.kind}) done.` });
    }),
  );

  apiCommand(op, 'cancel <id>', 'Ask the manager to cancel an operation (it stops at the next safe point)').action(
    cli.action(async (session, [id]) => {
      const cancelled = await (await session.client()).post<Operation>(`/operations/${seg(id!)}/cancel`, {});
      session.print(cancelled, () => `Cancel requested for operation ${cancelled.id} (${cancelled.kind}); it is ${cancelled.state}.\n`);
    }),
  );
}

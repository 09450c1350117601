import { InvalidArgumentError, type Command } from 'commander';
import { isDroverError, parseSize } from '@drover/core';
import { apiCommand, positiveInt, type Cli } from '../cli.js';
import { seg } from '../client.js';
import type { Operation } from '../types.js';
import { withWaitOption } from './common.js';

/** `100M` → bytes per second; a bare number is bytes. At least 1 MiB/s (the manager's minimum). */
function parseBandwidth(value: string): number {
  let bytes: number;
  try {
    bytes = /^\s*\d+\s*$/.test(value) ? Number(value) : parseSize(value);
  } catch (error) {
    throw new InvalidArgumentError(isDroverError(error) ? error.message : String(error));
  }
  if (!Number.isSafeInteger(bytes) || bytes < 1024 * 1024) throw new InvalidArgumentError('a bandwidth must be at least 1M (bytes per second)');
  return bytes;
}

export interface MigrateOptions {
  wait: boolean;
  to: string;
  storage?: boolean;
  downtimeMs?: number;
  bandwidth?: number;
  mirrorBandwidth?: number;
  postcopy?: boolean;
}

/** The body of POST /vms/:id/migrate from the command's options. */
export function migrateRequest(options: MigrateOptions): Record<string, unknown> {
  return {
    to: options.to,
    ...(options.storage ? { storage: true } : {}),
    ...(options.downtimeMs !== undefined ? { downtimeMs: options.downtimeMs } : {}),
    ...(options.bandwidth !== undefined ? { bandwidth: options.bandwidth } : {}),
    ...(options.mirrorBandwidth !== undefined ? { mirrorBandwidth: options.mirrorBandwidth } : {}),
    ...(options.postcopy ? { postcopy: true } : {}),
  };
}

/** `drover vm migrate VM --to HOST`: live migration, followed with the operation progress bar. */
export function registerVmMigrateCommand(cli: Cli, vm: Command): void {
  withWaitOption(apiCommand(vm, 'migrate <vm>', 'Move a running VM to another host without stopping it (live migration)'))
    .requiredOption('--to <host>', 'the destination host (id or name)')
    .option('--storage', 'also copy disks the destination cannot see (local disks, mirrored over NBD)')
    .option('--downtime-ms <ms>', 'longest pause allowed at the switchover (default 300); QEMU starts at 30 ms and doubles per pass that does not converge', positiveInt('--downtime-ms', 1, 60_000))
    .option('--bandwidth <rate>', 'bytes per second for the memory stream, e.g. 100M (default 1G)', parseBandwidth)
    .option('--mirror-bandwidth <rate>', 'bytes per second for the disk mirror with --storage, e.g. 50M (default unlimited)', parseBandwidth)
    .option('--postcopy', 'allow post-copy (refused where the destination has no userfaultfd)')
    .addHelpText(
      'after',
      `
Examples:
  $ drover vm migrate web1 --to host2
  $ drover vm migrate db1 --to host3 --storage --downtime-ms 100 --bandwidth 200M
Cancel a migration before its switchover with: drover op cancel ID`,
    )
    .action(
      cli.action<MigrateOptions>(async (session, [name], options) => {
        const operation = await (await session.client()).post<Operation>(`/vms/${seg(name!)}/migrate`, migrateRequest(options));
        await session.followOperation(operation, {
          wait: options.wait,
          label: `migrate ${name} → ${options.to}`,
          done: (final) => {
            const result = (final.result ?? {}) as { from?: string; qemuDowntimeMs?: number; guestMaxGapMs?: number; totalTimeMs?: number };
            const figures = [
              result.totalTimeMs !== undefined ? `${result.totalTimeMs} ms in all` : '',
              result.qemuDowntimeMs !== undefined ? `${result.qemuDowntimeMs} ms downtime` : '',
              result.guestMaxGapMs !== undefined ? `${result.guestMaxGapMs} ms gap seen by the guest` : '',
            ].filter(Boolean);
            return `Migrated VM ${name}${result.from ? ` from ${result.from}` : ''} to ${options.to}${figures.length ? ` (${figures.join(', ')})` : ''}.`;
          },
        });
      }),
    );
}

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The manager's binary of this installation: the admin commands work on its store and data directory. */
export const managerMain = path.resolve(here, '..', '..', 'manager', 'dist', 'main.js');

interface AdminOptions {
  config?: string;
  dataDir?: string;
  store?: string;
  to?: string;
  secretKeyFile?: string;
  force?: boolean;
}

function passThrough(command: string, positional: string[], o: AdminOptions): string[] {
  return [
    'admin',
    command,
    ...positional,
    ...(o.config ? ['--config', o.config] : []),
    ...(o.dataDir ? ['--data-dir', o.dataDir] : []),
    ...(o.store ? ['--store', o.store] : []),
    ...(o.to ? ['--to', o.to] : []),
    ...(o.secretKeyFile ? ['--secret-key-file', o.secretKeyFile] : []),
    ...(o.force ? ['--force'] : []),
  ];
}

/** Runs `drover-manager admin ...` of this installation, with this process's streams; resolves with its exit code. */
async function runManagerAdmin(args: string[]): Promise<number> {
  if (!existsSync(managerMain)) {
    process.stderr.write(`drover: ${managerMain} is missing: the admin commands need the manager package built (npx tsc -b)\n`);
    return 1;
  }
  const child = spawn(process.execPath, [managerMain, ...args], { stdio: 'inherit' });
  return new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0))));
}

/**
 * `drover admin migrate-store|backup|restore`: work on the manager's store and
 * data directory directly (not through the API), so they run on a manager's
 * machine, with its configuration. See docs/scale-out.md.
 */
export function registerAdminCommands(program: Command): void {
  const admin = program
    .command('admin')
    .description("Work on the manager's store directly: move it to PostgreSQL, back it up, restore it (runs on the manager's machine)");
  const common = (command: Command) =>
    command
      .option('--config <file>', "the manager's YAML configuration (store, dataDir)")
      .option('--data-dir <dir>', "the manager's data directory (default: the configuration's, /var/lib/drover/manager)");

  common(admin.command('migrate-store').description('Copy a SQLite installation into a new, empty PostgreSQL database (stop the manager first)'))
    .requiredOption('--to <url>', 'the PostgreSQL database: postgres://user:password@host/db (must be empty)')
    .option('--secret-key-file <file>', 'also store the CA and tokens in the database, sealed with this key (for several managers)')
    .option('--force', 'copy even though a manager was seen running on the SQLite store in the last 15 s')
    .addHelpText(
      'after',
      `
Every table is copied in dependency order in one transaction, then the row counts
of source and target are compared; a target that is not empty is refused. Then start
the managers with "store: postgres://..." (and the same secretKeyFile); see
docs/scale-out.md for the upgrade order.

Example:
  $ openssl rand -hex 32 > /etc/drover/secret.key && chmod 600 /etc/drover/secret.key
  $ drover admin migrate-store --data-dir /var/lib/drover/manager \\
      --to postgres://drover@db1/drover --secret-key-file /etc/drover/secret.key`,
    )
    .action(async (o: AdminOptions) => {
      process.exitCode = await runManagerAdmin(passThrough('migrate-store', [], o));
    });

  common(admin.command('backup <file>').description("A consistent snapshot of the store and the data directory's secrets (CA, tokens) into FILE (0600)"))
    .option('--store <store>', '"sqlite" or postgres://... (default: the configuration\'s)')
    .addHelpText('after', '\nSafe while managers run (one REPEATABLE READ transaction on PostgreSQL). The file holds the CA key:\nkeep it as safe as the data directory.\n\nExample:\n  $ drover admin backup /backup/drover-$(date +%F).json --config /etc/drover/manager.yaml')
    .action(async (file: string, o: AdminOptions) => {
      process.exitCode = await runManagerAdmin(passThrough('backup', [file], o));
    });

  common(admin.command('restore <file>').description('Load a backup into the store and the data directory'))
    .option('--store <store>', '"sqlite" or postgres://... (default: the configuration\'s)')
    .option('--force', 'replace every row of a store that is not empty, even while a manager was seen in the last 15 s')
    .addHelpText(
      'after',
      '\nRefused while any manager uses the store (it refreshed its row in the last 15 s) and into a\nstore that is not empty, unless --force. Stop every manager, restore, start them again:\nthe new leader recovers the operations that were unfinished at the time of the backup.\n\nExample:\n  $ drover admin restore /backup/drover-2026-11-26.json --config /etc/drover/manager.yaml',
    )
    .action(async (file: string, o: AdminOptions) => {
      process.exitCode = await runManagerAdmin(passThrough('restore', [file], o));
    });
}

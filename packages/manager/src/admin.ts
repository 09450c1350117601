import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { errors } from '@drover/core';
import { pushSecrets, readSecretKey, sharedSecretFiles } from './cluster/secrets.js';
import { loadManagerConfig } from './config.js';
import { openPostgresStore, openSqliteStore, type Store, type StoreSnapshot } from './store/index.js';

/**
 * `drover-manager admin ...` (and `drover admin ...`, which runs it): moving a
 * SQLite installation to PostgreSQL, backup and restore of the manager's state.
 * They work on the store directly, so they run where the manager's data
 * directory and configuration are (docs/scale-out.md).
 */
export const adminUsage = `Usage: drover-manager admin <command> [options]

Commands:
  migrate-store --to postgres://...   copy a SQLite installation's store (<data-dir>/drover.db) into a new,
                                      empty PostgreSQL database: every table in dependency order, in one
                                      transaction, then the row counts compared. The manager must be stopped.
                                      With --secret-key-file, the CA and tokens of <data-dir> are stored in
                                      the database too, sealed, for managers that start with that key.
  backup FILE                         a consistent snapshot of the store (one REPEATABLE READ transaction on
                                      PostgreSQL) and of the secrets in <data-dir> (CA, tokens) into FILE (0600).
                                      Safe while managers run.
  restore FILE                        loads a backup into the store and <data-dir>. Refused while a manager
                                      uses the store (seen in the last 15 s) and into a store that is not
                                      empty, unless --force (which replaces every row).

Options:
  --config FILE        the manager's YAML configuration (store, dataDir)
  --data-dir DIR       the manager's data directory
  --store S            "sqlite" or a PostgreSQL connection string (backup, restore)
  --secret-key-file F  the cluster's secret key (migrate-store); also DROVER_SECRET_KEY_FILE
  --force              restore: even over a non-empty store or while a manager was seen
  -h, --help           show this help`;

export interface BackupFile {
  format: 'drover-backup';
  version: 1;
  createdAt: string;
  store: StoreSnapshot;
  /** Files of the data directory (CA, tokens), base64. */
  secrets: Record<string, string>;
}

/** How recently a manager must have refreshed its row to count as running (its interval is 1 s by default). */
const runningWithinMs = 15_000;

async function openStore(store: string, dataDir: string): Promise<Store> {
  return store === 'sqlite' ? openSqliteStore({ file: path.join(dataDir, 'drover.db') }) : openPostgresStore({ connectionString: store });
}

async function runningManagers(store: Store): Promise<string[]> {
  const horizon = Date.now() - runningWithinMs;
  return (await store.cluster.managers()).filter((m) => Date.parse(m.lastSeenAt) > horizon).map((m) => `${m.name} (${m.url})`);
}

function sameCounts(a: Record<string, number>, b: Record<string, number>): string[] {
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((t) => (a[t] ?? 0) !== (b[t] ?? 0)).map((t) => `${t}: ${a[t] ?? 0} → ${b[t] ?? 0}`);
}

/** SQLite installation → an empty PostgreSQL database. Returns the rows copied per table. */
export async function migrateStore(options: { dataDir: string; to: string; secretKeyFile?: string; force?: boolean }): Promise<Record<string, number>> {
  if (!/^postgres(ql)?:\/\//.test(options.to)) throw errors.invalid(`--to must be a PostgreSQL connection string (postgres://...), got "${options.to}"`);
  const file = path.join(options.dataDir, 'drover.db');
  if (!existsSync(file)) throw errors.notFound('SQLite store', file);
  const key = options.secretKeyFile ? await readSecretKey(options.secretKeyFile) : undefined;
  const source = await openSqliteStore({ file });
  try {
    const running = await runningManagers(source);
    if (running.length > 0 && !options.force) throw errors.conflict(`A manager is running on ${file} (${running.join(', ')}): stop it first, so that nothing changes during the copy`);
    const target = await openPostgresStore({ connectionString: options.to });
    try {
      const snapshot = await source.exportSnapshot();
      await target.importSnapshot(snapshot);
      const [before, after] = [await source.tableCounts(), await target.tableCounts()];
      const differ = sameCounts(before, after);
      if (differ.length > 0) throw errors.internal(`Row counts differ after the copy: ${differ.join(', ')}`);
      // The SQLite manager's row and claims mean nothing to the new managers.
      await target.cluster.removeManagersSeenBefore(new Date(Date.now() + 1000).toISOString());
      if (key) await pushSecrets(target, key, options.dataDir);
      return before;
    } finally {
      await target.close();
    }
  } finally {
    await source.close();
  }
}

export async function backup(options: { store: string; dataDir: string; file: string }): Promise<BackupFile> {
  const store = await openStore(options.store, options.dataDir);
  try {
    const snapshot = await store.exportSnapshot();
    const secrets: Record<string, string> = {};
    for (const name of sharedSecretFiles) {
      try {
        secrets[name] = (await readFile(path.join(options.dataDir, name))).toString('base64');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
    }
    const out: BackupFile = { format: 'drover-backup', version: 1, createdAt: new Date().toISOString(), store: snapshot, secrets };
    const temporary = `${options.file}.${randomBytes(6).toString('hex')}.tmp`;
    await writeFile(temporary, JSON.stringify(out), { mode: 0o600 });
    await rename(temporary, options.file);
    return out;
  } finally {
    await store.close();
  }
}

export async function restore(options: { store: string; dataDir: string; file: string; force?: boolean }): Promise<Record<string, number>> {
  let parsed: BackupFile;
  try {
    parsed = JSON.parse(await readFile(options.file, 'utf8')) as BackupFile;
  } catch (error) {
    throw errors.invalid(`Cannot read the backup ${options.file}: ${(error as Error).message}`);
  }
  if (parsed?.format !== 'drover-backup' || parsed.version !== 1) throw errors.invalid(`${options.file} is not a Drover backup (format drover-backup, version 1)`);
  await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
  const store = await openStore(options.store, options.dataDir);
  try {
    const running = await runningManagers(store);
    if (running.length > 0 && !options.force) {
      throw errors.conflict(`A manager uses this store (${running.join(', ')}): stop every manager first, or pass --force`);
    }
    const loaded = await store.importSnapshot(parsed.store, { replace: options.force === true });
    const differ = sameCounts(loaded, await store.tableCounts());
    if (differ.length > 0) throw errors.internal(`Row counts differ after the restore: ${differ.join(', ')}`);
    // Managers of the backup's time are gone: their operations are adopted by the next leader.
    await store.cluster.removeManagersSeenBefore(new Date(Date.now() + 1000).toISOString());
    for (const [name, content] of Object.entries(parsed.secrets ?? {})) {
      if (!(sharedSecretFiles as readonly string[]).includes(name)) continue;
      const file = path.join(options.dataDir, name);
      await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
      await writeFile(file, Buffer.from(content, 'base64'), { mode: name.endsWith('.crt') || name.endsWith('.pem') ? 0o644 : 0o600 });
    }
    return loaded;
  } finally {
    await store.close();
  }
}

function table(counts: Record<string, number>): string {
  const rows = Object.entries(counts).filter(([, n]) => n > 0);
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  return `${rows.map(([name, n]) => `  ${name.padEnd(28)} ${n}`).join('\n')}\n  ${'total'.padEnd(28)} ${total}\n`;
}

/** Runs `admin <command>`; returns the exit code. */
export async function runAdmin(argv: string[], out: (text: string) => void = (t) => process.stdout.write(t)): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string' },
      'data-dir': { type: 'string' },
      store: { type: 'string' },
      to: { type: 'string' },
      'secret-key-file': { type: 'string' },
      force: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [command, file, ...rest] = positionals;
  if (values.help || !command) {
    out(`${adminUsage}\n`);
    return values.help ? 0 : 2;
  }
  if (rest.length > 0) throw errors.invalid(`Unexpected arguments: ${rest.join(' ')}`);
  const config = loadManagerConfig({
    ...(values.config ? { file: values.config } : {}),
    overrides: { ...(values['data-dir'] ? { dataDir: path.resolve(values['data-dir']) } : {}), ...(values.store ? { store: values.store } : {}) },
  });
  switch (command) {
    case 'migrate-store': {
      if (!values.to) throw errors.invalid('migrate-store needs --to postgres://...');
      const secretKeyFile = values['secret-key-file'] ?? config.secretKeyFile ?? process.env.DROVER_SECRET_KEY_FILE;
      const counts = await migrateStore({ dataDir: config.dataDir, to: values.to, ...(secretKeyFile ? { secretKeyFile } : {}), ...(values.force ? { force: true } : {}) });
      out(`Copied the store of ${config.dataDir} to PostgreSQL; row counts match:\n${table(counts)}${secretKeyFile ? 'The CA and tokens are stored in the database, sealed with the secret key.\n' : 'Secrets stay in the data directory (no --secret-key-file): copy it to each manager.\n'}Start the managers with store: ${values.to.replace(/\/\/[^@/]*@/, '//***@')}\n`);
      return 0;
    }
    case 'backup': {
      if (!file) throw errors.invalid('backup needs a FILE');
      const made = await backup({ store: config.store, dataDir: config.dataDir, file: path.resolve(file) });
      const counts = Object.fromEntries(made.store.tables.map((t) => [t.name, t.rows.length]));
      out(`Backup written to ${path.resolve(file)} (mode 0600; it holds the CA key: keep it safe):\n${table(counts)}  secrets: ${Object.keys(made.secrets).join(', ') || 'none'}\n`);
      return 0;
    }
    case 'restore': {
      if (!file) throw errors.invalid('restore needs a FILE');
      const counts = await restore({ store: config.store, dataDir: config.dataDir, file: path.resolve(file), ...(values.force ? { force: true } : {}) });
      out(`Restored ${path.resolve(file)} into the store and ${config.dataDir}:\n${table(counts)}`);
      return 0;
    }
    default:
      throw errors.invalid(`Unknown admin command "${command}": use migrate-store, backup or restore`);
  }
}

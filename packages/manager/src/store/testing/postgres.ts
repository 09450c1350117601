import { spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';

/**
 * A private PostgreSQL cluster for tests: its own data directory and port,
 * started as the `postgres` user when running as root (initdb refuses root),
 * stopped and removed by `stop()` — and by a process exit hook should a test
 * run end without calling it.
 *
 * @example
 * let cluster: PostgresCluster;
 * beforeAll(async () => { cluster = await startPostgres(); });
 * afterAll(() => cluster?.stop());
 * const store = await openPostgresStore({ connectionString: await cluster.createDatabase() });
 */
export interface PostgresCluster {
  readonly port: number;
  readonly dataDir: string;
  readonly pid: number;
  /** The URL of `database` (the default "postgres" database if omitted). */
  connectionString(database?: string): string;
  /** Creates an empty database (a fresh unique name unless given); returns its URL. */
  createDatabase(name?: string): Promise<string>;
  /** Fast shutdown (SIGINT), SIGKILL after 10 s, then removes the data directory. */
  stop(): Promise<void>;
}

export interface StartPostgresOptions {
  /** Where initdb and postgres are; found under /usr/lib/postgresql/<version>/bin or on PATH otherwise. */
  binDir?: string;
  /** How long to wait for the server to accept connections; 30 s by default. */
  startTimeoutMs?: number;
}

const debianPackage = 'postgresql';

function hasServerBinaries(dir: string): boolean {
  return existsSync(path.join(dir, 'initdb')) && existsSync(path.join(dir, 'postgres'));
}

/** The directory holding initdb and postgres; throws naming the package to install. */
export function findPostgresBinDir(explicit = process.env['DROVER_POSTGRES_BIN']): string {
  const candidates: string[] = [];
  if (explicit) {
    candidates.push(explicit);
  } else {
    const versionsDir = '/usr/lib/postgresql';
    if (existsSync(versionsDir)) {
      const versions = readdirSync(versionsDir)
        .filter((name) => /^\d+$/.test(name))
        .sort((a, b) => Number(b) - Number(a));
      candidates.push(...versions.map((version) => path.join(versionsDir, version, 'bin')));
    }
    candidates.push(...(process.env['PATH'] ?? '').split(':').filter((dir) => dir !== ''));
  }
  const found = candidates.find(hasServerBinaries);
  if (found === undefined) {
    throw new Error(
      `PostgreSQL server binaries (initdb, postgres) not found in ${candidates.length > 0 ? candidates.join(', ') : 'any directory'}: ` +
        `install the Debian package "${debianPackage}" (or set DROVER_POSTGRES_BIN to their directory)`,
    );
  }
  return found;
}

interface Account {
  uid: number;
  gid: number;
}

/** As root, the `postgres` account to run the server as; otherwise undefined (run as ourselves). */
function serverAccount(): Account | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((entry) => entry.startsWith('postgres:'));
  const [, , uid, gid] = line?.split(':') ?? [];
  if (uid === undefined || gid === undefined) {
    throw new Error(`Running as root, and there is no "postgres" user to run PostgreSQL as: install the Debian package "${debianPackage}"`);
  }
  return { uid: Number(uid), gid: Number(gid) };
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('No free port'))));
    });
  });
}

/** Keeps the last lines a child printed, for error messages. */
function captureOutput(child: ChildProcess): () => string {
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-8000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return () => output.trim();
}

function run(binary: string, args: string[], account: Account | undefined, cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, args, { cwd, env: serverEnv(cwd), stdio: ['ignore', 'pipe', 'pipe'], ...account });
    const output = captureOutput(child);
    child.on('error', reject);
    child.on('exit', (code, signal) =>
      code === 0 ? resolve() : reject(new Error(`${path.basename(binary)} failed (${signal ?? `exit ${code}`}): ${output()}`)),
    );
  });
}

/** No PG* variables from the caller's environment: they would redirect the tools. */
function serverEnv(home: string): NodeJS.ProcessEnv {
  return { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: home, LC_ALL: 'C', LANG: 'C' };
}

function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

async function acceptsConnections(connectionString: string): Promise<boolean> {
  const client = new pg.Client({ connectionString, connectionTimeoutMillis: 1000 });
  try {
    await client.connect();
    await client.query('select 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

interface RunningServer {
  child: ChildProcess;
  port: number;
}

async function startServer(binDir: string, dataDir: string, account: Account | undefined, timeoutMs: number): Promise<RunningServer> {
  // The port may be taken between freePort() and postgres binding it: retry.
  for (let attempt = 1; ; attempt += 1) {
    const port = await freePort();
    const child = spawn(
      path.join(binDir, 'postgres'),
      ['-D', dataDir, '-k', dataDir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off'],
      { cwd: dataDir, env: serverEnv(dataDir), stdio: ['ignore', 'pipe', 'pipe'], ...account },
    );
    const output = captureOutput(child);
    const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    child.once('exit', () => (exited = true));
    while (!exited && Date.now() < deadline) {
      if (await acceptsConnections(url)) return { child, port };
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    if (!exited) {
      child.kill('SIGKILL');
      await waitForExit(child, 5000);
      throw new Error(`PostgreSQL did not accept connections within ${timeoutMs} ms: ${output()}`);
    }
    if (attempt < 3 && /could not bind|Address already in use/i.test(output())) continue;
    throw new Error(`PostgreSQL exited during start-up: ${output()}`);
  }
}

let databaseCounter = 0;

/** Creates, starts and returns a private PostgreSQL cluster; see PostgresCluster. */
export async function startPostgres(options: StartPostgresOptions = {}): Promise<PostgresCluster> {
  const binDir = findPostgresBinDir(options.binDir);
  const account = serverAccount();
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'drover-pg-'));
  if (account) chownSync(dataDir, account.uid, account.gid);

  let child: ChildProcess | undefined;
  // Should the test run end without stop(): no stray server, no stray directory.
  const onExit = () => {
    if (child?.pid !== undefined && child.exitCode === null) child.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  };
  process.once('exit', onExit);

  try {
    await run(
      path.join(binDir, 'initdb'),
      ['-D', dataDir, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-sync'],
      account,
      dataDir,
    );
    const server = await startServer(binDir, dataDir, account, options.startTimeoutMs ?? 30_000);
    child = server.child;
    const { port } = server;
    const serverProcess = server.child;

    const connectionString = (database = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${encodeURIComponent(database)}`;
    let stopping: Promise<void> | undefined;

    return {
      port,
      dataDir,
      pid: serverProcess.pid!,
      connectionString,
      async createDatabase(name = `test_${process.pid}_${++databaseCounter}`) {
        const client = new pg.Client({ connectionString: connectionString(), connectionTimeoutMillis: 10_000 });
        await client.connect();
        try {
          await client.query(`create database "${name.replaceAll('"', '""')}"`);
        } finally {
          await client.end();
        }
        return connectionString(name);
      },
      stop() {
        stopping ??= (async () => {
          serverProcess.kill('SIGINT');
          if (!(await waitForExit(serverProcess, 10_000))) {
            serverProcess.kill('SIGKILL');
            await waitForExit(serverProcess, 5000);
          }
          rmSync(dataDir, { recursive: true, force: true });
          process.removeListener('exit', onExit);
        })();
        return stopping;
      },
    };
  } catch (error) {
    onExit();
    process.removeListener('exit', onExit);
    throw error;
  }
}

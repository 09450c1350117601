import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { errors } from '@drover/core';
import { findQmpSocket } from './argv.js';
import { moduleLogger } from './log.js';
import { QmpClient } from './qmp-client.js';

const log = moduleLogger('drover:qemu:process');

// Short: QEMU answers QMP ~80 ms after spawn, and every poll step adds to start latency. A step
// costs one stat of the socket's path until it exists (a connect attempt only then).
const pollIntervalMs = 2;
const defaultReadyTimeoutMs = 30_000;
const defaultSettleMs = 300;
const logTailBytes = 4096;
const logTailLines = 10;

export interface SpawnQemuOptions {
  /** Run QEMU as this user and group (the agent may run as root, QEMU should not). */
  uid?: number;
  gid?: number;
  /** stdout and stderr are appended to this file (a file, never a pipe: QEMU outlives the agent). */
  logFile: string;
  /** Working directory; `/` by default so QEMU never pins a directory the agent may remove. */
  cwd?: string;
  /** Executable to run; `argv[0]` by default (`argv[0]` stays the name shown in `ps`). */
  binary?: string;
  env?: NodeJS.ProcessEnv;
  /**
   * The process counts as started once this QMP socket answers a command, which QEMU does
   * only after every device and image opened. Defaults to the `-qmp unix:` path in argv.
   */
  readySocket?: string;
  /** How long start-up may take before QEMU is killed and the spawn fails (30 s). */
  readyTimeoutMs?: number;
  /** Return the QMP connection that proved readiness (saves a reconnect on the start path). */
  keepQmp?: boolean;
  /** Without a QMP socket: how long the process must stay up to count as started (300 ms). */
  settleMs?: number;
}

export interface SpawnedQemu {
  pid: number;
  /** The QMP connection that proved QEMU ready, when `keepQmp` was asked for. */
  qmp?: QmpClient;
  /** Field 22 of /proc/PID/stat: with the pid, identifies this process across PID reuse. */
  startTime: number;
}

export interface ProcessInfo {
  pid: number;
  /** False for zombies: an exited process its parent has not reaped yet. */
  alive: boolean;
  /** One-letter state from /proc/PID/stat (R, S, D, Z, T, ...). */
  state: string;
  /** Empty for zombies and kernel threads. */
  cmdline: string[];
  startTime: number;
  /** Real uid. */
  uid: number;
  /** 0 none, 1 strict, 2 filter (QEMU's -sandbox); undefined if the kernel does not say. */
  seccompMode: number | undefined;
}

type ExitStatus = { code: number | null; signal: NodeJS.Signals | null } | { error: Error };

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Last lines QEMU wrote to its log since `offset`, to say why a start failed. */
async function logTail(logFile: string, offset: number): Promise<string> {
  try {
    const handle = await open(logFile, 'r');
    try {
      const { size } = await handle.stat();
      const start = Math.max(offset, size - logTailBytes);
      const buffer = Buffer.alloc(Math.max(0, size - start));
      await handle.read(buffer, 0, buffer.length, start);
      return buffer.toString('utf8').trimEnd().split('\n').slice(-logTailLines).join('\n');
    } finally {
      await handle.close();
    }
  } catch {
    return '';
  }
}

/**
 * True once `path` answers a QMP command. The greeting alone proves little: QEMU's QMP
 * monitor accepts and greets from its own I/O thread while the main thread is still
 * creating devices, but commands run on the main loop, which starts after all of that.
 */
async function qmpAnswers(path: string, timeoutMs: number): Promise<QmpClient | undefined> {
  try {
    return await QmpClient.connect(path, { connectTimeoutMs: timeoutMs });
  } catch {
    return undefined;
  }
}

/**
 * Starts QEMU detached in its own session, so it survives the agent. Resolves once QEMU
 * is up (its QMP socket answers, or it stayed alive `settleMs` when it has none); rejects
 * with `unavailable` and the last lines of its log when it exits during start-up.
 */
export async function spawnQemu(argv: readonly string[], options: SpawnQemuOptions): Promise<SpawnedQemu> {
  const [argv0, ...args] = argv;
  if (argv0 === undefined) throw errors.invalid('Cannot spawn QEMU: the command line is empty');
  const file = options.binary ?? argv0;
  const readySocket = options.readySocket ?? findQmpSocket(argv);
  const readyTimeoutMs = options.readyTimeoutMs ?? defaultReadyTimeoutMs;

  const logHandle = await open(options.logFile, 'a', 0o640);
  let logOffset: number;
  let exited: Promise<ExitStatus>;
  let child;
  try {
    logOffset = (await logHandle.stat()).size;
    child = spawn(file, args, {
      argv0,
      detached: true,
      stdio: ['ignore', logHandle.fd, logHandle.fd],
      cwd: options.cwd ?? '/',
      env: options.env ?? process.env,
      ...(options.uid === undefined ? {} : { uid: options.uid }),
      ...(options.gid === undefined ? {} : { gid: options.gid }),
    });
    // Listen before the next await: a missing binary is reported as an 'error' event on the next tick.
    const spawned = child;
    exited = new Promise<ExitStatus>((resolve) => {
      spawned.once('exit', (code, signal) => resolve({ code, signal }));
      spawned.once('error', (error) => resolve({ error }));
    });
    child.unref();
  } finally {
    // The child holds its own copy of the descriptor.
    await logHandle.close();
  }

  const fail = async (status: ExitStatus): Promise<never> => {
    if ('error' in status) {
      throw errors.unavailable(`Cannot start QEMU "${file}": ${status.error.message}`, { binary: file }, status.error);
    }
    const tail = await logTail(options.logFile, logOffset);
    const how = status.signal === null ? `with code ${status.code}` : `on signal ${status.signal}`;
    throw errors.unavailable(`QEMU exited during start-up ${how}${tail === '' ? '' : `: ${tail}`}`, {
      binary: file,
      exitCode: status.code,
      signal: status.signal,
      logFile: options.logFile,
      log: tail,
    });
  };

  // Filled in as soon as the child exits (the callback runs before the race below resumes).
  const outcome: { status: ExitStatus | undefined } = { status: undefined };
  void exited.then((status) => (outcome.status = status));
  const started = Date.now();
  for (;;) {
    await Promise.race([sleep(pollIntervalMs), exited]);
    if (outcome.status !== undefined) return fail(outcome.status);
    const pid = child.pid;
    if (pid === undefined) continue;
    const qmp = readySocket === undefined || !existsSync(readySocket) ? undefined : await qmpAnswers(readySocket, 1_000);
    const ready = readySocket === undefined ? Date.now() - started >= (options.settleMs ?? defaultSettleMs) : qmp !== undefined;
    if (outcome.status !== undefined) {
      await qmp?.close();
      return fail(outcome.status);
    }
    if (ready) {
      const info = await readProcessStat(pid);
      if (info === undefined || !info.alive) {
        await qmp?.close();
        return fail(await exited);
      }
      log.debug({ pid, binary: file }, 'QEMU started');
      // QEMU serves one QMP client at a time: hand over the connection instead of reconnecting.
      if (qmp && options.keepQmp) return { pid, startTime: info.startTime, qmp };
      await qmp?.close();
      return { pid, startTime: info.startTime };
    }
    if (Date.now() - started > readyTimeoutMs) {
      // The caller never gets this pid: do not leave a half-started QEMU behind.
      await killProcess(pid, 'SIGKILL');
      await exited;
      throw errors.timeout(
        `QEMU did not answer on its QMP socket "${readySocket}" within ${readyTimeoutMs} ms; it was killed`,
        { binary: file, pid, readySocket, log: await logTail(options.logFile, logOffset) },
      );
    }
  }
}

function isGone(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ESRCH';
}

function checkPid(pid: number): void {
  // kill(0) and kill(-1) signal whole groups or every process: never let a bad pid get there.
  if (!Number.isInteger(pid) || pid <= 1) throw errors.invalid(`Invalid process id ${pid}`);
}

/** State (field 3) and start time (field 22) from the text of /proc/PID/stat. */
function parseStat(stat: string): { state: string; startTime: number } {
  // comm (field 2) may hold spaces and parentheses: the fields start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { state: fields[0] ?? '?', startTime: Number(fields[22 - 3]) };
}

/** Facts about a process from /proc, or undefined when it no longer exists. */
export async function readProcessInfo(pid: number): Promise<ProcessInfo | undefined> {
  checkPid(pid);
  try {
    const [stat, status, cmdline] = await Promise.all([
      readFile(`/proc/${pid}/stat`, 'utf8'),
      readFile(`/proc/${pid}/status`, 'utf8'),
      readFile(`/proc/${pid}/cmdline`),
    ]);
    const { state, startTime } = parseStat(stat);
    const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1] ?? NaN);
    const seccomp = /^Seccomp:\s+(\d+)/m.exec(status)?.[1];
    const args = cmdline.toString('utf8').split('\0');
    if (args.at(-1) === '') args.pop();
    return {
      pid,
      alive: state !== 'Z' && state !== 'X',
      state,
      cmdline: args,
      startTime,
      uid,
      seccompMode: seccomp === undefined ? undefined : Number(seccomp),
    };
  } catch (error) {
    if (isGone(error)) return undefined;
    throw error;
  }
}

/** The state and start time of a process, from /proc/PID/stat alone (one read; `readProcessInfo` makes three). */
export async function readProcessStat(pid: number): Promise<Pick<ProcessInfo, 'pid' | 'alive' | 'state' | 'startTime'> | undefined> {
  checkPid(pid);
  try {
    const { state, startTime } = parseStat(await readFile(`/proc/${pid}/stat`, 'utf8'));
    return { pid, alive: state !== 'Z' && state !== 'X', state, startTime };
  } catch (error) {
    if (isGone(error)) return undefined;
    throw error;
  }
}

/** True when `pid` is alive and still the process that started at `startTime` (not a reused pid). */
export async function isSameProcess(pid: number, startTime: number): Promise<boolean> {
  const info = await readProcessStat(pid);
  return info !== undefined && info.alive && info.startTime === startTime;
}

/**
 * Sends `signal` to `pid`. Returns false when there is no such process, or, with
 * `startTime`, when the pid now belongs to another process (nothing is sent then).
 */
export async function killProcess(
  pid: number,
  signal: NodeJS.Signals | number = 'SIGTERM',
  options: { startTime?: number } = {},
): Promise<boolean> {
  checkPid(pid);
  if (options.startTime !== undefined && !(await isSameProcess(pid, options.startTime))) return false;
  try {
    process.kill(pid, signal);
    return true;
  } catch (error) {
    if (isGone(error)) return false;
    throw error;
  }
}

/**
 * Waits until `pid` has exited (a zombie counts as exited). Resolves true when it did,
 * false when it is still running after `timeoutMs`.
 */
export async function waitForExit(
  pid: number,
  timeoutMs: number,
  options: { startTime?: number } = {},
): Promise<boolean> {
  checkPid(pid);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const info = await readProcessInfo(pid);
    const gone =
      info === undefined || !info.alive || (options.startTime !== undefined && info.startTime !== options.startTime);
    if (gone) return true;
    if (Date.now() >= deadline) return false;
    await sleep(pollIntervalMs);
  }
}

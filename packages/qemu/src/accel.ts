import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { errors } from '@drover/core';
import { escapeOptionValue } from './argv.js';
import type { Accelerator } from './launch-config.js';
import { moduleLogger } from './log.js';
import { killProcess } from './process.js';

const log = moduleLogger('drover:qemu:accel');

const defaultProbeTimeoutMs = 8_000;
const pollIntervalMs = 100;
const maxSerialBytes = 1024 * 1024;

export type AccelOverride = 'auto' | Accelerator;

export interface ProbeAcceleratorOptions {
  /** A small guest that prints `expect` on its serial console (ttyS0) once it runs. */
  kernel: string;
  initrd?: string;
  cmdline: string;
  expect: string;
  /** How long the probe guest may take under KVM before KVM is declared unusable (8 s). */
  timeoutMs?: number;
  binary?: string;
  /** `max` by default: what the agent runs KVM guests with. */
  cpuModel?: string;
  /** The KVM device to try first; only tests change it. */
  kvmDevice?: string;
}

export interface AcceleratorChoice {
  accel: Accelerator;
  /** One sentence for logs and host facts: why this accelerator. */
  reason: string;
}

export type ProbeBootOutcome =
  | { outcome: 'found'; elapsedMs: number }
  | { outcome: 'timeout' }
  | { outcome: 'exited'; code: number | null; signal: NodeJS.Signals | null; log: string };

export interface ProbeBootOptions {
  binary: string;
  /** Accelerator and CPU arguments, e.g. `['-accel', 'kvm', '-cpu', 'max']`. */
  accelArgs: string[];
  kernel: string;
  initrd?: string;
  cmdline: string;
  expect: string;
  timeoutMs: number;
}

/**
 * Parses the operator's accelerator setting (`auto`, `kvm` or `tcg`; empty means auto).
 * @example parseAccelOverride(process.env.DROVER_ACCEL)
 */
export function parseAccelOverride(value: string | undefined): AccelOverride {
  const normalized = (value ?? '').trim().toLowerCase();
  if (normalized === '' || normalized === 'auto') return 'auto';
  if (normalized === 'kvm' || normalized === 'tcg') return normalized;
  throw errors.invalid(`Invalid accelerator "${value}": expected "auto", "kvm" or "tcg"`, { value });
}

async function readUpTo(path: string, maxBytes: number): Promise<string> {
  try {
    const handle = await open(path, 'r');
    try {
      const buffer = Buffer.alloc(maxBytes);
      const { bytesRead } = await handle.read(buffer, 0, maxBytes, 0);
      return buffer.subarray(0, bytesRead).toString('utf8');
    } finally {
      await handle.close();
    }
  } catch {
    return '';
  }
}

/**
 * Boots a probe guest and watches its serial output for `expect`. The QEMU is always
 * killed by its pid and its temporary directory removed, whatever the outcome.
 */
export async function watchProbeBoot(options: ProbeBootOptions): Promise<ProbeBootOutcome> {
  const dir = await mkdtemp(join(tmpdir(), 'drover-accel-probe-'));
  const serialFile = join(dir, 'serial.log');
  const logFile = join(dir, 'qemu.log');
  const args = [
    '-name', 'guest=drover-accel-probe',
    '-nodefaults', '-no-user-config', '-display', 'none',
    '-machine', 'q35',
    ...options.accelArgs,
    '-smp', '1',
    '-m', '128M',
    '-kernel', options.kernel,
    ...(options.initrd === undefined ? [] : ['-initrd', options.initrd]),
    '-append', options.cmdline,
    '-chardev', `file,id=probe0,path=${escapeOptionValue(serialFile)}`,
    '-serial', 'chardev:probe0',
    // A guest that panics and reboots must end the probe, not loop in it.
    '-no-reboot',
  ];
  const logHandle = await open(logFile, 'w', 0o600);
  let child: ChildProcess | undefined;
  let exited: Promise<unknown> = Promise.resolve();
  try {
    child = spawn(options.binary, args, { stdio: ['ignore', logHandle.fd, logHandle.fd], cwd: dir });
    const state: { exit?: { code: number | null; signal: NodeJS.Signals | null }; spawnError?: Error } = {};
    const spawned = child;
    exited = new Promise<void>((resolve) => {
      spawned.once('exit', (code, signal) => {
        state.exit = { code, signal };
        resolve();
      });
      spawned.once('error', (error) => {
        state.spawnError = error;
        resolve();
      });
    });
    const started = Date.now();
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, pollIntervalMs));
      if ((await readUpTo(serialFile, maxSerialBytes)).includes(options.expect)) {
        return { outcome: 'found', elapsedMs: Date.now() - started };
      }
      if (state.spawnError !== undefined) {
        return { outcome: 'exited', code: null, signal: null, log: state.spawnError.message };
      }
      const exit = state.exit;
      if (exit !== undefined) {
        const tail = (await readUpTo(logFile, 64 * 1024)).trim().split('\n').slice(-5).join('\n');
        return { outcome: 'exited', code: exit.code, signal: exit.signal, log: tail };
      }
      if (Date.now() - started >= options.timeoutMs) return { outcome: 'timeout' };
    }
  } finally {
    await logHandle.close();
    // Only a child not yet reaped: once reaped, its pid may already belong to someone else.
    const pid = child?.pid;
    if (pid !== undefined && child?.exitCode === null && child.signalCode === null) {
      await killProcess(pid, 'SIGKILL');
    }
    // Reap before removing the directory QEMU writes into.
    await exited;
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Decides between KVM and TCG by trying KVM for real: on some hosts /dev/kvm opens and
 * VM creation works, yet guests hang or QEMU aborts on MSR set-up. KVM wins only when the
 * probe guest prints `expect` within the timeout.
 */
export async function probeAccelerator(options: ProbeAcceleratorOptions): Promise<AcceleratorChoice> {
  const kvmDevice = options.kvmDevice ?? '/dev/kvm';
  try {
    await (await open(kvmDevice, constants.O_RDWR)).close();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    return { accel: 'tcg', reason: `${kvmDevice} cannot be opened (${code}): using TCG` };
  }
  const timeoutMs = options.timeoutMs ?? defaultProbeTimeoutMs;
  const result = await watchProbeBoot({
    binary: options.binary ?? 'qemu-system-x86_64',
    accelArgs: ['-accel', 'kvm', '-cpu', options.cpuModel ?? 'max'],
    kernel: options.kernel,
    initrd: options.initrd,
    cmdline: options.cmdline,
    expect: options.expect,
    timeoutMs,
  });
  let choice: AcceleratorChoice;
  switch (result.outcome) {
    case 'found':
      choice = { accel: 'kvm', reason: `a KVM probe guest printed "${options.expect}" after ${result.elapsedMs} ms` };
      break;
    case 'timeout':
      choice = {
        accel: 'tcg',
        reason: `a KVM probe guest did not print "${options.expect}" within ${timeoutMs} ms (the guest hangs or crawls under KVM): using TCG`,
      };
      break;
    case 'exited': {
      const how = result.signal === null ? `with code ${result.code}` : `on signal ${result.signal}`;
      const why = result.log === '' ? '' : `: ${result.log.split('\n').join(' | ')}`;
      choice = { accel: 'tcg', reason: `the KVM probe QEMU exited ${how}${why}: using TCG` };
      break;
    }
  }
  log.info({ accel: choice.accel, reason: choice.reason }, 'accelerator chosen');
  return choice;
}

/** The operator's choice when it is not `auto`; otherwise the probe decides. */
export async function resolveAccelerator(
  override: AccelOverride,
  probe: ProbeAcceleratorOptions,
): Promise<AcceleratorChoice> {
  if (override !== 'auto') return { accel: override, reason: `set to "${override}" by configuration` };
  return probeAccelerator(probe);
}

import { spawn } from 'node:child_process';
import { DroverError, errors } from '@drover/core';

export interface RunOptions {
  timeoutMs?: number;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/**
 * Runs a build tool (mke2fs, qemu-img, gcc) with a timeout. A missing tool,
 * a non-zero exit or a timeout becomes a DroverError naming the command.
 */
export function runTool(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? 120_000;
  const shown = [command, ...args].join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (cause) => {
      clearTimeout(timer);
      reject(errors.unavailable(`Cannot run ${command}: ${cause.message}`, { command: shown }, cause));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) {
        reject(errors.timeout(`${command} did not finish within ${timeoutMs} ms`, { command: shown }));
      } else if (code !== 0) {
        const detail = stderr.trim() || stdout.trim() || `signal ${signal ?? 'none'}`;
        reject(
          new DroverError('internal', `${command} failed (exit ${code ?? signal}): ${detail.slice(0, 2000)}`, {
            details: { command: shown, exitCode: code, stderr: stderr.slice(0, 4000) },
          }),
        );
      } else {
        resolve({ stdout, stderr });
      }
    });
  });
}

import { spawn } from 'node:child_process';
import { errors } from '@drover/core';

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a program with a hard time limit. The child gets its own process group
 * and the whole group is SIGKILLed at the limit: a shell command whose
 * grandchild hangs (`ssh` to a dead BMC, `sleep`) must not keep the call open
 * through the pipes it inherited. Output is capped at 64 KiB per stream.
 */
export function runCommand(file: string, args: string[], options: { timeoutMs: number; env?: NodeJS.ProcessEnv; what: string }): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env } });
    let stdout = '';
    let stderr = '';
    let settled = false;
    const cap = 64 * 1024;
    child.stdout.on('data', (chunk: Buffer) => {
      if (stdout.length < cap) stdout += chunk.toString('utf8');
    });
    child.stderr.on('data', (chunk: Buffer) => {
      if (stderr.length < cap) stderr += chunk.toString('utf8');
    });
    const killGroup = () => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    };
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      killGroup();
      reject(errors.timeout(`${options.what} did not answer within ${options.timeoutMs} ms; it was killed`, { timeoutMs: options.timeoutMs }));
    }, options.timeoutMs);
    child.on('error', (error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(errors.unavailable(`${options.what} could not be run: ${error.message}`, { program: file }));
    });
    child.on('close', (code) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      // Whatever the command left running in its group goes with it.
      killGroup();
      resolve({ code, stdout, stderr });
    });
  });
}

/** The last non-empty line of a command's error output, for messages. */
export function lastLine(text: string): string {
  return text.trim().split('\n').filter(Boolean).at(-1)?.trim().slice(0, 300) ?? '';
}

import { execFile } from 'node:child_process';
import { DroverError, errors } from '@drover/core';

export interface OpensslRun {
  stdout: string;
  stderr: string;
}

export interface OpensslOptions {
  /** Written to the child's stdin (PEM input), then stdin is closed. */
  input?: string;
  /** Working directory: generated configs name their files relative to it. */
  cwd?: string;
  timeoutMs?: number;
}

export const defaultOpensslTimeoutMs = 30_000;

/**
 * Runs the `openssl` CLI without a shell: every path and value is one argv element,
 * so nothing an agent sends (a CSR, a name) is ever parsed by a shell. A non-zero
 * exit is an `internal` error carrying the tail of stderr; callers that feed
 * untrusted input catch it and report `invalid` instead.
 *
 * Beware: OpenSSL 3.0 exits 0 from `crl -CAfile`, `req -verify` and `ca` when a
 * signature does not verify, so the exit code alone never proves success.
 */
export function runOpenssl(args: readonly string[], options: OpensslOptions = {}): Promise<OpensslRun> {
  const timeoutMs = options.timeoutMs ?? defaultOpensslTimeoutMs;
  return new Promise((resolve, reject) => {
    const child = execFile(
      'openssl',
      [...args],
      {
        cwd: options.cwd,
        timeout: timeoutMs,
        killSignal: 'SIGKILL',
        maxBuffer: 4 * 1024 * 1024,
        encoding: 'utf8',
        windowsHide: true,
      },
      (error, stdout, stderr) => {
        if (!error) {
          resolve({ stdout, stderr });
          return;
        }
        const failure = error as NodeJS.ErrnoException & { killed?: boolean; code?: string | number };
        if (failure.code === 'ENOENT') {
          reject(errors.unavailable('the openssl command is not installed', { command: 'openssl' }, error));
        } else if (failure.killed) {
          reject(errors.timeout(`openssl ${args[0] ?? ''} did not finish within ${timeoutMs} ms`, { command: args[0], timeoutMs }));
        } else {
          reject(
            new DroverError('internal', `openssl ${args[0] ?? ''} failed: ${lastLines(stderr)}`, {
              details: { command: args[0], exitCode: failure.code, stderr: lastLines(stderr) },
              cause: error,
            }),
          );
        }
      },
    );
    // The child may exit before reading its input (bad arguments): ignore EPIPE,
    // the exit status tells what went wrong.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(options.input ?? '');
  });
}

function lastLines(text: string): string {
  return text.trim().split('\n').slice(-4).join(' | ').slice(0, 1000);
}

import { DroverError, isErrorCode } from '@drover/core';
import { seg, sleep, type DroverClient } from './client.js';
import { clean, type Output } from './output.js';
import type { Operation } from './types.js';

/**
 * Waiting for an operation to end, by polling `GET /operations/:id`, and showing
 * how far it got: a redrawn bar on a terminal, a line per change otherwise.
 */

const finishedStates: ReadonlySet<string> = new Set(['done', 'failed', 'cancelled', 'rolled_back']);

export function isFinished(operation: Operation): boolean {
  return finishedStates.has(operation.state);
}

export interface WaitOptions {
  /** Default 200 ms. */
  intervalMs?: number | undefined;
  signal?: AbortSignal | undefined;
  onUpdate?: ((operation: Operation) => void) | undefined;
  /**
   * How long the manager may stay unreachable while we wait. Operations are
   * journaled and a restarted manager resumes them, so a short outage is not a
   * failure of the operation. Default 30 s.
   */
  outageGraceMs?: number | undefined;
}

export async function waitForOperation(client: DroverClient, initial: Operation, options: WaitOptions = {}): Promise<Operation> {
  const interval = options.intervalMs ?? 200;
  const grace = options.outageGraceMs ?? 30_000;
  let operation = initial;
  let unreachableSince: number | undefined;
  options.onUpdate?.(operation);
  while (!isFinished(operation)) {
    await sleep(interval, options.signal);
    if (options.signal?.aborted) throw new WaitInterrupted(operation);
    try {
      operation = await client.get<Operation>(`/operations/${seg(operation.id)}`);
      unreachableSince = undefined;
    } catch (error) {
      if (options.signal?.aborted) throw new WaitInterrupted(operation);
      const transient = error instanceof DroverError && (error.code === 'unavailable' || error.code === 'timeout');
      unreachableSince ??= Date.now();
      if (!transient || Date.now() - unreachableSince > grace) throw error;
      continue;
    }
    options.onUpdate?.(operation);
  }
  return operation;
}

/** Thrown when the user stops waiting (Ctrl-C); the operation itself goes on. */
export class WaitInterrupted extends Error {
  constructor(readonly operation: Operation) {
    super(`Stopped waiting for operation ${operation.id}; it goes on in the manager`);
  }
}

/**
 * The error an ended operation stands for, or undefined when it succeeded. A failed
 * operation keeps its own code (so the exit code says why it failed); one that was
 * cancelled or rolled back without an error is a conflict with what happened meanwhile.
 */
export function operationError(operation: Operation): DroverError | undefined {
  if (operation.state === 'done') return undefined;
  const details: Record<string, unknown> = { ...(operation.error?.details ?? {}), operationId: operation.id, kind: operation.kind, state: operation.state };
  const fallback = operation.state === 'failed' ? 'internal' : 'conflict';
  const code = isErrorCode(operation.error?.code) ? operation.error.code : fallback;
  if (operation.error && !isErrorCode(operation.error.code)) details.serverCode = operation.error.code;
  const message = operation.error?.message || `Operation ${operation.id} (${operation.kind}) ended ${operation.state.replace('_', ' ')}`;
  return new DroverError(code, message, { details });
}

export interface ProgressReporter {
  update(operation: Operation): void;
  /** Clears the bar; the caller then prints the outcome. */
  finish(): void;
}

export type ProgressMode = 'bar' | 'lines' | 'none';

export function progressMode(stderr: Output, json: boolean): ProgressMode {
  if (stderr.isTTY) return 'bar';
  // With --json, stderr carries only the error document: scripts parse it.
  return json ? 'none' : 'lines';
}

export function createProgress(stream: Output, mode: ProgressMode, label: string, now: () => number = Date.now): ProgressReporter {
  const started = now();
  if (mode === 'none') return { update: () => undefined, finish: () => undefined };
  if (mode === 'lines') {
    // A line when the state or phase changes, or progress moves by 10 points: a log, not a flood.
    let last: { state: string; phase: string; progress: number } | undefined;
    return {
      update(operation) {
        const changed = !last || last.state !== operation.state || last.phase !== operation.phase || operation.progress - last.progress >= 10;
        if (!changed) return;
        stream.write(`${clean(`${label}: ${operation.state}${operation.phase ? `, ${operation.phase}` : ''} (${operation.progress}%)`)}\n`);
        last = { state: operation.state, phase: operation.phase, progress: operation.progress };
      },
      finish: () => undefined,
    };
  }
  let drawn = false;
  return {
    update(operation) {
      stream.write(`\r\x1b[2K${renderBar(label, operation, now() - started, stream.columns || 80)}`);
      drawn = true;
    },
    finish() {
      if (drawn) stream.write('\r\x1b[2K');
      drawn = false;
    },
  };
}

export function renderBar(label: string, operation: Operation, elapsedMs: number, columns: number): string {
  const barWidth = 24;
  const progress = Math.max(0, Math.min(100, Math.round(operation.progress)));
  const filled = Math.round((progress / 100) * barWidth);
  const bar = `[${'#'.repeat(filled)}${'.'.repeat(barWidth - filled)}]`;
  const phase = operation.phase || operation.state;
  const line = clean(`${label} ${bar} ${String(progress).padStart(3)}%  ${phase}  ${Math.floor(elapsedMs / 1000)}s`);
  // Never wrap: a wrapped line cannot be redrawn in place.
  const width = columns > 0 ? columns : 80;
  return line.length >= width ? line.slice(0, width - 1) : line;
}

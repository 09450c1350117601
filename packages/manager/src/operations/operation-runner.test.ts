import { rmSync } from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errors, rejectionOf } from '@drover/core';
import { tempDir } from '@drover/agent/testing';
import { openSqliteStore } from '../store/sqlite-store.js';
import type { Store } from '../store/index.js';
import { EventHub } from '../http/event-hub.js';
import { OperationRunner, type OperationContext } from './operation-runner.js';

/**
 * Cancellation as the runner implements it, on the real embedded store. The
 * handlers here are test doubles: what a real start does when cancelled is
 * covered with QEMU in the manager's tests.
 */
const dir = tempDir('runner');
let store: Store;
let runner: OperationRunner;
const undone: string[] = [];

/** A handler that walks through phases, waiting for `release` in the one named `gate`. */
function gated(gate: string) {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let reached!: () => void;
  const atGate = new Promise<void>((r) => (reached = r));
  return {
    release,
    atGate,
    handler: {
      run: async (ctx: OperationContext) => {
        await ctx.phase('download', 10);
        if (gate === 'download') {
          reached();
          await Promise.race([released, new Promise((r) => ctx.signal.addEventListener('abort', r))]);
        }
        await ctx.phase('boot', 60);
        if (gate === 'boot') {
          reached();
          await released;
        }
        return { ok: true };
      },
      recover: async () => ({}),
      compensate: async (ctx: OperationContext) => {
        undone.push(ctx.op.id);
      },
      cancellable: (op: { phase: string }) => op.phase === 'pending' || op.phase === 'download',
    },
  };
}

beforeAll(async () => {
  store = await openSqliteStore({ file: path.join(dir, 'drover.db') });
  runner = new OperationRunner(store, new EventHub(), pino({ level: 'silent' }));
});

afterAll(async () => {
  await runner.drain();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('cancelling operations', () => {
  it('stops a cancellable phase, undoes the work and ends cancelled', async () => {
    const g = gated('download');
    runner.register('test.cancel', g.handler);
    const op = await runner.submit({ kind: 'test.cancel', targetKind: 'vm', targetId: 't1', actor: 'alice' }, 'T1');
    await g.atGate;
    const ended = await runner.cancel(op.id, 'alice');
    expect(ended.state).toBe('cancelled');
    expect(ended.error).toMatchObject({ code: 'cancelled' });
    expect(ended.error?.message).toContain('alice');
    expect(ended.journal.map((j) => j.phase)).toEqual(['download']); // never reached boot
    expect(undone).toContain(op.id);
    // The target is free again.
    expect(await runner.busyWith('t1')).toBeUndefined();
  });

  it('refuses (409) to cancel a phase that cannot be interrupted, and the operation finishes', async () => {
    const g = gated('boot');
    runner.register('test.boot', g.handler);
    const op = await runner.submit({ kind: 'test.boot', targetKind: 'vm', targetId: 't2', actor: 'alice' }, 'T2');
    await g.atGate;
    const refusal = await rejectionOf(runner.cancel(op.id, 'alice'));
    expect(refusal).toMatchObject({ code: 'conflict' });
    expect(refusal.message).toContain('phase "boot"');
    g.release();
    expect((await runner.wait(op.id, 10_000)).state).toBe('done');
    expect(undone).not.toContain(op.id);
  });

  it('refuses to cancel an ended operation, an unknown one, and a kind without cancellation', async () => {
    runner.register('test.plain', { run: async () => ({}), recover: async () => ({}) });
    const op = await runner.submit({ kind: 'test.plain', targetKind: 'vm', targetId: 't3', actor: 'alice' }, 'T3');
    await runner.wait(op.id, 10_000);
    expect(await rejectionOf(runner.cancel(op.id, 'alice'))).toMatchObject({ code: 'conflict' });
    expect(await rejectionOf(runner.cancel('00000000-0000-4000-8000-000000000000', 'alice'))).toMatchObject({ code: 'not_found' });
    let release!: () => void;
    runner.register('test.slow', { run: () => new Promise((r) => (release = () => r({}))), recover: async () => ({}) });
    const slow = await runner.submit({ kind: 'test.slow', targetKind: 'vm', targetId: 't4', actor: 'alice' }, 'T4');
    await new Promise((r) => setTimeout(r, 50));
    expect(await rejectionOf(runner.cancel(slow.id, 'alice'))).toMatchObject({ code: 'conflict' });
    release();
    expect((await runner.wait(slow.id, 10_000)).state).toBe('done');
  });

  it('a cancel whose undo fails ends failed, not cancelled', async () => {
    const g = gated('download');
    runner.register('test.badundo', {
      ...g.handler,
      compensate: async () => {
        throw errors.unavailable('host gone');
      },
    });
    const op = await runner.submit({ kind: 'test.badundo', targetKind: 'vm', targetId: 't5', actor: 'alice' }, 'T5');
    await g.atGate;
    expect((await runner.cancel(op.id, 'alice')).state).toBe('failed');
  });
});

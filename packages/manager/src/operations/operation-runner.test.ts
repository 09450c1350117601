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
import { withRequestAudit, type RequestAudit } from '../access/request-audit.js';

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

describe('a phase entered without a commit (mark)', () => {
  it('is the phase at once for cancels, is written with the next write, and its journal entry keeps its place', async () => {
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let reached!: () => void;
    const atBoot = new Promise<void>((r) => (reached = r));
    runner.register('test.mark', {
      run: async (ctx) => {
        await ctx.phase('download', 10);
        ctx.mark('boot', 60, 'asking the host');
        reached();
        await released;
        await ctx.progress(80);
        await ctx.phase('settle', 90);
        return {};
      },
      recover: async () => ({}),
      compensate: async () => undefined,
      cancellable: (op) => op.phase === 'download',
    });
    const seq = await store.events.lastSeq();
    const op = await runner.submit({ kind: 'test.mark', targetKind: 'vm', targetId: 't8', actor: 'alice' }, 'T8');
    await atBoot;
    // Not in the store yet (no commit of its own), but what the runner shows (GET /operations/:id)…
    expect((await store.operations.get(op.id)).phase).toBe('download');
    expect((await runner.get(op.id)).phase).toBe('boot');
    // …but a cancel sees it: refused, and the operation goes on.
    expect(await rejectionOf(runner.cancel(op.id, 'alice'))).toMatchObject({ code: 'conflict', message: expect.stringContaining('"boot"') });
    release();
    const ended = await runner.wait(op.id, 10_000);
    expect(ended.state).toBe('done');
    expect(ended.journal.map((j) => [j.phase, j.note])).toEqual([
      ['download', undefined],
      ['boot', 'asking the host'],
      ['settle', undefined],
    ]);
    // The progress write after the mark carried the phase: boot is seen, in order, without a write of its own.
    const phases = (await store.events.since(seq)).filter((e) => e.objectId === op.id).map((e) => (e.data as { phase: string; progress: number }));
    // Created pending, marked running (still "pending" as its phase), then one write per step.
    expect(phases.map((p) => `${p.phase} ${p.progress}`)).toEqual(['pending 0', 'pending 0', 'download 10', 'boot 80', 'settle 90', 'done 100']);
  });
});

describe('the submitting request\'s audit record', () => {
  it('commits with the operation, before the operation acts; a refused submission leaves it unwritten', async () => {
    const g = gated('download');
    runner.register('test.audited', g.handler);
    const entry = { actor: 'alice', action: 'POST /api/v1/things/:id/act', target: '/api/v1/things/t9/act', source: '127.0.0.1', decision: 'allow' as const, reason: 'thing.act', status: 202 };
    const before = (await store.audit.list({ limit: 1000 })).length;
    const audit: RequestAudit = { entry: (status) => ({ ...entry, status }), operationStatus: 202 };
    const op = await withRequestAudit(audit, () => runner.submit({ kind: 'test.audited', targetKind: 'vm', targetId: 't9', actor: 'alice' }, 'T9'));
    await g.atGate;
    // The handler has not finished: the record is there already, once.
    expect(audit.written).toBe(202);
    const records = (await store.audit.list({ limit: 1000 }));
    expect(records.length).toBe(before + 1);
    expect(records.filter((r) => r.target === entry.target)).toEqual([expect.objectContaining({ ...entry })]);
    // A second submission on the busy target is refused: its request's record is left to the HTTP layer.
    const refused: RequestAudit = { entry: (status) => ({ ...entry, target: '/api/v1/things/t9/again', status }), operationStatus: 202 };
    expect(await rejectionOf(withRequestAudit(refused, () => runner.submit({ kind: 'test.audited', targetKind: 'vm', targetId: 't9', actor: 'alice' }, 'T9')))).toMatchObject({ code: 'conflict' });
    expect(refused.written).toBeUndefined();
    expect((await store.audit.list({ limit: 1000 })).length).toBe(before + 1);
    g.release();
    expect((await runner.wait(op.id, 10_000)).state).toBe('done');
    expect((await store.audit.verify()).ok).toBe(true);
  });
});

describe('a first phase named when submitting', () => {
  it('is journaled with the operation: created running in that phase, with what `before` wrote, and the handler goes on from it', async () => {
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let seenByHandler: { state: string; phase: string; journal: string[] } | undefined;
    runner.register('test.first', {
      run: async (ctx) => {
        seenByHandler = { state: ctx.op.state, phase: ctx.op.phase, journal: ctx.op.journal.map((j) => j.phase) };
        await released;
        await ctx.phase('boot', 60);
        return {};
      },
      recover: async () => ({}),
    });
    const seq = await store.events.lastSeq();
    const op = await runner.submit({ kind: 'test.first', targetKind: 'vm', targetId: 't6', actor: 'alice' }, 'T6', async () => ({
      params: { hostId: 'h-first' },
      events: [{ type: 'test.placed', objectKind: 'vm', objectId: 't6', data: {} }],
      phase: { name: 'prepare', progress: 10, note: 'placed on h-first' },
    }));
    // As answered and as stored, before the handler acted: running, in its first phase, started.
    for (const seen of [op, await store.operations.get(op.id)]) {
      expect(seen).toMatchObject({ state: 'running', phase: 'prepare', progress: 10, params: { hostId: 'h-first' } });
      expect(seen.startedAt).not.toBeNull();
      expect(seen.journal).toEqual([{ phase: 'prepare', at: expect.any(String), note: 'placed on h-first' }]);
    }
    release();
    const ended = await runner.wait(op.id, 10_000);
    expect(seenByHandler).toEqual({ state: 'running', phase: 'prepare', journal: ['prepare'] });
    expect(ended.state).toBe('done');
    expect(ended.journal.map((j) => j.phase)).toEqual(['prepare', 'boot']);
    // One write per step: `before`'s event with the creation, then the boot phase, then the end; no pending → running step.
    const events = (await store.events.since(seq)).filter((e) => e.objectId === op.id || e.objectId === 't6');
    expect(events.map((e) => [e.type, (e.data as { state?: string }).state, (e.data as { phase?: string }).phase])).toEqual([
      ['test.placed', undefined, undefined],
      ['operation.updated', 'running', 'prepare'],
      ['operation.updated', 'running', 'boot'],
      ['operation.updated', 'done', 'done'],
    ]);
  });

  it('without one, the operation is created pending and marked running when it starts', async () => {
    runner.register('test.nofirst', { run: async (ctx) => ctx.phase('work', 50), recover: async () => ({}) });
    const op = await runner.submit({ kind: 'test.nofirst', targetKind: 'vm', targetId: 't7', actor: 'alice' }, 'T7');
    expect(op).toMatchObject({ state: 'pending', phase: 'pending', startedAt: null, journal: [] });
    const ended = await runner.wait(op.id, 10_000);
    expect(ended.state).toBe('done');
    expect(ended.startedAt).not.toBeNull();
    expect(ended.journal.map((j) => j.phase)).toEqual(['work']);
  });
});

describe('phases with joined writes', () => {
  it('commits a phase\'s journal entry with its writes and events, or neither', async () => {
    const seen: string[] = [];
    runner.register('test.joined', {
      run: async (ctx: OperationContext) => {
        await ctx.phase('flip', 50, 'owner → b', async () => [{ type: 'test.flipped', objectKind: 'vm', objectId: 't9', data: { to: 'b' } }]);
        seen.push(...ctx.op.journal.map((j) => j.phase));
        // A write that fails takes its journal entry with it.
        const failed = await rejectionOf(ctx.phase('never', 70, undefined, async () => {
          throw errors.unavailable('the store write failed');
        }));
        expect(failed.message).toBe('the store write failed');
        return { ok: true };
      },
      recover: async () => ({}),
    });
    const op = await runner.submit({ kind: 'test.joined', targetKind: 'vm', targetId: 't9', actor: 'alice' }, 'T9');
    const ended = await runner.wait(op.id, 10_000);
    expect(ended.state).toBe('done');
    expect(seen).toEqual(['flip']);
    expect(ended.journal.map((j) => j.phase)).toEqual(['flip']);
    const events = (await store.events.since(0, 10_000)).filter((e) => e.objectId === 't9' || e.objectId === op.id);
    expect(events.filter((e) => e.type === 'test.flipped')).toHaveLength(1);
    // The flip's event precedes the operation update that journaled it, in the same commit.
    const flipped = events.findIndex((e) => e.type === 'test.flipped');
    expect(events[flipped + 1]).toMatchObject({ type: 'operation.updated', objectId: op.id });
  });
});

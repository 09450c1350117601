import { rejectionOf } from '@drover/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DroverClient } from './client.js';
import { FakeManager, makeOperation } from './fake-manager.js';
import type { Operation } from './types.js';
import { createProgress, operationError, renderBar, waitForOperation, WaitInterrupted } from './wait.js';

let manager: FakeManager;
let client: DroverClient;

beforeAll(async () => {
  manager = await new FakeManager().start();
  client = new DroverClient({ url: manager.url, token: manager.token, retryDelayMs: 1 });
});
afterAll(async () => {
  await manager.close();
});

describe('waitForOperation', () => {
  it('polls until the operation ends: pending → running → done', async () => {
    const operation = manager.addOperation('vm.start', 'vm-1', [
      { state: 'pending', phase: 'queued', progress: 0 },
      { state: 'running', phase: 'placing', progress: 20 },
      { state: 'running', phase: 'booting', progress: 70 },
      { state: 'done', phase: 'finished', progress: 100 },
    ]);
    const seen: string[] = [];
    const final = await waitForOperation(client, operation, { intervalMs: 1, onUpdate: (op) => seen.push(`${op.state}:${op.phase}`) });
    expect(final.state).toBe('done');
    expect(seen).toEqual(['pending:queued', 'pending:queued', 'running:placing', 'running:booting', 'done:finished']);
    expect(manager.requestsTo('GET', `/api/v1/operations/${operation.id}`)).toHaveLength(4);
  });

  it('does not poll an operation that has already ended', async () => {
    const done = makeOperation('vm.pause', 'vm-1', { state: 'done', progress: 100 });
    expect(await waitForOperation(client, done, { intervalMs: 1 })).toBe(done);
  });

  it('rides out a short manager outage', async () => {
    const operation = manager.addOperation('vm.save', 'vm-1');
    manager.dropConnections = 2; // the first poll and its retry fail
    const final = await waitForOperation(client, operation, { intervalMs: 1 });
    expect(final.state).toBe('done');
  });

  it('gives up when the outage outlasts the grace period', async () => {
    const operation = manager.addOperation('vm.save', 'vm-1');
    manager.dropConnections = 1000;
    try {
      const failure = await rejectionOf(waitForOperation(client, operation, { intervalMs: 1, outageGraceMs: 30 }));
      expect(failure.code).toBe('unavailable');
    } finally {
      manager.dropConnections = 0;
    }
  });

  it('stops waiting when interrupted, naming the operation', async () => {
    const operation = manager.addOperation('vm.start', 'vm-1', Array.from({ length: 1000 }, () => ({ state: 'running' as const })));
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 30);
    await expect(waitForOperation(client, operation, { intervalMs: 1, signal: controller.signal })).rejects.toBeInstanceOf(WaitInterrupted);
  });
});

describe('operationError', () => {
  const base = makeOperation('vm.start', 'vm-1');
  it('is undefined for a done operation', () => {
    expect(operationError({ ...base, state: 'done' })).toBeUndefined();
  });

  it("keeps a failed operation's code and message", () => {
    const failure = operationError({ ...base, state: 'failed', error: { code: 'policy_denied', message: 'Chinese Wall conflict on h1', details: { host: 'h1' } } })!;
    expect(failure.code).toBe('policy_denied');
    expect(failure.message).toBe('Chinese Wall conflict on h1');
    expect(failure.details).toMatchObject({ host: 'h1', operationId: base.id, state: 'failed' });
  });

  it('maps an unknown code to internal and a bare cancellation to conflict', () => {
    expect(operationError({ ...base, state: 'failed', error: { code: 'qemu_crashed', message: 'QEMU exited', details: {} } })!.code).toBe('internal');
    const cancelled = operationError({ ...base, state: 'cancelled' })!;
    expect(cancelled.code).toBe('conflict');
    expect(cancelled.message).toBe(`Operation ${base.id} (vm.start) ended cancelled`);
  });
});

describe('progress', () => {
  const op = (fields: Partial<Operation>) => makeOperation('vm.start', 'vm-1', fields);

  it('draws a bar in place on a terminal and clears it at the end', () => {
    let written = '';
    const progress = createProgress({ write: (s) => (written += String(s)), isTTY: true, columns: 80 }, 'bar', 'start web1', () => 0);
    progress.update(op({ state: 'running', phase: 'booting', progress: 50 }));
    expect(written).toBe('\r\x1b[2Kstart web1 [############............]  50%  booting  0s');
    progress.finish();
    expect(written.endsWith('\r\x1b[2K')).toBe(true);
  });

  it('prints one plain line per change elsewhere', () => {
    let written = '';
    const progress = createProgress({ write: (s) => (written += String(s)) }, 'lines', 'start web1');
    progress.update(op({ state: 'pending', phase: 'queued', progress: 0 }));
    progress.update(op({ state: 'pending', phase: 'queued', progress: 0 }));
    progress.update(op({ state: 'running', phase: 'booting', progress: 40 }));
    expect(written).toBe('start web1: pending, queued (0%)\nstart web1: running, booting (40%)\n');
  });

  it('never draws wider than the terminal', () => {
    expect(renderBar('start a-very-long-vm-name', op({ progress: 10, phase: 'a long phase name' }), 5000, 30)).toHaveLength(29);
  });
});

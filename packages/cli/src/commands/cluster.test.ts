import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeManager, runCli, type RunOptions } from '../fake-manager.js';

let manager: FakeManager;
const configHome = mkdtempSync(path.join(os.tmpdir(), 'drover-cli-cluster-'));

beforeAll(async () => {
  manager = await new FakeManager().start();
  manager.on('POST', /^\/api\/v1\/cluster\/rebalance$/, async (request) => {
    const body = request.body as { dryRun?: boolean };
    if (body.dryRun) {
      return {
        status: 200,
        body: { threshold: 0.1, imbalanceBefore: 0.25, imbalanceAfter: 0, moves: [{ vmId: 'a', vmName: 'web1', fromHostId: 'x', fromHostName: 'h1', toHostId: 'y', toHostName: 'h2' }] },
      };
    }
    return { status: 202, body: manager.addOperation('cluster.rebalance', 'cluster-rebalance', [{ state: 'done', phase: 'done', progress: 100, result: { planned: 1, moved: 1, failed: [], imbalanceAfter: 0 } }]) };
  });
});
afterAll(async () => {
  await manager.close();
  rmSync(configHome, { recursive: true, force: true });
});

function drover(argv: string[], options: RunOptions = {}) {
  return runCli(argv, { ...options, env: { DROVER_URL: manager.url, DROVER_TOKEN: manager.token, XDG_CONFIG_HOME: configHome, ...options.env } });
}

describe('drover cluster rebalance', () => {
  it('shows the plan of a dry run', async () => {
    const result = await drover(['cluster', 'rebalance', '--dry-run', '--threshold', '10']);
    expect(result.code, result.stderr).toBe(0);
    expect(manager.requestsTo('POST', '/api/v1/cluster/rebalance').at(-1)!.body).toEqual({ dryRun: true, threshold: 0.1 });
    expect(result.stdout).toContain('Rebalance plan (dry run, nothing changed): imbalance 25.0 % → 0.0 %, threshold 10.0 %');
    expect(result.stdout).toMatch(/web1\s+h1\s+h2/);
  });

  it('runs the rebalance and follows its operation', async () => {
    const result = await drover(['cluster', 'rebalance', '--concurrency', '4']);
    expect(result.code, result.stderr).toBe(0);
    expect(manager.requestsTo('POST', '/api/v1/cluster/rebalance').at(-1)!.body).toEqual({ concurrency: 4 });
    expect(result.stdout).toContain('Rebalanced: 1 of 1 VM(s) moved, imbalance now 0.0 %');
  });

  it('refuses a threshold that is not a percentage, sending nothing', async () => {
    const before = manager.requestsTo('POST', '/api/v1/cluster/rebalance').length;
    const result = await drover(['cluster', 'rebalance', '--threshold', '150']);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/--threshold must be a percentage from 0 to 100/);
    expect(manager.requestsTo('POST', '/api/v1/cluster/rebalance').length).toBe(before);
  });
});

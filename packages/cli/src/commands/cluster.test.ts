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
beforeAll(() => {
  manager.on('GET', /^\/api\/v1\/cluster\/managers$/, async () => ({
    status: 200,
    body: {
      backend: 'postgres',
      self: 'bbbbbbbb-0000',
      leader: { managerId: 'aaaaaaaa-0000', term: 3, since: '2030-01-01T00:00:00.000Z' },
      managers: [
        { id: 'aaaaaaaa-0000', name: 'm1/10', url: 'http://10.0.0.1:8300', version: '0.1.0', pid: 10, startedAt: '2030-01-01T00:00:00.000Z', lastSeenAt: '2030-01-01T00:00:01.000Z', alive: true, leader: true },
        { id: 'bbbbbbbb-0000', name: 'm2/11', url: 'http://10.0.0.2:8300', version: '0.1.0', pid: 11, startedAt: '2030-01-01T00:00:00.000Z', lastSeenAt: '2030-01-01T00:00:01.000Z', alive: true, leader: false },
        { id: 'cccccccc-0000', name: 'm3/12', url: 'http://10.0.0.3:8300', version: '0.1.0', pid: 12, startedAt: '2030-01-01T00:00:00.000Z', lastSeenAt: '2030-01-01T00:00:01.000Z', alive: false, leader: false },
      ],
    },
  }));
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

describe('drover cluster managers', () => {
  it('lists the managers, which are alive, which leads and which answered', async () => {
    const result = await drover(['cluster', 'managers']);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain('Store: postgres');
    expect(result.stdout).toMatch(/aaaaaaaa\s+m1\/10\s+http:\/\/10\.0\.0\.1:8300\s+alive\s+leader \(term 3\)/);
    expect(result.stdout).toMatch(/bbbbbbbb\s+m2\/11\s+http:\/\/10\.0\.0\.2:8300\s+alive\s+\*/);
    expect(result.stdout).toMatch(/cccccccc\s+m3\/12\s+\S+\s+gone/);
  });

  it('prints the answer as JSON with --json', async () => {
    const result = await drover(['cluster', 'managers', '--json']);
    expect(result.code, result.stderr).toBe(0);
    expect((JSON.parse(result.stdout) as { leader: { term: number } }).leader.term).toBe(3);
  });
});

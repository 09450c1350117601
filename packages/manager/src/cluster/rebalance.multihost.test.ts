import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestNetwork, tempDir } from '@drover/agent/testing';
import type { RunningManager } from '../manager.js';
import { joinHost, managerApi, sharedPool, startNetworkManager, waitHostsOnline } from '../testing/multihost.js';

/**
 * Rebalance on real parts: two hosts, each an agent in its own network namespace
 * joined over TLS, sharing their `default` pool (so a live migration moves only
 * memory). Two small guests start while only h1 is there; once h2 joins, the
 * dry run shows the plan (nothing moves), then the real run live-migrates one
 * guest to h2 and the load is even. The automatic rebalance is configured on
 * but with a long interval, so the test drives its check itself.
 */
const dataDir = tempDir('rebalance');
const shared = tempDir('rebalance-shared');
let network: TestNetwork;
let manager: RunningManager;

const api = managerApi<unknown>(() => manager);

async function join(index: number): Promise<void> {
  await joinHost(network, manager, api, network.hosts[index]!, { capacity: { cpus: 2, memoryMiB: 1024 }, config: { pools: [sharedPool(shared)] } });
  await waitHostsOnline(api, index + 1);
}

interface VmView {
  id: string;
  name: string;
  state: string;
  hostName: string | null;
}

async function vmsNow(): Promise<VmView[]> {
  return (await api<{ items: VmView[] }>('GET', '/api/v1/vms?limit=100')).body.items.sort((a, b) => a.name.localeCompare(b.name));
}

beforeAll(async () => {
  network = await TestNetwork.create(2);
  manager = await startNetworkManager(network, dataDir, {
    rebalance: { auto: true, threshold: 0.1, intervalMs: 3_600_000, cooldownMs: 3_600_000 },
  });
  await join(0);
  for (const name of ['rb-1', 'rb-2']) {
    expect((await api('POST', '/api/v1/vms', { name, image: 'counter', memoryMiB: 128 })).status).toBe(201);
    const start = await api<{ state: string; error: unknown }>('POST', `/api/v1/vms/${name}/start?wait=true`, {});
    expect(start.body.state, JSON.stringify(start.body.error)).toBe('done');
  }
  await join(1);
}, 300_000);

afterAll(async () => {
  try {
    const vms = await api<{ items: Array<{ id: string; state: string }> }>('GET', '/api/v1/vms?limit=100').catch(() => ({ body: { items: [] } }));
    await Promise.all(vms.body.items.filter((v) => ['running', 'paused', 'starting', 'migrating'].includes(v.state)).map((v) => api('POST', `/api/v1/vms/${v.id}/force-off?wait=true`, {})));
  } finally {
    await manager?.close();
    await network?.destroy();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(shared, { recursive: true, force: true });
  }
}, 120_000);

describe('cluster rebalance across two hosts', () => {
  it('the dry run shows the plan and moves nothing; bad input is refused', async () => {
    const dry = await api<{ threshold: number; imbalanceBefore: number; imbalanceAfter: number; moves: Array<{ vmName: string; fromHostName: string; toHostName: string }> }>('POST', '/api/v1/cluster/rebalance', { dryRun: true, threshold: 0.1 });
    expect(dry.status).toBe(200);
    expect(dry.body.threshold).toBe(0.1);
    expect(dry.body.imbalanceBefore).toBeCloseTo(0.25, 5); // 256 MiB of 1024 on h1, nothing on h2
    expect(dry.body.imbalanceAfter).toBe(0);
    expect(dry.body.moves).toHaveLength(1);
    expect(dry.body.moves[0]).toMatchObject({ fromHostName: 'h1', toHostName: 'h2' });
    expect((await vmsNow()).map((vm) => vm.hostName)).toEqual(['h1', 'h1']);

    const bad = await api<{ error: { code: string; message: string } }>('POST', '/api/v1/cluster/rebalance', { dryRun: true, threshold: 2 });
    expect(bad.status).toBe(400);
    expect(bad.body.error.message).toMatch(/threshold/);
    expect((await api('POST', '/api/v1/cluster/rebalance', { concurrency: 0 })).status).toBe(400);
    expect((await api('POST', '/api/v1/cluster/rebalance', { dryRun: true, extra: 1 })).status).toBe(400);
    expect((await vmsNow()).map((vm) => vm.hostName)).toEqual(['h1', 'h1']);
  });

  it('the real run live-migrates one guest to the empty host, then the load is even and the automatic check waits for its cooldown', async () => {
    const run = await api<{ kind: string; state: string; error: unknown; result: { planned: number; moved: number; failed: unknown[]; imbalanceAfter: number } }>('POST', '/api/v1/cluster/rebalance?wait=true', { threshold: 0.1, concurrency: 2 });
    expect(run.status).toBe(200);
    expect(run.body.kind).toBe('cluster.rebalance');
    expect(run.body.state, JSON.stringify(run.body.error)).toBe('done');
    expect(run.body.result).toMatchObject({ planned: 1, moved: 1, failed: [], imbalanceAfter: 0 });
    const vms = await vmsNow();
    expect(vms.map((vm) => vm.hostName).sort()).toEqual(['h1', 'h2']);
    expect(vms.every((vm) => vm.state === 'running')).toBe(true);

    const again = await api<{ moves: unknown[]; imbalanceBefore: number }>('POST', '/api/v1/cluster/rebalance', { dryRun: true, threshold: 0.1 });
    expect(again.body).toMatchObject({ moves: [], imbalanceBefore: 0 });
    expect(await manager.rebalance.tick()).toEqual({ skipped: expect.stringMatching(/^cooldown/) });
  });
});

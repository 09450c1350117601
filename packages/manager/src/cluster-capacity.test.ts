import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestNetwork, tempDir } from '@drover/agent/testing';
import type { RunningManager } from './manager.js';
import { joinHost, managerApi, startNetworkManager, waitHostsOnline } from './testing/multihost.js';

/**
 * Two hosts, each an agent in its own network namespace that joined the
 * manager over TLS, with small capacities. Twenty starts at once of VMs sized
 * so that only some fit: no host may be overcommitted, the rest are refused
 * with a 409 that says no host can take them.
 */
const dataDir = tempDir('capacity');
let network: TestNetwork;
let manager: RunningManager;
const capacity = { cpus: 2, memoryMiB: 300 };
const vmMemory = 96;

const api = managerApi<unknown>(() => manager);

beforeAll(async () => {
  network = await TestNetwork.create(2);
  manager = await startNetworkManager(network, dataDir);
  for (const host of network.hosts) await joinHost(network, manager, api, host, { capacity });
  await waitHostsOnline(api, 2);
});

afterAll(async () => {
  try {
    const vms = await api<{ items: Array<{ id: string; state: string }> }>('GET', '/api/v1/vms?limit=1000');
    await Promise.all(vms.body.items.filter((v) => ['running', 'paused', 'starting'].includes(v.state)).map((v) => api('POST', `/api/v1/vms/${v.id}/force-off?wait=true`, {})));
  } finally {
    await manager?.close();
    await network?.destroy();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

describe('placement across two hosts in network namespaces', () => {
  it('20 concurrent starts: as many as fit run, no host is overcommitted, the rest get 409', async () => {
    const names = Array.from({ length: 20 }, (_, i) => `fit-${i}`);
    for (const name of names) expect((await api('POST', '/api/v1/vms', { name, image: 'web', memoryMiB: vmMemory })).status).toBe(201);
    const answers = await Promise.all(names.map((name) => api<{ id: string; error?: { code: string; message: string } }>('POST', `/api/v1/vms/${name}/start`, {})));
    const accepted = answers.filter((a) => a.status === 202);
    const refused = answers.filter((a) => a.status !== 202);
    const perHost = Math.floor(capacity.memoryMiB / vmMemory);
    expect(refused.filter((a) => a.status !== 409).map((a) => a.body)).toEqual([]);
    expect(accepted.length).toBe(perHost * 2);
    for (const answer of refused) {
      expect(answer.status).toBe(409);
      expect(answer.body.error?.message).toMatch(/No host can run VM .*MiB free/);
    }
    // Every accepted start really runs a guest.
    for (const answer of accepted) {
      for (const deadline = Date.now() + 180_000; ; ) {
        const op = await api<{ state: string; error: unknown }>('GET', `/api/v1/operations/${answer.body.id}`);
        if (op.body.state === 'done') break;
        if (!['pending', 'running'].includes(op.body.state) || Date.now() > deadline) throw new Error(`start ended ${JSON.stringify(op.body)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    const hosts = await api<{ items: Array<{ name: string; capacity: { memoryMiB: number }; allocated: { memoryMiB: number; vms: number } }> }>('GET', '/api/v1/hosts');
    for (const host of hosts.body.items) {
      expect(host.allocated.memoryMiB).toBeLessThanOrEqual(host.capacity.memoryMiB);
      expect(host.allocated.vms).toBe(perHost);
    }
    const running = await api<{ items: unknown[] }>('GET', '/api/v1/vms?state=running&limit=1000');
    expect(running.body.items.length).toBe(perHost * 2);
  });
});

/* eslint-disable @typescript-eslint/no-explicit-any -- loosely typed JSON answers of the API, read field by field */
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir, TestNetwork } from '@drover/agent/testing';
import type { RunningManager } from '../manager.js';
import { hostStates, importTinyImage, joinSharedHosts, liveQemus, managerApi, startNetworkManager, until, writePowerOff } from '../testing/multihost.js';

/**
 * HA on real parts: three hosts in network namespaces sharing one pool, an
 * in-process manager, a 64 MiB VM marked HA on h1. h1's link is cut: the
 * manager finds it lost, fences it through its command power driver (which
 * kills every process of h1: its agent and its QEMU) and only then starts the
 * VM on another host. Every 100 ms the test counts the VM's QEMU processes on
 * the whole machine: never two. Then the two remaining hosts are cut at once:
 * most hosts vanished, so nothing is fenced and nothing restarted.
 */
const dataDir = tempDir('ha-mh');
const sharedDir = tempDir('ha-mh-shared');
const scriptDir = tempDir('ha-mh-scripts');
let network: TestNetwork;
let manager: RunningManager;
let stateDirs = new Map<string, string>();

const api = managerApi(() => manager);

/** Live QEMU processes of the VM, anywhere on this machine. */
function qemusOf(vmId: string): Array<{ pid: number; host: string }> {
  return liveQemus()
    .filter((q) => q.cmdline.includes(vmId))
    .map(({ pid, cmdline }) => ({ pid, host: [...stateDirs].find(([, dir]) => cmdline.includes(dir))?.[0] ?? '?' }));
}

function powerScripts(name: string): { on: string; off: string; status: string } {
  const { power, off, status } = writePowerOff(scriptDir, name, stateDirs.get(name)!);
  return { on: `echo on > ${power}`, off, status };
}

beforeAll(async () => {
  network = await TestNetwork.create(3);
  manager = await startNetworkManager(network, dataDir, {
    agentTimeoutMs: 2_000,
    haGraceMs: 3_000,
    powerVerifyMs: 10_000,
  });
  stateDirs = await joinSharedHosts(network, manager, api, sharedDir, 1024);
  for (const host of network.hosts) expect((await api('PUT', `/api/v1/hosts/${host.name}/power`, { driver: 'command', ...powerScripts(host.name) })).status).toBe(200);
  expect((await importTinyImage(api, dataDir)).state).toBe('done');
}, 300_000);

afterAll(async () => {
  try {
    for (const host of network?.hosts ?? []) await network.setLink(host, true).catch(() => undefined);
  } finally {
    await manager?.close();
    await network?.destroy();
    for (const dir of [dataDir, sharedDir, scriptDir]) rmSync(dir, { recursive: true, force: true });
  }
});

describe('HA restart after fencing', () => {
  it('restarts an HA VM elsewhere only after its cut-off host is fenced: never two instances', async () => {
    for (const host of ['h2', 'h3']) await api('POST', `/api/v1/hosts/${host}/maintenance`, {});
    const created = await api('POST', '/api/v1/vms', { name: 'ha1', image: 'tiny', memoryMiB: 64 });
    const vmId = created.body.id as string;
    expect((await api('POST', '/api/v1/vms/ha1/start?wait=true', {})).body.state).toBe('done');
    for (const host of ['h2', 'h3']) expect((await api('POST', `/api/v1/hosts/${host}/restore?wait=true`, {})).body.state).toBe('done');
    expect((await api('GET', '/api/v1/vms/ha1')).body.hostName).toBe('h1');
    const marked = await api('PUT', '/api/v1/vms/ha1/ha', { enabled: true });
    expect(marked.status, JSON.stringify(marked.body)).toBe(200);
    expect(marked.body.spec.ha).toBe(true);
    expect(qemusOf(vmId).map((q) => q.host)).toEqual(['h1']);

    const samples: number[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        samples.push(qemusOf(vmId).length);
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    try {
      await network.setLink(network.hosts[0]!, false);
      const op = await until('the HA failover', async () => {
        const ops = await api('GET', '/api/v1/operations?limit=1000');
        const found = ops.body.items.find((o: any) => o.kind === 'host.ha-failover');
        return found && !['pending', 'running'].includes(found.state) ? found : undefined;
      }, 180_000);
      expect(op.state, JSON.stringify(op)).toBe('done');
      expect(op.result).toMatchObject({ host: 'h1', fenced: true, restarted: ['ha1'] });
      const vm = (await api('GET', '/api/v1/vms/ha1')).body;
      expect(vm.state).toBe('running');
      expect(['h2', 'h3']).toContain(vm.hostName);
      expect(qemusOf(vmId).map((q) => q.host)).toEqual([vm.hostName]);
      expect((await hostStates(api)).h1).toBe('powered_off');
      expect(readFileSync(path.join(scriptDir, 'h1.power'), 'utf8').trim()).toBe('off');
      // Fencing came first: the journal has "fence" before "restart".
      const full = (await api('GET', `/api/v1/operations/${op.id}`)).body;
      expect(full.state).toBe('done');
    } finally {
      sampling = false;
      await sampler;
    }
    expect(samples.length).toBeGreaterThan(20);
    expect(Math.max(...samples)).toBe(1);
  }, 400_000);

  it('fences nothing when most hosts vanish at once', async () => {
    const vm = (await api('GET', '/api/v1/vms/ha1')).body;
    const before = (await api('GET', '/api/v1/operations?limit=1000')).body.items.filter((o: any) => o.kind === 'host.ha-failover').length;
    await network.setLink(network.hosts[1]!, false);
    await network.setLink(network.hosts[2]!, false);
    await until('h2 and h3 unreachable', async () => {
      const states = await hostStates(api);
      return states.h2 === 'unreachable' && states.h3 === 'unreachable';
    }, 120_000);
    // Past the grace period and a few heartbeats more: still nothing fenced.
    await new Promise((r) => setTimeout(r, 6_000));
    for (const host of ['h2', 'h3']) expect(readFileSync(path.join(scriptDir, `${host}.power`), 'utf8').trim()).toBe('on');
    const after = (await api('GET', '/api/v1/operations?limit=1000')).body.items.filter((o: any) => o.kind === 'host.ha-failover').length;
    expect(after).toBe(before);
    expect(qemusOf(vm.id).map((q) => q.host)).toEqual([vm.hostName]);
    await network.setLink(network.hosts[1]!, true);
    await network.setLink(network.hosts[2]!, true);
    await until('h2 and h3 back', async () => {
      const states = await hostStates(api);
      return states.h2 === 'online' && states.h3 === 'online';
    }, 120_000);
    expect((await api('GET', '/api/v1/vms/ha1')).body).toMatchObject({ state: 'running', hostName: vm.hostName });
  }, 400_000);
});

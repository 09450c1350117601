/* eslint-disable @typescript-eslint/no-explicit-any -- loosely typed JSON answers of the API, read field by field */
import { chmodSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentMain, tempDir, TestNetwork, type TestHost } from '@drover/agent/testing';
import { defaultApplianceCacheDir } from '@drover/appliances';
import type { RunningManager } from '../manager.js';
import { hostStates, importTinyImage, joinSharedHosts, liveQemus, managerApi, startNetworkManager, until, writePowerOff } from '../testing/multihost.js';

/**
 * Maintenance and the power policy on real parts: three hosts, each an agent
 * in its own network namespace joined over TLS to an in-process manager,
 * sharing one pool directory (memory-only live migrations). The VMs are small
 * (64 MiB) and boot an empty disk: QEMU runs, nothing inside needs to.
 *
 * The hosts' command power driver is a script per host: "off" kills every
 * process of that host (its agent and its QEMUs: a power cut), "on" starts its
 * agent again in its namespace (in its own session, so the driver's process
 * group clean-up leaves it running), "status" reads a file.
 */
const dataDir = tempDir('power-mh');
const sharedDir = tempDir('power-mh-shared');
const scriptDir = tempDir('power-mh-scripts');
let network: TestNetwork;
let manager: RunningManager;
let stateDirs = new Map<string, string>();
const vmIds = new Map<string, string>();

const api = managerApi(() => manager);

/** Where each VM runs (host name) and its state. */
async function placement(): Promise<Record<string, { host: string | null; state: string }>> {
  const vms = await api('GET', '/api/v1/vms?limit=100');
  return Object.fromEntries(vms.body.items.map((vm: any) => [vm.name, { host: vm.hostName, state: vm.state }]));
}

function agentPid(host: string): number | undefined {
  const ready = path.join(stateDirs.get(host)!, 'ready.json');
  if (!existsSync(ready)) return undefined;
  const pid = (JSON.parse(readFileSync(ready, 'utf8')) as { pid: number }).pid;
  return existsSync(`/proc/${pid}`) && !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8')) ? pid : undefined;
}

/** Live QEMU processes of a host (by its state directory in their command line). */
function qemus(host: string): number[] {
  const dir = stateDirs.get(host)!;
  return liveQemus()
    .filter((q) => q.cmdline.includes(dir))
    .map((q) => q.pid);
}

function writePowerScripts(host: TestHost): { on: string; off: string; status: string } {
  const stateDir = stateDirs.get(host.name)!;
  // "off": every process whose command line names the host's state directory (its agent and its QEMUs).
  const { power, off, status } = writePowerOff(scriptDir, host.name, stateDir);
  const on = path.join(scriptDir, `${host.name}-on.sh`);
  writeFileSync(
    on,
    `#!/bin/sh
echo on > "${power}"
rm -f "${stateDir}/ready.json"
setsid ip netns exec ${host.namespace} env DROVER_APPLIANCE_CACHE="${defaultApplianceCacheDir()}" DROVER_AGENT_LOG_LEVEL=warn "${process.execPath}" "${agentMain}" --config "${stateDir}/agent.yaml" --state-dir "${stateDir}" --listen ${host.address}:8301 --ready-file "${stateDir}/ready.json" </dev/null >>"${scriptDir}/${host.name}-agent.log" 2>&1 &
agent=$!
# The command driver kills whatever is left in this script's process group when it ends:
# return only once the agent has left it (setsid), or the kill may catch it first.
while [ "$(ps -o pgid= -p "$agent" | tr -d ' ')" = "$(ps -o pgid= -p $$ | tr -d ' ')" ]; do sleep 0.05; done
`,
  );
  chmodSync(on, 0o755);
  return { on, off, status };
}

beforeAll(async () => {
  network = await TestNetwork.create(3);
  manager = await startNetworkManager(network, dataDir, {
    powerTickMs: 500,
    powerVerifyMs: 10_000,
    powerBootTimeoutMs: 240_000,
  });
  stateDirs = await joinSharedHosts(network, manager, api, sharedDir, 1024);
  // A small empty disk image: the VMs run QEMU (firmware finds nothing to boot) at 64 MiB.
  const imported = await importTinyImage(api, dataDir);
  expect(imported.state, JSON.stringify(imported)).toBe('done');
}, 300_000);

afterAll(async () => {
  try {
    const vms = await api('GET', '/api/v1/vms?limit=100').catch(() => ({ body: { items: [] } }));
    await Promise.all((vms.body.items ?? []).filter((v: any) => ['running', 'paused'].includes(v.state)).map((v: any) => api('POST', `/api/v1/vms/${v.id}/force-off?wait=true`, {}).catch(() => undefined)));
  } finally {
    await manager?.close();
    await network?.destroy();
    for (const dir of [dataDir, sharedDir, scriptDir]) rmSync(dir, { recursive: true, force: true });
  }
});

describe('host maintenance across three hosts', () => {
  it('evacuates a host with 4 small VMs by their policies, then restore brings exactly those back', async () => {
    // h2 and h3 take no new VMs while in maintenance: all four start on h1.
    for (const host of ['h2', 'h3']) expect((await api('POST', `/api/v1/hosts/${host}/maintenance`, {})).body.state).toBe('maintenance');
    for (const [i, name] of ['e1', 'e2', 'e3', 'e4'].entries()) {
      const created = await api('POST', '/api/v1/vms', { name, image: 'tiny', memoryMiB: 64, ...(i === 3 ? { evacuationPolicy: 'cold-migrate' } : {}) });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      vmIds.set(name, created.body.id);
      const started = await api('POST', `/api/v1/vms/${name}/start?wait=true`, {});
      expect(started.body.state, JSON.stringify(started.body)).toBe('done');
    }
    // A VM that is not running stays where its disks are.
    expect((await api('POST', '/api/v1/vms', { name: 'idle', image: 'tiny', memoryMiB: 64 })).status).toBe(201);
    expect((await api('POST', '/api/v1/vms/idle/start?wait=true', {})).body.state).toBe('done');
    expect((await api('POST', '/api/v1/vms/idle/force-off?wait=true', {})).body.state).toBe('done');
    for (const host of ['h2', 'h3']) expect((await api('POST', `/api/v1/hosts/${host}/restore?wait=true`, {})).body.state).toBe('done');
    expect(Object.values(await placement()).filter((p) => p.state === 'running').map((p) => p.host)).toEqual(['h1', 'h1', 'h1', 'h1']);

    const dry = await api('POST', '/api/v1/hosts/h1/evacuate', { dryRun: true });
    expect(dry.status).toBe(200);
    expect(dry.body.moves.map((m: any) => m.vmName).sort()).toEqual(['e1', 'e2', 'e3', 'e4']);
    expect(dry.body.moves.find((m: any) => m.vmName === 'e4').policy).toBe('cold-migrate');
    expect(dry.body.cannotMove).toEqual([]);
    expect(dry.body.stays.map((s: any) => s.vmName)).toEqual(['idle']);
    expect((await hostStates(api)).h1).toBe('online');

    const op = await api('POST', '/api/v1/hosts/h1/evacuate?wait=true', { concurrency: 2 });
    expect(op.body.state, JSON.stringify(op.body)).toBe('done');
    expect(op.body.result.moved.sort()).toEqual(['e1', 'e2', 'e3', 'e4']);
    expect((await hostStates(api)).h1).toBe('maintenance');
    const away = await placement();
    for (const name of ['e1', 'e2', 'e3', 'e4']) {
      expect(away[name]!.state).toBe('running');
      expect(['h2', 'h3']).toContain(away[name]!.host);
    }
    expect(qemus('h1')).toEqual([]);
    // Nothing new lands on the host in maintenance.
    const newcomer = await api('POST', '/api/v1/vms', { name: 'newcomer', image: 'tiny', memoryMiB: 64, hostInclude: ['h1'] });
    expect((await api('POST', `/api/v1/vms/${newcomer.body.id}/start`, {})).status).toBe(409);
    await api('DELETE', `/api/v1/vms/${newcomer.body.id}`);

    const restorePlan = await api('POST', '/api/v1/hosts/h1/restore', { dryRun: true });
    expect(restorePlan.body.returns.map((r: any) => r.vmName).sort()).toEqual(['e1', 'e2', 'e3', 'e4']);
    const restored = await api('POST', '/api/v1/hosts/h1/restore?wait=true', {});
    expect(restored.body.state, JSON.stringify(restored.body)).toBe('done');
    expect((await hostStates(api)).h1).toBe('online');
    const back = await placement();
    for (const name of ['e1', 'e2', 'e3', 'e4']) expect(back[name]).toEqual({ host: 'h1', state: 'running' });
    expect(qemus('h1').length).toBe(4);
    expect(qemus('h2').length + qemus('h3').length).toBe(0);
  }, 600_000);
});

describe('night-time consolidation with host power management', () => {
  it('packs 3 hosts onto 1, powers 2 off through the command driver, wakes them at the window end and rebalances', async () => {
    await api('DELETE', `/api/v1/vms/idle`);
    for (const host of network.hosts) {
      const scripts = writePowerScripts(host);
      expect((await api('PUT', `/api/v1/hosts/${host.name}/power`, { driver: 'command', ...scripts, timeoutMs: 10_000 })).status).toBe(200);
    }
    // One host per VM group: e2 on h2, e3 on h3, e1 and e4 stay on h1.
    for (const [name, to] of [['e2', 'h2'], ['e3', 'h3']] as const) {
      const moved = await api('POST', `/api/v1/vms/${name}/migrate?wait=true`, { to });
      expect(moved.body.state, JSON.stringify(moved.body)).toBe('done');
    }
    const policy = { enabled: false, timeZone: 'UTC', window: '22:00-06:00', spareHosts: 0, wattsPerHost: 200, reserveMemoryPercent: 5, headroomPercent: 0, rebalanceThresholdPercent: 5 };
    expect((await api('PUT', '/api/v1/power/policy', policy)).status).toBe(200);

    const dry = await api('POST', '/api/v1/power/night-plan', { dryRun: true });
    expect(dry.body).toMatchObject({ hostsUsedBefore: 3, hostsUsed: 1, lowerBound: 1 });
    expect(dry.body.powerOff.map((h: any) => h.hostName).sort()).toEqual(['h2', 'h3']);
    expect(dry.body.moves.map((m: any) => m.vmName).sort()).toEqual(['e2', 'e3']);
    expect(await hostStates(api)).toEqual({ h1: 'online', h2: 'online', h3: 'online' });

    // "Run the night plan now".
    const night = await api('POST', '/api/v1/power/night-plan?wait=true', {});
    expect(night.body.state, JSON.stringify(night.body)).toBe('done');
    expect(night.body.result.poweredOff.sort()).toEqual(['h2', 'h3']);
    expect(await hostStates(api)).toEqual({ h1: 'online', h2: 'powered_off', h3: 'powered_off' });
    for (const name of ['e1', 'e2', 'e3', 'e4']) expect((await placement())[name]).toEqual({ host: 'h1', state: 'running' });
    for (const host of ['h2', 'h3']) {
      expect(readFileSync(path.join(scriptDir, `${host}.power`), 'utf8').trim()).toBe('off');
      expect(agentPid(host)).toBeUndefined();
      expect(qemus(host)).toEqual([]);
    }
    expect(qemus('h1').length).toBe(4);
    const report = await api('GET', '/api/v1/power/report');
    expect(report.body.mode).toBe('night');
    expect(report.body.hostsPoweredOff.map((h: any) => h.hostName).sort()).toEqual(['h2', 'h3']);
    // The heartbeat leaves powered-off hosts alone: they stay powered_off, not unreachable.
    await new Promise((r) => setTimeout(r, 2_000));
    expect(await hostStates(api)).toEqual({ h1: 'online', h2: 'powered_off', h3: 'powered_off' });

    // The window ends: the policy (enabled now, with a window that does not hold the present) wakes the hosts.
    const hour = new Date().getUTCHours();
    const pad = (h: number) => String(h % 24).padStart(2, '0');
    expect((await api('PUT', '/api/v1/power/policy', { ...policy, enabled: true, window: `${pad(hour + 2)}:00-${pad(hour + 3)}:00` })).status).toBe(200);
    const wake = await until('the wake operation', async () => {
      const ops = await api('GET', '/api/v1/operations?limit=1000');
      const op = ops.body.items.find((o: any) => o.kind === 'power.wake');
      return op && !['pending', 'running'].includes(op.state) ? op : undefined;
    }, 300_000);
    expect(wake.state, JSON.stringify(wake)).toBe('done');
    expect(wake.actor).toBe('system:power-policy');
    expect(wake.result.poweredOn.sort()).toEqual(['h2', 'h3']);
    const agentLogs = network.hosts.map((h) => {
      const file = path.join(scriptDir, `${h.name}-agent.log`);
      return existsSync(file) ? `${h.name}: ${readFileSync(file, 'utf8').slice(-2000)}` : '';
    });
    expect(wake.result.failed, agentLogs.join('\n')).toEqual([]);
    expect(wake.result.rebalanced).toBeGreaterThanOrEqual(2);
    expect(await hostStates(api)).toEqual({ h1: 'online', h2: 'online', h3: 'online' });
    for (const host of ['h2', 'h3']) {
      expect(readFileSync(path.join(scriptDir, `${host}.power`), 'utf8').trim()).toBe('on');
      expect(agentPid(host)).toBeDefined();
    }
    const after = await placement();
    const hostsUsed = new Set(['e1', 'e2', 'e3', 'e4'].map((name) => after[name]!.host));
    expect(hostsUsed).toEqual(new Set(['h1', 'h2', 'h3']));
    for (const name of ['e1', 'e2', 'e3', 'e4']) expect(after[name]!.state).toBe('running');
    const final = await api('GET', '/api/v1/power/report');
    expect(final.body.mode).toBe('day');
    expect(final.body.hostsPoweredOff).toEqual([]);
    expect(final.body.hoursOff).toBeGreaterThan(0);
    expect(final.body.energySavedKWh).toBeCloseTo((final.body.hoursOff * 200) / 1000, 9);
  }, 600_000);
});

/* eslint-disable @typescript-eslint/no-explicit-any -- loosely typed JSON answers of the API, read field by field */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir, TestNetwork } from '@drover/agent/testing';
import { defaultApplianceCacheDir } from '@drover/appliances';
import { defaultManagerConfig } from '../config.js';
import { startManager, type RunningManager } from '../manager.js';

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
const stateDirs = new Map<string, string>();

async function api<T = any>(method: string, route: string, body?: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(`${manager.url}${route}`, {
    method,
    headers: { authorization: `Bearer ${manager.adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, body: (await response.json().catch(() => ({}))) as T };
}

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 120_000): Promise<T> {
  for (const deadline = Date.now() + timeoutMs; ; ) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function hostStates(): Promise<Record<string, string>> {
  const hosts = await api('GET', '/api/v1/hosts');
  return Object.fromEntries(hosts.body.items.map((h: any) => [h.name, h.state]));
}

/** Live QEMU processes of the VM, anywhere on this machine. */
function qemusOf(vmId: string): Array<{ pid: number; host: string }> {
  const out: Array<{ pid: number; host: string }> = [];
  for (const p of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmdline = readFileSync(`/proc/${p}/cmdline`, 'utf8');
      if (!cmdline.startsWith('qemu-system') || !cmdline.includes(vmId) || /\) Z /.test(readFileSync(`/proc/${p}/stat`, 'utf8'))) continue;
      const host = [...stateDirs].find(([, dir]) => cmdline.includes(dir))?.[0] ?? '?';
      out.push({ pid: Number(p), host });
    } catch {
      /* gone */
    }
  }
  return out;
}

function powerScripts(name: string): { on: string; off: string; status: string } {
  const stateDir = stateDirs.get(name)!;
  const power = path.join(scriptDir, `${name}.power`);
  writeFileSync(power, 'on\n');
  const off = path.join(scriptDir, `${name}-off.sh`);
  writeFileSync(
    off,
    `#!/bin/sh
for p in /proc/[0-9]*; do
  if tr '\\0' ' ' < "$p/cmdline" 2>/dev/null | grep -qF "${stateDir}"; then kill -9 "\${p#/proc/}" 2>/dev/null; fi
done
echo off > "${power}"
`,
  );
  chmodSync(off, 0o755);
  return { on: `echo on > ${power}`, off, status: `cat ${power}` };
}

beforeAll(async () => {
  network = await TestNetwork.create(3);
  manager = await startManager({
    ...defaultManagerConfig(dataDir),
    listen: '127.0.0.1:0',
    tlsListen: `${network.gateway}:0`,
    heartbeatMs: 500,
    agentTimeoutMs: 2_000,
    haGraceMs: 3_000,
    powerVerifyMs: 10_000,
    applianceCacheDir: defaultApplianceCacheDir(),
  });
  for (const host of network.hosts) {
    const join = await api<{ token: string; caFingerprint: string }>('POST', '/api/v1/hosts/join-tokens', {});
    const { stateDir } = await network.startAgent(host, {
      managerUrl: manager.tlsUrl!,
      joinToken: join.body.token,
      caFingerprint: join.body.caFingerprint,
      capacity: { cpus: 4, memoryMiB: 1024 },
      config: { pools: [{ name: 'default', path: sharedDir, shared: true }], stopTimeoutMs: 2_000 },
    });
    stateDirs.set(host.name, stateDir);
  }
  await until('three hosts online', async () => {
    const states = await hostStates();
    return Object.keys(states).length === 3 && Object.values(states).every((s) => s === 'online');
  });
  for (const host of network.hosts) expect((await api('PUT', `/api/v1/hosts/${host.name}/power`, { driver: 'command', ...powerScripts(host.name) })).status).toBe(200);
  const importDir = path.join(dataDir, 'import');
  mkdirSync(importDir, { recursive: true });
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(importDir, 'tiny.qcow2'), '16M']);
  expect((await api('POST', '/api/v1/images?wait=true', { name: 'tiny', source: { path: path.join(importDir, 'tiny.qcow2') } })).body.state).toBe('done');
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
      expect((await hostStates()).h1).toBe('powered_off');
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
      const states = await hostStates();
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
      const states = await hostStates();
      return states.h2 === 'online' && states.h3 === 'online';
    }, 120_000);
    expect((await api('GET', '/api/v1/vms/ha1')).body).toMatchObject({ state: 'running', hostName: vm.hostName });
  }, 400_000);
});

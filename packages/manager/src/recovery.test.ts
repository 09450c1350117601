import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '@drover/agent';
import { freePort, tempDir, testAgentConfig } from '@drover/agent/testing';
import { defaultApplianceCacheDir } from '@drover/appliances';

/**
 * The manager is a real process here, killed with SIGKILL in the middle of a
 * VM start. The next manager must end the operation (done or rolled back),
 * make the VM's state match what its host really runs, and leave no orphan QEMU.
 */
const managerMain = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'main.js');
const dataDir = tempDir('recovery');
const agentDir = tempDir('recovery-agent');
let agent: RunningAgent;
let manager: { child: ChildProcess; url: string; token: string } | undefined;
const managerPids: number[] = [];

async function spawnManager(): Promise<{ child: ChildProcess; url: string; token: string }> {
  const ready = path.join(dataDir, `ready-${Date.now()}.json`);
  const child = spawn(process.execPath, [managerMain, '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--ready-file', ready], {
    env: { ...process.env, DROVER_APPLIANCE_CACHE: defaultApplianceCacheDir(), DROVER_MANAGER_LOG_LEVEL: process.env.DROVER_LOG_LEVEL ?? 'warn' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  managerPids.push(child.pid!);
  for (const deadline = Date.now() + 120_000; !existsSync(ready); ) {
    if (child.exitCode !== null) throw new Error(`drover-manager exited with ${child.exitCode}`);
    if (Date.now() > deadline) throw new Error('drover-manager did not become ready');
    await new Promise((r) => setTimeout(r, 50));
  }
  const info = JSON.parse(readFileSync(ready, 'utf8')) as { url: string; token: string };
  rmSync(ready);
  return { child, ...info };
}

async function api<T = unknown>(method: string, route: string, body?: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(`${manager!.url}${route}`, {
    method,
    headers: { authorization: `Bearer ${manager!.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, body: (await response.json().catch(() => ({}))) as T };
}

function qemuOf(vmId: string): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
        return !/\) Z /.test(stat) && readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(vmId);
      } catch {
        return false;
      }
    })
    .map(Number);
}

async function killManager(): Promise<void> {
  const child = manager!.child;
  child.kill('SIGKILL');
  await new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(undefined) : child.once('exit', resolve)));
}

beforeAll(async () => {
  if (!existsSync(managerMain)) throw new Error(`${managerMain} is missing: run "npx tsc -b" first`);
  manager = await spawnManager();
  const join = await api<{ token: string }>('POST', '/api/v1/hosts/join-tokens', {});
  agent = await startAgent(testAgentConfig(agentDir, { listen: `127.0.0.1:${await freePort()}`, hostName: 'h1' }), { join: { managerUrl: manager.url, token: join.body.token } });
  for (const deadline = Date.now() + 60_000; (await api<{ items: Array<{ state: string }> }>('GET', '/api/v1/hosts')).body.items[0]?.state !== 'online'; ) {
    if (Date.now() > deadline) throw new Error('host did not come online');
    await new Promise((r) => setTimeout(r, 100));
  }
});

afterAll(async () => {
  try {
    for (const vm of await agent.vms.list()) if (vm.pid) await agent.vms.stop(vm.id, { force: true }).catch(() => undefined);
  } finally {
    await agent?.close();
    for (const pid of managerPids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(agentDir, { recursive: true, force: true });
  }
});

describe('manager killed during a VM start', () => {
  for (const [when, atPhase] of [
    ['right after the 202', undefined],
    ['while the host boots the VM', 'boot'],
  ] as const) {
    it(`ends the operation and matches reality when killed ${when}`, async () => {
      const name = `rec-${atPhase ?? 'early'}`;
      const created = await api<{ id: string }>('POST', '/api/v1/vms', { name, image: 'counter', memoryMiB: 128 });
      expect(created.status).toBe(201);
      const vmId = created.body.id;
      const start = await api<{ id: string }>('POST', `/api/v1/vms/${vmId}/start`, {});
      expect(start.status).toBe(202);
      if (atPhase) {
        for (const deadline = Date.now() + 60_000; ; ) {
          const op = await api<{ phase: string; state: string }>('GET', `/api/v1/operations/${start.body.id}`);
          if (op.body.phase === atPhase || !['pending', 'running'].includes(op.body.state)) break;
          if (Date.now() > deadline) throw new Error('start never reached its boot phase');
          await new Promise((r) => setTimeout(r, 5));
        }
      }
      await killManager();
      manager = await spawnManager();

      let op = (await api<{ state: string; phase: string }>('GET', `/api/v1/operations/${start.body.id}`)).body;
      for (const deadline = Date.now() + 120_000; ['pending', 'running'].includes(op.state); ) {
        if (Date.now() > deadline) throw new Error(`operation still ${op.state} in phase ${op.phase}`);
        await new Promise((r) => setTimeout(r, 100));
        op = (await api<{ state: string; phase: string }>('GET', `/api/v1/operations/${start.body.id}`)).body;
      }
      expect(['done', 'rolled_back', 'failed']).toContain(op.state);

      // Reality: what the host runs. The store must say the same, and at most one QEMU exists.
      const onHost = await agent.vms.get(vmId).catch(() => undefined);
      const stored = (await api<{ state: string }>('GET', `/api/v1/vms/${vmId}`)).body;
      const running = onHost?.state === 'running';
      expect(stored.state).toBe(running ? 'running' : onHost ? onHost.state : 'defined');
      expect(qemuOf(vmId).length).toBe(running ? 1 : 0);
      if (op.state === 'done') expect(running).toBe(true);
      // No capacity stays reserved for a start that ended.
      const host = (await api<{ items: Array<{ allocated: { vms: number } }> }>('GET', '/api/v1/hosts')).body.items[0]!;
      expect(host.allocated.vms).toBe(running ? 1 : 0);
      if (running) {
        const stop = await api<{ state: string }>('POST', `/api/v1/vms/${vmId}/force-off?wait=true`, {});
        expect(stop.body.state).toBe('done');
      }
      expect(qemuOf(vmId)).toEqual([]);
    });
  }
});

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildAppliance, defaultApplianceCacheDir, type ApplianceArtifacts, type ApplianceName } from '@drover/appliances';
import type { VmSpec } from '@drover/api';
import { killProcess, readProcessInfo, waitForExit } from '@drover/qemu';
import { startAgent, type RunningAgent } from '../agent.js';
import { defaultAgentConfig, type AgentConfig } from '../config.js';
import { AgentClient } from './agent-client.js';

export { AgentClient } from './agent-client.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The built agent entry point, for tests that must kill -9 a real agent process. */
export const agentMain = path.resolve(here, '..', '..', 'dist', 'main.js');

export function tempDir(prefix: string): string {
  return mkdtempSync(path.join(os.tmpdir(), `drover-${prefix}-`));
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

export function testAgentConfig(stateDir: string, overrides: Partial<AgentConfig> = {}): AgentConfig {
  return {
    ...defaultAgentConfig(stateDir),
    listen: '127.0.0.1:0',
    applianceCacheDir: defaultApplianceCacheDir(),
    // Tests import fixtures they make in the system temporary directory.
    importDirs: [os.tmpdir()],
    stopTimeoutMs: 30_000,
    logLevel: (process.env.DROVER_LOG_LEVEL as AgentConfig['logLevel'] | undefined) ?? 'warn',
    ...overrides,
  };
}

export interface TestAgent {
  client: AgentClient;
  stateDir: string;
  agent: RunningAgent;
  /** Stops every VM by force, closes the agent and removes its state. */
  dispose(): Promise<void>;
}

/** Ends every VM the agent knows (by force) and checks its QEMU really went away. */
export async function forceOffAll(client: AgentClient): Promise<void> {
  for (const vm of await client.vms()) {
    if (vm.pid !== undefined) {
      await client.request('POST', `/v1/vms/${vm.id}/force-off`, {});
      const info = await readProcessInfo(vm.pid);
      if (info?.alive) {
        await killProcess(vm.pid, 'SIGKILL');
        await waitForExit(vm.pid, 10_000).catch(() => undefined);
      }
    }
  }
}

/** An in-process agent in a fresh state directory. */
export async function startTestAgent(overrides: Partial<AgentConfig> = {}): Promise<TestAgent> {
  const stateDir = tempDir('agent');
  const agent = await startAgent(testAgentConfig(stateDir, overrides));
  const client = new AgentClient(agent.url, agent.token);
  return {
    client,
    stateDir,
    agent,
    async dispose() {
      try {
        await forceOffAll(client);
      } finally {
        await agent.close();
        rmSync(stateDir, { recursive: true, force: true });
      }
    },
  };
}

/** A real `drover-agent` process (for crash tests). Needs `tsc -b` to have run. */
export async function spawnAgentProcess(stateDir: string, env: NodeJS.ProcessEnv = {}): Promise<{ child: ChildProcess; client: AgentClient; pid: number }> {
  if (!existsSync(agentMain)) throw new Error(`${agentMain} is missing: run "npx tsc -b" first`);
  const readyFile = path.join(stateDir, `ready-${Date.now()}.json`);
  const child = spawn(process.execPath, [agentMain, '--listen', '127.0.0.1:0', '--state-dir', stateDir, '--ready-file', readyFile], {
    env: { ...process.env, DROVER_AGENT_LOG_LEVEL: process.env.DROVER_LOG_LEVEL ?? 'warn', DROVER_APPLIANCE_CACHE: defaultApplianceCacheDir(), ...env },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const deadline = Date.now() + 120_000;
  while (!existsSync(readyFile)) {
    if (child.exitCode !== null) throw new Error(`drover-agent exited with ${child.exitCode}`);
    if (Date.now() > deadline) throw new Error('drover-agent did not become ready');
    await new Promise((r) => setTimeout(r, 50));
  }
  const ready = JSON.parse(readFileSync(readyFile, 'utf8')) as { url: string; token: string; pid: number };
  rmSync(readyFile, { force: true });
  return { child, client: new AgentClient(ready.url, ready.token), pid: ready.pid };
}

export interface ImportedAppliance {
  artifacts: ApplianceArtifacts;
  pool: string;
  kernel: string;
  initrd: string;
  root: string;
  data?: string;
}

/** Builds (cached) and imports an appliance's kernel, initrd and disks into a pool. */
export async function importAppliance(client: AgentClient, name: ApplianceName, pool = 'default'): Promise<ImportedAppliance> {
  const artifacts = await buildAppliance(name, { cacheDir: defaultApplianceCacheDir() });
  const prefix = `${name}-${artifacts.version}`;
  const have = new Set(((await client.ok('GET', `/v1/pools/${pool}/volumes`)) as Array<{ name: string }>).map((v) => v.name));
  const ensure = async (volume: string, file: string, format: 'raw' | 'qcow2') => {
    if (!have.has(volume)) await client.createVolume(pool, { name: volume, importFrom: file, format });
    return volume;
  };
  return {
    artifacts,
    pool,
    kernel: await ensure(`${prefix}.kernel`, artifacts.kernel, 'raw'),
    initrd: await ensure(`${prefix}.initrd`, artifacts.initrd, 'raw'),
    root: await ensure(`${prefix}.root.qcow2`, artifacts.rootDisk, 'qcow2'),
    ...(artifacts.dataDisk ? { data: await ensure(`${prefix}.data.qcow2`, artifacts.dataDisk, 'qcow2') } : {}),
  };
}

/**
 * Defines a VM from an imported appliance: a thin clone of its root disk (and
 * of its data disk), direct kernel boot, user networking with forwards.
 */
export async function defineApplianceVm(
  client: AgentClient,
  appliance: ImportedAppliance,
  name: string,
  options: { memoryMiB?: number; cpus?: number; forwards?: Array<{ hostPort: number; guestPort: number }>; cmdline?: string; vnc?: boolean } = {},
): Promise<string> {
  const root = `${name}.root.qcow2`;
  await client.createVolume(appliance.pool, { name: root, cloneOf: appliance.root });
  const disks: VmSpec['disks'] = [{ pool: appliance.pool, volume: root }];
  if (appliance.data) {
    const data = `${name}.data.qcow2`;
    await client.createVolume(appliance.pool, { name: data, cloneOf: appliance.data });
    disks.push({ pool: appliance.pool, volume: data });
  }
  const vm = await client.defineVm({
    name,
    cpus: options.cpus ?? 1,
    memoryMiB: options.memoryMiB ?? Math.max(appliance.artifacts.minMemoryMiB, 128),
    disks,
    nics: [{ forwards: options.forwards ?? [] }],
    boot: {
      kind: 'kernel',
      kernel: { pool: appliance.pool, volume: appliance.kernel },
      initrd: { pool: appliance.pool, volume: appliance.initrd },
      cmdline: `${appliance.artifacts.cmdline} drover.name=${name} drover.net=user ${options.cmdline ?? ''}`.trim(),
    },
    ...(options.vnc === undefined ? {} : { vnc: options.vnc }),
  });
  return vm.id;
}

/** Parses `DROVER-COUNTER gen=N t=T` lines. */
export function counterLines(text: string): Array<{ gen: number; t: number }> {
  return [...text.matchAll(/DROVER-COUNTER gen=(\d+) t=(\d+(?:\.\d+)?)/g)].map((m) => ({ gen: Number(m[1]), t: Number(m[2]) }));
}

/** True when the process is gone or only a zombie waiting for its (re)parent to reap it. */
export async function processGone(pid: number): Promise<boolean> {
  const info = await readProcessInfo(pid);
  return info === undefined || !info.alive;
}
export { TestNetwork, type TestHost } from './netns.js';
/** A web guest on a tap of a Drover bridge inside a namespace, with a console shell (net/testing). */
export { TapGuest, type TapGuestOptions } from '../net/testing/tap-guest.js';
/** Scratch namespaces and commands inside them, for network tests (net/testing). */
export { ScratchNamespaces, exec as netnsExec, tryExec as netnsTryExec } from '../net/testing/scratch-netns.js';

import { spawn } from 'node:child_process';
import { existsSync, openSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildAllAppliances } from '@drover/appliances';
import { AgentClient } from '@drover/agent/testing';
import { errors } from '@drover/core';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The agent's entry point inside this checkout (packages/cli/dist → packages/agent/dist). */
const agentMain = path.resolve(here, '..', '..', 'agent', 'dist', 'main.js');

export interface UpOptions {
  dataDir: string;
  port: number;
  detach: boolean;
  json: boolean;
}

export interface UpInfo {
  url: string;
  token: string;
  dataDir: string;
  pid: number;
  appliances: string[];
}

export function defaultDataDir(): string {
  if (process.env.DROVER_DATA_DIR) return path.resolve(process.env.DROVER_DATA_DIR);
  return process.getuid?.() === 0 ? '/var/lib/drover' : path.join(os.homedir(), '.local', 'share', 'drover');
}

function runFile(dataDir: string): string {
  return path.join(dataDir, 'drover-up.json');
}

/** Alive and not a zombie: an orphaned agent may wait a while for init to reap it. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

async function waitForReady(readyFile: string, pid: number, logFile: string): Promise<{ url: string; token: string }> {
  const deadline = Date.now() + 180_000;
  for (;;) {
    if (existsSync(readyFile)) return JSON.parse(await readFile(readyFile, 'utf8')) as { url: string; token: string };
    if (!alive(pid)) {
      const log = await readFile(logFile, 'utf8').catch(() => '');
      throw errors.unavailable(`The Drover agent exited during start-up: ${log.trim().split('\n').slice(-3).join(' | ')}`);
    }
    if (Date.now() > deadline) throw errors.timeout('The Drover agent did not answer within 180 s');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * `drover up`: one host on this machine with embedded defaults — an agent with
 * a default pool in the data directory and the demo appliances imported.
 * (When the control plane lands, a manager starts here too.)
 */
export async function up(options: UpOptions): Promise<UpInfo> {
  const dataDir = path.resolve(options.dataDir);
  await mkdir(dataDir, { recursive: true });
  const existing = await readFile(runFile(dataDir), 'utf8').then((t) => JSON.parse(t) as UpInfo).catch(() => undefined);
  if (existing && alive(existing.pid)) {
    throw errors.conflict(`Drover is already up in "${dataDir}" (pid ${existing.pid}, ${existing.url}); run "drover down" first`);
  }
  if (!existsSync(agentMain)) throw errors.unavailable(`${agentMain} is missing; run ./drover (it builds Drover) instead of the bare CLI`);

  const readyFile = path.join(dataDir, 'agent.ready');
  await rm(readyFile, { force: true });
  const logFile = path.join(dataDir, 'agent.log');
  const log = openSync(logFile, 'a');
  const child = spawn(process.execPath, [agentMain, '--listen', `127.0.0.1:${options.port}`, '--state-dir', path.join(dataDir, 'agent'), '--ready-file', readyFile], {
    detached: options.detach,
    stdio: ['ignore', log, log],
    env: { ...process.env, DROVER_APPLIANCE_CACHE: process.env.DROVER_APPLIANCE_CACHE ?? path.join(dataDir, 'cache', 'appliances'), DROVER_PROBE_CACHE: process.env.DROVER_PROBE_CACHE ?? path.join(dataDir, 'cache', 'accel-probe.json') },
  });
  const pid = child.pid!;
  const ready = await waitForReady(readyFile, pid, logFile);
  await rm(readyFile, { force: true });

  const client = new AgentClient(ready.url, ready.token);
  const built = await buildAllAppliances({ cacheDir: process.env.DROVER_APPLIANCE_CACHE ?? path.join(dataDir, 'cache', 'appliances') });
  const have = new Set(((await client.ok('GET', '/v1/pools/default/volumes')) as Array<{ name: string }>).map((v) => v.name));
  const imported: string[] = [];
  for (const artifacts of Object.values(built)) {
    const prefix = `${artifacts.name}-${artifacts.version}`;
    const files: Array<[string, string, 'raw' | 'qcow2']> = [
      [`${prefix}.kernel`, artifacts.kernel, 'raw'],
      [`${prefix}.initrd`, artifacts.initrd, 'raw'],
      [`${prefix}.root.qcow2`, artifacts.rootDisk, 'qcow2'],
      ...(artifacts.dataDisk ? ([[`${prefix}.data.qcow2`, artifacts.dataDisk, 'qcow2']] as Array<[string, string, 'qcow2']>) : []),
    ];
    for (const [name, file, format] of files) {
      if (!have.has(name)) await client.createVolume('default', { name, importFrom: file, format });
    }
    imported.push(prefix);
  }
  const info: UpInfo = { url: ready.url, token: ready.token, dataDir, pid, appliances: imported };
  await writeFile(runFile(dataDir), JSON.stringify(info, null, 2), { mode: 0o600 });
  if (options.detach) child.unref();
  return info;
}

/** `drover down`: stops the VMs `up` runs and the agent, leaving the data directory. */
export async function down(dataDirOption: string): Promise<{ stopped: string[]; dataDir: string }> {
  const dataDir = path.resolve(dataDirOption);
  const info = await readFile(runFile(dataDir), 'utf8').then((t) => JSON.parse(t) as UpInfo).catch(() => undefined);
  if (!info) throw errors.notFound('Drover instance', dataDir);
  const stopped: string[] = [];
  if (alive(info.pid)) {
    const client = new AgentClient(info.url, info.token);
    const vms = await client.vms().catch(() => []);
    for (const vm of vms) {
      if (vm.pid === undefined) continue;
      const answer = await client.request('POST', `/v1/vms/${vm.id}/stop`, { timeoutMs: 20_000 });
      if (answer.status >= 300) await client.request('POST', `/v1/vms/${vm.id}/force-off`, {});
      stopped.push(vm.name);
    }
    process.kill(info.pid, 'SIGTERM');
    const deadline = Date.now() + 20_000;
    while (alive(info.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    if (alive(info.pid)) process.kill(info.pid, 'SIGKILL');
  }
  await rm(runFile(dataDir), { force: true });
  return { stopped, dataDir };
}

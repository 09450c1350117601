import { spawn } from 'node:child_process';
import { existsSync, openSync, readFileSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { errors } from '@drover/core';

const here = path.dirname(fileURLToPath(import.meta.url));
/** Entry points inside this checkout (packages/cli/dist → packages/<name>/dist). */
const managerMain = path.resolve(here, '..', '..', 'manager', 'dist', 'main.js');
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
  /** The manager's process. */
  pid: number;
  agentPid: number;
  host: string;
  appliances: string[];
}

export function defaultDataDir(): string {
  if (process.env.DROVER_DATA_DIR) return path.resolve(process.env.DROVER_DATA_DIR);
  return process.getuid?.() === 0 ? '/var/lib/drover' : path.join(os.homedir(), '.local', 'share', 'drover');
}

function runFile(dataDir: string): string {
  return path.join(dataDir, 'drover-up.json');
}

/** Alive and not a zombie: an orphaned process may wait a while for init to reap it. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/** Starts a Drover daemon in its own session (Ctrl-C in the terminal reaches `drover up` only) and waits for its ready file. */
async function daemon(name: string, main: string, args: string[], dataDir: string, env: NodeJS.ProcessEnv): Promise<{ pid: number; ready: Record<string, string> }> {
  if (!existsSync(main)) throw errors.unavailable(`${main} is missing; run ./drover (it builds Drover) instead of the bare CLI`);
  const readyFile = path.join(dataDir, `${name}.ready`);
  await rm(readyFile, { force: true });
  const logFile = path.join(dataDir, `${name}.log`);
  const log = openSync(logFile, 'a');
  const child = spawn(process.execPath, [main, ...args, '--ready-file', readyFile], { detached: true, stdio: ['ignore', log, log], env });
  child.unref();
  const pid = child.pid!;
  try {
    return await waitReady(name, pid, readyFile, logFile);
  } catch (error) {
    // The caller never learns this pid: do not leave the daemon behind.
    kill(pid);
    throw error;
  }
}

async function waitReady(name: string, pid: number, readyFile: string, logFile: string): Promise<{ pid: number; ready: Record<string, string> }> {
  const deadline = Date.now() + 180_000;
  for (;;) {
    if (existsSync(readyFile)) {
      const ready = JSON.parse(await readFile(readyFile, 'utf8')) as Record<string, string>;
      await rm(readyFile, { force: true });
      return { pid, ready };
    }
    if (!alive(pid)) {
      const text = await readFile(logFile, 'utf8').catch(() => '');
      throw errors.unavailable(`drover-${name} exited during start-up: ${text.trim().split('\n').slice(-3).join(' | ')}`);
    }
    if (Date.now() > deadline) throw errors.timeout(`drover-${name} did not become ready within 180 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function api<T>(url: string, token: string, method: string, route: string, body?: unknown): Promise<T> {
  const response = await fetch(`${url}${route}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(60_000),
  });
  const parsed = (await response.json().catch(() => ({}))) as T & { error?: { message?: string } };
  if (response.status >= 300) throw errors.unavailable(`${method} ${route} answered ${response.status}: ${parsed.error?.message ?? ''}`);
  return parsed;
}

function kill(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    /* already gone */
  }
}

/**
 * `drover up`: a whole Drover on this machine with embedded defaults — a
 * manager on the embedded SQLite store with the demo appliances in its
 * library, and one local agent joined to it over mutual TLS.
 */
export async function up(options: UpOptions): Promise<UpInfo> {
  const dataDir = path.resolve(options.dataDir);
  await mkdir(dataDir, { recursive: true, mode: 0o711 });
  // QEMU runs unprivileged and must traverse down to its VM's run/ directory; it cannot list anything here.
  await chmod(dataDir, 0o711);
  const existing = await readFile(runFile(dataDir), 'utf8').then((t) => JSON.parse(t) as UpInfo).catch(() => undefined);
  if (existing && alive(existing.pid)) {
    throw errors.conflict(`Drover is already up in "${dataDir}" (pid ${existing.pid}, ${existing.url}); run "drover down" first`);
  }
  const env = {
    ...process.env,
    DROVER_APPLIANCE_CACHE: process.env.DROVER_APPLIANCE_CACHE ?? path.join(dataDir, 'cache', 'appliances'),
    DROVER_PROBE_CACHE: process.env.DROVER_PROBE_CACHE ?? path.join(dataDir, 'cache', 'accel-probe.json'),
  };
  let managerPid: number | undefined;
  let agentPid: number | undefined;
  try {
    const manager = await daemon('manager', managerMain, ['--data-dir', path.join(dataDir, 'manager'), '--listen', `127.0.0.1:${options.port}`], dataDir, env);
    managerPid = manager.pid;
    const url = manager.ready.url!;
    const token = manager.ready.token!;
    // The agent's address is in its certificate: keep the same port across restarts.
    const portFile = path.join(dataDir, 'agent-port');
    const agentPort = Number(await readFile(portFile, 'utf8').catch(() => '')) || (await freePort());
    await writeFile(portFile, String(agentPort));
    const hostName = 'local';
    const joined = existsSync(path.join(dataDir, 'agent', 'tls'));
    const joinArgs = joined ? [] : ['--join', url, '--join-token', (await api<{ token: string }>(url, token, 'POST', '/api/v1/hosts/join-tokens', {})).token];
    const agent = await daemon('agent', agentMain, ['--state-dir', path.join(dataDir, 'agent'), '--listen', `127.0.0.1:${agentPort}`, '--host-name', hostName, ...joinArgs], dataDir, env);
    agentPid = agent.pid;
    const deadline = Date.now() + 60_000;
    for (;;) {
      const hosts = await api<{ items: Array<{ name: string; state: string }> }>(url, token, 'GET', `/api/v1/hosts?name=${hostName}`);
      if (hosts.items.some((h) => h.name === hostName && h.state === 'online')) break;
      if (Date.now() > deadline) throw errors.timeout(`Host "${hostName}" did not come online within 60 s`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const images = await api<{ items: Array<{ name: string; version: string }> }>(url, token, 'GET', '/api/v1/images');
    const info: UpInfo = { url, token, dataDir, pid: manager.pid, agentPid: agent.pid, host: hostName, appliances: images.items.map((i) => `${i.name}-${i.version}`) };
    await writeFile(runFile(dataDir), JSON.stringify(info, null, 2), { mode: 0o600 });
    return info;
  } catch (error) {
    // Nothing half-started stays behind.
    kill(agentPid);
    kill(managerPid);
    throw error;
  }
}

async function stopProcess(pid: number): Promise<void> {
  if (!alive(pid)) return;
  kill(pid);
  const deadline = Date.now() + 20_000;
  while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  if (alive(pid)) process.kill(pid, 'SIGKILL');
}

/** `drover down`: stops the VMs, the agent and the manager that `up` started; the data directory stays. */
export async function down(dataDirOption: string): Promise<{ stopped: string[]; dataDir: string }> {
  const dataDir = path.resolve(dataDirOption);
  const info = await readFile(runFile(dataDir), 'utf8').then((t) => JSON.parse(t) as UpInfo).catch(() => undefined);
  if (!info) throw errors.notFound('Drover instance', dataDir);
  const stopped: string[] = [];
  if (alive(info.pid)) {
    const vms = await api<{ items: Array<{ id: string; name: string; state: string }> }>(info.url, info.token, 'GET', '/api/v1/vms?limit=1000').catch(() => ({ items: [] }));
    for (const vm of vms.items) {
      if (!['running', 'paused'].includes(vm.state)) continue;
      await api(info.url, info.token, 'POST', `/api/v1/vms/${vm.id}/stop?wait=true`, { timeoutMs: 20_000 }).catch(() =>
        api(info.url, info.token, 'POST', `/api/v1/vms/${vm.id}/force-off?wait=true`, {}).catch(() => undefined),
      );
      stopped.push(vm.name);
    }
  }
  await stopProcess(info.agentPid);
  await stopProcess(info.pid);
  await rm(runFile(dataDir), { force: true });
  return { stopped, dataDir };
}

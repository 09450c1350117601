/* eslint-disable @typescript-eslint/no-explicit-any -- the multi-host tests read the API's JSON answers field by field */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { ScratchNamespaces, TestHost, TestNetwork } from '@drover/agent/testing';
import { defaultApplianceCacheDir } from '@drover/appliances';
import { defaultManagerConfig, type ManagerConfig } from '../config.js';
import { startManager, type RunningManager } from '../manager.js';

/**
 * Shared set-up of the multi-host tests: a manager in this process and agents
 * in network namespaces (`TestNetwork`) joined to it over TLS.
 */

/** The manager's client certificate, its key and the cluster CA, read from its data directory (to call agents as the manager does). */
export function managerClientCredentials(dataDir: string): { caPem: string; certPem: string; keyPem: string } {
  const ca = path.join(dataDir, 'ca');
  return {
    caPem: readFileSync(path.join(ca, 'authority', 'ca.crt'), 'utf8'),
    certPem: readFileSync(path.join(ca, 'manager-client', 'client.crt'), 'utf8'),
    keyPem: readFileSync(path.join(ca, 'manager-client', 'client.key'), 'utf8'),
  };
}

/**
 * The end of a test on a TestNetwork (its afterAll): the manager closed, the
 * scratch namespaces and the network removed, then `dirs`.
 */
export async function closeNetworkTest(manager: RunningManager | undefined, spaces: ScratchNamespaces, network: TestNetwork | undefined, dirs: string[]): Promise<void> {
  await manager?.close().catch(() => undefined);
  await spaces.destroy();
  await network?.destroy();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}

/**
 * Starts the manager in this process on `dataDir`: the API on loopback, the
 * agents' TLS listener on the network's gateway, 500 ms heartbeats; `config`
 * adds to or replaces these.
 */
export function startNetworkManager(network: TestNetwork, dataDir: string, config: Partial<ManagerConfig> = {}): Promise<RunningManager> {
  return startManager({ ...defaultManagerConfig(dataDir), listen: '127.0.0.1:0', tlsListen: `${network.gateway}:0`, heartbeatMs: 500, applianceCacheDir: defaultApplianceCacheDir(), ...config });
}

/** A JSON call with the admin token; a body that is not JSON reads as `{}`. */
export type ManagerApi<D = any> = <T = D>(method: string, route: string, body?: unknown) => Promise<{ status: number; body: T }>;

/** The API of the manager that `manager()` returns at call time (tests assign it in `beforeAll`). */
export function managerApi<D = any>(manager: () => RunningManager): ManagerApi<D> {
  return async <T = D>(method: string, route: string, body?: unknown): Promise<{ status: number; body: T }> => {
    const { url, adminToken } = manager();
    const response = await fetch(`${url}${route}`, {
      method,
      headers: { authorization: `Bearer ${adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: response.status, body: (await response.json().catch(() => ({}))) as T };
  };
}

/** Polls `probe` every `everyMs` (default 200 ms) until it gives a truthy value. */
export async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 120_000, everyMs = 200): Promise<T> {
  for (const deadline = Date.now() + timeoutMs; ; ) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Each host's state by its name. */
export async function hostStates(api: ManagerApi): Promise<Record<string, string>> {
  const hosts = await api('GET', '/api/v1/hosts');
  return Object.fromEntries(hosts.body.items.map((h: any) => [h.name, h.state]));
}

/** Polls the host list every 100 ms until it has `count` hosts, all online. */
export async function waitHostsOnline(api: ManagerApi, count: number, timeoutMs = 60_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; ; ) {
    const hosts = await api<{ items: Array<{ state: string }> }>('GET', '/api/v1/hosts');
    if (hosts.body.items.length === count && hosts.body.items.every((h) => h.state === 'online')) return;
    if (Date.now() > deadline) throw new Error(`hosts did not come online: ${JSON.stringify(hosts.body)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Starts the agent of `host` in its namespace, joined to the manager's TLS
 * listener with a fresh join token; resolves to the agent's state directory.
 */
export async function joinHost(
  network: TestNetwork,
  manager: RunningManager,
  api: ManagerApi,
  host: TestHost,
  options: Omit<Parameters<TestNetwork['startAgent']>[1], 'managerUrl' | 'joinToken' | 'caFingerprint'>,
): Promise<string> {
  const join = await api<{ token: string; caFingerprint: string }>('POST', '/api/v1/hosts/join-tokens', {});
  const { stateDir } = await network.startAgent(host, { managerUrl: manager.tlsUrl!, joinToken: join.body.token, caFingerprint: join.body.caFingerprint, ...options });
  return stateDir;
}

/**
 * Joins every host of the network (4 CPUs, `memoryMiB`, the pool `default`
 * shared in `sharedDir`, 2 s stop timeout) and waits until all are online;
 * resolves to each host's state directory by its name.
 */
export async function joinSharedHosts(network: TestNetwork, manager: RunningManager, api: ManagerApi, sharedDir: string, memoryMiB: number): Promise<Map<string, string>> {
  const stateDirs = new Map<string, string>();
  for (const host of network.hosts) {
    stateDirs.set(host.name, await joinHost(network, manager, api, host, { capacity: { cpus: 4, memoryMiB }, config: { pools: [sharedPool(sharedDir)], stopTimeoutMs: 2_000 } }));
  }
  await waitHostsOnline(api, network.hosts.length, 120_000);
  return stateDirs;
}

/** A shared pool named `default` in `dir`, so live migrations move only memory. */
export function sharedPool(dir: string): { name: string; path: string; shared: true } {
  return { name: 'default', path: dir, shared: true };
}

/** Imports an empty 16 MiB qcow2 as image `tiny`: VMs run QEMU on it, nothing inside needs to boot. Resolves to the operation. */
export async function importTinyImage(api: ManagerApi, dataDir: string): Promise<any> {
  const importDir = path.join(dataDir, 'import');
  mkdirSync(importDir, { recursive: true });
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(importDir, 'tiny.qcow2'), '16M']);
  return (await api('POST', '/api/v1/images?wait=true', { name: 'tiny', source: { path: path.join(importDir, 'tiny.qcow2') } })).body;
}

/** Live (not zombie) QEMU processes on this machine, with their NUL-separated command lines. */
export function liveQemus(): Array<{ pid: number; cmdline: string }> {
  const found: Array<{ pid: number; cmdline: string }> = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmdline.startsWith('qemu-system') && !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))) found.push({ pid: Number(pid), cmdline });
    } catch {
      /* gone */
    }
  }
  return found;
}

/**
 * The "power off" of a host for the command power driver: a script that kills
 * every process whose command line names the host's state directory (its
 * agent and its QEMUs: a power cut) and writes `off` to the host's power file,
 * which starts as `on`. `status` reads that file.
 */
export function writePowerOff(scriptDir: string, hostName: string, stateDir: string): { power: string; off: string; status: string } {
  const power = path.join(scriptDir, `${hostName}.power`);
  writeFileSync(power, 'on\n');
  const off = path.join(scriptDir, `${hostName}-off.sh`);
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
  return { power, off, status: `cat ${power}` };
}

import { rmSync } from 'node:fs';
import { startAgent, type RunningAgent } from '@drover/agent';
import { freePort, tempDir, testAgentConfig } from '@drover/agent/testing';
import { defaultApplianceCacheDir } from '@drover/appliances';
import { defaultManagerConfig, type ManagerConfig } from '../config.js';
import { startManager, type RunningManager, type StartManagerOptions } from '../manager.js';

export interface ApiAnswer<T> {
  status: number;
  body: T;
  headers: Headers;
}

/** A manager on its embedded store with one real agent joined over mutual TLS: the smallest real cluster. */
export interface TestCluster {
  manager: RunningManager;
  agent: RunningAgent;
  /** The manager's data directory and the agent's state directory (removed by `close`). */
  dataDir: string;
  agentDir: string;
  /** A JSON call with the admin token (`headers` may replace it). */
  api<T = unknown>(method: string, route: string, body?: unknown, headers?: Record<string, string>): Promise<ApiAnswer<T>>;
  /** Polls an operation until it ends. */
  waitOp(id: string, timeoutMs?: number): Promise<{ state: string; error: unknown; result: unknown }>;
  /** Polls a VM's serial log (through the manager) until it matches. */
  waitForSerial(vm: string, pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Forces off every running VM, stops agent and manager, removes their directories. */
  close(): Promise<void>;
}

/**
 * Starts a manager (SQLite, loopback, fast heartbeats) and one agent named
 * `hostName` that joins it with a one-time token; resolves once the host is
 * online. Every test that needs the control plane on real parts uses this.
 */
export async function startTestCluster(options: { hostName?: string; manager?: Partial<ManagerConfig>; ca?: StartManagerOptions['ca']; vmcast?: StartManagerOptions['vmcast']; labs?: StartManagerOptions['labs'] } = {}): Promise<TestCluster> {
  const dataDir = tempDir('cluster-manager');
  const agentDir = tempDir('cluster-agent');
  const manager = await startManager({ ...defaultManagerConfig(dataDir), listen: '127.0.0.1:0', heartbeatMs: 500, applianceCacheDir: defaultApplianceCacheDir(), ...options.manager }, { ...(options.ca ? { ca: options.ca } : {}), ...(options.vmcast ? { vmcast: options.vmcast } : {}), ...(options.labs ? { labs: options.labs } : {}) });
  const api = async <T = unknown>(method: string, route: string, body?: unknown, headers: Record<string, string> = {}): Promise<ApiAnswer<T>> => {
    const response = await fetch(`${manager.url}${route}`, {
      method,
      headers: { authorization: `Bearer ${manager.adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    const text = await response.text();
    return { status: response.status, headers: response.headers, body: (text && (response.headers.get('content-type') ?? '').includes('json') ? JSON.parse(text) : text) as T };
  };
  let agent: RunningAgent | undefined;
  try {
    const join = await api<{ token: string }>('POST', '/api/v1/hosts/join-tokens', {});
    if (join.status !== 201) throw new Error(`join token: ${join.status}`);
    agent = await startAgent(testAgentConfig(agentDir, { listen: `127.0.0.1:${await freePort()}`, hostName: options.hostName ?? 'h1' }), {
      join: { managerUrl: manager.url, token: join.body.token },
    });
    for (const deadline = Date.now() + 30_000; (await api<{ items: Array<{ state: string }> }>('GET', '/api/v1/hosts')).body.items[0]?.state !== 'online'; ) {
      if (Date.now() > deadline) throw new Error('host did not come online');
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (error) {
    await agent?.close();
    await manager.close();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(agentDir, { recursive: true, force: true });
    throw error;
  }
  const running = agent;
  return {
    manager,
    agent: running,
    dataDir,
    agentDir,
    api,
    async waitOp(id, timeoutMs = 180_000) {
      for (const deadline = Date.now() + timeoutMs; ; ) {
        const op = await api<{ state: string; error: unknown; result: unknown }>('GET', `/api/v1/operations/${id}`);
        if (!['pending', 'running'].includes(op.body.state)) return op.body;
        if (Date.now() > deadline) throw new Error(`operation ${id} did not end: ${JSON.stringify(op.body)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async waitForSerial(vm, pattern, timeoutMs = 90_000) {
      for (const deadline = Date.now() + timeoutMs; ; ) {
        const log = await api<string>('GET', `/api/v1/vms/${vm}/console/serial/log`);
        if (pattern.test(String(log.body))) return String(log.body);
        if (Date.now() > deadline) throw new Error(`no ${pattern} on the console of ${vm}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    },
    async close() {
      try {
        const vms = await api<{ items: Array<{ id: string; state: string }> }>('GET', '/api/v1/vms?limit=1000');
        for (const vm of vms.body.items ?? []) if (['running', 'paused'].includes(vm.state)) await api('POST', `/api/v1/vms/${vm.id}/force-off?wait=true`, {});
      } finally {
        await running.close();
        await manager.close();
        rmSync(dataDir, { recursive: true, force: true });
        rmSync(agentDir, { recursive: true, force: true });
      }
    },
  };
}

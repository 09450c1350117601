import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { stringify as toYaml } from 'yaml';
import { defaultApplianceCacheDir } from '@drover/appliances';
import { agentMain, tempDir } from './harness.js';

const run = promisify(execFile);

async function ip(...args: string[]): Promise<void> {
  await run('ip', args, { timeout: 10_000 });
}

export interface TestHost {
  name: string;
  namespace: string;
  address: string;
}

/**
 * Several "hosts" on one machine: a bridge in the root namespace (the
 * manager's side, at `gateway`) and one network namespace per host, joined to
 * it by a veth pair. Test traffic stays on these addresses and loopback.
 * `destroy` removes every namespace, link and process it made, even after a
 * failed test.
 */
export class TestNetwork {
  readonly hosts: TestHost[] = [];
  private readonly children: ChildProcess[] = [];
  /** How each host's agent was started, for `restartAgent`. */
  private readonly launches = new Map<string, { child: ChildProcess; args: string[]; env: NodeJS.ProcessEnv; ready: string }>();
  private readonly dirs: string[] = [];

  private constructor(
    readonly id: string,
    readonly bridge: string,
    readonly gateway: string,
  ) {}

  static async create(hostCount: number): Promise<TestNetwork> {
    const id = randomBytes(2).toString('hex');
    // A random /24 in 10.200.0.0/16 keeps concurrent runs apart.
    const subnet = `10.200.${randomBytes(1)[0]!}`;
    const network = new TestNetwork(id, `drv${id}br`, `${subnet}.1`);
    try {
      await ip('link', 'add', network.bridge, 'type', 'bridge');
      await ip('addr', 'add', `${network.gateway}/24`, 'dev', network.bridge);
      await ip('link', 'set', network.bridge, 'up');
      for (let i = 0; i < hostCount; i++) {
        const namespace = `drv${id}h${i}`;
        const outside = `drv${id}v${i}`;
        const inside = `drv${id}p${i}`;
        await ip('netns', 'add', namespace);
        network.hosts.push({ name: `h${i + 1}`, namespace, address: `${subnet}.${11 + i}` });
        await ip('link', 'add', outside, 'type', 'veth', 'peer', 'name', inside);
        await ip('link', 'set', outside, 'master', network.bridge);
        await ip('link', 'set', outside, 'up');
        await ip('link', 'set', inside, 'netns', namespace);
        await ip('-n', namespace, 'link', 'set', inside, 'name', 'eth0');
        await ip('-n', namespace, 'addr', 'add', `${subnet}.${11 + i}/24`, 'dev', 'eth0');
        await ip('-n', namespace, 'link', 'set', 'eth0', 'up');
        await ip('-n', namespace, 'link', 'set', 'lo', 'up');
      }
    } catch (error) {
      await network.destroy();
      throw error;
    }
    return network;
  }

  /** Cuts a host off (its end of the link goes down) or heals it. */
  async setLink(host: TestHost, up: boolean): Promise<void> {
    await ip('-n', host.namespace, 'link', 'set', 'eth0', up ? 'up' : 'down');
  }

  /**
   * Starts a real `drover-agent` inside the host's namespace, joining the
   * manager at `managerUrl` (TLS, CA pinned by `caFingerprint`).
   */
  async startAgent(
    host: TestHost,
    options: { managerUrl: string; joinToken: string; caFingerprint: string; capacity: { cpus: number; memoryMiB: number }; port?: number; config?: Record<string, unknown> },
  ): Promise<{ pid: number; stateDir: string }> {
    const stateDir = tempDir(`ns-${host.name}`);
    this.dirs.push(stateDir);
    const config = path.join(stateDir, 'agent.yaml');
    writeFileSync(config, toYaml({ capacity: options.capacity, hostName: host.name, stopTimeoutMs: 20_000, ...options.config }));
    const ready = path.join(stateDir, 'ready.json');
    const args = ['netns', 'exec', host.namespace, process.execPath, agentMain, '--config', config, '--state-dir', stateDir, '--listen', `${host.address}:${options.port ?? 8301}`,
      '--join', options.managerUrl, `--join-token=${options.joinToken}`, '--ca-fingerprint', options.caFingerprint, '--ready-file', ready];
    const env = { ...process.env, DROVER_APPLIANCE_CACHE: defaultApplianceCacheDir(), DROVER_AGENT_LOG_LEVEL: process.env.DROVER_LOG_LEVEL ?? 'warn' };
    const pid = await this.launch(host, args, env, ready);
    return { pid, stateDir };
  }

  private async launch(host: TestHost, args: string[], env: NodeJS.ProcessEnv, ready: string): Promise<number> {
    const child = spawn('ip', args, { stdio: ['ignore', 'inherit', 'inherit'], env });
    this.children.push(child);
    this.launches.set(host.name, { child, args, env, ready });
    for (const deadline = Date.now() + 120_000; !existsSync(ready); ) {
      if (child.exitCode !== null) throw new Error(`agent of ${host.name} exited with ${child.exitCode}`);
      if (Date.now() > deadline) throw new Error(`agent of ${host.name} did not become ready`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return (JSON.parse(readFileSync(ready, 'utf8')) as { pid: number }).pid;
  }

  /** SIGKILLs a host's agent (its QEMUs live on) and starts it again on the same state directory; it reattaches. */
  async restartAgent(host: TestHost): Promise<number> {
    const launch = this.launches.get(host.name);
    if (!launch) throw new Error(`no agent was started for ${host.name}`);
    const { pid } = JSON.parse(readFileSync(launch.ready, 'utf8')) as { pid: number };
    process.kill(pid, 'SIGKILL');
    if (launch.child.exitCode === null) await new Promise((resolve) => launch.child.once('exit', resolve));
    rmSync(launch.ready, { force: true });
    return this.launch(host, launch.args, launch.env, launch.ready);
  }

  /** Kills every QEMU started under this network's state directories, then the agents, then the links. */
  async destroy(): Promise<void> {
    const { readdirSync } = await import('node:fs');
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      try {
        const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        if (this.dirs.some((dir) => cmdline.includes(dir))) process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    for (const child of this.children) {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    for (const host of this.hosts) await ip('netns', 'delete', host.namespace).catch(() => undefined);
    await ip('link', 'delete', this.bridge).catch(() => undefined);
    for (const dir of this.dirs) rmSync(dir, { recursive: true, force: true });
  }
}

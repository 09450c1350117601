import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { tempDir } from '@drover/agent/testing';
import { openSqliteStore } from '@drover/manager';
import { percentile, report } from './stats.js';

/**
 * Many hosts on one manager: N real `drover-agent` processes on loopback, without
 * VMs, joined to one `drover-manager` process (SQLite, heartbeats every second),
 * measured at N = 50 next to the same figures at N = 5 (smoke: 2 next to 5):
 *  - heartbeat load: the manager's CPU (utime + stime from /proc) over a quiet window;
 *  - API latency under that load: GET /api/v1/hosts and GET /api/v1/vms?limit=100, p50 and p99;
 *  - manager memory per joined host (over the warmed-up manager alone) and per VM record
 *    in inventory (2,000 records added, every page listed): the V8 heap in use right
 *    after a full garbage collection (asked for through the manager's inspector, which
 *    the bench opens on loopback), so what is counted is what the manager keeps; and
 *    RSS from /proc, the smallest of eight samples (it moves with the allocator and is
 *    only a rough figure).
 * Figures are reported; the only target is that the per-host heartbeat cost does not
 * grow with N (CPU per host at 50 ≤ 2× the one at 5).
 */
export async function runScaleBench(options: { smoke: boolean }): Promise<boolean> {
  const [small, large] = options.smoke ? [2, 5] : [5, 50];
  const a = await measure(small, options.smoke);
  const b = await measure(large, options.smoke);
  const per = (m: Figures) => m.cpuPercent / m.hosts;
  let ok = true;
  ok = report({ name: `heartbeat CPU per host, ${large} hosts`, figure: per(b), baseline: per(a), baselineName: `${small} hosts`, unit: '% CPU', maxRatio: 2 }) && ok;
  report({ name: `manager CPU, ${large} hosts`, figure: b.cpuPercent, baseline: a.cpuPercent, baselineName: `${small} hosts`, unit: '% CPU' });
  report({ name: `GET /hosts p50, ${large} hosts`, figure: b.hostsP50, baseline: a.hostsP50, baselineName: `${small} hosts`, unit: 'ms' });
  report({ name: `GET /hosts p99, ${large} hosts`, figure: b.hostsP99, baseline: a.hostsP99, baselineName: `${small} hosts`, unit: 'ms' });
  report({ name: `GET /vms p50, ${large} hosts`, figure: b.vmsP50, baseline: a.vmsP50, baselineName: `${small} hosts`, unit: 'ms' });
  report({ name: `GET /vms p99, ${large} hosts`, figure: b.vmsP99, baseline: a.vmsP99, baselineName: `${small} hosts`, unit: 'ms' });
  report({ name: `manager RSS per host, ${large} hosts`, figure: b.rssPerHostKiB, baseline: a.rssPerHostKiB, baselineName: `${small} hosts`, unit: 'KiB' });
  report({ name: `manager heap per host, ${large} hosts`, figure: b.heapPerHostKiB, baseline: a.heapPerHostKiB, baselineName: `${small} hosts`, unit: 'KiB' });
  report({ name: `manager RSS per VM record, ${large} hosts`, figure: b.rssPerVmKiB, baseline: a.rssPerVmKiB, baselineName: `${small} hosts`, unit: 'KiB' });
  report({ name: `manager heap per VM record, ${large} hosts`, figure: b.heapPerVmKiB, baseline: a.heapPerVmKiB, baselineName: `${small} hosts`, unit: 'KiB' });
  process.stdout.write(`scale benchmark targets: ${ok ? 'all met' : 'NOT all met'}\n`);
  return ok;
}

interface Figures {
  hosts: number;
  cpuPercent: number;
  hostsP50: number;
  hostsP99: number;
  vmsP50: number;
  vmsP99: number;
  rssPerHostKiB: number;
  heapPerHostKiB: number;
  rssPerVmKiB: number;
  heapPerVmKiB: number;
}

const here = path.dirname(fileURLToPath(import.meta.url));
const managerMain = path.resolve(here, '..', '..', 'packages', 'manager', 'dist', 'main.js');
const agentMain = path.resolve(here, '..', '..', 'packages', 'agent', 'dist', 'main.js');
const ticksPerSecond = 100;

function procStat(pid: number): { cpuMs: number; rssKiB: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuMs = ((Number(fields[11]) + Number(fields[12])) * 1000) / ticksPerSecond;
  const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { cpuMs, rssKiB: Number(rss?.[1] ?? 0) };
}

async function waitFile(child: ChildProcess, file: string, what: string, timeoutMs = 120_000): Promise<Record<string, unknown>> {
  for (const deadline = Date.now() + timeoutMs; !existsSync(file); ) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited (${child.exitCode ?? child.signalCode})`);
    if (Date.now() > deadline) throw new Error(`${what} was not ready after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

/** A DevTools-protocol session with a process started with `--inspect=127.0.0.1:0`. */
class Inspector {
  private next = 1;
  private readonly waiting = new Map<number, (result: Record<string, unknown>) => void>();
  private constructor(private readonly socket: WebSocket) {
    socket.on('message', (data) => {
      const message = JSON.parse(String(data)) as { id?: number; result?: Record<string, unknown> };
      if (message.id !== undefined) this.waiting.get(message.id)?.(message.result ?? {});
    });
  }
  static async connect(child: ChildProcess): Promise<Inspector> {
    const url = await new Promise<string>((resolve, reject) => {
      let seen = '';
      const timer = setTimeout(() => reject(new Error('the manager did not open its inspector')), 30_000);
      const read = (chunk: Buffer) => {
        seen += chunk.toString();
        const match = /Debugger listening on (ws:\/\/\S+)/.exec(seen);
        if (match) {
          clearTimeout(timer);
          child.stderr!.off('data', read);
          resolve(match[1]!);
        }
      };
      child.stderr!.on('data', read);
    });
    const socket = new WebSocket(url);
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
    return new Inspector(socket);
  }
  call(method: string): Promise<Record<string, unknown>> {
    const id = this.next++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.socket.send(JSON.stringify({ id, method }));
    });
  }
  close(): void {
    this.socket.close();
  }
}

/**
 * The manager's memory: the V8 heap in use after a full collection (twice, so what
 * finalizers freed goes too), and RSS from /proc, the smallest of samples a moment apart.
 */
async function settledMemory(pid: number, inspector: Inspector): Promise<{ rssKiB: number; heapKiB: number }> {
  await inspector.call('HeapProfiler.collectGarbage');
  await inspector.call('HeapProfiler.collectGarbage');
  const usage = await inspector.call('Runtime.getHeapUsage');
  const rss: number[] = [];
  for (let i = 0; i < 8; i++) {
    await new Promise((r) => setTimeout(r, 250));
    rss.push(procStat(pid).rssKiB);
  }
  return { rssKiB: Math.min(...rss), heapKiB: Number(usage.usedSize) / 1024 };
}

async function measure(agents: number, smoke: boolean): Promise<Figures> {
  for (const entry of [managerMain, agentMain]) if (!existsSync(entry)) throw new Error(`${entry} is missing: run "npx tsc -b" first`);
  const root = tempDir(`scale-bench-${agents}`);
  // The agents' QEMU account must pass through to their state directories.
  chmodSync(root, 0o711);
  const children: ChildProcess[] = [];
  try {
    const dataDir = path.join(root, 'manager');
    const config = path.join(root, 'manager.yaml');
    writeFileSync(config, [`listen: 127.0.0.1:0`, `dataDir: ${dataDir}`, 'store: sqlite', 'appliances: false', 'webRoot: none', 'heartbeatMs: 1000', 'logLevel: error'].join('\n'));
    const managerReady = path.join(root, 'manager.ready');
    const manager = spawn(process.execPath, ['--inspect=127.0.0.1:0', managerMain, '--config', config, '--ready-file', managerReady], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(manager);
    const inspector = await Inspector.connect(manager);
    manager.stderr!.on('data', (chunk: Buffer) => {
      const text = chunk.toString().replace(/^(Debugger listening on|Debugger ending on|For help, see|Debugger attached|Waiting for the debugger).*\n/gm, '');
      if (text) process.stderr.write(text);
    });
    const { url, token } = (await waitFile(manager, managerReady, 'drover-manager')) as { url: string; token: string };
    const call = async (method: string, route: string, body?: unknown) => {
      const response = await fetch(`${url}${route}`, { method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}) });
      const text = await response.text();
      if (response.status >= 300) throw new Error(`${method} ${route}: ${response.status} ${text}`);
      return text ? (JSON.parse(text) as Record<string, unknown>) : {};
    };
    // Warm up first (the routes' first calls compile and cache), so the baseline is the manager at rest.
    for (let i = 0; i < 20; i++) {
      await call('GET', '/api/v1/hosts?limit=100');
      await call('GET', '/api/v1/vms?limit=100');
    }
    await new Promise((r) => setTimeout(r, smoke ? 2000 : 5000));
    const alone = await settledMemory(manager.pid!, inspector);

    // N agents join, ten at a time (each proves its key to the CA, then serves mutual TLS).
    for (let start = 0; start < agents; start += 10) {
      await Promise.all(
        Array.from({ length: Math.min(10, agents - start) }, async (_, k) => {
          const i = start + k;
          const joinToken = (await call('POST', '/api/v1/hosts/join-tokens', {})).token as string;
          const ready = path.join(root, `agent-${i}.ready`);
          const agent = spawn(
            process.execPath,
            [agentMain, '--listen', '127.0.0.1:0', '--state-dir', path.join(root, `agent-${i}`), '--host-name', `scale-${i}`, '--join', url, '--join-token', joinToken, '--ready-file', ready],
            { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, DROVER_AGENT_ACCEL: 'tcg', DROVER_AGENT_LOG_LEVEL: 'error' } },
          );
          children.push(agent);
          await waitFile(agent, ready, `drover-agent ${i}`);
        }),
      );
    }
    for (const deadline = Date.now() + 120_000; ; ) {
      const hosts = (await call('GET', '/api/v1/hosts?limit=1000')).items as Array<{ state: string }>;
      if (hosts.filter((h) => h.state === 'online').length === agents) break;
      if (Date.now() > deadline) throw new Error(`only ${hosts.filter((h) => h.state === 'online').length} of ${agents} hosts came online`);
      await new Promise((r) => setTimeout(r, 250));
    }

    // Heartbeat load: the manager's CPU while nothing else happens.
    const windowMs = smoke ? 3000 : 15_000;
    const before = procStat(manager.pid!);
    await new Promise((r) => setTimeout(r, windowMs));
    const after = procStat(manager.pid!);
    const cpuPercent = ((after.cpuMs - before.cpuMs) / windowMs) * 100;
    const withHosts = await settledMemory(manager.pid!, inspector);

    // API latency while the heartbeats go on: sequential requests.
    const rounds = smoke ? 30 : 300;
    const hostTimes: number[] = [];
    const vmTimes: number[] = [];
    for (let i = 0; i < rounds; i++) {
      let t = performance.now();
      await call('GET', '/api/v1/hosts?limit=100');
      hostTimes.push(performance.now() - t);
      t = performance.now();
      await call('GET', '/api/v1/vms?limit=100');
      vmTimes.push(performance.now() - t);
    }

    // Memory per VM record: 2,000 records (unplaced) added beside the manager, then every page read through it.
    const vmCount = smoke ? 200 : 2000;
    const store = await openSqliteStore({ file: path.join(dataDir, 'drover.db') });
    try {
      const imageId = randomUUID();
      await store.transaction(async (tx) => {
        for (let i = 0; i < vmCount; i++) {
          await tx.vms.create({
            name: `vm-${String(i).padStart(5, '0')}`,
            spec: { image: 'counter:1', imageId, cpus: 1, memoryMiB: 128, antiAffinityGroups: [], hostInclude: [], hostExclude: [], forwards: [], cmdline: '' },
            state: 'stopped',
            owner: 'admin',
            labels: { bench: 'scale' },
          });
        }
      });
    } finally {
      await store.close();
    }
    let cursor: string | undefined;
    do {
      const page = await call('GET', `/api/v1/vms?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      cursor = page.next as string | undefined;
    } while (cursor);
    const withVms = await settledMemory(manager.pid!, inspector);
    inspector.close();

    const figures: Figures = {
      hosts: agents,
      cpuPercent,
      hostsP50: percentile(hostTimes, 50),
      hostsP99: percentile(hostTimes, 99),
      vmsP50: percentile(vmTimes, 50),
      vmsP99: percentile(vmTimes, 99),
      rssPerHostKiB: (withHosts.rssKiB - alone.rssKiB) / agents,
      heapPerHostKiB: (withHosts.heapKiB - alone.heapKiB) / agents,
      rssPerVmKiB: (withVms.rssKiB - withHosts.rssKiB) / vmCount,
      heapPerVmKiB: (withVms.heapKiB - withHosts.heapKiB) / vmCount,
    };
    process.stdout.write(
      `scale: ${agents} agents: manager ${cpuPercent.toFixed(1)} % CPU; RSS ${alone.rssKiB} → ${withHosts.rssKiB} KiB with the hosts → ${withVms.rssKiB} KiB with ${vmCount} VM records; ` +
        `heap in use ${alone.heapKiB.toFixed(0)} → ${withHosts.heapKiB.toFixed(0)} → ${withVms.heapKiB.toFixed(0)} KiB\n`,
    );
    return figures;
  } finally {
    await Promise.all(children.slice(1).map(stopChild));
    if (children[0]) await stopChild(children[0]);
    rmSync(root, { recursive: true, force: true });
  }
}

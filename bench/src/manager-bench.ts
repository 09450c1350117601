import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startAgent, type RunningAgent } from '@drover/agent';
import { freePort, tempDir, testAgentConfig } from '@drover/agent/testing';
import { buildAppliance, defaultApplianceCacheDir } from '@drover/appliances';
import { defaultManagerConfig, startManager, type RunningManager } from '@drover/manager';
import { killProcess, QemuImg, readProcessInfo, waitForExit, type QemuLaunchConfig } from '@drover/qemu';
import type { LoadConfig, LoadResult } from './manager-load.js';
import { qemuShapeOf, rawCounterConfig, rawQemuKill, rawQemuStart } from './raw-qemu.js';
import { journalPhases, median, medianPhases, now, report, timed } from './stats.js';

/**
 * The manager's benchmark, each figure next to a baseline measured in the same run:
 *  1. GET /api/v1/vms?limit=100 over a store of 10,000 VMs, closed loop on
 *     keep-alive connections, the manager alone on one core (taskset): req/s,
 *     p50 and p99, vs a bare Fastify answering a static page of the same 100
 *     VMs in the same kind of pinned process (the framework's ceiling).
 *     Targets: ≥ 2,000 req/s and p99 ≤ 20 ms.
 *  2. create + start through the API (POST /vms, POST /vms/NAME/start?wait=true,
 *     which ends when the agent says QMP reports running) of the counter
 *     appliance on a joined in-process agent, vs raw QEMU spawn → QMP running
 *     of the same guest (target ≤ 1.5×), and `virsh create` when libvirt is there.
 */
export async function runManagerBench(options: { smoke: boolean }): Promise<boolean> {
  const listOk = await listBench(options.smoke);
  const startOk = await startBench(options.smoke);
  const all = listOk && startOk;
  process.stdout.write(`manager benchmark targets: ${all ? 'all met' : 'NOT all met'}\n`);
  return all;
}

const here = path.dirname(fileURLToPath(import.meta.url));
const processEntry = path.join(here, 'manager-process.js');
const loadEntry = path.join(here, 'manager-load.js');

/** Concurrent keep-alive connections of the closed-loop load. */
const connections = 16;

// ------------------------------------------------------------------ processes

/** Spawns `node script args`, under `taskset -c core` when a core is given. */
function spawnNode(core: number | undefined, script: string, args: string[], stdout: 'inherit' | 'pipe'): ChildProcess {
  const command = [process.execPath, script, ...args];
  const [file, ...argv] = core === undefined ? command : ['taskset', '-c', String(core), ...command];
  return spawn(file!, argv, { stdio: ['ignore', stdout, 'inherit'] });
}

/** Waits for the ready file of a manager-process.js child. */
async function waitReady(child: ChildProcess, file: string, timeoutMs: number): Promise<{ url: string; token: string; pid: number }> {
  const deadline = now() + timeoutMs;
  while (!existsSync(file)) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${path.basename(processEntry)} exited (${child.exitCode ?? child.signalCode}) before it was ready`);
    if (now() > deadline) throw new Error(`${path.basename(processEntry)} was not ready after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return JSON.parse(readFileSync(file, 'utf8')) as { url: string; token: string; pid: number };
}

/** SIGTERM by PID, SIGKILL after 5 s; harmless when it has gone already. */
async function stopChild(child: ChildProcess): Promise<void> {
  const pid = child.pid;
  if (pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  await killProcess(pid, 'SIGTERM').catch(() => false);
  if (!(await waitForExit(pid, 5_000).catch(() => false))) await killProcess(pid, 'SIGKILL').catch(() => false);
}

/** Runs manager-load.js (pinned when a core is given) and returns what it measured. */
async function runLoad(core: number | undefined, work: string, config: LoadConfig, children: ChildProcess[]): Promise<LoadResult> {
  const file = path.join(work, `load-${children.length}.json`);
  await writeFile(file, JSON.stringify(config));
  const child = spawnNode(core, loadEntry, [file], 'pipe');
  children.push(child);
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  if (code !== 0) throw new Error(`the load generator exited with ${code}`);
  const result = JSON.parse(out) as LoadResult;
  if (result.errors > 0) throw new Error(`${result.errors} of ${result.requests} requests to ${config.url} failed, first: ${result.firstError}`);
  if (result.requests === 0) throw new Error(`no request to ${config.url} completed`);
  return result;
}

// ------------------------------------------------------------------ 1. list throughput

async function listBench(smoke: boolean): Promise<boolean> {
  const vmCount = smoke ? 500 : 10_000;
  const warmupMs = smoke ? 200 : 1_000;
  const durationMs = smoke ? 1_000 : 10_000;
  // Server on core 0, load on core 1; on a single core only the server is pinned.
  const serverCore = 0;
  const loadCore = os.availableParallelism() >= 2 ? 1 : undefined;
  const work = tempDir('bench-manager-list');
  const children: ChildProcess[] = [];
  try {
    // ---- the manager, pinned, with its VMs
    const managerReadyFile = path.join(work, 'manager.ready');
    const managerChild = spawnNode(serverCore, processEntry, ['--mode', 'manager', '--data-dir', path.join(work, 'manager'), '--vms', String(vmCount), '--ready-file', managerReadyFile], 'inherit');
    children.push(managerChild);
    const manager = await waitReady(managerChild, managerReadyFile, 300_000);

    // Every page's path, found by following the cursors once (and checking the pages hold every VM once).
    // This walk is also each page's first read, before the manager has made and kept its JSON: timed apart.
    const paths: string[] = [];
    const names = new Set<string>();
    const firstReads: number[] = [];
    let firstPage: unknown;
    let cursor: string | undefined;
    do {
      const route = `/api/v1/vms?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
      const t0 = now();
      const response = await fetch(`${manager.url}${route}`, { headers: { authorization: `Bearer ${manager.token}` } });
      if (response.status !== 200) throw new Error(`GET ${route} answered ${response.status}: ${await response.text()}`);
      const page = (await response.json()) as { items: Array<{ name: string }>; next?: string };
      firstReads.push(now() - t0);
      for (const vm of page.items) names.add(vm.name);
      firstPage ??= page;
      paths.push(route);
      cursor = page.next;
    } while (cursor);
    if (names.size !== vmCount) throw new Error(`the pages listed ${names.size} distinct VMs, ${vmCount} expected`);

    const load = (url: string, token: string): LoadConfig => ({ url, token, paths, connections, warmupMs, durationMs });
    const viaManager = await runLoad(loadCore, work, load(manager.url, manager.token), children);
    await stopChild(managerChild);

    // ---- the framework's ceiling: the same first page, static, from a bare Fastify on the same core
    const bodyFile = path.join(work, 'page.json');
    await writeFile(bodyFile, JSON.stringify(firstPage));
    const fastifyReadyFile = path.join(work, 'fastify.ready');
    const fastifyChild = spawnNode(serverCore, processEntry, ['--mode', 'fastify', '--body-file', bodyFile, '--ready-file', fastifyReadyFile], 'inherit');
    children.push(fastifyChild);
    const fastify = await waitReady(fastifyChild, fastifyReadyFile, 60_000);
    const viaFastify = await runLoad(loadCore, work, load(fastify.url, fastify.token), children);
    await stopChild(fastifyChild);

    const pinning = `server pinned to core ${serverCore}${loadCore === undefined ? ', load unpinned (one core)' : `, load to core ${loadCore}`}`;
    process.stdout.write(
      `\nmanager benchmark: list (${vmCount} VMs, GET /api/v1/vms?limit=100 at random over ${paths.length} pages, ` +
        `${connections} keep-alive connections, ${durationMs / 1000} s after ${warmupMs / 1000} s warm-up; ${pinning})\n`,
    );
    const baselineName = 'bare Fastify static page';
    const rpsOk = report({ name: 'list throughput', figure: viaManager.requestsPerSecond, baseline: viaFastify.requestsPerSecond, baselineName, unit: 'req/s', atLeast: 2_000 });
    report({ name: 'list latency p50', figure: viaManager.p50Ms, baseline: viaFastify.p50Ms, baselineName, unit: 'ms' });
    const p99Ok = report({ name: 'list latency p99', figure: viaManager.p99Ms, baseline: viaFastify.p99Ms, baselineName, unit: 'ms', atMost: 20 });
    process.stdout.write(
      `  manager: ${viaManager.requests} requests, max ${viaManager.maxMs.toFixed(1)} ms, ${(viaManager.meanBytes / 1024).toFixed(1)} KiB a page, ${viaManager.socketsOpened} connections opened; ` +
        `Fastify: ${viaFastify.requests} requests, max ${viaFastify.maxMs.toFixed(1)} ms, ${viaFastify.socketsOpened} connections opened\n`,
    );
    process.stdout.write(
      `  first read of each page (one at a time, nothing kept yet): median ${median(firstReads).toFixed(1)} ms, max ${Math.max(...firstReads).toFixed(1)} ms over ${firstReads.length} pages\n`,
    );
    return rpsOk && p99Ok;
  } finally {
    for (const child of children) await stopChild(child);
    rmSync(work, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------ 2. create + start

interface OperationBody {
  id: string;
  state: string;
  error: { message: string } | null;
  result: { state?: string; pid?: number } | null;
}

function hasVirsh(): boolean {
  return spawnSync('sh', ['-c', 'command -v virsh'], { stdio: 'ignore' }).status === 0;
}

function run(file: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => execFile(file, args, (error, stdout, stderr) => (error ? reject(new Error(`${file} ${args.join(' ')}: ${stderr || error.message}`)) : resolve(stdout))));
}

async function startBench(smoke: boolean): Promise<boolean> {
  const rounds = smoke ? 1 : 10;
  const dataDir = tempDir('bench-manager');
  const agentDir = tempDir('bench-manager-agent');
  const work = tempDir('bench-manager-raw');
  let manager: RunningManager | undefined;
  let agent: RunningAgent | undefined;
  const managedPids = new Set<number>();
  const rawPids: number[] = [];
  const names: string[] = [];
  const api = async <T>(method: string, route: string, body?: unknown): Promise<{ status: number; body: T }> => {
    const response = await fetch(`${manager!.url}${route}`, {
      method,
      headers: { authorization: `Bearer ${manager!.adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    return { status: response.status, body: (text ? JSON.parse(text) : undefined) as T };
  };
  /** An operation answered with ?wait=true, which must have ended done. */
  const done = async (method: string, route: string, body?: unknown): Promise<OperationBody> => {
    const answer = await api<OperationBody>(method, route, body);
    if (answer.status !== 200 || answer.body.state !== 'done') throw new Error(`${method} ${route} answered ${answer.status}: ${JSON.stringify(answer.body)}`);
    return answer.body;
  };
  try {
    // The default heartbeat (5 s), as a manager runs: the agent shares this process, and each
    // heartbeat's commit (an fsync, run synchronously by better-sqlite3) stalls the agent's event loop too.
    manager = await startManager({ ...defaultManagerConfig(dataDir), listen: '127.0.0.1:0', applianceCacheDir: defaultApplianceCacheDir() });
    const join = await api<{ token: string }>('POST', '/api/v1/hosts/join-tokens', {});
    if (join.status !== 201) throw new Error(`join token: ${join.status}`);
    agent = await startAgent(testAgentConfig(agentDir, { listen: `127.0.0.1:${await freePort()}`, hostName: 'bench-h1' }), { join: { managerUrl: manager.url, token: join.body.token } });
    for (const deadline = now() + 60_000; ; ) {
      const hosts = await api<{ items: Array<{ state: string }> }>('GET', '/api/v1/hosts');
      if (hosts.body.items[0]?.state === 'online') break;
      if (now() > deadline) throw new Error('the agent did not come online');
      await new Promise((r) => setTimeout(r, 50));
    }

    // The raw guest: the counter appliance on its own thin clones, 128 MiB, the
    // accelerator and CPU model the agent gave its QEMU (read at the first round).
    const artifacts = await buildAppliance('counter', { cacheDir: defaultApplianceCacheDir() });
    const rawDisks: QemuLaunchConfig['disks'] = [{ nodeName: 'disk0', path: path.join(work, 'raw.root.qcow2'), format: 'qcow2' }];
    await QemuImg.createThinClone(artifacts.rootDisk, 'qcow2', rawDisks[0]!.path);
    if (artifacts.dataDisk) {
      rawDisks.push({ nodeName: 'disk1', path: path.join(work, 'raw.data.qcow2'), format: 'qcow2' });
      await QemuImg.createThinClone(artifacts.dataDisk, 'qcow2', rawDisks[1]!.path);
    }
    let shape: ReturnType<typeof qemuShapeOf>;
    // With the agent's device layout (its PCIe root ports: the same guest), or without it (`plain`).
    const rawConfig = (plain = false): QemuLaunchConfig =>
      rawCounterConfig({
        work,
        kernel: artifacts.kernel,
        initrd: artifacts.initrd,
        cmdline: artifacts.cmdline,
        disks: rawDisks,
        accel: shape!.accel,
        cpuModel: shape!.cpuModel,
        ...(plain ? {} : { layout: shape!.layout }),
        uuid: '00000000-0000-4000-8000-000000000002',
        mac: '52:54:00:aa:bb:02',
      });
    const virsh = hasVirsh();

    const apiRuns: number[] = [];
    const creates: number[] = [];
    const starts: number[] = [];
    const rawRuns: number[] = [];
    const plainRuns: number[] = [];
    const virshRuns: number[] = [];
    const startPhases: Array<Record<string, number>> = [];
    let virshError: string | undefined;
    for (let i = 0; i < rounds; i++) {
      // ---- through the API; the VM is deleted before the raw round
      const name = `bench-start-${i}`;
      names.push(name);
      let created = 0;
      let startSent = 0;
      const viaApi = await timed(async () => {
        const t0 = now();
        const answer = await api<{ state: string }>('POST', '/api/v1/vms', { name, image: 'counter', memoryMiB: 128 });
        if (answer.status !== 201) throw new Error(`POST /api/v1/vms answered ${answer.status}: ${JSON.stringify(answer.body)}`);
        created = now() - t0;
        startSent = Date.now();
        return done('POST', `/api/v1/vms/${name}/start?wait=true`, {});
      });
      startPhases.push(journalPhases(await manager.store.operations.get(viaApi.value.id), startSent, Date.now()));
      const result = viaApi.value.result;
      if (result?.state !== 'running' || result.pid === undefined) throw new Error(`start of ${name} ended with ${JSON.stringify(result)}`);
      managedPids.add(result.pid);
      shape ??= qemuShapeOf(result.pid);
      if (!shape) throw new Error(`cannot read the accelerator and CPU model of QEMU ${result.pid}`);
      apiRuns.push(viaApi.ms);
      creates.push(created);
      starts.push(viaApi.ms - created);
      await done('POST', `/api/v1/vms/${name}/force-off?wait=true`, {});
      await done('DELETE', `/api/v1/vms/${name}?wait=true`);
      names.pop();

      // ---- raw QEMU
      const raw = await timed(() => rawQemuStart(rawConfig(), rawPids));
      rawRuns.push(raw.ms);
      await rawQemuKill(raw.value.pid, raw.value.qmp);
      // ---- raw QEMU without the agent's root ports, when it has some: what they cost, shown apart
      if (shape!.layout.rootPorts.length > 0) {
        const plain = await timed(() => rawQemuStart(rawConfig(true), rawPids));
        plainRuns.push(plain.ms);
        await rawQemuKill(plain.value.pid, plain.value.qmp);
      }

      // ---- libvirt, when installed
      if (virsh && virshError === undefined) {
        try {
          const bases = [artifacts.rootDisk, ...(artifacts.dataDisk ? [artifacts.dataDisk] : [])];
          virshRuns.push(await virshStart(work, rawConfig(), bases, `${artifacts.cmdline} drover.name=virsh drover.net=user`, i));
        } catch (error) {
          virshError = (error as Error).message;
        }
      }
    }

    const ports = shape!.layout.rootPorts.length;
    process.stdout.write(
      `\nmanager benchmark: create + start → QMP running (${shape!.accel}, counter appliance, 128 MiB, ${ports} PCIe root ports as the agent gives its VMs, heartbeat every ${defaultManagerConfig(dataDir).heartbeatMs / 1000} s, ${rounds} rounds, median)\n`,
    );
    const startOk = report({ name: 'API create + start?wait=true', figure: median(apiRuns), baseline: median(rawRuns), baselineName: 'raw spawn', unit: 'ms', maxRatio: 1.5 });
    if (plainRuns.length > 0) {
      report({ name: 'API create + start vs plain raw', figure: median(apiRuns), baseline: median(plainRuns), baselineName: `raw spawn without the ${ports} root ports`, unit: 'ms' });
    }
    process.stdout.write(`  of which POST /vms ${median(creates).toFixed(1)} ms, POST start?wait=true ${median(starts).toFixed(1)} ms (medians)\n`);
    process.stdout.write(`  where the start's time goes (its journal, median ms): ${medianPhases(startPhases)}\n`);
    if (!virsh) process.stdout.write(`${'virsh create'.padEnd(34)} libvirt not installed: skipped\n`);
    else if (virshError !== undefined) process.stdout.write(`${'virsh create'.padEnd(34)} failed, skipped: ${virshError}\n`);
    else report({ name: 'API create + start vs virsh', figure: median(apiRuns), baseline: median(virshRuns), baselineName: 'virsh create', unit: 'ms' });
    return startOk;
  } finally {
    // VMs left by a failed round: off and deleted through the API, then any QEMU still there killed.
    for (const name of names) {
      await api('POST', `/api/v1/vms/${name}/force-off?wait=true`, {}).catch(() => undefined);
      await api('DELETE', `/api/v1/vms/${name}?wait=true`).catch(() => undefined);
    }
    await agent?.close().catch(() => undefined);
    await manager?.close().catch(() => undefined);
    for (const pid of [...managedPids, ...rawPids]) {
      if ((await readProcessInfo(pid).catch(() => undefined))?.alive) await killProcess(pid, 'SIGKILL').catch(() => undefined);
    }
    for (const dir of [dataDir, agentDir, work]) rmSync(dir, { recursive: true, force: true });
  }
}

/** `virsh create` of the raw guest (on its own thin clones of `bases`), until its QMP query-status says running; then destroyed. */
async function virshStart(work: string, config: QemuLaunchConfig, bases: string[], cmdline: string, round: number): Promise<number> {
  const name = `drover-bench-${process.pid}-${round}`;
  const disks: string[] = [];
  for (const [index, base] of bases.entries()) {
    const file = path.join(work, `virsh-${round}-${index}.qcow2`);
    await QemuImg.createThinClone(base, 'qcow2', file);
    disks.push(`<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${file}'/><target dev='vd${String.fromCharCode(97 + index)}' bus='virtio'/></disk>`);
  }
  if (config.boot.kind !== 'kernel') throw new Error('the raw guest boots a kernel');
  const xml = `<domain type='${config.accel === 'kvm' ? 'kvm' : 'qemu'}'>
  <name>${name}</name>
  <memory unit='MiB'>${config.memoryMiB}</memory>
  <vcpu>${config.cpus}</vcpu>
  <cpu mode='custom'><model fallback='allow'>${config.cpuModel}</model></cpu>
  <os><type arch='x86_64'>hvm</type><kernel>${config.boot.kernel}</kernel><initrd>${config.boot.initrd ?? ''}</initrd><cmdline>${cmdline}</cmdline></os>
  <devices>${disks.join('')}<interface type='user'><model type='virtio'/></interface><serial type='file'><source path='${path.join(work, `virsh-${round}.log`)}'/></serial></devices>
</domain>`;
  const xmlFile = path.join(work, `virsh-${round}.xml`);
  await writeFile(xmlFile, xml);
  const t0 = now();
  await run('virsh', ['create', xmlFile]);
  try {
    for (;;) {
      const status = JSON.parse(await run('virsh', ['qemu-monitor-command', name, '{"execute":"query-status"}'])) as { return?: { running?: boolean } };
      if (status.return?.running) return now() - t0;
      await new Promise((r) => setTimeout(r, 1));
    }
  } finally {
    await run('virsh', ['destroy', name]).catch(() => undefined);
  }
}

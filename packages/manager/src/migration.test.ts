/* eslint-disable @typescript-eslint/no-explicit-any -- loosely typed JSON answers of the API and agents, read field by field */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { promisify } from 'node:util';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify as toYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { downtimeLimitForPass, downtimeStartMs, type VmInfo } from '@drover/api';
import { counterLines, tempDir, TestNetwork, type TestHost } from '@drover/agent/testing';
import { buildAppliance, defaultApplianceCacheDir } from '@drover/appliances';
import { AgentLink } from './hosts/agent-link.js';
import { managerClientCredentials } from './testing/multihost.js';
import type { HostRecord } from './store/types.js';

/**
 * Live migration on real parts: three hosts, each an agent in its own network
 * namespace (veth to a bridge), joined over TLS to a manager that runs as a
 * real process (so it can be SIGKILLed). h1 and h2 share their `default` pool
 * (one directory, marked shared); h3 has a local one. The migration streams
 * and NBD mirrors cross the veth links, TLS with the cluster certificates.
 *
 * Every test samples both agents every 100 ms: never more than one QEMU of the
 * VM runs its guest. The counter appliance's serial lines (read from both
 * hosts' logs, kept open so a deleted log still reads) must continue with no
 * gap and no repeat.
 */
const managerMain = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'main.js');
const resultsFile = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test-results', 'migration.json');
const dataDir = tempDir('migration');
const sharedDir = tempDir('migration-shared');
let network: TestNetwork;
let manager: { child: ChildProcess; url: string; token: string } | undefined;
const stateDirs = new Map<string, string>();
let link: AgentLink;
const figures: Record<string, unknown> = {};

async function spawnManager(extraEnv: NodeJS.ProcessEnv = {}): Promise<{ child: ChildProcess; url: string; token: string }> {
  const ready = path.join(dataDir, `ready-${Date.now()}.json`);
  const config = path.join(dataDir, 'manager.yaml');
  writeFileSync(config, toYaml({ heartbeatMs: 500, tlsListen: `${network.gateway}:0` }));
  const child = spawn(process.execPath, [managerMain, '--config', config, '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--ready-file', ready], {
    env: { ...process.env, DROVER_APPLIANCE_CACHE: defaultApplianceCacheDir(), DROVER_MANAGER_LOG_LEVEL: process.env.DROVER_LOG_LEVEL ?? 'warn', ...extraEnv },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  for (const deadline = Date.now() + 120_000; !existsSync(ready); ) {
    if (child.exitCode !== null) throw new Error(`drover-manager exited with ${child.exitCode}`);
    if (Date.now() > deadline) throw new Error('drover-manager did not become ready');
    await new Promise((r) => setTimeout(r, 50));
  }
  const info = JSON.parse(readFileSync(ready, 'utf8')) as { url: string; tlsUrl: string; token: string };
  rmSync(ready);
  managerTls = info.tlsUrl;
  return { child, url: info.url, token: info.token };
}
let managerTls = '';
const run = promisify(execFile);

/**
 * A Debian `tgt` iSCSI target (tgtd) in the root namespace, listening on the
 * test bridge's address, which every host namespace reaches. One target with
 * LUN 1 backed by `backing`. tgtd ignores SIGTERM: `stop` deletes the target
 * with --force, shuts the daemon down, and SIGKILLs it by PID.
 */
class TgtTarget {
  private constructor(readonly child: ChildProcess, readonly control: number, readonly portal: string, readonly iqn: string) {}

  static async start(address: string, backing: string): Promise<TgtTarget> {
    const control = randomInt(1000, 30000);
    const portal = `${address}:${randomInt(20000, 30000)}`;
    const iqn = `iqn.2026-11.test.drover:mig${control}`;
    const child = spawn('tgtd', ['-f', '-C', String(control), '--iscsi', `portal=${portal}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const target = new TgtTarget(child, control, portal, iqn);
    try {
      await until('tgtd to take commands', async () => {
        if (child.exitCode !== null) throw new Error(`tgtd exited: ${stderr}`);
        return run('tgtadm', ['-C', String(control), '--lld', 'iscsi', '--mode', 'target', '--op', 'new', '--tid', '1', '--targetname', iqn]).then(() => true, () => false);
      }, 20_000, 100);
      await target.adm('--lld', 'iscsi', '--mode', 'logicalunit', '--op', 'new', '--tid', '1', '--lun', '1', '--backing-store', backing);
      await target.adm('--lld', 'iscsi', '--mode', 'target', '--op', 'bind', '--tid', '1', '--initiator-address', 'ALL');
    } catch (error) {
      await target.stop();
      throw error;
    }
    return target;
  }

  private async adm(...args: string[]): Promise<void> {
    await run('tgtadm', ['-C', String(this.control), ...args], { timeout: 10_000 });
  }

  async stop(): Promise<void> {
    await this.adm('--lld', 'iscsi', '--mode', 'target', '--op', 'delete', '--force', '--tid', '1').catch(() => undefined);
    await this.adm('--mode', 'system', '--op', 'delete').catch(() => undefined);
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((resolve) => this.child.once('exit', resolve));
      this.child.kill('SIGKILL');
      await exited;
    }
  }
}
let tgt: TgtTarget | undefined;

async function killManager(): Promise<void> {
  const child = manager!.child;
  child.kill('SIGKILL');
  await new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(undefined) : child.once('exit', resolve)));
}

async function api<T = any>(method: string, route: string, body?: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(`${manager!.url}${route}`, {
    method,
    headers: { authorization: `Bearer ${manager!.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, body: (await response.json().catch(() => ({}))) as T };
}

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 120_000, everyMs = 100): Promise<T> {
  for (const deadline = Date.now() + timeoutMs; ; ) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

async function waitOp(id: string, timeoutMs = 300_000): Promise<any> {
  return until(`operation ${id}`, async () => {
    const op = await api('GET', `/api/v1/operations/${id}`);
    return ['pending', 'running'].includes(op.body.state) ? undefined : op.body;
  }, timeoutMs, 200);
}

async function hostRecords(): Promise<Map<string, HostRecord>> {
  const hosts = await api<{ items: HostRecord[] }>('GET', '/api/v1/hosts');
  return new Map(hosts.body.items.map((h) => [h.name, h]));
}

async function allOnline(): Promise<void> {
  await until('every host online', async () => {
    const hosts = await hostRecords();
    return hosts.size === 3 && [...hosts.values()].every((h) => h.state === 'online');
  }, 120_000, 200);
}

/** The serial log of a VM on a host, read through a descriptor kept open (the log goes with the VM's directory). */
class SerialTail {
  private fd: number | undefined;
  private offset = 0;
  text = '';
  constructor(private readonly file: string) {}
  poll(): void {
    if (this.fd === undefined) {
      if (!existsSync(this.file)) return;
      this.fd = openSync(this.file, 'r');
    }
    const buffer = Buffer.alloc(1 << 16);
    for (;;) {
      const n = readSync(this.fd, buffer, 0, buffer.length, this.offset);
      if (n <= 0) break;
      this.offset += n;
      this.text += buffer.subarray(0, n).toString('latin1');
    }
  }
  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

function serialLog(host: string, vmId: string): string {
  return path.join(stateDirs.get(host)!, 'vms', vmId, 'run', 'serial.log');
}

/** Every 100 ms: which hosts run the VM's guest (QEMU status `running`, asked of the agents), and who owns it in the store. */
class Sampler {
  samples: Array<{ at: number; running: string[]; owner: string | null }> = [];
  private stopped = false;
  private done: Promise<void>;
  constructor(private readonly vmId: string, private readonly hosts: Map<string, HostRecord>, private readonly tails: SerialTail[]) {
    this.done = this.loop();
  }
  private async loop(): Promise<void> {
    while (!this.stopped) {
      const started = Date.now();
      const running: string[] = [];
      await Promise.all(
        [...this.hosts.values()].map(async (host) => {
          const info = await link.call<VmInfo>(host, 'GET', `/v1/vms/${this.vmId}`, undefined, 5_000).catch(() => undefined);
          if (info?.qemuStatus === 'running') running.push(host.name);
        }),
      );
      const vm = await api('GET', `/api/v1/vms/${this.vmId}`).catch(() => undefined);
      this.samples.push({ at: started, running, owner: vm?.body?.hostName ?? null });
      for (const tail of this.tails) tail.poll();
      await new Promise((r) => setTimeout(r, Math.max(0, 100 - (Date.now() - started))));
    }
  }
  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
  }
  maxRunning(): number {
    return Math.max(...this.samples.map((s) => s.running.length));
  }
}

/** QEMU processes of a VM under a host's state directory. */
function qemusOf(host: string, vmId: string): number[] {
  const dir = stateDirs.get(host)!;
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
        const cmdline = readFileSync(`/proc/${p}/cmdline`, 'utf8');
        return !/\) Z /.test(stat) && cmdline.startsWith('qemu-system') && cmdline.includes(path.join(dir, 'vms', vmId));
      } catch {
        return false;
      }
    })
    .map(Number);
}

function poolFiles(host: string, vmId: string): string[] {
  const dir = host === 'h3' ? path.join(stateDirs.get('h3')!, 'pools', 'default') : sharedDir;
  return readdirSync(dir).filter((f) => f.startsWith(vmId));
}

async function createRunning(name: string, host: string): Promise<{ id: string }> {
  const created = await api('POST', '/api/v1/vms', { name, image: 'counter', memoryMiB: 128, hostInclude: [host] });
  expect(created.status).toBe(201);
  const start = await api('POST', `/api/v1/vms/${created.body.id}/start?wait=true`, {});
  expect(start.body.state, JSON.stringify(start.body)).toBe('done');
  const tail = new SerialTail(serialLog(host, created.body.id));
  await until(`counter lines of ${name}`, async () => {
    tail.poll();
    return counterLines(tail.text).length >= 3;
  }, 180_000, 200);
  tail.close();
  return { id: created.body.id };
}

/**
 * The counter's lines. QEMU's 16550 sometimes sends a byte twice when the guest
 * bursts after a stall (seen: `DROVERR-COUNTER`, `COUNTER  gen=`, `tt=`), so a
 * repeated non-digit is collapsed, and a generation that is one repeated digit
 * away from the expected one is read as the expected one (`repaired` counts
 * them). A real skip or repeat of a generation is never repaired.
 */
function counterGens(text: string): Array<{ gen: number; t: number; repaired?: boolean }> {
  const out: Array<{ gen: number; t: number; repaired?: boolean }> = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/([^0-9])\1+/g, '$1');
    const m = /DROVER-COUNTER gen=(\d+) t=(\d+(?:\.\d+)?)?/.exec(line);
    if (!m) continue;
    let gen = Number(m[1]);
    const expected = out.length > 0 ? out.at(-1)!.gen + 1 : undefined;
    let repaired = false;
    if (expected !== undefined && gen !== expected) {
      const digits = m[1]!;
      for (let i = 0; i + 1 < digits.length; i++) {
        if (digits[i] === digits[i + 1] && Number(digits.slice(0, i) + digits.slice(i + 1)) === expected) {
          gen = expected;
          repaired = true;
          break;
        }
      }
    }
    out.push({ gen, t: Number(m[2] ?? NaN), ...(repaired ? { repaired } : {}) });
  }
  return out;
}

/** The counter continued across hosts: consecutive generations, none twice. */
function checkCounter(text: string) {
  const lines = counterGens(text);
  expect(lines.length).toBeGreaterThan(5);
  for (let i = 1; i < lines.length; i++) {
    if (lines[i]!.gen !== lines[i - 1]!.gen + 1) {
      const at = text.indexOf(`DROVER-COUNTER gen=${lines[i - 1]!.gen} `);
      throw new Error(`counter went from ${lines[i - 1]!.gen} to ${lines[i]!.gen}: ${JSON.stringify(text.slice(Math.max(0, at - 200), at + 400))}`);
    }
  }
  let gapMs = 0;
  for (let i = 1; i < lines.length; i++) {
    const dt = lines[i]!.t - lines[i - 1]!.t;
    // A timestamp garbled on the console (see counterGens) gives no gap.
    if (Number.isFinite(dt) && dt >= 0 && dt < 600 && !lines[i]!.repaired && !lines[i - 1]!.repaired) gapMs = Math.max(gapMs, Math.round(dt * 1000));
  }
  return { lines: lines.length, gapMs, from: lines[0]!.gen, to: lines.at(-1)!.gen, repairedLines: lines.filter((l) => l.repaired).length, garbledBytes: (text.match(/DROVER-COUNTER/g) ?? []).length !== lines.length };
}

beforeAll(async () => {
  if (!existsSync(managerMain)) throw new Error(`${managerMain} is missing: run "npx tsc -b" first`);
  network = await TestNetwork.create(3);
  manager = await spawnManager();
  for (const host of network.hosts) {
    const join = await api<{ token: string; caFingerprint: string }>('POST', '/api/v1/hosts/join-tokens', {});
    const pools = host.name === 'h3' ? undefined : [{ name: 'default', path: sharedDir, shared: true }];
    const { stateDir } = await network.startAgent(host, {
      managerUrl: managerTls,
      joinToken: join.body.token,
      caFingerprint: join.body.caFingerprint,
      capacity: { cpus: 2, memoryMiB: 1024 },
      ...(pools ? { config: { pools } } : {}),
    });
    stateDirs.set(host.name, stateDir);
  }
  await allOnline();
  const credentials = managerClientCredentials(dataDir);
  link = new AgentLink(() => credentials, () => false, 10_000);
}, 300_000);

afterAll(async () => {
  try {
    mkdirSync(path.dirname(resultsFile), { recursive: true });
    writeFileSync(resultsFile, JSON.stringify(figures, null, 2));
    if (manager && manager.child.exitCode === null) await killManager();
    link?.close();
  } finally {
    await tgt?.stop().catch(() => undefined);
    await network?.destroy();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(sharedDir, { recursive: true, force: true });
  }
}, 120_000);

describe('live migration between hosts in network namespaces', () => {
  let vmA: { id: string };

  it('moves a running counter on a shared pool (memory only): no gap, no repeat, one running instance at every sample', async () => {
    vmA = await createRunning('mig-a', 'h1');
    const hosts = await hostRecords();
    const source = new SerialTail(serialLog('h1', vmA.id));
    const dest = new SerialTail(serialLog('h2', vmA.id));
    const sampler = new Sampler(vmA.id, hosts, [source, dest]);
    const answer = await api('POST', `/api/v1/vms/${vmA.id}/migrate?wait=true`, { to: 'h2' });
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    expect(answer.body.state, JSON.stringify(answer.body)).toBe('done');
    await new Promise((r) => setTimeout(r, 2000));
    await sampler.stop();
    source.poll();
    dest.poll();
    // Read again: the guest-measured gap joins the result once the destination's first tick is there (within ~1 s).
    const op = (await api('GET', `/api/v1/operations/${answer.body.id}`)).body;
    expect(op.result).toMatchObject({ from: 'h1', to: 'h2', storage: false });
    expect(typeof op.result.qemuDowntimeMs).toBe('number');
    // RAM pages went over the multifd connections (zero pages and device state over the main one).
    expect(op.result.multifdBytes, JSON.stringify(op.result)).toBeGreaterThan(0);
    expect(op.result.multifdBytes).toBeLessThan(op.result.transferredBytes);
    // The downtime steps: QEMU's limit started at 30 ms and was at most the one for the pass pre-copy converged in
    // (30 ms for a guest that converges at once), not the 300 ms allowed.
    expect(op.result.passes, JSON.stringify(op.result)).toBeGreaterThanOrEqual(2);
    expect(op.result.downtimeLimitMs).toBeGreaterThanOrEqual(downtimeStartMs);
    expect(op.result.downtimeLimitMs).toBeLessThanOrEqual(downtimeLimitForPass(300, op.result.passes));
    expect(op.result.downtimeLimitMs).toBeLessThan(300);
    expect(op.journal ?? []).toBeDefined();
    expect(counterLines(dest.text).length).toBeGreaterThan(0);
    // Moved, not rebooted there (a guest that arrived with stale memory panics and boots again).
    expect(dest.text).not.toContain('DROVER-READY');
    const counter = checkCounter(source.text + dest.text);
    expect(sampler.maxRunning()).toBe(1);
    const last = sampler.samples.at(-1)!;
    expect(last.running).toEqual(['h2']);
    expect(last.owner).toBe('h2');
    expect(qemusOf('h1', vmA.id)).toEqual([]);
    expect(qemusOf('h2', vmA.id).length).toBe(1);
    // The shared volume is the same file, still there.
    expect(poolFiles('h1', vmA.id)).toContain(`${vmA.id}.root.qcow2`);
    // The guest-measured downtime (from the counter's timestamps around the switchover) next to QEMU's.
    expect(typeof op.result.guestMaxGapMs, JSON.stringify(op.result)).toBe('number');
    process.stdout.write(`shared directory move: QEMU downtime ${op.result.qemuDowntimeMs} ms, guest-measured gap ${op.result.guestMaxGapMs} ms\n`);
    figures.shared = { qemuDowntimeMs: op.result.qemuDowntimeMs, guestMaxGapMs: op.result.guestMaxGapMs, totalTimeMs: op.result.totalTimeMs, guestMaxTickGapMs: counter.gapMs, samples: sampler.samples.length, samplesWithNoneRunning: sampler.samples.filter((s) => s.running.length === 0).length };
    source.close();
    dest.close();
  }, 600_000);

  // QEMU keeps a stream's capabilities and parameters for its life: a save that did not set all of its own would
  // inherit the move's (return-path, pause-before-switchover, the TLS credentials deleted at finish) and fail.
  it('a VM that came by live migration saves and restores on its new host: the counter goes on from where it was saved', async () => {
    const log = new SerialTail(serialLog('h2', vmA.id));
    await until('the counter on h2', async () => {
      log.poll();
      return counterGens(log.text).length > 2;
    }, 60_000, 200);
    const save = await api('POST', `/api/v1/vms/${vmA.id}/save?wait=true`, {});
    expect(save.body.state, JSON.stringify(save.body)).toBe('done');
    expect((await api('GET', `/api/v1/vms/${vmA.id}`)).body.state).toBe('saved');
    expect(qemusOf('h2', vmA.id)).toEqual([]);
    log.poll();
    const savedAt = log.text.length;
    const last = counterGens(log.text).at(-1)!.gen;
    const restore = await api('POST', `/api/v1/vms/${vmA.id}/restore?wait=true`, {});
    expect(restore.body.state, JSON.stringify(restore.body)).toBe('done');
    expect((await api('GET', `/api/v1/vms/${vmA.id}`)).body).toMatchObject({ state: 'running', hostName: 'h2' });
    const after = await until('the counter after the restore', async () => {
      log.poll();
      const lines = counterGens(log.text.slice(savedAt));
      return lines.length > 2 ? lines : undefined;
    }, 120_000, 200);
    // Resumed, not rebooted: the next generation, and no boot in between.
    expect(after[0]!.gen).toBe(last + 1);
    expect(log.text.slice(savedAt)).not.toContain('DROVER-READY');
    expect(qemusOf('h2', vmA.id).length).toBe(1);
    log.close();
  }, 300_000);

  it('moves a running counter whose root is a LUN of a shared iSCSI pool (QEMU\'s own initiator): memory only, no gap, no repeat, the disk intact', async () => {
    // LUN 1: the counter appliance's root file system, raw, served by tgtd on the bridge address.
    const counterImage = await buildAppliance('counter', { cacheDir: defaultApplianceCacheDir() });
    const backing = path.join(dataDir, 'lun1.img');
    await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', counterImage.rootDisk, backing]);
    tgt = await TgtTarget.start(network.gateway, backing);
    // The same target as a pool of both hosts, through the API.
    for (const host of ['h1', 'h2']) {
      const pool = await api('POST', `/api/v1/hosts/${host}/pools`, { name: 'san', iscsi: { portal: tgt.portal, target: tgt.iqn } });
      expect(pool.status, JSON.stringify(pool.body)).toBe(201);
      expect(pool.body).toMatchObject({ name: 'san', kind: 'iscsi', shared: true, path: `iscsi://${tgt.portal}/${tgt.iqn}`, volumes: 1 });
    }
    const luns = await api('GET', '/api/v1/hosts/h1/pools/san/volumes');
    expect(luns.body).toEqual([expect.objectContaining({ name: 'lun1', format: 'raw' })]);
    // Drover does not provision LUNs: a clear 409, nothing made.
    const refused = await api('POST', '/api/v1/hosts/h1/pools/san/volumes', { name: 'lun2', sizeBytes: 1024 * 1024 * 8 });
    expect(refused.status, JSON.stringify(refused.body)).toBe(409);

    const created = await api('POST', '/api/v1/vms', { name: 'mig-iscsi', image: 'counter', memoryMiB: 128, hostInclude: ['h1'], bootVolume: { pool: 'san', volume: 'lun1' } });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const id = created.body.id as string;
    const start = await api('POST', `/api/v1/vms/${id}/start?wait=true`, {});
    expect(start.body.state, JSON.stringify(start.body)).toBe('done');
    const hosts = await hostRecords();
    const source = new SerialTail(serialLog('h1', id));
    const dest = new SerialTail(serialLog('h2', id));
    await until('counter lines on the LUN-booted guest', async () => {
      source.poll();
      return counterLines(source.text).length >= 3;
    }, 180_000, 200);
    // QEMU opens the LUN itself: an iscsi block node, no file.
    expect(readFileSync(`/proc/${qemusOf('h1', id)[0]}/cmdline`, 'utf8')).toContain('driver=iscsi');
    const sampler = new Sampler(id, hosts, [source, dest]);
    let op: any;
    try {
      const answer = await api('POST', `/api/v1/vms/${id}/migrate?wait=true`, { to: 'h2' });
      expect(answer.body.state, JSON.stringify(answer.body)).toBe('done');
      await new Promise((r) => setTimeout(r, 2000));
      // Read again: the guest-measured gap joins the result once the destination's first tick is there (within ~1 s).
      op = (await api('GET', `/api/v1/operations/${answer.body.id}`)).body;
    } finally {
      await sampler.stop();
    }
    source.poll();
    dest.poll();
    // Only memory moved: the LUN is the same disk on both hosts.
    expect(op.result).toMatchObject({ from: 'h1', to: 'h2', storage: false });
    expect(op.result.mirroredBytes).toBeUndefined();
    expect(counterLines(dest.text).length).toBeGreaterThan(0);
    const counter = checkCounter(source.text + dest.text);
    expect(sampler.maxRunning()).toBe(1);
    expect(sampler.samples.at(-1)).toMatchObject({ running: ['h2'], owner: 'h2' });
    expect(qemusOf('h1', id)).toEqual([]);
    expect(poolFiles('h1', id)).toEqual([]);
    expect(typeof op.result.qemuDowntimeMs).toBe('number');
    expect(typeof op.result.guestMaxGapMs, JSON.stringify(op.result)).toBe('number');
    process.stdout.write(`iSCSI move: QEMU downtime ${op.result.qemuDowntimeMs} ms, guest-measured gap ${op.result.guestMaxGapMs} ms\n`);
    figures.iscsi = { qemuDowntimeMs: op.result.qemuDowntimeMs, guestMaxGapMs: op.result.guestMaxGapMs, totalTimeMs: op.result.totalTimeMs, guestMaxTickGapMs: counter.gapMs, samples: sampler.samples.length };

    // The disk is intact: a clean stop writes the generation, the file system checks clean, and holds the last generation printed.
    const stop = await api('POST', `/api/v1/vms/${id}/stop?wait=true`, {});
    expect(stop.body.state, JSON.stringify(stop.body)).toBe('done');
    dest.poll();
    const last = counterGens(dest.text).at(-1)!.gen;
    await run('e2fsck', ['-fn', backing]);
    const { stdout } = await run('debugfs', ['-R', 'cat /var/lib/drover/counter', backing]);
    expect(Number(stdout.trim())).toBe(last);
    source.close();
    dest.close();
    const removed = await api('DELETE', `/api/v1/vms/${id}?wait=true`);
    expect(removed.status, JSON.stringify(removed.body)).toBeLessThan(300);
    // The LUN stays on the target (Drover does not own it).
    expect((await api('GET', '/api/v1/hosts/h2/pools/san/volumes')).body).toEqual([expect.objectContaining({ name: 'lun1' })]);
  }, 600_000);

  let vmB: { id: string };

  it('moves a running counter with its local disk mirrored (NBD over TLS), deletes the source volume, and the disk carries the counter across a reboot', async () => {
    vmB = await createRunning('mig-b', 'h3');
    const hosts = await hostRecords();
    const source = new SerialTail(serialLog('h3', vmB.id));
    const dest = new SerialTail(serialLog('h1', vmB.id));
    const sampler = new Sampler(vmB.id, hosts, [source, dest]);
    const refused = await api('POST', `/api/v1/vms/${vmB.id}/migrate`, { to: 'h1' });
    expect(refused.status).toBe(409);
    expect(refused.body.error.message).toMatch(/storage/);
    const answer = await api('POST', `/api/v1/vms/${vmB.id}/migrate?wait=true`, { to: 'h1', storage: true });
    expect(answer.body.state, JSON.stringify(answer.body)).toBe('done');
    await new Promise((r) => setTimeout(r, 2000));
    await sampler.stop();
    const op = answer.body;
    expect(op.result).toMatchObject({ from: 'h3', to: 'h1', storage: true });
    expect(op.result.mirroredBytes).toBeGreaterThan(0);
    const counter = checkCounter(source.text + dest.text);
    expect(counterLines(dest.text).length).toBeGreaterThan(0);
    expect(sampler.maxRunning()).toBe(1);
    expect(sampler.samples.at(-1)).toMatchObject({ running: ['h1'], owner: 'h1' });
    expect(qemusOf('h3', vmB.id)).toEqual([]);
    expect(poolFiles('h3', vmB.id)).toEqual([]);
    expect(poolFiles('h1', vmB.id)).toEqual([`${vmB.id}.root.qcow2`]);
    figures.mirrored = { qemuDowntimeMs: op.result.qemuDowntimeMs, totalTimeMs: op.result.totalTimeMs, mirroredBytes: op.result.mirroredBytes, guestMaxTickGapMs: counter.gapMs, samples: sampler.samples.length };

    // The disk came along: the counter keeps its generation on it, so a reboot continues from the last one.
    const stop = await api('POST', `/api/v1/vms/${vmB.id}/stop?wait=true`, {});
    expect(stop.body.state, JSON.stringify(stop.body)).toBe('done');
    dest.poll();
    const before = counterGens(dest.text).at(-1)!.gen;
    const start = await api('POST', `/api/v1/vms/${vmB.id}/start?wait=true`, {});
    expect(start.body.state, JSON.stringify(start.body)).toBe('done');
    expect((await api('GET', `/api/v1/vms/${vmB.id}`)).body.hostName).toBe('h1');
    const after = await until('the counter after the reboot', async () => {
      dest.poll();
      const lines = counterGens(dest.text).filter((l) => l.gen > before);
      return lines.length > 0 ? lines : undefined;
    }, 180_000, 200);
    expect(after[0]!.gen).toBe(before + 1);
    source.close();
    dest.close();
  }, 900_000);

  /** Where B runs now: the fault tests move it between h1 and h3 (its disk is mirrored each time). */
  let bHost = 'h1';

  /**
   * A migration of B with its disk mirrored (h1 ↔ h3), slowed to 1 MiB/s so
   * pre-copy lasts when `slow`; `fault` strikes once `reached` says so.
   * Afterwards B runs on exactly one host (`expected.host`: the source when
   * rolled back, the destination when done), owned by it, with its counter
   * unbroken across both logs, and the other host holds no QEMU and no
   * volume of it.
   */
  async function faultedMigration(
    label: string,
    o: { slow: boolean; downtimeMs?: number; mirrorBandwidth?: number; reached: (op: any, source: HostRecord, dest: HostRecord) => Promise<boolean>; fault: (opId: string) => Promise<void>; expected: { states: string[]; moved?: boolean } },
  ): Promise<any> {
    await allOnline();
    const hosts = await hostRecords();
    const from = bHost;
    const to = from === 'h1' ? 'h3' : 'h1';
    const source = new SerialTail(serialLog(from, vmB.id));
    const dest = new SerialTail(serialLog(to, vmB.id));
    source.poll();
    const offset = source.text.length;
    const sampler = new Sampler(vmB.id, hosts, [source, dest]);
    try {
      const answer = await api('POST', `/api/v1/vms/${vmB.id}/migrate`, { to, storage: true, ...(o.slow ? { bandwidth: 1024 * 1024 } : {}), ...(o.downtimeMs ? { downtimeMs: o.downtimeMs } : {}), ...(o.mirrorBandwidth ? { mirrorBandwidth: o.mirrorBandwidth } : {}) });
      expect(answer.status, JSON.stringify(answer.body)).toBe(202);
      const opId = answer.body.id as string;
      await until(`${label}: the moment of the fault`, async () => {
        const op = await api('GET', `/api/v1/operations/${opId}`);
        if (!['pending', 'running'].includes(op.body.state)) throw new Error(`the migration ended before the fault: ${JSON.stringify(op.body)}`);
        return o.reached(op.body, hosts.get(from)!, hosts.get(to)!);
      }, 300_000, 100);
      await o.fault(opId);
      const op = await waitOp(opId, 600_000);
      expect(o.expected.states, JSON.stringify(op)).toContain(op.state);
      // Where either outcome is right (a fault the protocol may ride out), the operation says which it was.
      const moved = o.expected.moved ?? op.state === 'done';
      const final = moved ? to : from;
      const other = moved ? from : to;
      await until(`${label}: no QEMU and no volume of B left on ${other}`, async () => qemusOf(other, vmB.id).length === 0 && poolFiles(other, vmB.id).length === 0, 300_000, 500);
      // The guest goes on where it ended up: it keeps counting, and did not reboot (a guest whose memory
      // arrived stale panics and, with panic=-1, boots again: its counter then goes on from its disk with
      // no gap, so only this check sees it).
      const runsOn = moved ? dest : source;
      const shown = runsOn.text.length;
      await until(`${label}: the guest counting on ${final}`, async () => {
        runsOn.poll();
        return counterLines(runsOn.text.slice(shown)).length >= 10;
      }, 120_000, 200);
      expect(dest.text).not.toContain('DROVER-READY');
      expect(source.text.slice(offset) + dest.text).not.toMatch(/Kernel panic|BUG: /);
      await new Promise((r) => setTimeout(r, 1500));
      await sampler.stop();
      expect(sampler.maxRunning()).toBe(1);
      expect(sampler.samples.at(-1)).toMatchObject({ running: [final], owner: final });
      const vm = await api('GET', `/api/v1/vms/${vmB.id}`);
      expect(vm.body).toMatchObject({ state: 'running', hostName: final });
      expect(qemusOf(final, vmB.id).length).toBe(1);
      if (final === 'h3') expect(poolFiles('h3', vmB.id)).toEqual([`${vmB.id}.root.qcow2`]);
      else expect(poolFiles('h1', vmB.id)).toEqual([`${vmB.id}.root.qcow2`]);
      source.poll();
      dest.poll();
      const counter = checkCounter(source.text.slice(offset) + dest.text);
      if (!moved) expect(counterGens(dest.text)).toEqual([]);
      bHost = final;
      figures[label] = { from, to, state: op.state, error: op.error?.message, qemuDowntimeMs: op.result?.qemuDowntimeMs, guestMaxTickGapMs: counter.gapMs, repairedLines: counter.repairedLines, samples: sampler.samples.length };
      return op;
    } finally {
      await sampler.stop();
      source.close();
      dest.close();
    }
  }

  const prePerform = async (op: any) => op.phase === 'perform' && (op.result?.transferredBytes ?? 0) > 0;

  it('cancel during pre-copy leaves the VM running on the source', async () => {
    const op = await faultedMigration('cancel', {
      slow: true,
      reached: prePerform,
      fault: async (opId) => {
        const cancelled = await api('POST', `/api/v1/operations/${opId}/cancel`, {});
        expect(cancelled.status, JSON.stringify(cancelled.body)).toBe(200);
      },
      expected: { states: ['cancelled'], moved: false },
    });
    expect(op.error.code).toBe('cancelled');
  }, 900_000);

  it('a link cut during pre-copy: the stuck stream is yanked, the source keeps running, the destination is cleaned once the link heals', async () => {
    const to = network.hosts.find((h) => h.name === (bHost === 'h1' ? 'h3' : 'h1')) as TestHost;
    try {
      await faultedMigration('linkCut', {
        slow: true,
        reached: prePerform,
        fault: async () => {
          await network.setLink(to, false);
          // Heal once the manager gave up on the stream: the destination is cleaned up when it answers again.
          void (async () => {
            await new Promise((r) => setTimeout(r, 40_000));
            await network.setLink(to, true);
          })();
        },
        expected: { states: ['rolled_back'], moved: false },
      });
    } finally {
      await network.setLink(to, true);
    }
  }, 900_000);

  it('the destination QEMU killed before switchover: rolled back, the source keeps running', async () => {
    await faultedMigration('destinationKilled', {
      slow: true,
      reached: prePerform,
      fault: async () => {
        const pids = qemusOf(bHost === 'h1' ? 'h3' : 'h1', vmB.id);
        expect(pids.length).toBe(1);
        process.kill(pids[0]!, 'SIGKILL');
      },
      expected: { states: ['rolled_back'], moved: false },
    });
  }, 900_000);

  // Its slow (1 MiB/s) pre-copy is the only one of this file that completes: under TCG with QEMU 7.2 a live
  // copy that long lost pages and the destination's guest panicked, unless the guest's RAM is not a multiple
  // of 256 KiB (docs/migration.md, "TCG hosts"); the no-panic check below fails otherwise. With its writes all
  // seen, the idle guest dirties a few hundred KiB/s even throttled: at 1 MiB/s a 300 ms downtime limit may
  // never be reached within the 10-minute timeout (seen once), so this copy may stop for up to 5 s. At 1 MiB/s
  // the start's 30 ms are 30 KiB, less than the guest dirties in a pass: the limit steps up pass by pass, set by
  // the agent that was restarted (its await-switchover sets the limit of the pass QEMU is in).
  it('the source agent restarted during pre-copy: QEMU migrates on, the agent reattaches, the migration completes', async () => {
    const from = network.hosts.find((h) => h.name === bHost) as TestHost;
    const op = await faultedMigration('sourceAgentRestart', {
      slow: true,
      downtimeMs: 5000,
      reached: prePerform,
      fault: async () => {
        await network.restartAgent(from);
      },
      expected: { states: ['done'], moved: true },
    });
    expect(op.result.downtimeLimitMs, JSON.stringify(op.result)).toBeGreaterThan(downtimeStartMs);
    expect(op.result.downtimeLimitMs).toBeLessThanOrEqual(downtimeLimitForPass(5000, op.result.passes));
  }, 900_000);

  it('a link cut at switchover (guest paused at pre-switchover, owner already flipped): one running instance, owned by the host that runs it, nothing left over', async () => {
    const toName = bHost === 'h1' ? 'h3' : 'h1';
    const to = network.hosts.find((h) => h.name === toName) as TestHost;
    // The manager waits 8 s after flipping the owner, before `migrate-continue`: the cut falls into that window.
    await killManager();
    manager = await spawnManager({ DROVER_TEST_HOLD_MIGRATION: 'switchover:8000' });
    let heal: Promise<void> | undefined;
    try {
      const op = await faultedMigration('linkCutAtSwitchover', {
        slow: false,
        reached: async (op, source, dest) =>
          op.phase === 'switchover' &&
          (await api('GET', `/api/v1/vms/${vmB.id}`)).body.hostName === dest.name &&
          (await link.call<any>(source, 'GET', `/v1/vms/${vmB.id}/migration`)).status === 'pre-switchover',
        fault: async () => {
          await network.setLink(to, false);
          // The link heals later: the destination decides then (it completes, or the source takes the guest back).
          heal = (async () => {
            await new Promise((r) => setTimeout(r, 25_000));
            await network.setLink(to, true);
          })();
        },
        expected: { states: ['done', 'rolled_back'] },
      });
      process.stdout.write(`link cut at switchover: ${op.state}${op.error ? ` (${op.error.message})` : ''}\n`);
    } finally {
      await heal?.catch(() => undefined);
      await network.setLink(to, true);
      await killManager();
      manager = await spawnManager();
    }
  }, 900_000);

  it('a link cut during the disk mirror: the stalled NBD connection is yanked, rolled back, the target volume removed once the link heals', async () => {
    const to = network.hosts.find((h) => h.name === (bHost === 'h1' ? 'h3' : 'h1')) as TestHost;
    let heal: Promise<void> | undefined;
    try {
      const op = await faultedMigration('linkCutDuringMirror', {
        slow: false,
        // 1 MiB/s for the 64 MiB disk: the mirror lasts about a minute, the cut falls into it.
        mirrorBandwidth: 1024 * 1024,
        reached: async (op, source) => op.phase === 'mirror' && ((await link.call<any>(source, 'GET', `/v1/vms/${vmB.id}/migration`)).mirrors ?? []).some((m: any) => m.offset > 0),
        fault: async () => {
          await network.setLink(to, false);
          heal = (async () => {
            await new Promise((r) => setTimeout(r, 30_000));
            await network.setLink(to, true);
          })();
        },
        expected: { states: ['rolled_back'], moved: false },
      });
      expect(op.error.message).toMatch(/mirror/);
    } finally {
      await heal?.catch(() => undefined);
      await network.setLink(to, true);
    }
  }, 900_000);

  /**
   * The manager SIGKILLed right after each journaled phase's work (held there
   * by DROVER_TEST_HOLD_MIGRATION), then restarted: the recovery table of
   * docs/migration.md. Before the switchover it rolls back; from the
   * destination's `finish` on it finishes forward.
   */
  const recoveryCases: Array<[phase: string, moved: boolean, reached: (op: any, source: HostRecord, dest: HostRecord) => Promise<boolean>]> = [
    ['begin', false, async (op, source) => op.phase === 'begin' && (await link.call<any>(source, 'GET', `/v1/vms/${vmB.id}/migration`)).active === true],
    ['prepare', false, async (op, _source, dest) => op.phase === 'prepare' && (await link.vm(dest, vmB.id).catch(() => undefined))?.qemuStatus === 'inmigrate'],
    ['mirror', false, async (op) => op.phase === 'mirror' && op.result?.mirroredBytes > 0],
    ['perform', false, async (op, source) => op.phase === 'perform' && ['active', 'pre-switchover'].includes((await link.call<any>(source, 'GET', `/v1/vms/${vmB.id}/migration`)).status)],
    ['switchover', false, async (op, _source, dest) => op.phase === 'switchover' && (await api('GET', `/api/v1/vms/${vmB.id}`)).body.hostName === dest.name],
    ['finish', true, async (op, _source, dest) => op.phase === 'finish' && (await link.vm(dest, vmB.id).catch(() => undefined))?.qemuStatus === 'running'],
    ['confirm', true, async (op) => op.phase === 'confirm'],
  ];
  for (const [phase, moved, reached] of recoveryCases) {
    it(`the manager killed after phase "${phase}" and restarted: ${moved ? 'finished forward' : 'rolled back'}`, async () => {
      await killManager();
      manager = await spawnManager({ DROVER_TEST_HOLD_MIGRATION: phase });
      await faultedMigration(`managerKilled-${phase}`, {
        slow: false,
        reached,
        fault: async () => {
          await killManager();
          manager = await spawnManager();
        },
        expected: { states: moved ? ['done'] : ['rolled_back'], moved },
      });
    }, 900_000);
  }

  it('the destination refuses a stream that is not TLS with the source host\'s certificate', async () => {
    // A (on h2, shared pool) planned into h1 as if from h2; then a plaintext client speaks first.
    const hosts = await hostRecords();
    const [h1, h2] = [hosts.get('h1')!, hosts.get('h2')!];
    const plan = await link.call<any>(h2, 'GET', `/v1/vms/${vmA.id}/migration/plan`);
    const ready = await link.call<any>(h1, 'POST', '/v1/migrations/incoming', { operationId: 'tls-check', plan, sourceName: 'h2', mirror: [] });
    expect(ready.uri).toMatch(/^tcp:/);
    const [, address, port] = /^tcp:(.+):(\d+)$/.exec(ready.uri)!;
    const net = await import('node:net');
    await new Promise<void>((resolve, reject) => {
      const socket = net.connect({ host: address!, port: Number(port) }, () => socket.write(Buffer.from('5145564d00000003', 'hex')));
      socket.on('error', () => resolve());
      socket.on('close', () => resolve());
      setTimeout(() => reject(new Error('the destination kept a plaintext stream open')), 30_000);
    });
    // QEMU dropped the connection at the TLS handshake: nothing was loaded (it fails, or waits for a real source).
    await new Promise((r) => setTimeout(r, 2000));
    const status = await link.call<any>(h1, 'GET', `/v1/vms/${vmA.id}/migration`);
    expect(['failed', 'gone', 'setup', 'none']).toContain(status.status);
    expect(status.transferredBytes ?? 0).toBe(0);
    await link.call(h1, 'POST', `/v1/migrations/incoming/${vmA.id}/abort`, {});
    expect(qemusOf('h1', vmA.id)).toEqual([]);
    expect(await link.vm(h1, vmA.id)).toBeUndefined();
    // A's shared disk was not touched: it still runs on h2.
    expect((await link.vm(h2, vmA.id))?.qemuStatus).toBe('running');
    expect(poolFiles('h1', vmA.id)).toContain(`${vmA.id}.root.qcow2`);
  }, 300_000);

  it('a stopped VM moves cold with its disk (copied over the same TLS mirror), and starts there from the generation it wrote', async () => {
    await allOnline();
    const from = bHost;
    const to = from === 'h1' ? 'h3' : 'h1';
    const log = new SerialTail(serialLog(from, vmB.id));
    const stop = await api('POST', `/api/v1/vms/${vmB.id}/stop?wait=true`, {});
    expect(stop.body.state, JSON.stringify(stop.body)).toBe('done');
    log.poll();
    const last = counterGens(log.text).at(-1)!.gen;
    log.close();
    const answer = await api('POST', `/api/v1/vms/${vmB.id}/migrate?wait=true`, { to, storage: true });
    expect(answer.body.state, JSON.stringify(answer.body)).toBe('done');
    expect(answer.body.result).toMatchObject({ mode: 'stopped', from, to, state: 'stopped' });
    expect((await api('GET', `/api/v1/vms/${vmB.id}`)).body).toMatchObject({ state: 'stopped', hostName: to });
    expect(qemusOf(from, vmB.id)).toEqual([]);
    expect(qemusOf(to, vmB.id)).toEqual([]);
    expect(poolFiles(from, vmB.id)).toEqual([]);
    expect(poolFiles(to, vmB.id)).toEqual([`${vmB.id}.root.qcow2`]);
    const dest = new SerialTail(serialLog(to, vmB.id));
    const start = await api('POST', `/api/v1/vms/${vmB.id}/start?wait=true`, {});
    expect(start.body.state, JSON.stringify(start.body)).toBe('done');
    const first = await until('the counter on the new host', async () => {
      dest.poll();
      return counterGens(dest.text)[0];
    }, 180_000, 200);
    expect(first.gen).toBe(last + 1);
    dest.close();
    bHost = to;
    figures.coldStopped = { from, to, totalMs: answer.body.result.totalTimeMs, lastGen: last, firstGenThere: first.gen };
  }, 900_000);

  it('saved on one host, restored on another: the guest resumes where it was saved, no reboot', async () => {
    await allOnline();
    const from = bHost;
    const to = from === 'h1' ? 'h3' : 'h1';
    const log = new SerialTail(serialLog(from, vmB.id));
    await until('the counter before the save', async () => {
      log.poll();
      return counterGens(log.text).length > 3;
    }, 120_000, 200);
    const save = await api('POST', `/api/v1/vms/${vmB.id}/save?wait=true`, {});
    expect(save.body.state, JSON.stringify(save.body)).toBe('done');
    log.poll();
    const last = counterGens(log.text).at(-1)!.gen;
    log.close();
    expect((await api('GET', `/api/v1/vms/${vmB.id}`)).body.state).toBe('saved');
    const dest = new SerialTail(serialLog(to, vmB.id));
    const answer = await api('POST', `/api/v1/vms/${vmB.id}/migrate?wait=true`, { to, storage: true });
    expect(answer.body.state, JSON.stringify(answer.body)).toBe('done');
    expect(answer.body.result).toMatchObject({ mode: 'saved', from, to, state: 'running' });
    expect((await api('GET', `/api/v1/vms/${vmB.id}`)).body).toMatchObject({ state: 'running', hostName: to });
    const after = await until('the counter on the new host', async () => {
      dest.poll();
      const lines = counterGens(dest.text);
      return lines.length > 8 ? lines : undefined;
    }, 180_000, 200);
    // Resumed, not rebooted: the next generation after the save, and no boot in between.
    expect(after[0]!.gen).toBe(last + 1);
    expect(dest.text).not.toContain('DROVER-READY');
    checkCounter(dest.text);
    expect(qemusOf(from, vmB.id)).toEqual([]);
    expect(poolFiles(from, vmB.id)).toEqual([]);
    expect(existsSync(path.join(stateDirs.get(from)!, 'vms', vmB.id))).toBe(false);
    dest.close();
    bHost = to;
    figures.savedRestoredThere = { from, to, totalMs: answer.body.result.totalTimeMs, lastGen: last, firstGenThere: after[0]!.gen };
  }, 900_000);

  // A live move prepares the destination from the plan its request read, alongside the source's begin. Here
  // the VM changes in between (a NIC hot-plugged on the source agent directly, while the manager holds the
  // request for 4 s): begin's plan differs, so the destination is prepared again from it. Without that, the
  // destination's QEMU would lack the NIC, QEMU would refuse the device state, and the move would roll back.
  it('a VM changed between the request and begin: the destination is prepared again from begin\'s plan, and the move completes', async () => {
    await allOnline();
    await killManager();
    manager = await spawnManager({ DROVER_TEST_HOLD_MIGRATION: 'request:4000' });
    try {
      await allOnline();
      const hosts = await hostRecords();
      const from = (await api('GET', `/api/v1/vms/${vmA.id}`)).body.hostName as string;
      const to = from === 'h1' ? 'h2' : 'h1';
      const before = (await link.vm(hosts.get(from)!, vmA.id))!;
      const posted = api('POST', `/api/v1/vms/${vmA.id}/migrate`, { to });
      await new Promise((r) => setTimeout(r, 1500));
      await link.call(hosts.get(from)!, 'POST', `/v1/vms/${vmA.id}/nics`, { mode: 'user' });
      const answer = await posted;
      expect(answer.status, JSON.stringify(answer.body)).toBe(202);
      const op = await waitOp(answer.body.id);
      expect(op.state, JSON.stringify(op)).toBe('done');
      const there = (await link.vm(hosts.get(to)!, vmA.id))!;
      expect((there.spec.nics ?? []).length).toBe((before.spec.nics ?? []).length + 1);
      expect(there.qemuStatus).toBe('running');
      expect(qemusOf(from, vmA.id)).toEqual([]);
      expect(qemusOf(to, vmA.id).length).toBe(1);
    } finally {
      await killManager();
      manager = await spawnManager();
    }
  }, 900_000);
});

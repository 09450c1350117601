/* eslint-disable @typescript-eslint/no-explicit-any -- loosely typed JSON answers of the API and agents, read field by field */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify as toYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VmInfo } from '@drover/api';
import { tempDir, TestNetwork } from '@drover/agent/testing';
import { defaultApplianceCacheDir } from '@drover/appliances';
import { AgentLink } from '../hosts/agent-link.js';
import { openPostgresStore, type Store } from '../store/index.js';
import { startPostgres, type PostgresCluster } from '../store/testing/postgres.js';
import type { HostRecord } from '../store/types.js';
import { liveQemus, managerClientCredentials, until as pollUntil, writePowerOff } from '../testing/multihost.js';

/**
 * Leader failover on real parts: one PostgreSQL started here, three real
 * `drover-manager` processes on it (so SIGKILL is real), three agents in
 * network namespaces joined over TLS sharing their `default` pool (live
 * migrations move memory only), and `counter` guests (128 MiB).
 *
 * Who runs what: an operation runs on the manager that created it (its
 * claimant, `operation_claims`): the one that took the API call, or the leader
 * for background work (the power policy's night plan and its moves). The
 * leader alone adopts the operations of managers that are gone. So killing
 * the leader that runs a migration orphans both the lead and the operation,
 * while a migration a follower runs stays with that follower.
 *
 * Every manager holds each migration 3 s after its `perform` step
 * (DROVER_TEST_HOLD_MIGRATION=perform:3000, the test-only hook of
 * migration.service.ts): the window in which the test kills the leader,
 * wherever the copy itself is. A sampler asks every agent about every VM of
 * the scenario every 100 ms: at no sample may a guest run (QEMU status
 * `running`) on two hosts; the counter lines of every host's serial log must
 * never repeat a generation (a second instance, or a reboot, would).
 */
const managerMain = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'main.js');
const root = tempDir('leader-failover');
const sharedDir = tempDir('leader-failover-shared');
const scriptDir = path.join(root, 'power');
const adminToken = randomBytes(24).toString('base64url');
const keyFile = path.join(root, 'secret.key');

interface ManagerProcess {
  index: number;
  child: ChildProcess;
  url: string;
  tlsUrl: string;
  dataDir: string;
  /** Its id in the cluster (`/healthz`). */
  id: string;
}

let pg: PostgresCluster | undefined;
let connectionString = '';
let store: Store | undefined;
let network: TestNetwork | undefined;
let link: AgentLink | undefined;
const managers: ManagerProcess[] = [];
const stateDirs = new Map<string, string>();
let hosts = new Map<string, HostRecord>();

const isLive = (m: ManagerProcess) => m.child.exitCode === null && m.child.signalCode === null;
const live = () => managers.filter(isLive);

async function spawnManager(): Promise<ManagerProcess> {
  const index = managers.length;
  const dataDir = path.join(root, `m${index}`);
  mkdirSync(dataDir, { recursive: true });
  const config = path.join(dataDir, 'manager.yaml');
  writeFileSync(
    config,
    toYaml({
      listen: '127.0.0.1:0',
      tlsListen: `${network!.gateway}:0`,
      dataDir,
      store: connectionString,
      adminToken,
      secretKeyFile: keyFile,
      webRoot: 'none',
      heartbeatMs: 500,
      clusterIntervalMs: 300,
      powerTickMs: 500,
      powerVerifyMs: 10_000,
      applianceCacheDir: defaultApplianceCacheDir(),
      logLevel: process.env.DROVER_LOG_LEVEL ?? 'warn',
    }),
    { mode: 0o600 },
  );
  const ready = path.join(dataDir, `ready-${Date.now()}.json`);
  const child = spawn(process.execPath, [managerMain, '--config', config, '--ready-file', ready], {
    env: { ...process.env, DROVER_APPLIANCE_CACHE: defaultApplianceCacheDir(), DROVER_TEST_HOLD_MIGRATION: 'perform:3000' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const m: ManagerProcess = { index, child, url: '', tlsUrl: '', dataDir, id: '' };
  managers.push(m);
  for (const deadline = Date.now() + 120_000; !existsSync(ready); ) {
    if (child.exitCode !== null) throw new Error(`drover-manager ${index} exited with ${child.exitCode}`);
    if (Date.now() > deadline) throw new Error(`drover-manager ${index} did not become ready`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const info = JSON.parse(readFileSync(ready, 'utf8')) as { url: string; tlsUrl: string };
  m.url = info.url;
  m.tlsUrl = info.tlsUrl;
  m.id = ((await (await fetch(`${m.url}/healthz`)).json()) as { manager: string }).manager;
  return m;
}

async function killManager(m: ManagerProcess): Promise<void> {
  if (!isLive(m)) return;
  const exited = new Promise((resolve) => m.child.once('exit', resolve));
  m.child.kill('SIGKILL');
  await exited;
}

async function api<T = any>(m: ManagerProcess, method: string, route: string, body?: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(`${m.url}${route}`, {
    method,
    headers: { authorization: `Bearer ${adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, body: (await response.json().catch(() => ({}))) as T };
}

/** Polls every 100 ms: the kills must land while a phase lasts. */
const until = <T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 120_000, everyMs = 100): Promise<T> => pollUntil(what, probe, timeoutMs, everyMs);

/** The one leader every live manager agrees on: the only one saying so on /healthz, and the one each names. */
async function agreedLeader(timeoutMs = 30_000): Promise<ManagerProcess> {
  return until('one agreed leader', async () => {
    const candidates = live();
    const health = await Promise.all(candidates.map(async (m) => ((await fetch(`${m.url}/healthz`)).json() as Promise<{ leader: boolean; manager: string }>).catch(() => undefined)));
    const leaders = candidates.filter((_, i) => health[i]?.leader);
    if (leaders.length !== 1) return undefined;
    const views = await Promise.all(candidates.map((m) => api(m, 'GET', '/api/v1/cluster/managers')));
    if (!views.every((v) => v.body.leader?.managerId === leaders[0]!.id)) return undefined;
    return leaders[0];
  }, timeoutMs);
}

/**
 * A VM's serial log on a host, read through a descriptor kept open (the log
 * goes with the VM's directory when it leaves). A VM that comes back to the
 * host (an incoming migration rolled back, then made again) has a new log at
 * the same path: the old one is read to its end, then the new one.
 */
class SerialTail {
  private fd: number | undefined;
  private inode = 0;
  private offset = 0;
  text = '';
  constructor(private readonly file: string) {}
  poll(): void {
    if (this.fd !== undefined) {
      this.drain();
      let now: number | undefined;
      try {
        now = statSync(this.file).ino;
      } catch {
        now = undefined;
      }
      if (now === this.inode || now === undefined) return;
      this.close();
      this.text += '\n';
    }
    if (!existsSync(this.file)) return;
    try {
      this.fd = openSync(this.file, 'r');
    } catch {
      return;
    }
    this.inode = fstatSync(this.fd).ino;
    this.offset = 0;
    this.drain();
  }
  private drain(): void {
    const buffer = Buffer.alloc(1 << 16);
    for (;;) {
      const n = readSync(this.fd!, buffer, 0, buffer.length, this.offset);
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

/**
 * The counter's generations in one log. QEMU's 16550 now and then sends a
 * byte twice after a stall (`DROVERR-COUNTER`, `gen=1223`): a repeated
 * non-digit is collapsed, and a generation one repeated digit away from the
 * expected one is read as the expected one (as migration.test.ts does).
 */
function generations(text: string): number[] {
  const out: number[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const m = /DROVER-COUNTER gen=(\d+) /.exec(raw.replace(/([^0-9])\1+/g, '$1'));
    if (!m) continue;
    let gen = Number(m[1]);
    const expected = out.length > 0 ? out.at(-1)! + 1 : undefined;
    if (expected !== undefined && gen !== expected) {
      const digits = m[1]!;
      for (let i = 0; i + 1 < digits.length; i++) {
        if (digits[i] === digits[i + 1] && Number(digits.slice(0, i) + digits.slice(i + 1)) === expected) gen = expected;
      }
    }
    out.push(gen);
  }
  return out;
}

/**
 * Every 100 ms: on which hosts each VM's guest runs (asked of every agent),
 * which host the store names as its owner, and how many QEMU processes of it
 * exist on the machine; the serial logs of every VM on every host are read.
 */
class Sampler {
  samples: Array<{ at: number; running: Record<string, string[]>; owner: Record<string, string | null>; qemus: Record<string, number> }> = [];
  readonly tails = new Map<string, SerialTail[]>();
  private stopped = false;
  private readonly done: Promise<void>;
  constructor(private readonly vmIds: string[]) {
    for (const id of vmIds) this.tails.set(id, [...stateDirs.values()].map((dir) => new SerialTail(path.join(dir, 'vms', id, 'run', 'serial.log'))));
    this.done = this.loop();
  }
  private async loop(): Promise<void> {
    while (!this.stopped) {
      const started = Date.now();
      const running: Record<string, string[]> = Object.fromEntries(this.vmIds.map((id) => [id, []]));
      await Promise.all(
        [...hosts.values()].flatMap((host) =>
          this.vmIds.map(async (id) => {
            const info = await link!.call<VmInfo>(host, 'GET', `/v1/vms/${id}`, undefined, 5_000).catch(() => undefined);
            if (info?.qemuStatus === 'running') running[id]!.push(host.name);
          }),
        ),
      );
      const owner: Record<string, string | null> = {};
      const records = new Map((await store!.vms.list({ limit: 1000 }).catch(() => ({ items: [] }))).items.map((vm) => [vm.id, vm]));
      for (const id of this.vmIds) {
        const hostId = records.get(id)?.hostId;
        owner[id] = hostId ? [...hosts.values()].find((h) => h.id === hostId)?.name ?? hostId : null;
      }
      const processes = liveQemus();
      const qemus = Object.fromEntries(this.vmIds.map((id) => [id, processes.filter((q) => q.cmdline.includes(`/vms/${id}/`)).length]));
      this.samples.push({ at: started, running, owner, qemus });
      for (const tails of this.tails.values()) for (const tail of tails) tail.poll();
      await new Promise((r) => setTimeout(r, Math.max(0, 100 - (Date.now() - started))));
    }
  }
  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
    for (const tails of this.tails.values()) for (const tail of tails) tail.close();
  }
  /** The mean time between two samples, ms. */
  meanIntervalMs(): number {
    return Math.round((this.samples.at(-1)!.at - this.samples[0]!.at) / Math.max(1, this.samples.length - 1));
  }
  /** The largest number of hosts that ran the VM's guest at one sample. */
  maxRunning(id: string): number {
    return Math.max(...this.samples.map((s) => s.running[id]!.length));
  }
  /** Every generation the VM's guest printed, on whichever host. */
  generations(id: string): number[] {
    return this.tails.get(id)!.flatMap((tail) => generations(tail.text));
  }
}

/** QEMU processes of a VM under a host's state directory. */
function qemusOf(host: string, vmId: string): number {
  const dir = path.join(stateDirs.get(host)!, 'vms', vmId);
  return liveQemus().filter((q) => q.cmdline.includes(dir)).length;
}

async function waitOp(id: string, timeoutMs = 300_000): Promise<any> {
  return until(`operation ${id} to end`, async () => {
    const op = await store!.operations.get(id);
    return ['pending', 'running'].includes(op.state) ? undefined : op;
  }, timeoutMs, 200);
}

/** The counter guest went on once it ran on one host again: at least 10 more generations, none printed twice. */
async function checkCounter(sampler: Sampler, id: string, before: number): Promise<void> {
  await until(`the counter of ${id} to go on`, async () => Math.max(...sampler.generations(id)) >= before + 10, 120_000, 200).catch((error: Error) => {
    const seen = sampler.tails.get(id)!.map((tail, i) => `h${i + 1}: ${generations(tail.text).slice(-3).join(',')}`);
    throw new Error(`${error.message} (from ${before}; last generations by host: ${seen.join('; ')}; last sample ${JSON.stringify(sampler.samples.at(-1))})`);
  });
  const gens = sampler.generations(id);
  const repeated = gens.filter((g, i) => gens.indexOf(g) !== i);
  expect(repeated, `generations printed twice by ${id}`).toEqual([]);
}

async function createRunning(m: ManagerProcess, name: string): Promise<{ id: string; host: string }> {
  const created = await api(m, 'POST', '/api/v1/vms', { name, image: 'counter', memoryMiB: 128 });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  const start = await api(m, 'POST', `/api/v1/vms/${created.body.id}/start?wait=true`, {});
  expect(start.body.state, JSON.stringify(start.body)).toBe('done');
  const vm = await api(m, 'GET', `/api/v1/vms/${created.body.id}`);
  const host = vm.body.hostName as string;
  const tail = new SerialTail(path.join(stateDirs.get(host)!, 'vms', created.body.id, 'run', 'serial.log'));
  await until(`counter lines of ${name}`, async () => {
    tail.poll();
    return generations(tail.text).length >= 3;
  }, 180_000, 200);
  tail.close();
  return { id: created.body.id, host };
}

beforeAll(async () => {
  if (!existsSync(managerMain)) throw new Error(`${managerMain} is missing: run "npx tsc -b" first`);
  mkdirSync(scriptDir, { recursive: true });
  writeFileSync(keyFile, randomBytes(32).toString('hex'), { mode: 0o600 });
  pg = await startPostgres();
  connectionString = await pg.createDatabase('drover');
  store = await openPostgresStore({ connectionString });
  network = await TestNetwork.create(3);
  // One after the other: the first makes the cluster CA and seals it in the store, the others take it from there.
  for (let i = 0; i < 3; i++) await spawnManager();
  const leader = await agreedLeader();
  for (const [i, host] of network.hosts.entries()) {
    // Each agent joins through another manager: they all hand out certificates of the one CA.
    const through = managers[i]!;
    const join = await api<{ token: string; caFingerprint: string }>(through, 'POST', '/api/v1/hosts/join-tokens', {});
    const { stateDir } = await network.startAgent(host, {
      managerUrl: through.tlsUrl,
      joinToken: join.body.token,
      caFingerprint: join.body.caFingerprint,
      capacity: { cpus: 4, memoryMiB: 1024 },
      config: { pools: [{ name: 'default', path: sharedDir, shared: true }], stopTimeoutMs: 2_000 },
    });
    stateDirs.set(host.name, stateDir);
  }
  await until('every host online', async () => {
    const list = (await store!.hosts.list({ limit: 10 })).items;
    return list.length === 3 && list.every((h) => h.state === 'online');
  }, 120_000, 200);
  hosts = new Map((await store.hosts.list({ limit: 10 })).items.map((h) => [h.name, h]));
  const credentials = managerClientCredentials(leader.dataDir);
  link = new AgentLink(() => credentials, () => false, 10_000);
}, 600_000);

afterAll(async () => {
  try {
    for (const m of managers) await killManager(m).catch(() => undefined);
    link?.close();
    // Every QEMU and agent under the hosts' state directories (by PID), the namespaces and the bridge.
    await network?.destroy();
    await store?.close().catch(() => undefined);
  } finally {
    await pg?.stop();
    rmSync(root, { recursive: true, force: true });
    rmSync(sharedDir, { recursive: true, force: true });
  }
}, 120_000);

describe('three managers on one PostgreSQL: the leader killed with -9', () => {
  let vmA: { id: string; host: string };

  it('in the middle of a live migration it runs: another leads within seconds, rolls the migration back by the recovery table, the guest runs exactly once and counts on', async () => {
    const leader = await agreedLeader();
    vmA = await createRunning(leader, 'fo-a');
    const source = vmA.host;
    const dest = ['h1', 'h2', 'h3'].find((h) => h !== source)!;
    const sampler = new Sampler([vmA.id]);
    let takeoverMs = 0;
    try {
      const answer = await api(leader, 'POST', `/api/v1/vms/${vmA.id}/migrate`, { to: dest });
      expect(answer.status, JSON.stringify(answer.body)).toBe(202);
      const migrateId = answer.body.id as string;
      // The manager that took the call runs the operation: here the leader.
      expect(await store!.cluster.claimOf(migrateId)).toBe(leader.id);
      await until('the migration in perform, the source migrating', async () => {
        const op = await store!.operations.get(migrateId);
        if (op.phase !== 'perform') return false;
        const status = await link!.call<any>(hosts.get(source)!, 'GET', `/v1/vms/${vmA.id}/migration`).catch(() => undefined);
        return ['active', 'pre-switchover', 'completed'].includes(status?.status);
      }, 120_000, 100);
      await killManager(leader);
      const killedAt = Date.now();
      const next = await agreedLeader();
      takeoverMs = Date.now() - killedAt;
      expect(next.id).not.toBe(leader.id);
      const view = (await api(next, 'GET', '/api/v1/cluster/managers')).body;
      expect(view.managers.filter((m: any) => m.alive)).toHaveLength(2);
      expect(view.managers.find((m: any) => m.id === leader.id)?.alive ?? false).toBe(false);

      // Killed in perform: the recovery table rolls back (the source resumes, the destination QEMU goes).
      const ended = await waitOp(migrateId);
      expect(ended.state, JSON.stringify(ended.error)).toBe('rolled_back');
      expect(ended.error.message).toMatch(/interrupted by a manager restart in phase "perform"/);
      expect(await store!.cluster.claimOf(migrateId)).toBe(next.id);
      expect((await store!.events.since(0, 100_000)).filter((e) => e.objectId === migrateId && (e.data as { state?: string }).state === 'rolled_back')).toHaveLength(1);
      await checkCounter(sampler, vmA.id, Math.max(...sampler.generations(vmA.id)));
    } finally {
      await sampler.stop();
    }
    expect(sampler.maxRunning(vmA.id)).toBe(1);
    const last = sampler.samples.at(-1)!;
    expect(last.running[vmA.id]).toEqual([source]);
    expect(last.owner[vmA.id]).toBe(source);
    expect((await store!.vms.get(vmA.id)).state).toBe('running');
    expect(qemusOf(source, vmA.id)).toBe(1);
    expect(qemusOf(dest, vmA.id)).toBe(0);
    expect(last.qemus[vmA.id]).toBe(1);
    expect((await store!.reservations.list({ limit: 100 })).items.filter((r) => r.vmId === vmA.id)).toEqual([]);
    process.stdout.write(`leader failover (migration): new leader ${takeoverMs} ms after SIGKILL; ${sampler.samples.length} samples (every ${sampler.meanIntervalMs()} ms on average), never two running\n`);
  }, 600_000);

  it('while a follower runs a live migration: the follower finishes it, the new leader does not touch it, the guest runs exactly once', async () => {
    // Three managers again (the killed one does not come back).
    await spawnManager();
    const leader = await agreedLeader();
    const follower = live().find((m) => m.id !== leader.id)!;
    const source = (await api(follower, 'GET', `/api/v1/vms/${vmA.id}`)).body.hostName as string;
    const dest = ['h1', 'h2', 'h3'].find((h) => h !== source)!;
    const sampler = new Sampler([vmA.id]);
    let migrateId = '';
    let takeoverMs = 0;
    try {
      const answer = await api(follower, 'POST', `/api/v1/vms/${vmA.id}/migrate`, { to: dest });
      expect(answer.status, JSON.stringify(answer.body)).toBe(202);
      migrateId = answer.body.id;
      expect(await store!.cluster.claimOf(migrateId)).toBe(follower.id);
      await until('the migration in perform', async () => (await store!.operations.get(migrateId)).phase === 'perform', 120_000, 100);
      await killManager(leader);
      const killedAt = Date.now();
      const next = await agreedLeader();
      takeoverMs = Date.now() - killedAt;
      expect(next.id).not.toBe(leader.id);
      const ended = await waitOp(migrateId);
      expect(ended.state, JSON.stringify(ended.error)).toBe('done');
      // Run to its end by the manager that started it: never adopted, never recovered.
      expect(await store!.cluster.claimOf(migrateId)).toBe(follower.id);
      expect(ended.journal.map((entry: any) => entry.phase)).not.toContain('recover');
      await checkCounter(sampler, vmA.id, Math.max(...sampler.generations(vmA.id)));
    } finally {
      await sampler.stop();
    }
    expect(sampler.maxRunning(vmA.id)).toBe(1);
    const last = sampler.samples.at(-1)!;
    expect(last.running[vmA.id]).toEqual([dest]);
    expect(last.owner[vmA.id]).toBe(dest);
    expect(qemusOf(dest, vmA.id)).toBe(1);
    expect(qemusOf(source, vmA.id)).toBe(0);
    process.stdout.write(`leader failover (follower's migration): new leader ${takeoverMs} ms after SIGKILL; the follower finished it; ${sampler.samples.length} samples (every ${sampler.meanIntervalMs()} ms on average), never two running\n`);
  }, 600_000);

  it('in the middle of its night consolidation: the next leader adopts the plan and its move, rolls the move back, plans again and finishes; every VM runs exactly once', async () => {
    // Three managers again.
    await spawnManager();
    let leader = await agreedLeader();
    // Three more counters; the scheduler spreads the four over the three hosts.
    const vms = [vmA, await createRunning(leader, 'fo-b1'), await createRunning(leader, 'fo-b2'), await createRunning(leader, 'fo-b3')];
    leader = await agreedLeader();
    for (const host of network!.hosts) {
      const { off, status } = writePowerOff(scriptDir, host.name, stateDirs.get(host.name)!);
      const put = await api(leader, 'PUT', `/api/v1/hosts/${host.name}/power`, { driver: 'command', on: `echo on > ${path.join(scriptDir, `${host.name}.power`)}`, off, status, timeoutMs: 10_000 });
      expect(put.status, JSON.stringify(put.body)).toBe(200);
    }
    const hour = new Date().getUTCHours();
    const pad = (h: number) => String((h + 24) % 24).padStart(2, '0');
    const policy = { enabled: false, timeZone: 'UTC', window: `${pad(hour - 1)}:00-${pad(hour + 2)}:00`, spareHosts: 0, wattsPerHost: 200, reserveMemoryPercent: 5, headroomPercent: 0, rebalanceThresholdPercent: 5 };
    expect((await api(leader, 'PUT', '/api/v1/power/policy', policy)).status).toBe(200);
    const dry = await api(leader, 'POST', '/api/v1/power/night-plan', { dryRun: true });
    expect(dry.body.hostsUsedBefore).toBe(3);
    expect(dry.body.hostsUsed).toBe(1);
    expect(dry.body.moves.length).toBeGreaterThanOrEqual(2);
    expect(dry.body.powerOff).toHaveLength(2);

    const sampler = new Sampler(vms.map((vm) => vm.id));
    let takeoverMs = 0;
    let ended: any;
    let next: ManagerProcess | undefined;
    let moves: any[] = [];
    try {
      // The schedule (on the leader only) starts the night plan at its next tick.
      expect((await api(leader, 'PUT', '/api/v1/power/policy', { ...policy, enabled: true })).status).toBe(200);
      const night = await until('the night plan', async () => (await store!.operations.list({ limit: 10, filter: { kind: 'power.night-plan' } })).items[0], 60_000, 100);
      expect(night.actor).toBe('system:power-policy');
      expect(await store!.cluster.claimOf(night.id)).toBe(leader.id);
      const childActor = `system:night-plan:${night.id}`;
      // Its first move in flight (held after perform): the leader is killed now.
      const interrupted = await until('a move of the night plan in perform', async () => {
        const running = (await store!.operations.list({ limit: 10, filter: { actor: childActor, state: 'running' } })).items;
        return running.find((op) => op.phase === 'perform');
      }, 180_000, 100);
      expect(await store!.cluster.claimOf(interrupted.id)).toBe(leader.id);
      await killManager(leader);
      const killedAt = Date.now();
      next = await agreedLeader();
      takeoverMs = Date.now() - killedAt;
      expect(next.id).not.toBe(leader.id);

      // The move goes by the migration's recovery table; the plan waits for it, plans again and finishes.
      const move = await waitOp(interrupted.id);
      expect(move.state, JSON.stringify(move.error)).toBe('rolled_back');
      expect(await store!.cluster.claimOf(interrupted.id)).toBe(next.id);
      ended = await waitOp(night.id, 600_000);
      expect(ended.state, JSON.stringify(ended.error)).toBe('done');
      expect(await store!.cluster.claimOf(night.id)).toBe(next.id);
      expect(ended.journal.filter((entry: any) => entry.phase === 'recover')).toHaveLength(1);
      expect(ended.result.failed).toEqual([]);
      // One move at a time: the interrupted one, then the others (and the interrupted VM's again), all by the new leader.
      moves = (await store!.operations.list({ limit: 100, filter: { actor: childActor } })).items;
      expect(moves.filter((op) => op.state === 'done').length).toBeGreaterThanOrEqual(2);
      expect(moves.every((op) => op.state === 'done' || op.id === interrupted.id)).toBe(true);
      for (const op of moves.filter((o) => o.id !== interrupted.id)) expect(await store!.cluster.claimOf(op.id)).toBe(next.id);
      const before = new Map(vms.map((vm) => [vm.id, Math.max(...sampler.generations(vm.id))]));
      for (const vm of vms) await checkCounter(sampler, vm.id, before.get(vm.id)!);
    } finally {
      await sampler.stop();
    }
    const last = sampler.samples.at(-1)!;
    const kept = last.owner[vms[0]!.id]!;
    for (const vm of vms) {
      expect(sampler.maxRunning(vm.id), `hosts running ${vm.id} at one sample`).toBe(1);
      expect(last.running[vm.id]).toEqual([kept]);
      expect(last.owner[vm.id]).toBe(kept);
      expect(last.qemus[vm.id]).toBe(1);
      expect(qemusOf(kept, vm.id)).toBe(1);
      expect((await store!.vms.get(vm.id)).state).toBe('running');
    }
    const states = Object.fromEntries((await store!.hosts.list({ limit: 10 })).items.map((h) => [h.name, h.state]));
    for (const name of ['h1', 'h2', 'h3']) expect(states[name]).toBe(name === kept ? 'online' : 'powered_off');
    expect([...ended.result.poweredOff].sort()).toEqual(['h1', 'h2', 'h3'].filter((h) => h !== kept));
    process.stdout.write(`leader failover (night plan): new leader ${takeoverMs} ms after SIGKILL; ${moves.length} moves; ${sampler.samples.length} samples (every ${sampler.meanIntervalMs()} ms on average), never two running\n`);
  }, 900_000);
});

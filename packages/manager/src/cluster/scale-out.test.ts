import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPostgresStore, type Store } from '../store/index.js';
import { startPostgres, type PostgresCluster } from '../store/testing/postgres.js';

/**
 * Three real manager processes on one PostgreSQL started here: one leader, a
 * leader killed with SIGKILL in the middle of an operation (another leads and
 * recovers it once), 200 concurrent versioned writes over the three, the same
 * operation asked of all three at once, events of one manager on another's
 * stream, and the shared CA (sealed in the store with the key file).
 */
const managerMain = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'main.js');
const root = path.join(os.tmpdir(), `drover-scale-out-${process.pid}-${randomBytes(3).toString('hex')}`);
const adminToken = randomBytes(24).toString('base64url');
const keyFile = path.join(root, 'secret.key');

interface ManagerProcess {
  child: ChildProcess;
  url: string;
  caFingerprint: string;
  dataDir: string;
}

let pg: PostgresCluster;
let connectionString: string;
let store: Store;
const managers: ManagerProcess[] = [];
const blackholeSockets = new Set<net.Socket>();
let blackhole: net.Server;

async function spawnManager(index: number): Promise<ManagerProcess> {
  const dataDir = path.join(root, `m${index}`);
  mkdirSync(dataDir, { recursive: true });
  const config = path.join(dataDir, 'manager.yaml');
  writeFileSync(
    config,
    [
      'listen: 127.0.0.1:0',
      `dataDir: ${dataDir}`,
      `store: ${connectionString}`,
      `adminToken: ${adminToken}`,
      'appliances: false',
      'webRoot: none',
      'heartbeatMs: 60000',
      'missesBeforeUnreachable: 1000',
      'agentTimeoutMs: 4000',
      'clusterIntervalMs: 300',
      `secretKeyFile: ${keyFile}`,
      `logLevel: ${process.env.DROVER_LOG_LEVEL ?? 'warn'}`,
    ].join('\n'),
  );
  const ready = path.join(dataDir, `ready-${Date.now()}.json`);
  const child = spawn(process.execPath, [managerMain, '--config', config, '--ready-file', ready], { stdio: ['ignore', 'inherit', 'inherit'] });
  for (const deadline = Date.now() + 60_000; !existsSync(ready); ) {
    if (child.exitCode !== null) throw new Error(`drover-manager ${index} exited with ${child.exitCode}`);
    if (Date.now() > deadline) throw new Error(`drover-manager ${index} did not become ready`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const info = JSON.parse(readFileSync(ready, 'utf8')) as { url: string; caFingerprint: string };
  return { child, url: info.url, caFingerprint: info.caFingerprint, dataDir };
}

async function api<T = Record<string, unknown>>(m: ManagerProcess, method: string, route: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: T }> {
  const response = await fetch(`${m.url}${route}`, {
    method,
    headers: { authorization: `Bearer ${adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, body: (await response.json().catch(() => ({}))) as T };
}

interface ManagersView {
  self: string;
  leader: { managerId: string; term: number } | null;
  managers: Array<{ id: string; alive: boolean; leader: boolean; url: string }>;
}

const live = () => managers.filter((m) => m.child.exitCode === null && m.child.signalCode === null);

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  for (const deadline = Date.now() + timeoutMs; ; ) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The leader every live manager agrees on (alive, leading, and the only one saying so on /healthz). */
async function agreedLeader(): Promise<ManagerProcess> {
  return until('one agreed leader', async () => {
    const views = await Promise.all(live().map((m) => api<ManagersView>(m, 'GET', '/api/v1/cluster/managers')));
    const ids = new Set(views.map((v) => v.body.leader?.managerId));
    if (ids.size !== 1) return undefined;
    const health = await Promise.all(live().map(async (m) => (await fetch(`${m.url}/healthz`)).json() as Promise<{ leader: boolean; manager: string }>));
    const leaders = health.filter((h) => h.leader);
    if (leaders.length !== 1 || leaders[0]!.manager !== [...ids][0]) return undefined;
    const view = views[0]!.body;
    if (!view.managers.find((m) => m.id === view.leader?.managerId)?.alive) return undefined;
    return live()[health.indexOf(leaders[0]!)];
  });
}

function makeCsr(name: string): string {
  const dir = path.join(root, `csr-${name}`);
  mkdirSync(dir, { recursive: true });
  execFileSync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', path.join(dir, 'key.pem')]);
  return execFileSync('openssl', ['req', '-new', '-config', '/dev/null', '-key', path.join(dir, 'key.pem'), '-subj', `/CN=${name}`], { encoding: 'utf8' });
}

function vmSpec(memoryMiB: number): Record<string, unknown> {
  return { image: '', imageId: '', diskSizeBytes: 1024 * 1024, cpus: 1, memoryMiB, antiAffinityGroups: [], hostInclude: [], hostExclude: [], forwards: [], cmdline: '' };
}

beforeAll(async () => {
  if (!existsSync(managerMain)) throw new Error(`${managerMain} is missing: run "npx tsc -b" first`);
  mkdirSync(root, { recursive: true });
  writeFileSync(keyFile, randomBytes(32).toString('hex'), { mode: 0o600 });
  pg = await startPostgres();
  connectionString = await pg.createDatabase('drover');
  store = await openPostgresStore({ connectionString });
  // A host that accepts connections and never answers: an operation on it hangs until the agent timeout.
  blackhole = net.createServer((socket) => {
    blackholeSockets.add(socket);
    socket.on('close', () => blackholeSockets.delete(socket));
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => blackhole.listen(0, '127.0.0.1', resolve));
  for (const i of [0, 1, 2]) managers.push(await spawnManager(i));
}, 180_000);

afterAll(async () => {
  for (const m of managers) {
    if (m.child.exitCode === null && m.child.signalCode === null) {
      m.child.kill('SIGKILL');
      await new Promise((r) => m.child.once('exit', r));
    }
  }
  for (const socket of blackholeSockets) socket.destroy();
  await new Promise((r) => blackhole?.close(r));
  await store?.close();
  await pg?.stop();
  rmSync(root, { recursive: true, force: true });
}, 60_000);

describe('three managers on one PostgreSQL', () => {
  it('elect exactly one leader, and every manager lists the three', async () => {
    const leader = await agreedLeader();
    const view = (await api<ManagersView>(managers[0]!, 'GET', '/api/v1/cluster/managers')).body;
    expect(view.managers.filter((m) => m.alive)).toHaveLength(3);
    expect(view.managers.filter((m) => m.leader)).toHaveLength(1);
    expect(view.managers.find((m) => m.leader)!.url).toBe(leader.url);
  });

  it('share one CA sealed in the store: each manager issues agent certificates of the same CA', async () => {
    expect(new Set(managers.map((m) => m.caFingerprint)).size).toBe(1);
    const sealed = await store.cluster.secret('ca/authority/ca.key');
    expect(sealed).toBeDefined();
    expect(sealed).not.toContain('PRIVATE KEY');
    const certs: string[] = [];
    for (const [i, m] of managers.entries()) {
      // The token is made on another manager than the one the host joins through.
      const token = (await api<{ token: string }>(managers[(i + 1) % 3]!, 'POST', '/api/v1/hosts/join-tokens', {})).body.token;
      const joined = await api<{ certPem: string; caPem: string }>(m, 'POST', '/api/v1/hosts/join', { token, csr: makeCsr(`node-${i}`), name: `node-${i}`, address: `https://127.0.0.${i + 10}:9000`, sanIps: [`127.0.0.${i + 10}`] });
      expect(joined.status).toBe(201);
      certs.push(joined.body.certPem);
      expect(new X509Certificate(joined.body.caPem).fingerprint256).toBe(m.caFingerprint);
    }
    const caPem = readFileSync(path.join(managers[0]!.dataDir, 'ca', 'authority', 'ca.crt'), 'utf8');
    for (const cert of certs) expect(new X509Certificate(cert).verify(new X509Certificate(caPem).publicKey)).toBe(true);
    // A host removed through one manager is in the CRL another manager hands out next.
    const removedHost = await store.hosts.getByName('node-0');
    expect((await fetch(`${managers[1]!.url}/api/v1/hosts/${removedHost.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${adminToken}` } })).status).toBe(204);
    const token = (await api<{ token: string }>(managers[0]!, 'POST', '/api/v1/hosts/join-tokens', {})).body.token;
    const later = await api<{ crlPem: string }>(managers[2]!, 'POST', '/api/v1/hosts/join', { token, csr: makeCsr('node-3'), name: 'node-3', address: 'https://127.0.0.13:9000', sanIps: ['127.0.0.13'] });
    expect(later.status).toBe(201);
    writeFileSync(path.join(root, 'crl.pem'), later.body.crlPem);
    const listed = [...execFileSync('openssl', ['crl', '-noout', '-text', '-in', path.join(root, 'crl.pem')], { encoding: 'utf8' }).matchAll(/Serial Number: ([0-9A-F]+)/g)].map((m) => m[1]!.replace(/^0+/, ''));
    expect(listed).toContain(removedHost.certSerial.replace(/^0+/, ''));
    for (const host of (await store.hosts.list({ limit: 100 })).items.filter((h) => h.name.startsWith('node-'))) await store.hosts.delete(host.id);
  });

  it('stream an event made on one manager to the clients of another', async () => {
    const vm = await store.vms.create({ name: 'event-vm', spec: vmSpec(64), state: 'stopped', owner: 'admin' });
    const controller = new AbortController();
    const response = await fetch(`${managers[1]!.url}/api/v1/events`, { headers: { authorization: `Bearer ${adminToken}` }, signal: controller.signal });
    const reader = response.body!.getReader();
    let text = '';
    await reader.read(); // ": connected"
    const edited = await api(managers[0]!, 'PATCH', `/api/v1/vms/${vm.id}`, { memoryMiB: 96 });
    expect(edited.status).toBe(200);
    const deadline = Date.now() + 15_000;
    while (!text.includes(`"id":"${vm.id}"`) && Date.now() < deadline) {
      const chunk = await Promise.race([reader.read(), new Promise<{ value?: undefined }>((r) => setTimeout(() => r({}), 1000))]);
      if (chunk.value) text += new TextDecoder().decode(chunk.value);
    }
    controller.abort();
    expect(text).toContain('event: vm.updated');
    expect(text).toMatch(new RegExp(`"id":"${vm.id}"[^\\n]*"memoryMiB":96`));
  });

  it('keep 200 concurrent versioned writes over the three managers from losing an update', async () => {
    const vms = await Promise.all(Array.from({ length: 10 }, (_, i) => store.vms.create({ name: `counter-${i}`, spec: vmSpec(64), state: 'stopped', owner: 'admin' })));
    let preconditionFailed = 0;
    let request = 0;
    const revsWon = new Map<string, number[]>();
    // Each write reads the VM, adds 1 MiB and writes it back with If-Match; a 412 reads again.
    const increment = async (vmId: string) => {
      for (;;) {
        const m = managers[request++ % 3]!;
        const current = await api<{ rev: number; spec: { memoryMiB: number } }>(m, 'GET', `/api/v1/vms/${vmId}`);
        const written = await api<{ rev: number }>(managers[request++ % 3]!, 'PATCH', `/api/v1/vms/${vmId}`, { memoryMiB: current.body.spec.memoryMiB + 1 }, { 'if-match': String(current.body.rev) });
        if (written.status === 412) {
          preconditionFailed += 1;
          continue;
        }
        expect(written.status).toBe(200);
        revsWon.set(vmId, [...(revsWon.get(vmId) ?? []), written.body.rev]);
        return;
      }
    };
    await Promise.all(vms.flatMap((vm) => Array.from({ length: 20 }, () => increment(vm.id))));
    for (const vm of vms) {
      const final = await store.vms.get(vm.id);
      expect((final.spec as { memoryMiB: number }).memoryMiB).toBe(64 + 20);
      expect(final.rev).toBe(vm.rev + 20);
      // Every winner got its own revision: no two writes were both accepted on the same one.
      expect(new Set(revsWon.get(vm.id)).size).toBe(20);
    }
    expect(preconditionFailed).toBeGreaterThan(0);
  }, 120_000);

  it('create one operation when three managers are asked for the same one at once', async () => {
    const vms = await Promise.all(Array.from({ length: 10 }, (_, i) => store.vms.create({ name: `doomed-${i}`, spec: vmSpec(64), state: 'stopped', owner: 'admin' })));
    const answers = await Promise.all(vms.flatMap((vm) => managers.map((m) => api<{ id?: string; state?: string }>(m, 'DELETE', `/api/v1/vms/${vm.id}?wait=true`))));
    for (const vm of vms) {
      const ops = (await store.operations.list({ limit: 100, filter: { targetId: vm.id } })).items;
      expect(ops.map((op) => op.kind)).toEqual(['vm.delete']);
      expect(ops[0]!.state).toBe('done');
      expect(await store.vms.tryGet(vm.id)).toBeUndefined();
      const deleted = (await store.events.since(0, 10_000)).filter((e) => e.type === 'vm.deleted' && e.objectId === vm.id);
      expect(deleted).toHaveLength(1);
    }
    // The others were told it was busy (409) or already gone (404).
    expect(answers.filter((a) => a.status === 200)).toHaveLength(10);
    expect(answers.filter((a) => a.status !== 200).every((a) => a.status === 409 || a.status === 404)).toBe(true);
  }, 60_000);

  it('move the lead within seconds when the leader is killed with -9, and recover its operation once', async () => {
    const leader = await agreedLeader();
    const address = blackhole.address() as net.AddressInfo;
    const host = await store.hosts.create({
      name: 'silent-host',
      address: `https://127.0.0.1:${address.port}`,
      state: 'online',
      certSerial: '01',
      certFingerprint: 'AA',
      capacity: { cpus: 8, memoryMiB: 8192 },
    });
    const vm = await store.vms.create({ name: 'interrupted', spec: vmSpec(64), state: 'stopped', hostId: host.id, owner: 'admin' });
    const started = await api<{ id: string; state: string; phase: string }>(leader, 'POST', `/api/v1/vms/${vm.id}/start`, {});
    expect(started.status).toBe(202);
    expect(started.body.phase).toBe('prepare');
    const leaderId = await store.cluster.claimOf(started.body.id);
    leader.child.kill('SIGKILL');
    await new Promise((r) => (leader.child.exitCode !== null || leader.child.signalCode !== null ? r(undefined) : leader.child.once('exit', r)));
    const killedAt = Date.now();
    const next = await agreedLeader();
    const takeoverMs = Date.now() - killedAt;
    expect(next).not.toBe(leader);
    const view = (await api<ManagersView>(next, 'GET', '/api/v1/cluster/managers')).body;
    expect(view.managers.find((m) => m.id === leaderId)?.alive ?? false).toBe(false);
    expect(view.managers.filter((m) => m.alive)).toHaveLength(2);
    // The new leader adopts the operation and recovers it: the host does not answer, so it is compensated.
    const ended = await until('the interrupted operation to end', async () => {
      const op = await store.operations.get(started.body.id);
      return ['done', 'failed', 'rolled_back'].includes(op.state) ? op : undefined;
    }, 60_000);
    expect(ended.state).toBe('rolled_back');
    expect(ended.journal.filter((entry) => entry.phase === 'recover')).toHaveLength(1);
    expect(await store.cluster.claimOf(ended.id)).toBe(view.self === view.leader?.managerId ? view.self : view.leader?.managerId);
    const final = await store.vms.get(vm.id);
    expect(final.state).toBe('stopped');
    expect(await store.reservations.list({ limit: 10 }).then((p) => p.items.filter((r) => r.vmId === vm.id))).toHaveLength(0);
    const ends = (await store.events.since(0, 10_000)).filter((e) => e.objectId === ended.id && (e.data as { state?: string }).state === 'rolled_back');
    expect(ends).toHaveLength(1);
    process.stdout.write(`scale-out: leader takeover after SIGKILL seen in ${takeoverMs} ms\n`);
  }, 120_000);
});

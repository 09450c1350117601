import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { rejectionOf } from '@drover/core';
import WebSocket from 'ws';
import { startAgent, type RunningAgent } from '@drover/agent';
import { freePort, tempDir, testAgentConfig } from '@drover/agent/testing';
import { defaultApplianceCacheDir } from '@drover/appliances';
import { defaultManagerConfig } from './config.js';
import { startManager, type RunningManager } from './manager.js';


/**
 * The control plane on real parts: a manager on its embedded SQLite store and
 * a real agent that joins it with a one-time token and from then on answers
 * only over mutual TLS; VMs are real QEMU guests.
 */
const dataDir = tempDir('manager');
const agentDir = tempDir('manager-agent');
let manager: RunningManager;
let agent: RunningAgent;

async function api<T = unknown>(method: string, route: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: T }> {
  const response = await fetch(`${manager.url}${route}`, {
    method,
    headers: { authorization: `Bearer ${manager.adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  const text = await response.text();
  return { status: response.status, body: (text && (response.headers.get('content-type') ?? '').includes('json') ? JSON.parse(text) : text) as T };
}

beforeAll(async () => {
  manager = await startManager({ ...defaultManagerConfig(dataDir), listen: '127.0.0.1:0', heartbeatMs: 500, applianceCacheDir: defaultApplianceCacheDir() });
  const join = await api<{ token: string; caFingerprint: string }>('POST', '/api/v1/hosts/join-tokens', {});
  expect(join.status).toBe(201);
  agent = await startAgent(testAgentConfig(agentDir, { listen: `127.0.0.1:${await freePort()}`, hostName: 'h1' }), {
    join: { managerUrl: manager.url, token: join.body.token },
  });
  const deadline = Date.now() + 30_000;
  while ((await api<{ items: Array<{ state: string }> }>('GET', '/api/v1/hosts')).body.items[0]?.state !== 'online') {
    if (Date.now() > deadline) throw new Error('host did not come online');
    await new Promise((r) => setTimeout(r, 100));
  }
});

afterAll(async () => {
  try {
    const vms = await api<{ items: Array<{ id: string; state: string }> }>('GET', '/api/v1/vms');
    for (const vm of vms.body.items) if (['running', 'paused'].includes(vm.state)) await api('POST', `/api/v1/vms/${vm.id}/force-off?wait=true`, {});
  } finally {
    await agent?.close();
    await manager?.close();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(agentDir, { recursive: true, force: true });
  }
});

describe('manager with a joined agent', () => {
  it('speaks mutual TLS only with the agent once it joined', async () => {
    expect(agent.joined).toBe(true);
    expect(agent.url.startsWith('https://')).toBe(true);
    // Without a client certificate the agent refuses at the TLS layer.
    await expect(fetch(`${agent.url}/v1/host`)).rejects.toThrow();
    const hosts = await api<{ items: Array<{ name: string; capacity: { cpus: number } }> }>('GET', '/api/v1/hosts');
    expect(hosts.body.items.map((h) => h.name)).toEqual(['h1']);
    expect(hosts.body.items[0]!.capacity.cpus).toBeGreaterThan(0);
  });

  it('creates, starts, serves, stops and deletes a web VM through the API', async () => {
    const port = await freePort();
    const created = await api<{ id: string; state: string }>('POST', '/api/v1/vms', { name: 'web-a', image: 'web', memoryMiB: 128, forwards: [{ hostPort: port, guestPort: 80 }] });
    expect(created.status).toBe(201);
    expect(created.body.state).toBe('defined');
    const start = await api<{ id: string; state: string }>('POST', `/api/v1/vms/web-a/start`, {});
    expect(start.status).toBe(202);
    const op = await api<{ state: string; error: unknown }>('GET', `/api/v1/operations/${start.body.id}`);
    expect(['pending', 'running', 'done']).toContain(op.body.state);
    const done = await waitOp(start.body.id);
    expect(done.state).toBe('done');
    const vm = await api<{ state: string; hostName: string }>('GET', '/api/v1/vms/web-a');
    expect(vm.body).toMatchObject({ state: 'running', hostName: 'h1' });
    await waitForSerial('web-a', /DROVER-READY appliance=web/);
    const page = await (await fetch(`http://127.0.0.1:${port}/`)).text();
    expect(page).toContain('web-a');

    const stop = await api<{ state: string }>('POST', '/api/v1/vms/web-a/stop?wait=true', { timeoutMs: 30_000 });
    expect(stop.status).toBe(200);
    expect(stop.body.state).toBe('done');
    expect((await api<{ state: string }>('GET', '/api/v1/vms/web-a')).body.state).toBe('stopped');
    const del = await api<{ state: string }>('DELETE', '/api/v1/vms/web-a?wait=true');
    expect(del.body.state).toBe('done');
    expect((await api('GET', '/api/v1/vms/web-a')).status).toBe(404);
  });

  it('refuses bad requests with the error shape and creates nothing', async () => {
    const before = (await api<{ items: unknown[] }>('GET', '/api/v1/vms')).body.items.length;
    for (const body of [{ name: 'x', image: 'web', colour: 1 }, { name: 'x', image: 'nope' }, { name: '../x', image: 'web' }, { name: 'x', image: 'web', cpus: -1 }]) {
      const answer = await api<{ error: { code: string; message: string } }>('POST', '/api/v1/vms', body);
      expect(answer.status).toBeGreaterThanOrEqual(400);
      expect(answer.status).toBeLessThan(500);
      expect(typeof answer.body.error.message).toBe('string');
    }
    expect((await api<{ items: unknown[] }>('GET', '/api/v1/vms')).body.items.length).toBe(before);
    expect((await fetch(`${manager.url}/api/v1/vms`)).status).toBe(401);
  });

  it('replays an Idempotency-Key and refuses a stale If-Match', async () => {
    const key = 'key-0000-test-1';
    const first = await api<{ id: string; rev: number }>('POST', '/api/v1/vms', { name: 'idem', image: 'counter' }, { 'idempotency-key': key });
    const second = await api<{ id: string }>('POST', '/api/v1/vms', { name: 'idem', image: 'counter' }, { 'idempotency-key': key });
    expect(second.status).toBe(201);
    expect(second.body.id).toBe(first.body.id);
    const edit = await api('PATCH', '/api/v1/vms/idem', { cpus: 2 }, { 'if-match': String(first.body.rev) });
    expect(edit.status).toBe(200);
    const stale = await api('PATCH', '/api/v1/vms/idem', { cpus: 1 }, { 'if-match': String(first.body.rev) });
    expect(stale.status).toBe(412);
    expect((await api('DELETE', '/api/v1/vms/idem?wait=true')).status).toBe(200);
  });

  it('rotates a host certificate: the new one serves, the old serial is revoked, the host stays online', async () => {
    const before = await api<{ items: Array<{ id: string; certExpiresAt: string }> }>('GET', '/api/v1/hosts');
    const host = before.body.items[0]!;
    const serialBefore = (await manager.store.hosts.get(host.id)).certSerial;
    const rotate = await api<{ state: string; result: { serial: string; revoked: string } }>('POST', `/api/v1/hosts/${host.id}/rotate-certificate?wait=true`, {});
    expect(rotate.body.state).toBe('done');
    expect(rotate.body.result.revoked).toBe(serialBefore);
    expect(rotate.body.result.serial).not.toBe(serialBefore);
    // The manager still reaches the agent over a new connection (the agent now presents the new certificate).
    const rotatedAt = new Date().toISOString();
    for (const deadline = Date.now() + 20_000; ; ) {
      const hosts = await api<{ items: Array<{ state: string; lastHeartbeatAt: string | null }> }>('GET', '/api/v1/hosts');
      const h = hosts.body.items[0]!;
      if (h.state === 'online' && h.lastHeartbeatAt && h.lastHeartbeatAt > rotatedAt) break;
      if (Date.now() > deadline) throw new Error(`no heartbeat after the rotation: ${JSON.stringify(h)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  it('restarts autostart VMs when their host comes back', async () => {
    const created = await api<{ id: string }>('POST', '/api/v1/vms', { name: 'auto', image: 'counter', memoryMiB: 128, autostart: true });
    expect((await api<{ state: string }>('POST', `/api/v1/vms/${created.body.id}/start?wait=true`, {})).body.state).toBe('done');
    // The host goes away with its VMs (agent stopped, QEMU killed), then comes back.
    const pid = (await agent.vms.get(created.body.id)).pid!;
    await agent.close();
    process.kill(pid, 'SIGKILL');
    for (const deadline = Date.now() + 30_000; (await api<{ items: Array<{ state: string }> }>('GET', '/api/v1/hosts')).body.items[0]!.state !== 'unreachable'; ) {
      if (Date.now() > deadline) throw new Error('host never became unreachable');
      await new Promise((r) => setTimeout(r, 100));
    }
    agent = await startAgent(testAgentConfig(agentDir, { listen: agent.url.replace('https://', ''), hostName: 'h1' }));
    for (const deadline = Date.now() + 60_000; ; ) {
      const vm = await api<{ state: string }>('GET', '/api/v1/vms/auto');
      const onHost = await agent.vms.get(created.body.id);
      if (vm.body.state === 'running' && onHost.state === 'running' && onHost.pid !== pid) break;
      if (Date.now() > deadline) throw new Error(`autostart did not happen: ${vm.body.state} / ${onHost.state}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    expect((await api<{ state: string }>('POST', '/api/v1/vms/auto/force-off?wait=true', {})).body.state).toBe('done');
  });

  it('imports an image in a step of its own on a host without it; later starts bring their volumes in the start request', async () => {
    const second = await api<{ id: string }>('POST', '/api/v1/vms', { name: 'second', image: 'counter', memoryMiB: 128 });
    expect((await api<{ state: string }>('POST', `/api/v1/vms/${second.body.id}/start?wait=true`, {})).body.state).toBe('done');
    const starts = (await manager.store.operations.list({ limit: 1000, filter: { kind: 'vm.start' } })).items.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    const phases = (op: (typeof starts)[number]) => op.journal.map((entry) => entry.phase);
    // The host's first start: refused by the host for the missing image (nothing started), imported, booted.
    expect(phases(starts[0]!)).toEqual(['prepare', 'boot', 'import', 'boot', 'confirm']);
    expect(starts[0]!.journal[2]!.note).toMatch(/lacks .*kernel/);
    // This one: its clones made by the start request itself, one request to the host.
    expect(phases(starts.at(-1)!)).toEqual(['prepare', 'boot', 'confirm']);
    expect((await agent.vms.get(second.body.id)).state).toBe('running');
    expect((await api<{ state: string }>('POST', '/api/v1/vms/second/force-off?wait=true', {})).body.state).toBe('done');
  });

  it('refuses (404) an action on a VM deleted since the request read it, creating no operation', async () => {
    const created = await api<{ id: string }>('POST', '/api/v1/vms', { name: 'gone', image: 'counter' });
    const stale = await manager.store.vms.get(created.body.id);
    expect((await api('DELETE', `/api/v1/vms/${stale.id}?wait=true`)).status).toBe(200);
    // Another manager's request read the VM before that delete ended: its checks passed on what it read.
    const host = (await manager.store.hosts.list({ limit: 1 })).items[0]!;
    const find = vi.spyOn(manager.vms, 'find');
    try {
      find.mockResolvedValue(stale);
      expect(await rejectionOf(manager.vms.remove(stale.id, 'admin'))).toMatchObject({ code: 'not_found' });
      find.mockResolvedValue({ ...stale, state: 'running', hostId: host.id });
      expect(await rejectionOf(manager.vms.action(stale.id, 'pause', {}, 'admin'))).toMatchObject({ code: 'not_found' });
    } finally {
      find.mockRestore();
    }
    const ops = (await manager.store.operations.list({ limit: 100, filter: { targetId: stale.id } })).items;
    expect(ops.map((op) => op.kind)).toEqual(['vm.delete']);
  });

  it('streams changes over SSE and WebSocket, and refuses to cancel an ended operation', async () => {
    const ws = new WebSocket(`${manager.url.replace('http', 'ws')}/api/v1/events/ws`, { headers: { authorization: `Bearer ${manager.adminToken}` } });
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const seen: Array<{ type: string; data: { name?: string } }> = [];
    ws.on('message', (data: Buffer) => seen.push(JSON.parse(data.toString())));
    const sse = await fetch(`${manager.url}/api/v1/events`, { headers: { authorization: `Bearer ${manager.adminToken}` } });
    const reader = sse.body!.getReader();
    const created = await api<{ id: string }>('POST', '/api/v1/vms', { name: 'watched', image: 'counter' });
    let text = '';
    for (const deadline = Date.now() + 10_000; !text.includes('"name":"watched"') && Date.now() < deadline; ) text += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    expect(text).toMatch(/event: vm\.updated/);
    for (const deadline = Date.now() + 10_000; !seen.some((e) => e.type === 'vm.updated' && e.data.name === 'watched') && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 50));
    ws.close();
    expect(seen.some((e) => e.type === 'vm.updated' && e.data.name === 'watched')).toBe(true);
    const del = await api<{ id: string; state: string }>('DELETE', `/api/v1/vms/${created.body.id}?wait=true`);
    expect(del.body.state).toBe('done');
    expect((await api('POST', `/api/v1/operations/${del.body.id}/cancel`, {})).status).toBe(409);
  });

  it('publishes an OpenAPI document listing the routes', async () => {
    const doc = await api<{ paths: Record<string, unknown> }>('GET', '/api/v1/openapi.json');
    expect(Object.keys(doc.body.paths)).toEqual(expect.arrayContaining(['/api/v1/vms', '/api/v1/vms/{id}/start', '/api/v1/hosts']));
  });
});

async function waitOp(id: string): Promise<{ state: string; error: unknown }> {
  for (;;) {
    const op = await api<{ state: string; error: unknown }>('GET', `/api/v1/operations/${id}`);
    if (!['pending', 'running'].includes(op.body.state)) return op.body;
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function waitForSerial(vm: string, pattern: RegExp): Promise<void> {
  const deadline = Date.now() + 90_000;
  for (;;) {
    const log = await api<string>('GET', `/api/v1/vms/${vm}/console/serial/log`);
    if (pattern.test(String(log.body))) return;
    if (Date.now() > deadline) throw new Error(`no ${pattern} on the console of ${vm}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/* eslint-disable @typescript-eslint/no-explicit-any -- API answers are read as loose JSON in these tests */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '@drover/agent';
import { freePort, tempDir, testAgentConfig } from '@drover/agent/testing';
import { defaultApplianceCacheDir } from '@drover/appliances';
import type { Operation } from '@drover/api';
import { defaultManagerConfig } from '../config.js';
import { startManager, type RunningManager } from '../manager.js';

// Export on one manager (real agent, real QEMU guests: the web and db
// appliances, booted once and stopped) → download → import on a second
// manager: the same manifest, and each disk's guest-visible bytes equal those
// of the VM's disk on its host (its thin clone read through its base).

const dir = tempDir('packages-export');
// The agent's own directory: tempDir makes it reachable for the QEMU account.
const agentDir = tempDir('packages-export-agent');
let a: RunningManager;
let b: RunningManager;
let agent: RunningAgent;

async function api<T = any>(m: RunningManager, method: string, route: string, body?: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(`${m.url}${route}`, { method, headers: { authorization: `Bearer ${m.adminToken}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}) });
  const text = await response.text();
  return { status: response.status, body: (text && (response.headers.get('content-type') ?? '').includes('json') ? JSON.parse(text) : text) as T };
}

async function waitForSerial(vm: string, pattern: RegExp, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const log = await api<string>(a, 'GET', `/api/v1/vms/${vm}/console/serial/log`);
    if (typeof log.body === 'string' && pattern.test(log.body)) return;
    if (Date.now() > deadline) throw new Error(`no ${pattern} on the console of ${vm}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** The sha256 of what a guest sees on a qcow2 disk (through its backing chain). */
function guestBytesSha(file: string): string {
  const raw = path.join(dir, `raw-${createHash('sha256').update(file).digest('hex').slice(0, 8)}`);
  execFileSync('qemu-img', ['convert', '-q', '-U', '-f', 'qcow2', '-O', 'raw', file, raw]);
  const sum = createHash('sha256').update(readFileSync(raw)).digest('hex');
  rmSync(raw, { force: true });
  return sum;
}

function findFile(root: string, name: string): string | undefined {
  for (const entry of readdirSync(root, { withFileTypes: true })) {
    const full = path.join(root, entry.name);
    if (entry.isDirectory()) {
      const found = findFile(full, name);
      if (found) return found;
    } else if (entry.name === name) return full;
  }
  return undefined;
}

beforeAll(async () => {
  a = await startManager({ ...defaultManagerConfig(path.join(dir, 'a')), listen: '127.0.0.1:0', heartbeatMs: 500, applianceCacheDir: defaultApplianceCacheDir() }, { vmcast: { tickMs: 0 } });
  b = await startManager({ ...defaultManagerConfig(path.join(dir, 'b')), listen: '127.0.0.1:0', appliances: false }, { vmcast: { tickMs: 0 } });
  const join = await api(a, 'POST', '/api/v1/hosts/join-tokens', {});
  agent = await startAgent(testAgentConfig(agentDir, { listen: `127.0.0.1:${await freePort()}`, hostName: 'h1' }), { join: { managerUrl: a.url, token: join.body.token } });
  const deadline = Date.now() + 30_000;
  while ((await api(a, 'GET', '/api/v1/hosts')).body.items[0]?.state !== 'online') {
    if (Date.now() > deadline) throw new Error('host did not come online');
    await new Promise((r) => setTimeout(r, 100));
  }
}, 180_000);

afterAll(async () => {
  try {
    const vms = await api(a, 'GET', '/api/v1/vms');
    for (const vm of vms.body.items ?? []) if (['running', 'paused'].includes(vm.state)) await api(a, 'POST', `/api/v1/vms/${vm.id}/force-off?wait=true`, {});
  } finally {
    await agent?.close();
    await a?.close();
    await b?.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(agentDir, { recursive: true, force: true });
  }
});

describe('package export', () => {
  it('exports stopped VMs on one manager and imports them on another with the same manifest and disk contents', async () => {
    for (const [name, image] of [['db1', 'db'], ['web1', 'web']] as const) {
      const created = await api(a, 'POST', '/api/v1/vms', { name, image, memoryMiB: 128, labels: { tier: image }, cmdline: `drover.role=${image}` });
      expect(created.status, JSON.stringify(created.body)).toBeLessThan(300);
      const started = await api<Operation>(a, 'POST', `/api/v1/vms/${name}/start?wait=true`, {});
      expect(started.body.state, JSON.stringify(started.body)).toBe('done');
    }
    // Running VMs are refused: their disks change under the copy.
    const running = await api(a, 'POST', '/api/v1/packages/export', { name: 'pair', version: '1', vms: ['db1', 'web1'] });
    expect(running.status).toBe(409);
    expect(running.body.error.message).toMatch(/VM "db1" is running; only stopped VMs can be exported/);
    // Without a publisher key there is nothing to sign with.
    for (const name of ['db1', 'web1']) {
      await waitForSerial(name, /DROVER-READY/);
      expect((await api<Operation>(a, 'POST', `/api/v1/vms/${name}/stop?wait=true`, {})).body.state).toBe('done');
    }
    const unsigned = await api(a, 'POST', '/api/v1/packages/export', { name: 'pair', version: '1', vms: ['db1', 'web1'] });
    expect(unsigned.status).toBe(409);
    expect(unsigned.body.error.message).toMatch(/no active publisher key/);
    const key = (await api(a, 'POST', '/api/v1/vmcast/keys', { name: 'site-a' })).body;

    const exported = await api<Operation>(a, 'POST', '/api/v1/packages/export?wait=true', { name: 'pair', version: '1', description: 'web and db', vms: ['db1', 'web1'] });
    expect(exported.body.state, JSON.stringify(exported.body)).toBe('done');
    const pkgA = (exported.body.result as any).package;
    expect(pkgA.source).toBe('export');
    expect(pkgA.signerKeyId).toBe(key.keyId);
    const m = pkgA.manifest;
    expect(m.vms.map((v: any) => v.name)).toEqual(['db1', 'web1']);
    expect(m.vms[0]).toMatchObject({ cpus: 1, memoryMiB: 128, labels: { tier: 'db' }, guest: { cmdline: 'drover.role=db' }, boot: { method: 'appliance', cmdline: expect.stringContaining('console=ttyS0') } });
    expect(m.vms[0].disks.map((d: any) => d.role)).toEqual(['root', 'data']);
    expect(m.vms[1].disks.map((d: any) => d.role)).toEqual(['root']);
    // One kernel and one initramfs serve both appliances.
    expect(m.vms[0].boot.kernel).toBe(m.vms[1].boot.kernel);

    const file = await fetch(`${a.url}/api/v1/packages/${pkgA.id}/file`, { headers: { authorization: `Bearer ${a.adminToken}` } });
    const bytes = Buffer.from(await file.arrayBuffer());
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(pkgA.fileSha256);
    // The standalone disks have no backing file.
    const names = execFileSync('tar', ['-tf', '-'], { input: bytes, encoding: 'utf8' }).trim().split('\n');
    expect(names[0]).toBe('manifest.json');
    expect(names.slice(-2)).toEqual(['SHA256SUMS', 'SHA256SUMS.sig']);

    expect((await api(b, 'POST', '/api/v1/packages/trusted-keys', { name: 'site-a', publicKey: key.publicKey })).status).toBe(201);
    const imported = await fetch(`${b.url}/api/v1/packages/import/upload?wait=true`, { method: 'POST', headers: { authorization: `Bearer ${b.adminToken}`, 'content-type': 'application/vnd.drover.eva+tar' }, body: bytes });
    const op = (await imported.json()) as Operation;
    expect(op.state, JSON.stringify(op)).toBe('done');
    const pkgB = (await api(b, 'GET', '/api/v1/packages/pair:1')).body;
    expect(pkgB.manifest).toEqual(m);

    // Disk contents: what each VM's guest saw on its host equals the imported standalone disk.
    const vms = (await api(a, 'GET', '/api/v1/vms')).body.items as Array<{ id: string; name: string }>;
    for (const vm of m.vms) {
      const id = vms.find((v) => v.name === vm.name)!.id;
      for (const disk of vm.disks) {
        const onHost = findFile(agentDir, `${id}.${disk.role}.qcow2`)!;
        expect(onHost, `${vm.name} ${disk.role}`).toBeTruthy();
        const image = (await api(b, 'GET', `/api/v1/images/${pkgB.images[disk.file]}`)).body;
        const inLibrary = path.join(dir, 'b', 'library', `${image.name}-${image.version}.qcow2`);
        const info = JSON.parse(execFileSync('qemu-img', ['info', '-f', 'qcow2', '--output=json', inLibrary], { encoding: 'utf8' }));
        expect(info['backing-filename'], inLibrary).toBeUndefined();
        expect(guestBytesSha(inLibrary), `${vm.name} ${disk.role}`).toBe(guestBytesSha(onHost));
      }
    }
  }, 600_000);
});

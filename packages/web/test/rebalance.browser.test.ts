/* eslint-disable @typescript-eslint/no-explicit-any -- loosely typed JSON answers of the API, read field by field */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startAgent, type RunningAgent } from '@drover/agent';
import { freePort, tempDir, testAgentConfig } from '@drover/agent/testing';
import { defaultApplianceCacheDir } from '@drover/appliances';
import { defaultManagerConfig, startManager, type RunningManager } from '@drover/manager';

/**
 * The Hosts page's Rebalance control in real headless Chromium against a real
 * manager and two real agents on this machine (h1, h2, one shared pool, 1 GiB
 * each): two small VMs run on h1, the preview shows one moving to h2 and
 * nothing moves; "Rebalance now" live-migrates it and the load is even.
 */
const webDir = path.resolve(import.meta.dirname, '..');
const distDir = path.join(webDir, 'dist');
const repoRoot = path.resolve(webDir, '../..');
const shots = process.env.DROVER_SCREENSHOTS ?? path.join(repoRoot, 'test-results', 'web-console');
const chromiumPath = process.env.DROVER_CHROMIUM ?? '/usr/bin/chromium';

let manager: RunningManager | undefined;
const agents: RunningAgent[] = [];
const dirs: string[] = [];
let browser: Browser | undefined;
let page: Page;

async function api<T = any>(method: string, route: string, body?: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(`${manager!.url}${route}`, {
    method,
    headers: { authorization: `Bearer ${manager!.adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  return { status: response.status, body: (text && (response.headers.get('content-type') ?? '').includes('json') ? JSON.parse(text) : text) as T };
}

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 120_000): Promise<T> {
  for (const deadline = Date.now() + timeoutMs; ; ) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function ensureBuilt(): void {
  const newest = (dir: string): number =>
    readdirSync(dir, { withFileTypes: true }).reduce((max, entry) => {
      const full = path.join(dir, entry.name);
      return Math.max(max, entry.isDirectory() ? newest(full) : statSync(full).mtimeMs);
    }, 0);
  const index = path.join(distDir, 'index.html');
  const sources = Math.max(newest(path.join(webDir, 'src')), statSync(path.join(webDir, 'index.html')).mtimeMs, statSync(path.join(webDir, 'vite.config.ts')).mtimeMs);
  if (existsSync(index) && statSync(index).mtimeMs >= sources) return;
  const vite = path.join(repoRoot, 'node_modules', 'vite', 'bin', 'vite.js');
  const build = spawnSync(process.execPath, [vite, 'build', '--logLevel', 'warn'], { cwd: webDir, encoding: 'utf8', env: { ...process.env, NODE_ENV: 'production' } });
  if (build.status !== 0) throw new Error(`vite build failed:\n${build.stdout}\n${build.stderr}`);
}

async function hostsOfVms(): Promise<string[]> {
  const vms = await api('GET', '/api/v1/vms?limit=100');
  return vms.body.items.map((vm: any) => vm.hostName).sort();
}

beforeAll(async () => {
  ensureBuilt();
  mkdirSync(shots, { recursive: true });
  const dataDir = tempDir('web-rebalance-manager');
  const sharedDir = tempDir('web-rebalance-shared');
  dirs.push(dataDir, sharedDir);
  manager = await startManager({ ...defaultManagerConfig(dataDir), listen: '127.0.0.1:0', heartbeatMs: 500, applianceCacheDir: defaultApplianceCacheDir(), webRoot: distDir });
  for (const hostName of ['h1', 'h2']) {
    const stateDir = tempDir(`web-rebalance-${hostName}`);
    dirs.push(stateDir);
    const join = await api<{ token: string }>('POST', '/api/v1/hosts/join-tokens', {});
    const config = testAgentConfig(stateDir, { listen: `127.0.0.1:${await freePort()}`, hostName, capacity: { cpus: 2, memoryMiB: 1024 }, pools: [{ name: 'default', path: sharedDir, shared: true }] });
    agents.push(await startAgent(config, { join: { managerUrl: manager.url, token: join.body.token } }));
  }
  await until('both hosts online', async () => {
    const hosts = await api('GET', '/api/v1/hosts');
    return hosts.body.items.length === 2 && hosts.body.items.every((h: any) => h.state === 'online');
  });
  const importDir = path.join(dataDir, 'import');
  mkdirSync(importDir, { recursive: true });
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(importDir, 'tiny.qcow2'), '16M']);
  expect((await api('POST', '/api/v1/images?wait=true', { name: 'tiny', source: { path: path.join(importDir, 'tiny.qcow2') } })).body.state).toBe('done');
  // Both on h1: h2 is in maintenance while they start.
  await api('POST', '/api/v1/hosts/h2/maintenance', {});
  for (const name of ['vm1', 'vm2']) {
    expect((await api('POST', '/api/v1/vms', { name, image: 'tiny', memoryMiB: 64 })).status).toBe(201);
    expect((await api('POST', `/api/v1/vms/${name}/start?wait=true`, {})).body.state).toBe('done');
  }
  expect((await api('POST', '/api/v1/hosts/h2/restore?wait=true', {})).body.state).toBe('done');
  expect(await hostsOfVms()).toEqual(['h1', 'h1']);

  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await (await browser.newContext({ viewport: { width: 1280, height: 1000 } })).newPage();
  page.setDefaultTimeout(30_000);
  await page.goto(`${manager.url}/hosts`);
  await page.getByLabel('Admin token').fill(manager.adminToken);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Hosts' }).waitFor();
}, 300_000);

afterAll(async () => {
  await browser?.close().catch(() => undefined);
  try {
    if (manager) {
      const vms = await api('GET', '/api/v1/vms?limit=100').catch(() => undefined);
      for (const vm of vms?.body.items ?? []) await api('POST', `/api/v1/vms/${vm.id}/force-off?wait=true`, {}).catch(() => undefined);
    }
  } finally {
    for (const agent of agents) await agent.close().catch(() => undefined);
    await manager?.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  }
}, 300_000);

describe('Hosts page: Rebalance', () => {
  it('previews the plan without moving anything, refuses a bad threshold, then rebalances', async () => {
    const panel = page.getByRole('region', { name: 'Rebalance' });
    await panel.getByLabel('Threshold (%)').fill('150');
    await panel.getByRole('button', { name: 'Preview rebalance' }).click();
    const alert = panel.getByRole('alert');
    await alert.waitFor();
    expect(await alert.textContent()).toMatch(/threshold/);
    expect(await panel.getByTestId('rebalance-plan').count()).toBe(0);

    await panel.getByLabel('Threshold (%)').fill('5');
    await panel.getByRole('button', { name: 'Preview rebalance' }).click();
    const plan = panel.getByTestId('rebalance-plan');
    await plan.waitFor();
    expect(await plan.locator('p').textContent()).toBe('Imbalance 25.0 % → 0.0 % (threshold 5.0 %): 1 move(s).');
    const row = plan.locator('tbody tr');
    expect(await row.count()).toBe(1);
    expect(await row.locator('td').nth(1).textContent()).toBe('h1');
    expect(await row.locator('td').nth(2).textContent()).toBe('h2');
    await page.screenshot({ path: path.join(shots, 'hosts-rebalance-plan.png') });
    expect(await hostsOfVms()).toEqual(['h1', 'h1']);

    await panel.getByRole('button', { name: 'Rebalance now' }).click();
    await until('a VM on each host', async () => JSON.stringify(await hostsOfVms()) === JSON.stringify(['h1', 'h2']), 180_000);
    const ops = await api('GET', '/api/v1/operations?limit=100');
    const run = ops.body.items.find((op: any) => op.kind === 'cluster.rebalance');
    expect(run).toBeDefined();
    const ended = await until('the rebalance operation to end', async () => {
      const op = await api('GET', `/api/v1/operations/${run.id}`);
      return ['pending', 'running'].includes(op.body.state) ? undefined : op.body;
    });
    expect(ended).toMatchObject({ state: 'done', result: { planned: 1, moved: 1, failed: [] } });
  }, 400_000);
});

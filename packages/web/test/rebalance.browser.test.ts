/* eslint-disable @typescript-eslint/no-explicit-any -- loosely typed JSON answers of the API, read field by field */
import { rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import type { RunningAgent } from '@drover/agent';
import { tempDir } from '@drover/agent/testing';
import { defaultApplianceCacheDir } from '@drover/appliances';
import { defaultManagerConfig, startManager, type RunningManager } from '@drover/manager';
import { distDir, importTinyImage, joinSharedPoolHosts, launchChromium, logInWithToken, managerApi, prepareConsole, shots, until } from './harness.js';

/**
 * The Hosts page's Rebalance control in real headless Chromium against a real
 * manager and two real agents on this machine (h1, h2, one shared pool, 1 GiB
 * each): two small VMs run on h1, the preview shows one moving to h2 and
 * nothing moves; "Rebalance now" live-migrates it and the load is even.
 */

let manager: RunningManager | undefined;
const agents: RunningAgent[] = [];
const dirs: string[] = [];
let browser: Browser | undefined;
let page: Page;
const api = managerApi(() => manager);

async function hostsOfVms(): Promise<string[]> {
  const vms = await api('GET', '/api/v1/vms?limit=100');
  return vms.body.items.map((vm: any) => vm.hostName).sort();
}

beforeAll(async () => {
  prepareConsole();
  const dataDir = tempDir('web-rebalance-manager');
  const sharedDir = tempDir('web-rebalance-shared');
  dirs.push(dataDir, sharedDir);
  manager = await startManager({ ...defaultManagerConfig(dataDir), listen: '127.0.0.1:0', heartbeatMs: 500, applianceCacheDir: defaultApplianceCacheDir(), webRoot: distDir });
  await joinSharedPoolHosts(api, manager, { prefix: 'web-rebalance', hostNames: ['h1', 'h2'], sharedDir, dirs, agents, config: { capacity: { cpus: 2, memoryMiB: 1024 } } });
  await importTinyImage(api, dataDir);
  // Both on h1: h2 is in maintenance while they start.
  await api('POST', '/api/v1/hosts/h2/maintenance', {});
  for (const name of ['vm1', 'vm2']) {
    expect((await api('POST', '/api/v1/vms', { name, image: 'tiny', memoryMiB: 64 })).status).toBe(201);
    expect((await api('POST', `/api/v1/vms/${name}/start?wait=true`, {})).body.state).toBe('done');
  }
  expect((await api('POST', '/api/v1/hosts/h2/restore?wait=true', {})).body.state).toBe('done');
  expect(await hostsOfVms()).toEqual(['h1', 'h1']);

  ({ browser, page } = await launchChromium());
  await logInWithToken(page, `${manager.url}/hosts`, manager.adminToken, 'Hosts');
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

/* eslint-disable @typescript-eslint/no-explicit-any -- loosely typed JSON answers of the API and agents, read field by field */
import { rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { startAgent, type RunningAgent } from '@drover/agent';
import { freePort, tempDir, testAgentConfig } from '@drover/agent/testing';
import { defaultApplianceCacheDir } from '@drover/appliances';
import { defaultManagerConfig, startManager, type RunningManager } from '@drover/manager';
import { distDir, launchChromium, logInWithToken, managerApi, prepareConsole, shots, until } from './harness.js';

/**
 * The Migrate… dialog in real headless Chromium against a real manager and
 * two real agents on this machine (h1 and h2: two state directories, two
 * ports on 127.0.0.1), whose `default` pool is one directory marked shared on
 * both, as in the manager's migration tests. A running counter guest moves
 * h1 → h2 through the dialog (memory only, over TLS), then back with a
 * throttled stream that the dialog cancels. Kept apart from browser.test.ts
 * so that a failure here stays here.
 */

const vmName = 'web-mig';

let manager: RunningManager | undefined;
const agents: RunningAgent[] = [];
const dirs: string[] = [];
let browser: Browser | undefined;
let page: Page;
let base = '';
const api = managerApi(() => manager);

/** Records, in the page, every progress value and phase the migration dialog shows (React may show several between two polls). */
async function recordProgress(): Promise<void> {
  await page.evaluate(() => {
    const seen = { values: [] as number[], texts: [] as string[] };
    (window as unknown as { droverMigration: typeof seen }).droverMigration = seen;
    const look = () => {
      const box = document.querySelector('[data-testid="migration-progress"]');
      if (!box) return;
      const bar = box.querySelector('progress');
      if (bar) seen.values.push(Number(bar.value));
      const text = box.textContent ?? '';
      if (seen.texts.at(-1) !== text) seen.texts.push(text);
    };
    new MutationObserver(look).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
  });
}
async function recorded(): Promise<{ values: number[]; texts: string[] }> {
  return page.evaluate(() => (window as unknown as { droverMigration: { values: number[]; texts: string[] } }).droverMigration);
}

beforeAll(async () => {
  prepareConsole();
  const dataDir = tempDir('web-mig-manager');
  const sharedDir = tempDir('web-mig-shared');
  dirs.push(dataDir, sharedDir);
  manager = await startManager({ ...defaultManagerConfig(dataDir), listen: '127.0.0.1:0', heartbeatMs: 500, applianceCacheDir: defaultApplianceCacheDir(), webRoot: distDir });
  base = manager.url;
  for (const hostName of ['h1', 'h2']) {
    const stateDir = tempDir(`web-mig-${hostName}`);
    dirs.push(stateDir);
    const join = await api<{ token: string }>('POST', '/api/v1/hosts/join-tokens', {});
    expect(join.status).toBe(201);
    // The same directory at the same path on both hosts, marked shared: only memory moves.
    const config = testAgentConfig(stateDir, { listen: `127.0.0.1:${await freePort()}`, hostName, pools: [{ name: 'default', path: sharedDir, shared: true }] });
    agents.push(await startAgent(config, { join: { managerUrl: manager.url, token: join.body.token } }));
  }
  await until('both hosts online', async () => {
    const hosts = await api<{ items: Array<{ name: string; state: string }> }>('GET', '/api/v1/hosts');
    return hosts.body.items.length === 2 && hosts.body.items.every((h) => h.state === 'online');
  });

  const created = await api('POST', '/api/v1/vms', { name: vmName, image: 'counter', memoryMiB: 128, hostInclude: ['h1'] });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  const start = await api('POST', `/api/v1/vms/${vmName}/start?wait=true`, {});
  expect(start.body.state, JSON.stringify(start.body)).toBe('done');
  await until('the counter guest counting', async () => /DROVER-COUNTER gen=\d+/.test(String((await api('GET', `/api/v1/vms/${vmName}/console/serial/log`)).body)), 180_000);

  ({ browser, page } = await launchChromium({ width: 1280, height: 800 }));
  await logInWithToken(page, `${base}/vms/${vmName}`, manager.adminToken, `VM ${vmName}`);
  await page.locator('.page-head .badge[data-state="running"]').waitFor();
}, 300_000);

afterAll(async () => {
  await browser?.close().catch(() => undefined);
  try {
    if (manager) {
      const vms = await api<{ items: Array<{ id: string; state: string }> }>('GET', '/api/v1/vms?limit=1000').catch(() => undefined);
      for (const vm of vms?.body.items ?? []) {
        if (vm.state === 'migrating') await until('the migration to end', async () => (await api('GET', `/api/v1/vms/${vm.id}`)).body.state !== 'migrating', 120_000).catch(() => undefined);
        await api('POST', `/api/v1/vms/${vm.id}/force-off?wait=true`, {}).catch(() => undefined);
      }
    }
  } finally {
    for (const agent of agents) await agent.close().catch(() => undefined);
    await manager?.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  }
}, 300_000);

/** The newest vm.migrate operation, through the API. */
async function lastMigration(): Promise<{ state: string; progress: number; result: any; error: { message: string } | null }> {
  const ops = await api<{ items: Array<{ kind: string; createdAt: string; state: string; progress: number; result: any; error: { message: string } | null }> }>('GET', '/api/v1/operations?limit=1000');
  return ops.body.items.filter((o) => o.kind === 'vm.migrate').sort((a, b) => a.createdAt.localeCompare(b.createdAt)).at(-1)!;
}

function hostCell() {
  // The VM page's Details: the <dd> after "Host".
  return page.locator('dl.details dt:text-is("Host") + dd');
}

describe('Migrate… dialog with a second host', () => {
  it('lists the other host with its free capacity, migrates the running guest through the dialog, and the page shows the new host live', async () => {
    expect(await hostCell().textContent()).toBe('h1');
    await page.evaluate(() => ((window as unknown as { droverMark: string }).droverMark = 'still-here'));
    await page.getByRole('toolbar', { name: 'VM actions' }).getByRole('button', { name: 'Migrate…' }).click();
    const dialog = page.getByRole('dialog', { name: `Migrate ${vmName}` });
    await dialog.waitFor();
    const destination = dialog.getByLabel('Destination host');
    await destination.locator('option[value="h2"]').waitFor({ state: 'attached' });
    const options = await destination.locator('option').allTextContents();
    // Only the other host, with its state and what it has free.
    expect(options).toHaveLength(1);
    expect(options[0]).toMatch(/^h2 \(online; \d+ of \d+ vCPUs, .+ of .+ free\)$/);
    await dialog.getByLabel('Downtime limit (ms)').fill('500');
    await dialog.getByLabel('Bandwidth (per second)').fill('512M');
    await page.screenshot({ path: path.join(shots, 'vm-migrate-dialog.png') });
    await recordProgress();
    await dialog.getByRole('button', { name: 'Migrate', exact: true }).click();

    await dialog.getByText(`Done: ${vmName} runs on h2 now`).waitFor({ timeout: 300_000 });
    await page.screenshot({ path: path.join(shots, 'vm-migrate-done.png') });
    const seen = await recorded();
    // The dialog followed the operation: it showed its progress bar and phases while it ran.
    expect(seen.values.length, JSON.stringify(seen)).toBeGreaterThan(0);
    expect(seen.texts.some((t) => /Migrating to h2: (begin|prepare|perform|switchover|finish|confirm)/.test(t)), JSON.stringify(seen.texts)).toBe(true);

    const op = await lastMigration();
    expect(op).toMatchObject({ state: 'done', progress: 100 });
    expect(op.result).toMatchObject({ from: 'h1', to: 'h2', storage: false });
    // The downtime steps: the pause QEMU was allowed at the switchover, as the operation recorded it.
    expect(typeof op.result.downtimeLimitMs, JSON.stringify(op.result)).toBe('number');
    expect(await dialog.getByRole('definition').filter({ hasText: `${op.result.downtimeLimitMs} ms at the switchover` }).count()).toBe(1);

    // The page learnt of the new host from the event stream, without a reload.
    await until('the VM page showing host h2', async () => (await hostCell().textContent()) === 'h2', 60_000);
    await page.locator('.page-head .badge[data-state="running"]').waitFor();
    expect(await page.evaluate(() => (window as unknown as { droverMark?: string }).droverMark)).toBe('still-here');
    expect((await api('GET', `/api/v1/vms/${vmName}`)).body).toMatchObject({ state: 'running', hostName: 'h2' });
    await dialog.getByRole('button', { name: 'Close', exact: true }).click();
    await dialog.waitFor({ state: 'detached' });
  }, 600_000);

  it('cancels a throttled migration back to h1 from the dialog: the manager\'s words, and the VM stays running on h2', async () => {
    await page.getByRole('toolbar', { name: 'VM actions' }).getByRole('button', { name: 'Migrate…' }).click();
    const dialog = page.getByRole('dialog', { name: `Migrate ${vmName}` });
    await dialog.waitFor();
    const destination = dialog.getByLabel('Destination host');
    await destination.locator('option[value="h1"]').waitFor({ state: 'attached' });
    expect(await destination.locator('option').count()).toBe(1);
    // 1 MiB/s for 128 MiB of guest memory: pre-copy lasts long enough to cancel it.
    await dialog.getByLabel('Bandwidth (per second)').fill('1M');
    await dialog.getByRole('button', { name: 'Migrate', exact: true }).click();
    await dialog.getByText('Migrating to h1: perform').waitFor({ timeout: 180_000 });
    const cancel = dialog.getByRole('button', { name: 'Cancel migration' });
    expect(await cancel.isEnabled()).toBe(true);
    await cancel.click();
    const failure = dialog.locator('.op-outcome.error-note');
    await failure.waitFor({ timeout: 180_000 });
    const op = await lastMigration();
    expect(op.state).toBe('cancelled');
    const text = await failure.textContent();
    expect(text).toContain('Cancelled:');
    expect(text).toContain(op.error!.message);
    await page.screenshot({ path: path.join(shots, 'vm-migrate-cancelled.png') });
    await until('the VM running on h2 again', async () => {
      const vm = (await api('GET', `/api/v1/vms/${vmName}`)).body;
      return vm.state === 'running' && vm.hostName === 'h2';
    });
    await page.locator('.page-head .badge[data-state="running"]').waitFor();
    expect(await hostCell().textContent()).toBe('h2');
  }, 600_000);
});

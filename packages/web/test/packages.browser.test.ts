import { createHash, randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import type { RunningAgent } from '@drover/agent';
import { tempDir } from '@drover/agent/testing';
import type { RunningManager } from '@drover/manager';
import { joinHost, launchChromium, logInWithToken, managerApi, prepareConsole, startConsoleManager, until } from './harness.js';

/**
 * The Packages page in real headless Chromium against a real manager and a
 * real agent (h1): a stopped VM is exported as a package, its signed file
 * downloaded through the link, the package deleted and imported again by
 * uploading that file; a file that is no package is refused in the manager's words.
 */
let manager: RunningManager | undefined;
let agent: RunningAgent | undefined;
const dirs: string[] = [];
let browser: Browser | undefined;
let page: Page;
let work: string;
const api = managerApi(() => manager);

beforeAll(async () => {
  prepareConsole();
  const dataDir = tempDir('web-pkg-manager');
  const stateDir = tempDir('web-pkg-h1');
  work = tempDir('web-pkg-files');
  dirs.push(dataDir, stateDir, work);
  manager = await startConsoleManager(dataDir);
  agent = await joinHost(api, manager, stateDir);
  // A VM that has run once (its disks exist on h1), stopped again; and a key to sign with.
  expect((await api('POST', '/api/v1/vms', { name: 'pk1', image: 'web', memoryMiB: 128 })).status).toBeLessThan(300);
  expect((await api('POST', '/api/v1/vms/pk1/start?wait=true', {})).body.state).toBe('done');
  await until('pk1 ready', async () => /DROVER-READY/.test(String((await api('GET', '/api/v1/vms/pk1/console/serial/log')).body)), 120_000, 250);
  expect((await api('POST', '/api/v1/vms/pk1/stop?wait=true', {})).body.state).toBe('done');
  expect((await api('POST', '/api/v1/vmcast/keys', { name: 'console' })).status).toBe(201);
  ({ browser, page } = await launchChromium());
  await logInWithToken(page, `${manager.url}/packages`, manager.adminToken, 'Packages');
}, 300_000);

afterAll(async () => {
  await browser?.close().catch(() => undefined);
  try {
    for (const vm of (await api('GET', '/api/v1/vms')).body.items ?? []) if (['running', 'paused'].includes(vm.state)) await api('POST', `/api/v1/vms/${vm.id}/force-off?wait=true`, {});
  } catch {
    // the manager may be gone already
  }
  await agent?.close().catch(() => undefined);
  await manager?.close();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}, 300_000);

describe('Packages page', () => {
  let fileBytes: Buffer;

  it('exports a stopped VM as a package and downloads its signed file', async () => {
    await page.getByRole('button', { name: 'Export VMs…' }).click();
    const form = page.getByRole('form', { name: 'Export VMs as a package' });
    await form.getByLabel('Package name').fill('demo');
    await form.getByLabel('Package version').fill('1');
    await form.getByLabel(/pk1/).check();
    await form.getByRole('button', { name: 'Export' }).click();
    await page.getByText('Exported demo:1 with 1 VMs.').waitFor({ timeout: 180_000 });
    await page.getByRole('button', { name: 'Close', exact: true }).click();
    const row = page.locator('tr[data-package="demo:1"]');
    await row.waitFor();
    expect(await row.textContent()).toContain('export');

    const href = await row.getByRole('link', { name: /Download/ }).getAttribute('href');
    const download = await page.request.get(new URL(href!, manager!.url).toString());
    expect(download.status()).toBe(200);
    fileBytes = Buffer.from(await download.body());
    const pkg = (await api('GET', '/api/v1/packages/demo:1')).body;
    expect(createHash('sha256').update(fileBytes).digest('hex')).toBe(pkg.fileSha256);
  }, 240_000);

  it('deletes the package and imports it again by uploading the file', async () => {
    await page.getByRole('button', { name: 'Delete… package demo:1' }).click();
    await page.getByRole('button', { name: 'Delete package' }).click();
    await page.locator('tr[data-package="demo:1"]').waitFor({ state: 'detached' });
    expect((await api('GET', '/api/v1/packages')).body.items).toEqual([]);

    const file = path.join(work, 'demo-1.eva');
    writeFileSync(file, fileBytes);
    await page.getByRole('button', { name: 'Import…' }).click();
    const form = page.getByRole('form', { name: 'Import a package' });
    await form.getByLabel('Package file').setInputFiles(file);
    await form.getByRole('button', { name: 'Import' }).click();
    await page.getByText('Imported demo:1 with 1 VMs.').waitFor({ timeout: 120_000 });
    await page.getByRole('button', { name: 'Close', exact: true }).click();
    await page.locator('tr[data-package="demo:1"]').waitFor();
    expect((await api('GET', '/api/v1/packages/demo:1')).body.source).toBe('import');
  }, 240_000);

  it('shows the manager\'s refusal of a file that is no package', async () => {
    const file = path.join(work, 'junk.eva');
    writeFileSync(file, randomBytes(4096));
    await page.getByRole('button', { name: 'Import…' }).click();
    const form = page.getByRole('form', { name: 'Import a package' });
    await form.getByLabel('Package file').setInputFiles(file);
    await form.getByRole('button', { name: 'Import' }).click();
    await page.locator('#main').getByText(/Package "upload" was refused: it is not a valid tar archive/).waitFor({ timeout: 60_000 });
    expect((await api('GET', '/api/v1/packages')).body.items.map((p: { name: string }) => p.name)).toEqual(['demo']);
  }, 120_000);
});

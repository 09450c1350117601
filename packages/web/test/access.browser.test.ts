import { rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { tempDir } from '@drover/agent/testing';
import { defaultApplianceCacheDir } from '@drover/appliances';
import { defaultManagerConfig, startManager, type RunningManager } from '@drover/manager';
import { distDir, launchChromium, managerApi, prepareConsole, shots } from './harness.js';

/**
 * The access-control pages in real headless Chromium against a real manager:
 * a local user signs in with a user name and password (a wrong one is refused
 * in the manager's words), adds a user, makes and revokes an API token (its
 * secret shown once), and reads and verifies the audit log.
 */

let manager: RunningManager | undefined;
const dataDir = tempDir('web-access-manager');
let browser: Browser | undefined;
let page: Page;
const api = managerApi(() => manager);

beforeAll(async () => {
  prepareConsole();
  manager = await startManager({ ...defaultManagerConfig(dataDir), listen: '127.0.0.1:0', heartbeatMs: 500, applianceCacheDir: defaultApplianceCacheDir(), appliances: false, webRoot: distDir });
  expect((await api('POST', '/api/v1/users', { name: 'ada', password: 'ada-password', bindings: [{ role: 'admin', scope: '*' }] })).status).toBe(201);
  ({ browser, page } = await launchChromium());
}, 300_000);

afterAll(async () => {
  await browser?.close();
  await manager?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('access control in the web console', () => {
  it('signs in with a user name and password; a wrong password is refused in the manager\'s words', async () => {
    await page.goto(`${manager!.url}/users`);
    await page.getByRole('button', { name: 'Use a user name and password instead' }).click();
    await page.getByLabel('User name').fill('ada');
    await page.getByLabel('Password').fill('wrong-password');
    await page.getByRole('button', { name: 'Log in' }).click();
    const note = page.locator('.error-note');
    await note.waitFor();
    expect(await note.textContent()).toContain('Wrong user name or password');
    await page.getByLabel('Password').fill('ada-password');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('heading', { level: 1, name: 'Users' }).waitFor();
    expect(await page.locator('.userbox .actor').textContent()).toBe('ada');
    await page.screenshot({ path: path.join(shots, 'access-users.png'), fullPage: true });
  });

  it('adds a user and disables them', async () => {
    const form = page.getByRole('form', { name: 'Add a user' });
    await form.getByLabel('User name').fill('bea');
    await form.getByLabel('Password').fill('bea-password');
    await form.getByLabel('Role').selectOption('auditor');
    await form.getByRole('button', { name: 'Add user' }).click();
    await page.getByRole('button', { name: 'Disable bea' }).click();
    await page.getByRole('button', { name: 'Enable bea' }).waitFor();
    expect((await api('GET', '/api/v1/users/bea')).body).toMatchObject({ disabled: true, bindings: [{ role: 'auditor', scope: '*' }] });
  });

  it('makes an API token (its secret shown once) that works, then revokes it', async () => {
    await page.getByRole('link', { name: 'API tokens' }).click();
    await page.getByRole('heading', { level: 1, name: 'API tokens' }).waitFor();
    await page.getByLabel('Token name').fill('laptop');
    await page.getByRole('button', { name: 'Make token' }).click();
    const secret = (await page.getByTestId('new-token').textContent())!;
    expect(secret).toMatch(/^drv_/);
    expect((await api('GET', '/api/v1/session', undefined, secret)).body.actor).toBe('ada');
    await page.getByRole('button', { name: 'Revoke laptop' }).click();
    await page.getByText(/^revoked /).waitFor();
    expect((await api('GET', '/api/v1/session', undefined, secret)).status).toBe(401);
  });

  it('shows the audit log, filtered, and verifies its chain', async () => {
    await page.getByRole('link', { name: 'Audit log' }).click();
    await page.getByRole('heading', { level: 1, name: 'Audit log' }).waitFor();
    await page.getByLabel('Decision').selectOption('deny');
    await page.getByRole('button', { name: 'Filter' }).click();
    // The wrong password above, and the revoked token's refusal.
    await page.getByRole('cell', { name: 'Wrong user name or password' }).waitFor();
    await page.getByRole('cell', { name: /API token "laptop" was revoked/ }).waitFor();
    await page.getByRole('button', { name: 'Verify the chain' }).click();
    await page.getByText(/^Intact: \d+ records/).waitFor();
    await page.screenshot({ path: path.join(shots, 'access-audit.png'), fullPage: true });
  });
});

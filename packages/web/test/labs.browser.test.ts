import { rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import type { RunningAgent } from '@drover/agent';
import { tempDir } from '@drover/agent/testing';
import type { RunningManager } from '@drover/manager';
import { joinHost, launchChromium, logInWithToken, managerApi, prepareConsole, shots, startConsoleManager, until } from './harness.js';

/**
 * The Labs page in real headless Chromium against a real manager and a real
 * agent (h1): the shipped pentest example is deployed from the page (three
 * real QEMU guests, started in dependency order; on QEMU user networking, so
 * the test leaves the host's bridges and firewall alone),
 * shown with its VMs and their states, stopped and exported as a package,
 * then destroyed from the page.
 */
let manager: RunningManager | undefined;
let agent: RunningAgent | undefined;
const dirs: string[] = [];
let browser: Browser | undefined;
let page: Page;
const api = managerApi(() => manager);

beforeAll(async () => {
  prepareConsole();
  const dataDir = tempDir('web-labs-manager');
  const stateDir = tempDir('web-labs-h1');
  dirs.push(dataDir, stateDir);
  manager = await startConsoleManager(dataDir, { labs: { networkMode: 'user' } });
  agent = await joinHost(api, manager, stateDir);
  ({ browser, page } = await launchChromium());
  await logInWithToken(page, `${manager.url}/labs`, manager.adminToken, 'Labs');
}, 300_000);

afterAll(async () => {
  await browser?.close().catch(() => undefined);
  // Whatever a failed test left: its VMs forced off (so the agent stops no guest by surprise).
  const vms = (await api<{ items: Array<{ id: string; state: string }> }>('GET', '/api/v1/vms?limit=1000').catch(() => undefined))?.body.items ?? [];
  for (const vm of vms) if (vm.state === 'running') await api('POST', `/api/v1/vms/${vm.id}/force-off?wait=true`, {}).catch(() => undefined);
  await agent?.close().catch(() => undefined);
  await manager?.close();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}, 300_000);

describe('Labs page', () => {
  it('deploys the pentest example, shows its VMs running in their start order, exports it stopped, and destroys it', async () => {
    const deploy = page.getByRole('region', { name: 'Deploy a lab' });
    await deploy.getByLabel('From').selectOption('pentest');
    await deploy.getByLabel('Name').fill('class1');
    await deploy.getByRole('button', { name: 'Deploy' }).click();
    const lab = await until(
      'lab class1 running',
      async () => {
        const answer = await api<{ state: string; vms: Array<{ vm: string; state: string; order: number }> }>('GET', '/api/v1/labs/class1');
        return answer.status === 200 && answer.body.state === 'running' ? answer.body : undefined;
      },
      600_000,
      1000,
    );
    expect(lab.vms.map((v) => [v.vm, v.state, v.order])).toEqual([
      ['class1-target-db', 'running', 0],
      ['class1-target-old', 'running', 1],
      ['class1-attacker', 'running', 2],
    ]);
    const panel = page.locator('[data-lab="class1"]');
    await panel.getByText('running', { exact: true }).first().waitFor({ timeout: 60_000 });
    for (const vm of ['target-db', 'target-old', 'attacker']) {
      await panel.locator(`tr[data-lab-vm="${vm}"]`).getByText('running').waitFor({ timeout: 60_000 });
    }
    await page.screenshot({ path: path.join(shots, 'labs-deployed.png') });

    // Stopped, the lab is exported from its panel as a signed package of its three VMs.
    await panel.getByRole('button', { name: 'Stop lab class1' }).click();
    await until('lab class1 stopped', async () => (await api<{ state: string }>('GET', '/api/v1/labs/class1')).body.state === 'stopped', 300_000, 1000);
    await panel.getByLabel('Export as package').fill('class1-kit:2');
    // Without a key to sign with, the manager's refusal is shown in its words and nothing is made.
    await panel.getByRole('button', { name: 'Export lab class1' }).click();
    await page.getByText('This manager has no active publisher key to sign the package').waitFor({ timeout: 60_000 });
    expect((await api<{ items: unknown[] }>('GET', '/api/v1/packages')).body.items).toEqual([]);
    expect((await api('POST', '/api/v1/vmcast/keys', { name: 'labs' })).status).toBe(201);
    await panel.getByRole('button', { name: 'Export lab class1' }).click();
    const exported = await until(
      'package class1-kit:2',
      async () => {
        const answer = await api<{ manifest: { vms: Array<{ name: string }> } }>('GET', '/api/v1/packages/class1-kit:2');
        return answer.status === 200 ? answer.body : undefined;
      },
      300_000,
      1000,
    );
    expect(exported.manifest.vms.map((v) => v.name).sort()).toEqual(['attacker', 'target-db', 'target-old']);

    await panel.getByRole('button', { name: 'Destroy lab class1' }).click();
    await until('lab class1 destroyed', async () => (await api('GET', '/api/v1/labs/class1')).status === 404, 300_000, 1000);
    await page.getByText('No lab yet.').waitFor({ timeout: 60_000 });
    expect((await api<{ items: unknown[] }>('GET', '/api/v1/vms')).body.items).toEqual([]);
  }, 900_000);
});

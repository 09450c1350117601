import { chmodSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import type { RunningAgent } from '@drover/agent';
import { tempDir } from '@drover/agent/testing';
import type { RunningManager } from '@drover/manager';
import { importTinyImage, joinSharedPoolHosts, launchChromium, logInWithToken, managerApi, prepareConsole, shots, startConsoleManager } from './harness.js';

/**
 * The maintenance and power controls of the Hosts page in real headless
 * Chromium against a real manager and two real agents on this machine (h1, h2,
 * one shared pool): the power policy form refuses a window that does not
 * parse in the manager's words, the Power… dialog sets a command driver and
 * reads the power status, Evacuate… shows the plan then moves the VM to h2,
 * Restore… brings it back. The VM page's HA switch sets the VM's HA flag,
 * follows a change made through the API, and shows a refusal.
 */

let manager: RunningManager | undefined;
const agents: RunningAgent[] = [];
const dirs: string[] = [];
let browser: Browser | undefined;
let page: Page;
const api = managerApi(() => manager);
let scriptDir = '';

beforeAll(async () => {
  prepareConsole();
  const dataDir = tempDir('web-power-manager');
  const sharedDir = tempDir('web-power-shared');
  scriptDir = tempDir('web-power-scripts');
  dirs.push(dataDir, sharedDir, scriptDir);
  manager = await startConsoleManager(dataDir);
  await joinSharedPoolHosts(api, manager, { prefix: 'web-power', hostNames: ['h1', 'h2'], sharedDir, dirs, agents });
  await importTinyImage(api, dataDir);
  expect((await api('POST', '/api/v1/vms', { name: 'vm1', image: 'tiny', memoryMiB: 64, hostInclude: [] })).status).toBe(201);
  // Placed on h1: h2 is in maintenance while it starts.
  await api('POST', '/api/v1/hosts/h2/maintenance', {});
  expect((await api('POST', '/api/v1/vms/vm1/start?wait=true', {})).body.state).toBe('done');
  expect((await api('POST', '/api/v1/hosts/h2/restore?wait=true', {})).body.state).toBe('done');

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

function hostPanel(name: string) {
  return page.locator(`li[data-host="${name}"]`);
}

describe('Hosts page: maintenance and power', () => {
  it('refuses a power schedule that does not parse, in the manager\'s words, and saves a good one', async () => {
    const panel = page.getByRole('region', { name: 'Power policy' });
    await panel.getByLabel('Consolidation window').fill('nightly');
    await panel.getByRole('button', { name: 'Save power policy' }).click();
    await panel.getByText('Power schedule window "nightly" does not parse').waitFor();
    expect((await api('GET', '/api/v1/power/policy')).body).toBeNull();
    await panel.getByLabel('Consolidation window').fill('22:00-06:00');
    await panel.getByLabel('Time zone').fill('Europe/Berlin');
    await panel.getByRole('button', { name: 'Save power policy' }).click();
    await panel.getByText('Power policy saved.').waitFor();
    expect((await api('GET', '/api/v1/power/policy')).body).toMatchObject({ window: '22:00-06:00', timeZone: 'Europe/Berlin', enabled: false });
    await panel.getByRole('button', { name: 'Preview night plan' }).click();
    await panel.getByTestId('night-plan').waitFor();
    expect(await panel.getByTestId('night-plan').textContent()).toMatch(/Night plan: \d+ move\(s\)/);
  });

  it('sets a command power driver and reads the power status through Power…', async () => {
    const file = path.join(scriptDir, 'h2.power');
    writeFileSync(file, 'on\n');
    const script = path.join(scriptDir, 'power.sh');
    writeFileSync(script, `#!/bin/sh\ncase "$1" in on|off) echo "$1" > "${file}";; status) cat "${file}";; esac\n`);
    chmodSync(script, 0o755);
    await hostPanel('h2').getByRole('button', { name: 'Power…' }).click();
    const dialog = page.getByRole('dialog', { name: 'Power of h2' });
    await dialog.getByLabel('Driver').selectOption('command');
    await dialog.getByLabel('Power on command').fill(`${script} on`);
    await dialog.getByLabel('Power off command').fill(`${script} off`);
    await dialog.getByLabel('Status command (prints on or off)').fill(`${script} status`);
    await dialog.getByRole('button', { name: 'Save power settings' }).click();
    await dialog.getByText('Saved: command driver (on, off, cycle, status).').waitFor();
    await dialog.getByRole('button', { name: 'Power status' }).click();
    await dialog.getByText('Done: power is on.').waitFor();
    await page.screenshot({ path: path.join(shots, 'hosts-power-dialog.png') });
    await dialog.getByRole('button', { name: 'Close', exact: true }).click();
    expect((await api('GET', '/api/v1/hosts/h2/power')).body).toMatchObject({ driver: 'command', actions: ['on', 'off', 'cycle', 'status'] });
  });

  it('evacuates h1 through Evacuate… (plan first) and brings the VM back with Restore…', async () => {
    await hostPanel('h1').getByRole('button', { name: 'Evacuate…' }).click();
    const dialog = page.getByRole('dialog', { name: 'Evacuate h1' });
    const row = dialog.locator('tr[data-vm="vm1"]');
    await row.waitFor();
    expect(await row.textContent()).toBe('vm1live-migratemove to h2');
    await page.screenshot({ path: path.join(shots, 'hosts-evacuate-plan.png') });
    await dialog.getByRole('button', { name: 'Evacuate', exact: true }).click();
    await dialog.getByText('Done: h1 is evacuated.').waitFor({ timeout: 180_000 });
    expect((await api('GET', '/api/v1/vms/vm1')).body).toMatchObject({ state: 'running', hostName: 'h2' });
    await hostPanel('h1').locator('.badge[data-state="maintenance"]').waitFor();
    await dialog.getByRole('button', { name: 'Close', exact: true }).click();

    await hostPanel('h1').getByRole('button', { name: 'Restore…' }).click();
    const restore = page.getByRole('dialog', { name: 'Restore h1' });
    await restore.getByText('vm1 (live-migrate from h2)').waitFor();
    await restore.getByRole('button', { name: 'Restore', exact: true }).click();
    await restore.getByText('Done: h1 is restored.').waitFor({ timeout: 180_000 });
    expect((await api('GET', '/api/v1/vms/vm1')).body).toMatchObject({ state: 'running', hostName: 'h1' });
    await hostPanel('h1').locator('.badge[data-state="online"]').waitFor();
    await page.screenshot({ path: path.join(shots, 'hosts-restored.png') });
  }, 400_000);
});

describe('VM page: the HA switch', () => {
  it('refuses HA for a VM with a disk on a pool that is not shared, in the manager\'s words, and changes nothing', async () => {
    // vm2: stopped on h1 with an added disk on h1's own (not shared) pool "local".
    const localDir = tempDir('web-power-local');
    dirs.push(localDir);
    expect((await api('POST', '/api/v1/hosts/h1/pools', { name: 'local', path: localDir })).status).toBe(201);
    expect((await api('POST', '/api/v1/vms', { name: 'vm2', image: 'tiny', memoryMiB: 64, hostInclude: ['h1'] })).status).toBe(201);
    expect((await api('POST', '/api/v1/vms/vm2/start?wait=true', {})).body.state).toBe('done');
    expect((await api('POST', '/api/v1/vms/vm2/force-off?wait=true', {})).body.state).toBe('done');
    const added = await api('POST', '/api/v1/vms/vm2/disks?wait=true', { sizeBytes: 1024 * 1024, pool: 'local' });
    expect(added.body.state, JSON.stringify(added.body)).toBe('done');

    await page.goto(`${manager!.url}/vms/vm2`);
    await page.getByRole('heading', { level: 1, name: 'VM vm2' }).waitFor();
    const ha = page.getByRole('switch', { name: 'High availability' });
    expect(await ha.isChecked()).toBe(false);
    await ha.click();
    await page.getByRole('alert').getByText('Not possible right now: Cannot mark VM "vm2" HA: its disks are on pool "local", which is not shared on host "h1"; HA needs shared storage').waitFor();
    expect(await ha.isChecked()).toBe(false);
    expect((await api('GET', '/api/v1/vms/vm2')).body.spec.ha).toBeUndefined();
    await page.screenshot({ path: path.join(shots, 'vm-ha-refused.png') });
  });

  it('sets the HA flag of a VM on shared storage, and shows a change made through the API without a reload', async () => {
    await page.goto(`${manager!.url}/vms/vm1`);
    await page.getByRole('heading', { level: 1, name: 'VM vm1' }).waitFor();
    // A mark in the page: it would be gone after a reload.
    await page.evaluate(() => ((window as unknown as { droverNoReload: boolean }).droverNoReload = true));
    const ha = page.getByRole('switch', { name: 'High availability' });
    expect(await ha.isChecked()).toBe(false);
    await ha.click();
    await page.locator('input[role="switch"][aria-checked="true"]').waitFor();
    expect((await api('GET', '/api/v1/vms/vm1')).body.spec.ha).toBe(true);
    await page.screenshot({ path: path.join(shots, 'vm-ha-on.png') });

    // Turned off elsewhere (the API, as the CLI's `drover vm ha vm1 off` does): the switch follows through the event stream.
    const off = await api('PUT', '/api/v1/vms/vm1/ha', { enabled: false });
    expect(off.status, JSON.stringify(off.body)).toBe(200);
    await page.locator('input[role="switch"][aria-checked="false"]').waitFor();
    expect(await ha.isChecked()).toBe(false);
    // And on again elsewhere.
    expect((await api('PUT', '/api/v1/vms/vm1/ha', { enabled: true })).status).toBe(200);
    await page.locator('input[role="switch"][aria-checked="true"]').waitFor();
    expect(await page.evaluate(() => (window as unknown as { droverNoReload?: boolean }).droverNoReload)).toBe(true);
    // Off through the switch again: the manager's flag follows.
    await ha.click();
    await page.locator('input[role="switch"][aria-checked="false"]').waitFor();
    expect((await api('GET', '/api/v1/vms/vm1')).body.spec.ha).toBeUndefined();
  });
});

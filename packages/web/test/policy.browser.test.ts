import { rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import type { RunningAgent } from '@drover/agent';
import { tempDir } from '@drover/agent/testing';
import { XEN_EXAMPLE_POLICY_XML } from '@drover/core';
import type { RunningManager } from '@drover/manager';
import { joinHost, launchChromium, logInWithToken, managerApi, prepareConsole, shots, startConsoleManager } from './harness.js';

/**
 * The Policy page in real headless Chromium against a real manager and a real
 * agent (h1): a hostile policy is refused in the manager's words and nothing
 * changes; Xen's example policy is validated and loaded and its labels shown;
 * a host is labelled; a placement is explained, then allowed once the label
 * is removed.
 */
const P = 'example.client_v1';

let manager: RunningManager | undefined;
let agent: RunningAgent | undefined;
const dirs: string[] = [];
let browser: Browser | undefined;
let page: Page;
const api = managerApi(() => manager);

beforeAll(async () => {
  prepareConsole();
  const dataDir = tempDir('web-policy-manager');
  const stateDir = tempDir('web-policy-h1');
  dirs.push(dataDir, stateDir);
  manager = await startConsoleManager(dataDir);
  agent = await joinHost(api, manager, stateDir);
  ({ browser, page } = await launchChromium());
  await logInWithToken(page, `${manager.url}/policy`, manager.adminToken, 'Security policy');
}, 300_000);

afterAll(async () => {
  await browser?.close().catch(() => undefined);
  await agent?.close().catch(() => undefined);
  await manager?.close();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}, 300_000);

describe('Policy page', () => {
  it('refuses an XXE policy in the manager\'s words and changes nothing', async () => {
    await page.locator('[data-policy="none"]').waitFor();
    const load = page.getByRole('region', { name: 'Load a policy' });
    await load.getByLabel('Policy document').fill('<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]><SecurityPolicyDefinition><PolicyHeader><PolicyName>&x;</PolicyName></PolicyHeader></SecurityPolicyDefinition>');
    await load.getByRole('button', { name: 'Validate' }).click();
    await load.getByRole('alert').getByText(/DTDs and entities are refused/).waitFor();
    await load.getByRole('button', { name: 'Load policy' }).click();
    await load.getByRole('alert').getByText(/DTDs and entities are refused/).waitFor();
    expect((await api('GET', '/api/v1/policy')).status).toBe(404);
  });

  it("validates and loads Xen's example policy and shows its labels", async () => {
    const load = page.getByRole('region', { name: 'Load a policy' });
    await load.getByLabel('Policy document').fill(XEN_EXAMPLE_POLICY_XML);
    await load.getByLabel('Format').selectOption('xml');
    await load.getByRole('button', { name: 'Validate' }).click();
    await load.locator('[data-valid="true"]').getByText(`Policy ${P} is valid (6 VM labels, 7 resource labels, 1 conflict sets)`).waitFor();
    await load.getByRole('button', { name: 'Load policy' }).click();
    await load.locator(`[data-loaded="${P}"]`).waitFor();
    const active = page.getByRole('region', { name: 'Active policy' });
    await active.locator(`[data-policy="${P}"]`).waitFor();
    expect(await active.locator('[data-conflict-set="Protection1"]').textContent()).toBe('Protection1: cw_Sensitive, cw_Distrusted');
    expect(await active.locator('tr[data-label="dom_HomeBanking"]').textContent()).toBe(`ACM:${P}:dom_HomeBankingVMste_PersonalFinancescw_Sensitive`);
    expect(await active.getByRole('link', { name: 'XML' }).getAttribute('href')).toBe('/api/v1/policy/export?format=xml');
    expect((await api('GET', '/api/v1/policy')).body).toMatchObject({ name: P, sourceFormat: 'xml', loadedBy: expect.any(String) });
    await page.screenshot({ path: path.join(shots, 'policy-loaded.png') });
  });

  it('labels a host, explains why a VM may not run there, and allows it once the label is removed', async () => {
    expect((await api('POST', '/api/v1/vms', { name: 'storage', image: 'web', memoryMiB: 96, securityLabel: `ACM:${P}:dom_StorageDomain` })).status).toBe(201);
    const labels = page.getByRole('region', { name: 'Labels of hosts and resources' });
    await labels.getByLabel('Kind', { exact: true }).selectOption('host');
    await labels.getByLabel('Object', { exact: true }).fill('h1');
    await labels.getByLabel('Label', { exact: true }).selectOption(`ACM:${P}:dom_NetworkDomain`);
    await labels.getByRole('button', { name: 'Set label' }).click();
    await labels.locator('tr[data-labelled="host:h1"]').waitFor();
    expect((await api('GET', '/api/v1/policy/labels')).body).toMatchObject([{ kind: 'host', objectName: 'h1', label: `ACM:${P}:dom_NetworkDomain` }]);

    const explain = page.getByRole('region', { name: 'Explain a placement' });
    await explain.getByLabel('VM', { exact: true }).fill('storage');
    await explain.getByLabel('Host', { exact: true }).fill('h1');
    await explain.getByRole('button', { name: 'Explain' }).click();
    const answer = explain.locator('[data-allowed="false"]');
    await answer.waitFor();
    expect(await answer.textContent()).toContain('does not cover STE type ste_PersistentStorageA of VM "storage"');
    await page.screenshot({ path: path.join(shots, 'policy-explain.png') });

    await labels.getByRole('button', { name: 'Remove the label of host h1' }).click();
    await labels.getByText('No host or resource is labelled.').waitFor();
    await explain.getByRole('button', { name: 'Explain' }).click();
    await explain.locator('[data-allowed="true"]').waitFor();
    expect(await explain.locator('[data-allowed="true"]').textContent()).toContain(`ACM:${P}:SystemManagement`);
  });
});

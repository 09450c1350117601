import { rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import type { RunningAgent } from '@drover/agent';
import { tempDir } from '@drover/agent/testing';
import type { RunningManager } from '@drover/manager';
import { joinHost, launchChromium, logInWithToken, managerApi, prepareConsole, shots, startConsoleManager } from './harness.js';

/**
 * The Networks page in real headless Chromium against a real manager and a
 * real agent (h1): a network is created and an overlapping one refused in the
 * manager's words; a security group gets rules (a self-reference refused) and
 * loses one; a VM on the network shows its NIC and effective rules on its
 * page; deleting what is in use is refused; then everything goes.
 */
let manager: RunningManager | undefined;
let agent: RunningAgent | undefined;
const dirs: string[] = [];
let browser: Browser | undefined;
let page: Page;
const api = managerApi(() => manager);

beforeAll(async () => {
  prepareConsole();
  const dataDir = tempDir('web-net-manager');
  const stateDir = tempDir('web-net-h1');
  dirs.push(dataDir, stateDir);
  manager = await startConsoleManager(dataDir);
  agent = await joinHost(api, manager, stateDir);
  ({ browser, page } = await launchChromium());
  await logInWithToken(page, `${manager.url}/networks`, manager.adminToken, 'Networks');
}, 300_000);

afterAll(async () => {
  await browser?.close().catch(() => undefined);
  await agent?.close().catch(() => undefined);
  await manager?.close();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}, 300_000);

describe('Networks page', () => {
  it('creates a network and refuses an overlapping one in the manager\'s words', async () => {
    const form = page.getByRole('form', { name: 'Create a network' });
    await form.getByLabel('Name').fill('pub');
    await form.getByLabel('Kind').selectOption('nat');
    await form.getByLabel('Subnet').fill('10.95.0.0/24');
    await form.getByLabel('Uplink').fill('eth0');
    await form.getByRole('button', { name: 'Create network' }).click();
    await page.locator('tr[data-network="pub"]').waitFor();
    expect(await page.locator('tr[data-network="pub"]').textContent()).toContain('10.95.0.1');

    await form.getByLabel('Name').fill('over');
    await form.getByLabel('Kind').selectOption('isolated');
    await form.getByLabel('Subnet').fill('10.95.0.128/25');
    await form.getByLabel('Uplink').fill('');
    await form.getByRole('button', { name: 'Create network' }).click();
    await page.getByRole('alert').getByText(/overlaps "10.95.0.0\/24" of network "pub"/).waitFor();
    expect((await api('GET', '/api/v1/networks')).body.items.map((n: { name: string }) => n.name)).toEqual(['pub']);
  });

  it('creates a security group, adds rules, refuses a self-reference and removes a rule', async () => {
    const create = page.getByRole('form', { name: 'Create a security group' });
    await create.getByLabel('Group name').fill('web');
    await create.getByRole('button', { name: 'Create group' }).click();
    const group = page.locator('[data-group="web"]');
    await group.waitFor();
    const add = page.getByRole('form', { name: 'Add a rule to web' });
    await add.getByLabel('Ports').fill('80');
    await add.getByLabel('Peer').fill('10.0.0.0/8');
    await add.getByRole('button', { name: 'Add rule' }).click();
    await group.getByText('ingress tcp 80 from 10.0.0.0/8').waitFor();
    await add.getByLabel('Protocol').selectOption('icmp');
    await add.getByLabel('Ports').fill('');
    await add.getByLabel('Peer').fill('');
    await add.getByRole('button', { name: 'Add rule' }).click();
    await group.getByText('ingress icmp from anywhere').waitFor();
    await add.getByLabel('Protocol').selectOption('tcp');
    await add.getByLabel('Peer').fill('group:web');
    await add.getByRole('button', { name: 'Add rule' }).click();
    await group.getByRole('alert').getByText(/cannot refer to itself/).waitFor();
    expect((await api('GET', '/api/v1/security-groups/web')).body.rules).toHaveLength(2);
    await group.getByRole('button', { name: 'Remove rule 2 of web' }).click();
    await group.getByText('ingress icmp from anywhere').waitFor({ state: 'detached' });
    expect((await api('GET', '/api/v1/security-groups/web')).body.rules).toEqual([{ direction: 'ingress', protocol: 'tcp', ports: { from: 80, to: 80 }, cidr: '10.0.0.0/8' }]);
    await page.screenshot({ path: path.join(shots, 'networks.png') });
  });

  it("shows a VM's NIC and effective rules on its page, and refuses deleting what is in use", async () => {
    const vm = await api('POST', '/api/v1/vms', { name: 'web-1', image: 'web', memoryMiB: 96, networks: [{ network: 'pub', securityGroups: ['web'] }] });
    expect(vm.status).toBe(201);
    await page.goto(`${manager!.url}/vms/${vm.body.id}`);
    const nic = page.locator('tr[data-nic="eth0"]');
    await nic.waitFor();
    expect(await nic.textContent()).toContain('10.95.0.2');
    const rules = page.locator('pre[data-firewall="web-1"]');
    await rules.waitFor();
    expect(await rules.textContent()).toContain('allow tcp port 80 from 10.0.0.0/8  [web]');
    await page.screenshot({ path: path.join(shots, 'vm-firewall.png') });

    await page.goto(`${manager!.url}/networks`);
    await page.getByRole('button', { name: 'Delete network pub' }).click();
    await page.getByRole('alert').getByText(/in use by VM\(s\) "web-1"/).waitFor();
    await page.getByRole('button', { name: 'Delete security group web' }).click();
    await page.getByRole('alert').getByText(/attached to VM\(s\) "web-1"/).first().waitFor();

    expect((await api('DELETE', `/api/v1/vms/web-1?wait=true`)).body.state).toBe('done');
    await page.reload();
    await page.getByRole('button', { name: 'Delete network pub' }).click();
    await page.locator('tr[data-network="pub"]').waitFor({ state: 'detached' });
    await page.getByRole('button', { name: 'Delete security group web' }).click();
    await page.locator('[data-group="web"]').waitFor({ state: 'detached' });
    expect((await api('GET', '/api/v1/networks')).body.items).toEqual([]);
  });
});

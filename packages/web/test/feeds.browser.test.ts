import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { tempDir } from '@drover/agent/testing';
import { defaultManagerConfig, startManager, type RunningManager } from '@drover/manager';
import { distDir, importTinyImage, launchChromium, logInWithToken, managerApi, prepareConsole, shots } from './harness.js';

/**
 * The Feeds page (VMcasting) in real headless Chromium against a real manager
 * that publishes to itself over loopback: a key, a channel, a release, the
 * public feed link, a subscription polled from the page, a VM following the
 * channel, a hold, a package published, received and approved for the VM,
 * a revoked key.
 */

let manager: RunningManager | undefined;
let browser: Browser | undefined;
let page: Page;
const api = managerApi(() => manager);
let dataDir = '';

beforeAll(async () => {
  prepareConsole();
  dataDir = tempDir('web-feeds-manager');
  manager = await startManager({ ...defaultManagerConfig(dataDir), listen: '127.0.0.1:0', appliances: false, webRoot: distDir }, { vmcast: { tickMs: 0 } });
  await importTinyImage(api, dataDir, '1');
  expect((await api('POST', '/api/v1/vms', { name: 'v1', image: 'tiny:1', memoryMiB: 64 })).status).toBe(201);
  ({ browser, page } = await launchChromium());
  await logInWithToken(page, `${manager.url}/feeds`, manager.adminToken, 'Feeds and channels');
}, 300_000);

afterAll(async () => {
  await browser?.close().catch(() => undefined);
  await manager?.close();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
}, 120_000);

describe('Feeds page', () => {
  it('publishes a release, subscribes and polls, follows, holds and revokes', async () => {
    const keys = page.getByRole('region', { name: 'Publisher keys' });
    await keys.getByLabel('Key name').fill('k1');
    await keys.getByRole('button', { name: 'Create key (rotates)' }).click();
    await keys.locator('tr[data-key="k1"]').getByText('active').waitFor();

    const channels = page.getByRole('region', { name: 'Published channels' });
    await channels.getByLabel('Channel name').fill('tiny');
    await channels.getByRole('button', { name: 'Create channel' }).click();
    const row = channels.locator('tr[data-channel="tiny"]');
    await row.waitFor();
    await row.getByLabel('Image').selectOption('tiny:1');
    await row.getByRole('button', { name: 'Publish on tiny' }).click();
    await row.getByRole('button', { name: 'Releases of tiny' }).click();
    await page.getByRole('region', { name: 'Releases of channel tiny' }).locator('tr[data-release="tiny:1"]').getByText('published').waitFor();
    // The feed link is public: no token needed.
    const href = await row.getByRole('link', { name: 'RSS' }).getAttribute('href');
    const feed = await fetch(new URL(href!, manager!.url));
    expect(feed.status).toBe(200);
    expect(await feed.text()).toContain('<vmcast:version>1</vmcast:version>');

    const key = (await api('GET', '/api/v1/vmcast/keys')).body.items[0];
    const subs = page.getByRole('region', { name: 'Subscriptions' });
    await subs.getByLabel('Channel name').fill('self');
    await subs.getByLabel('Feed URL').fill(`${manager!.url}/api/v1/vmcast/channels/tiny/feed.rss`);
    await subs.getByLabel('Publisher key (PEM)').fill(key.publicKey);
    await subs.getByRole('button', { name: 'Subscribe' }).click();
    await subs.locator('tr[data-subscription="self"]').waitFor();
    await subs.getByRole('button', { name: 'Poll now self' }).click();
    await subs.getByRole('status').getByText('imported tiny 1').waitFor();
    await subs.getByRole('button', { name: 'Poll now self' }).click();
    await subs.getByRole('status').getByText('unchanged (304)').waitFor();

    const follows = page.getByRole('region', { name: 'VMs following a channel' });
    await follows.getByLabel('VM').selectOption('v1');
    await follows.getByLabel('Channel').selectOption('self');
    await follows.getByLabel('Policy').selectOption('notify');
    await follows.getByRole('button', { name: 'Follow' }).click();
    const followRow = follows.locator('tr[data-follow="v1"]');
    await followRow.getByText('notify').waitFor();
    await followRow.getByRole('button', { name: 'Hold v1' }).click();
    await followRow.getByText('notify (held)').waitFor();
    expect((await api('GET', '/api/v1/vmcast/follows')).body.items[0]).toMatchObject({ vm: 'v1', channel: 'self', policy: 'notify', held: true, currentRelease: 'tiny:1' });

    // A package for guests: published from a file, received by polling, pending for the notify VM, approved.
    const src = path.join(dataDir, 'motd');
    mkdirSync(src, { recursive: true });
    writeFileSync(path.join(src, 'install'), '#!/bin/sh\necho motd\n', { mode: 0o755 });
    execFileSync('tar', ['--format=ustar', '-czf', path.join(dataDir, 'motd.tar.gz'), '-C', src, '.']);
    await row.getByLabel('Package file').setInputFiles(path.join(dataDir, 'motd.tar.gz'));
    await row.getByLabel('Package name').fill('motd');
    await row.getByLabel('Package version').fill('1.0');
    await row.getByRole('button', { name: 'Publish package on tiny' }).click();
    await row.getByRole('button', { name: 'Packages of tiny' }).click();
    await page.getByRole('region', { name: 'Packages of channel tiny' }).locator('tr[data-package="motd:1.0"]').getByText('published').waitFor();
    await subs.getByRole('button', { name: 'Poll now self' }).click();
    await subs.getByRole('status').getByText('imported motd 1.0 (package)').waitFor();
    await followRow.getByRole('button', { name: 'Release hold v1' }).click();
    await followRow.getByText(/^notify$/).waitFor();
    await followRow.getByRole('button', { name: 'Packages of VM v1' }).click();
    const vmPackages = page.getByRole('region', { name: 'Packages of VM v1' });
    const motd = vmPackages.locator('tr[data-vm-package="motd"]');
    await motd.locator('td[data-label="Pending"]').getByText('1.0').waitFor();
    await motd.getByRole('button', { name: 'Approve motd' }).click();
    await motd.locator('td[data-label="Offered"]').getByText('1.0').waitFor();
    expect((await api('GET', '/api/v1/vms/v1/packages')).body).toMatchObject({ policy: 'notify', offered: [{ name: 'motd', version: '1.0' }], pending: [] });

    await keys.getByRole('button', { name: 'Revoke key k1' }).click();
    await keys.locator('tr[data-key="k1"]').getByText('revoked').waitFor();
    await page.screenshot({ path: path.join(shots, 'feeds.png'), fullPage: true });
  }, 180_000);
});

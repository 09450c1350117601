/* eslint-disable @typescript-eslint/no-explicit-any -- loosely typed JSON answers of the API, read field by field */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { tempDir } from '@drover/agent/testing';
import { defaultManagerConfig, startManager, type RunningManager } from '@drover/manager';

/**
 * The Feeds page (VMcasting) in real headless Chromium against a real manager
 * that publishes to itself over loopback: a key, a channel, a release, the
 * public feed link, a subscription polled from the page, a VM following the
 * channel, a hold, a revoked key.
 */
const webDir = path.resolve(import.meta.dirname, '..');
const distDir = path.join(webDir, 'dist');
const repoRoot = path.resolve(webDir, '../..');
const shots = process.env.DROVER_SCREENSHOTS ?? path.join(repoRoot, 'test-results', 'web-console');
const chromiumPath = process.env.DROVER_CHROMIUM ?? '/usr/bin/chromium';

let manager: RunningManager | undefined;
let browser: Browser | undefined;
let page: Page;
let dataDir = '';

async function api<T = any>(method: string, route: string, body?: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(`${manager!.url}${route}`, {
    method,
    headers: { authorization: `Bearer ${manager!.adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  return { status: response.status, body: (text && (response.headers.get('content-type') ?? '').includes('json') ? JSON.parse(text) : text) as T };
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

beforeAll(async () => {
  ensureBuilt();
  mkdirSync(shots, { recursive: true });
  dataDir = tempDir('web-feeds-manager');
  manager = await startManager({ ...defaultManagerConfig(dataDir), listen: '127.0.0.1:0', appliances: false, webRoot: distDir }, { vmcast: { tickMs: 0 } });
  const importDir = path.join(dataDir, 'import');
  mkdirSync(importDir, { recursive: true });
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(importDir, 'tiny.qcow2'), '16M']);
  expect((await api('POST', '/api/v1/images?wait=true', { name: 'tiny', version: '1', source: { path: path.join(importDir, 'tiny.qcow2') } })).body.state).toBe('done');
  expect((await api('POST', '/api/v1/vms', { name: 'v1', image: 'tiny:1', memoryMiB: 64 })).status).toBe(201);
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await (await browser.newContext({ viewport: { width: 1280, height: 1000 } })).newPage();
  page.setDefaultTimeout(30_000);
  await page.goto(`${manager.url}/feeds`);
  await page.getByLabel('Admin token').fill(manager.adminToken);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Feeds and channels' }).waitFor();
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

    await keys.getByRole('button', { name: 'Revoke key k1' }).click();
    await keys.locator('tr[data-key="k1"]').getByText('revoked').waitFor();
    await page.screenshot({ path: path.join(shots, 'feeds.png'), fullPage: true });
  }, 180_000);
});

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { startTestCluster, type TestCluster } from '@drover/manager/testing';
import { ApiClient } from '../src/api/client.js';
import { apiOnlyOperations, uiOperations } from './ui-coverage.js';

/**
 * The web console in real headless Chromium (Debian's, driven by
 * playwright-core), against a real manager with a real joined agent and real
 * QEMU guests. One cluster, one browser and one booted guest serve the whole
 * file; the tests run in order and build on each other.
 */

const webDir = path.resolve(import.meta.dirname, '..');
const distDir = path.join(webDir, 'dist');
const repoRoot = path.resolve(webDir, '../..');
const shots = process.env.DROVER_SCREENSHOTS ?? path.join(repoRoot, 'test-results', 'web-console');
const chromiumPath = process.env.DROVER_CHROMIUM ?? '/usr/bin/chromium';
const vmName = 'web-ui';

let cluster: TestCluster;
let browser: Browser;
let desktop: BrowserContext;
let page: Page;
let base: string;

/** Builds packages/web/dist when it is missing or older than a source file. */
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
  // NODE_ENV is "test" under vitest: without this, React's development build would be bundled.
  const build = spawnSync(process.execPath, [vite, 'build', '--logLevel', 'warn'], { cwd: webDir, encoding: 'utf8', env: { ...process.env, NODE_ENV: 'production' } });
  if (build.status !== 0) throw new Error(`vite build failed:\n${build.stdout}\n${build.stderr}`);
}

async function shot(name: string, target: Page = page): Promise<void> {
  await target.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

/** The state badge in the VM page's heading row. */
function vmStateBadge(target: Page = page) {
  return target.locator('.page-head .badge');
}

async function waitForVmState(state: string, timeout = 90_000, target: Page = page): Promise<void> {
  await target.locator(`.page-head .badge[data-state="${state}"]`).waitFor({ timeout });
}

/** Marks the document: a reload would lose the mark. */
async function markDocument(target: Page = page): Promise<void> {
  await target.evaluate(() => ((window as unknown as { droverMark: string }).droverMark = 'still-here'));
}
async function documentWasNotReloaded(target: Page = page): Promise<boolean> {
  return target.evaluate(() => (window as unknown as { droverMark?: string }).droverMark === 'still-here');
}

/** Moves the focus with Tab until `predicate` holds for the focused element; fails after `max` presses. */
async function tabUntil(target: Page, description: string, predicate: string, max = 60): Promise<void> {
  for (let i = 0; i < max; i++) {
    await target.keyboard.press('Tab');
    const ok = await target.evaluate((source) => {
      const el = document.activeElement as HTMLElement | null;
      return Boolean(el && (new Function('el', `return (${source});`) as (el: HTMLElement) => boolean)(el));
    }, predicate);
    if (ok) return;
  }
  throw new Error(`Tab never reached ${description}`);
}

beforeAll(async () => {
  mkdirSync(shots, { recursive: true });
  ensureBuilt();
  cluster = await startTestCluster({ manager: { webRoot: distDir } });
  base = cluster.manager.url;
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  desktop = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await desktop.newPage();
  page.setDefaultTimeout(30_000);
});

afterAll(async () => {
  await browser?.close().catch(() => undefined);
  await cluster?.close();
});

describe('web console in Chromium', () => {
  it('maps every OpenAPI operation to the console control that performs it, or to the API-only list', async () => {
    const doc = await cluster.api<{ paths: Record<string, Record<string, unknown>> }>('GET', '/api/v1/openapi.json');
    const published = Object.entries(doc.body.paths).flatMap(([route, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${route}`));
    expect(published.length).toBeGreaterThan(30);
    const unplaced = published.filter((op) => !(op in uiOperations) && !(op in apiOnlyOperations));
    expect(unplaced, 'routes with neither a console control nor a place on the API-only list').toEqual([]);
    expect(Object.keys(uiOperations).filter((op) => !published.includes(op)), 'console controls for routes the manager does not publish').toEqual([]);

    // Each mapped client method reaches exactly its route.
    const sources = readdirSync(path.join(webDir, 'src'), { recursive: true, encoding: 'utf8' })
      .filter((f) => /\.tsx?$/.test(f) && !f.endsWith('client.ts'))
      .map((f) => readFileSync(path.join(webDir, 'src', f), 'utf8'))
      .join('\n');
    for (const [op, entry] of Object.entries(uiOperations)) {
      const [method, template] = op.split(' ') as [string, string];
      const pattern = new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/?]+')}$`);
      let reached: { method: string; path: string } | undefined;
      const client = new ApiClient('http://127.0.0.1:1', async (url, init) => {
        reached ??= { method: init?.method ?? 'GET', path: new URL(url).pathname };
        return new Response('{"ticket":"t"}', { status: 200, headers: { 'content-type': 'application/json' } });
      });
      const answer = await (client[entry.client] as (...args: unknown[]) => unknown).apply(client, entry.args);
      if (entry.via === 'url') reached = { method, path: new URL(String(answer), 'http://127.0.0.1:1').pathname };
      expect(reached, op).toBeDefined();
      expect(`${reached!.method} ${reached!.path}`, op).toMatch(new RegExp(`^${method} `));
      expect(reached!.path, op).toMatch(pattern);
      // ... and the console calls it.
      expect(sources.includes(`.${entry.client}(`), `${op}: nothing in src/ calls api.${entry.client}`).toBe(true);
      if (entry.source) expect(sources.includes(entry.source), `${op}: "${entry.source}" is not in src/`).toBe(true);
    }
  });

  it('refuses a wrong token with the server\'s message, then logs in with the admin token', async () => {
    const refused = await cluster.api<{ error: { message: string } }>('POST', '/api/v1/sessions', { token: 'not-the-admin-token' }, { authorization: '' });
    expect(refused.status).toBe(401);
    await page.goto(`${base}/vms`);
    await page.getByLabel('Admin token').fill('not-the-admin-token');
    await page.getByRole('button', { name: 'Log in' }).click();
    const note = page.locator('.error-note');
    await note.waitFor();
    expect(await note.textContent()).toContain(refused.body.error.message);
    await shot('login-refused');

    await page.getByLabel('Admin token').fill(cluster.manager.adminToken);
    await page.getByRole('button', { name: 'Log in' }).click();
    // Back where the browser asked to go, with the session cookie (HttpOnly: invisible to scripts).
    await page.getByRole('heading', { level: 1, name: 'Virtual machines' }).waitFor();
    const cookies = await desktop.cookies();
    expect(cookies.find((c) => c.name === 'drover_session')).toMatchObject({ httpOnly: true, sameSite: 'Strict' });
    expect(await page.evaluate(() => document.cookie)).not.toContain('drover_session');
  });

  it('shows the joined host online with its load on the dashboard', async () => {
    await page.getByRole('link', { name: 'Dashboard' }).click();
    const card = page.locator('.host-card[data-host="h1"]');
    await card.locator('.badge[data-state="online"]').waitFor();
    expect(await card.getByRole('meter', { name: 'Memory' }).getAttribute('aria-valuetext')).toMatch(/of/);
    await page.locator('.stream-live').waitFor();
    await shot('dashboard');
  });

  it('creates a VM from the web image in the dialog, starts it and sees the state change live', async () => {
    const images = await cluster.api<{ items: Array<{ name: string; version: string }> }>('GET', '/api/v1/images');
    const web = images.body.items.find((i) => i.name === 'web')!;
    await page.getByRole('button', { name: 'Create VM' }).click();
    const dialog = page.getByRole('dialog', { name: 'Create a VM' });
    await dialog.waitFor();
    await dialog.getByLabel('Name').fill(vmName);
    await dialog.getByLabel('Image').selectOption(`${web.name}:${web.version}`);
    await dialog.getByLabel('Memory (MiB)').fill('128');
    await dialog.getByLabel('Labels').fill('tier=web');
    await shot('create-vm-dialog');
    await dialog.getByRole('button', { name: 'Create VM' }).click();
    await page.getByRole('heading', { level: 1, name: `VM ${vmName}` }).waitFor();
    await waitForVmState('defined');
    await markDocument();

    await page.getByRole('toolbar', { name: 'VM actions' }).getByRole('button', { name: 'Start' }).click();
    // starting → running arrives through the event stream; the page is never reloaded.
    await waitForVmState('running');
    expect(await documentWasNotReloaded()).toBe(true);
    expect((await cluster.api<{ state: string; hostName: string }>('GET', `/api/v1/vms/${vmName}`)).body).toMatchObject({ state: 'running', hostName: 'h1' });
    await page.getByRole('complementary', { name: 'Activity' }).getByText(`Start ${vmName}`).first().waitFor();
  });

  it('shows the guest\'s boot output and its ready line in the serial console (xterm.js)', async () => {
    await cluster.waitForSerial(vmName, /DROVER-READY/);
    const terminal = page.getByTestId('serial-console');
    await terminal.locator('.xterm-rows').waitFor();
    await page.getByText('Connected', { exact: true }).waitFor();
    await vi.waitFor(async () => expect(await terminal.locator('.xterm-rows').textContent()).toMatch(/DROVER-READY appliance=web/), { timeout: 30_000, interval: 250 });
    await shot('vm-serial-console');
  });

  it('connects the VNC screen (noVNC) and draws the guest\'s screen', async () => {
    await page.getByRole('tab', { name: 'Screen (VNC)' }).click();
    await page.getByTestId('vnc-screen').locator('canvas').waitFor();
    await page.getByText(/^Connected/).waitFor();
    // Count lit pixels on noVNC's canvas: a connected but blank screen would be all background.
    await vi.waitFor(
      async () => {
        const lit = await page.evaluate(() => {
          const canvas = document.querySelector<HTMLCanvasElement>('[data-testid="vnc-screen"] canvas');
          if (!canvas || canvas.width === 0) return 0;
          const data = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height).data;
          let n = 0;
          for (let i = 0; i < data.length; i += 4) if (data[i]! + data[i + 1]! + data[i + 2]! > 150) n++;
          return n;
        });
        expect(lit).toBeGreaterThan(200);
      },
      { timeout: 30_000, interval: 500 },
    );
    await shot('vm-vnc-console');
    await page.getByRole('tab', { name: 'Serial console' }).click();
  });

  it('shows a change made through the API elsewhere without a reload', async () => {
    await markDocument();
    const vm = await cluster.api<{ rev: number }>('GET', `/api/v1/vms/${vmName}`);
    expect((await cluster.api('PATCH', `/api/v1/vms/${vmName}`, { labels: { tier: 'web', changed: 'elsewhere' } })).status).toBe(200);
    await page.locator('.details').getByText('changed=elsewhere').waitFor();
    // The edit form follows unless the operator is typing in it.
    expect(await page.getByLabel('Labels').inputValue()).toContain('changed=elsewhere');
    expect(vm.body.rev).toBeGreaterThan(0);

    await page.getByRole('link', { name: 'VMs', exact: true }).click();
    await page.locator(`tr[data-vm="${vmName}"]`).waitFor();
    expect((await cluster.api('POST', '/api/v1/vms', { name: 'from-api', image: 'counter' })).status).toBe(201);
    await page.locator('tr[data-vm="from-api"]').waitFor();
    expect((await cluster.api<{ state: string }>('DELETE', '/api/v1/vms/from-api?wait=true')).body.state).toBe('done');
    await page.locator('tr[data-vm="from-api"]').waitFor({ state: 'detached' });
    expect(await documentWasNotReloaded()).toBe(true);
    await shot('vm-list');
  });

  it('filters the VM list by state, name and label', async () => {
    const state = page.getByLabel('State');
    await state.selectOption('stopped');
    await page.getByText('No VM matches the filter.').waitFor();
    await state.selectOption('running');
    await page.locator(`tr[data-vm="${vmName}"]`).waitFor();
    await page.getByLabel('Label (key=value)').fill('tier=nothing');
    await page.getByText('No VM matches the filter.').waitFor();
    await page.getByLabel('Label (key=value)').fill('tier=web');
    await page.locator(`tr[data-vm="${vmName}"]`).waitFor();
    expect(page.url()).toContain('label=tier%3Dweb');
    await page.getByRole('button', { name: 'Clear filters' }).click();
  });

  it('shows the server\'s message when an action is refused (deleting a running VM)', async () => {
    const refused = await cluster.api<{ error: { code: string; message: string } }>('DELETE', `/api/v1/vms/${vmName}`);
    expect(refused.status).toBe(409);
    await page.getByRole('link', { name: vmName, exact: true }).click();
    await waitForVmState('running');
    await page.getByRole('button', { name: 'Delete…' }).click();
    const dialog = page.getByRole('dialog', { name: `Delete VM ${vmName}?` });
    await dialog.getByRole('button', { name: 'Delete VM' }).click();
    const note = dialog.locator('.error-note');
    await note.waitFor();
    const text = (await note.textContent()) ?? '';
    expect(text).toContain('Not possible right now');
    expect(text).toContain(refused.body.error.message);
    await shot('error-delete-running');
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached' });
    expect((await cluster.api<{ state: string }>('GET', `/api/v1/vms/${vmName}`)).body.state).toBe('running');
  });

  it('reaches and runs VM actions with the keyboard alone; dialogs keep the focus and close on Esc', async () => {
    await page.goto(`${base}/vms`);
    await page.locator(`tr[data-vm="${vmName}"]`).waitFor();
    await tabUntil(page, `the link to ${vmName}`, `el.tagName === 'A' && el.textContent === ${JSON.stringify(vmName)}`);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { level: 1, name: `VM ${vmName}` }).waitFor();
    // The new page's heading takes the focus.
    expect(await page.evaluate(() => document.activeElement?.tagName)).toBe('H1');

    await tabUntil(page, 'the Pause button', `el.tagName === 'BUTTON' && el.textContent === 'Pause'`);
    const outline = await page.evaluate(() => getComputedStyle(document.activeElement!).outlineStyle);
    expect(outline).not.toBe('none');
    await page.keyboard.press('Enter');
    await waitForVmState('paused');
    // The focused button is still focused (aria-disabled now), so Tab moves on from there.
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe('Pause');
    await tabUntil(page, 'the Resume button', `el.tagName === 'BUTTON' && el.textContent === 'Resume'`, 5);
    await page.keyboard.press('Enter');
    await waitForVmState('running');

    await tabUntil(page, 'the Delete button', `el.tagName === 'BUTTON' && el.textContent === 'Delete…'`, 20);
    await page.keyboard.press('Enter');
    const dialog = page.getByRole('dialog');
    await dialog.waitFor();
    for (let i = 0; i < 6; i++) {
      await page.keyboard.press(i % 2 ? 'Shift+Tab' : 'Tab');
      expect(await page.evaluate(() => Boolean(document.activeElement?.closest('dialog')))).toBe(true);
    }
    for (let i = 0; i < 4; i++) {
      await page.keyboard.press('Tab');
      expect(await page.evaluate(() => Boolean(document.activeElement?.closest('dialog')))).toBe(true);
    }
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached' });
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe('Delete…');
  });

  it('makes a join token and shows why a host with VMs cannot be removed', async () => {
    await page.getByRole('link', { name: 'Hosts' }).click();
    await page.locator('[data-host="h1"] .badge[data-state="online"]').waitFor();
    await page.getByRole('button', { name: 'Add a host…' }).click();
    const dialog = page.getByRole('dialog', { name: 'Add a host' });
    await dialog.getByRole('button', { name: 'Create join token' }).click();
    const token = await dialog.getByLabel('Join token (shown once)').inputValue();
    expect(token.length).toBeGreaterThanOrEqual(16);
    expect(await dialog.getByLabel('On the new host, as root').inputValue()).toContain(`--join-token ${token}`);
    await shot('hosts-join-token');
    await dialog.getByRole('button', { name: 'Done' }).click();

    const refused = await cluster.api<{ error: { message: string } }>('DELETE', '/api/v1/hosts/h1');
    expect(refused.status).toBe(409);
    await page.locator('[data-host="h1"]').getByRole('button', { name: 'Remove…' }).click();
    const confirm = page.getByRole('dialog', { name: 'Remove host h1?' });
    await confirm.getByRole('button', { name: 'Remove host' }).click();
    await confirm.locator('.error-note').getByText(refused.body.error.message).waitFor();
    await confirm.getByRole('button', { name: 'Cancel' }).click();
    await shot('hosts');
  });

  it('creates, resizes, downloads, uploads and deletes volumes on the storage page', async () => {
    await page.getByRole('link', { name: 'Storage' }).first().click();
    await page.getByRole('heading', { name: 'Volumes in default' }).waitFor();
    await page.getByRole('button', { name: 'Create volume…' }).click();
    let dialog = page.getByRole('dialog', { name: 'Create a volume in default' });
    await dialog.getByLabel('Name').fill('ui-disk.qcow2');
    await dialog.getByLabel('Size').fill('16M');
    await dialog.getByRole('button', { name: 'Create volume' }).click();
    const row = page.locator('tr[data-volume="ui-disk.qcow2"]');
    await row.getByText('16 MiB').waitFor();

    await row.getByRole('button', { name: /Resize/ }).click();
    dialog = page.getByRole('dialog', { name: 'Resize ui-disk.qcow2' });
    await dialog.getByLabel('New size').fill('32M');
    await dialog.getByRole('button', { name: 'Resize' }).click();
    await row.getByText('32 MiB').waitFor();

    // Download: the link carries the session cookie like any same-origin request.
    const href = await row.getByRole('link', { name: /Download/ }).getAttribute('href');
    const download = await page.request.get(`${base}${href}`);
    expect(download.status()).toBe(200);
    expect((await download.body()).subarray(0, 4).toString('latin1')).toBe('QFI\xfb');

    await page.getByRole('button', { name: 'Upload…' }).click();
    dialog = page.getByRole('dialog', { name: 'Upload a volume to default' });
    await dialog.getByLabel('Image file').setInputFiles({ name: 'ui-upload.raw', mimeType: 'application/octet-stream', buffer: Buffer.alloc(1024 * 1024, 7) });
    expect(await dialog.getByLabel('Volume name').inputValue()).toBe('ui-upload.raw');
    await dialog.getByRole('button', { name: 'Upload' }).click();
    await page.locator('tr[data-volume="ui-upload.raw"]').getByText('1 MiB').first().waitFor();
    await shot('storage');

    for (const name of ['ui-disk.qcow2', 'ui-upload.raw']) {
      await page.locator(`tr[data-volume="${name}"]`).getByRole('button', { name: /Delete/ }).click();
      await page.getByRole('dialog', { name: `Delete volume ${name}?` }).getByRole('button', { name: 'Delete volume' }).click();
      await page.locator(`tr[data-volume="${name}"]`).waitFor({ state: 'detached' });
    }
  });

  it('lists operations with their outcome, newest first', async () => {
    await page.getByRole('link', { name: 'Operations' }).first().click();
    const rows = page.locator('tr[data-op]');
    await rows.first().waitFor();
    const kinds = await rows.locator('td[data-label="Operation"]').allTextContents();
    // Newest first: the resume (keyboard test) comes before the first start.
    expect(kinds.indexOf('Resume')).toBeLessThan(kinds.lastIndexOf('Start'));
    await rows.first().getByRole('link').first().click();
    await page.getByRole('heading', { name: /^Operation / }).waitFor();
    await shot('operations');
  });

  it('fits a phone screen (390 px) without horizontal overflow', async () => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, storageState: await desktop.storageState(), isMobile: true, hasTouch: true });
    try {
      const small = await phone.newPage();
      for (const [route, name, ready] of [
        ['/', 'dashboard', '.host-card'],
        ['/vms', 'vms', `tr[data-vm="${vmName}"]`],
        [`/vms/${vmName}`, 'vm', '.xterm-rows'],
        ['/hosts', 'hosts', '[data-host="h1"]'],
        ['/storage', 'storage', 'tr[data-volume]'],
        ['/operations', 'operations', 'tr[data-op]'],
      ] as const) {
        await small.goto(`${base}${route}`);
        await small.locator(ready).first().waitFor();
        // xterm.js draws only while on screen.
        if (name === 'vm') await small.locator('.xterm-rows').scrollIntoViewIfNeeded();
        const overflow = await small.evaluate(() => ({ page: document.documentElement.scrollWidth, body: document.body.scrollWidth, view: window.innerWidth }));
        expect(overflow.page, `${route} is wider than the screen`).toBeLessThanOrEqual(overflow.view);
        expect(overflow.body, `${route} is wider than the screen`).toBeLessThanOrEqual(overflow.view);
        await shot(`phone-${name}`, small);
      }
    } finally {
      await phone.close();
    }
  });

  it('stops the VM and deletes it from its page', async () => {
    await page.goto(`${base}/vms/${vmName}`);
    await markDocument();
    await page.getByRole('toolbar', { name: 'VM actions' }).getByRole('button', { name: 'Stop' }).click();
    await waitForVmState('stopped', 120_000);
    expect(await vmStateBadge().textContent()).toBe('stopped');
    await page.getByText('The console is available while the VM runs.').waitFor();
    await page.getByRole('button', { name: 'Delete…' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Delete VM' }).click();
    await page.getByRole('heading', { level: 1, name: 'Virtual machines' }).waitFor();
    await vi.waitFor(async () => expect((await cluster.api('GET', `/api/v1/vms/${vmName}`)).status).toBe(404), { timeout: 60_000, interval: 250 });
    await page.locator(`tr[data-vm="${vmName}"]`).waitFor({ state: 'detached' });
    expect(await documentWasNotReloaded()).toBe(true);
  });
});

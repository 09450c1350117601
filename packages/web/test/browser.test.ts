import { execFile, execFileSync } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { AxeResults } from 'axe-core';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { startTestCluster, type TestCluster } from '@drover/manager/testing';
import { ApiClient } from '../src/api/client.js';
import { distDir, ensureBuilt, launchBrowser, repoRoot, shots, webDir } from './harness.js';
import { apiOnlyOperations, uiOperations } from './ui-coverage.js';

/**
 * The web console in real headless Chromium (Debian's, driven by
 * playwright-core), against a real manager with a real joined agent and real
 * QEMU guests. One cluster, one browser and one booted guest serve the whole
 * file; the tests run in order and build on each other.
 */

const vmName = 'web-ui';

let cluster: TestCluster;
let browser: Browser;
let desktop: BrowserContext;
let page: Page;
let base: string;
/** A local HTTP server (127.0.0.1) that the manager downloads images from. */
let files: http.Server | undefined;
let filesUrl = '';
let filesDir = '';
let cliHome = '';

/**
 * Serves, on 127.0.0.1: a small qcow2 disk image, a qcow2 with a backing file
 * (refused), a tiny ISO, and /slow, a trickle that lasts minutes (to cancel).
 */
async function startFileServer(): Promise<void> {
  filesDir = mkdtempSync(path.join(os.tmpdir(), 'drover-web-images-'));
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', 'small.qcow2', '32M'], { cwd: filesDir });
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', 'base.qcow2', '16M'], { cwd: filesDir });
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'bad.qcow2'], { cwd: filesDir });
  // An ISO 9660 image as the manager recognises one: whole 2048-byte sectors, "CD001" in sector 16.
  const iso = Buffer.alloc(20 * 2048);
  iso.write('\x01CD001\x01', 16 * 2048, 'latin1');
  iso.write('\xffCD001\x01', 17 * 2048, 'latin1');
  writeFileSync(path.join(filesDir, 'tiny.iso'), iso);
  files = http.createServer((request, response) => {
    if (request.url === '/slow') {
      response.writeHead(200, { 'content-length': String(64 * 1024 ** 2) });
      const timer = setInterval(() => response.write(Buffer.alloc(1024)), 100);
      response.on('close', () => clearInterval(timer));
      return;
    }
    const file = path.join(filesDir, path.basename(request.url ?? '/'));
    if (!existsSync(file)) {
      response.writeHead(404).end('no such file');
      return;
    }
    response.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(statSync(file).size) });
    createReadStream(file).pipe(response);
  });
  await new Promise<void>((resolve) => files!.listen(0, '127.0.0.1', resolve));
  filesUrl = `http://127.0.0.1:${(files.address() as AddressInfo).port}`;
}

interface ApiOperation {
  id: string;
  kind: string;
  targetId: string;
  state: string;
  error: { code: string; message: string } | null;
}

/** The newest operation of `kind` on `targetId`, through the API. */
async function lastOperation(kind: string, targetId: string): Promise<ApiOperation | undefined> {
  const ops = await cluster.api<{ items: ApiOperation[] }>('GET', '/api/v1/operations?limit=1000');
  return ops.body.items.filter((o) => o.kind === kind && o.targetId === targetId).at(-1);
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

/** axe-core's browser build, injected into the page for the accessibility checks. */
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
/** What each axe check found, summed up in the last test's output (so the cost stays visible). */
const axeRuns: Array<{ name: string; ms: number; passes: number; minor: number; incomplete: string[] }> = [];

/**
 * Runs axe-core on the whole page as it is now and fails on any violation of
 * impact "serious" or "critical" (the lesser ones are counted, not fatal).
 * The manager's CSP forbids inline scripts, so the source goes in through the
 * DevTools protocol (evaluate) rather than a <script> element; the page keeps
 * it until the next full load.
 */
async function checkAccessibility(name: string, target: Page = page): Promise<void> {
  const t0 = performance.now();
  if (!(await target.evaluate(() => 'axe' in window))) await target.evaluate(axeSource);
  const results = await target.evaluate(async () => {
    const axe = (window as unknown as { axe: { run: (context: Document, options: object) => Promise<AxeResults> } }).axe;
    const r = await axe.run(document, { resultTypes: ['violations'] });
    // Only the violations cross back whole; the rest is counted.
    return { violations: r.violations, passes: r.passes.length, incomplete: r.incomplete.map((i) => `${i.impact ?? ''} ${i.id} (${i.nodes.slice(0, 3).map((n) => n.target.join(' ')).join('; ')})`) };
  });
  // A page axe could not read at all would pass with nothing checked.
  expect(results.passes, `axe-core checked nothing on the ${name} page`).toBeGreaterThan(10);
  const serious = results.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const described = serious.map(
    (v) => `${v.impact} ${v.id}: ${v.help}\n${v.nodes.slice(0, 5).map((n) => `    ${n.target.join(' ')}  ${n.failureSummary?.replace(/\s+/g, ' ') ?? ''}`).join('\n')}`,
  );
  expect(described, `axe-core on the ${name} page (${target.url()})`).toEqual([]);
  axeRuns.push({ name, ms: performance.now() - t0, passes: results.passes, minor: results.violations.length - serious.length, incomplete: results.incomplete });
}

const cliMain = path.join(repoRoot, 'packages', 'cli', 'dist', 'main.js');

/** Runs the real `drover` CLI (its built binary) against the test cluster; fails on a non-zero exit. */
async function drover(...args: string[]): Promise<{ stdout: string; stderr: string }> {
  if (!existsSync(cliMain)) throw new Error(`${cliMain} is missing: build the CLI first (npx tsc -b)`);
  try {
    return await promisify(execFile)(process.execPath, [cliMain, ...args], {
      // An empty HOME: no operator's config file gets in the way.
      env: { PATH: process.env.PATH ?? '', HOME: cliHome, DROVER_URL: base, DROVER_TOKEN: cluster.manager.adminToken },
      timeout: 60_000,
    });
  } catch (error) {
    const e = error as Error & { stdout?: string; stderr?: string };
    throw new Error(`drover ${args.join(' ')} failed: ${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
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
  cliHome = mkdtempSync(path.join(os.tmpdir(), 'drover-web-cli-'));
  ensureBuilt();
  cluster = await startTestCluster({ manager: { webRoot: distDir } });
  base = cluster.manager.url;
  browser = await launchBrowser();
  desktop = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await desktop.newPage();
  page.setDefaultTimeout(30_000);
});

afterAll(async () => {
  await browser?.close().catch(() => undefined);
  await cluster?.close();
  if (files) {
    files.closeAllConnections();
    await new Promise((resolve) => files!.close(resolve));
  }
  if (filesDir) rmSync(filesDir, { recursive: true, force: true });
  if (cliHome) rmSync(cliHome, { recursive: true, force: true });
  if (axeRuns.length) {
    const total = axeRuns.reduce((sum, r) => sum + r.ms, 0);
    console.log(
      `axe-core: ${axeRuns.length} checks in ${(total / 1000).toFixed(1)} s\n` +
        axeRuns.map((r) => `  ${r.name}: ${r.passes} rules passed, ${r.minor} minor/moderate violations, needs review: ${r.incomplete.join(', ') || 'none'}`).join('\n'),
    );
  }
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
    await checkAccessibility('login');

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
    await checkAccessibility('dashboard');
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
    await checkAccessibility('Create VM dialog');
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
    // xterm.js draws only while the terminal is on screen (it pauses below the fold), as a user sees it.
    await terminal.scrollIntoViewIfNeeded();
    await vi.waitFor(async () => expect(await terminal.locator('.xterm-rows').textContent()).toMatch(/DROVER-READY appliance=web/), { timeout: 30_000, interval: 250 });
    await shot('vm-serial-console');
    // The VM page of a running VM, with its serial console (xterm.js) connected.
    await checkAccessibility('VM');
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

  it('adds a disk and a NIC to the running VM on its page (hotplug), and removes the disk again', async () => {
    const section = page.locator('section[aria-labelledby="vm-devices"]');
    // The image's own boot disk and NIC, as the host has them.
    await section.locator('tr[data-disk]').first().waitFor();
    await section.locator('tr[data-nic]').first().waitFor();

    await section.getByRole('button', { name: 'Add disk…' }).click();
    let dialog = page.getByRole('dialog', { name: `Add a disk to ${vmName}` });
    await dialog.getByLabel('Size').fill('16M');
    await dialog.getByLabel('Volume name').fill('ui-hot.qcow2');
    await dialog.getByRole('button', { name: 'Add disk' }).click();
    // The dialog follows the operation and closes once the host has plugged the disk in.
    await dialog.waitFor({ state: 'detached', timeout: 60_000 });
    const row = section.locator('tr[data-disk="ui-hot.qcow2"]');
    await row.getByText('added').waitFor();
    const vm = await cluster.api<{ state: string; spec: { addedDisks?: unknown[] } }>('GET', `/api/v1/vms/${vmName}`);
    expect(vm.body.state).toBe('running');
    expect(vm.body.spec.addedDisks).toEqual([{ pool: 'default', volume: 'ui-hot.qcow2', created: true }]);
    const disks = await cluster.api<Array<{ volume: string; added: boolean; readOnly: boolean }>>('GET', `/api/v1/vms/${vmName}/disks`);
    expect(disks.body.find((d) => d.volume === 'ui-hot.qcow2')).toMatchObject({ added: true, readOnly: false });

    const mac = '52:54:00:7e:b0:01';
    await section.getByRole('button', { name: 'Add NIC…' }).click();
    dialog = page.getByRole('dialog', { name: `Add a NIC to ${vmName}` });
    await dialog.getByLabel('MAC address').fill(mac);
    await dialog.getByRole('button', { name: 'Add NIC' }).click();
    await dialog.waitFor({ state: 'detached', timeout: 60_000 });
    await section.locator(`tr[data-nic="${mac}"]`).waitFor();
    expect((await cluster.api<{ spec: { addedNics?: unknown[] } }>('GET', `/api/v1/vms/${vmName}`)).body.spec.addedNics).toEqual([{ mac, forwards: [] }]);
    await section.scrollIntoViewIfNeeded();
    await shot('vm-devices');

    // Hot-unplugged: the guest releases the disk; the volume stays in its pool.
    await row.getByRole('button', { name: /Remove/ }).click();
    await page.getByRole('dialog', { name: `Remove disk ui-hot.qcow2 from ${vmName}?` }).getByRole('button', { name: 'Remove disk' }).click();
    await row.waitFor({ state: 'detached', timeout: 60_000 });
    expect((await cluster.api<{ spec: { addedDisks?: unknown[] } }>('GET', `/api/v1/vms/${vmName}`)).body.spec.addedDisks ?? []).toEqual([]);
    expect((await cluster.api('GET', '/api/v1/hosts/h1/pools/default/volumes/ui-hot.qcow2')).status).toBe(200);
  });

  it('shows a change made through the drover CLI without a reload', async () => {
    // The VM page is open (previous test); the real CLI binary edits the VM's labels.
    await page.getByRole('heading', { level: 1, name: `VM ${vmName}` }).waitFor();
    await markDocument();
    const edited = await drover('vm', 'edit', vmName, '--label', 'via=cli');
    expect(edited.stderr).toBe('');
    await page.locator('.details').getByText('via=cli').waitFor();
    expect((await cluster.api<{ labels: Record<string, string> }>('GET', `/api/v1/vms/${vmName}`)).body.labels).toEqual({ tier: 'web', via: 'cli' });

    // The list: a VM the CLI creates appears, and goes when the CLI deletes it.
    await page.getByRole('link', { name: 'VMs', exact: true }).click();
    await page.locator(`tr[data-vm="${vmName}"]`).waitFor();
    await drover('vm', 'create', 'from-cli', '--image', 'counter', '--label', 'via=cli');
    await page.locator('tr[data-vm="from-cli"]').waitFor();
    await drover('vm', 'delete', 'from-cli');
    await page.locator('tr[data-vm="from-cli"]').waitFor({ state: 'detached' });
    expect(await documentWasNotReloaded()).toBe(true);
    await page.getByRole('link', { name: vmName, exact: true }).click();
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
    await checkAccessibility('VM list');
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
    await checkAccessibility('hosts');
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
    await checkAccessibility('storage');

    for (const name of ['ui-disk.qcow2', 'ui-upload.raw']) {
      await page.locator(`tr[data-volume="${name}"]`).getByRole('button', { name: /Delete/ }).click();
      await page.getByRole('dialog', { name: `Delete volume ${name}?` }).getByRole('button', { name: 'Delete volume' }).click();
      await page.locator(`tr[data-volume="${name}"]`).waitFor({ state: 'detached' });
    }
  });

  it('imports a disk image from a URL on the Images page and sees it appear live', async () => {
    await startFileServer();
    await page.getByRole('link', { name: 'Images' }).first().click();
    await page.getByRole('heading', { level: 1, name: 'Images' }).waitFor();
    await page.locator('tr[data-image^="web:"]').getByText('Appliance').waitFor();
    await markDocument();
    await page.getByRole('button', { name: 'Import…' }).click();
    const dialog = page.getByRole('dialog', { name: 'Import an image' });
    await dialog.getByLabel('Name').fill('ui-disk');
    await dialog.getByLabel('URL', { exact: true }).fill(`${filesUrl}/small.qcow2`);
    await shot('images-import-dialog');
    await dialog.getByRole('button', { name: 'Import', exact: true }).click();
    const progress = page.getByRole('dialog', { name: 'Import ui-disk:1' });
    await progress.getByText('Imported ui-disk:1: Disk image (qcow2)').waitFor({ timeout: 60_000 });
    await progress.getByRole('button', { name: 'Close', exact: true }).click();
    // image.created came through the event stream: the row is there without a reload.
    const row = page.locator('tr[data-image="ui-disk:1"]');
    await row.getByText('Disk image (qcow2)').waitFor();
    await row.getByText(`${filesUrl}/small.qcow2`).waitFor();
    expect(await documentWasNotReloaded()).toBe(true);
    expect((await cluster.api<{ format: string; source: string }>('GET', '/api/v1/images/ui-disk:1')).body).toMatchObject({ format: 'qcow2', source: `${filesUrl}/small.qcow2` });
    await shot('images');
    await checkAccessibility('images');
  });

  it('shows the manager\'s reason for a refused import (a qcow2 with a backing file), and cancels one while it downloads', async () => {
    await page.getByRole('button', { name: 'Import…' }).click();
    let dialog = page.getByRole('dialog', { name: 'Import an image' });
    await dialog.getByLabel('Name').fill('ui-bad');
    await dialog.getByLabel('URL', { exact: true }).fill(`${filesUrl}/bad.qcow2`);
    await dialog.getByRole('button', { name: 'Import', exact: true }).click();
    dialog = page.getByRole('dialog', { name: 'Import ui-bad:1' });
    const note = dialog.locator('.error-note');
    await note.waitFor({ timeout: 60_000 });
    const refused = await lastOperation('image.import', 'ui-bad:1');
    expect(refused).toMatchObject({ state: 'failed', error: { code: 'invalid' } });
    expect(refused!.error!.message).toMatch(/backing file/);
    const text = (await note.textContent()) ?? '';
    expect(text).toContain('The image was refused');
    expect(text).toContain(refused!.error!.message);
    await shot('images-import-refused');
    await dialog.getByRole('button', { name: 'Close', exact: true }).click();
    expect((await cluster.api('GET', '/api/v1/images/ui-bad:1')).status).toBe(404);

    await page.getByRole('button', { name: 'Import…' }).click();
    dialog = page.getByRole('dialog', { name: 'Import an image' });
    await dialog.getByLabel('Name').fill('ui-slow');
    await dialog.getByLabel('URL', { exact: true }).fill(`${filesUrl}/slow`);
    await dialog.getByLabel('Format').selectOption('raw');
    await dialog.getByRole('button', { name: 'Import', exact: true }).click();
    dialog = page.getByRole('dialog', { name: 'Import ui-slow:1' });
    await dialog.getByText('Fetching the file…').waitFor();
    // The page lists it among the imports in progress too.
    await page.locator('li[data-import="ui-slow:1"]').waitFor();
    await dialog.getByRole('button', { name: 'Cancel import' }).click();
    await dialog.locator('.error-note').getByText('Cancelled:').waitFor();
    expect(await lastOperation('image.import', 'ui-slow:1')).toMatchObject({ state: 'cancelled', error: { code: 'cancelled' } });
    await dialog.getByRole('button', { name: 'Close', exact: true }).click();
    await page.locator('li[data-import="ui-slow:1"]').waitFor({ state: 'detached' });
    expect((await cluster.api('GET', '/api/v1/images/ui-slow:1')).status).toBe(404);
  });

  it('creates a VM of the imported disk image with an ISO, a disk size and cloud-init in the dialog; edits its seed', async () => {
    const iso = await cluster.api<{ id: string; state: string }>('POST', '/api/v1/images?wait=true', { name: 'ui-iso', source: { url: `${filesUrl}/tiny.iso` } });
    expect(iso.body.state).toBe('done');
    await page.locator('tr[data-image="ui-iso:1"]').getByText('ISO', { exact: true }).waitFor();

    await page.getByRole('link', { name: 'VMs', exact: true }).click();
    await page.getByRole('button', { name: 'Create VM' }).click();
    const dialog = page.getByRole('dialog', { name: 'Create a VM' });
    await dialog.getByLabel('Name').fill('ui-cloud');
    await dialog.getByLabel('Image').selectOption('ui-disk:1');
    await dialog.getByLabel('ISO (CD-ROM)').selectOption('ui-iso:1');
    await dialog.getByLabel('Disk size').fill('64M');
    await shot('create-vm-dialog-media');
    await dialog.locator('summary', { hasText: 'Cloud-init' }).click();
    const userData = '#cloud-config\nhostname: ui-cloud\n';
    await dialog.getByLabel('User data').fill(userData);
    const metaData = 'instance-id: ui-cloud-1\n';
    await dialog.getByLabel('Meta data').fill(metaData);
    await shot('create-vm-dialog-cloud-init');
    await dialog.getByRole('button', { name: 'Create VM' }).click();
    await page.getByRole('heading', { level: 1, name: 'VM ui-cloud' }).waitFor();

    const vm = await cluster.api<{ spec: Record<string, unknown> }>('GET', '/api/v1/vms/ui-cloud');
    expect(vm.body.spec).toMatchObject({ image: 'ui-disk:1', iso: 'ui-iso:1', diskSizeBytes: 64 * 1024 ** 2, cloudInit: { userDataBytes: userData.length, metaDataBytes: metaData.length } });
    const details = page.locator('.details');
    await details.getByText('ui-iso:1').waitFor();
    await details.getByText('64 MiB').waitFor();
    const seed = page.getByTestId('cloud-init-state');
    expect(await seed.textContent()).toContain(`user-data ${userData.length} B, meta-data ${metaData.length} B`);

    // The VM is defined: its seed can be removed (PATCH cloudInit null) and set again.
    await page.locator('summary', { hasText: 'Replace or remove the seed' }).click();
    await page.getByRole('button', { name: 'Remove the seed' }).click();
    await seed.filter({ hasText: 'This VM has no cloud-init seed.' }).waitFor();
    expect((await cluster.api<{ spec: Record<string, unknown> }>('GET', '/api/v1/vms/ui-cloud')).body.spec.cloudInit).toBeUndefined();
    await page.locator('section[aria-labelledby="vm-cloud-init"]').getByLabel('User data').fill('#!/bin/sh\necho hello\n');
    await page.getByRole('button', { name: 'Save the seed' }).click();
    await seed.filter({ hasText: 'user-data 21 B' }).waitFor();
    expect((await cluster.api<{ spec: Record<string, unknown> }>('GET', '/api/v1/vms/ui-cloud')).body.spec.cloudInit).toEqual({ userDataBytes: 21 });
    await shot('vm-media-cloud-init');
  });

  it('shows why an image a VM uses cannot be deleted, and deletes it once unused', async () => {
    await page.getByRole('link', { name: 'Images' }).first().click();
    const row = page.locator('tr[data-image="ui-disk:1"]');
    await row.getByRole('link', { name: 'ui-cloud' }).waitFor();
    const refused = await cluster.api<{ error: { message: string } }>('DELETE', '/api/v1/images/ui-disk:1');
    expect(refused.status).toBe(409);
    await row.getByRole('button', { name: /Delete/ }).click();
    const confirm = page.getByRole('dialog', { name: 'Delete image ui-disk:1?' });
    await confirm.getByRole('button', { name: 'Delete image' }).click();
    const note = confirm.locator('.error-note');
    await note.waitFor();
    expect(await note.textContent()).toContain(`Not possible right now: ${refused.body.error.message}`);
    await shot('images-delete-refused');
    await confirm.getByRole('button', { name: 'Cancel' }).click();

    expect((await cluster.api<{ state: string }>('DELETE', '/api/v1/vms/ui-cloud?wait=true')).body.state).toBe('done');
    // The VM left: the "Used by" cell follows, and the delete goes through.
    await row.getByRole('link', { name: 'ui-cloud' }).waitFor({ state: 'detached' });
    await row.getByRole('button', { name: /Delete/ }).click();
    await page.getByRole('dialog', { name: 'Delete image ui-disk:1?' }).getByRole('button', { name: 'Delete image' }).click();
    await row.waitFor({ state: 'detached', timeout: 60_000 });
    expect((await cluster.api('GET', '/api/v1/images/ui-disk:1')).status).toBe(404);
  });

  it('lists operations with their outcome, newest first', async () => {
    await page.getByRole('link', { name: 'Operations' }).first().click();
    const rows = page.locator('tr[data-op]');
    await rows.first().waitFor();
    const kinds = await rows.locator('td[data-label="Operation"]').allTextContents();
    // Newest first: the resume (keyboard test) comes before the first start.
    expect(kinds.indexOf('Resume')).toBeLessThan(kinds.lastIndexOf('Start'));
    await checkAccessibility('operations');
    await rows.first().getByRole('link').first().click();
    await page.getByRole('heading', { name: /^Operation / }).waitFor();
    await shot('operations');
    await checkAccessibility('operation');
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
        ['/images', 'images', 'tr[data-image]'],
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

/* eslint-disable @typescript-eslint/no-explicit-any -- loosely typed JSON answers of the API, read field by field */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { expect } from 'vitest';
import { startAgent, type AgentConfig, type RunningAgent } from '@drover/agent';
import { freePort, tempDir, testAgentConfig } from '@drover/agent/testing';
import { defaultApplianceCacheDir } from '@drover/appliances';
import { defaultManagerConfig, startManager, type RunningManager, type StartManagerOptions } from '@drover/manager';

/**
 * Shared setup of the browser tests: where the built console and the
 * screenshots live, building the console when its sources are newer, a
 * small JSON client of the manager's API, polling, launching headless
 * Chromium and logging in with the admin token.
 */
export const webDir = path.resolve(import.meta.dirname, '..');
export const distDir = path.join(webDir, 'dist');
export const repoRoot = path.resolve(webDir, '../..');
export const shots = process.env.DROVER_SCREENSHOTS ?? path.join(repoRoot, 'test-results', 'web-console');
export const chromiumPath = process.env.DROVER_CHROMIUM ?? '/usr/bin/chromium';

/** Builds the console with vite when dist/index.html is older than its sources. */
export function ensureBuilt(): void {
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

/** Builds the console if needed and makes the screenshot directory. */
export function prepareConsole(): void {
  ensureBuilt();
  mkdirSync(shots, { recursive: true });
}

export type Api = <T = any>(method: string, route: string, body?: unknown, token?: string) => Promise<{ status: number; body: T }>;

/** A JSON client of the manager `current()` returns, with its admin token unless another is given. */
export function managerApi(current: () => RunningManager | undefined): Api {
  return async <T = any>(method: string, route: string, body?: unknown, token?: string): Promise<{ status: number; body: T }> => {
    const manager = current()!;
    const response = await fetch(`${manager.url}${route}`, {
      method,
      headers: { authorization: `Bearer ${token ?? manager.adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    return { status: response.status, body: (text && (response.headers.get('content-type') ?? '').includes('json') ? JSON.parse(text) : text) as T };
  };
}

/** Polls `probe` every `everyMs` until it answers something truthy; fails after `timeoutMs`. */
export async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 120_000, everyMs = 200): Promise<T> {
  for (const deadline = Date.now() + timeoutMs; ; ) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Launches headless Chromium (Debian's, or DROVER_CHROMIUM) without the sandbox, GPU or background traffic. */
export function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: chromiumPath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** Launches headless Chromium and opens a page (1280×1000 unless told) with a 30 s default timeout. */
export async function launchChromium(viewport = { width: 1280, height: 1000 }): Promise<{ browser: Browser; page: Page }> {
  const browser = await launchBrowser();
  const page = await (await browser.newContext({ viewport })).newPage();
  page.setDefaultTimeout(30_000);
  return { browser, page };
}

/** Opens `url`, logs in with the admin token and waits for the page's level-1 heading. */
export async function logInWithToken(page: Page, url: string, token: string, heading: string): Promise<void> {
  await page.goto(url);
  await page.getByLabel('Admin token').fill(token);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { level: 1, name: heading }).waitFor();
}

/** Starts a manager in `dataDir` on a free loopback port, serving the built console (500 ms heartbeat, the shared appliance cache). */
export function startConsoleManager(dataDir: string, options?: StartManagerOptions): Promise<RunningManager> {
  return startManager({ ...defaultManagerConfig(dataDir), listen: '127.0.0.1:0', heartbeatMs: 500, applianceCacheDir: defaultApplianceCacheDir(), webRoot: distDir }, options);
}

/** Joins one agent named `hostName` (state in `stateDir`) to the manager and waits until it is online. */
export async function joinHost(api: Api, manager: RunningManager, stateDir: string, hostName = 'h1'): Promise<RunningAgent> {
  const join = await api<{ token: string }>('POST', '/api/v1/hosts/join-tokens', {});
  const agent = await startAgent(testAgentConfig(stateDir, { listen: `127.0.0.1:${await freePort()}`, hostName }), { join: { managerUrl: manager.url, token: join.body.token } });
  await until(`${hostName} online`, async () => (await api('GET', '/api/v1/hosts')).body.items.some((h: any) => h.name === hostName && h.state === 'online'), 60_000, 100);
  return agent;
}

/**
 * Joins one agent per name of `hostNames` to the manager (state directories
 * named `${prefix}-${hostName}`, pushed to `dirs`; one shared `default` pool
 * at `sharedDir`), pushes them to `agents` and waits for all to be online.
 */
export async function joinSharedPoolHosts(
  api: Api,
  manager: RunningManager,
  options: { prefix: string; hostNames: string[]; sharedDir: string; dirs: string[]; agents: RunningAgent[]; config?: Partial<AgentConfig> },
): Promise<void> {
  for (const hostName of options.hostNames) {
    const stateDir = tempDir(`${options.prefix}-${hostName}`);
    options.dirs.push(stateDir);
    const join = await api<{ token: string }>('POST', '/api/v1/hosts/join-tokens', {});
    const config = testAgentConfig(stateDir, { listen: `127.0.0.1:${await freePort()}`, hostName, ...options.config, pools: [{ name: 'default', path: options.sharedDir, shared: true }] });
    options.agents.push(await startAgent(config, { join: { managerUrl: manager.url, token: join.body.token } }));
  }
  await until('both hosts online', async () => {
    const hosts = await api('GET', '/api/v1/hosts');
    return hosts.body.items.length === options.hostNames.length && hosts.body.items.every((h: any) => h.state === 'online');
  });
}

/** Makes an empty 16 MiB qcow2 under `${dataDir}/import` and imports it as the image "tiny" (with `version` if given), waiting for the import. */
export async function importTinyImage(api: Api, dataDir: string, version?: string): Promise<void> {
  const importDir = path.join(dataDir, 'import');
  mkdirSync(importDir, { recursive: true });
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(importDir, 'tiny.qcow2'), '16M']);
  expect((await api('POST', '/api/v1/images?wait=true', { name: 'tiny', ...(version === undefined ? {} : { version }), source: { path: path.join(importDir, 'tiny.qcow2') } })).body.state).toBe('done');
}

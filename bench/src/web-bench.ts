import { createReadStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { chromium, type Browser } from 'playwright-core';
import { build, version as viteVersion } from 'vite';
import { median, now, report } from './stats.js';

/**
 * Issue 4's benchmark: the web console's weight and how soon it shows something,
 * next to an empty Vite app built and served the same way in the same run.
 *  1. Bundle size: the JS and CSS of each production build (source maps left
 *     out), raw and gzipped file by file; and what the first page actually
 *     loads (the console splits its two consoles, xterm.js and noVNC, into
 *     chunks that only a VM page fetches).
 *  2. Time to first render in headless Chromium (/usr/bin/chromium through
 *     playwright-core), a fresh browser context (cold cache) per load, both apps
 *     served by the same small static server on 127.0.0.1, each opened from a
 *     blank page of its origin (so the renderer process exists): navigation start →
 *     first contentful paint, and navigation start → the app's first screen in
 *     the DOM (the console's login form, after its GET /api/v1/session answers
 *     401; the empty app's heading). Median of the loads, taken alternately.
 * No target: the issue asks for the figures next to the baseline.
 * Drover's console is built from packages/web (its vite.config.ts) into a
 * temporary folder, so packages/web/dist, which a manager may be serving, is
 * never touched; it is the same build `npm run build -w packages/web` writes there.
 */
export async function runWebBench(options: { smoke: boolean }): Promise<boolean> {
  const loads = options.smoke ? 1 : 9;
  const work = mkdtempSync(path.join(os.tmpdir(), 'drover-bench-web-'));
  const servers: http.Server[] = [];
  let browser: Browser | undefined;
  try {
    // ---- the two builds
    const droverOut = path.join(work, 'drover');
    const emptyRoot = path.join(work, 'empty');
    const emptyOut = path.join(emptyRoot, 'dist');
    const t0 = now();
    await build({
      root: webDir,
      configFile: path.join(webDir, 'vite.config.ts'),
      mode: 'production',
      logLevel: 'warn',
      build: { outDir: droverOut, emptyOutDir: true, sourcemap: false, reportCompressedSize: false },
    });
    const droverBuildMs = now() - t0;
    writeEmptyApp(emptyRoot);
    const t1 = now();
    await build({
      root: emptyRoot,
      configFile: false,
      mode: 'production',
      logLevel: 'warn',
      build: { outDir: emptyOut, emptyOutDir: true, sourcemap: false, reportCompressedSize: false },
    });
    const emptyBuildMs = now() - t1;

    const droverSize = bundleSize(droverOut);
    const emptySize = bundleSize(emptyOut);
    const baselineName = 'empty Vite app';
    process.stdout.write(
      `\nweb benchmark: bundle (Vite ${viteVersion} production builds made in this run; JS + CSS, source maps left out; gzip -6 file by file)\n`,
    );
    report({ name: 'bundle JS+CSS', figure: droverSize.bytes / 1024, baseline: emptySize.bytes / 1024, baselineName, unit: 'KiB' });
    report({ name: 'bundle JS+CSS gzip', figure: droverSize.gzip / 1024, baseline: emptySize.gzip / 1024, baselineName, unit: 'KiB' });
    process.stdout.write(
      `  console: ${droverSize.files.map((f) => `${f.name} ${(f.bytes / 1024).toFixed(1)} KiB (${(f.gzip / 1024).toFixed(1)} gzip)`).join(', ')}\n` +
        `  empty app: ${emptySize.files.map((f) => `${f.name} ${(f.bytes / 1024).toFixed(1)} KiB`).join(', ')}\n` +
        `  build: console ${(droverBuildMs / 1000).toFixed(1)} s, empty app ${(emptyBuildMs / 1000).toFixed(1)} s\n`,
    );

    // ---- the loads
    const droverUrl = await serve(droverOut, servers);
    const emptyUrl = await serve(emptyOut, servers);
    browser = await chromium.launch({
      executablePath: process.env.DROVER_CHROMIUM ?? '/usr/bin/chromium',
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const apps = [
      { name: 'console', url: `${droverUrl}/`, ready: 'form.login input[type="password"]', runs: [] as Load[] },
      { name: 'empty', url: `${emptyUrl}/`, ready: '#app h1', runs: [] as Load[] },
    ];
    // One load each first, not counted (the browser's own first-navigation costs), except in smoke mode.
    for (let round = options.smoke ? 0 : -1; round < loads; round++) {
      for (const app of round % 2 ? [...apps].reverse() : apps) {
        const load = await measureLoad(browser, app.url, app.ready);
        if (round >= 0) app.runs.push(load);
      }
    }
    const [console_, empty] = apps as [(typeof apps)[0], (typeof apps)[0]];
    const fcp = (runs: Load[]) => median(runs.map((r) => r.fcpMs));
    const ready = (runs: Load[]) => median(runs.map((r) => r.readyMs));
    process.stdout.write(
      `\nweb benchmark: time to first render (headless Chromium, cold cache, both served by a node static server on 127.0.0.1, opened from a blank page of the same origin, ${loads} load${loads > 1 ? 's' : ''} each, median)\n`,
    );
    report({ name: 'first contentful paint', figure: fcp(console_.runs), baseline: fcp(empty.runs), baselineName, unit: 'ms' });
    report({ name: 'first screen in the DOM', figure: ready(console_.runs), baseline: ready(empty.runs), baselineName, unit: 'ms' });
    const spread = (values: number[]) => `${Math.min(...values).toFixed(0)}–${Math.max(...values).toFixed(0)} ms`;
    if (loads > 1) {
      process.stdout.write(
        `  spread (min–max): FCP console ${spread(console_.runs.map((r) => r.fcpMs))}, empty ${spread(empty.runs.map((r) => r.fcpMs))}; ` +
          `first screen console ${spread(console_.runs.map((r) => r.readyMs))}, empty ${spread(empty.runs.map((r) => r.readyMs))}\n`,
      );
    }
    const first = console_.runs[0]!;
    process.stdout.write(
      `  first screen: the console's login form (after GET /api/v1/session → 401), the empty app's heading\n` +
        `  the console's first page loaded ${(first.scriptCssBytes / 1024).toFixed(1)} KiB of JS + CSS in ${first.scriptCssFiles} files ` +
        `(of ${(droverSize.bytes / 1024).toFixed(1)} KiB: the serial and VNC consoles load with a VM page); the empty app ${(empty.runs[0]!.scriptCssBytes / 1024).toFixed(1)} KiB\n`,
    );
    return true;
  } finally {
    await browser?.close().catch(() => undefined);
    for (const server of servers) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
    rmSync(work, { recursive: true, force: true });
  }
}

const here = path.dirname(fileURLToPath(import.meta.url));
/** packages/web, from bench/src or bench/dist. */
const webDir = path.resolve(here, '..', '..', 'packages', 'web');

/** The baseline: what `npm create vite` would leave with nothing in it — an HTML page and one module that renders a heading. */
function writeEmptyApp(root: string): void {
  mkdirSync(root, { recursive: true });
  writeFileSync(
    path.join(root, 'index.html'),
    '<!doctype html>\n<html lang="en">\n  <head>\n    <meta charset="utf-8" />\n    <meta name="viewport" content="width=device-width, initial-scale=1" />\n' +
      '    <title>Empty</title>\n  </head>\n  <body>\n    <div id="app"></div>\n    <script type="module" src="/main.js"></script>\n  </body>\n</html>\n',
  );
  writeFileSync(path.join(root, 'main.js'), "document.querySelector('#app').innerHTML = '<main><h1>Hello</h1><p>An empty Vite app.</p></main>';\n");
}

interface Size {
  bytes: number;
  gzip: number;
  files: Array<{ name: string; bytes: number; gzip: number }>;
}

/** JS and CSS files of a build (recursively), raw and gzipped one by one, as a server would send them. */
function bundleSize(dir: string): Size {
  const files = (readdirSync(dir, { recursive: true, encoding: 'utf8' }) as string[])
    .filter((f) => /\.(m?js|css)$/.test(f) && statSync(path.join(dir, f)).isFile())
    .sort()
    .map((f) => {
      const body = readFileSync(path.join(dir, f));
      return { name: path.basename(f), bytes: body.length, gzip: gzipSync(body, { level: 6 }).length };
    });
  if (files.length === 0) throw new Error(`no JS or CSS in ${dir}`);
  return { bytes: files.reduce((s, f) => s + f.bytes, 0), gzip: files.reduce((s, f) => s + f.gzip, 0), files };
}

const types: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.json': 'application/json',
};

/**
 * A static server for a build folder on 127.0.0.1, the same for both apps:
 * files as they are (no compression), index.html for any other path,
 * /api/* answered 401 like a manager to a browser without a session, and
 * /__blank, an empty page to open first.
 */
async function serve(root: string, servers: http.Server[]): Promise<string> {
  const server = http.createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://127.0.0.1');
    if (url.pathname === '/__blank') {
      response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end('<!doctype html><title>blank</title>');
      return;
    }
    if (url.pathname.startsWith('/api/')) {
      response.writeHead(401, { 'content-type': 'application/json' }).end('{"error":{"code":"unauthenticated","message":"No session"}}');
      return;
    }
    let file = path.join(root, path.normalize(decodeURIComponent(url.pathname)).replace(/^(\.\.[/\\])+/, ''));
    if (!file.startsWith(root) || !existsSync(file) || !statSync(file).isFile()) file = path.join(root, 'index.html');
    response.writeHead(200, { 'content-type': types[path.extname(file)] ?? 'application/octet-stream', 'content-length': String(statSync(file).size), 'cache-control': 'no-cache' });
    createReadStream(file).pipe(response);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

interface Load {
  fcpMs: number;
  readyMs: number;
  scriptCssBytes: number;
  scriptCssFiles: number;
}

/** One cold load in a fresh context: FCP and the moment `selector` is in the DOM, both from navigation start (the page's time origin). */
async function measureLoad(browser: Browser, url: string, selector: string): Promise<Load> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  try {
    const page = await context.newPage();
    // Runs before the page's own scripts: notes performance.now() when the selector first matches.
    await page.addInitScript((sel: string) => {
      const w = globalThis as unknown as { droverReady?: number; document: { querySelector(s: string): unknown; documentElement: unknown }; MutationObserver: new (cb: () => void) => { observe(n: unknown, o: object): void; disconnect(): void } };
      const observer = new w.MutationObserver(() => {
        if (w.droverReady === undefined && w.document.querySelector(sel)) {
          w.droverReady = performance.now();
          observer.disconnect();
        }
      });
      observer.observe(w.document, { childList: true, subtree: true });
    }, selector);
    // A blank page of the same origin first: the renderer process is there, the cache still cold for the app's files.
    await page.goto(new URL('/__blank', url).href);
    await page.goto(url);
    await page.waitForSelector(selector, { state: 'attached', timeout: 30_000 });
    // Paint entries come a frame after the content; wait for FCP (buffered) up to 5 s.
    const measured = await page.evaluate(`new Promise((resolve) => {
      const done = () => {
        const fcp = performance.getEntriesByName('first-contentful-paint')[0];
        const res = performance.getEntriesByType('resource').filter((e) => /\\.(m?js|css)(\\?|$)/.test(e.name));
        resolve({ fcpMs: fcp ? fcp.startTime : NaN, readyMs: window.droverReady ?? NaN,
          scriptCssBytes: res.reduce((s, e) => s + e.decodedBodySize, 0), scriptCssFiles: res.length });
      };
      if (performance.getEntriesByName('first-contentful-paint').length) return done();
      new PerformanceObserver(() => done()).observe({ type: 'paint', buffered: true });
      setTimeout(done, 5000);
    })`);
    const load = measured as Load;
    if (!Number.isFinite(load.fcpMs)) throw new Error(`${url}: Chromium reported no first-contentful-paint`);
    if (!Number.isFinite(load.readyMs)) throw new Error(`${url}: ${selector} never appeared (by the page's clock)`);
    return load;
  } finally {
    await context.close();
  }
}

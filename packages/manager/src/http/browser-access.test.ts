import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { tempDir } from '@drover/agent/testing';
import { startTestCluster, type TestCluster } from '../testing/cluster.js';

/**
 * What a browser needs from the manager, on real parts: a session cookie
 * instead of a bearer header (with CSRF and Origin checks), single-use tickets
 * for streams, the VM's serial console and screen relayed from its host over
 * mutual TLS, and the web console's files.
 */
const webRoot = tempDir('webroot');
let cluster: TestCluster;
let wsBase: string;

beforeAll(async () => {
  mkdirSync(path.join(webRoot, 'assets'));
  writeFileSync(path.join(webRoot, 'index.html'), '<!doctype html><title>Drover</title><div id="root"></div>');
  writeFileSync(path.join(webRoot, 'assets', 'app-1234.js'), 'console.log("drover")');
  cluster = await startTestCluster({ manager: { webRoot } });
  wsBase = cluster.manager.url.replace('http', 'ws');
});

afterAll(async () => {
  await cluster?.close();
  rmSync(webRoot, { recursive: true, force: true });
});

async function signIn(): Promise<string> {
  const answer = await fetch(`${cluster.manager.url}/api/v1/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: cluster.manager.adminToken }) });
  expect(answer.status).toBe(201);
  const cookie = answer.headers.get('set-cookie')!;
  expect(cookie).toMatch(/HttpOnly/);
  expect(cookie).toMatch(/SameSite=Strict/);
  return cookie.split(';')[0]!;
}

/** Opens a WebSocket; resolves with it once open, or with the HTTP status it was refused with. */
function openSocket(url: string, headers: Record<string, string> = {}): Promise<WebSocket | number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.once('error', reject);
  });
}

function firstBytes(ws: WebSocket, count: number, timeoutMs = 30_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => reject(new Error(`only ${got.length} bytes arrived`)), timeoutMs);
    ws.on('message', (data: Buffer) => {
      got = Buffer.concat([got, data]);
      if (got.length >= count) {
        clearTimeout(timer);
        resolve(got);
      }
    });
  });
}

/** Runs `drover vm console VM --attach`, types `input`, waits for `until` on stdout, then sends Ctrl-]. */
function attachWithCli(vm: string, input: string, until: RegExp): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../cli/dist/main.js');
  const child = spawn(process.execPath, [cli, 'vm', 'console', vm, '--attach'], {
    env: { PATH: process.env.PATH, HOME: webRoot, DROVER_URL: cluster.manager.url, DROVER_TOKEN: cluster.manager.adminToken },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    // Type once connected, and again now and then: the shell may still be starting.
    if (stderr.includes('Connected')) child.stdin.write(input);
  });
  const retype = setInterval(() => stderr.includes('Connected') && child.stdin.write(input), 3000);
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    if (until.test(stdout)) child.stdin.write(Buffer.from([0x1d]));
  });
  return new Promise((resolve) =>
    child.on('exit', (code) => {
      clearTimeout(timer);
      clearInterval(retype);
      resolve({ code, stdout, stderr });
    }),
  );
}

describe('browser sessions', () => {
  it('exchanges the token for a cookie; a wrong token gets the error shape and no cookie', async () => {
    const wrong = await fetch(`${cluster.manager.url}/api/v1/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: 'not-the-token' }) });
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get('set-cookie')).toBeNull();
    expect(((await wrong.json()) as { error: { code: string } }).error.code).toBe('unauthenticated');
    const cookie = await signIn();
    const me = await cluster.api<{ actor: string; expiresAt: string }>('GET', '/api/v1/session', undefined, { authorization: '', cookie });
    expect(me.status).toBe(200);
    expect(me.body.actor).toBe('admin');
    expect(Date.parse(me.body.expiresAt)).toBeGreaterThan(Date.now());
    expect((await cluster.api('GET', '/api/v1/vms', undefined, { authorization: '', cookie })).status).toBe(200);
  });

  it('refuses a change made with the cookie but without the CSRF header, or from another origin; creates nothing', async () => {
    const cookie = await signIn();
    const asBrowser = { authorization: '', cookie };
    const noHeader = await cluster.api<{ error: { code: string; message: string } }>('POST', '/api/v1/vms', { name: 'csrf1', image: 'counter' }, asBrowser);
    expect(noHeader.status).toBe(403);
    expect(noHeader.body.error.message).toContain('X-Drover-CSRF');
    const foreign = await cluster.api('POST', '/api/v1/vms', { name: 'csrf1', image: 'counter' }, { ...asBrowser, 'x-drover-csrf': '1', origin: 'http://evil.example' });
    expect(foreign.status).toBe(403);
    expect((await cluster.api('GET', '/api/v1/vms/csrf1')).status).toBe(404);
    const ok = await cluster.api<{ name: string }>('POST', '/api/v1/vms', { name: 'csrf1', image: 'counter' }, { ...asBrowser, 'x-drover-csrf': '1', origin: cluster.manager.url });
    expect(ok.status).toBe(201);
    expect((await cluster.api('DELETE', '/api/v1/vms/csrf1?wait=true')).status).toBe(200);
  });

  it('refuses a forged or signed-out cookie', async () => {
    const cookie = await signIn();
    const [name, value] = cookie.split('=') as [string, string];
    const parts = value.split('.');
    parts[1] = Buffer.from('root').toString('base64url');
    const forged = `${name}=${parts.join('.')}`;
    expect((await cluster.api('GET', '/api/v1/vms', undefined, { authorization: '', cookie: forged })).status).toBe(401);
    const out = await cluster.api('DELETE', '/api/v1/session', undefined, { authorization: '', cookie, 'x-drover-csrf': '1' });
    expect(out.status).toBe(204);
    expect((await cluster.api('GET', '/api/v1/vms', undefined, { authorization: '', cookie })).status).toBe(401);
  });

  it('authenticates a stream once with a ticket', async () => {
    const ticket = await cluster.api<{ ticket: string }>('POST', '/api/v1/tickets', {});
    expect(ticket.status).toBe(201);
    const ws = await openSocket(`${wsBase}/api/v1/events/ws?ticket=${ticket.body.ticket}`);
    expect(ws).toBeInstanceOf(WebSocket);
    (ws as WebSocket).close();
    expect(await openSocket(`${wsBase}/api/v1/events/ws?ticket=${ticket.body.ticket}`)).toBe(401);
    expect(await openSocket(`${wsBase}/api/v1/events/ws`)).toBe(401);
    // A ticket is only for streams.
    const other = await cluster.api<{ ticket: string }>('POST', '/api/v1/tickets', {});
    expect((await fetch(`${cluster.manager.url}/api/v1/vms?ticket=${other.body.ticket}`)).status).toBeGreaterThanOrEqual(400);
  });
});

describe('consoles through the manager', () => {
  it('relays the serial console and the VNC screen of a running VM; unknown and never-run VMs are refused before the upgrade', async () => {
    const cookie = await signIn();
    expect(await openSocket(`${wsBase}/api/v1/vms/nope/console/serial`, { cookie })).toBe(404);
    const created = await cluster.api<{ id: string }>('POST', '/api/v1/vms', { name: 'screen', image: 'counter', memoryMiB: 128 });
    expect(await openSocket(`${wsBase}/api/v1/vms/screen/console/vnc`, { cookie })).toBe(409);
    expect((await cluster.api<{ state: string }>('POST', '/api/v1/vms/screen/start?wait=true', {})).body.state).toBe('done');

    const serial = await openSocket(`${wsBase}/api/v1/vms/screen/console/serial`, { cookie });
    expect(serial).toBeInstanceOf(WebSocket);
    const text = await new Promise<string>((resolve, reject) => {
      let seen = '';
      const timer = setTimeout(() => reject(new Error(`no counter line in: ${seen.slice(-300)}`)), 90_000);
      (serial as WebSocket).on('message', (data: Buffer) => {
        seen += data.toString('utf8');
        if (/DROVER-COUNTER gen=\d+/.test(seen)) {
          clearTimeout(timer);
          resolve(seen);
        }
      });
    });
    expect(text).toMatch(/DROVER-COUNTER gen=\d+/);
    (serial as WebSocket).close();

    // The CLI attaches to the same console: what it types runs in the guest's shell; Ctrl-] detaches.
    const attached = await attachWithCli('screen', 'echo ATTACHED-$((6*7))\n', /ATTACHED-42/);
    expect(attached.code).toBe(0);
    expect(attached.stdout).toMatch(/ATTACHED-42/);
    expect(attached.stderr).toContain('Detached');

    // The screen: an RFB server greets with its protocol version.
    const ticket = await cluster.api<{ ticket: string }>('POST', '/api/v1/tickets', {});
    const vnc = await openSocket(`${wsBase}/api/v1/vms/${created.body.id}/console/vnc?ticket=${ticket.body.ticket}`);
    expect(vnc).toBeInstanceOf(WebSocket);
    const greeting = await firstBytes(vnc as WebSocket, 12);
    expect(greeting.subarray(0, 12).toString('latin1')).toMatch(/^RFB 003\.00\d\n$/);
    (vnc as WebSocket).close();
    expect((await cluster.api<{ state: string }>('POST', '/api/v1/vms/screen/force-off?wait=true', {})).body.state).toBe('done');
  });
});

describe('web console files', () => {
  it('serves the app without a token, answers client-side routes with index.html, and keeps the API closed', async () => {
    const index = await fetch(`${cluster.manager.url}/`);
    expect(index.status).toBe(200);
    expect(await index.text()).toContain('<div id="root">');
    expect(index.headers.get('content-security-policy')).toContain("default-src 'self'");
    const deep = await fetch(`${cluster.manager.url}/vms/screen`, { headers: { accept: 'text/html' } });
    expect(deep.status).toBe(200);
    expect(await deep.text()).toContain('<div id="root">');
    const asset = await fetch(`${cluster.manager.url}/assets/app-1234.js`);
    expect(asset.status).toBe(200);
    expect(asset.headers.get('cache-control')).toContain('immutable');
    expect((await fetch(`${cluster.manager.url}/assets/missing.js`)).status).toBe(404);
    expect((await fetch(`${cluster.manager.url}/api/v1/vms`, { headers: { accept: 'text/html' } })).status).toBe(401);
    const unknownApi = await cluster.api<{ error: { code: string } }>('GET', '/api/v1/nothing-here', undefined, { accept: 'text/html' });
    expect(unknownApi.status).toBe(404);
    expect(unknownApi.body.error.code).toBe('not_found');
  });
});

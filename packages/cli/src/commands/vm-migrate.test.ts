import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeManager, runCli, type RunOptions } from '../fake-manager.js';

let manager: FakeManager;
const configHome = mkdtempSync(path.join(os.tmpdir(), 'drover-cli-migrate-'));

beforeAll(async () => {
  manager = await new FakeManager().start();
  manager.addVm('web1', { state: 'running' });
  manager.on('POST', /^\/api\/v1\/vms\/([^/]+)\/migrate$/, async (request, match) => {
    const body = request.body as { to: string };
    if (body.to === 'h1') return { status: 409, body: { error: { code: 'conflict', message: 'VM "web1" already runs on host "h1"', details: { reason: 'same-host' } } } };
    return {
      status: 202,
      body: manager.addOperation('vm.migrate', match[1]!, [
        { state: 'running', phase: 'perform', progress: 60 },
        { state: 'done', phase: 'done', progress: 100, result: { from: 'h1', to: body.to, qemuDowntimeMs: 12, totalTimeMs: 900 } },
      ]),
    };
  });
});
afterAll(async () => {
  await manager.close();
  rmSync(configHome, { recursive: true, force: true });
});

function drover(argv: string[], options: RunOptions = {}) {
  return runCli(argv, { ...options, env: { DROVER_URL: manager.url, DROVER_TOKEN: manager.token, XDG_CONFIG_HOME: configHome, ...options.env } });
}

describe('drover vm migrate', () => {
  it('sends the options as the migrate request and follows the operation with the progress bar', async () => {
    const result = await drover(['vm', 'migrate', 'web1', '--to', 'h2', '--storage', '--downtime-ms', '100', '--bandwidth', '200M', '--mirror-bandwidth', '50M'], { stderrIsTTY: true });
    expect(result.code, result.stderr).toBe(0);
    const post = manager.requestsTo('POST', '/api/v1/vms/web1/migrate').at(-1)!;
    expect(post.body).toEqual({ to: 'h2', storage: true, downtimeMs: 100, bandwidth: 200 * 1024 * 1024, mirrorBandwidth: 50 * 1024 * 1024 });
    expect(post.headers['idempotency-key']).toBeDefined();
    expect(result.stderr).toContain('migrate web1 → h2 [##############..........]  60%  perform');
    expect(result.stdout).toBe('Migrated VM web1 from h1 to h2 (900 ms in all, 12 ms downtime).\n');
  });

  it('refuses a bandwidth below 1M and needs --to', async () => {
    expect((await drover(['vm', 'migrate', 'web1', '--to', 'h2', '--bandwidth', '1K'])).code).toBe(2);
    expect((await drover(['vm', 'migrate', 'web1', '--to', 'h2', '--storage', '--mirror-bandwidth', '1K'])).code).toBe(2);
    expect((await drover(['vm', 'migrate', 'web1'])).code).toBe(2);
  });

  it("prints the manager's refusal and its exit code", async () => {
    const result = await drover(['vm', 'migrate', 'web1', '--to', 'h1', '--postcopy']);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('already runs on host "h1"');
    expect(manager.requestsTo('POST', '/api/v1/vms/web1/migrate').at(-1)!.body).toEqual({ to: 'h1', postcopy: true });
  });
});

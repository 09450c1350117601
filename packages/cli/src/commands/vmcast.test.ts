import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeManager, runCli, type RunOptions } from '../fake-manager.js';

let manager: FakeManager;
const configHome = mkdtempSync(path.join(os.tmpdir(), 'drover-cli-vmcast-'));
const pem = '-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAexampleexampleexampleexampleexampleexam=\n-----END PUBLIC KEY-----\n';

beforeAll(async () => {
  manager = await new FakeManager().start();
  const follow = (vm: string, body: Record<string, unknown>) => ({ vmId: 'x', vm, channel: body.channel ?? 'web', policy: body.policy ?? 'auto', held: false, currentRelease: 'web:1', pendingRelease: null, maintenanceWindow: null, updatedAt: '' });
  manager.on('PUT', /^\/api\/v1\/vms\/([^/]+)\/follow$/, async (request, match) => ({ status: 200, body: follow(match[1]!, request.body as Record<string, unknown>) }));
  manager.on('POST', /^\/api\/v1\/vms\/([^/]+)\/follow\/hold$/, async (_r, match) => ({ status: 200, body: { ...follow(match[1]!, {}), held: true } }));
  manager.on('POST', /^\/api\/v1\/vmcast\/subscriptions$/, async (request) => ({ status: 201, body: { ...(request.body as object), id: 'x' } }));
  manager.on('POST', /^\/api\/v1\/vmcast\/subscriptions\/([^/]+)\/poll$/, async (_r, match) => ({
    status: 200,
    body: { subscription: match[1], status: 200, bodyBytes: 1234, imported: ['web 2.0'], quarantined: [{ release: 'web 3.0', reason: 'its signature does not verify with the pinned key' }], failed: [] },
  }));
});
afterAll(async () => {
  await manager.close();
  rmSync(configHome, { recursive: true, force: true });
});

function drover(argv: string[], options: RunOptions = {}) {
  return runCli(argv, { ...options, env: { DROVER_URL: manager.url, DROVER_TOKEN: manager.token, XDG_CONFIG_HOME: configHome, ...options.env } });
}

describe('drover vm follow, subscription', () => {
  it('makes a VM follow a channel with a policy and a window, and holds it', async () => {
    const result = await drover(['vm', 'follow', 'web1', 'web', '--policy', 'auto', '--window', '02:00-04:00']);
    expect(result.code, result.stderr).toBe(0);
    expect(manager.requestsTo('PUT', '/api/v1/vms/web1/follow').at(-1)!.body).toEqual({ channel: 'web', policy: 'auto', maintenanceWindow: '02:00-04:00' });
    expect(result.stdout).toBe('VM web1 follows web (auto).\n');
    expect((await drover(['vm', 'hold', 'web1'])).stdout).toBe('VM web1 is held.\n');
  });

  it('refuses an unknown policy before calling the manager', async () => {
    const before = manager.requests.length;
    const result = await drover(['vm', 'follow', 'web1', 'web', '--policy', 'sometimes']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--policy must be auto, notify or pinned');
    expect(manager.requests.length).toBe(before);
  });

  it('subscribes with a pinned key read from a file and prints what a poll did', async () => {
    const file = path.join(configHome, 'pub.pem');
    writeFileSync(file, pem);
    const added = await drover(['subscription', 'add', 'web', 'http://127.0.0.1:1/feed.rss', '--key', file, '--allow-host', '127.0.0.1']);
    expect(added.code, added.stderr).toBe(0);
    expect(manager.requestsTo('POST', '/api/v1/vmcast/subscriptions').at(-1)!.body).toEqual({ name: 'web', url: 'http://127.0.0.1:1/feed.rss', pinnedKeys: [pem], allowedHosts: ['127.0.0.1'] });
    const polled = await drover(['subscription', 'poll', 'web']);
    expect(polled.stdout).toBe('Feed answered 200 (1234 bytes).\nImported web 2.0.\nQuarantined web 3.0: its signature does not verify with the pinned key\n');
  });
});

import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeManager, runCli, type RunOptions } from '../fake-manager.js';

let manager: FakeManager;
const configHome = mkdtempSync(path.join(os.tmpdir(), 'drover-cli-power-'));

beforeAll(async () => {
  manager = await new FakeManager().start();
  manager.on('POST', /^\/api\/v1\/hosts\/([^/]+)\/evacuate$/, async (request, match) => {
    const body = request.body as { dryRun?: boolean };
    if (match[1] === 'last') return { status: 409, body: { error: { code: 'conflict', message: 'Cannot evacuate host "last": 1 VM(s) cannot move ("web1": host "last" is the last online host: there is nowhere to go); nothing was changed', details: {} } } };
    if (body.dryRun) {
      return {
        status: 200,
        body: {
          hostId: 'x',
          hostName: match[1],
          moves: [{ vmId: 'a', vmName: 'web1', policy: 'live-migrate', toHostId: 'y', toHostName: 'h2' }],
          stops: [{ vmId: 'b', vmName: 'batch', policy: 'stop' }],
          stays: [{ vmId: 'c', vmName: 'old', policy: 'live-migrate', reason: 'it is stopped; its disks stay on the host' }],
          cannotMove: [{ vmId: 'd', vmName: 'pinned', policy: 'live-migrate', reason: 'VM "pinned" is pinned to host "h1"' }],
        },
      };
    }
    return { status: 202, body: manager.addOperation('host.evacuate', 'x', [{ state: 'done', phase: 'done', progress: 100, result: { moved: ['web1'], stopped: ['batch'], stayed: ['old'] } }]) };
  });
  manager.on('POST', /^\/api\/v1\/hosts\/([^/]+)\/restore$/, async () => ({
    status: 202,
    body: manager.addOperation('host.restore', 'x', [{ state: 'done', phase: 'done', progress: 100, result: { returned: ['web1', 'batch'] } }]),
  }));
  manager.on('POST', /^\/api\/v1\/hosts\/([^/]+)\/maintenance$/, async (_request, match) => ({ status: 200, body: { name: match[1], state: 'maintenance' } }));
  manager.on('POST', /^\/api\/v1\/hosts\/([^/]+)\/power\/(\w+)$/, async () => ({
    status: 202,
    body: manager.addOperation('host.power', 'x', [{ state: 'done', phase: 'done', progress: 100, result: { state: 'off' } }]),
  }));
  manager.on('PUT', /^\/api\/v1\/hosts\/([^/]+)\/power$/, async (request, match) => ({
    status: 200,
    body: { hostName: match[1], driver: (request.body as { driver: string }).driver, actions: ['on', 'off', 'cycle', 'status'] },
  }));
  manager.on('PUT', /^\/api\/v1\/power\/policy$/, async (request) => ({ status: 200, body: request.body }));
  manager.on('PUT', /^\/api\/v1\/vms\/([^/]+)\/ha$/, async (_request, match) => ({ status: 200, body: { name: match[1] } }));
});
afterAll(async () => {
  await manager.close();
  rmSync(configHome, { recursive: true, force: true });
});

function drover(argv: string[], options: RunOptions = {}) {
  return runCli(argv, { ...options, env: { DROVER_URL: manager.url, DROVER_TOKEN: manager.token, XDG_CONFIG_HOME: configHome, ...options.env } });
}

describe('drover host maintenance, evacuate, restore, power', () => {
  it('shows the evacuation plan of a dry run, with what cannot move and why', async () => {
    const result = await drover(['host', 'evacuate', 'h1', '--dry-run']);
    expect(result.code, result.stderr).toBe(0);
    expect(manager.requestsTo('POST', '/api/v1/hosts/h1/evacuate').at(-1)!.body).toEqual({ dryRun: true });
    expect(result.stdout).toContain('Evacuation plan for host h1 (dry run, nothing changed)');
    expect(result.stdout).toMatch(/web1\s+live-migrate\s+move to h2/);
    expect(result.stdout).toMatch(/pinned\s+live-migrate\s+CANNOT MOVE: VM "pinned" is pinned to host "h1"/);
    expect(result.stdout).toContain('1 VM(s) cannot move: the evacuation would be refused.');
  });

  it('evacuates with a concurrency cap and restores, following the operations', async () => {
    const evacuated = await drover(['host', 'evacuate', 'h1', '--concurrency', '3']);
    expect(evacuated.code, evacuated.stderr).toBe(0);
    expect(manager.requestsTo('POST', '/api/v1/hosts/h1/evacuate').at(-1)!.body).toEqual({ concurrency: 3 });
    expect(evacuated.stdout).toBe('Evacuated host h1: 1 moved, 1 stopped, 1 stayed.\n');
    const restored = await drover(['host', 'restore', 'h1']);
    expect(restored.stdout).toBe('Restored host h1: 2 VM(s) back.\n');
    const maintenance = await drover(['host', 'maintenance', 'h1']);
    expect(maintenance.stdout).toBe('Host h1 is in maintenance.\n');
  });

  it("prints the manager's refusal to evacuate the last host", async () => {
    const result = await drover(['host', 'evacuate', 'last']);
    expect(result.code).toBe(4);
    expect(result.stderr).toContain('is the last online host');
  });

  it('powers a host and sets its driver; refuses an unknown action or driver before asking the manager', async () => {
    const off = await drover(['host', 'power', 'h3', 'off']);
    expect(off.code, off.stderr).toBe(0);
    expect(off.stdout).toBe('Host h3: power off.\n');
    expect((await drover(['host', 'power', 'h3', 'explode'])).code).toBe(2);
    const set = await drover(['host', 'power-config', 'h3', '--driver', 'ipmi', '--address', '10.0.0.3', '--username', 'admin', '--password-env', 'BMC_PW'], { env: { BMC_PW: 'pw' } });
    expect(set.code, set.stderr).toBe(0);
    expect(manager.requestsTo('PUT', '/api/v1/hosts/h3/power').at(-1)!.body).toEqual({ driver: 'ipmi', address: '10.0.0.3', username: 'admin', password: 'pw' });
    expect((await drover(['host', 'power-config', 'h3', '--driver', 'telepathy'])).code).toBe(2);
  });

  it('marks a VM HA', async () => {
    const result = await drover(['vm', 'ha', 'db1', 'on']);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toBe('VM db1: HA on.\n');
    expect(manager.requestsTo('PUT', '/api/v1/vms/db1/ha').at(-1)!.body).toEqual({ enabled: true });
    expect((await drover(['vm', 'ha', 'db1', 'maybe'])).code).toBe(2);
  });

  it('sets the power policy', async () => {
    const result = await drover(['power', 'policy-set', '--window', '22:00-06:00', '--time-zone', 'Europe/Berlin', '--spare', '1', '--enable']);
    expect(result.code, result.stderr).toBe(0);
    expect(manager.requestsTo('PUT', '/api/v1/power/policy').at(-1)!.body).toEqual({ enabled: true, timeZone: 'Europe/Berlin', window: '22:00-06:00', spareHosts: 1, wattsPerHost: 200, reserveMemoryPercent: 10, headroomPercent: 10 });
  });
});

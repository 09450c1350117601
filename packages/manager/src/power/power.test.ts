/* eslint-disable @typescript-eslint/no-explicit-any -- loosely typed JSON answers of the API, read field by field */
import { chmodSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '@drover/agent/testing';
import { startTestCluster, type TestCluster } from '../testing/cluster.js';

/**
 * Host power settings, power actions, maintenance and the power policy's
 * refusals on a one-host cluster (a real manager and agent). The command
 * driver's scripts keep the "power" in a file; switching the host off does
 * not stop its agent here, so switching it on brings it straight back.
 */
let cluster: TestCluster;
const dir = tempDir('power-api');
const powerFile = path.join(dir, 'power');
const script = path.join(dir, 'power.sh');

beforeAll(async () => {
  writeFileSync(powerFile, 'on\n');
  writeFileSync(script, `#!/bin/sh\ncase "$1" in\n  on|off) echo "$1" > "${powerFile}";;\n  status) cat "${powerFile}";;\nesac\n`);
  chmodSync(script, 0o755);
  cluster = await startTestCluster({ hostName: 'p1', manager: { powerVerifyMs: 2000 } });
});

afterAll(async () => {
  await cluster?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function hostState(): Promise<string> {
  return (await cluster.api<any>('GET', '/api/v1/hosts/p1')).body.state;
}

async function until(what: string, probe: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !(await probe()); ) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('host power settings', () => {
  it('keeps an IPMI password secret and refuses bad settings without changing anything', async () => {
    expect((await cluster.api<any>('GET', '/api/v1/hosts/p1/power')).body).toBeNull();
    const put = await cluster.api<any>('PUT', '/api/v1/hosts/p1/power', { driver: 'ipmi', address: '127.0.0.1', port: 6230, username: 'admin', password: 'top-secret' });
    expect(put.status).toBe(200);
    expect(put.body.settings).toEqual({ driver: 'ipmi', address: '127.0.0.1', port: 6230, username: 'admin', passwordSet: true });
    expect(JSON.stringify((await cluster.api('GET', '/api/v1/hosts/p1/power')).body)).not.toContain('top-secret');
    // Left out, the password is kept.
    expect((await cluster.api<any>('PUT', '/api/v1/hosts/p1/power', { driver: 'ipmi', address: '127.0.0.2', username: 'admin' })).body.settings.passwordSet).toBe(true);
    const bad = [
      { driver: 'wol', mac: 'zz:zz', address: '10.0.0.255' },
      { driver: 'command', on: 'true', off: 'true' },
      { driver: 'smoke-signals' },
      { driver: 'wol', mac: '52:54:00:00:00:01', address: 'broadcast' },
    ];
    for (const body of bad) {
      const answer = await cluster.api<any>('PUT', '/api/v1/hosts/p1/power', body);
      expect(answer.status, JSON.stringify(body)).toBe(400);
    }
    expect((await cluster.api<any>('GET', '/api/v1/hosts/p1/power')).body.settings.address).toBe('127.0.0.2');
    const unknown = await cluster.api<any>('POST', '/api/v1/hosts/p1/power/jump', {});
    expect([unknown.status, unknown.body.error.code]).toEqual([404, 'not_found']);
  });

  it('powers a host off and on through the command driver as operations; off is refused while it runs a VM', async () => {
    expect((await cluster.api('PUT', '/api/v1/hosts/p1/power', { driver: 'command', on: `${script} on`, off: `${script} off`, status: `${script} status` })).status).toBe(200);
    const status = await cluster.api<any>('POST', '/api/v1/hosts/p1/power/status?wait=true', {});
    expect([status.body.state, status.body.kind, status.body.result.state]).toEqual(['done', 'host.power', 'on']);

    const vm = await cluster.api<any>('POST', '/api/v1/vms', { name: 'busy', image: 'web', memoryMiB: 96 });
    expect((await cluster.api<any>('POST', `/api/v1/vms/${vm.body.id}/start?wait=true`, {})).body.state).toBe('done');
    const refused = await cluster.api<any>('POST', '/api/v1/hosts/p1/power/off', {});
    expect(refused.status).toBe(409);
    expect(refused.body.error.message).toBe('Cannot power off host "p1": it runs 1 VM(s); evacuate it first');
    expect(readFileSync(powerFile, 'utf8').trim()).toBe('on');
    expect((await cluster.api<any>('GET', `/api/v1/vms/${vm.body.id}`)).body.state).toBe('running');
    expect((await cluster.api<any>('POST', `/api/v1/vms/${vm.body.id}/force-off?wait=true`, {})).body.state).toBe('done');

    const off = await cluster.api<any>('POST', '/api/v1/hosts/p1/power/off?wait=true', {});
    expect(off.body.state, JSON.stringify(off.body)).toBe('done');
    expect(readFileSync(powerFile, 'utf8').trim()).toBe('off');
    expect(await hostState()).toBe('powered_off');
    // A powered-off host takes no VM.
    const start = await cluster.api<any>('POST', `/api/v1/vms/${vm.body.id}/start`, {});
    expect(start.status).toBe(409);
    const report = await cluster.api<any>('GET', '/api/v1/power/report');
    expect(report.body.hostsPoweredOff.map((h: any) => h.hostName)).toEqual(['p1']);

    const on = await cluster.api<any>('POST', '/api/v1/hosts/p1/power/on?wait=true', {});
    expect(on.body.state, JSON.stringify(on.body)).toBe('done');
    expect(readFileSync(powerFile, 'utf8').trim()).toBe('on');
    await until('the host online again', async () => (await hostState()) === 'online');
    const power = await cluster.api<any>('GET', '/api/v1/hosts/p1/power');
    expect(power.body.poweredOffAt).toBeNull();
    expect(power.body.hoursOff).toBeGreaterThan(0);
  });

  it('fails clearly when the driver lies, and leaves the host to its heartbeat', async () => {
    expect((await cluster.api('PUT', '/api/v1/hosts/p1/power', { driver: 'command', on: 'true', off: 'true', status: 'echo on', timeoutMs: 1000 })).status).toBe(200);
    const off = await cluster.api<any>('POST', '/api/v1/hosts/p1/power/off?wait=true', {});
    expect(off.body.state).toBe('failed');
    expect(off.body.error.message).toMatch(/reported "off" done, but the host's power is still on/);
    await until('the host online again', async () => (await hostState()) === 'online');
  });
});

describe('maintenance', () => {
  it('a host in maintenance takes no new VM; evacuating the last host is refused and stops nothing', async () => {
    const vm = await cluster.api<any>('POST', '/api/v1/vms', { name: 'lonely', image: 'web', memoryMiB: 96 });
    expect((await cluster.api<any>('POST', `/api/v1/vms/${vm.body.id}/start?wait=true`, {})).body.state).toBe('done');

    // HA needs shared storage: this host's default pool is local.
    const ha = await cluster.api<any>('PUT', `/api/v1/vms/${vm.body.id}/ha`, { enabled: true });
    expect(ha.status).toBe(409);
    expect(ha.body.error.message).toBe('Cannot mark VM "lonely" HA: its disks are on pool "default", which is not shared on host "p1"; HA needs shared storage');
    expect((await cluster.api<any>('GET', `/api/v1/vms/${vm.body.id}`)).body.spec.ha).toBeUndefined();

    const dry = await cluster.api<any>('POST', '/api/v1/hosts/p1/evacuate', { dryRun: true });
    expect(dry.status).toBe(200);
    expect(dry.body.cannotMove).toEqual([{ vmId: vm.body.id, vmName: 'lonely', policy: 'live-migrate', reason: 'host "p1" is the last online host: there is nowhere to go' }]);
    const refused = await cluster.api<any>('POST', '/api/v1/hosts/p1/evacuate', {});
    expect(refused.status).toBe(409);
    expect(refused.body.error.message).toContain('Cannot evacuate host "p1": 1 VM(s) cannot move ("lonely": host "p1" is the last online host');
    expect(await hostState()).toBe('online');
    expect((await cluster.api<any>('GET', `/api/v1/vms/${vm.body.id}`)).body.state).toBe('running');

    expect((await cluster.api<any>('POST', '/api/v1/hosts/p1/maintenance', {})).body.state).toBe('maintenance');
    const other = await cluster.api<any>('POST', '/api/v1/vms', { name: 'newcomer', image: 'web', memoryMiB: 96 });
    const start = await cluster.api<any>('POST', `/api/v1/vms/${other.body.id}/start`, {});
    expect(start.status).toBe(409);
    expect(start.body.error.message).toMatch(/maintenance/);
    // A VM with policy "stop" is stopped by an evacuation and started again by the restore.
    expect((await cluster.api<any>('PATCH', `/api/v1/vms/${vm.body.id}`, { evacuationPolicy: 'stop' })).body.spec.evacuationPolicy).toBe('stop');
    const evacuated = await cluster.api<any>('POST', '/api/v1/hosts/p1/evacuate?wait=true', {});
    expect(evacuated.body.state, JSON.stringify(evacuated.body)).toBe('done');
    expect(evacuated.body.result.stopped).toEqual(['lonely']);
    expect((await cluster.api<any>('GET', `/api/v1/vms/${vm.body.id}`)).body.state).toBe('stopped');
    const restorePlan = await cluster.api<any>('POST', '/api/v1/hosts/p1/restore', { dryRun: true });
    expect(restorePlan.body.returns.map((r: any) => [r.vmName, r.action])).toEqual([['lonely', 'start']]);
    const restored = await cluster.api<any>('POST', '/api/v1/hosts/p1/restore?wait=true', {});
    expect(restored.body.state, JSON.stringify(restored.body)).toBe('done');
    expect(await hostState()).toBe('online');
    expect((await cluster.api<any>('GET', `/api/v1/vms/${vm.body.id}`)).body.state).toBe('running');
    expect((await cluster.api<any>('POST', '/api/v1/hosts/p1/restore', { dryRun: true })).body.returns).toEqual([]);
    await cluster.api('POST', `/api/v1/vms/${vm.body.id}/force-off?wait=true`, {});
  });
});

describe('power policy', () => {
  const policy = { enabled: false, timeZone: 'Europe/Berlin', window: '22:00-06:00', spareHosts: 1, wattsPerHost: 250, reserveMemoryPercent: 10, headroomPercent: 10 };

  it('refuses a schedule that does not parse or an unknown time zone, keeping the old one', async () => {
    expect((await cluster.api<any>('PUT', '/api/v1/power/policy', policy)).status).toBe(200);
    const bad = await cluster.api<any>('PUT', '/api/v1/power/policy', { ...policy, window: 'nightly' });
    expect(bad.status).toBe(400);
    expect(bad.body.error.message).toBe('Power schedule window "nightly" does not parse: expected "HH:MM-HH:MM", e.g. "22:00-06:00"');
    const zone = await cluster.api<any>('PUT', '/api/v1/power/policy', { ...policy, timeZone: 'Mars/Olympus' });
    expect(zone.status).toBe(400);
    expect(zone.body.error.message).toContain('Unknown time zone "Mars/Olympus"');
    expect((await cluster.api<any>('GET', '/api/v1/power/policy')).body).toEqual(policy);
  });

  it('shows the night plan and the wake plan as dry runs, and reports the energy saved', async () => {
    const plan = await cluster.api<any>('POST', '/api/v1/power/night-plan', { dryRun: true });
    expect(plan.status).toBe(200);
    expect(plan.body).toMatchObject({ moves: [], powerOff: [], lowerBound: expect.any(Number), ffd: { hostsUsed: expect.any(Number) } });
    const wake = await cluster.api<any>('POST', '/api/v1/power/wake', { dryRun: true });
    expect(wake.body).toEqual({ powerOn: [], reason: 'manual' });
    const report = await cluster.api<any>('GET', '/api/v1/power/report');
    expect(report.body.hoursOff).toBeGreaterThan(0);
    expect(report.body.energySavedKWh).toBeCloseTo((report.body.hoursOff * 250) / 1000, 9);
    expect(existsSync(powerFile)).toBe(true);
  });
});

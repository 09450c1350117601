import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { VmDiskInfo, VmNicInfo } from '@drover/api';
import { FakeManager, runCli, type RecordedRequest, type RunOptions } from '../fake-manager.js';
import { diskAddBody } from './vm-devices.js';

let manager: FakeManager;
const configHome = mkdtempSync(path.join(os.tmpdir(), 'drover-cli-devices-'));

beforeAll(async () => {
  manager = await new FakeManager().start();
});
afterAll(async () => {
  await manager.close();
  rmSync(configHome, { recursive: true, force: true });
});

const disks: VmDiskInfo[] = [
  { index: 0, pool: 'default', volume: 'x.root.qcow2', readOnly: false, media: 'disk', boot: true, added: false },
  { index: 1, pool: 'fast', volume: 'data.qcow2', readOnly: true, media: 'disk', boot: false, added: true },
];
const nics: VmNicInfo[] = [
  { index: 0, mac: '52:54:00:00:00:01', forwards: [{ hostPort: 8080, guestPort: 80 }], added: false },
  { index: 1, mac: '52:54:00:00:00:02', forwards: [], added: true },
];

/** The device routes of the fake manager: lists, and operations for every change (with `result.live`). */
beforeEach(() => {
  manager.requests.length = 0;
  manager.vms.clear();
  manager.clearOverrides();
  const vm = manager.addVm('web1', { state: 'running' });
  const change = (kind: string) => (request: RecordedRequest) => {
    manager.nextScript = [{ state: 'done', phase: 'record', progress: 100, result: { live: true, ...(kind === 'vm.nic.add' ? { nic: { mac: (request.body as { mac?: string }).mac ?? '52:54:00:9a:bc:de' } } : {}) } }];
    return { status: 202, body: manager.addOperation(kind, vm.id) };
  };
  manager.on('GET', /^\/api\/v1\/vms\/web1\/disks$/, () => ({ status: 200, body: disks }));
  manager.on('GET', /^\/api\/v1\/vms\/web1\/nics$/, () => ({ status: 200, body: nics }));
  manager.on('POST', /^\/api\/v1\/vms\/web1\/disks$/, change('vm.disk.add'));
  manager.on('DELETE', /^\/api\/v1\/vms\/web1\/disks\/[^/]+$/, change('vm.disk.remove'));
  manager.on('POST', /^\/api\/v1\/vms\/web1\/nics$/, change('vm.nic.add'));
  manager.on('DELETE', /^\/api\/v1\/vms\/web1\/nics\/[^/]+$/, change('vm.nic.remove'));
});

function drover(argv: string[], options: RunOptions = {}) {
  return runCli(argv, { ...options, env: { DROVER_URL: manager.url, DROVER_TOKEN: manager.token, XDG_CONFIG_HOME: configHome, ...options.env } });
}

function last(method: string, route: string | RegExp): RecordedRequest {
  const found = manager.requestsTo(method, route);
  expect(found.length).toBeGreaterThan(0);
  return found.at(-1)!;
}

describe('drover vm disk', () => {
  it('lists the disks as a table, or as JSON', async () => {
    const table = await drover(['vm', 'disk', 'list', 'web1']);
    expect(table).toMatchObject({ code: 0, stderr: '' });
    expect(table.stdout).toBe(
      ['INDEX  POOL     VOLUME        MEDIA  MODE  BOOT  ADDED', '0      default  x.root.qcow2  disk   rw    yes   no', '1      fast     data.qcow2    disk   ro    no    yes', ''].join('\n'),
    );
    expect(JSON.parse((await drover(['vm', 'disk', 'ls', 'web1', '--json'])).stdout)).toEqual(disks);
  });

  it('adds a new empty disk (--size) or an existing volume (--volume), waiting for the operation', async () => {
    const fresh = await drover(['vm', 'disk', 'add', 'web1', '--size', '1G']);
    expect(fresh).toMatchObject({ code: 0, stdout: 'Added a new 1 GiB disk to VM web1 (hot-plugged).\n' });
    expect(last('POST', '/api/v1/vms/web1/disks').body).toEqual({ sizeBytes: 1024 ** 3 });
    expect(last('POST', '/api/v1/vms/web1/disks').headers['idempotency-key']).toBeTruthy();

    const named = await drover(['vm', 'disk', 'add', 'web1', '--size', '64M', '--name', 'scratch.qcow2', '--pool', 'fast']);
    expect(named.code).toBe(0);
    expect(last('POST', '/api/v1/vms/web1/disks').body).toEqual({ sizeBytes: 64 * 1024 ** 2, name: 'scratch.qcow2', pool: 'fast' });

    const existing = await drover(['vm', 'disk', 'add', 'web1', '--volume', 'data.qcow2', '--pool', 'fast', '--read-only', '--json']);
    expect(existing.code).toBe(0);
    expect(last('POST', '/api/v1/vms/web1/disks').body).toEqual({ volume: 'data.qcow2', pool: 'fast', readOnly: true });
    expect(JSON.parse(existing.stdout)).toMatchObject({ kind: 'vm.disk.add', state: 'done' });
  });

  it('refuses contradictory flags before any request', async () => {
    for (const argv of [
      ['vm', 'disk', 'add', 'web1'],
      ['vm', 'disk', 'add', 'web1', '--size', '1G', '--volume', 'x.qcow2'],
      ['vm', 'disk', 'add', 'web1', '--volume', 'x.qcow2', '--name', 'y'],
      ['vm', 'disk', 'add', 'web1', '--size', '1G', '--read-only'],
      ['vm', 'disk', 'add', 'web1', '--size', '12'],
    ]) {
      const result = await drover(argv);
      expect(result.code, argv.join(' ')).toBe(2);
      expect(result.stderr).toMatch(/^drover: /);
    }
    expect(manager.requestsTo('POST', '/api/v1/vms/web1/disks')).toHaveLength(0);
  });

  it('removes a disk by index or volume name; --no-wait prints the operation', async () => {
    expect((await drover(['vm', 'disk', 'remove', 'web1', '1'])).stdout).toBe('Removed disk 1 from VM web1 (hot-plugged).\n');
    expect(last('DELETE', '/api/v1/vms/web1/disks/1').headers['idempotency-key']).toBeTruthy();
    const queued = await drover(['vm', 'disk', 'rm', 'web1', 'data.qcow2', '--no-wait']);
    expect(queued.stdout).toMatch(/^Operation [0-9a-f-]{36} \(vm\.disk\.remove\) is pending; follow it with: drover op watch /);
    expect(manager.requestsTo('DELETE', '/api/v1/vms/web1/disks/data.qcow2')).toHaveLength(1);
  });

  it('exits with the code of the server\'s refusal', async () => {
    manager.on('POST', /^\/api\/v1\/vms\/web1\/disks$/, () => ({ status: 409, body: { error: { code: 'conflict', message: 'Volume "default/x" is attached to VM "db1"', details: {} } } }));
    const result = await drover(['vm', 'disk', 'add', 'web1', '--volume', 'x']);
    expect(result).toMatchObject({ code: 4, stdout: '', stderr: 'drover: Volume "default/x" is attached to VM "db1"\n' });
    const missing = await drover(['vm', 'disk', 'list', 'nobody']);
    expect(missing.code).toBe(3);
  });
});

describe('drover vm nic', () => {
  it('lists NICs with their forwards', async () => {
    const table = await drover(['vm', 'nic', 'list', 'web1']);
    expect(table.stdout).toBe(['INDEX  MAC                FORWARDS  ADDED', '0      52:54:00:00:00:01  8080->80  no', '1      52:54:00:00:00:02  -         yes', ''].join('\n'));
  });

  it('adds a NIC with a MAC (lower-cased) and forwards, or a generated MAC', async () => {
    const given = await drover(['vm', 'nic', 'add', 'web1', '--mac', '52:54:00:AA:bb:01', '--forward', '8081:80', '--forward', '2222:22']);
    expect(given).toMatchObject({ code: 0, stdout: 'Added NIC 52:54:00:aa:bb:01 to VM web1 (hot-plugged).\n' });
    expect(last('POST', '/api/v1/vms/web1/nics').body).toEqual({ mac: '52:54:00:aa:bb:01', forwards: [{ hostPort: 8081, guestPort: 80 }, { hostPort: 2222, guestPort: 22 }] });
    const generated = await drover(['vm', 'nic', 'add', 'web1']);
    expect(generated.stdout).toBe('Added NIC 52:54:00:9a:bc:de to VM web1 (hot-plugged).\n');
    expect(last('POST', '/api/v1/vms/web1/nics').body).toEqual({});
    const bad = await drover(['vm', 'nic', 'add', 'web1', '--mac', '52:54:00:aa']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/MAC address "52:54:00:aa" must look like/);
  });

  it('removes a NIC by MAC, escaped in the path', async () => {
    expect((await drover(['vm', 'nic', 'remove', 'web1', '52:54:00:00:00:02'])).stdout).toBe('Removed NIC 52:54:00:00:00:02 from VM web1 (hot-plugged).\n');
    expect(manager.requestsTo('DELETE', /^\/api\/v1\/vms\/web1\/nics\/52(%3A|:)54/)).toHaveLength(1);
  });
});

describe('drover vm show', () => {
  it('lists the added disks and NICs', async () => {
    const base = manager.vms.get('web1')!;
    manager.addVm('web2', { spec: { ...base.spec, addedDisks: [{ pool: 'fast', volume: 'data.qcow2', readOnly: true }], addedNics: [{ mac: '52:54:00:00:00:02', forwards: [] }] } });
    const shown = await drover(['vm', 'show', 'web2']);
    expect(shown.stdout).toMatch(/^Added disks: +fast\/data\.qcow2 \(ro\)$/m);
    expect(shown.stdout).toMatch(/^Added NICs: +52:54:00:00:00:02$/m);
  });
});

describe('diskAddBody', () => {
  it('defaults nothing the server decides', () => {
    expect(diskAddBody({ volume: 'a.qcow2', wait: true })).toEqual({ volume: 'a.qcow2' });
    expect(diskAddBody({ size: 1024 * 1024, wait: true })).toEqual({ sizeBytes: 1024 * 1024 });
  });
});

import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '@drover/agent';
import { freePort, tempDir, testAgentConfig } from '@drover/agent/testing';
import type { Operation, Vm, VmDiskInfo, VmNicInfo, VolumeInfo } from '@drover/api';
import { defaultApplianceCacheDir } from '@drover/appliances';
import { defaultManagerConfig } from '../config.js';
import { startManager, type RunningManager } from '../manager.js';

/**
 * Disks and NICs through the manager's API, on real parts: a manager, a real
 * agent joined over mutual TLS, and a web appliance guest under TCG that is
 * asked over its forwarded port what it sees (`/cgi-bin/devices`).
 */
const dataDir = tempDir('devices-manager');
const agentDir = tempDir('devices-agent');
let manager: RunningManager;
let agent: RunningAgent;
let port: number;
let vmId: string;

type ErrorAnswer = { error: { code: string; message: string } };

async function api<T = unknown>(method: string, route: string, body?: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(`${manager.url}${route}`, {
    method,
    headers: { authorization: `Bearer ${manager.adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  return { status: response.status, body: (text && (response.headers.get('content-type') ?? '').includes('json') ? JSON.parse(text) : text) as T };
}

async function done(method: string, route: string, body?: unknown): Promise<Operation> {
  const answer = await api<Operation>(method, route, body);
  expect(answer.status, JSON.stringify(answer.body)).toBe(200);
  expect(answer.body.state, JSON.stringify(answer.body.error)).toBe('done');
  return answer.body;
}

async function waitForSerial(vm: string, pattern: RegExp, offset = 0): Promise<void> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const log = await api<string>('GET', `/api/v1/vms/${vm}/console/serial/log?offset=${offset}`);
    if (pattern.test(String(log.body))) return;
    if (Date.now() > deadline) throw new Error(`no ${pattern} on the console of ${vm}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** What the guest sees: `disk <name> <KiB>` and `nic <name> <mac>` lines of /cgi-bin/devices. */
async function guestUntil(ready: (text: string) => boolean, what: string): Promise<string> {
  const deadline = Date.now() + 30_000;
  let last = '';
  for (;;) {
    try {
      last = await (await fetch(`http://127.0.0.1:${port}/cgi-bin/devices`, { signal: AbortSignal.timeout(5_000) })).text();
      if (ready(last)) return last;
    } catch (error) {
      last = (error as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`the guest never showed ${what}; last seen: ${last}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

beforeAll(async () => {
  manager = await startManager({ ...defaultManagerConfig(dataDir), listen: '127.0.0.1:0', heartbeatMs: 500, applianceCacheDir: defaultApplianceCacheDir() });
  const join = await api<{ token: string }>('POST', '/api/v1/hosts/join-tokens', {});
  agent = await startAgent(testAgentConfig(agentDir, { listen: `127.0.0.1:${await freePort()}`, hostName: 'h1' }), { join: { managerUrl: manager.url, token: join.body.token } });
  for (const deadline = Date.now() + 30_000; (await api<{ items: Array<{ state: string }> }>('GET', '/api/v1/hosts')).body.items[0]?.state !== 'online'; ) {
    if (Date.now() > deadline) throw new Error('host did not come online');
    await new Promise((r) => setTimeout(r, 100));
  }
  port = await freePort();
  const created = await api<Vm>('POST', '/api/v1/vms', { name: 'dev-a', image: 'web', memoryMiB: 128, forwards: [{ hostPort: port, guestPort: 80 }] });
  vmId = created.body.id;
  await done('POST', '/api/v1/vms/dev-a/start?wait=true', {});
  await waitForSerial('dev-a', /DROVER-READY appliance=web/);
});

afterAll(async () => {
  try {
    const vms = await api<{ items: Array<{ id: string; state: string }> }>('GET', '/api/v1/vms');
    for (const vm of vms.body.items) if (['running', 'paused'].includes(vm.state)) await api('POST', `/api/v1/vms/${vm.id}/force-off?wait=true`, {});
  } finally {
    await agent?.close();
    await manager?.close();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(agentDir, { recursive: true, force: true });
  }
});

describe('disks and NICs of a VM through the manager', () => {
  const mac = '52:54:00:6b:00:01';
  let createdVolume: string;

  it('hot-adds a new empty disk to the running VM as an operation; the guest sees it', async () => {
    const accepted = await api<Operation>('POST', '/api/v1/vms/dev-a/disks', { sizeBytes: 48 * 1024 * 1024 });
    expect(accepted.status).toBe(202);
    expect(accepted.body.kind).toBe('vm.disk.add');
    let op = accepted.body;
    while (['pending', 'running'].includes(op.state)) {
      await new Promise((r) => setTimeout(r, 100));
      op = (await api<Operation>('GET', `/api/v1/operations/${op.id}`)).body;
    }
    expect(op.state, JSON.stringify(op.error)).toBe('done');
    expect(op.result).toMatchObject({ live: true, host: 'h1', disk: { pool: 'default', index: 1 } });
    await guestUntil((text) => text.includes(`disk vdb ${48 * 1024}`), 'vdb of 48 MiB');

    const disks = (await api<VmDiskInfo[]>('GET', '/api/v1/vms/dev-a/disks')).body;
    expect(disks.map((d) => [d.index, d.boot, d.added])).toEqual([
      [0, true, false],
      [1, false, true],
    ]);
    createdVolume = disks[1]!.volume;
    expect(createdVolume).toMatch(new RegExp(`^${vmId}\\.disk-[0-9a-f]{6}\\.qcow2$`));
    const vm = (await api<Vm>('GET', '/api/v1/vms/dev-a')).body;
    expect(vm.spec.addedDisks).toEqual([{ pool: 'default', volume: createdVolume, created: true }]);
  });

  it('hot-adds a NIC; the guest gets an interface with its MAC', async () => {
    const op = await done('POST', '/api/v1/vms/dev-a/nics?wait=true', { mac });
    expect(op.result).toMatchObject({ live: true, nic: { mac, index: 1 } });
    await guestUntil((text) => text.includes(`nic eth1 ${mac}`), `eth1 with ${mac}`);
    const nics = (await api<VmNicInfo[]>('GET', '/api/v1/vms/dev-a/nics')).body;
    expect(nics.map((n) => [n.index, n.added])).toEqual([
      [0, false],
      [1, true],
    ]);
    expect(nics[1]!.mac).toBe(mac);
  });

  it('on a stopped VM the changes are made at once and kept; bad requests are 4xx and change nothing', async () => {
    // A second VM, started and powered off at once: it now has its disks on h1 and is stopped.
    await api('POST', '/api/v1/vms', { name: 'dev-b', image: 'web', memoryMiB: 96 });
    await done('POST', '/api/v1/vms/dev-b/start?wait=true', {});
    await done('POST', '/api/v1/vms/dev-b/force-off?wait=true', {});
    const b = (await api<Vm>('GET', '/api/v1/vms/dev-b')).body;
    // Fill it up to the most disks a VM may have (1 + 15), without a guest: the definition changes.
    for (let i = 0; i < 15; i++) {
      const op = await done('POST', '/api/v1/vms/dev-b/disks?wait=true', { sizeBytes: 1024 * 1024, name: `b-extra-${i}.raw` });
      expect(op.result).toMatchObject({ live: false });
    }
    expect((await api<VmDiskInfo[]>('GET', '/api/v1/vms/dev-b/disks')).body).toHaveLength(16);
    await api('POST', '/api/v1/vms', { name: 'dev-c', image: 'web' });

    const cases: Array<[string, string, string, unknown, number, RegExp]> = [
      ['an unknown volume', 'POST', '/api/v1/vms/dev-a/disks', { volume: 'missing.qcow2' }, 404, /Volume "default\/missing.qcow2" does not exist/],
      ['an unknown pool', 'POST', '/api/v1/vms/dev-a/disks', { volume: 'x.qcow2', pool: 'nope' }, 404, /Pool "nope" does not exist/],
      ['a volume another VM uses', 'POST', '/api/v1/vms/dev-a/disks', { volume: `${b.id}.root.qcow2` }, 409, /attached to VM "dev-b"/],
      ['a volume it already has', 'POST', '/api/v1/vms/dev-a/disks', { volume: createdVolume }, 409, /already attached to VM "dev-a"/],
      ['a new volume whose name is taken', 'POST', '/api/v1/vms/dev-a/disks', { sizeBytes: 1024 * 1024, name: 'b-extra-0.raw' }, 409, /already exists/],
      ['a 17th disk', 'POST', '/api/v1/vms/dev-b/disks', { sizeBytes: 1024 * 1024 }, 409, /16 disks, the most a VM may have/],
      ['a body of both kinds', 'POST', '/api/v1/vms/dev-a/disks', { volume: 'x.qcow2', sizeBytes: 1024 * 1024 }, 400, /./],
      ['a disk that is too small', 'POST', '/api/v1/vms/dev-a/disks', { sizeBytes: 1 }, 400, /./],
      ['the image\'s boot disk', 'DELETE', '/api/v1/vms/dev-a/disks/0', undefined, 409, /comes with its image and is its boot disk/],
      ['an unknown disk', 'DELETE', '/api/v1/vms/dev-a/disks/9', undefined, 404, /Disk "dev-a\/9" does not exist/],
      ['the image\'s NIC', 'DELETE', '/api/v1/vms/dev-a/nics/0', undefined, 409, /comes with its image/],
      ['an unknown NIC', 'DELETE', '/api/v1/vms/dev-a/nics/52:54:00:00:00:99', undefined, 404, /NIC "dev-a\/52:54:00:00:00:99" does not exist/],
      ['a MAC it already has', 'POST', '/api/v1/vms/dev-a/nics', { mac }, 409, /already used/],
      ['a host port in use on the host', 'POST', '/api/v1/vms/dev-b/nics', { forwards: [{ hostPort: port, guestPort: 80 }] }, 409, /already forwarded to VM "dev-a"/],
      ['a VM that never ran', 'POST', '/api/v1/vms/dev-c/disks', { sizeBytes: 1024 * 1024 }, 409, /it is defined; its disks are made on a host at its first start/],
      ['an unknown VM', 'POST', '/api/v1/vms/nobody/nics', {}, 404, /"nobody" does not exist/],
    ];
    const snapshot = async () =>
      JSON.stringify({
        vms: (await api<{ items: Vm[] }>('GET', '/api/v1/vms')).body.items.map((vm) => [vm.name, vm.rev]),
        ops: (await api<{ items: Operation[] }>('GET', '/api/v1/operations?limit=1000')).body.items.length,
        a: (await api<VmDiskInfo[]>('GET', '/api/v1/vms/dev-a/disks')).body,
        volumes: (await api<VolumeInfo[]>('GET', '/api/v1/hosts/h1/pools/default/volumes')).body.map((v) => v.name),
      });
    const before = await snapshot();
    for (const [what, method, route, body, status, message] of cases) {
      const answer = await api<ErrorAnswer>(method, route, body);
      expect(answer.status, `${what}: ${JSON.stringify(answer.body)}`).toBe(status);
      expect(answer.body.error.message, what).toMatch(message);
    }
    expect(await snapshot()).toBe(before);

    // Deleting the VM deletes the volumes made for it.
    await done('DELETE', '/api/v1/vms/dev-b?wait=true');
    const volumes = (await api<VolumeInfo[]>('GET', '/api/v1/hosts/h1/pools/default/volumes')).body.map((v) => v.name);
    expect(volumes.filter((v) => v.startsWith('b-extra-') || v.startsWith(b.id))).toEqual([]);
    await done('DELETE', '/api/v1/vms/dev-c?wait=true');
  });

  it('hot-removes the disk and the NIC; the guest no longer sees them and the volume stays', async () => {
    await done('DELETE', `/api/v1/vms/dev-a/disks/${createdVolume}?wait=true`);
    await guestUntil((text) => !text.includes('disk vdb'), 'vdb gone');
    await done('DELETE', `/api/v1/vms/dev-a/nics/${mac}?wait=true`);
    await guestUntil((text) => !text.includes('nic eth1'), 'eth1 gone');
    const vm = (await api<Vm>('GET', '/api/v1/vms/dev-a')).body;
    expect(vm.spec.addedDisks).toBeUndefined();
    expect(vm.spec.addedNics).toBeUndefined();
    const volume = (await api<VolumeInfo>('GET', `/api/v1/hosts/h1/pools/default/volumes/${createdVolume}`)).body;
    expect(volume.usedBy).toEqual([]);
  });

  it('keeps added devices across a restart (the host\'s definition is rewritten at each start)', async () => {
    await done('POST', '/api/v1/vms/dev-a/disks?wait=true', { volume: createdVolume, readOnly: true });
    await done('POST', '/api/v1/vms/dev-a/nics?wait=true', { mac });
    await done('POST', '/api/v1/vms/dev-a/force-off?wait=true', {});
    const offset = Number((await fetch(`${manager.url}/api/v1/vms/dev-a/console/serial/log`, { headers: { authorization: `Bearer ${manager.adminToken}` } })).headers.get('x-log-size'));
    await done('POST', '/api/v1/vms/dev-a/start?wait=true', {});
    await waitForSerial('dev-a', /DROVER-READY appliance=web/, offset);
    const seen = await guestUntil((text) => text.includes('disk vdb') && text.includes('nic eth1'), 'vdb and eth1 after the restart');
    expect(seen).toContain(`disk vdb ${48 * 1024}`);
    expect(seen).toContain(`nic eth1 ${mac}`);
    // Removing a disk while the VM is paused is refused at once: the guest must run to release it.
    await done('POST', '/api/v1/vms/dev-a/pause?wait=true', {});
    const paused = await api<ErrorAnswer>('DELETE', `/api/v1/vms/dev-a/disks/1`);
    expect(paused.status).toBe(409);
    expect(paused.body.error.message).toMatch(/it is paused; resume it first/);
    await done('POST', '/api/v1/vms/dev-a/resume?wait=true', {});
  });
});

import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VmInfo } from '@drover/api';
import { defineApplianceVm, freePort, importAppliance, startTestAgent, type ImportedAppliance, type TestAgent } from './testing/harness.js';

/**
 * Disk and NIC hotplug on a real guest: a web appliance under TCG, asked over
 * its forwarded HTTP port what it sees (`/cgi-bin/devices` lists
 * /proc/partitions and /sys/class/net). One guest is shared by the steps, in
 * the order an operator would take them.
 */
let t: TestAgent;
let web: ImportedAppliance;
let id: string;
let port: number;
const pool = 'default';

interface GuestDevices {
  disks: Map<string, number>;
  nics: Map<string, string>;
}

async function guestDevices(): Promise<GuestDevices> {
  const text = await (await fetch(`http://127.0.0.1:${port}/cgi-bin/devices`, { signal: AbortSignal.timeout(5_000) })).text();
  const disks = new Map<string, number>();
  const nics = new Map<string, string>();
  for (const line of text.split('\n')) {
    const [kind, name, value] = line.trim().split(/\s+/);
    if (kind === 'disk' && name) disks.set(name, Number(value));
    if (kind === 'nic' && name) nics.set(name, value ?? '');
  }
  return { disks, nics };
}

/** Polls the guest until `ready` holds (hotplug reaches the guest a moment after QMP answers). */
async function guestUntil(ready: (devices: GuestDevices) => boolean, what: string): Promise<GuestDevices> {
  const deadline = Date.now() + 30_000;
  let last: GuestDevices | string = 'no answer yet';
  for (;;) {
    try {
      last = await guestDevices();
      if (ready(last)) return last;
    } catch (error) {
      last = (error as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`the guest never showed ${what}; last seen: ${typeof last === 'string' ? last : JSON.stringify({ disks: [...last.disks], nics: [...last.nics] })}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

type ErrorAnswer = { error: { code: string; message: string } };

/** The agent's record of the VM as stored: a refused request must leave it byte for byte. */
async function storedRecord(): Promise<string> {
  return readFile(path.join(t.stateDir, 'vms', id, 'vm.json'), 'utf8');
}

beforeAll(async () => {
  t = await startTestAgent();
  web = await importAppliance(t.client, 'web');
  port = await freePort();
  id = await defineApplianceVm(t.client, web, 'hot-1', { memoryMiB: 128, forwards: [{ hostPort: port, guestPort: 80 }] });
  for (const [name, sizeBytes] of [['extra-1.qcow2', 64], ['extra-2.qcow2', 32], ['shared.qcow2', 16]] as const) {
    await t.client.createVolume(pool, { name, sizeBytes: sizeBytes * 1024 * 1024 });
  }
  await t.client.action(id, 'start');
  await t.client.waitForSerial(id, /DROVER-READY appliance=web/);
});

afterAll(async () => {
  await t?.dispose();
});

describe('disk and NIC hotplug on a running guest', () => {
  const mac = '52:54:00:4a:11:01';

  it('hot-adds a disk: the running guest sees a new 64 MiB block device', async () => {
    const before = await guestDevices();
    expect([...before.disks.keys()]).toEqual(['vda']);
    const answer = await t.client.request<VmInfo>('POST', `/v1/vms/${id}/disks`, { pool, volume: 'extra-1.qcow2' });
    expect(answer.status).toBe(201);
    expect(answer.body.state).toBe('running');
    expect(answer.body.spec.disks.map((d) => d.volume)).toEqual(['hot-1.root.qcow2', 'extra-1.qcow2']);
    const after = await guestUntil((d) => d.disks.has('vdb'), 'vdb');
    expect(after.disks.get('vdb')).toBe(64 * 1024);
    // The volume now counts as in use.
    const volume = await t.client.ok<{ usedBy: string[] }>('GET', `/v1/pools/${pool}/volumes/extra-1.qcow2`);
    expect(volume.usedBy).toEqual(['hot-1']);
  });

  it('hot-adds a NIC: the guest gets a new interface with the given MAC', async () => {
    const answer = await t.client.request<VmInfo>('POST', `/v1/vms/${id}/nics`, { mac });
    expect(answer.status).toBe(201);
    expect(answer.body.spec.nics?.map((n) => n.mac)).toContain(mac);
    const after = await guestUntil((d) => [...d.nics.values()].includes(mac), `an interface with MAC ${mac}`);
    expect(after.nics.get('eth1')).toBe(mac);
    expect(after.nics.has('eth0')).toBe(true);
  });

  it('refuses bad requests with 4xx and changes nothing', async () => {
    // Another VM (never started) that holds a volume and the most disks a VM may have.
    await t.client.createVolume(pool, { name: 'full.root.qcow2', cloneOf: web.root });
    const tiny = [];
    for (let i = 0; i < 14; i++) tiny.push((await t.client.createVolume(pool, { name: `tiny-${i}.raw`, sizeBytes: 1024 * 1024 })).name);
    const full = await t.client.defineVm({
      name: 'full',
      cpus: 1,
      memoryMiB: 128,
      disks: [{ pool, volume: 'full.root.qcow2' }, { pool, volume: 'shared.qcow2' }, ...tiny.map((volume) => ({ pool, volume }))],
      boot: { kind: 'kernel', kernel: { pool, volume: web.kernel }, initrd: { pool, volume: web.initrd } },
    });
    expect(full.spec.disks).toHaveLength(16);
    await t.client.createVolume(pool, { name: 'spare.raw', sizeBytes: 1024 * 1024 });

    const cases: Array<[string, string, string, unknown, number, RegExp]> = [
      ['an unknown volume', 'POST', `/v1/vms/${id}/disks`, { pool, volume: 'missing.qcow2' }, 404, /Volume "default\/missing.qcow2" does not exist/],
      ['an unknown pool', 'POST', `/v1/vms/${id}/disks`, { pool: 'nope', volume: 'extra-2.qcow2' }, 404, /Pool "nope" does not exist/],
      ['a volume outside the pool', 'POST', `/v1/vms/${id}/disks`, { pool, volume: '../vms/x' }, 400, /volume/],
      ['a volume another VM uses', 'POST', `/v1/vms/${id}/disks`, { pool, volume: 'shared.qcow2' }, 409, /attached to VM "full" read-write/],
      ['the same volume twice', 'POST', `/v1/vms/${id}/disks`, { pool, volume: 'extra-1.qcow2' }, 409, /already attached to VM "hot-1"/],
      ['the base of thin clones, writable', 'POST', `/v1/vms/${id}/disks`, { pool, volume: web.root }, 409, /base of thin clone/],
      ['a CD-ROM while it runs', 'POST', `/v1/vms/${id}/disks`, { pool, volume: 'extra-2.qcow2', media: 'cdrom' }, 409, /AHCI bus has no hotplug/],
      ['unknown fields', 'POST', `/v1/vms/${id}/disks`, { pool, volume: 'extra-2.qcow2', bus: 'x' }, 400, /bus/],
      ['a 17th disk', 'POST', `/v1/vms/${full.id}/disks`, { pool, volume: 'spare.raw' }, 409, /16 disks, the most a VM may have/],
      ['the boot disk', 'DELETE', `/v1/vms/${id}/disks/0`, undefined, 409, /boot disk/],
      ['an unknown disk', 'DELETE', `/v1/vms/${id}/disks/7`, undefined, 404, /Disk "hot-1\/7" does not exist/],
      ['a disk by an unknown volume name', 'DELETE', `/v1/vms/${id}/disks/nothing.qcow2`, undefined, 404, /does not exist/],
      ['a MAC already in use', 'POST', `/v1/vms/${id}/nics`, { mac }, 409, /already used/],
      ['a bad MAC', 'POST', `/v1/vms/${id}/nics`, { mac: '52:54:00:4A:11' }, 400, /mac/],
      ['a host port another VM forwards', 'POST', `/v1/vms/${id}/nics`, { forwards: [{ hostPort: port, guestPort: 22 }] }, 409, new RegExp(`Host port tcp ${port} is already forwarded to VM "hot-1"`)],
      ['an unknown NIC', 'DELETE', `/v1/vms/${id}/nics/5`, undefined, 404, /NIC "hot-1\/5" does not exist/],
      ['an unknown VM', 'POST', '/v1/vms/nobody/disks', { pool, volume: 'extra-2.qcow2' }, 404, /VM "nobody" does not exist/],
    ];
    const before = await storedRecord();
    const beforeFull = JSON.stringify((await t.client.vm(full.id)).spec);
    const guestBefore = await guestDevices();
    for (const [what, method, route, body, status, message] of cases) {
      const answer = await t.client.request<ErrorAnswer>(method, route, body);
      expect(answer.status, what).toBe(status);
      expect(answer.body.error.message, what).toMatch(message);
    }
    expect(await storedRecord()).toBe(before);
    expect(JSON.stringify((await t.client.vm(full.id)).spec)).toBe(beforeFull);
    const guestAfter = await guestDevices();
    expect([...guestAfter.disks.keys()]).toEqual([...guestBefore.disks.keys()]);
    expect([...guestAfter.nics.keys()]).toEqual([...guestBefore.nics.keys()]);
    await t.client.ok('DELETE', `/v1/vms/${full.id}`);
  });

  it('refuses a device when the spare slots of the running QEMU are used up; the next start makes new ones', async () => {
    // Booted with one NIC, the QEMU has two spare NIC slots: the NIC above took one.
    await t.client.ok('POST', `/v1/vms/${id}/nics`, { mac: '52:54:00:4a:11:0b' });
    const full = await t.client.request<ErrorAnswer>('POST', `/v1/vms/${id}/nics`, { mac: '52:54:00:4a:11:0c' });
    expect(full.status).toBe(409);
    expect(full.body.error.message).toMatch(/no free NIC hotplug slot left in its running QEMU; stop and start it/);
    await t.client.ok('DELETE', `/v1/vms/${id}/nics/52:54:00:4a:11:0b`);
    expect((await t.client.vm(id)).spec.nics?.map((n) => n.mac).slice(1)).toEqual([mac]);
  });

  it('keeps the devices of a VM pinned by its snapshots, and refuses removals while paused', async () => {
    await t.client.ok('POST', `/v1/vms/${id}/snapshots`, { name: 'disks-only', withMemory: false });
    const pinned = await t.client.request<ErrorAnswer>('DELETE', `/v1/vms/${id}/disks/extra-1.qcow2`);
    expect(pinned.status).toBe(409);
    expect(pinned.body.error.message).toMatch(/snapshots "disks-only" cover its writable disks/);
    await t.client.ok('DELETE', `/v1/vms/${id}/snapshots/disks-only`);

    await t.client.action(id, 'pause');
    const paused = await t.client.request<ErrorAnswer>('DELETE', `/v1/vms/${id}/nics/${mac}`);
    expect(paused.status).toBe(409);
    expect(paused.body.error.message).toMatch(/paused: the guest must run to release the device/);
    await t.client.action(id, 'resume');
  });

  it('hot-removes a disk and the NIC: the guest no longer sees them', async () => {
    await t.client.ok('POST', `/v1/vms/${id}/disks`, { pool, volume: 'extra-2.qcow2' });
    await guestUntil((d) => d.disks.has('vdc'), 'vdc');
    const disk = await t.client.request<VmInfo>('DELETE', `/v1/vms/${id}/disks/extra-1.qcow2`);
    expect(disk.status).toBe(200);
    expect(disk.body.spec.disks.map((d) => d.volume)).toEqual(['hot-1.root.qcow2', 'extra-2.qcow2']);
    const afterDisk = await guestUntil((d) => !d.disks.has('vdb'), 'vdb gone');
    expect(afterDisk.disks.get('vdc')).toBe(32 * 1024);
    const nic = await t.client.request<VmInfo>('DELETE', `/v1/vms/${id}/nics/${mac}`);
    expect(nic.status).toBe(200);
    expect(nic.body.spec.nics).toHaveLength(1);
    const after = await guestUntil((d) => !d.nics.has('eth1'), 'eth1 gone');
    expect([...after.disks.keys()]).toEqual(['vda', 'vdc']);
    // Released: another VM could take the volume now, and the host could delete it.
    expect((await t.client.ok<{ usedBy: string[] }>('GET', `/v1/pools/${pool}/volumes/extra-1.qcow2`)).usedBy).toEqual([]);
  });

  it('a saved VM restores with the same device slots (a gap included), and refuses changes while saved', async () => {
    const saved = await t.client.action(id, 'save');
    expect(saved.state).toBe('saved');
    const refused = await t.client.request<ErrorAnswer>('POST', `/v1/vms/${id}/disks`, { pool, volume: 'extra-1.qcow2' });
    expect(refused.status).toBe(409);
    expect(refused.body.error.message).toMatch(/saved state expects its devices as they were/);
    // The disk in slot 2 (slot 1 is free) must come back on its own port, or the saved device state would not load.
    const restored = await t.client.action(id, 'restore');
    expect(restored.state).toBe('running');
    const devices = await guestUntil((d) => d.disks.has('vdc'), 'vdc after the restore');
    expect([...devices.disks.keys()]).toEqual(['vda', 'vdc']);
    // A new disk takes the free slot.
    await t.client.ok('POST', `/v1/vms/${id}/disks`, { pool, volume: 'extra-1.qcow2' });
    expect((await guestUntil((d) => d.disks.has('vdb'), 'vdb back')).disks.get('vdb')).toBe(64 * 1024);
  });

  it('on a stopped VM a change edits the definition: the next boot has the devices, and they can leave while it runs', async () => {
    await t.client.action(id, 'force-off');
    const added = await t.client.request<VmInfo>('POST', `/v1/vms/${id}/nics`, { mac: '52:54:00:4a:11:02' });
    expect(added.status).toBe(201);
    expect(added.body.state).toBe('stopped');
    const removed = await t.client.request<VmInfo>('DELETE', `/v1/vms/${id}/disks/extra-1.qcow2`);
    expect(removed.body.spec.disks.map((d) => d.volume)).toEqual(['hot-1.root.qcow2', 'extra-2.qcow2']);
    await t.client.ok('POST', `/v1/vms/${id}/disks`, { pool, volume: 'extra-1.qcow2', readOnly: true });

    const { next } = await t.client.serialLog(id);
    await t.client.action(id, 'start');
    await t.client.waitForSerial(id, /DROVER-READY appliance=web/, { offset: next });
    const booted = await guestUntil((d) => d.disks.has('vdc') && d.nics.has('eth1'), 'vdb, vdc and eth1 at boot');
    expect(booted.disks.get('vdb')).toBe(32 * 1024);
    expect(booted.disks.get('vdc')).toBe(64 * 1024);
    expect(booted.nics.get('eth1')).toBe('52:54:00:4a:11:02');

    // Devices present at boot sit on hotplug ports too: the middle one leaves, the last keeps its name.
    await t.client.ok('DELETE', `/v1/vms/${id}/disks/1`);
    const after = await guestUntil((d) => !d.disks.has('vdb'), 'vdb gone');
    expect(after.disks.get('vdc')).toBe(64 * 1024);
    expect((await t.client.vm(id)).spec.disks).toEqual([
      { pool, volume: 'hot-1.root.qcow2' },
      { pool, volume: 'extra-1.qcow2', readOnly: true },
    ]);
  });
});

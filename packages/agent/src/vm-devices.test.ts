import { describe, expect, it } from 'vitest';
import type { VmSpec } from '@drover/api';
import { rejectionOf } from '@drover/core';
import { bootDiskIndex, diskPlacement, findDisk, findNic, initialSlots, nicPlacement, rootPortsOf } from './vm-devices.js';

const kernel = { kind: 'kernel' as const, kernel: { pool: 'p', volume: 'k' } };

function spec(fields: Partial<VmSpec> = {}): VmSpec {
  return {
    name: 'vm',
    cpus: 1,
    memoryMiB: 128,
    disks: [
      { pool: 'p', volume: 'root.qcow2' },
      { pool: 'p', volume: 'data.qcow2' },
    ],
    nics: [{ mac: '52:54:00:00:00:01' }],
    boot: kernel,
    ...fields,
  };
}

describe('device slots', () => {
  it('lays a fresh start out in definition order, with 6 spare disk and 2 spare NIC ports', () => {
    const slots = initialSlots(spec());
    expect(slots).toEqual({ disks: [0, 1], nics: [0], ports: [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18] });
    expect(diskPlacement(slots, 1, { pool: 'p', volume: 'data.qcow2' })).toEqual({ nodeName: 'disk1', port: 1 });
    expect(nicPlacement(slots, 0)).toEqual({ id: 'net0', port: 16 });
    // A CD-ROM has a slot (its name) but sits on AHCI.
    expect(diskPlacement(slots, 0, { pool: 'p', volume: 'x.iso', media: 'cdrom' })).toEqual({ nodeName: 'disk0' });
  });

  it('never makes more ports than there can be devices', () => {
    const many = spec({ disks: Array.from({ length: 14 }, (_, i) => ({ pool: 'p', volume: `d${i}` })), nics: Array.from({ length: 7 }, () => ({})) });
    expect(initialSlots(many).ports).toEqual([...Array.from({ length: 16 }, (_, i) => i), 16, 17, 18, 19, 20, 21, 22, 23]);
  });

  it('keeps the layout without ports for a QEMU of an agent without hotplug, and all 24 for a layout without a port list', () => {
    expect(diskPlacement(undefined, 1, { pool: 'p', volume: 'd' })).toEqual({ nodeName: 'disk1' });
    expect(nicPlacement(undefined, 0)).toEqual({ id: 'net0' });
    expect(rootPortsOf({ disks: [], nics: [] })).toHaveLength(24);
  });
});

describe('naming a device', () => {
  it('finds a disk by index or volume name, with the pool when two pools hold the name', async () => {
    const two = spec({ disks: [{ pool: 'p', volume: 'root.qcow2' }, { pool: 'a', volume: 'x.raw' }, { pool: 'b', volume: 'x.raw' }] });
    expect(findDisk(two, 'vm', '0')).toBe(0);
    expect(findDisk(two, 'vm', 'x.raw', 'b')).toBe(2);
    expect((await rejectionOf(Promise.resolve().then(() => findDisk(two, 'vm', 'x.raw')))).code).toBe('conflict');
    expect((await rejectionOf(Promise.resolve().then(() => findDisk(two, 'vm', '3')))).code).toBe('not_found');
    expect((await rejectionOf(Promise.resolve().then(() => findDisk(two, 'vm', '1', 'b')))).code).toBe('not_found');
  });

  it('finds a NIC by index or MAC, in any case', async () => {
    expect(findNic(spec(), 'vm', '0')).toBe(0);
    expect(findNic(spec(), 'vm', '52:54:00:00:00:01')).toBe(0);
    expect(findNic(spec(), 'vm', '52:54:00:00:00:01'.toUpperCase())).toBe(0);
    expect((await rejectionOf(Promise.resolve().then(() => findNic(spec(), 'vm', '1')))).code).toBe('not_found');
  });

  it('knows the boot disk of each boot kind', () => {
    const withCd = spec({ disks: [{ pool: 'p', volume: 'x.iso', media: 'cdrom' }, { pool: 'p', volume: 'root.qcow2' }] });
    expect(bootDiskIndex(withCd)).toBe(1);
    expect(bootDiskIndex({ ...withCd, boot: { kind: 'cdrom' } })).toBe(0);
    expect(bootDiskIndex({ ...withCd, boot: { kind: 'disk' } })).toBe(1);
  });
});

import { errors } from '@drover/core';
import { diskBlockdevs, diskDevice, nicDevice, nicNetdevArgs, type QemuProps } from './devices.js';
import type { DiskConfig, NicConfig } from './launch-config.js';
import { QmpCommandError, type QmpClient, type QmpEvent } from './qmp-client.js';

/**
 * Disk and NIC hotplug on a running q35 QEMU: devices go onto the free PCIe
 * root ports made at launch (`QemuLaunchConfig.rootPorts`). Adding is
 * immediate; removing asks the guest, which releases the device when it is
 * ready (ACPI hotplug), and QEMU then sends `DEVICE_DELETED`.
 */

function jsonProps(props: QemuProps): Record<string, unknown> {
  return Object.fromEntries(Object.entries(props).filter(([, value]) => value !== undefined));
}

/** Runs `undo` and drops its error: it cleans up after a failure that is the one to report. */
async function quietly(undo: () => Promise<void>): Promise<void> {
  try {
    await undo();
  } catch {
    /* the original failure is what the caller hears about */
  }
}

/**
 * Plugs a virtio disk into root port `disk.port`: its protocol node, its format
 * node, then its device. A failed step removes what the earlier ones added, so
 * QEMU is left as it was.
 */
export async function plugDisk(qmp: QmpClient, disk: DiskConfig): Promise<void> {
  if (disk.media === 'cdrom') throw errors.invalid(`Disk "${disk.nodeName}" is a CD-ROM: the AHCI bus of q35 has no hotplug`, { field: 'media' });
  if (disk.port === undefined) throw errors.invalid(`Disk "${disk.nodeName}" has no root port to be plugged into`, { field: 'port' });
  const [file, format] = diskBlockdevs(disk);
  await qmp.blockdevAdd(jsonProps(file));
  try {
    await qmp.blockdevAdd(jsonProps(format));
    try {
      await qmp.deviceAdd(jsonProps(diskDevice(disk)));
    } catch (error) {
      await quietly(() => qmp.blockdevDel(disk.nodeName));
      throw error;
    }
  } catch (error) {
    await quietly(() => qmp.blockdevDel(`${disk.nodeName}-file`));
    throw error;
  }
}

/** Plugs a virtio NIC into root port `nic.port`: its user-mode backend, then its device. */
export async function plugNic(qmp: QmpClient, nic: NicConfig): Promise<void> {
  if (nic.port === undefined) throw errors.invalid(`NIC "${nic.id}" has no root port to be plugged into`, { field: 'port' });
  await qmp.netdevAdd(nicNetdevArgs(nic));
  try {
    await qmp.deviceAdd(jsonProps(nicDevice(nic)));
  } catch (error) {
    await quietly(() => qmp.netdevDel(nic.id));
    throw error;
  }
}

/** The qdev id a `DEVICE_DELETED` event reports, if it concerns a device with an id. */
export function deletedDeviceId(event: QmpEvent): string | undefined {
  return event.event === 'DEVICE_DELETED' && typeof event.data.device === 'string' ? event.data.device : undefined;
}

/**
 * Asks the guest to release device `id` and waits for `DEVICE_DELETED`. Resolves
 * `true` once the device is gone (or was already), `false` when the guest has not
 * released it within `timeoutMs`: the request then stays pending in QEMU, which
 * removes the device and sends the event whenever the guest lets it go. Asking
 * again while a request is pending just waits again.
 */
export async function unplugDevice(qmp: QmpClient, id: string, timeoutMs: number): Promise<boolean> {
  let settle: (gone: boolean) => void = () => undefined;
  const outcome = new Promise<boolean>((resolve) => (settle = resolve));
  // Listening before asking: a quick guest releases the device right behind the reply.
  const onEvent = (event: QmpEvent) => {
    if (deletedDeviceId(event) === id) settle(true);
  };
  const onClose = () => settle(false);
  qmp.on('event', onEvent);
  qmp.once('close', onClose);
  const timer = setTimeout(() => settle(false), timeoutMs);
  try {
    try {
      await qmp.deviceDel(id);
    } catch (error) {
      if (error instanceof QmpCommandError && error.qmpClass === 'DeviceNotFound') return true;
      if (!(error instanceof QmpCommandError && /already in the process of unplug/i.test(error.desc))) throw error;
    }
    return await outcome;
  } finally {
    clearTimeout(timer);
    qmp.off('event', onEvent);
    qmp.off('close', onClose);
  }
}

function isMissing(error: unknown): boolean {
  return error instanceof QmpCommandError && (error.qmpClass === 'DeviceNotFound' || /find node|not found/i.test(error.desc));
}

/** Removes the block nodes of a disk whose device is gone (format node first); nodes already gone are fine. */
export async function releaseDiskNodes(qmp: QmpClient, nodeName: string): Promise<void> {
  for (const node of [nodeName, `${nodeName}-file`]) {
    try {
      await qmp.blockdevDel(node);
    } catch (error) {
      if (!isMissing(error)) throw error;
    }
  }
}

/** Removes the backend of a NIC whose device is gone; a backend already gone is fine. */
export async function releaseNicBackend(qmp: QmpClient, id: string): Promise<void> {
  try {
    await qmp.netdevDel(id);
  } catch (error) {
    if (!isMissing(error)) throw error;
  }
}

import type { DiskConfig, HostForward, NicConfig } from './launch-config.js';

/**
 * Device descriptions shared by the command line (`buildQemuArgv`) and hotplug
 * over QMP (`hotplug.ts`): one place decides a disk's nodes and device, the
 * two transports only spell them differently (`key=value,...` or JSON).
 */

/** Typed QEMU properties; `undefined` leaves a property out. Booleans are `on`/`off` on the command line. */
export type QemuProps = Record<string, string | number | boolean | undefined>;

/**
 * Hot-pluggable slots are `pcie-root-port`s named `rp0`, `rp1`, … packed eight
 * to a PCI slot from 0x10 on (multifunction), away from the automatic slots of
 * the other devices. At most this many.
 */
export const maxRootPorts = 64;
const firstRootPortSlot = 0x10;

/** The qdev id of root port `index`, which is also the `bus` of the device plugged into it. */
export function rootPortId(index: number): string {
  return `rp${index}`;
}

/** The `-device` properties of root port `index`. */
export function rootPortProps(index: number): QemuProps {
  const slot = firstRootPortSlot + Math.floor(index / 8);
  const fn = index % 8;
  return {
    driver: 'pcie-root-port',
    id: rootPortId(index),
    bus: 'pcie.0',
    chassis: index + 1,
    addr: `0x${slot.toString(16)}.${fn}`,
    multifunction: fn === 0 ? true : undefined,
    // Devices behind these ports are virtio 1.0 (modern only): no I/O ports, and 4 KiB of
    // the 64 KiB I/O space per port would run out long before the ports do.
    'io-reserve': 0,
  };
}

/** Escapes a value for QEMU's `key=value,...` option syntax, where a literal comma is written twice. */
export function escapeOptionValue(value: string): string {
  return value.replaceAll(',', ',,');
}

/** `key=value,...` in the order given; with `positional`, that key's value leads bare (`virtio-blk-pci,drive=…`). */
export function optionString(props: QemuProps, positional?: string): string {
  const parts: string[] = [];
  if (positional !== undefined) parts.push(escapeOptionValue(String(props[positional])));
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || key === positional) continue;
    const text = typeof value === 'boolean' ? (value ? 'on' : 'off') : String(value);
    parts.push(`${key}=${escapeOptionValue(text)}`);
  }
  return parts.join(',');
}

/** The protocol node (`<node>-file`) and the format node (`<node>`) of a disk, in the order they are added. */
export function diskBlockdevs(disk: DiskConfig): [QemuProps, QemuProps] {
  // A CD-ROM is read-only media whatever the caller says.
  const readOnly = disk.media === 'cdrom' || disk.readOnly === true;
  const fileNode = `${disk.nodeName}-file`;
  return [
    // locking=on (not auto): two QEMUs on one image must fail, never both run.
    disk.iscsi
      ? { driver: 'iscsi', transport: 'tcp', portal: disk.iscsi.portal, target: disk.iscsi.target, lun: disk.iscsi.lun, 'initiator-name': disk.iscsi.initiatorName, 'node-name': fileNode, 'read-only': readOnly }
      : { driver: 'file', filename: disk.path, 'node-name': fileNode, 'read-only': readOnly, locking: 'on' },
    { driver: disk.format, file: fileNode, 'node-name': disk.nodeName, 'read-only': readOnly },
  ];
}

/**
 * The guest-visible device of a disk: virtio-blk (on root port `disk.port` when
 * it has one, which makes it removable) or an IDE CD-ROM on AHCI port `ahciPort`.
 */
export function diskDevice(disk: DiskConfig, options: { bootIndex?: number; ahciPort?: number } = {}): QemuProps {
  const common = { drive: disk.nodeName, id: `${disk.nodeName}-dev` };
  const device: QemuProps =
    disk.media === 'cdrom'
      ? { driver: 'ide-cd', ...common, bus: `ide.${options.ahciPort ?? 0}` }
      : { driver: 'virtio-blk-pci', ...common, bus: disk.port === undefined ? undefined : rootPortId(disk.port) };
  return { ...device, bootindex: options.bootIndex, serial: disk.serial };
}

function hostForwardRule(forward: HostForward): string {
  return `${forward.protocol}:${forward.hostAddress}:${forward.hostPort}-:${forward.guestPort}`;
}

/** `-netdev` of a NIC (its forwards repeat the `hostfwd` key, which a property record cannot hold). */
export function nicNetdevOption(nic: NicConfig): string {
  if (nic.mode === 'tap') return `tap,id=${nic.id},ifname=${nic.ifname ?? ''},script=no,downscript=no`;
  return ['user', `id=${nic.id}`, ...nic.hostForwards.map((forward) => `hostfwd=${hostForwardRule(forward)}`)].join(',');
}

/** QMP `netdev_add` arguments of a NIC. */
export function nicNetdevArgs(nic: NicConfig): Record<string, unknown> {
  if (nic.mode === 'tap') return { type: 'tap', id: nic.id, ifname: nic.ifname, script: 'no', downscript: 'no' };
  return { type: 'user', id: nic.id, ...(nic.hostForwards.length > 0 ? { hostfwd: nic.hostForwards.map((forward) => ({ str: hostForwardRule(forward) })) } : {}) };
}

/** The guest-visible virtio-net device of a NIC, on root port `nic.port` when it has one. */
export function nicDevice(nic: NicConfig): QemuProps {
  return {
    driver: 'virtio-net-pci',
    netdev: nic.id,
    id: `${nic.id}-dev`,
    mac: nic.mac.toLowerCase(),
    // No iPXE option ROM: we never boot from the network and it is slow under TCG.
    romfile: '',
    bus: nic.port === undefined ? undefined : rootPortId(nic.port),
  };
}

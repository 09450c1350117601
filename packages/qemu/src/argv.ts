import { isIPv4 } from 'node:net';
import { isAbsolute } from 'node:path';
import { errors } from '@drover/core';
import { diskBlockdevs, diskDevice, escapeOptionValue, maxRootPorts, nicDevice, nicNetdevOption, optionString, rootPortProps } from './devices.js';
import type { DiskConfig, IscsiLun, QemuLaunchConfig } from './launch-config.js';

export { escapeOptionValue };

/** The full seccomp lockdown; see `QemuLaunchConfig.sandbox` for why it is safe here. */
export const sandboxOption = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';

/** sun_path holds 108 bytes including the terminating NUL. */
const maxUnixSocketPathBytes = 107;
/** QEMU node-names: a letter, then letters, digits, `-`, `.`, `_`; 31 characters at most. */
const nodeNamePattern = /^[A-Za-z][A-Za-z0-9_.-]*$/;
const maxNodeNameLength = 31;
/** q35's built-in AHCI controller has six ports, buses `ide.0` to `ide.5`. */
const ahciPorts = 6;

/**
 * Splits a `key=value,...` option string the way QEMU does: a doubled comma is a literal
 * comma. The inverse of joining `escapeOptionValue`d parts with `,`.
 */
export function splitOptionString(option: string): string[] {
  const parts: string[] = [];
  let current = '';
  for (let i = 0; i < option.length; i++) {
    const char = option[i];
    if (char !== ',') {
      current += char;
    } else if (option[i + 1] === ',') {
      current += ',';
      i++;
    } else {
      parts.push(current);
      current = '';
    }
  }
  parts.push(current);
  return parts;
}

/** The QMP unix socket path of a QEMU command line built by `buildQemuArgv`, if any. */
export function findQmpSocket(argv: readonly string[]): string | undefined {
  const index = argv.indexOf('-qmp');
  const value = index >= 0 ? argv[index + 1] : undefined;
  if (value === undefined || !value.startsWith('unix:')) return undefined;
  return splitOptionString(value.slice('unix:'.length))[0];
}

function checkText(value: string, what: string): void {
  if (/[\n\r\0]/.test(value)) {
    throw errors.invalid(`Invalid ${what} ${JSON.stringify(value)}: it must not contain a newline or NUL`, { field: what });
  }
}

function checkPath(path: string, what: string): void {
  checkText(path, what);
  if (!isAbsolute(path)) throw errors.invalid(`Invalid ${what} "${path}": it must be an absolute path`, { field: what });
}

/** An iSCSI LUN: "HOST:PORT" (IPv4, a DNS name, or [IPv6]), an IQN or EUI name, a LUN number. */
function checkIscsi(lun: IscsiLun, nodeName: string): void {
  if (!/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(lun.portal)) {
    throw errors.invalid(`Invalid iSCSI portal "${lun.portal}" for disk "${nodeName}": expected HOST:PORT`, { field: 'iscsi.portal' });
  }
  if (!/^(iqn\.\d{4}-\d{2}\.[A-Za-z0-9.:_-]+|eui\.[0-9A-Fa-f]{16})$/.test(lun.target) || lun.target.length > 223) {
    throw errors.invalid(`Invalid iSCSI target "${lun.target}" for disk "${nodeName}": expected an iqn. or eui. name`, { field: 'iscsi.target' });
  }
  if (lun.initiatorName !== undefined && !/^iqn\.\d{4}-\d{2}\.[a-z0-9.:_-]{1,200}$/.test(lun.initiatorName)) {
    throw errors.invalid(`Invalid iSCSI initiator name "${lun.initiatorName}" for disk "${nodeName}"`, { field: 'iscsi.initiatorName' });
  }
  if (!Number.isInteger(lun.lun) || lun.lun < 0 || lun.lun > 16383) {
    throw errors.invalid(`Invalid iSCSI LUN ${lun.lun} for disk "${nodeName}"`, { field: 'iscsi.lun' });
  }
}

function checkSocketPath(path: string, what: string): void {
  checkPath(path, what);
  if (Buffer.byteLength(path) > maxUnixSocketPathBytes) {
    throw errors.invalid(`Invalid ${what} "${path}": a unix socket path is limited to ${maxUnixSocketPathBytes} bytes`, {
      field: what,
    });
  }
}

/** Node-names get a `-file` suffix and qdev ids a `-dev` suffix, so leave room for them. */
function checkId(id: string, what: string): void {
  if (!nodeNamePattern.test(id) || id.length > maxNodeNameLength - '-file'.length) {
    throw errors.invalid(
      `Invalid ${what} "${id}": use a letter then letters, digits, "-", "." or "_" (at most ${maxNodeNameLength - 5} characters)`,
      { field: what },
    );
  }
}

function checkPort(port: number, what: string): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw errors.invalid(`Invalid ${what} ${port}: expected an integer from 1 to 65535`, { field: what });
  }
}

function validate(config: QemuLaunchConfig): void {
  checkText(config.name, 'VM name');
  if (config.name.length === 0) throw errors.invalid('Invalid VM name "": it must not be empty', { field: 'name' });
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(config.uuid)) {
    throw errors.invalid(`Invalid VM UUID "${config.uuid}"`, { field: 'uuid' });
  }
  if (config.accel !== 'kvm' && config.accel !== 'tcg') {
    throw errors.invalid(`Invalid accelerator "${String(config.accel)}": expected "kvm" or "tcg"`, { field: 'accel' });
  }
  if (!Number.isInteger(config.cpus) || config.cpus < 1) {
    throw errors.invalid(`Invalid CPU count ${config.cpus}: expected an integer of at least 1`, { field: 'cpus' });
  }
  if (!Number.isInteger(config.memoryMiB) || config.memoryMiB < 16) {
    throw errors.invalid(`Invalid memory size ${config.memoryMiB} MiB: expected an integer of at least 16`, {
      field: 'memoryMiB',
    });
  }
  // Commas are allowed on purpose: they add CPU features (`max,+avx2`).
  if (!/^[A-Za-z0-9][A-Za-z0-9_.+=,-]*$/.test(config.cpuModel)) {
    throw errors.invalid(`Invalid CPU model "${config.cpuModel}"`, { field: 'cpuModel' });
  }
  if (config.cpuModel.split(',')[0] === 'host' && config.accel !== 'kvm') {
    throw errors.invalid('Invalid CPU model "host": it needs the kvm accelerator', { field: 'cpuModel' });
  }
  if (config.machine !== undefined && !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(config.machine)) {
    throw errors.invalid(`Invalid machine type "${config.machine}"`, { field: 'machine' });
  }
  checkSocketPath(config.qmpSocket, 'QMP socket path');
  checkSocketPath(config.serialSocket, 'serial socket path');
  checkPath(config.serialLog, 'serial log path');
  if (config.vncSocket !== undefined) checkSocketPath(config.vncSocket, 'VNC socket path');
  checkPath(config.pidFile, 'pid file path');

  const qdevIds = new Set<string>();
  const claim = (id: string, what: string): void => {
    checkId(id, what);
    if (qdevIds.has(id)) throw errors.invalid(`Duplicate device id "${id}"`, { field: what });
    qdevIds.add(id);
  };
  const rootPorts = new Set<number>();
  for (const index of config.rootPorts ?? []) {
    if (!Number.isInteger(index) || index < 0 || index >= maxRootPorts) {
      throw errors.invalid(`Invalid root port ${index}: expected an integer from 0 to ${maxRootPorts - 1}`, { field: 'rootPorts' });
    }
    if (rootPorts.has(index)) throw errors.invalid(`Root port ${index} is listed twice`, { field: 'rootPorts' });
    rootPorts.add(index);
  }
  const usedPorts = new Set<number>();
  const claimPort = (port: number | undefined, owner: string): void => {
    if (port === undefined) return;
    if (!rootPorts.has(port)) {
      throw errors.invalid(`Invalid root port ${port} for "${owner}": the VM has no such root port`, { field: 'port' });
    }
    if (usedPorts.has(port)) throw errors.invalid(`Root port ${port} is given to two devices ("${owner}" and another)`, { field: 'port' });
    usedPorts.add(port);
  };
  const bootIndexes = new Set<number>();
  for (const disk of config.disks) {
    claim(disk.nodeName, 'disk node name');
    if (disk.port !== undefined && disk.media === 'cdrom') {
      throw errors.invalid(`CD-ROM "${disk.nodeName}" cannot sit on a root port: CD-ROMs are on the AHCI bus`, { field: 'port' });
    }
    claimPort(disk.port, disk.nodeName);
    if (disk.iscsi) checkIscsi(disk.iscsi, disk.nodeName);
    else checkPath(disk.path, 'disk path');
    if (disk.format !== 'qcow2' && disk.format !== 'raw') {
      throw errors.invalid(`Invalid disk format "${String(disk.format)}" for "${disk.path}": expected "qcow2" or "raw"`, {
        field: 'format',
      });
    }
    if (disk.bootIndex !== undefined) {
      if (!Number.isInteger(disk.bootIndex) || disk.bootIndex < 0) {
        throw errors.invalid(`Invalid boot index ${disk.bootIndex} for disk "${disk.nodeName}"`, { field: 'bootIndex' });
      }
      if (bootIndexes.has(disk.bootIndex)) {
        throw errors.invalid(`Duplicate boot index ${disk.bootIndex} on disk "${disk.nodeName}"`, { field: 'bootIndex' });
      }
      bootIndexes.add(disk.bootIndex);
    }
    if (disk.serial !== undefined && !/^[\x21-\x7e]{1,20}$/.test(disk.serial)) {
      throw errors.invalid(`Invalid disk serial "${disk.serial}": 1 to 20 printable characters without spaces`, {
        field: 'serial',
      });
    }
  }
  if (config.disks.filter((disk) => disk.media === 'cdrom').length > ahciPorts) {
    throw errors.invalid(`Too many CD-ROM drives: the q35 AHCI controller has ${ahciPorts} ports`, { field: 'disks' });
  }
  for (const nic of config.nics) {
    claim(nic.id, 'NIC id');
    claimPort(nic.port, nic.id);
    if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(nic.mac) || (parseInt(nic.mac.slice(0, 2), 16) & 1) === 1) {
      throw errors.invalid(`Invalid MAC address "${nic.mac}" for NIC "${nic.id}": expected a unicast xx:xx:xx:xx:xx:xx`, {
        field: 'mac',
      });
    }
    if (nic.mode !== 'user' && nic.mode !== 'tap') throw errors.invalid(`Invalid NIC mode "${String(nic.mode)}"`, { field: 'mode' });
    if (nic.mode === 'tap') {
      if (typeof nic.ifname !== 'string' || !/^[A-Za-z0-9_.-]{1,15}$/.test(nic.ifname)) {
        throw errors.invalid(`Invalid tap "${String(nic.ifname)}" for NIC "${nic.id}": 1 to 15 characters of A-Z, a-z, 0-9, "_", "." and "-"`, { field: 'ifname' });
      }
      if (nic.hostForwards.length > 0) throw errors.invalid(`NIC "${nic.id}" is a tap: port forwards exist only in user mode`, { field: 'hostForwards' });
    }
    for (const forward of nic.hostForwards) {
      if (forward.protocol !== 'tcp' && forward.protocol !== 'udp') {
        throw errors.invalid(`Invalid forward protocol "${String(forward.protocol)}"`, { field: 'protocol' });
      }
      if (!isIPv4(forward.hostAddress)) {
        throw errors.invalid(`Invalid forward host address "${forward.hostAddress}": expected an IPv4 address`, {
          field: 'hostAddress',
        });
      }
      checkPort(forward.hostPort, 'host port');
      checkPort(forward.guestPort, 'guest port');
    }
  }
  const boot = config.boot;
  if (boot.kind === 'kernel') {
    checkPath(boot.kernel, 'kernel path');
    if (boot.initrd !== undefined) checkPath(boot.initrd, 'initrd path');
    checkText(boot.cmdline, 'kernel command line');
  } else if (boot.kind === 'disk' || boot.kind === 'cdrom') {
    const wanted = boot.kind === 'cdrom' ? 'cdrom' : 'disk';
    if (!config.disks.some((disk) => (disk.media ?? 'disk') === wanted)) {
      throw errors.invalid(`Cannot boot from ${wanted}: the VM has no ${wanted === 'cdrom' ? 'CD-ROM' : 'disk'}`, {
        field: 'boot',
      });
    }
  } else {
    throw errors.invalid(`Invalid boot kind "${String((boot as { kind: unknown }).kind)}"`, { field: 'boot' });
  }
}

/**
 * Boot indexes as given, or, when none is given, the first device of the boot kind
 * (and, for a CD-ROM boot, the first disk after it so an installed system boots next).
 */
function bootIndexesOf(config: QemuLaunchConfig): Map<DiskConfig, number> {
  const indexes = new Map<DiskConfig, number>();
  for (const disk of config.disks) if (disk.bootIndex !== undefined) indexes.set(disk, disk.bootIndex);
  if (indexes.size > 0 || config.boot.kind === 'kernel') return indexes;
  const firstCdrom = config.disks.find((disk) => disk.media === 'cdrom');
  const firstDisk = config.disks.find((disk) => (disk.media ?? 'disk') === 'disk');
  if (config.boot.kind === 'cdrom' && firstCdrom !== undefined) {
    indexes.set(firstCdrom, 1);
    if (firstDisk !== undefined) indexes.set(firstDisk, 2);
  } else if (firstDisk !== undefined) {
    indexes.set(firstDisk, 1);
  }
  return indexes;
}

function diskArgs(disk: DiskConfig, bootIndex: number | undefined, ahciPort: number): string[] {
  const [file, format] = diskBlockdevs(disk);
  const device = diskDevice(disk, { ...(bootIndex === undefined ? {} : { bootIndex }), ahciPort });
  return ['-blockdev', optionString(file), '-blockdev', optionString(format), '-device', optionString(device, 'driver')];
}

/** What a TCG guest's RAM is short of its `memoryMiB` (see `qemuMemoryArg`). */
export const tcgMemoryShortfallKiB = 8;

/**
 * The `-m` value of a guest. Under TCG the guest gets 8 KiB less than `memoryMiB`: QEMU before
 * 9.0 (Debian 12 ships 7.2.22, which has the bug) loses guest writes during a live migration under TCG when the RAM
 * block is a multiple of 64 pages (256 KiB). Its dirty-bitmap sync then takes a fast path that
 * clears the dirty bits without re-arming the vCPUs' TLB write-tracking
 * (`cpu_physical_memory_sync_dirty_bitmap`, fixed upstream in 9.0 by "physmem: Fix migration dirty
 * bitmap coherency with TCG memory access"), so a page the vCPU keeps mapped is written again
 * after it was sent and never sent again. A block of another size takes the page-by-page path,
 * which re-arms the TLB. KVM tracks dirty pages itself: the guest gets `memoryMiB` exactly. (QEMU
 * rounds `-m` up to 8 KiB, so 8 KiB is the smallest step that changes the block.) See
 * docs/migration.md, "TCG hosts".
 */
export function qemuMemoryArg(accel: QemuLaunchConfig['accel'], memoryMiB: number): string {
  return accel === 'tcg' ? `${memoryMiB * 1024 - tcgMemoryShortfallKiB}k` : `${memoryMiB}M`;
}

/**
 * Turns a launch config into a QEMU command line (`argv[0]` is `binary`). Validates
 * everything first and throws `invalid` naming the bad field; values are escaped for
 * QEMU's option syntax, so paths may contain commas.
 */
export function buildQemuArgv(config: QemuLaunchConfig, binary = 'qemu-system-x86_64'): string[] {
  validate(config);
  const argv = [
    binary,
    '-name',
    `guest=${escapeOptionValue(config.name)},debug-threads=on`,
    '-uuid',
    config.uuid.toLowerCase(),
    '-msg',
    'timestamp=on',
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-machine',
    config.machine ?? 'q35',
    '-accel',
    config.accel,
    '-cpu',
    config.cpuModel,
    '-smp',
    String(config.cpus),
    '-m',
    qemuMemoryArg(config.accel, config.memoryMiB),
  ];
  if (config.sandbox === true) argv.push('-sandbox', sandboxOption);
  argv.push('-pidfile', config.pidFile);
  argv.push('-qmp', `unix:${escapeOptionValue(config.qmpSocket)},server=on,wait=off`);
  // logfile keeps the console even while no client is attached (QEMU drops it otherwise).
  argv.push(
    '-chardev',
    [
      'socket',
      'id=serial0',
      `path=${escapeOptionValue(config.serialSocket)}`,
      'server=on',
      'wait=off',
      `logfile=${escapeOptionValue(config.serialLog)}`,
      'logappend=on',
    ].join(','),
    '-serial',
    'chardev:serial0',
  );
  // -nodefaults removes the default VGA, and VNC without a display device shows nothing.
  if (config.vncSocket !== undefined) argv.push('-vnc', `unix:${escapeOptionValue(config.vncSocket)}`, '-device', 'VGA');

  // Root ports before the devices that sit on them.
  for (const index of [...(config.rootPorts ?? [])].sort((a, b) => a - b)) argv.push('-device', optionString(rootPortProps(index), 'driver'));
  const bootIndexes = bootIndexesOf(config);
  let ahciPort = 0;
  for (const disk of config.disks) {
    argv.push(...diskArgs(disk, bootIndexes.get(disk), ahciPort));
    if (disk.media === 'cdrom') ahciPort++;
  }
  for (const nic of config.nics) argv.push('-netdev', nicNetdevOption(nic), '-device', optionString(nicDevice(nic), 'driver'));

  if (config.boot.kind === 'kernel') {
    argv.push('-kernel', config.boot.kernel);
    if (config.boot.initrd !== undefined) argv.push('-initrd', config.boot.initrd);
    argv.push('-append', config.boot.cmdline);
  } else {
    // strict: only the devices we gave a boot index, never a fall-through to the network.
    argv.push('-boot', 'strict=on');
  }
  if (config.startPaused === true) argv.push('-S');
  if (config.incomingDefer === true) argv.push('-incoming', 'defer');
  return argv;
}

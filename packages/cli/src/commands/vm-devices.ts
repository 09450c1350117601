import { InvalidArgumentError, type Command } from 'commander';
import { errors, formatSize } from '@drover/core';
import type { VmDiskAdd, VmDiskInfo, VmNicAdd, VmNicInfo } from '@drover/api';
import { apiCommand, collectForward, type Cli } from '../cli.js';
import { seg } from '../client.js';
import { formatTable, orDash } from '../output.js';
import type { Forward, Operation } from '../types.js';
import { withWaitOption, yesNo } from './common.js';
import { parseDiskSize } from './vm.js';

export function diskTable(disks: VmDiskInfo[]): string {
  return formatTable(
    ['INDEX', 'POOL', 'VOLUME', 'MEDIA', 'MODE', 'BOOT', 'ADDED'],
    disks.map((d) => [String(d.index), d.pool, d.volume, d.media, d.readOnly ? 'ro' : 'rw', yesNo(d.boot), yesNo(d.added)]),
  );
}

export function nicTable(nics: VmNicInfo[]): string {
  return formatTable(
    ['INDEX', 'MAC', 'FORWARDS', 'ADDED'],
    nics.map((n) => [String(n.index), n.mac, orDash(n.forwards.map((f) => `${f.hostPort}->${f.guestPort}`).join(', ')), yesNo(n.added)]),
  );
}

interface DiskAddOptions {
  volume?: string;
  size?: number;
  name?: string;
  pool?: string;
  readOnly?: boolean;
  wait: boolean;
}

/** The body of `POST /vms/:vm/disks` for `drover vm disk add`: an existing volume (--volume) or a new one (--size). */
export function diskAddBody(options: DiskAddOptions): VmDiskAdd {
  if ((options.volume === undefined) === (options.size === undefined)) throw errors.invalid('Give either --volume (an existing volume) or --size (a new empty one)');
  const pool = options.pool === undefined ? {} : { pool: options.pool };
  if (options.volume !== undefined) {
    if (options.name !== undefined) throw errors.invalid('--name names a new volume; it goes with --size, not --volume');
    return { volume: options.volume, ...pool, ...(options.readOnly ? { readOnly: true } : {}) };
  }
  if (options.readOnly) throw errors.invalid('--read-only goes with --volume: a new empty disk is for the guest to write');
  return { sizeBytes: options.size!, ...(options.name !== undefined ? { name: options.name } : {}), ...pool };
}

function parseMac(value: string): string {
  const mac = value.trim().toLowerCase();
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(mac)) throw new InvalidArgumentError(`MAC address "${value}" must look like 52:54:00:12:34:56`);
  return mac;
}

/** "hot-plugged" or "at its next start", from an operation's `result.live`. */
function when(operation: Operation, added: boolean): string {
  const live = (operation.result as { live?: boolean } | null)?.live;
  if (live === undefined) return '';
  return live ? ' (hot-plugged)' : added ? ' (from its next start)' : ' (from its definition)';
}

/**
 * `drover vm disk ...` and `drover vm nic ...`: the disks and NICs of a VM,
 * added and removed while it runs (hotplug) or while it is stopped.
 */
export function registerVmDeviceCommands(cli: Cli, vm: Command): void {
  const disk = vm
    .command('disk')
    .description('Disks of a VM: list, add (hot-plugged while it runs), remove')
    .addHelpText(
      'after',
      `
A running VM gets or loses the disk at once; a stopped one at its next start.
Only disks added this way can be removed; the volume itself stays in its pool
(a volume made with --size is deleted with the VM).

Examples:
  $ drover vm disk list web1
  $ drover vm disk add web1 --size 1G
  $ drover vm disk add web1 --volume shared-data.qcow2 --pool fast --read-only
  $ drover vm disk remove web1 1`,
    );

  apiCommand(disk, 'list <vm>', "List a VM's disks as its host has them (INDEX POOL VOLUME MEDIA MODE BOOT ADDED)")
    .alias('ls')
    .action(
      cli.action(async (session, [name]) => {
        const disks = await (await session.client()).get<VmDiskInfo[]>(`/vms/${seg(name!)}/disks`);
        session.print(disks, () => diskTable(disks));
      }),
    );

  withWaitOption(apiCommand(disk, 'add <vm>', 'Add a disk: an existing volume on the VM\'s host, or a new empty one'))
    .option('--volume <name>', 'attach this existing volume')
    .option('--pool <pool>', 'the pool of the volume (default: "default")')
    .option('--read-only', 'with --volume: the guest may only read it')
    .option('--size <size>', 'make a new empty volume of this size, e.g. 512M or 10G', parseDiskSize)
    .option('--name <name>', 'with --size: the new volume\'s name (default <vm id>.disk-<hex>.qcow2)')
    .action(
      cli.action<DiskAddOptions>(async (session, [name], options) => {
        const body = diskAddBody(options);
        const operation = await (await session.client()).post<Operation>(`/vms/${seg(name!)}/disks`, body);
        const what = 'volume' in body ? `volume ${body.pool ?? 'default'}/${body.volume}` : `a new ${formatSize(body.sizeBytes)} disk`;
        await session.followOperation(operation, { wait: options.wait, label: `add disk to ${name}`, done: (final) => `Added ${what} to VM ${name}${when(final, true)}.` });
      }),
    );

  withWaitOption(apiCommand(disk, 'remove <vm> <disk>', 'Remove a disk added to a VM, by its index (see "disk list") or volume name'))
    .alias('rm')
    .action(
      cli.action<{ wait: boolean }>(async (session, [name, which], options) => {
        const operation = await (await session.client()).delete<Operation>(`/vms/${seg(name!)}/disks/${seg(which!)}`);
        await session.followOperation(operation, { wait: options.wait, label: `remove disk ${which} of ${name}`, done: (final) => `Removed disk ${which} from VM ${name}${when(final, false)}.` });
      }),
    );

  const nic = vm
    .command('nic')
    .description('NICs of a VM: list, add (hot-plugged while it runs), remove')
    .addHelpText(
      'after',
      `
NICs use QEMU user networking; forwards listen on the host's 127.0.0.1. Only NICs
added this way can be removed.

Examples:
  $ drover vm nic list web1
  $ drover vm nic add web1 --forward 8081:80
  $ drover vm nic add web1 --mac 52:54:00:12:34:56
  $ drover vm nic remove web1 52:54:00:12:34:56`,
    );

  apiCommand(nic, 'list <vm>', "List a VM's NICs as its host has them (INDEX MAC FORWARDS ADDED)")
    .alias('ls')
    .action(
      cli.action(async (session, [name]) => {
        const nics = await (await session.client()).get<VmNicInfo[]>(`/vms/${seg(name!)}/nics`);
        session.print(nics, () => nicTable(nics));
      }),
    );

  withWaitOption(apiCommand(nic, 'add <vm>', 'Add a user-mode NIC'))
    .option('--mac <mac>', 'its MAC address (default: a random 52:54:00:xx:xx:xx)', parseMac)
    .option('--forward <hostport:guestport>', 'forward a host TCP port to the guest (repeatable)', collectForward)
    .action(
      cli.action<{ mac?: string; forward?: Forward[]; wait: boolean }>(async (session, [name], options) => {
        const body: VmNicAdd = { ...(options.mac ? { mac: options.mac } : {}), ...(options.forward?.length ? { forwards: options.forward } : {}) };
        const operation = await (await session.client()).post<Operation>(`/vms/${seg(name!)}/nics`, body);
        await session.followOperation(operation, {
          wait: options.wait,
          label: `add NIC to ${name}`,
          done: (final) => {
            const mac = (final.result as { nic?: { mac?: string } } | null)?.nic?.mac;
            return `Added ${mac ? `NIC ${mac}` : 'a NIC'} to VM ${name}${when(final, true)}.`;
          },
        });
      }),
    );

  withWaitOption(apiCommand(nic, 'remove <vm> <nic>', 'Remove a NIC added to a VM, by its index (see "nic list") or MAC address'))
    .alias('rm')
    .action(
      cli.action<{ wait: boolean }>(async (session, [name, which], options) => {
        const operation = await (await session.client()).delete<Operation>(`/vms/${seg(name!)}/nics/${seg(which!)}`);
        await session.followOperation(operation, { wait: options.wait, label: `remove NIC ${which} of ${name}`, done: (final) => `Removed NIC ${which} from VM ${name}${when(final, false)}.` });
      }),
    );
}

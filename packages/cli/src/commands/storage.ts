import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { InvalidArgumentError } from 'commander';
import { errors, formatSize, parseSize } from '@drover/core';
import type { PoolInfo, VolumeInfo } from '@drover/api';
import { apiCommand, type Cli } from '../cli.js';
import { seg } from '../client.js';
import { formatTable, orDash } from '../output.js';
import { downloadToNewFile } from './common.js';

export function poolTable(pools: PoolInfo[]): string {
  return formatTable(
    ['NAME', 'PATH', 'SHARED', 'VOLUMES', 'ALLOCATED', 'AVAILABLE', 'CAPACITY'],
    pools.map((p) => [p.name, p.path, p.shared ? 'yes' : 'no', String(p.volumes), formatSize(p.allocatedBytes), formatSize(p.availableBytes), formatSize(p.capacityBytes)]),
  );
}

export function volumeTable(volumes: VolumeInfo[]): string {
  return formatTable(
    ['NAME', 'FORMAT', 'SIZE', 'ALLOCATED', 'BACKING', 'USED BY'],
    volumes.map((v) => [v.name, v.format, formatSize(v.virtualBytes), formatSize(v.allocatedBytes), orDash(v.backing), orDash(v.usedBy.join(', '))]),
  );
}

/** `--size 64M`: bytes, with K, M, G or T (powers of 1024). */
function sizeBytes(value: string): number {
  try {
    return parseSize(value);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

const poolsOf = (host: string) => `/hosts/${seg(host)}/pools`;
const volumesOf = (host: string, pool: string) => `${poolsOf(host)}/${seg(pool)}/volumes`;
const volumeOf = (host: string, pool: string, name: string) => `${volumesOf(host, pool)}/${seg(name)}`;

export function registerStorageCommands(cli: Cli): void {
  const pool = cli.program
    .command('pool')
    .description("Storage pools of a host: directories holding its volumes")
    .addHelpText(
      'after',
      `
Examples:
  $ drover pool list h1
  $ drover pool create h1 fast /srv/drover/fast
  $ drover pool create h1 san /mnt/san/drover --shared   # the same path on each host; define it on each
  $ drover pool delete h1 fast`,
    );

  apiCommand(pool, 'list <host>', 'List the storage pools of a host')
    .alias('ls')
    .action(
      cli.action(async (session, [host]) => {
        const pools = await (await session.client()).get<PoolInfo[]>(poolsOf(host!));
        session.print(pools, () => poolTable(pools));
      }),
    );

  apiCommand(pool, 'create <host> <name> <path>', 'Define a pool on a host (a new or empty directory)')
    .option('--shared', 'the same path or LUN is visible on several hosts')
    .action(
      cli.action<{ shared?: boolean }>(async (session, [host, name, path], options) => {
        const created = await (await session.client()).post<PoolInfo>(poolsOf(host!), { name, path, ...(options.shared ? { shared: true } : {}) });
        session.print(created, () => `Defined pool ${created.name} on host ${host} at ${created.path}.\n`);
      }),
    );

  apiCommand(pool, 'delete <host> <name>', 'Forget an empty pool (its directory stays)')
    .alias('rm')
    .action(
      cli.action(async (session, [host, name]) => {
        await (await session.client()).delete<unknown>(`${poolsOf(host!)}/${seg(name!)}`);
        session.print({ deleted: name }, () => `Deleted pool ${name} of host ${host}.\n`);
      }),
    );

  const volume = cli.program
    .command('volume')
    .description('Volumes in the pools of a host: create, clone, resize, delete, download, upload')
    .addHelpText(
      'after',
      `
The format follows the name: NAME.qcow2 is qcow2, anything else is raw.

Examples:
  $ drover volume list h1 default
  $ drover volume create h1 default base.qcow2 --size 10G
  $ drover volume create h1 default web-1.qcow2 --clone-of base.qcow2
  $ drover volume resize h1 default web-1.qcow2 --size 20G
  $ drover volume download h1 default disk.raw ./disk.raw
  $ drover volume upload h1 default imported.qcow2 ./image.qcow2
  $ drover volume delete h1 default web-1.qcow2`,
    );

  apiCommand(volume, 'list <host> <pool>', 'List the volumes of a pool')
    .alias('ls')
    .action(
      cli.action(async (session, [host, poolName]) => {
        const volumes = await (await session.client()).get<VolumeInfo[]>(volumesOf(host!, poolName!));
        session.print(volumes, () => volumeTable(volumes));
      }),
    );

  apiCommand(volume, 'create <host> <pool> <name>', 'Create an empty volume (--size) or a thin qcow2 clone of another (--clone-of)')
    .option('--size <size>', 'virtual size, e.g. 64M or 10G (with --clone-of: grow the clone to it)', sizeBytes)
    .option('--clone-of <base>', 'a volume of the same pool to base a thin qcow2 clone on')
    .action(
      cli.action<{ size?: number; cloneOf?: string }>(async (session, [host, poolName, name], options) => {
        if (options.size === undefined && options.cloneOf === undefined) throw errors.invalid('Give --size SIZE or --clone-of BASE');
        const body = { name, ...(options.cloneOf !== undefined ? { cloneOf: options.cloneOf } : {}), ...(options.size !== undefined ? { sizeBytes: options.size } : {}) };
        const created = await (await session.client()).post<VolumeInfo>(volumesOf(host!, poolName!), body);
        session.print(created, () => `Created volume ${created.name} (${created.format}, ${formatSize(created.virtualBytes)}) in pool ${poolName} of host ${host}.\n`);
      }),
    );

  apiCommand(volume, 'resize <host> <pool> <name>', 'Grow a volume (never shrinks)')
    .requiredOption('--size <size>', 'the new virtual size, e.g. 20G', sizeBytes)
    .action(
      cli.action<{ size: number }>(async (session, [host, poolName, name], options) => {
        const resized = await (await session.client()).post<VolumeInfo>(`${volumeOf(host!, poolName!, name!)}/resize`, { sizeBytes: options.size });
        session.print(resized, () => `Resized volume ${resized.name} to ${formatSize(resized.virtualBytes)}.\n`);
      }),
    );

  apiCommand(volume, 'delete <host> <pool> <name>', 'Delete a volume (not while a VM uses it or a clone is based on it)')
    .alias('rm')
    .action(
      cli.action(async (session, [host, poolName, name]) => {
        await (await session.client()).delete<unknown>(volumeOf(host!, poolName!, name!));
        session.print({ deleted: name }, () => `Deleted volume ${name} of pool ${poolName} on host ${host}.\n`);
      }),
    );

  apiCommand(volume, 'download <host> <pool> <name> <file>', "Save a volume's bytes to a new FILE (raw as it is, qcow2 as the qcow2 file)").action(
    cli.action(async (session, [host, poolName, name, file]) => {
      const bytes = await downloadToNewFile(session, `${volumeOf(host!, poolName!, name!)}/content`, file!);
      session.print({ volume: name, file, bytes }, () => `Saved volume ${name} to ${file} (${formatSize(bytes)}).\n`);
    }),
  );

  apiCommand(volume, 'upload <host> <pool> <name> <file>', 'Make a NEW volume from FILE (the format follows NAME; a qcow2 with a backing file is refused)').action(
    cli.action(async (session, [host, poolName, name, file]) => {
      const info = await stat(file!);
      if (!info.isFile()) throw errors.invalid(`${file} is not a regular file`);
      const created = await (await session.client()).upload<VolumeInfo>(`${volumeOf(host!, poolName!, name!)}/content`, createReadStream(file!), info.size);
      session.print(created, () => `Uploaded ${file} as volume ${created.name} (${created.format}, ${formatSize(created.virtualBytes)}).\n`);
    }),
  );
}

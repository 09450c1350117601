import path from 'node:path';
import { InvalidArgumentError } from 'commander';
import { apiCommand, type Cli } from '../cli.js';
import { seg } from '../client.js';
import { formatFields, formatTable } from '../output.js';
import { errors, formatSize } from '@drover/core';
import type { Image, ImageImport, Operation } from '../types.js';
import { fetchList, printPage, withListOptions, withWaitOption, type ListOptions } from './common.js';

export function imageTable(images: Image[]): string {
  return formatTable(
    ['NAME', 'VERSION', 'FORMAT', 'SIZE', 'SHA256', 'SOURCE'],
    images.map((image) => [image.name, image.version, image.format, formatSize(image.sizeBytes), image.sha256.slice(0, 12), image.source]),
  );
}

export function imageDetails(image: Image): string {
  return formatFields([
    ['Name', image.name],
    ['Version', image.version],
    ['ID', image.id],
    ['Format', image.format],
    ['Size', formatSize(image.sizeBytes)],
    ['SHA-256', image.sha256],
    ['Source', image.source],
    ['Created', image.createdAt],
  ]);
}

interface ImportOptions {
  /** --download (the global --url names the manager). */
  download?: string;
  file?: string;
  format?: ImageImport['format'];
  imageVersion?: string;
  wait: boolean;
}

/** The POST /images body of `image import`: exactly one of --download and --file; a relative --file is made absolute here. */
export function importImageBody(name: string, options: ImportOptions, cwd = process.cwd()): ImageImport {
  if ((options.download === undefined) === (options.file === undefined)) throw errors.invalid('Give exactly one of --download URL and --file PATH');
  const source = options.download !== undefined ? { url: options.download } : { path: path.resolve(cwd, options.file!) };
  return { name, source, ...(options.imageVersion !== undefined ? { version: options.imageVersion } : {}), ...(options.format !== undefined ? { format: options.format } : {}) };
}

function importFormatOption(value: string): ImageImport['format'] {
  if (value !== 'qcow2' && value !== 'raw' && value !== 'iso') throw new InvalidArgumentError('--format must be qcow2, raw or iso');
  return value;
}

export function registerImageCommands(cli: Cli): void {
  const image = cli.program.command('image').description('The image library: appliances, imported disk images and ISOs');
  withListOptions(apiCommand(image, 'list', 'List the images in the library'), 'images')
    .alias('ls')
    .option('--name <name>', 'only images whose name matches')
    .addHelpText(
      'after',
      `
Example:
  $ drover image list
  $ drover vm create web1 --image web:1.0`,
    )
    .action(
      cli.action<ListOptions & { name?: string }>(async (session, _args, options) => {
        const page = await fetchList<Image>(session, '/images', { name: options.name }, options);
        printPage(session, page, imageTable, 'drover image list');
      }),
    );

  apiCommand(image, 'show <image>', 'Show one image (by id, name:version, or a name with one version)').action(
    cli.action(async (session, [ref]) => {
      const found = await (await session.client()).get<Image>(`/images/${seg(ref!)}`);
      session.print(found, () => imageDetails(found));
    }),
  );

  withWaitOption(apiCommand(image, 'import <name>', 'Import a disk image (qcow2 or raw) or an ISO into the library'))
    .option('--download <url>', 'have the manager download it (http or https)')
    .option('--file <path>', "copy it from a path on the manager's machine, inside its imageImportDirs (default <dataDir>/import)")
    .option('--format <format>', 'qcow2, raw or iso (default: recognised from the content)', importFormatOption)
    .option('--image-version <version>', 'the release to record (default 1)')
    .addHelpText(
      'after',
      `
The manager fetches the file, inspects it as untrusted (a qcow2 with a backing or
data file, another format than declared, or a virtual size over the limit is
refused), stores disks as qcow2 and ISOs as they are, and registers the image.
--file names a path on the manager's machine, not an upload: under "drover up"
that is this machine, in <dataDir>/manager/import.

Examples:
  $ drover image import debian-12 --download https://images.example/debian-12.qcow2
  $ drover image import installer --file /var/lib/drover/manager/import/netinst.iso --format iso
  $ drover vm create vm1 --image debian-12 --cloud-init-user-data ./user-data --start
  $ drover vm create vm2 --iso installer --disk-size 8G --start`,
    )
    .action(
      cli.action<ImportOptions>(async (session, [name], options) => {
        const body = importImageBody(name!, options);
        const operation = await (await session.client()).post<Operation>('/images', body);
        await session.followOperation(operation, {
          wait: options.wait,
          label: `import ${name}`,
          done: (final) => {
            const imported = (final.result as { image?: Image } | null)?.image;
            return imported ? `Imported image ${imported.name}:${imported.version} (${imported.format}, ${formatSize(imported.sizeBytes)}).` : `Imported image ${name}.`;
          },
        });
      }),
    );

  withWaitOption(apiCommand(image, 'delete <image>', 'Delete an imported image that no VM uses (from the library and every host)'))
    .alias('rm')
    .action(
      cli.action<{ wait: boolean }>(async (session, [ref], options) => {
        const operation = await (await session.client()).delete<Operation>(`/images/${seg(ref!)}`);
        await session.followOperation(operation, { wait: options.wait, label: `delete image ${ref}`, done: () => `Deleted image ${ref}.` });
      }),
    );
}

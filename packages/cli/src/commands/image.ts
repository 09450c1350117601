import { apiCommand, type Cli } from '../cli.js';
import { formatTable } from '../output.js';
import { formatSize } from '@drover/core';
import type { Image } from '../types.js';
import { fetchList, printPage, withListOptions, type ListOptions } from './common.js';

export function imageTable(images: Image[]): string {
  return formatTable(
    ['NAME', 'VERSION', 'FORMAT', 'SIZE', 'SHA256', 'SOURCE'],
    images.map((image) => [image.name, image.version, image.format, formatSize(image.sizeBytes), image.sha256.slice(0, 12), image.source]),
  );
}

export function registerImageCommands(cli: Cli): void {
  const image = cli.program.command('image').description('Appliance images VMs are created from');
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
}

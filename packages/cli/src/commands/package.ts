import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { apiCommand, type Cli } from '../cli.js';
import { seg } from '../client.js';
import { formatFields, formatTable } from '../output.js';
import { errors, formatSize } from '@drover/core';
import type { Operation, Package, PackageTrustedKey } from '@drover/api';
import { downloadToNewFile, withWaitOption } from './common.js';

export function packageTable(packages: Package[]): string {
  return formatTable(
    ['NAME', 'VERSION', 'VMS', 'SOURCE', 'SIGNER', 'SIZE', 'CREATED'],
    packages.map((p) => [p.name, p.version, p.manifest.vms.map((v) => v.name).join(','), p.source, p.signerKeyId ? p.signerKeyId.slice(0, 12) : '-', p.fileSizeBytes === null ? '-' : formatSize(p.fileSizeBytes), p.createdAt]),
  );
}

export function packageDetails(p: Package): string {
  const m = p.manifest;
  const fields = formatFields([
    ['Name', p.name],
    ['Version', p.version],
    ['ID', p.id],
    ['Description', p.description ?? ''],
    ['Format version', String(p.formatVersion)],
    ['Source', `${p.source} (${p.origin})`],
    ['Signer key', p.signerKeyId ?? '(not signed)'],
    ['File', p.fileSizeBytes === null ? '(none)' : `${formatSize(p.fileSizeBytes)} sha256 ${p.fileSha256}`],
    ['Networks', m.networks.map((n) => `${n.name} (${n.kind} ${n.subnet})`).join(', ') || '(none)'],
    ['Security groups', m.securityGroups.map((g) => `${g.name} (${g.rules.length} rules)`).join(', ') || '(none)'],
    ['Update policy', m.updatePolicy ? `${m.updatePolicy.policy}${m.updatePolicy.channel ? ` on ${m.updatePolicy.channel}` : ''}` : 'pinned'],
    ['Created', p.createdAt],
  ]);
  const vms = formatTable(
    ['VM', 'CPUS', 'MEMORY', 'BOOT', 'DISKS', 'NICS', 'DEPENDS ON'],
    m.vms.map((v) => [v.name, String(v.cpus), `${v.memoryMiB} MiB`, v.boot.method, v.disks.map((d) => `${d.role}:${formatSize(d.virtualSizeBytes)}`).join(','), v.nics.map((n) => n.network).join(',') || '-', (v.dependsOn ?? []).join(',') || '-']),
  );
  return `${fields}\n${vms}`;
}

function imported(final: Operation, fallback: string): string {
  const p = (final.result as { package?: Package } | null)?.package;
  return p ? `Package ${p.name}:${p.version} (${p.manifest.vms.length} VMs, source ${p.source}).` : fallback;
}

export function registerPackageCommands(cli: Cli): void {
  const pkg = cli.program.command('package').description('Appliance packages (.eva): several VMs with their networks in one signed file; OVA import');

  apiCommand(pkg, 'list', 'List the imported packages')
    .alias('ls')
    .action(
      cli.action(async (session) => {
        const answer = await (await session.client()).get<{ items: Package[] }>('/packages');
        session.print(answer, () => packageTable(answer.items));
      }),
    );

  apiCommand(pkg, 'show <package>', 'Show a package (id, name:version, or a name with one version): its VMs, networks and files').action(
    cli.action(async (session, [ref]) => {
      const found = await (await session.client()).get<Package>(`/packages/${seg(ref!)}`);
      session.print(found, () => packageDetails(found));
    }),
  );

  withWaitOption(apiCommand(pkg, 'export <name> <version> [vm...]', 'Export stopped VMs, or a stopped lab, as a signed package (kept here, see download)'))
    .option('--lab <lab>', 'export this lab (its VMs stopped) instead of VMs: its manifest with the VMs\' current disks')
    .option('--sign-with <key>', 'the VMcasting key (name or key id) that signs it (default: the active key)')
    .option('--description <text>', 'what the package is')
    .addHelpText(
      'after',
      `
The VMs must be stopped (a lab: drover lab stop). Every disk (root and data
disks) is copied as a standalone qcow2 image,
the manifest records CPUs, memory, labels, NICs with their networks and
security groups, and guest settings; the file is signed with an Ed25519 key
of this manager (drover vmcast key create) and imported here like any package.

Example:
  $ drover package export web-db 1.0 web1 web2 db1 db2
  $ drover package export class-lab 2.0 --lab class1
  $ drover package download web-db:1.0 ./web-db-1.0.eva`,
    )
    .action(
      cli.action<{ wait: boolean; lab?: string; signWith?: string; description?: string }>(async (session, args, options) => {
        const [name, version, ...vms] = args as [string, string, ...string[]];
        if ((vms.length === 0) === (options.lab === undefined)) throw errors.invalid('Give exactly one of VM names and --lab LAB');
        const body = { name, version, ...(options.lab !== undefined ? { lab: options.lab } : { vms }), ...(options.signWith ? { signWith: options.signWith } : {}), ...(options.description ? { description: options.description } : {}) };
        const operation = await (await session.client()).post<Operation>('/packages/export', body);
        await session.followOperation(operation, { wait: options.wait, label: `export ${name}:${version}`, done: (final) => imported(final, `Exported ${name}:${version}.`) });
      }),
    );

  const importAction = (kind: 'eva' | 'ova') =>
    cli.action<{ wait: boolean; download?: string; trustKey?: string[]; name?: string; packageVersion?: string }>(async (session, [file], options) => {
      if ((file === undefined) === (options.download === undefined)) throw errors.invalid('Give exactly one of FILE and --download URL');
      const client = await session.client();
      let operation: Operation;
      if (file !== undefined) {
        const info = await stat(file);
        if (!info.isFile()) throw errors.invalid(`${file} is not a regular file`);
        const query = new URLSearchParams({ kind, ...(options.name ? { name: options.name } : {}), ...(options.packageVersion ? { version: options.packageVersion } : {}) });
        operation = await client.upload<Operation>(`/packages/import/upload?${query.toString()}`, createReadStream(file), info.size, 'POST');
      } else {
        const trustKeys = await Promise.all((options.trustKey ?? []).map((f) => readFile(f, 'utf8')));
        operation = await client.post<Operation>('/packages/import', { url: options.download!, kind, ...(trustKeys.length ? { trustKeys } : {}) });
      }
      await session.followOperation(operation, { wait: options.wait, label: `import ${file ?? options.download}`, done: (final) => imported(final, 'Imported.') });
    });

  withWaitOption(apiCommand(pkg, 'import [file]', 'Import an .eva package: uploaded from FILE, or downloaded by the manager'))
    .option('--download <url>', 'have the manager download it (http or https)')
    .option('--trust-key <pem-file...>', 'with --download: also trust this publisher key (PEM) for this import')
    .addHelpText(
      'after',
      `
The package is extracted into a staging directory with strict checks (only
regular files and directories, no links, devices, absolute paths or "..",
size quotas, manifest first), its SHA256SUMS and Ed25519 signature are
verified with a trusted key (this manager's VMcasting keys, its
subscriptions' pinned keys, drover package trust), its disks are inspected
as untrusted qcow2; only then does it enter the library.

Examples:
  $ drover package trust add site-a ./site-a.pem
  $ drover package import ./web-db-1.0.eva`,
    )
    .action(importAction('eva'));

  withWaitOption(apiCommand(pkg, 'import-ova [file]', 'Import an OVA (OVF 1.x/2.x): its VMs, disks (VMDK, qcow2, raw) and start order become a package'))
    .option('--download <url>', 'have the manager download it (http or https)')
    .option('--name <name>', 'the package name (default: the OVF\'s VirtualSystemCollection or VirtualSystem id)')
    .option('--package-version <version>', 'the package version (default 1)')
    .addHelpText(
      'after',
      `
The .ovf must be the first entry of the OVA. A VirtualSystemCollection's
StartupSection becomes the start order; networks become isolated networks.
VMDKs must be monolithic sparse or streamOptimized.

Example:
  $ drover package import-ova ./shop.ova --name shop`,
    )
    .action(importAction('ova'));

  apiCommand(pkg, 'download <package> <file>', "Save a package's signed .eva file to a new FILE").action(
    cli.action(async (session, [ref, file]) => {
      const bytes = await downloadToNewFile(session, `/packages/${seg(ref!)}/file`, file!);
      session.print({ package: ref, file, bytes }, () => `Saved package ${ref} to ${file} (${formatSize(bytes)}).\n`);
    }),
  );

  apiCommand(pkg, 'delete <package>', 'Delete a package, its file and its library images (refused while a VM uses one)')
    .alias('rm')
    .action(
      cli.action(async (session, [ref]) => {
        await (await session.client()).delete<unknown>(`/packages/${seg(ref!)}`);
        session.print({ deleted: ref }, () => `Deleted package ${ref}.\n`);
      }),
    );

  const trust = pkg.command('trust').description('Publisher keys trusted for package signatures (besides the VMcasting keys)');
  apiCommand(trust, 'list', 'List the trusted publisher keys').action(
    cli.action(async (session) => {
      const answer = await (await session.client()).get<{ items: PackageTrustedKey[] }>('/packages/trusted-keys');
      session.print(answer, () => formatTable(['NAME', 'KEY ID', 'CREATED'], answer.items.map((k) => [k.name, k.keyId, k.createdAt])));
    }),
  );
  apiCommand(trust, 'add <name> <pem-file>', "Trust a publisher's Ed25519 public key (PEM), e.g. another manager's VMcasting key").action(
    cli.action(async (session, [name, file]) => {
      const key = await (await session.client()).post<PackageTrustedKey>('/packages/trusted-keys', { name: name!, publicKey: await readFile(file!, 'utf8') });
      session.print(key, () => `Trusting key ${key.keyId} as ${key.name}.\n`);
    }),
  );
  apiCommand(trust, 'remove <key>', 'Stop trusting a key (its name or key id)').action(
    cli.action(async (session, [key]) => {
      await (await session.client()).delete<unknown>(`/packages/trusted-keys/${seg(key!)}`);
      session.print({ removed: key }, () => `No longer trusting ${key}.\n`);
    }),
  );
}

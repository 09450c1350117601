import { readFile } from 'node:fs/promises';
import { InvalidArgumentError, type Command } from 'commander';
import { errors, formatSize } from '@drover/core';
import type { VmcastChannel, VmcastFollow, VmcastKey, VmcastPackage, VmcastRelease, VmcastSubscription, VmPackages } from '@drover/api';
import { apiCommand, positiveInt, type Cli } from '../cli.js';
import { seg } from '../client.js';
import { formatTable } from '../output.js';
import type { Operation } from '../types.js';
import { withWaitOption } from './common.js';

const policies = ['auto', 'notify', 'pinned'] as const;
type Policy = (typeof policies)[number];

function policyOption(value: string): Policy {
  if (!(policies as readonly string[]).includes(value)) throw new InvalidArgumentError('--policy must be auto, notify or pinned');
  return value as Policy;
}

export function releaseTable(releases: VmcastRelease[]): string {
  return formatTable(
    ['NAME', 'VERSION', 'STATE', 'SIZE', 'SHA256', 'REASON'],
    releases.map((r) => [r.name, r.version, r.state, formatSize(Number(r.manifest.sizeBytes ?? 0)), String(r.manifest.sha256 ?? '').slice(0, 12), r.reason ?? '']),
  );
}

export function followTable(follows: VmcastFollow[]): string {
  return formatTable(
    ['VM', 'CHANNEL', 'POLICY', 'HELD', 'CURRENT', 'PENDING'],
    follows.map((f) => [f.vm, f.channel, f.policy, f.held ? 'yes' : 'no', f.currentRelease ?? '', f.pendingRelease ?? '']),
  );
}

export function packageTable(packages: VmcastPackage[]): string {
  return formatTable(
    ['NAME', 'VERSION', 'STATE', 'SIZE', 'SHA256', 'REASON'],
    packages.map((p) => [p.name, p.version, p.state, formatSize(p.sizeBytes), p.sha256.slice(0, 12), p.reason ?? '']),
  );
}

/** `drover vm packages VM`: installed (the guest's report), offered, pending approval. */
export function vmPackagesText(v: VmPackages): string {
  const versions = (list: Array<{ name: string; version: string }>) => new Map(list.map((p) => [p.name, p.version]));
  const installed = versions(v.installed);
  const offered = versions(v.offered);
  const pending = versions(v.pending);
  const names = [...new Set([...installed.keys(), ...offered.keys(), ...pending.keys()])].sort();
  const head = `VM ${v.vm}: ${v.channel ? `channel ${v.channel}, policy ${v.policy}${v.held ? ', held' : ''}` : 'follows no channel'}; guest report ${v.reportedAt ?? 'none yet'}
`;
  if (names.length === 0) return `${head}No packages.
`;
  return head + formatTable(['PACKAGE', 'INSTALLED', 'OFFERED', 'PENDING'], names.map((n) => [n, installed.get(n) ?? '', offered.get(n) ?? '', pending.get(n) ?? '']));
}

/** A PEM given inline or as @file / a path to a file. */
async function pemOf(value: string): Promise<string> {
  if (value.includes('-----BEGIN')) return value;
  try {
    return await readFile(value.startsWith('@') ? value.slice(1) : value, 'utf8');
  } catch {
    throw errors.invalid(`Cannot read the publisher key "${value}": give a PEM file`);
  }
}

/**
 * VMcasting from the command line: `drover channel` (what this manager
 * publishes), `drover subscription` (feeds it follows) and, on `drover vm`,
 * `follow`, `unfollow`, `hold`, `unhold`, `update`, `packages`.
 */
export function registerVmcastCommands(cli: Cli, vm: Command): void {
  const channel = cli.program.command('channel').description('VMcasting: channels this manager publishes as RSS feeds, their releases and the publisher keys');
  apiCommand(channel, 'list', 'List the published channels and their feed URLs').action(
    cli.action(async (session) => {
      const page = await (await session.client()).get<{ items: VmcastChannel[] }>('/vmcast/channels');
      session.print(page, () => formatTable(['NAME', 'TITLE', 'FEED'], page.items.map((c) => [c.name, c.title, c.feedPath])));
    }),
  );
  apiCommand(channel, 'create <name>', 'Create a channel')
    .option('--title <title>', 'a title for feed readers')
    .option('--description <text>', 'a description for feed readers')
    .action(
      cli.action<{ title?: string; description?: string }>(async (session, [name], options) => {
        const created = await (await session.client()).post<VmcastChannel>('/vmcast/channels', { name, ...(options.title ? { title: options.title } : {}), ...(options.description ? { description: options.description } : {}) });
        session.print(created, () => `Created channel ${created.name}; its feed: ${created.feedPath}\n`);
      }),
    );
  apiCommand(channel, 'publish <channel> <image>', 'Publish a qcow2 image of the library as a release, signed with the active key')
    .option('--release-version <version>', 'the release version (default: the image version)')
    .option('--name <name>', 'the appliance name (default: the image name)')
    .option('--boot <method>', 'disk or appliance-kernel (default disk)')
    .option('--min-memory <mib>', 'minimum memory in MiB', positiveInt('--min-memory'))
    .option('--min-cpus <n>', 'minimum vCPUs', positiveInt('--min-cpus'))
    .addHelpText('after', '\nExample:\n  $ drover channel publish web webapp:2.0 --boot appliance-kernel --min-memory 96\n')
    .action(
      cli.action<{ releaseVersion?: string; name?: string; boot?: string; minMemory?: number; minCpus?: number }>(async (session, [name, image], o) => {
        const body = {
          image,
          ...(o.releaseVersion ? { version: o.releaseVersion } : {}),
          ...(o.name ? { name: o.name } : {}),
          ...(o.boot ? { bootMethod: o.boot } : {}),
          ...(o.minMemory ? { minMemoryMiB: o.minMemory } : {}),
          ...(o.minCpus ? { minCpus: o.minCpus } : {}),
        };
        const release = await (await session.client()).post<VmcastRelease>(`/vmcast/channels/${seg(name!)}/releases`, body);
        session.print(release, () => `Published ${release.name} ${release.version} on channel ${name}.\n`);
      }),
    );
  apiCommand(channel, 'releases <channel>', "List a channel's releases, newest first").action(
    cli.action(async (session, [name]) => {
      const page = await (await session.client()).get<{ items: VmcastRelease[] }>(`/vmcast/channels/${seg(name!)}/releases`);
      session.print(page, () => releaseTable(page.items));
    }),
  );
  apiCommand(channel, 'package <channel> <archive>', 'Publish a package for guests: a tar.gz of files with an `install` script at its top, signed with the active key')
    .requiredOption('--name <name>', 'the package name')
    .requiredOption('--package-version <version>', 'the package version')
    .option('--description <text>', 'a description')
    .addHelpText('after', '\nThe guests of VMs that follow the channel (auto, or notify once approved) download it from\ntheir metadata address, check its sha256, unpack it and run ./install.\n\nExample:\n  $ tar --format=ustar -czf motd-1.0.tar.gz -C motd .\n  $ drover channel package web motd-1.0.tar.gz --name motd --package-version 1.0\n')
    .action(
      cli.action<{ name: string; packageVersion: string; description?: string }>(async (session, [name, file], o) => {
        let archive: Buffer;
        try {
          archive = await readFile(file!);
        } catch {
          throw errors.invalid(`Cannot read the package archive "${file}"`);
        }
        const pkg = await (await session.client()).post<VmcastPackage>(`/vmcast/channels/${seg(name!)}/packages`, { name: o.name, version: o.packageVersion, ...(o.description ? { description: o.description } : {}), archiveBase64: archive.toString('base64') });
        session.print(pkg, () => `Published package ${pkg.name} ${pkg.version} (${formatSize(pkg.sizeBytes)}) on channel ${name}.\n`);
      }),
    );
  apiCommand(channel, 'packages <channel>', "List a channel's packages").action(
    cli.action(async (session, [name]) => {
      const page = await (await session.client()).get<{ items: VmcastPackage[] }>(`/vmcast/channels/${seg(name!)}/packages`);
      session.print(page, () => packageTable(page.items));
    }),
  );
  apiCommand(channel, 'publish-package <channel> <package>', 'Publish an imported appliance package (.eva; its id or name:version) on the channel, signed with the active key')
    .addHelpText('after', '\nSubscribing managers download the .eva, check its size, sha256 and signature with the\npinned publisher key, and import it into their packages (drover package list).\n\nExample:\n  $ drover channel publish-package web web-db:1.0\n')
    .action(
      cli.action(async (session, [name, ref]) => {
        const release = await (await session.client()).post<VmcastRelease>(`/vmcast/channels/${seg(name!)}/appliance-packages`, { package: ref });
        session.print(release, () => `Published appliance package ${release.name} ${release.version} on channel ${name}.\n`);
      }),
    );
  apiCommand(channel, 'appliance-packages <channel>', "List a channel's appliance packages (.eva), newest first").action(
    cli.action(async (session, [name]) => {
      const page = await (await session.client()).get<{ items: VmcastRelease[] }>(`/vmcast/channels/${seg(name!)}/appliance-packages`);
      session.print(page, () => releaseTable(page.items));
    }),
  );
  const key = channel.command('key').description('Publisher keys (Ed25519): create one to rotate, revoke a compromised one');
  apiCommand(key, 'list', 'List the publisher keys').action(
    cli.action(async (session) => {
      const page = await (await session.client()).get<{ items: VmcastKey[] }>('/vmcast/keys');
      session.print(page, () => formatTable(['NAME', 'STATE', 'KEY ID'], page.items.map((k) => [k.name, k.state, k.keyId])));
    }),
  );
  apiCommand(key, 'create <name>', 'Create a key; it becomes active and the previous one is retired').action(
    cli.action(async (session, [name]) => {
      const created = await (await session.client()).post<VmcastKey>('/vmcast/keys', { name });
      session.print(created, () => `Created key ${created.name} (${created.keyId}). Subscribers pin this public key:\n${created.publicKey}`);
    }),
  );
  apiCommand(key, 'revoke <name>', 'Revoke a key: its signatures are refused, feeds announce it').action(
    cli.action(async (session, [name]) => {
      const revoked = await (await session.client()).post<VmcastKey>(`/vmcast/keys/${seg(name!)}/revoke`, {});
      session.print(revoked, () => `Revoked key ${revoked.name}.\n`);
    }),
  );

  const sub = cli.program.command('subscription').description('VMcasting: feeds this manager subscribes to (each is a channel VMs can follow)');
  apiCommand(sub, 'list', 'List the subscriptions').action(
    cli.action(async (session) => {
      const page = await (await session.client()).get<{ items: VmcastSubscription[] }>('/vmcast/subscriptions');
      session.print(page, () => formatTable(['NAME', 'URL', 'LAST POLL', 'ERROR'], page.items.map((s) => [s.name, s.url, s.lastPolledAt ?? '', s.lastError ?? ''])));
    }),
  );
  apiCommand(sub, 'add <name> <url>', "Subscribe to a feed, pinning the publisher's key")
    .requiredOption('--key <pem-file>', "the publisher's public key (PEM file, or the PEM itself); repeatable", (v: string, all: string[] = []) => [...all, v])
    .option('--allow-host <host>', 'hosts images may be downloaded from (repeatable; default any)', (v: string, all: string[] = []) => [...all, v])
    .option('--poll-seconds <s>', 'poll interval (default 3600)', positiveInt('--poll-seconds', 10))
    .addHelpText('after', '\nExample:\n  $ drover subscription add web https://pub.example/api/v1/vmcast/channels/web/feed.rss --key pub.pem\n')
    .action(
      cli.action<{ key: string[]; allowHost?: string[]; pollSeconds?: number }>(async (session, [name, url], o) => {
        const pinnedKeys = await Promise.all(o.key.map(pemOf));
        const created = await (await session.client()).post<VmcastSubscription>('/vmcast/subscriptions', { name, url, pinnedKeys, ...(o.allowHost ? { allowedHosts: o.allowHost } : {}), ...(o.pollSeconds ? { pollSeconds: o.pollSeconds } : {}) });
        session.print(created, () => `Subscribed ${created.name} to ${created.url}.\n`);
      }),
    );
  apiCommand(sub, 'remove <name>', 'Unsubscribe (imported images stay)').action(
    cli.action(async (session, [name]) => {
      await (await session.client()).delete(`/vmcast/subscriptions/${seg(name!)}`);
      session.print({ removed: name }, () => `Unsubscribed ${name}.\n`);
    }),
  );
  apiCommand(sub, 'poll <name>', 'Poll the feed now: download, verify and import new releases').action(
    cli.action(async (session, [name]) => {
      const r = await (await session.client()).post<{ status: number; bodyBytes: number; imported: string[]; quarantined: Array<{ release: string; reason: string }>; failed: Array<{ release: string; reason: string }>; error?: string }>(
        `/vmcast/subscriptions/${seg(name!)}/poll`,
        {},
      );
      session.print(r, () =>
        [
          r.status === 304 ? 'Feed unchanged (304).' : `Feed answered ${r.status} (${r.bodyBytes} bytes).`,
          ...r.imported.map((x) => `Imported ${x}.`),
          ...r.quarantined.map((q) => `Quarantined ${q.release}: ${q.reason}`),
          ...r.failed.map((q) => `Not finished ${q.release}: ${q.reason}`),
          ...(r.error ? [r.error] : []),
        ].join('\n') + '\n',
      );
    }),
  );
  apiCommand(sub, 'packages <name>', 'List the packages received (verified, quarantined with the reason, ...)').action(
    cli.action(async (session, [name]) => {
      const page = await (await session.client()).get<{ items: VmcastPackage[] }>(`/vmcast/subscriptions/${seg(name!)}/packages`);
      session.print(page, () => packageTable(page.items));
    }),
  );
  apiCommand(sub, 'releases <name>', 'List the releases received (verified, quarantined with the reason, ...)').action(
    cli.action(async (session, [name]) => {
      const page = await (await session.client()).get<{ items: VmcastRelease[] }>(`/vmcast/subscriptions/${seg(name!)}/releases`);
      session.print(page, () => releaseTable(page.items));
    }),
  );
  apiCommand(sub, 'revoke-key <name> <key-id>', 'Mark a pinned key revoked: what it signed is refused').action(
    cli.action(async (session, [name, keyId]) => {
      const updated = await (await session.client()).post<VmcastSubscription>(`/vmcast/subscriptions/${seg(name!)}/keys/${seg(keyId!)}/revoke`, {});
      session.print(updated, () => `Key ${keyId} is revoked for ${name}.\n`);
    }),
  );
  apiCommand(sub, 'follows', 'List the VMs that follow a channel').action(
    cli.action(async (session) => {
      const page = await (await session.client()).get<{ items: VmcastFollow[] }>('/vmcast/follows');
      session.print(page, () => followTable(page.items));
    }),
  );

  apiCommand(vm, 'follow <vm> <channel>', 'Make a VM follow a channel (a subscription) with an update policy')
    .requiredOption('--policy <policy>', 'auto (update in the window, roll back on a failed health check), notify (a pending update) or pinned (never)', policyOption)
    .option('--window <HH:MM-HH:MM>', 'UTC maintenance window for auto updates (default: any time)')
    .addHelpText('after', '\nExamples:\n  $ drover vm follow web1 web --policy auto --window 02:00-04:00\n  $ drover vm follow lab1 web --policy pinned\n')
    .action(
      cli.action<{ policy: Policy; window?: string }>(async (session, [name, ch], o) => {
        const f = await (await session.client()).put<VmcastFollow>(`/vms/${seg(name!)}/follow`, { channel: ch, policy: o.policy, ...(o.window ? { maintenanceWindow: o.window } : {}) });
        session.print(f, () => `VM ${f.vm} follows ${f.channel} (${f.policy}).\n`);
      }),
    );
  apiCommand(vm, 'unfollow <vm>', 'Stop following a channel').action(
    cli.action(async (session, [name]) => {
      await (await session.client()).delete(`/vms/${seg(name!)}/follow`);
      session.print({ unfollowed: name }, () => `VM ${name} follows no channel.\n`);
    }),
  );
  for (const [verb, held] of [['hold', true], ['unhold', false]] as const) {
    apiCommand(vm, `${verb} <vm>`, held ? 'Hold a VM: no update reaches it' : 'Release the hold of a VM').action(
      cli.action(async (session, [name]) => {
        const f = await (await session.client()).post<VmcastFollow>(`/vms/${seg(name!)}/follow/${verb}`, {});
        session.print(f, () => `VM ${f.vm} is ${f.held ? 'held' : 'no longer held'}.\n`);
      }),
    );
  }
  apiCommand(vm, 'packages <vm>', "Show a VM's guest packages: installed (its update agent's report), offered, pending approval")
    .option('--approve <name>', 'approve a pending package (notify policy); repeatable', (value: string, previous: string[] = []) => [...previous, value])
    .option('--approve-all', 'approve every pending package')
    .addHelpText('after', '\nExamples:\n  $ drover vm packages web1\n  $ drover vm packages web2 --approve motd\n')
    .action(
      cli.action<{ approve?: string[]; approveAll?: boolean }>(async (session, [name], o) => {
        const client = await session.client();
        const view = o.approve || o.approveAll
          ? await client.post<VmPackages>(`/vms/${seg(name!)}/packages/approve`, o.approveAll ? {} : { names: o.approve })
          : await client.get<VmPackages>(`/vms/${seg(name!)}/packages`);
        session.print(view, () => vmPackagesText(view));
      }),
    );
  withWaitOption(apiCommand(vm, 'update <vm>', "Apply the VM's pending channel update now (stop, switch root disk, boot, health check, roll back on failure)"))
    .option('--release-version <version>', 'a verified release of its channel instead of the pending one')
    .action(
      cli.action<{ wait: boolean; releaseVersion?: string }>(async (session, [name], o) => {
        const operation = await (await session.client()).post<Operation>(`/vms/${seg(name!)}/follow/apply`, o.releaseVersion ? { version: o.releaseVersion } : {});
        await session.followOperation(operation, { wait: o.wait, label: `update ${name}`, done: () => `Updated VM ${name}.` });
      }),
    );
}

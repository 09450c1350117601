import { readFile } from 'node:fs/promises';
import { InvalidArgumentError, type Command } from 'commander';
import { errors, formatSize, parseSize } from '@drover/core';
import { apiCommand, collectForward, collectLabel, collectList, labelQuery, parseMemoryMiB, positiveInt, type Cli, type Session } from '../cli.js';
import { seg, sleep } from '../client.js';
import { formatFields, formatLabels, formatMiB, formatTable, orDash } from '../output.js';
import type { Forward, Operation, Snapshot, Vm, VmCreate, VmEdit } from '../types.js';
import { fetchList, printPage, withListOptions, withWaitOption, yesNo, type ListOptions } from './common.js';
import { attachConsole } from './console-attach.js';
import { registerVmMigrateCommand } from './vm-migrate.js';
import { collectNetwork } from './network.js';

export function vmTable(vms: Vm[]): string {
  return formatTable(
    ['NAME', 'STATE', 'HOST', 'CPUS', 'MEMORY', 'IMAGE'],
    vms.map((vm) => [vm.name, vm.state, orDash(vm.hostName), String(vm.spec.cpus), formatMiB(vm.spec.memoryMiB), vm.spec.image]),
  );
}

export function vmDetails(vm: Vm): string {
  const forwards = vm.spec.forwards.map((f) => `${f.hostPort}->${f.guestPort}`).join(', ');
  return formatFields([
    ['Name', vm.name],
    ['ID', vm.id],
    ['State', vm.state],
    ['Host', orDash(vm.hostName)],
    ['Image', vm.spec.image],
    ['CPUs', String(vm.spec.cpus)],
    ['Memory', formatMiB(vm.spec.memoryMiB)],
    ...(vm.spec.cpuModel ? [['CPU model', vm.spec.cpuModel] as const] : []),
    ['Labels', formatLabels(vm.labels)],
    ['Anti-affinity', orDash(vm.spec.antiAffinityGroups.join(', '))],
    ['Host include', orDash(vm.spec.hostInclude.join(', '))],
    ['Host exclude', orDash(vm.spec.hostExclude.join(', '))],
    ['Forwards', orDash(forwards)],
    ['Kernel cmdline', orDash(vm.spec.cmdline)],
    ...(vm.spec.iso ? [['ISO', vm.spec.iso] as const] : []),
    ...(vm.spec.diskSizeBytes !== undefined ? [['Disk size', formatSize(vm.spec.diskSizeBytes)] as const] : []),
    ...(vm.spec.cloudInit ? [['cloud-init', `user-data ${formatSize(vm.spec.cloudInit.userDataBytes)}${vm.spec.cloudInit.metaDataBytes !== undefined ? ', meta-data' : ''}${vm.spec.cloudInit.networkConfigBytes !== undefined ? ', network-config' : ''}`] as const] : []),
    ...(vm.spec.addedDisks?.length ? [['Added disks', vm.spec.addedDisks.map((d) => `${d.pool}/${d.volume}${d.readOnly ? ' (ro)' : ''}`).join(', ')] as const] : []),
    ...(vm.spec.addedNics?.length ? [['Added NICs', vm.spec.addedNics.map((n) => n.mac).join(', ')] as const] : []),
    ['Autostart', yesNo(vm.autostart)],
    ['Owner', vm.owner],
    ['Last error', orDash(vm.lastError)],
    ['Revision', String(vm.rev)],
    ['Created', vm.createdAt],
    ['Updated', vm.updatedAt],
  ]);
}

interface CloudInitOptions {
  cloudInitUserData?: string;
  cloudInitMetaData?: string;
  cloudInitNetworkConfig?: string;
}

interface CreateOptions extends CloudInitOptions {
  securityLabel?: string;
  /** The project the VM counts against (its quota). */
  project?: string;
  image?: string;
  iso?: string;
  diskSize?: number;
  cpus?: number;
  memory?: number;
  cpuModel?: string;
  label?: Record<string, string>;
  antiAffinity?: string[];
  forward?: Forward[];
  hostInclude?: string[];
  hostExclude?: string[];
  cmdline?: string;
  autostart?: boolean;
  /** NICs on Drover networks (`--network`). */
  network?: NonNullable<VmCreate['networks']>;
  start?: boolean;
  wait: boolean;
}

/** `--iso`: a library image ("name" or "name:version"), or "pool/volume" on the VM's host. */
export function isoReference(value: string): NonNullable<VmCreate['iso']> {
  const at = value.indexOf('/');
  return at < 0 ? value : { pool: value.slice(0, at), volume: value.slice(at + 1) };
}

/** `--disk-size 8G`: bytes, at least 1 MiB. */
export function parseDiskSize(value: string): number {
  let bytes: number;
  try {
    bytes = parseSize(value.trim());
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
  if (bytes < 1024 * 1024) throw new InvalidArgumentError(`Disk size "${value}" is below 1 MiB`);
  return bytes;
}

/** The cloud-init files named by --cloud-init-* options, read whole (the manager limits their size). */
export async function readCloudInit(options: CloudInitOptions): Promise<VmCreate['cloudInit']> {
  if (options.cloudInitUserData === undefined) {
    if (options.cloudInitMetaData !== undefined || options.cloudInitNetworkConfig !== undefined) {
      throw errors.invalid('--cloud-init-meta-data and --cloud-init-network-config need --cloud-init-user-data');
    }
    return undefined;
  }
  const read = async (file: string, flag: string) => {
    try {
      return await readFile(file, 'utf8');
    } catch (error) {
      throw errors.invalid(`Cannot read ${flag} "${file}": ${(error as Error).message}`);
    }
  };
  return {
    userData: await read(options.cloudInitUserData, '--cloud-init-user-data'),
    ...(options.cloudInitMetaData !== undefined ? { metaData: await read(options.cloudInitMetaData, '--cloud-init-meta-data') } : {}),
    ...(options.cloudInitNetworkConfig !== undefined ? { networkConfig: await read(options.cloudInitNetworkConfig, '--cloud-init-network-config') } : {}),
  };
}

export function createVmBody(name: string, options: CreateOptions, cloudInit?: VmCreate['cloudInit']): VmCreate {
  if (options.image === undefined && options.iso === undefined) throw errors.invalid('Give --image, --iso, or both');
  const body: VmCreate = { name };
  if (options.image !== undefined) body.image = options.image;
  if (options.iso !== undefined) body.iso = isoReference(options.iso);
  if (options.diskSize !== undefined) body.diskSizeBytes = options.diskSize;
  if (cloudInit !== undefined) body.cloudInit = cloudInit;
  if (options.cpus !== undefined) body.cpus = options.cpus;
  if (options.memory !== undefined) body.memoryMiB = options.memory;
  if (options.cpuModel !== undefined) body.cpuModel = options.cpuModel;
  if (options.label) body.labels = options.label;
  if (options.securityLabel !== undefined) body.securityLabel = options.securityLabel;
  if (options.antiAffinity?.length) body.antiAffinityGroups = options.antiAffinity;
  if (options.hostInclude?.length) body.hostInclude = options.hostInclude;
  if (options.hostExclude?.length) body.hostExclude = options.hostExclude;
  if (options.forward?.length) body.forwards = options.forward;
  if (options.cmdline !== undefined) body.cmdline = options.cmdline;
  if (options.autostart !== undefined) body.autostart = options.autostart;
  if (options.project !== undefined) body.project = options.project;
  if (options.network?.length) body.networks = options.network;
  return body;
}

interface EditOptions extends CloudInitOptions {
  removeCloudInit?: boolean;
  cpus?: number;
  memory?: number;
  label?: Record<string, string>;
  removeLabel?: string[];
  autostart?: boolean;
  rev?: number;
  evacuationPolicy?: VmEdit['evacuationPolicy'];
}

/** The PATCH body and If-Match for `vm edit`; labels are merged into `current`'s. */
export function editVmRequest(options: EditOptions, current: Vm | undefined, cloudInit?: VmCreate['cloudInit']): { body: VmEdit; ifMatch: number | undefined } {
  const body: VmEdit = {};
  if (options.removeCloudInit && cloudInit !== undefined) throw errors.invalid('--remove-cloud-init and --cloud-init-user-data contradict each other');
  if (options.removeCloudInit) body.cloudInit = null;
  if (cloudInit !== undefined) body.cloudInit = cloudInit;
  if (options.cpus !== undefined) body.cpus = options.cpus;
  if (options.memory !== undefined) body.memoryMiB = options.memory;
  if (options.autostart !== undefined) body.autostart = options.autostart;
  if (options.evacuationPolicy !== undefined) body.evacuationPolicy = options.evacuationPolicy;
  if (options.label || options.removeLabel?.length) {
    const labels = { ...(current?.labels ?? {}), ...(options.label ?? {}) };
    for (const key of options.removeLabel ?? []) delete labels[key];
    body.labels = labels;
  }
  // Labels are read, merged and written back: pin the revision that was read so a
  // concurrent edit is refused (412) instead of silently undone.
  const ifMatch = options.rev ?? (body.labels ? current?.rev : undefined);
  return { body, ifMatch };
}

/** Actions that answer an operation, with the sentence for a successful end. */
const simpleActions = [
  ['start', 'Start a VM (placing it on a host if it has none)', 'Started'],
  ['pause', 'Pause a running VM (it keeps its memory and its place)', 'Paused'],
  ['resume', 'Resume a paused VM', 'Resumed'],
  ['reset', 'Hard-reset a running VM, like the reset button', 'Reset'],
  ['save', 'Save a VM to disk and stop it ("hibernate"); restore brings it back', 'Saved'],
  ['restore', 'Restore a saved VM', 'Restored'],
] as const;

export function registerVmCommands(cli: Cli): Command {
  const vm = cli.program
    .command('vm')
    .description('Create, list, change and drive virtual machines')
    .addHelpText(
      'after',
      `
Examples:
  $ drover vm create web1 --image web --cpus 2 --memory 512M --label tier=web --start
  $ drover vm list --state running --label tier=web
  $ drover vm stop web1 --timeout-ms 30000
  $ drover vm snapshot create web1 before-upgrade
  $ drover vm console web1`,
    );

  apiCommand(vm, 'create <name>', 'Create a VM from an image, an ISO, or both')
    .option('--image <image>', 'an appliance or an imported disk image (a thin clone per VM), "name" or "name:version" (see "drover image list")')
    .option('--iso <iso>', 'attach an ISO read-only and boot it first: a library image, or POOL/VOLUME on the host (pin it with --host-include)')
    .option('--disk-size <size>', 'without --image: an empty disk of this size (e.g. 8G) to install onto; with a disk image: grow its clone to this size', parseDiskSize)
    .option('--cloud-init-user-data <file>', 'a cloud-init NoCloud seed: this user-data ("#!" script or #cloud-config)')
    .option('--cloud-init-meta-data <file>', 'the seed\'s meta-data (default: instance-id = VM id, local-hostname = VM name)')
    .option('--cloud-init-network-config <file>', 'the seed\'s network-config')
    .option('--cpus <n>', 'virtual CPUs (server default applies when omitted)', positiveInt('--cpus', 1, 64))
    .option('--memory <size>', 'memory, e.g. 256M or 1G; a bare number is MiB', parseMemoryMiB)
    .option('--cpu-model <model>', 'CPU model (must exist on the chosen host)')
    .option('--label <key=value>', 'label the VM (repeatable)', collectLabel)
    .option('--security-label <label>', 'its sHype security label, ACM:<policy>:<label> (see drover policy show)')
    .option('--anti-affinity <group>', 'never on the same host as other VMs of this group (repeatable)', collectList)
    .option('--forward <hostport:guestport>', 'forward a host TCP port to the guest (repeatable)', collectForward)
    .option('--host-include <hosts>', 'only place it on these hosts (repeatable or comma-separated)', collectList)
    .option('--host-exclude <hosts>', 'never place it on these hosts (repeatable or comma-separated)', collectList)
    .option('--cmdline <settings>', 'extra kernel command-line settings (drover.* keys; appliances only)')
    .option('--autostart', 'start it again when its host comes back')
    .option('--project <project>', 'the project it belongs to and counts against (default: your default project)')
    .option('--network <nic>', 'a NIC on a Drover network: NAME[:IP][,sg=GROUP[+GROUP]][,mac=MAC] (repeatable: eth0, eth1, …); address and MAC allocated when not given', collectNetwork)
    .option('--start', 'start it right after creating it')
    .option('--no-wait', 'with --start: do not wait for the start to end')
    .addHelpText(
      'after',
      `
With --json it prints the VM; with --start, {"vm": ..., "operation": ...}.

Examples:
  $ drover vm create web1 --image web
  $ drover vm create db1 --image db:1.2 --cpus 2 --memory 1G --anti-affinity db --forward 15432:5432
  $ drover vm create lab1 --image probe --host-include h1,h2 --label lab=red --start
  $ drover vm create web2 --image web --memory 128M --network pub,sg=web --network lab:10.43.0.10 --start
  $ drover vm create cloud1 --image debian-12 --disk-size 20G --cloud-init-user-data ./user-data --start
  $ drover vm create install1 --iso debian-netinst --disk-size 8G --memory 1G --start`,
    )
    .action(
      cli.action<CreateOptions>(async (session, [name], options) => {
        const client = await session.client();
        const cloudInit = await readCloudInit(options);
        const created = await client.post<Vm>('/vms', createVmBody(name!, options, cloudInit));
        if (!options.start) {
          session.print(created, () => `Created VM ${created.name} (${created.id}), ${created.state}.\n`);
          return;
        }
        const started = await client.post<Operation>(`/vms/${seg(created.name)}/start`, {});
        const operation = await session.awaitOperation(started, { wait: options.wait, label: `start ${created.name}` });
        const vm = options.wait ? await client.get<Vm>(`/vms/${seg(created.name)}`) : created;
        session.print({ vm, operation }, () =>
          options.wait
            ? `Created and started VM ${vm.name}${vm.hostName ? ` on ${vm.hostName}` : ''}.\n`
            : `Created VM ${vm.name}; start operation ${operation.id} is ${operation.state} (drover op watch ${operation.id}).\n`,
        );
      }),
    );

  withListOptions(apiCommand(vm, 'list', 'List VMs as a table (NAME STATE HOST CPUS MEMORY IMAGE)'), 'VMs')
    .alias('ls')
    .option('--state <state>', 'only VMs in this state (running, stopped, paused, saved, ...)')
    .option('--host <host>', 'only VMs on this host (id or name)')
    .option('--label <key=value>', 'only VMs with this label', labelQuery)
    .option('--name <name>', 'only VMs whose name matches')
    .addHelpText(
      'after',
      `
Examples:
  $ drover vm list
  $ drover vm list --state running --host h1
  $ drover vm list --label tier=web --all --json`,
    )
    .action(
      cli.action<ListOptions & { state?: string; host?: string; label?: string; name?: string }>(async (session, _args, options) => {
        const page = await fetchList<Vm>(session, '/vms', { state: options.state, host: options.host, label: options.label, name: options.name }, options);
        printPage(session, page, vmTable, 'drover vm list');
      }),
    );

  apiCommand(vm, 'show <vm>', 'Show one VM in detail (by name or id)').action(
    cli.action(async (session, [name]) => {
      const found = await (await session.client()).get<Vm>(`/vms/${seg(name!)}`);
      session.print(found, () => vmDetails(found));
    }),
  );

  apiCommand(vm, 'edit <vm>', "Change a VM's CPUs, memory, labels, autostart or cloud-init")
    .option('--cpus <n>', 'virtual CPUs', positiveInt('--cpus', 1, 64))
    .option('--memory <size>', 'memory, e.g. 512M or 2G; a bare number is MiB', parseMemoryMiB)
    .option('--label <key=value>', 'add or change a label (repeatable; other labels are kept)', collectLabel)
    .option('--remove-label <key>', 'remove a label (repeatable)', collectList)
    .option('--autostart', 'start it again when its host comes back')
    .option('--no-autostart', 'do not start it again automatically')
    .option('--cloud-init-user-data <file>', 'replace its cloud-init seed with this user-data (while stopped; applied at the next start)')
    .option('--cloud-init-meta-data <file>', "the new seed's meta-data (with --cloud-init-user-data)")
    .option('--cloud-init-network-config <file>', "the new seed's network-config (with --cloud-init-user-data)")
    .option('--remove-cloud-init', 'remove its cloud-init seed (while stopped)')
    .option('--evacuation-policy <policy>', 'what a host evacuation does with it: live-migrate, cold-migrate, stop or stay', (value: string) => {
      if (!['live-migrate', 'cold-migrate', 'stop', 'stay'].includes(value)) throw new InvalidArgumentError('must be live-migrate, cold-migrate, stop or stay');
      return value;
    })
    .option('--rev <n>', 'only change it if it is still at this revision (sent as If-Match)', positiveInt('--rev', 0))
    .addHelpText(
      'after',
      `
CPU and memory changes apply at the next start. Without --rev, a label change is
made against the revision just read, so a concurrent change is refused rather than
overwritten.

Examples:
  $ drover vm edit web1 --cpus 4 --memory 2G
  $ drover vm edit web1 --label tier=frontend --remove-label old
  $ drover vm edit web1 --memory 1G --rev 7`,
    )
    .action(
      cli.action<EditOptions>(async (session, [name], options) => {
        const cloudInit = await readCloudInit(options);
        const nothing = options.cpus === undefined && options.memory === undefined && options.autostart === undefined && options.evacuationPolicy === undefined && !options.label && !options.removeLabel?.length && cloudInit === undefined && !options.removeCloudInit;
        if (nothing) throw errors.invalid('Nothing to change: give --cpus, --memory, --label, --remove-label, --(no-)autostart, --evacuation-policy, --cloud-init-user-data or --remove-cloud-init');
        const client = await session.client();
        const needsCurrent = Boolean(options.label || options.removeLabel?.length);
        const current = needsCurrent ? await client.get<Vm>(`/vms/${seg(name!)}`) : undefined;
        const { body, ifMatch } = editVmRequest(options, current, cloudInit);
        const headers: Record<string, string> = ifMatch === undefined ? {} : { 'if-match': String(ifMatch) };
        const updated = await client.patch<Vm>(`/vms/${seg(name!)}`, body, headers);
        session.print(updated, () => `Updated VM ${updated.name} (revision ${updated.rev}).\n`);
      }),
    );

  for (const [action, description, done] of simpleActions) {
    withWaitOption(apiCommand(vm, `${action} <vm>`, description)).action(
      cli.action<{ wait: boolean }>(async (session, [name], options) => {
        const operation = await (await session.client()).post<Operation>(`/vms/${seg(name!)}/${action}`, {});
        await session.followOperation(operation, { wait: options.wait, label: `${action} ${name}`, done: () => `${done} VM ${name}.` });
      }),
    );
  }

  withWaitOption(apiCommand(vm, 'stop <vm>', 'Shut a VM down (ACPI power button), or power it off with --force'))
    .option('--force', 'power it off at once (no guest shutdown)')
    .option('--timeout-ms <ms>', 'how long the guest may take to shut down before the manager gives up', positiveInt('--timeout-ms', 1))
    .addHelpText(
      'after',
      `
Examples:
  $ drover vm stop web1
  $ drover vm stop web1 --timeout-ms 60000
  $ drover vm stop web1 --force`,
    )
    .action(
      cli.action<{ wait: boolean; force?: boolean; timeoutMs?: number }>(async (session, [name], options) => {
        if (options.force && options.timeoutMs !== undefined) throw errors.invalid('--timeout-ms has no meaning with --force (a forced stop does not wait for the guest)');
        const client = await session.client();
        const operation = options.force
          ? await client.post<Operation>(`/vms/${seg(name!)}/force-off`, {})
          : await client.post<Operation>(`/vms/${seg(name!)}/stop`, options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs });
        await session.followOperation(operation, {
          wait: options.wait,
          label: `${options.force ? 'force-off' : 'stop'} ${name}`,
          done: () => `${options.force ? 'Powered off' : 'Stopped'} VM ${name}.`,
        });
      }),
    );

  withWaitOption(apiCommand(vm, 'delete <vm>', 'Delete a VM and its disks'))
    .alias('rm')
    .action(
      cli.action<{ wait: boolean }>(async (session, [name], options) => {
        const operation = await (await session.client()).delete<Operation>(`/vms/${seg(name!)}`);
        await session.followOperation(operation, { wait: options.wait, label: `delete ${name}`, done: () => `Deleted VM ${name}.` });
      }),
    );

  registerSnapshotCommands(cli, vm);
  registerVmMigrateCommand(cli, vm);

  apiCommand(vm, 'console <vm>', "Print a VM's serial console log and follow it, or attach to it (--attach)")
    .option('--no-follow', 'print what is there and stop')
    .option('--offset <bytes>', 'start at this byte offset of the log', positiveInt('--offset', 0), 0)
    .option('-a, --attach', 'interactive: what you type goes to the guest; Ctrl-] detaches', false)
    .addHelpText(
      'after',
      `
Without --attach it polls the log; Ctrl-C stops following. Output is the raw log.
With --attach it opens the live console (a WebSocket through the manager, authenticated
with a single-use ticket): the terminal is put in raw mode, Ctrl-] or the end of stdin
detaches, and nothing is replayed (use the log for what came before).

Examples:
  $ drover vm console web1
  $ drover vm console web1 --no-follow > web1.log
  $ drover vm console web1 --attach
  $ printf 'root\n' | drover vm console web1 --attach`,
    )
    .action(
      cli.action<{ follow: boolean; offset: number; attach: boolean }>(async (session, [name], options) => {
        if (options.attach) await attachConsole(session, name!);
        else await followConsole(session, name!, options.offset, options.follow);
      }),
    );

  return vm;
}

/** Prints the serial log from `offset`; with `follow`, keeps polling until interrupted. */
export async function followConsole(session: Session, name: string, start: number, follow: boolean): Promise<void> {
  const client = await session.client();
  const path = `/vms/${seg(name)}/console/serial/log`;
  let offset = start;
  for (;;) {
    let answer: Awaited<ReturnType<typeof client.getText>>;
    try {
      answer = await client.getText(path, { offset });
    } catch (error) {
      // Ctrl-C is how one stops following: not an error.
      if (session.signal?.aborted) return;
      throw error;
    }
    const { body, headers } = answer;
    if (body.length > 0) session.out(body);
    const size = Number(headers.get('x-log-size'));
    offset = Number.isSafeInteger(size) && size >= 0 ? size : offset + body.length;
    if (!follow) return;
    await sleep(session.ctx.consoleIntervalMs ?? 500, session.signal);
    if (session.signal?.aborted) return;
  }
}

function registerSnapshotCommands(cli: Cli, vm: Command): void {
  const snapshot = vm
    .command('snapshot')
    .alias('snap')
    .description('Snapshots of a VM: create, list, revert, delete')
    .addHelpText(
      'after',
      `
Examples:
  $ drover vm snapshot create web1 before-upgrade
  $ drover vm snapshot list web1
  $ drover vm snapshot revert web1 before-upgrade`,
    );

  withWaitOption(apiCommand(snapshot, 'create <vm> <snapshot>', 'Take a snapshot')).action(
    cli.action<{ wait: boolean }>(async (session, [name, snap], options) => {
      const operation = await (await session.client()).post<Operation>(`/vms/${seg(name!)}/snapshots`, { name: snap });
      await session.followOperation(operation, { wait: options.wait, label: `snapshot ${name}/${snap}`, done: () => `Created snapshot ${snap} of VM ${name}.` });
    }),
  );

  apiCommand(snapshot, 'list <vm>', "List a VM's snapshots")
    .alias('ls')
    .action(
      cli.action(async (session, [name]) => {
        const snapshots = await (await session.client()).get<Snapshot[]>(`/vms/${seg(name!)}/snapshots`);
        session.print(snapshots, () =>
          formatTable(
            ['NAME', 'CREATED', 'MEMORY'],
            snapshots.map((s) => [s.name, s.createdAt, yesNo(s.withMemory)]),
          ),
        );
      }),
    );

  withWaitOption(apiCommand(snapshot, 'revert <vm> <snapshot>', 'Revert a VM to a snapshot')).action(
    cli.action<{ wait: boolean }>(async (session, [name, snap], options) => {
      const operation = await (await session.client()).post<Operation>(`/vms/${seg(name!)}/snapshots/${seg(snap!)}/revert`, {});
      await session.followOperation(operation, { wait: options.wait, label: `revert ${name}/${snap}`, done: () => `Reverted VM ${name} to snapshot ${snap}.` });
    }),
  );

  withWaitOption(apiCommand(snapshot, 'delete <vm> <snapshot>', 'Delete a snapshot'))
    .alias('rm')
    .action(
      cli.action<{ wait: boolean }>(async (session, [name, snap], options) => {
        const operation = await (await session.client()).delete<Operation>(`/vms/${seg(name!)}/snapshots/${seg(snap!)}`);
        await session.followOperation(operation, { wait: options.wait, label: `delete snapshot ${name}/${snap}`, done: () => `Deleted snapshot ${snap} of VM ${name}.` });
      }),
    );
}

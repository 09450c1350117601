import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { errors } from '@drover/core';
import type { Lab, LabCreate, LabExample, LabManifest } from '@drover/api';
import { apiCommand, type Cli } from '../cli.js';
import { seg } from '../client.js';
import { formatFields, formatTable } from '../output.js';
import type { Operation } from '../types.js';
import { withWaitOption } from './common.js';

export function labTable(labs: Lab[]): string {
  return formatTable(
    ['NAME', 'STATE', 'FROM', 'VMS', 'NETWORKS', 'MODE'],
    labs.map((lab) => [
      lab.name,
      lab.state,
      `${lab.source.kind}${lab.source.ref ? ` ${lab.source.ref}` : ''}`,
      `${lab.vms.filter((v) => v.state === 'running').length}/${lab.vms.length} running`,
      lab.networks.map((n) => `${n.network} ${n.subnet}`).join(', '),
      lab.networkMode,
    ]),
  );
}

export function labDetails(lab: Lab): string {
  const fields = formatFields([
    ['Name', lab.name],
    ['ID', lab.id],
    ['State', lab.state],
    ['From', `${lab.source.kind}${lab.source.ref ? ` ${lab.source.ref}` : ''} (manifest ${lab.manifestName}${lab.manifestVersion ? ` ${lab.manifestVersion}` : ''})`],
    ['Update policy', lab.updatePolicy],
    ['Network mode', lab.networkMode],
    ['Owner', lab.owner],
    ['Last error', lab.lastError ?? '-'],
  ]);
  const networks = formatTable(['NETWORK', 'KIND', 'SUBNET'], lab.networks.map((n) => [n.network, n.kind, n.subnet]));
  const vms = formatTable(
    ['VM', 'STATE', 'ORDER', 'ADDRESSES', 'ENDPOINTS'],
    lab.vms.map((v) => [v.vm, v.state, String(v.order), v.addresses.join(', ') || '-', v.endpoints.map((e) => `${e.guestPort}→${e.host}:${e.hostPort}`).join(', ') || '-']),
  );
  return `${fields}\n${networks}\n${vms}`;
}

/** A lab manifest from a JSON or YAML file. */
export async function readManifest(file: string, cwd = process.cwd()): Promise<LabManifest> {
  let text: string;
  try {
    text = await readFile(path.resolve(cwd, file), 'utf8');
  } catch (error) {
    throw errors.invalid(`Cannot read the lab manifest "${file}": ${(error as Error).message}`);
  }
  try {
    return (text.trimStart().startsWith('{') ? JSON.parse(text) : parseYaml(text)) as LabManifest;
  } catch (error) {
    throw errors.invalid(`The lab manifest "${file}" is neither JSON nor YAML: ${(error as Error).message}`);
  }
}

interface DeployOptions {
  package?: string;
  example?: string;
  file?: string;
  project?: string;
  healthTimeout?: string;
  wait: boolean;
}

/** The POST /labs body of `lab deploy`: exactly one of --package, --example and --file. */
export async function deployBody(name: string, options: DeployOptions, cwd = process.cwd()): Promise<LabCreate> {
  const given = [options.package, options.example, options.file].filter((x) => x !== undefined).length;
  if (given !== 1) throw errors.invalid('Give exactly one of --package ID, --example NAME and --file MANIFEST');
  const timeout = options.healthTimeout !== undefined ? Number(options.healthTimeout) : undefined;
  if (timeout !== undefined && (!Number.isInteger(timeout) || timeout < 5)) throw errors.invalid(`--health-timeout must be a whole number of seconds, at least 5; got "${options.healthTimeout}"`);
  return {
    name,
    ...(options.package !== undefined ? { package: options.package } : {}),
    ...(options.example !== undefined ? { example: options.example } : {}),
    ...(options.file !== undefined ? { manifest: await readManifest(options.file, cwd) } : {}),
    ...(options.project !== undefined ? { project: options.project } : {}),
    ...(timeout !== undefined ? { healthTimeoutSeconds: timeout } : {}),
  };
}

export function registerLabCommands(cli: Cli): void {
  const lab = cli.program.command('lab').description('Labs: appliance packages or lab manifests deployed as a unit, with their own networks');

  apiCommand(lab, 'list', 'List labs')
    .alias('ls')
    .action(
      cli.action(async (session) => {
        const page = await (await session.client()).get<{ items: Lab[] }>('/labs');
        session.print(page, () => labTable(page.items));
      }),
    );

  apiCommand(lab, 'show <lab>', 'Show a lab: its networks, and its VMs with their states, addresses and endpoints').action(
    cli.action(async (session, [ref]) => {
      const found = await (await session.client()).get<Lab>(`/labs/${seg(ref!)}`);
      session.print(found, () => labDetails(found));
    }),
  );

  apiCommand(lab, 'examples', 'List the labs shipped with Drover').action(
    cli.action(async (session) => {
      const page = await (await session.client()).get<{ items: LabExample[] }>('/lab-examples');
      session.print(page, () => formatTable(['NAME', 'VMS', 'DESCRIPTION'], page.items.map((e) => [e.name, String(e.manifest.vms.length), e.description])));
    }),
  );

  withWaitOption(apiCommand(lab, 'deploy <name>', 'Deploy a lab: networks, security groups, VMs started in dependency order with health checks (one operation)'))
    .option('--package <id>', 'an imported appliance package')
    .option('--example <name>', 'a lab shipped with Drover: web-db or pentest')
    .option('--file <manifest>', 'a lab manifest (JSON or YAML) on this machine')
    .option('--project <project>', 'the project whose quota the lab\'s VMs count against')
    .option('--health-timeout <seconds>', 'how long each VM may take to pass its health check (default 300)')
    .addHelpText(
      'after',
      `
A lab's VMs are named <lab>-<vm> and its networks <lab>-<network>; each network
gets its own subnet from the lab address pool, so two labs never clash. If a
step fails, everything the deploy made is removed again.

Examples:
  $ drover lab deploy class1 --example web-db
  $ drover lab deploy red --file ./pentest.yaml
  $ drover lab deploy shop --package 3f2c...`,
    )
    .action(
      cli.action<DeployOptions>(async (session, [name], options) => {
        const body = await deployBody(name!, options);
        const operation = await (await session.client()).post<Operation>('/labs', body);
        await session.followOperation(operation, { wait: options.wait, label: `deploy lab ${name}`, done: () => `Deployed lab ${name}.` });
      }),
    );

  const simple: Array<[string, string, string]> = [
    ['start', 'Start a lab\'s VMs in dependency order, waiting for each one\'s health check', 'Started'],
    ['stop', 'Stop a lab\'s VMs in reverse dependency order', 'Stopped'],
    ['reset', 'Reset a lab to its state at deploy: VMs off, disks back to their initial snapshot, started again', 'Reset'],
  ];
  for (const [action, description, done] of simple) {
    withWaitOption(apiCommand(lab, `${action} <lab>`, description)).action(
      cli.action<{ wait: boolean }>(async (session, [ref], options) => {
        const operation = await (await session.client()).post<Operation>(`/labs/${seg(ref!)}/${action}`, {});
        await session.followOperation(operation, { wait: options.wait, label: `${action} lab ${ref}`, done: () => `${done} lab ${ref}.` });
      }),
    );
  }

  withWaitOption(apiCommand(lab, 'snapshot <lab> <snapshot>', 'Snapshot every VM of a lab under one name')).action(
    cli.action<{ wait: boolean }>(async (session, [ref, name], options) => {
      const operation = await (await session.client()).post<Operation>(`/labs/${seg(ref!)}/snapshot`, { name });
      await session.followOperation(operation, { wait: options.wait, label: `snapshot lab ${ref}`, done: () => `Snapshot ${name} of lab ${ref} taken.` });
    }),
  );

  withWaitOption(apiCommand(lab, 'clone <lab> <new-name>', 'Deploy a second copy of a lab beside it, with its own networks and addresses')).action(
    cli.action<{ wait: boolean }>(async (session, [ref, name], options) => {
      const operation = await (await session.client()).post<Operation>(`/labs/${seg(ref!)}/clone`, { name });
      await session.followOperation(operation, { wait: options.wait, label: `clone lab ${ref}`, done: () => `Cloned lab ${ref} as ${name}.` });
    }),
  );

  withWaitOption(apiCommand(lab, 'destroy <lab>', 'Destroy a lab: its VMs (forced off), their disks, its networks and security groups'))
    .alias('rm')
    .action(
      cli.action<{ wait: boolean }>(async (session, [ref], options) => {
        const operation = await (await session.client()).delete<Operation>(`/labs/${seg(ref!)}`);
        await session.followOperation(operation, { wait: options.wait, label: `destroy lab ${ref}`, done: () => `Destroyed lab ${ref}.` });
      }),
    );
}

import { readFile } from 'node:fs/promises';
import { Option } from 'commander';
import { errors } from '@drover/core';
import type { PolicyExplanation, PolicyInfo, PolicyValidation, SecurityLabelInfo } from '@drover/api';
import { apiCommand, type Cli, type Session } from '../cli.js';
import { formatTable } from '../output.js';

async function readDocument(session: Session, file: string): Promise<string> {
  if (file !== '-') {
    try {
      return await readFile(file, 'utf8');
    } catch (error) {
      throw errors.invalid(`Cannot read policy file "${file}": ${(error as Error).message}`);
    }
  }
  const stdin = session.ctx.stdin;
  if (!stdin) throw errors.invalid('No standard input to read the policy from');
  let text = '';
  for await (const chunk of stdin) text += typeof chunk === 'string' ? chunk : chunk.toString('utf8');
  return text;
}

const formatOption = () => new Option('--format <format>', 'xml (Xen ACM), yaml or json; default: recognised from the text').choices(['xml', 'yaml', 'json']);

function policySummary(info: PolicyInfo): string {
  const p = info.policy;
  const lines = [
    `Policy ${info.name} (loaded from ${info.sourceFormat} by ${info.loadedBy} at ${info.loadedAt})`,
    `STE types:    ${p.steTypes.join(', ') || '-'}`,
    `CW types:     ${p.cwTypes.join(', ') || '-'}`,
    ...p.conflictSets.map((s) => `Conflict set ${s.name}: ${s.types.join(', ')}`),
    `Bootstrap:    ${p.bootstrapLabel ?? '-'} (the label of hosts without one)`,
    '',
    formatTable(
      ['LABEL', 'KIND', 'STE TYPES', 'CW TYPES'],
      [...p.vmLabels.map((l) => [`ACM:${info.name}:${l.name}`, 'vm', l.steTypes.join(', ') || '-', l.cwTypes.join(', ') || '-']), ...p.resourceLabels.map((l) => [`ACM:${info.name}:${l.name}`, 'resource', l.steTypes.join(', ') || '-', '-'])],
    ),
  ];
  return `${lines.join('\n').replace(/\n+$/, '')}\n`;
}

function validationText(v: PolicyValidation): string {
  if (v.valid) return `Policy ${v.name} is valid and everything running obeys it.\n`;
  const lines = [...v.problems.map((p) => `problem: ${p.path ? `${p.path}: ` : ''}${p.message}`), ...v.violations.map((x) => `conflict: ${x.message}`)];
  return `${lines.join('\n')}\n`;
}

function explanationText(e: PolicyExplanation): string {
  const head = `${e.allowed ? 'Allowed' : 'Not allowed'}: VM ${e.vm} (${e.vmLabel ?? 'no label'}) on host ${e.host} (${e.hostLabel ?? 'no label'})${e.policy ? `, policy ${e.policy}` : ''}`;
  const filters = e.filters.filter((f) => !f.pass).map((f) => `  ${f.filter}: ${f.reason ?? 'refused'}`);
  return `${[head, ...e.reasons.map((r) => `  - ${r}`), ...(filters.length ? ['Scheduler filters refusing the host:', ...filters] : [])].join('\n')}\n`;
}

export function registerPolicyCommands(cli: Cli): void {
  const policy = cli.program
    .command('policy')
    .description("Mandatory access control: the sHype security policy (Xen ACM), labels, and why a placement is allowed")
    .addHelpText(
      'after',
      `
Labels are named ACM:<policy>:<label>. A VM's label is set with
\`drover vm create … --security-label\` or the API (securityLabel); hosts, volumes,
images and networks are labelled with \`drover policy label\`.

Examples:
  $ drover policy load client_v1_security_policy.xml      # Xen's ACM XML
  $ drover policy load policy.yaml --dry-run              # validate, load nothing
  $ drover policy show
  $ drover policy export --format yaml > policy.yaml
  $ drover policy label host h1 ACM:example.client_v1:dom_NetworkDomain
  $ drover policy label image web ACM:example.client_v1:res_LogicalDiskPartition2(hda2)
  $ drover policy explain bank h2`,
    );

  apiCommand(policy, 'load <file>', 'Load a policy (Xen ACM XML or native YAML/JSON; - reads stdin) as the active one; refused when running VMs would violate it')
    .addOption(formatOption())
    .option('--dry-run', 'only validate: print its problems and what running VMs would violate')
    .action(
      cli.action<{ format?: 'xml' | 'yaml' | 'json'; dryRun?: boolean }>(async (session, [file], options) => {
        const body = { document: await readDocument(session, file!), ...(options.format ? { format: options.format } : {}) };
        const client = await session.client();
        if (options.dryRun) {
          const validation = await client.post<PolicyValidation>('/policy/validate', body);
          session.print(validation, () => validationText(validation));
          if (!validation.valid) throw errors.invalid(validation.problems[0]?.message ?? validation.violations[0]?.message ?? 'The policy is not valid');
          return;
        }
        const loaded = await client.put<PolicyInfo>('/policy', body);
        session.print(loaded, () => `Loaded policy ${loaded.name}: ${loaded.policy.vmLabels.length} VM labels, ${loaded.policy.resourceLabels.length} resource labels, ${loaded.policy.conflictSets.length} conflict sets.\n`);
      }),
    );

  apiCommand(policy, 'show', 'Show the active policy: types, conflict sets, labels')
    .action(
      cli.action(async (session) => {
        const info = await (await session.client()).get<PolicyInfo>('/policy');
        session.print(info, () => policySummary(info));
      }),
    );

  apiCommand(policy, 'export', 'Print the active policy as Xen ACM XML or native YAML/JSON')
    .addOption(formatOption().default('yaml'))
    .action(
      cli.action<{ format: string }>(async (session, _args, options) => {
        const answer = await (await session.client()).getText('/policy/export', { format: options.format });
        session.out(answer.body);
      }),
    );

  apiCommand(policy, 'labels', 'List the labels of hosts, volumes, images and networks')
    .action(
      cli.action(async (session) => {
        const labels = await (await session.client()).get<SecurityLabelInfo[]>('/policy/labels');
        session.print(labels, () => formatTable(['KIND', 'OBJECT', 'LABEL'], labels.map((l) => [l.kind, l.objectName ?? l.objectId, l.label])));
      }),
    );

  apiCommand(policy, 'label <kind> <object> [label]', 'Label a host (a VM label), a volume (<host>/<pool>/<volume>), an image or a network (a resource label)')
    .option('--remove', 'remove the label')
    .action(
      cli.action<{ remove?: boolean }>(async (session, [kind, object, label], options) => {
        if (!['host', 'volume', 'image', 'network'].includes(kind!)) throw errors.invalid(`Unknown kind "${kind}": host, volume, image or network`);
        if (!options.remove && !label) throw errors.invalid('Give the label (ACM:<policy>:<label>) or --remove');
        const set = await (await session.client()).put<SecurityLabelInfo | null>('/policy/labels', { kind, object, label: options.remove ? null : label });
        session.print(set, () => (set ? `Labelled ${kind} ${set.objectName ?? object} ${set.label}.\n` : `Removed the label of ${kind} ${object}.\n`));
      }),
    );

  apiCommand(policy, 'explain <vm> <host>', 'Say why the VM may or may not start on, migrate to or be restored on the host')
    .action(
      cli.action(async (session, [vm, host]) => {
        const explanation = await (await session.client()).get<PolicyExplanation>('/policy/explain', { vm, host });
        session.print(explanation, () => explanationText(explanation));
      }),
    );
}

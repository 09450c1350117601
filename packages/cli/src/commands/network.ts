import { InvalidArgumentError } from 'commander';
import { errors } from '@drover/core';
import type { FirewallExplain, Network, NetworkCreate, SecurityGroup, SecurityGroupRuleInput, VmNetworkAttachment } from '@drover/api';
import { apiCommand, collectLabel, positiveInt, type Cli } from '../cli.js';
import { seg } from '../client.js';
import { formatFields, formatLabels, formatTable, orDash } from '../output.js';

const netName = /^[a-z][a-z0-9-]{0,30}$/;

/**
 * `--network NAME[:IP][,sg=GROUP][,mac=MAC]` of `vm create` (repeatable: eth0,
 * eth1, … in order); several groups as `sg=a+b` or repeated `sg=`.
 */
export function collectNetwork(value: string, previous: VmNetworkAttachment[] = []): VmNetworkAttachment[] {
  const [head = '', ...rest] = value.split(',');
  const [network = '', ip, extra] = head.split(':');
  if (!netName.test(network) || extra !== undefined) throw new InvalidArgumentError(`"${value}" is not NAME[:IP][,sg=GROUP][,mac=MAC] (network names: a-z, 0-9, "-")`);
  const nic: VmNetworkAttachment = { network };
  if (ip !== undefined) nic.ip = ip;
  for (const part of rest) {
    const [key, setting] = part.split('=');
    if (key === 'sg' && setting) nic.securityGroups = [...(nic.securityGroups ?? []), ...setting.split('+')];
    else if (key === 'mac' && setting) nic.mac = setting.toLowerCase();
    else throw new InvalidArgumentError(`Unknown NIC setting "${part}" in "${value}": expected sg=GROUP or mac=MAC`);
  }
  return [...previous, nic];
}

/** `--rule` of `sg create` / the arguments of `sg rule-add`: DIRECTION PROTOCOL [PORTS|type=N] [from|to PEER]. */
export function parseRule(words: readonly string[]): SecurityGroupRuleInput {
  const [direction, protocol, ...rest] = words;
  if (direction !== 'ingress' && direction !== 'egress') throw errors.invalid(`Invalid direction "${String(direction)}": expected ingress or egress`);
  if (!['tcp', 'udp', 'icmp', 'any'].includes(String(protocol))) throw errors.invalid(`Invalid protocol "${String(protocol)}": expected tcp, udp, icmp or any`);
  const rule: SecurityGroupRuleInput = { direction, protocol: protocol as SecurityGroupRuleInput['protocol'] };
  for (let i = 0; i < rest.length; i++) {
    const word = rest[i]!;
    if (/^\d+(-\d+)?$/.test(word)) {
      const [from, to = from] = word.split('-').map(Number) as [number, number?];
      rule.ports = { from, to: to ?? from };
    } else if (/^type=\d+$/.test(word)) {
      rule.icmpType = Number(word.slice(5));
    } else if (word === 'from' || word === 'to') {
      const peer = rest[++i];
      if (peer === undefined) throw errors.invalid(`"${word}" needs a CIDR or group:NAME`);
      if (peer.startsWith('group:')) rule.group = peer.slice(6);
      else rule.cidr = peer;
    } else if (word.startsWith('desc=')) {
      rule.description = word.slice(5);
    } else {
      throw errors.invalid(`Cannot read "${word}" in the rule: expected PORT[-PORT], type=N, from|to CIDR|group:NAME, desc=TEXT`);
    }
  }
  return rule;
}

export function ruleText(rule: SecurityGroupRuleInput): string {
  const ports = rule.ports ? ` ${rule.ports.from === rule.ports.to ? rule.ports.from : `${rule.ports.from}-${rule.ports.to}`}` : '';
  const icmp = rule.icmpType !== undefined ? ` type=${rule.icmpType}` : '';
  const peer = rule.cidr ?? (rule.group ? `group:${rule.group}` : 'anywhere');
  return `${rule.direction} ${rule.protocol}${ports}${icmp} ${rule.direction === 'ingress' ? 'from' : 'to'} ${peer}${rule.description ? `  (${rule.description})` : ''}`;
}

function groupText(group: SecurityGroup): string {
  const head = formatFields([
    ['Name', group.name],
    ['Description', orDash(group.description)],
    ['Owner', group.owner],
    ['Lab', orDash(group.lab)],
    ['Rev', String(group.rev)],
  ]);
  const rules = group.rules.length === 0 ? '  (no rules)\n' : group.rules.map((r, i) => `  ${i + 1}. ${ruleText(r)}`).join('\n') + '\n';
  return `${head}Rules:\n${rules}`;
}

export function registerNetworkCommands(cli: Cli): void {
  const network = cli.program
    .command('network')
    .description('Drover networks: bridged to a host uplink, NAT, or isolated; addresses by IPAM and DHCP')
    .addHelpText(
      'after',
      `
A VM joins networks at creation: drover vm create web1 --image web --network pub,sg=web
Networks whose VMs run on several hosts are joined by VXLAN (guests get MTU 1450).

Examples:
  $ drover network create pub --kind nat --subnet 10.42.0.0/24 --uplink eth0
  $ drover network create lab1 --kind isolated --subnet 10.43.0.0/24 --label course=net101
  $ drover network list
  $ drover network show pub
  $ drover network delete lab1`,
    );

  apiCommand(network, 'list', 'List the networks').action(
    cli.action(async (session) => {
      const page = await (await session.client()).get<{ items: Network[] }>('/networks');
      session.print(page.items, () => formatTable(['NAME', 'KIND', 'SUBNET', 'GATEWAY', 'NICS', 'HOSTS', 'LAB'], page.items.map((n) => [n.name, n.kind, n.subnet, n.gateway, String(n.nics), n.hosts.join(',') || '-', orDash(n.lab)])));
    }),
  );

  apiCommand(network, 'show <network>', 'Show a network').action(
    cli.action(async (session, [name]) => {
      const n = await (await session.client()).get<Network>(`/networks/${seg(name!)}`);
      session.print(n, () =>
        formatFields([
          ['Name', n.name],
          ['Kind', n.kind],
          ['Subnet', n.subnet],
          ['Gateway', n.gateway],
          ['Uplink', orDash(n.uplink)],
          ['MTU', n.mtu === null ? '-' : String(n.mtu)],
          ['VXLAN id', String(n.vni)],
          ['NICs', String(n.nics)],
          ['Hosts', n.hosts.join(', ') || '-'],
          ['Labels', formatLabels(n.labels)],
          ['Owner', n.owner],
          ['Lab', orDash(n.lab)],
          ['Rev', String(n.rev)],
        ]),
      );
    }),
  );

  apiCommand(network, 'create <name>', 'Create a network; an overlapping subnet is refused')
    .requiredOption('--kind <kind>', 'bridged, nat or isolated')
    .requiredOption('--subnet <cidr>', 'IPv4 subnet, e.g. 10.42.0.0/24')
    .option('--gateway <ip>', 'the hosts\' address on it (default: the first host address)')
    .option('--uplink <iface>', 'bridged: the host interface on the bridge; nat: the interface masqueraded to')
    .option('--mtu <mtu>', 'guests\' MTU', positiveInt('--mtu', 576, 9000))
    .option('--label <key=value>', 'label the network (repeatable)', collectLabel)
    .action(
      cli.action<{ kind: string; subnet: string; gateway?: string; uplink?: string; mtu?: number; label?: Record<string, string> }>(async (session, [name], o) => {
        if (!['bridged', 'nat', 'isolated'].includes(o.kind)) throw errors.invalid(`Invalid --kind "${o.kind}": expected bridged, nat or isolated`);
        const body: NetworkCreate = { name: name!, kind: o.kind as NetworkCreate['kind'], subnet: o.subnet, ...(o.gateway ? { gateway: o.gateway } : {}), ...(o.uplink ? { uplink: o.uplink } : {}), ...(o.mtu ? { mtu: o.mtu } : {}), ...(o.label ? { labels: o.label } : {}) };
        const created = await (await session.client()).post<Network>('/networks', body);
        session.print(created, () => `Created network ${created.name} (${created.kind} ${created.subnet}, gateway ${created.gateway}).\n`);
      }),
    );

  apiCommand(network, 'delete <network>', 'Delete a network no VM NIC is on').action(
    cli.action(async (session, [name]) => {
      await (await session.client()).delete(`/networks/${seg(name!)}`);
      session.print({ deleted: name }, () => `Deleted network ${name}.\n`);
    }),
  );

  const sg = cli.program
    .command('sg')
    .description('Security groups: stateful firewall rules attached to VM NICs')
    .addHelpText(
      'after',
      `
A rule is DIRECTION PROTOCOL [PORT[-PORT]] [type=N] [from|to CIDR|group:NAME] [desc=TEXT].
A NIC with a group denies inbound traffic no rule allows; egress is open unless
its groups have egress rules. Replies always pass.

Examples:
  $ drover sg create web --rule "ingress tcp 80 from 10.0.0.0/8" --rule "ingress icmp type=8"
  $ drover sg rule-add web ingress tcp 8000-8100 from group:admin
  $ drover sg rule-remove web 2
  $ drover sg show web
  $ drover fw explain web1`,
    );

  apiCommand(sg, 'list', 'List the security groups').action(
    cli.action(async (session) => {
      const page = await (await session.client()).get<{ items: SecurityGroup[] }>('/security-groups');
      session.print(page.items, () => formatTable(['NAME', 'RULES', 'LAB', 'DESCRIPTION'], page.items.map((g) => [g.name, String(g.rules.length), orDash(g.lab), orDash(g.description)])));
    }),
  );

  apiCommand(sg, 'show <group>', 'Show a security group and its numbered rules').action(
    cli.action(async (session, [name]) => {
      const group = await (await session.client()).get<SecurityGroup>(`/security-groups/${seg(name!)}`);
      session.print(group, () => groupText(group));
    }),
  );

  apiCommand(sg, 'create <name>', 'Create a security group')
    .option('--description <text>', 'what it is for')
    .option('--rule <rule>', 'a rule (repeatable), e.g. "ingress tcp 22 from 10.0.0.0/8"', (value: string, previous: string[] = []) => [...previous, value])
    .action(
      cli.action<{ description?: string; rule?: string[] }>(async (session, [name], o) => {
        const rules = (o.rule ?? []).map((text) => parseRule(text.trim().split(/\s+/)));
        const created = await (await session.client()).post<SecurityGroup>('/security-groups', { name: name!, ...(o.description ? { description: o.description } : {}), rules });
        session.print(created, () => `Created security group ${created.name} with ${created.rules.length} rule(s).\n`);
      }),
    );

  apiCommand(sg, 'delete <group>', 'Delete a security group no NIC uses and no rule refers to').action(
    cli.action(async (session, [name]) => {
      await (await session.client()).delete(`/security-groups/${seg(name!)}`);
      session.print({ deleted: name }, () => `Deleted security group ${name}.\n`);
    }),
  );

  apiCommand(sg, 'rule-add <group> <rule...>', 'Add a rule: DIRECTION PROTOCOL [PORT[-PORT]] [type=N] [from|to CIDR|group:NAME]').action(
    cli.action(async (session, [name, ...words]) => {
      const flat = words.flat() as string[];
      const group = await (await session.client()).post<SecurityGroup>(`/security-groups/${seg(name!)}/rules`, parseRule(flat));
      session.print(group, () => groupText(group));
    }),
  );

  apiCommand(sg, 'rule-remove <group> <number>', 'Remove the rule with this number (as "sg show" numbers them)').action(
    cli.action(async (session, [name, number]) => {
      if (!/^[1-9]\d*$/.test(number ?? '')) throw errors.invalid(`Invalid rule number "${String(number)}"`);
      const group = await (await session.client()).delete<SecurityGroup>(`/security-groups/${seg(name!)}/rules/${number}`);
      session.print(group, () => groupText(group));
    }),
  );

  const fw = cli.program.command('fw').description('The firewall as it applies to VMs');
  apiCommand(fw, 'explain <vm>', 'Print the effective rules of a VM: per NIC the defaults, its groups\' rules, the host rules and the lines loaded on its host').action(
    cli.action(async (session, [vm]) => {
      const explained = await (await session.client()).get<FirewallExplain>(`/vms/${seg(vm!)}/firewall`);
      session.print(explained, () => explained.text);
    }),
  );
}

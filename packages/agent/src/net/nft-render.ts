import {
  METADATA_ADDRESS,
  METADATA_PORT,
  validateHostNetworkState,
  type HostNetworkState,
  type HostRule,
  type NicBinding,
  type SecurityGroupRule,
} from './firewall-model.js';

/** Tables Drover owns; nothing else on the host is ever touched. */
export const DROVER_TABLES = [
  { family: 'bridge', name: 'drover' },
  { family: 'inet', name: 'drover' },
  { family: 'ip', name: 'drover_nat' },
] as const;

/** Taps Drover creates start with this prefix: a tap of it without a binding gets no traffic through. */
export const TAP_PREFIX = 'dt';

export interface RenderedRuleset {
  /** The whole `nft -f` script: each table is deleted and defined again, so a load is all-or-nothing. */
  script: string;
  /** Number of rules (statements lines inside chains), for benchmarks and `fw explain`. */
  ruleCount: number;
}

const hex = (value: number): string => `0x${value.toString(16).padStart(8, '0')}`;
const srcMark = (index: number): number => index * 0x10000;

/**
 * Renders the host's desired network state into one nft script.
 *
 * How the stateful rules work on bridged traffic (the kernel here has no
 * bridge conntrack and no `meta ibrname`): the bridge-family chains see the
 * tap a frame enters or leaves by, and write it into the packet mark (source
 * NIC index in the high 16 bits, destination NIC index in the low 16 bits);
 * the inet `forward` chain, which br_netfilter runs for bridged IPv4 too,
 * has conntrack and dispatches on the mark to each NIC's egress and ingress
 * chains. Anti-spoofing drops, in bridge prerouting, any frame from a tap
 * whose MAC or IPv4 source is not the NIC's assigned one.
 *
 * Validates first (`validateHostNetworkState`); throws `invalid` and renders
 * nothing on bad input.
 */
export function renderRuleset(state: HostNetworkState): RenderedRuleset {
  validateHostNetworkState(state);
  const nics = [...state.nics].sort((a, b) => (a.vm + '/' + a.nic).localeCompare(b.vm + '/' + b.nic));
  const index = new Map<NicBinding, number>(nics.map((nic, i) => [nic, i + 1]));
  const networks = new Map(state.networks.map((n) => [n.name, n]));
  const groupRules = new Map(state.groups.map((g) => [g.name, g.rules]));

  // Group references become named sets of the member NICs' addresses.
  const referenced = [...new Set(state.groups.flatMap((g) => g.rules.flatMap((r) => (r.group === undefined ? [] : [r.group]))))].sort();
  const setName = new Map(referenced.map((group, i) => [group, `grp${i + 1}`]));
  const members = new Map<string, Set<string>>(referenced.map((g) => [g, new Set(state.groupMembers?.[g] ?? [])]));
  for (const nic of nics) for (const group of nic.groups) members.get(group)?.add(nic.ip);

  let ruleCount = 0;
  const out: string[] = [];
  const chain = (name: string, header: string | undefined, rules: string[]): void => {
    out.push(`  chain ${name} {`);
    if (header !== undefined) out.push(`    ${header}`);
    for (const rule of rules) out.push(`    ${rule}`);
    out.push('  }');
    ruleCount += rules.length;
  };
  const vmap = (key: string, entries: Array<[string, string]>): string[] =>
    entries.length === 0 ? [] : [`${key} vmap { ${entries.map(([k, v]) => `${k} : ${v}`).join(', ')} }`];

  for (const table of DROVER_TABLES) out.push(`table ${table.family} ${table.name}`, `delete table ${table.family} ${table.name}`);

  // --- bridge family: ports, anti-spoofing, marks, isolated input ---
  out.push('table bridge drover {');
  chain('prerouting', 'type filter hook prerouting priority -200; policy accept;', [
    ...vmap('iifname', nics.map((nic) => [`"${nic.tap}"`, `jump port_${index.get(nic)}`])),
    `iifname "${TAP_PREFIX}*" drop comment "tap without a binding"`,
  ]);
  for (const nic of nics) {
    const i = index.get(nic)!;
    out.push(`  # ${nic.vm}/${nic.nic} on ${nic.network}: ${nic.tap} ${nic.mac} ${nic.ip}`);
    chain(`port_${i}`, undefined, [
      `ether saddr != ${nic.mac} drop`,
      'ether type != { ip, arp } drop',
      `arp saddr ether != ${nic.mac} drop`,
      `arp saddr ip != { ${nic.ip}, 0.0.0.0 } drop`,
      'ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept',
      `ip saddr != ${nic.ip} drop`,
      `meta mark set ${hex(srcMark(i))} accept`,
    ]);
  }
  chain('forward', 'type filter hook forward priority -200; policy accept;',
    vmap('oifname', nics.map((nic) => [`"${nic.tap}"`, `jump to_${index.get(nic)}`])));
  for (const nic of nics) {
    const i = index.get(nic)!;
    chain(`to_${i}`, undefined, [`meta mark set meta mark or ${hex(i)}`]);
  }
  const isolatedTaps = nics.filter((nic) => networks.get(nic.network)!.kind === 'isolated').map((nic) => `"${nic.tap}"`);
  chain('input', 'type filter hook input priority -200; policy accept;',
    isolatedTaps.length === 0 ? [] : [`iifname { ${isolatedTaps.join(', ')} } jump isolated_input`]);
  chain('isolated_input', undefined, [
    'ether type arp accept',
    'udp sport 68 udp dport 67 accept',
    `ip daddr ${METADATA_ADDRESS} tcp dport ${METADATA_PORT} accept`,
    'drop',
  ]);
  out.push('}');

  // --- inet family: stateful security groups, host protection ---
  out.push('table inet drover {');
  for (const group of referenced) {
    const elements = [...members.get(group)!].sort();
    out.push(`  # members of security group ${group}`);
    out.push(`  set ${setName.get(group)} {`, '    type ipv4_addr;');
    if (elements.length > 0) out.push(`    elements = { ${elements.join(', ')} }`);
    out.push('  }');
  }
  const forward: string[] = ['ct state established,related accept', 'ct state invalid meta mark != 0 drop'];
  for (const network of state.networks.filter((n) => n.kind === 'isolated')) {
    forward.push(`iifname "${network.bridge}" oifname != "${network.bridge}" drop comment "isolated ${network.name}: no route out"`);
    forward.push(`oifname "${network.bridge}" iifname != "${network.bridge}" drop comment "isolated ${network.name}: no route in"`);
  }
  forward.push(...vmap('meta mark and 0xffff0000', nics.map((nic) => [hex(srcMark(index.get(nic)!)), `jump egress_${index.get(nic)}`])));
  forward.push(...vmap('meta mark and 0x0000ffff', nics.map((nic) => [hex(index.get(nic)!), `jump ingress_${index.get(nic)}`])));
  for (const network of state.networks.filter((n) => n.kind !== 'isolated')) {
    // Routed into the network (NAT): the destination NIC is found by its (anti-spoofed) address.
    const local = nics.filter((nic) => nic.network === network.name);
    forward.push(...vmap(`iifname != "${network.bridge}" oifname "${network.bridge}" ip daddr`, local.map((nic) => [nic.ip, `jump ingress_${index.get(nic)}`])));
    if (network.kind === 'nat') forward.push(`iifname != "${network.bridge}" oifname "${network.bridge}" drop comment "nat ${network.name}: unknown destination"`);
  }
  chain('forward', 'type filter hook forward priority -10; policy accept;', forward);

  for (const nic of nics) {
    const i = index.get(nic)!;
    const rules = nic.groups.flatMap((g) => groupRules.get(g)!.map((rule) => ({ group: g, rule })));
    const ingress = rules.filter((r) => r.rule.direction === 'ingress');
    const egress = rules.filter((r) => r.rule.direction === 'egress');
    const defaultDeny = nic.groups.length > 0 || networks.get(nic.network)!.kind === 'isolated';
    out.push(`  # ${nic.vm}/${nic.nic}: groups ${nic.groups.length === 0 ? '(none)' : nic.groups.join(', ')}`);
    chain(`ingress_${i}`, undefined, [
      ...ingress.map(({ group, rule }) => `${ruleMatch(rule, 'saddr', setName)} accept comment "${group}"`),
      defaultDeny ? 'drop' : 'accept',
    ]);
    chain(`egress_${i}`, undefined, egress.length === 0
      ? ['return comment "no egress rules: all egress allowed"']
      : [...egress.map(({ group, rule }) => `${ruleMatch(rule, 'daddr', setName)} return comment "${group}"`), 'drop']);
  }

  chain('input', 'type filter hook input priority -10; policy accept;',
    vmap('iifname', state.networks.map((n, k) => [`"${n.bridge}"`, `jump host_${k + 1}`])));
  state.networks.forEach((network, k) => {
    const hostRules = state.hostRules.filter((r) => r.network === undefined || r.network === network.name);
    out.push(`  # traffic from network ${network.name} (${network.kind}) to this host`);
    chain(`host_${k + 1}`, undefined, [
      'ct state established,related accept',
      'udp sport 68 udp dport 67 accept comment "DHCP"',
      `ip daddr ${METADATA_ADDRESS} tcp dport ${METADATA_PORT} accept comment "metadata"`,
      ...hostRules.map((rule) => hostRuleLine(rule)),
      'drop',
    ]);
  });
  out.push('}');

  // --- NAT ---
  out.push('table ip drover_nat {');
  chain('postrouting', 'type nat hook postrouting priority srcnat; policy accept;',
    state.networks.filter((n) => n.kind === 'nat').map((n) =>
      `ip saddr ${n.subnet} ip daddr != ${n.subnet}${n.uplink === undefined ? '' : ` oifname "${n.uplink}"`} masquerade comment "nat ${n.name}"`));
  out.push('}');
  return { script: out.join('\n') + '\n', ruleCount };
}

function portsMatch(protocol: 'tcp' | 'udp', ports: { from: number; to: number } | undefined): string {
  if (ports === undefined) return `meta l4proto ${protocol}`;
  return `${protocol} dport ${ports.from === ports.to ? ports.from : `${ports.from}-${ports.to}`}`;
}

function protocolMatch(rule: { protocol: string; ports?: { from: number; to: number }; icmpType?: number }): string[] {
  switch (rule.protocol) {
    case 'tcp':
    case 'udp':
      return [portsMatch(rule.protocol, rule.ports)];
    case 'icmp':
      return [rule.icmpType === undefined ? 'meta l4proto icmp' : `icmp type ${rule.icmpType}`];
    default:
      return [];
  }
}

function ruleMatch(rule: SecurityGroupRule, field: 'saddr' | 'daddr', setName: Map<string, string>): string {
  const parts: string[] = [];
  if (rule.cidr !== undefined) parts.push(`ip ${field} ${rule.cidr}`);
  else if (rule.group !== undefined) parts.push(`ip ${field} @${setName.get(rule.group)}`);
  else parts.push('meta nfproto ipv4');
  parts.push(...protocolMatch(rule));
  return parts.join(' ');
}

function hostRuleLine(rule: HostRule): string {
  const parts = [rule.cidr !== undefined ? `ip saddr ${rule.cidr}` : 'meta nfproto ipv4', ...protocolMatch(rule)];
  return `${parts.join(' ')} ${rule.action} comment "host rule"`;
}

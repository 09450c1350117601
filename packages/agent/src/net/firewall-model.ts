import { errors } from '@drover/core';

/**
 * The desired network and firewall state of one host, as the manager pushes it
 * to the agent. Everything here is validated by `validateHostNetworkState`
 * before a single rule is rendered: names end up in nft comments and chain
 * names, so only a small safe alphabet is accepted.
 */
export type NetworkKind = 'bridged' | 'nat' | 'isolated';

export interface NetworkSpec {
  /** Drover's name of the network (`[a-z][a-z0-9-]{0,30}`). */
  name: string;
  kind: NetworkKind;
  /** IPv4 subnet in CIDR form, e.g. `10.42.0.0/24`. */
  subnet: string;
  /** The host's address on the bridge (DHCP server, NAT gateway). */
  gateway: string;
  /**
   * This host's own address on the bridge when it is not the gateway: a
   * network that spans hosts has one gateway, and every other host needs an
   * address of its own in the subnet for its DHCP server.
   */
  hostAddress?: string;
  /** Linux bridge of the network on this host (≤ 15 characters). */
  bridge: string;
  /** bridged: the host interface enslaved to the bridge; nat: the interface masqueraded to. */
  uplink?: string;
  /** Guests' MTU (1450 when the network spans hosts over VXLAN). */
  mtu?: number;
  /** VXLAN to other hosts running VMs of this network. */
  vxlan?: { vni: number; local: string; remotes: string[]; device: string; underlay?: string };
}

export type Protocol = 'tcp' | 'udp' | 'icmp' | 'any';

export interface SecurityGroupRule {
  direction: 'ingress' | 'egress';
  protocol: Protocol;
  /** tcp/udp: inclusive port range; absent = every port. */
  ports?: { from: number; to: number };
  /** icmp: type number 0–255; absent = every type. */
  icmpType?: number;
  /** The peer: a CIDR, or every NIC of another group. Absent = anywhere. */
  cidr?: string;
  group?: string;
  description?: string;
}

export interface SecurityGroup {
  name: string;
  rules: SecurityGroupRule[];
}

/** One VM NIC on this host. */
export interface NicBinding {
  vm: string;
  nic: string;
  network: string;
  tap: string;
  mac: string;
  ip: string;
  groups: string[];
}

/** A rule about traffic from VM networks to the host itself (beyond DHCP and metadata). */
export interface HostRule {
  /** Only traffic arriving from this network; absent = every Drover network. */
  network?: string;
  protocol: Protocol;
  ports?: { from: number; to: number };
  cidr?: string;
  action: 'accept' | 'drop';
}

export interface HostNetworkState {
  networks: NetworkSpec[];
  groups: SecurityGroup[];
  nics: NicBinding[];
  hostRules: HostRule[];
  /** NICs' addresses per group on other hosts too, so group references work cluster-wide. */
  groupMembers?: Record<string, string[]>;
}

export const METADATA_ADDRESS = '169.254.169.254';
export const METADATA_PORT = 80;

const namePattern = /^[a-z][a-z0-9-]{0,30}$/;
const ifacePattern = /^[A-Za-z0-9_.-]{1,15}$/;
const macPattern = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

function bad(message: string, field: string, value: unknown): never {
  throw errors.invalid(message, { field, value });
}

export function checkName(value: unknown, what: string): string {
  if (typeof value !== 'string' || !namePattern.test(value)) {
    bad(`Invalid ${what} name "${String(value)}": 1 to 31 characters of a-z, 0-9 and "-", starting with a letter`, what, value);
  }
  return value;
}

export function checkInterfaceName(value: unknown, what: string): string {
  if (typeof value !== 'string' || !ifacePattern.test(value)) {
    bad(`Invalid ${what} "${String(value)}": 1 to 15 characters of A-Z, a-z, 0-9, "_", "." and "-"`, what, value);
  }
  return value;
}

/** Parses a dotted IPv4 address into an unsigned 32-bit number. */
export function parseIPv4(value: unknown, what: string): number {
  const parts = typeof value === 'string' ? value.split('.') : [];
  if (parts.length !== 4 || parts.some((p) => !/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255)) {
    bad(`Invalid ${what} "${String(value)}": expected an IPv4 address`, what, value);
  }
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function formatIPv4(value: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join('.');
}

export interface Cidr {
  base: number;
  prefix: number;
  size: number;
  text: string;
}

/** Parses `A.B.C.D/N`; the address must be the network's first address. */
export function parseCidr(value: unknown, what: string): Cidr {
  const text = typeof value === 'string' ? value : '';
  const match = /^([0-9.]+)\/([0-9]{1,2})$/.exec(text);
  if (!match || Number(match[2]) > 32) bad(`Invalid ${what} "${String(value)}": expected IPv4 CIDR such as 10.0.0.0/24`, what, value);
  const address = parseIPv4(match[1], what);
  const prefix = Number(match[2]);
  const size = 2 ** (32 - prefix);
  if (address % size !== 0) {
    bad(`Invalid ${what} "${text}": host bits are set (the network is ${formatIPv4(address - (address % size))}/${prefix})`, what, value);
  }
  return { base: address, prefix, size, text };
}

export function cidrContains(cidr: Cidr, address: number): boolean {
  return address >= cidr.base && address < cidr.base + cidr.size;
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  return a.base < b.base + b.size && b.base < a.base + a.size;
}

function checkPorts(ports: { from: number; to: number } | undefined, protocol: Protocol, where: string): void {
  if (ports === undefined) return;
  if (protocol !== 'tcp' && protocol !== 'udp') bad(`Invalid rule in ${where}: ports need protocol tcp or udp, not "${protocol}"`, 'ports', ports);
  for (const port of [ports.from, ports.to]) {
    if (!Number.isInteger(port) || port < 1 || port > 65535) bad(`Invalid port ${String(port)} in ${where}: expected 1 to 65535`, 'ports', ports);
  }
  if (ports.from > ports.to) bad(`Invalid port range ${ports.from}-${ports.to} in ${where}: the start is after the end`, 'ports', ports);
}

function checkProtocol(protocol: unknown, where: string): asserts protocol is Protocol {
  if (protocol !== 'tcp' && protocol !== 'udp' && protocol !== 'icmp' && protocol !== 'any') {
    bad(`Invalid protocol "${String(protocol)}" in ${where}: expected tcp, udp, icmp or any`, 'protocol', protocol);
  }
}

/** Checks every field and every cross-reference; throws `invalid` naming the first problem. */
export function validateHostNetworkState(state: HostNetworkState): void {
  const networks = new Map<string, { spec: NetworkSpec; cidr: Cidr }>();
  const bridges = new Set<string>();
  for (const network of state.networks) {
    checkName(network.name, 'network');
    if (networks.has(network.name)) bad(`Duplicate network "${network.name}"`, 'network', network.name);
    if (!['bridged', 'nat', 'isolated'].includes(network.kind)) {
      bad(`Invalid kind "${String(network.kind)}" of network "${network.name}": expected bridged, nat or isolated`, 'kind', network.kind);
    }
    const cidr = parseCidr(network.subnet, 'subnet');
    if (cidr.prefix > 30 || cidr.prefix < 8) bad(`Invalid subnet "${network.subnet}" of network "${network.name}": prefix must be /8 to /30`, 'subnet', network.subnet);
    const gateway = parseIPv4(network.gateway, 'gateway');
    if (!cidrContains(cidr, gateway) || gateway === cidr.base || gateway === cidr.base + cidr.size - 1) {
      bad(`Invalid gateway "${network.gateway}" of network "${network.name}": not a host address of ${network.subnet}`, 'gateway', network.gateway);
    }
    if (network.hostAddress !== undefined) {
      const own = parseIPv4(network.hostAddress, 'host address');
      if (!cidrContains(cidr, own) || own === cidr.base || own === cidr.base + cidr.size - 1) {
        bad(`Invalid host address "${network.hostAddress}" of network "${network.name}": not a host address of ${network.subnet}`, 'hostAddress', network.hostAddress);
      }
    }
    checkInterfaceName(network.bridge, 'bridge');
    if (bridges.has(network.bridge)) bad(`Bridge "${network.bridge}" is used by two networks`, 'bridge', network.bridge);
    bridges.add(network.bridge);
    if (network.uplink !== undefined) checkInterfaceName(network.uplink, 'uplink');
    if (network.kind === 'bridged' && network.uplink === undefined) bad(`Network "${network.name}" is bridged but has no uplink`, 'uplink', undefined);
    if (network.kind === 'isolated' && network.uplink !== undefined) bad(`Network "${network.name}" is isolated and cannot have an uplink`, 'uplink', network.uplink);
    if (network.mtu !== undefined && (!Number.isInteger(network.mtu) || network.mtu < 576 || network.mtu > 9000)) {
      bad(`Invalid MTU ${String(network.mtu)} of network "${network.name}": expected 576 to 9000`, 'mtu', network.mtu);
    }
    if (network.vxlan) {
      const { vni, local, remotes, device, underlay } = network.vxlan;
      if (!Number.isInteger(vni) || vni < 1 || vni > 16_777_215) bad(`Invalid VXLAN id ${String(vni)} of network "${network.name}"`, 'vni', vni);
      parseIPv4(local, 'VXLAN local address');
      for (const remote of remotes) parseIPv4(remote, 'VXLAN remote address');
      checkInterfaceName(device, 'VXLAN device');
      if (underlay !== undefined) checkInterfaceName(underlay, 'VXLAN underlay');
    }
    for (const other of networks.values()) {
      if (cidrsOverlap(other.cidr, cidr)) {
        bad(`Subnet "${network.subnet}" of network "${network.name}" overlaps "${other.spec.subnet}" of network "${other.spec.name}"`, 'subnet', network.subnet);
      }
    }
    networks.set(network.name, { spec: network, cidr });
  }

  const groups = new Set<string>();
  for (const group of state.groups) {
    checkName(group.name, 'security group');
    if (groups.has(group.name)) bad(`Duplicate security group "${group.name}"`, 'group', group.name);
    groups.add(group.name);
  }
  for (const group of state.groups) validateGroupRules(group, groups);

  const taps = new Set<string>();
  const macs = new Set<string>();
  const addresses = new Set<string>();
  for (const nic of state.nics) {
    checkName(nic.vm, 'VM');
    checkName(nic.nic, 'NIC');
    const where = `NIC "${nic.nic}" of VM "${nic.vm}"`;
    const network = networks.get(nic.network);
    if (!network) bad(`${where} is on network "${String(nic.network)}", which this host does not have`, 'network', nic.network);
    checkInterfaceName(nic.tap, 'tap');
    if (taps.has(nic.tap) || bridges.has(nic.tap)) bad(`Tap "${nic.tap}" of ${where} is used twice`, 'tap', nic.tap);
    taps.add(nic.tap);
    if (typeof nic.mac !== 'string' || !macPattern.test(nic.mac) || (parseInt(nic.mac.slice(0, 2), 16) & 1) === 1) {
      bad(`Invalid MAC address "${String(nic.mac)}" of ${where}: expected a lower-case unicast xx:xx:xx:xx:xx:xx`, 'mac', nic.mac);
    }
    if (macs.has(nic.mac)) bad(`MAC address "${nic.mac}" of ${where} is used twice`, 'mac', nic.mac);
    macs.add(nic.mac);
    const ip = parseIPv4(nic.ip, 'NIC address');
    if (!cidrContains(network.cidr, ip) || ip === network.cidr.base || ip === network.cidr.base + network.cidr.size - 1) {
      bad(`Address "${nic.ip}" of ${where} is not a host address of ${network.spec.subnet}`, 'ip', nic.ip);
    }
    if (nic.ip === network.spec.hostAddress) bad(`Address "${nic.ip}" of ${where} is the host's address on network "${nic.network}"`, 'ip', nic.ip);
    if (nic.ip === network.spec.gateway) bad(`Address "${nic.ip}" of ${where} is the gateway of network "${nic.network}"`, 'ip', nic.ip);
    if (addresses.has(nic.ip)) bad(`Address "${nic.ip}" of ${where} is used twice`, 'ip', nic.ip);
    addresses.add(nic.ip);
    for (const group of nic.groups) {
      if (!groups.has(group)) bad(`${where} refers to security group "${String(group)}", which does not exist`, 'group', group);
    }
  }
  for (const [group, members] of Object.entries(state.groupMembers ?? {})) {
    if (!groups.has(group)) bad(`Members given for unknown security group "${group}"`, 'group', group);
    for (const member of members) parseIPv4(member, 'group member address');
  }
  for (const rule of state.hostRules) {
    const where = 'a host rule';
    if (rule.network !== undefined && !networks.has(rule.network)) bad(`A host rule refers to network "${rule.network}", which this host does not have`, 'network', rule.network);
    checkProtocol(rule.protocol, where);
    checkPorts(rule.ports, rule.protocol, where);
    if (rule.cidr !== undefined) parseCidr(rule.cidr, 'cidr');
    if (rule.action !== 'accept' && rule.action !== 'drop') bad(`Invalid host rule action "${String(rule.action)}": expected accept or drop`, 'action', rule.action);
  }
}

/** Checks one group's rules; `known` is every group name (for references). */
export function validateGroupRules(group: SecurityGroup, known: ReadonlySet<string>): void {
  group.rules.forEach((rule, index) => {
    const where = `rule ${index + 1} of security group "${group.name}"`;
    if (rule.direction !== 'ingress' && rule.direction !== 'egress') {
      bad(`Invalid direction "${String(rule.direction)}" in ${where}: expected ingress or egress`, 'direction', rule.direction);
    }
    checkProtocol(rule.protocol, where);
    checkPorts(rule.ports, rule.protocol, where);
    if (rule.icmpType !== undefined) {
      if (rule.protocol !== 'icmp') bad(`Invalid ${where}: an ICMP type needs protocol icmp`, 'icmpType', rule.icmpType);
      if (!Number.isInteger(rule.icmpType) || rule.icmpType < 0 || rule.icmpType > 255) bad(`Invalid ICMP type ${String(rule.icmpType)} in ${where}: expected 0 to 255`, 'icmpType', rule.icmpType);
    }
    if (rule.cidr !== undefined && rule.group !== undefined) bad(`Invalid ${where}: give a CIDR or a group, not both`, 'cidr', rule.cidr);
    if (rule.cidr !== undefined) parseCidr(rule.cidr, 'cidr');
    if (rule.group !== undefined) {
      checkName(rule.group, 'security group');
      if (rule.group === group.name) bad(`Invalid ${where}: a security group cannot refer to itself`, 'group', rule.group);
      if (!known.has(rule.group)) bad(`Invalid ${where}: security group "${rule.group}" does not exist`, 'group', rule.group);
    }
    if (rule.description !== undefined && (typeof rule.description !== 'string' || rule.description.length > 200)) {
      bad(`Invalid description in ${where}: at most 200 characters`, 'description', rule.description);
    }
  });
}

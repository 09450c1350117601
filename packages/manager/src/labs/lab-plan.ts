import { errors } from '@drover/core';
import type { LabManifest, LabVm } from '@drover/api';

/**
 * The pure part of a lab deployment: checks of a manifest, the start order
 * (levels of a topological sort over `dependsOn`), the lab address pool and the
 * translation of the manifest's addresses into the lab's subnets, and the
 * kernel settings each VM boots with. No I/O: every refusal happens here,
 * before anything is made.
 */

/** Lab network names are `<lab>-<network>`, which must be a valid network name (NetName in @drover/api). */
export const networkNamePattern = /^[a-z][a-z0-9-]{0,30}$/;

export function labNetworkName(lab: string, network: string): string {
  return `${lab}-${network}`;
}

export function labVmName(lab: string, vm: string): string {
  return `${lab}-${vm}`;
}

// ------------------------------------------------------------ IPv4

export function ipToInt(ip: string): number {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw errors.invalid(`Invalid IPv4 address "${ip}"`);
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function parseCidr(cidr: string): { network: number; prefix: number } {
  const [ip, bits] = cidr.split('/') as [string, string | undefined];
  const prefix = Number(bits);
  if (bits === undefined || !Number.isInteger(prefix) || prefix < 0 || prefix > 32) throw errors.invalid(`Invalid subnet "${cidr}"`);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const network = ipToInt(ip);
  if ((network & mask) >>> 0 !== network) throw errors.invalid(`Subnet "${cidr}" has host bits set`, { subnet: cidr });
  return { network, prefix };
}

function inSubnet(ip: number, subnet: { network: number; prefix: number }): boolean {
  const mask = subnet.prefix === 0 ? 0 : (0xffffffff << (32 - subnet.prefix)) >>> 0;
  return (ip & mask) >>> 0 === subnet.network;
}

/**
 * The lab address pool: each lab network gets its own /24 of it, so two labs
 * (a lab and its clone) never share addresses. A manifest subnet of /24 to /28
 * keeps its offset and prefix inside the block; its addresses keep their last
 * octet.
 */
export const defaultLabAddressPool = '10.213.0.0/16';

/** The first free /24 blocks of `pool` not in `used` (subnets in use by labs and networks). */
export function allocateBlocks(pool: string, used: readonly string[], count: number): number[] {
  const p = parseCidr(pool);
  if (p.prefix > 24) throw errors.invalid(`The lab address pool "${pool}" must be a /24 or larger`);
  const taken = new Set<number>();
  for (const subnet of used) {
    const s = parseCidr(subnet);
    // A subnet larger than /24 takes every block it covers.
    const size = s.prefix >= 24 ? 1 : 2 ** (24 - s.prefix);
    for (let i = 0; i < size; i++) taken.add(((s.network >>> 8) + i) >>> 0);
  }
  const blocks: number[] = [];
  const total = 2 ** (24 - p.prefix);
  for (let i = 0; i < total && blocks.length < count; i++) {
    const block = ((p.network >>> 8) + i) >>> 0;
    if (!taken.has(block)) blocks.push(block);
  }
  if (blocks.length < count) throw errors.conflict(`The lab address pool "${pool}" is exhausted: ${count} more /24 networks are needed`, { pool });
  return blocks;
}

/** The lab's subnet for a manifest subnet placed in block `block` (the /24 number). */
export function subnetInBlock(manifestSubnet: string, block: number): string {
  const s = parseCidr(manifestSubnet);
  return `${intToIp(((block << 8) >>> 0) + (s.network & 255))}/${s.prefix}`;
}

/** An address of a manifest subnet, moved into the lab's subnet. */
export function translateAddress(ip: string, labSubnet: string): string {
  const s = parseCidr(labSubnet);
  return intToIp(((s.network & 0xffffff00) >>> 0) + (ipToInt(ip) & 255));
}

// ------------------------------------------------------------ checks and order

/** What a manifest leads to, once checked: each VM's start level. */
export interface LabPlan {
  levels: string[][];
  levelOf: Map<string, number>;
}

/**
 * Checks a manifest for a lab named `lab`: unique names, references to known
 * networks, groups and VMs, addresses inside their subnets and unique, a
 * start order without cycles, health-check patterns that compile. Throws
 * `invalid` naming the first problem.
 */
export function planLab(lab: string, manifest: LabManifest): LabPlan {
  const unique = (kind: string, names: string[]) => {
    const seen = new Set<string>();
    for (const name of names) {
      if (seen.has(name)) throw errors.invalid(`Lab manifest "${manifest.name}" has two ${kind}s named "${name}"`, { field: kind, value: name });
      seen.add(name);
    }
    return seen;
  };
  const networks = unique('network', manifest.networks.map((n) => n.name));
  const groups = unique('security group', (manifest.securityGroups ?? []).map((g) => g.name));
  const vms = unique('VM', manifest.vms.map((v) => v.name));
  const subnets = new Map<string, { network: number; prefix: number }>();
  for (const network of manifest.networks) {
    const name = labNetworkName(lab, network.name);
    if (!networkNamePattern.test(name)) {
      throw errors.invalid(`Network "${network.name}" of lab "${lab}" would be named "${name}": network names are 1 to 31 characters of a-z, 0-9 and "-"; use a shorter lab or network name`, { field: 'networks', value: network.name });
    }
    const subnet = parseCidr(network.subnet);
    if (subnet.prefix < 24 || subnet.prefix > 28) throw errors.invalid(`Network "${network.name}" has subnet "${network.subnet}": lab networks are /24 to /28`, { field: 'networks', value: network.subnet });
    subnets.set(network.name, subnet);
  }
  for (const group of manifest.securityGroups ?? []) {
    const name = labNetworkName(lab, group.name);
    if (!networkNamePattern.test(name)) throw errors.invalid(`Security group "${group.name}" of lab "${lab}" would be named "${name}", which is not a valid group name`, { field: 'securityGroups', value: group.name });
    for (const rule of group.rules) {
      if (rule.group !== undefined && !groups.has(rule.group)) throw errors.invalid(`Security group "${group.name}" refers to unknown group "${rule.group}"`, { field: 'securityGroups', value: rule.group });
    }
  }
  const addresses = new Set<string>();
  for (const vm of manifest.vms) {
    for (const nic of vm.nics ?? []) {
      if (!networks.has(nic.network)) throw errors.invalid(`VM "${vm.name}" is on unknown network "${nic.network}"`, { field: 'vms.nics.network', value: nic.network });
      for (const group of nic.securityGroups ?? []) {
        if (!groups.has(group)) throw errors.invalid(`VM "${vm.name}" is in unknown security group "${group}"`, { field: 'vms.nics.securityGroups', value: group });
      }
      if (nic.ip !== undefined) {
        const subnet = subnets.get(nic.network)!;
        const ip = ipToInt(nic.ip);
        if (!inSubnet(ip, subnet)) throw errors.invalid(`VM "${vm.name}" has address ${nic.ip}, outside network "${nic.network}" (${manifest.networks.find((n) => n.name === nic.network)!.subnet})`, { field: 'vms.nics.ip', value: nic.ip });
        const size = 2 ** (32 - subnet.prefix);
        if (ip === subnet.network || ip === subnet.network + size - 1) {
          throw errors.invalid(`VM "${vm.name}" has address ${nic.ip}, which is not a host address of network "${nic.network}"`, { field: 'vms.nics.ip', value: nic.ip });
        }
        if (addresses.has(nic.ip)) throw errors.invalid(`Address ${nic.ip} is given to two VMs`, { field: 'vms.nics.ip', value: nic.ip });
        addresses.add(nic.ip);
      }
    }
    for (const dependency of vm.dependsOn ?? []) {
      if (!vms.has(dependency)) throw errors.invalid(`VM "${vm.name}" depends on unknown VM "${dependency}"`, { field: 'vms.dependsOn', value: dependency });
      if (dependency === vm.name) throw errors.invalid(`VM "${vm.name}" depends on itself`, { field: 'vms.dependsOn', value: dependency });
    }
    if (vm.healthCheck?.kind === 'serial') {
      try {
        new RegExp(vm.healthCheck.pattern, 'm');
      } catch (error) {
        throw errors.invalid(`VM "${vm.name}" has a health-check pattern that is not a regular expression: ${(error as Error).message}`, { field: 'vms.healthCheck.pattern' });
      }
    }
  }
  return startLevels(manifest.vms);
}

/**
 * The start levels: level 0 holds the VMs that depend on nothing, level n those
 * whose dependencies are all in lower levels. A cycle is refused, named.
 */
export function startLevels(vms: ReadonlyArray<Pick<LabVm, 'name' | 'dependsOn'>>): LabPlan {
  const byName = new Map(vms.map((vm) => [vm.name, vm]));
  const levelOf = new Map<string, number>();
  const visiting: string[] = [];
  const visit = (name: string): number => {
    const known = levelOf.get(name);
    if (known !== undefined) return known;
    const at = visiting.indexOf(name);
    if (at >= 0) {
      const cycle = [...visiting.slice(at), name];
      throw errors.invalid(`The start order has a cycle: ${cycle.join(' → ')}`, { field: 'vms.dependsOn', cycle });
    }
    visiting.push(name);
    const deps = byName.get(name)?.dependsOn ?? [];
    const level = deps.length === 0 ? 0 : 1 + Math.max(...deps.map(visit));
    visiting.pop();
    levelOf.set(name, level);
    return level;
  };
  for (const vm of vms) visit(vm.name);
  const levels: string[][] = [];
  for (const vm of vms) (levels[levelOf.get(vm.name)!] ??= []).push(vm.name);
  return { levels, levelOf };
}

// ------------------------------------------------------------ guest settings

const ipPort = /\b(\d{1,3}(?:\.\d{1,3}){3})(?::(\d{1,5}))?\b/g;

/** The guest ports of other lab VMs that each VM's settings name as `<address>:<port>` (they need a forward in user mode). */
export function referencedPorts(manifest: LabManifest): Array<{ vm: string; port: number }> {
  const owner = addressOwners(manifest);
  const out: Array<{ vm: string; port: number }> = [];
  for (const vm of manifest.vms) {
    for (const match of (vm.guest?.cmdline ?? '').matchAll(ipPort)) {
      const target = owner.get(match[1]!);
      if (target && match[2]) out.push({ vm: target, port: Number(match[2]) });
    }
  }
  return out;
}

/** Which VM holds each manifest address. */
export function addressOwners(manifest: LabManifest): Map<string, string> {
  const owner = new Map<string, string>();
  for (const vm of manifest.vms) for (const nic of vm.nics ?? []) if (nic.ip) owner.set(nic.ip, vm.name);
  return owner;
}

export interface CmdlineContext {
  /** The VM's name (drover.name). */
  vmName: string;
  mode: 'networks' | 'user';
  /** networks mode: a manifest address → the lab's address. */
  translate: (ip: string) => string | undefined;
  /** user mode: the loopback port forwarded to `port` of the VM holding manifest address `ip`. */
  forwardOf: (ip: string, port: number) => number | undefined;
  /** networks mode: the VM's own first address with its prefix ("10.213.0.11/24"), set as drover.ip unless the manifest sets one. */
  ownAddress?: string;
}

/**
 * The kernel settings a lab VM boots with: its name, the manifest's settings
 * with addresses moved to the lab's (networks mode), or, on QEMU user
 * networking, `drover.net=user` and `<address>:<port>` replaced by the host's
 * loopback forward (10.0.2.2 from the guest). Address settings that do not
 * apply to user networking are dropped there.
 */
export function guestCmdline(manifestCmdline: string | undefined, c: CmdlineContext): string {
  const tokens = (manifestCmdline ?? '').split(/\s+/).filter(Boolean);
  const out = [`drover.name=${c.vmName}`];
  let hasIp = false;
  for (const token of tokens) {
    if (token.startsWith('drover.name=')) continue;
    if (c.mode === 'user') {
      if (/^drover\.(ip|gw|dns|net)=/.test(token)) continue;
      out.push(token.replace(ipPort, (whole, ip: string, port?: string) => {
        const forward = port ? c.forwardOf(ip, Number(port)) : undefined;
        return forward !== undefined ? `10.0.2.2:${forward}` : whole;
      }));
    } else {
      if (token.startsWith('drover.ip=')) hasIp = true;
      out.push(token.replace(ipPort, (whole, ip: string, port?: string) => {
        const moved = c.translate(ip);
        return moved === undefined ? whole : `${moved}${port ? `:${port}` : ''}`;
      }));
    }
  }
  if (c.mode === 'user') out.push('drover.net=user');
  else if (!hasIp && c.ownAddress) out.push(`drover.ip=${c.ownAddress}`);
  return out.join(' ');
}

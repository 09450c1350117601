import { errors } from '@drover/core';
import { cidrsOverlap, formatIPv4, parseCidr, parseIPv4 } from './firewall-model.js';

/**
 * Address and MAC allocation for Drover networks (pure: the manager keeps the
 * allocations in its store and calls these with what is taken).
 *
 * Addresses: the first free host address of the subnet, skipping the network
 * and broadcast addresses, the gateway and every reserved address (hosts'
 * own addresses on spanning networks). MACs: locally administered unicast
 * `52:54:00:xx:xx:xx` (QEMU's prefix), drawn from a caller-given random
 * source, never one already taken.
 */
export function allocateAddress(subnet: string, taken: Iterable<string>, reserved: Iterable<string> = []): string {
  const cidr = parseCidr(subnet, 'subnet');
  const used = new Set<number>();
  for (const address of [...taken, ...reserved]) used.add(parseIPv4(address, 'address'));
  for (let candidate = cidr.base + 1; candidate < cidr.base + cidr.size - 1; candidate++) {
    if (!used.has(candidate)) return formatIPv4(candidate);
  }
  throw errors.conflict(`No free address left in subnet "${subnet}"`, { subnet });
}

/** Checks that a requested static address is a free host address of the subnet. */
export function checkRequestedAddress(subnet: string, address: string, taken: Iterable<string>, reserved: Iterable<string> = []): string {
  const cidr = parseCidr(subnet, 'subnet');
  const value = parseIPv4(address, 'address');
  if (value <= cidr.base || value >= cidr.base + cidr.size - 1) {
    throw errors.invalid(`Address "${address}" is not a host address of subnet "${subnet}"`, { field: 'ip', value: address });
  }
  for (const other of [...taken, ...reserved]) {
    if (parseIPv4(other, 'address') === value) throw errors.conflict(`Address "${address}" is already in use on subnet "${subnet}"`, { ip: address });
  }
  return address;
}

const MAC_PREFIX = '52:54:00';

export function allocateMac(taken: Iterable<string>, random: () => number = Math.random): string {
  const used = new Set([...taken].map((mac) => mac.toLowerCase()));
  if (used.size >= 2 ** 24) throw errors.conflict('No free MAC address left under 52:54:00');
  const format = (value: number): string => `${MAC_PREFIX}:${[16, 8, 0].map((shift) => ((value >> shift) & 255).toString(16).padStart(2, '0')).join(':')}`;
  const start = Math.floor(random() * 2 ** 24) % 2 ** 24;
  // Walk on from the random point: ends even when the random source repeats itself.
  for (let step = 0; step < 2 ** 24; step++) {
    const mac = format((start + step) % 2 ** 24);
    if (!used.has(mac)) return mac;
  }
  throw errors.conflict('No free MAC address left under 52:54:00');
}

/** Refuses a new subnet that overlaps one of the existing networks. */
export function checkSubnetFree(name: string, subnet: string, existing: ReadonlyArray<{ name: string; subnet: string }>): void {
  const cidr = parseCidr(subnet, 'subnet');
  for (const other of existing) {
    if (other.name !== name && cidrsOverlap(cidr, parseCidr(other.subnet, 'subnet'))) {
      throw errors.conflict(`Subnet "${subnet}" of network "${name}" overlaps "${other.subnet}" of network "${other.name}"`, { subnet, other: other.name });
    }
  }
}

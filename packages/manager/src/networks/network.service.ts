import type { Logger } from 'pino';
import { DroverError, errors } from '@drover/core';
import { net } from '@drover/agent';
import type { FirewallExplain, HostRuleCreate, Network, NetworkCreate, NetworkEdit, NetworkStateBody, SecurityGroupRuleInput, VmNetworkAttachment, VmNicView } from '@drover/api';
import type { Store } from '../store/index.js';
import { listEvery } from '../store/paging.js';
import type { HostRecord, VmRecord } from '../store/types.js';
import type { HostRuleRecord, NetworkRecord, SecurityGroupRecord, SecurityGroupRuleRecord, VmNicRecord } from '../store/repositories/networks.js';
import type { AgentLink } from '../hosts/agent-link.js';

/**
 * Networks and firewall on the manager's side (docs/networks.md): networks,
 * security groups and rules, host rules and the VMs' NICs on networks are
 * records; from them `hostState` computes each host's whole network state
 * (what the agent's `PUT /v1/network-state` takes) and `pushHost` sends it.
 * Everything is checked here before anything is stored, with the agent's own
 * validation (`@drover/agent` `net`), so a host never gets a state it refuses.
 */
export interface NetworkServiceOptions {
  store: Store;
  link: AgentLink;
  logger: Logger;
  /** VM states in which a VM holds its host (its QEMU may run there). */
  holdingStates: readonly string[];
}

/** Networks (and security groups) of a lab carry its id; the lab engineer's code creates them through this service. */
export interface NetworkInput extends NetworkCreate {
  lab?: string;
}
export interface SecurityGroupInput {
  name: string;
  description?: string;
  rules?: SecurityGroupRuleInput[];
  lab?: string;
}

/** VXLAN ids are allocated from here up. */
const firstVni = 4096;
/** The host addresses at the top of each subnet are kept for the hosts' own addresses on networks spanning hosts. */
function hostSlots(cidr: net.Cidr): number {
  return Math.max(1, Math.min(16, Math.floor((cidr.size - 2) / 4)));
}
function reservedHostAddresses(network: Pick<NetworkRecord, 'subnet' | 'gateway'>): string[] {
  const cidr = net.parseCidr(network.subnet, 'subnet');
  const top = cidr.base + cidr.size - 2;
  const slots = Array.from({ length: hostSlots(cidr) }, (_, i) => net.formatIPv4(top - i));
  return [network.gateway, ...slots];
}

function inputError(error: unknown, field: string): never {
  if (error instanceof DroverError && error.code === 'invalid') {
    throw new DroverError('invalid', error.message, { details: { ...(error.details ?? {}), field: (error.details as { field?: string } | undefined)?.field ?? field } });
  }
  throw error;
}

/** The tap of a VM's NIC: unique by the VM's id, the same on every host (a migration's destination uses the same name). */
function tapName(vmId: string, index: number): string {
  return `dt${vmId.replaceAll('-', '').slice(0, 10)}${index}`;
}

function hostIp(host: Pick<HostRecord, 'address' | 'name'>): string {
  try {
    const name = new URL(host.address).hostname;
    net.parseIPv4(name, 'host address');
    return name;
  } catch {
    throw errors.conflict(`Host "${host.name}" has no IPv4 address (${host.address}) for VXLAN`, { host: host.name });
  }
}

/** Checks one rule list the way the agent will (ranges, ICMP types, peers, self-reference, unknown groups). */
function checkRules(name: string, rules: SecurityGroupRuleRecord[], known: ReadonlySet<string>): void {
  net.validateGroupRules({ name, rules }, known);
}

function describePorts(rule: { ports?: { from: number; to: number } | null }): string | undefined {
  if (!rule.ports) return undefined;
  return rule.ports.from === rule.ports.to ? String(rule.ports.from) : `${rule.ports.from}-${rule.ports.to}`;
}

export class NetworkService {
  /** One push per host at a time, in order: a later state never lands before an earlier one. */
  private readonly pushes = new Map<string, Promise<unknown>>();

  constructor(private readonly o: NetworkServiceOptions) {}

  // ------------------------------------------------------------ networks

  async listNetworks(filter: { lab?: string } = {}): Promise<NetworkRecord[]> {
    return this.o.store.net.networks.all(filter);
  }

  async findNetwork(ref: string): Promise<NetworkRecord> {
    return this.o.store.net.networks.find(ref);
  }

  async publicNetworks(records: NetworkRecord[]): Promise<Network[]> {
    const { placements, nics } = await this.placements();
    const hosts = new Map((await listEvery((q) => this.o.store.hosts.list(q))).map((h) => [h.id, h.name]));
    return records.map((record) => {
      const own = nics.filter((nic) => nic.networkId === record.id);
      const on = new Set(own.flatMap((nic) => [...(placements.get(nic.vmId) ?? [])]));
      return {
        id: record.id,
        name: record.name,
        kind: record.kind as Network['kind'],
        subnet: record.subnet,
        gateway: record.gateway,
        uplink: record.uplink,
        mtu: record.mtu,
        vni: record.vni,
        labels: record.labels,
        owner: record.owner,
        lab: record.lab,
        nics: own.length,
        hosts: [...on].map((id) => hosts.get(id) ?? id).sort(),
        rev: record.rev,
        createdAt: record.createdAt,
        updatedAt: record.updatedAt,
      };
    });
  }

  async publicNetwork(record: NetworkRecord): Promise<Network> {
    return (await this.publicNetworks([record]))[0]!;
  }

  /** Checks everything, then stores the network with a fresh VXLAN id. Overlapping subnets are a 409. */
  async createNetwork(input: NetworkInput, actor: string): Promise<NetworkRecord> {
    const name = net.checkName(input.name, 'network');
    if (!['bridged', 'nat', 'isolated'].includes(input.kind)) throw errors.invalid(`Invalid kind "${String(input.kind)}" of network "${name}": expected bridged, nat or isolated`, { field: 'kind' });
    let cidr: net.Cidr;
    try {
      cidr = net.parseCidr(input.subnet, 'subnet');
    } catch (error) {
      inputError(error, 'subnet');
    }
    if (cidr.prefix > 28 || cidr.prefix < 8) throw errors.invalid(`Invalid subnet "${input.subnet}" of network "${name}": prefix must be /8 to /28`, { field: 'subnet' });
    const gateway = input.gateway ?? net.formatIPv4(cidr.base + 1);
    const gw = net.parseIPv4(gateway, 'gateway');
    const reserved = reservedHostAddresses({ subnet: input.subnet, gateway: net.formatIPv4(cidr.base + 1) }).slice(1);
    if (!net.cidrContains(cidr, gw) || gw === cidr.base || gw === cidr.base + cidr.size - 1) {
      throw errors.invalid(`Invalid gateway "${gateway}" of network "${name}": not a host address of ${input.subnet}`, { field: 'gateway' });
    }
    if (reserved.includes(gateway)) throw errors.invalid(`Invalid gateway "${gateway}" of network "${name}": the top ${reserved.length} addresses of the subnet are kept for the hosts`, { field: 'gateway' });
    if (input.uplink !== undefined) net.checkInterfaceName(input.uplink, 'uplink');
    if (input.kind === 'bridged' && input.uplink === undefined) throw errors.invalid(`Network "${name}" is bridged but has no uplink`, { field: 'uplink' });
    if (input.kind === 'isolated' && input.uplink !== undefined) throw errors.invalid(`Network "${name}" is isolated and cannot have an uplink`, { field: 'uplink' });
    if (input.mtu !== undefined && (!Number.isInteger(input.mtu) || input.mtu < 576 || input.mtu > 9000)) throw errors.invalid(`Invalid MTU ${String(input.mtu)}: expected 576 to 9000`, { field: 'mtu' });
    return this.o.store.transaction(async (tx) => {
      const existing = await tx.net.networks.all();
      if (existing.some((n) => n.name === name)) throw errors.conflict(`A network named "${name}" already exists`, { name });
      net.checkSubnetFree(name, cidr.text, existing);
      const vni = Math.max(firstVni - 1, ...existing.map((n) => n.vni)) + 1;
      return tx.net.networks.create({
        name,
        kind: input.kind,
        subnet: cidr.text,
        gateway,
        uplink: input.uplink ?? null,
        mtu: input.mtu ?? null,
        vni,
        labels: input.labels ?? {},
        owner: actor,
        lab: input.lab ?? null,
      });
    });
  }

  async editNetwork(ref: string, patch: NetworkEdit, expectedRev?: number): Promise<NetworkRecord> {
    const network = await this.findNetwork(ref);
    if (patch.mtu !== undefined && patch.mtu !== null && (!Number.isInteger(patch.mtu) || patch.mtu < 576 || patch.mtu > 9000)) {
      throw errors.invalid(`Invalid MTU ${String(patch.mtu)}: expected 576 to 9000`, { field: 'mtu' });
    }
    const updated = await this.o.store.net.networks.update(
      network.id,
      { ...(patch.mtu !== undefined ? { mtu: patch.mtu } : {}), ...(patch.labels !== undefined ? { labels: patch.labels } : {}) },
      expectedRev === undefined ? {} : { expectedRev },
    );
    await this.pushAll();
    return updated;
  }

  /** A network with VM NICs on it is a 409 naming the VMs. */
  async deleteNetwork(ref: string, expectedRev?: number): Promise<NetworkRecord> {
    const network = await this.findNetwork(ref);
    const nics = await this.o.store.net.nics.all({ networkId: network.id });
    if (nics.length > 0) {
      const vms = (await this.o.store.vms.getMany(nics.map((n) => n.vmId))).map((vm) => vm.name).sort();
      throw errors.conflict(`Cannot delete network "${network.name}": it is in use by VM(s) ${vms.map((v) => `"${v}"`).join(', ')}`, { network: network.name, vms });
    }
    return this.o.store.net.networks.delete(network.id, expectedRev === undefined ? {} : { expectedRev });
  }

  // ------------------------------------------------------------ security groups

  async listGroups(filter: { lab?: string } = {}): Promise<SecurityGroupRecord[]> {
    return this.o.store.net.groups.all(filter);
  }

  async findGroup(ref: string): Promise<SecurityGroupRecord> {
    return this.o.store.net.groups.find(ref);
  }

  async createGroup(input: SecurityGroupInput, actor: string): Promise<SecurityGroupRecord> {
    const name = net.checkName(input.name, 'security group');
    const rules = (input.rules ?? []) as SecurityGroupRuleRecord[];
    return this.o.store.transaction(async (tx) => {
      const known = new Set((await tx.net.groups.all()).map((g) => g.name));
      if (known.has(name)) throw errors.conflict(`A security group named "${name}" already exists`, { name });
      checkRules(name, rules, new Set([...known, name]));
      return tx.net.groups.create({ name, description: input.description ?? '', rules, owner: actor, lab: input.lab ?? null });
    });
  }

  /** Replaces a group's rules (checked whole first), then pushes every host running its members. */
  async setRules(ref: string, rules: SecurityGroupRuleInput[], expectedRev?: number): Promise<SecurityGroupRecord> {
    const updated = await this.o.store.transaction(async (tx) => {
      const group = await tx.net.groups.find(ref);
      const known = new Set((await tx.net.groups.all()).map((g) => g.name));
      checkRules(group.name, rules as SecurityGroupRuleRecord[], known);
      return tx.net.groups.update(group.id, { rules: rules as SecurityGroupRuleRecord[] }, expectedRev === undefined ? {} : { expectedRev });
    });
    await this.pushAll();
    return updated;
  }

  async addRule(ref: string, rule: SecurityGroupRuleInput, expectedRev?: number): Promise<SecurityGroupRecord> {
    const group = await this.findGroup(ref);
    return this.setRules(group.id, [...group.rules, rule], expectedRev);
  }

  /** Removes the rule at `index` (1-based, as `show` numbers them). */
  async removeRule(ref: string, index: number, expectedRev?: number): Promise<SecurityGroupRecord> {
    const group = await this.findGroup(ref);
    if (!Number.isInteger(index) || index < 1 || index > group.rules.length) {
      throw errors.notFound('rule', `${index} of security group "${group.name}" (it has ${group.rules.length})`);
    }
    return this.setRules(group.id, group.rules.filter((_, i) => i !== index - 1), expectedRev ?? group.rev);
  }

  /** A group still on a NIC or named by another group's rule is a 409. */
  async deleteGroup(ref: string, expectedRev?: number): Promise<SecurityGroupRecord> {
    const group = await this.findGroup(ref);
    const users = (await this.o.store.net.nics.all()).filter((nic) => nic.groups.includes(group.name));
    if (users.length > 0) {
      const vms = (await this.o.store.vms.getMany(users.map((n) => n.vmId))).map((vm) => vm.name).sort();
      throw errors.conflict(`Cannot delete security group "${group.name}": it is attached to VM(s) ${vms.map((v) => `"${v}"`).join(', ')}`, { group: group.name, vms });
    }
    const referrers = (await this.o.store.net.groups.all()).filter((g) => g.rules.some((r) => r.group === group.name)).map((g) => g.name);
    if (referrers.length > 0) {
      throw errors.conflict(`Cannot delete security group "${group.name}": rules of ${referrers.map((g) => `"${g}"`).join(', ')} refer to it`, { group: group.name, referrers });
    }
    return this.o.store.net.groups.delete(group.id, expectedRev === undefined ? {} : { expectedRev });
  }

  // ------------------------------------------------------------ host rules

  async listHostRules(): Promise<HostRuleRecord[]> {
    return this.o.store.net.hostRules.all();
  }

  async addHostRule(input: HostRuleCreate): Promise<HostRuleRecord> {
    if (!['tcp', 'udp', 'icmp', 'any'].includes(input.protocol)) throw errors.invalid(`Invalid protocol "${String(input.protocol)}": expected tcp, udp, icmp or any`, { field: 'protocol' });
    if (input.ports) {
      if (input.protocol !== 'tcp' && input.protocol !== 'udp') throw errors.invalid(`Invalid host rule: ports need protocol tcp or udp, not "${input.protocol}"`, { field: 'ports' });
      for (const port of [input.ports.from, input.ports.to]) if (!Number.isInteger(port) || port < 1 || port > 65535) throw errors.invalid(`Invalid port ${String(port)}: expected 1 to 65535`, { field: 'ports' });
      if (input.ports.from > input.ports.to) throw errors.invalid(`Invalid port range ${input.ports.from}-${input.ports.to}: the start is after the end`, { field: 'ports' });
    }
    if (input.cidr !== undefined) {
      try {
        net.parseCidr(input.cidr, 'cidr');
      } catch (error) {
        inputError(error, 'cidr');
      }
    }
    if (input.action !== 'accept' && input.action !== 'drop') throw errors.invalid(`Invalid action "${String(input.action)}": expected accept or drop`, { field: 'action' });
    const network = input.network === undefined ? undefined : await this.networkRef(this.o.store, input.network, 'network');
    const rule = await this.o.store.net.hostRules.create({ networkId: network?.id ?? null, protocol: input.protocol, ports: input.ports ?? null, cidr: input.cidr ?? null, action: input.action });
    await this.pushAll();
    return rule;
  }

  async deleteHostRule(id: string): Promise<HostRuleRecord> {
    const rule = await this.o.store.net.hostRules.delete(id);
    await this.pushAll();
    return rule;
  }

  // ------------------------------------------------------------ VM NICs

  /** A network named in a request body: unknown is `invalid` (the request is wrong, not the URL). */
  private async networkRef(store: Store, name: string, field: string): Promise<NetworkRecord> {
    const network = await store.net.networks.tryFind(name);
    if (!network) throw errors.invalid(`No network "${name}"`, { field, value: name });
    return network;
  }

  private async checkGroups(store: Store, groups: readonly string[], field: string): Promise<string[]> {
    const known = new Set((await store.net.groups.all()).map((g) => g.name));
    for (const group of groups) if (!known.has(group)) throw errors.invalid(`No security group "${group}"`, { field, value: group });
    if (new Set(groups).size !== groups.length) throw errors.invalid(`A security group is given twice in ${field}`, { field });
    return [...groups];
  }

  /**
   * Binds a new VM's NICs (VmCreate `networks`), inside the transaction that
   * creates the VM: the networks and groups must exist, a requested address
   * must be a free host address of the subnet, a requested MAC unused;
   * otherwise the first free address and a fresh MAC are allocated (IPAM:
   * `@drover/agent` `net`). Any refusal rolls the VM back too.
   */
  async bindNewVm(tx: Store, vm: Pick<VmRecord, 'id' | 'name'>, requests: readonly VmNetworkAttachment[], settings: Record<string, unknown> = {}): Promise<VmNicRecord[]> {
    if (requests.length === 0) return [];
    try {
      net.checkName(vm.name, 'VM');
    } catch {
      throw errors.invalid(`VM "${vm.name}" cannot have NICs on networks: its name must be 1 to 31 characters of a-z, 0-9 and "-", starting with a letter`, { field: 'name' });
    }
    const allNics = await tx.net.nics.all();
    const macs = new Set(allNics.map((n) => n.mac));
    const made: VmNicRecord[] = [];
    for (const [index, request] of requests.entries()) {
      const field = `networks[${index}]`;
      const network = await this.networkRef(tx, request.network, `${field}.network`);
      const groups = await this.checkGroups(tx, request.securityGroups ?? [], `${field}.securityGroups`);
      const taken = [...allNics, ...made].filter((n) => n.networkId === network.id).map((n) => n.ip);
      const reserved = reservedHostAddresses(network);
      let ip: string;
      if (request.ip !== undefined) {
        try {
          net.parseIPv4(request.ip, 'address');
          if (reserved.includes(request.ip)) throw errors.invalid(`Address "${request.ip}" is the gateway or kept for a host on network "${network.name}"`, { field: `${field}.ip` });
          ip = net.checkRequestedAddress(network.subnet, request.ip, taken);
        } catch (error) {
          inputError(error, `${field}.ip`);
        }
      } else {
        ip = net.allocateAddress(network.subnet, taken, reserved);
      }
      let mac: string;
      if (request.mac !== undefined) {
        if ((parseInt(request.mac.slice(0, 2), 16) & 1) === 1) throw errors.invalid(`MAC address "${request.mac}" is a multicast address`, { field: `${field}.mac` });
        if (macs.has(request.mac)) throw errors.conflict(`MAC address "${request.mac}" is already in use`, { field: `${field}.mac`, mac: request.mac });
        mac = request.mac;
      } else {
        mac = net.allocateMac(macs);
      }
      macs.add(mac);
      made.push(await tx.net.nics.create({ vmId: vm.id, nicIndex: index, networkId: network.id, mac, ip, tap: tapName(vm.id, index), groups, settings }));
    }
    return made;
  }

  async nicsOf(vmId: string): Promise<VmNicRecord[]> {
    return this.o.store.net.nics.ofVm(vmId);
  }

  /** The agent's NICs of a VM: taps, in NIC order (eth0, eth1, …). */
  async agentNics(vmId: string): Promise<Array<{ mode: 'tap'; tap: string; mac: string }>> {
    return (await this.nicsOf(vmId)).map((nic) => ({ mode: 'tap' as const, tap: nic.tap, mac: nic.mac }));
  }

  async publicNics(vmId: string): Promise<VmNicView[]> {
    const nics = await this.nicsOf(vmId);
    const networks = new Map((await this.o.store.net.networks.getMany(nics.map((n) => n.networkId))).map((n) => [n.id, n.name]));
    return nics.map((nic) => ({ index: nic.nicIndex, nic: `eth${nic.nicIndex}`, network: networks.get(nic.networkId) ?? nic.networkId, mac: nic.mac, ip: nic.ip, tap: nic.tap, securityGroups: nic.groups, rev: nic.rev }));
  }

  /** Attaches/detaches security groups: the NIC gets exactly `groups`; its host is pushed at once when the VM runs. */
  async setNicGroups(vm: VmRecord, index: number, groups: readonly string[], expectedRev?: number): Promise<VmNicRecord> {
    const nic = (await this.nicsOf(vm.id)).find((n) => n.nicIndex === index);
    if (!nic) throw errors.notFound('NIC', `eth${index} of VM "${vm.name}"`);
    const checked = await this.checkGroups(this.o.store, groups, 'securityGroups');
    const updated = await this.o.store.net.nics.update(nic.id, { groups: checked }, expectedRev === undefined ? {} : { expectedRev });
    await this.pushAll();
    return updated;
  }

  /** Settings the metadata service hands the VM (`/drover.json`): update channel, lab settings, … merged into every NIC of it. */
  async setVmSettings(vmId: string, settings: Record<string, unknown>): Promise<void> {
    for (const nic of await this.nicsOf(vmId)) await this.o.store.net.nics.update(nic.id, { settings: { ...nic.settings, ...settings } });
  }

  // ------------------------------------------------------------ host state

  /**
   * Where each VM with NICs is now: its host while it holds one (running,
   * starting, migrating, …) plus the host of its reservation (a start or an
   * incoming migration), so a migration's destination is prepared before the
   * switchover and the source keeps the VM until it is confirmed gone.
   */
  private async placements(store: Store = this.o.store, without?: { vmId: string; hostId?: string }): Promise<{ nics: VmNicRecord[]; vms: Map<string, VmRecord>; placements: Map<string, Set<string>> }> {
    const nics = await store.net.nics.all();
    const vms = new Map((await store.vms.getMany(nics.map((n) => n.vmId))).map((vm) => [vm.id, vm]));
    const reservations = await listEvery((q) => store.reservations.list(q));
    const placements = new Map<string, Set<string>>();
    for (const vm of vms.values()) {
      const on = new Set<string>();
      if (vm.hostId && this.o.holdingStates.includes(vm.state)) on.add(vm.hostId);
      for (const r of reservations) if (r.vmId === vm.id) on.add(r.hostId);
      if (without && without.vmId === vm.id) {
        if (without.hostId) on.delete(without.hostId);
        else on.clear();
      }
      if (on.size > 0) placements.set(vm.id, on);
    }
    return { nics, vms, placements };
  }

  /**
   * The whole network state of one host: the networks of the VMs on it (with
   * VXLAN to the other hosts running VMs of the same network), their NICs,
   * the groups they use and the groups those refer to, the addresses of group
   * members on other hosts, the host rules, and each VM's metadata.
   * `without` leaves a VM out (it has just stopped or left).
   */
  async hostState(hostId: string, without?: { vmId: string; hostId?: string }): Promise<NetworkStateBody> {
    const store = this.o.store;
    const { nics, vms, placements } = await this.placements(store, without);
    const hosts = (await listEvery((q) => store.hosts.list(q))).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const host = hosts.find((h) => h.id === hostId);
    if (!host) throw errors.notFound('host', hostId);
    const local = nics.filter((nic) => placements.get(nic.vmId)?.has(hostId)).sort((a, b) => (a.vmId + a.nicIndex < b.vmId + b.nicIndex ? -1 : 1));
    const networks = new Map((await store.net.networks.all()).map((n) => [n.id, n]));
    const allGroups = new Map((await store.net.groups.all()).map((g) => [g.name, g]));

    const state: NetworkStateBody = { networks: [], groups: [], nics: [], hostRules: [], groupMembers: {}, metadata: {} };
    const localNetworks = [...new Set(local.map((n) => n.networkId))].map((id) => networks.get(id)!).sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const network of localNetworks) {
      const on = new Set(nics.filter((n) => n.networkId === network.id).flatMap((n) => [...(placements.get(n.vmId) ?? [])]));
      const spanning = hosts.filter((h) => on.has(h.id));
      const spec: NetworkStateBody['networks'][number] = {
        name: network.name,
        kind: network.kind as 'bridged' | 'nat' | 'isolated',
        subnet: network.subnet,
        gateway: network.gateway,
        bridge: `dbr${network.vni}`,
        ...(network.uplink && network.kind !== 'isolated' ? { uplink: network.uplink } : {}),
        ...(network.mtu ? { mtu: network.mtu } : {}),
      };
      if (spanning.length > 1) {
        // One host (the first by name) holds the gateway; the others take a kept address at the top of the subnet, by their place among all hosts.
        if (spanning[0]!.id !== hostId) {
          const slot = hosts.findIndex((h) => h.id === hostId);
          const kept = reservedHostAddresses(network).slice(1);
          if (slot >= kept.length) throw errors.conflict(`Network "${network.name}" keeps ${kept.length} host addresses; host "${host.name}" is number ${slot + 1}`, { network: network.name });
          spec.hostAddress = kept[slot]!;
        }
        spec.vxlan = { vni: network.vni, local: hostIp(host), remotes: spanning.filter((h) => h.id !== hostId).map(hostIp), device: `dvx${network.vni}` };
      }
      state.networks.push(spec);
    }
    // The groups the local NICs use, and the groups their rules refer to (transitively).
    const wanted = new Set<string>();
    const visit = (name: string) => {
      const group = allGroups.get(name);
      if (!group || wanted.has(name)) return;
      wanted.add(name);
      for (const rule of group.rules) if (rule.group) visit(rule.group);
    };
    for (const nic of local) for (const group of nic.groups) visit(group);
    for (const name of [...wanted].sort()) state.groups.push({ name, rules: allGroups.get(name)!.rules });

    for (const nic of local) {
      const vm = vms.get(nic.vmId)!;
      state.nics.push({ vm: vm.name, nic: `eth${nic.nicIndex}`, network: networks.get(nic.networkId)!.name, tap: nic.tap, mac: nic.mac, ip: nic.ip, groups: nic.groups });
      const spec = vm.spec as { cloudInit?: { userData?: string } };
      const previous = state.metadata![vm.name];
      state.metadata![vm.name] = {
        instanceId: vm.id,
        hostname: vm.name,
        ...(spec.cloudInit?.userData ? { userData: spec.cloudInit.userData } : {}),
        settings: { ...(previous?.settings ?? {}), ...nic.settings },
      };
    }
    // Members of referenced groups on other hosts (local ones the agent adds itself).
    const referenced = new Set(state.groups.flatMap((g) => g.rules.flatMap((r) => (r.group ? [r.group] : []))));
    for (const group of [...referenced].sort()) {
      const members = nics.filter((nic) => nic.groups.includes(group) && placements.has(nic.vmId) && !placements.get(nic.vmId)!.has(hostId)).map((nic) => nic.ip);
      if (members.length > 0) state.groupMembers![group] = [...new Set(members)].sort();
    }
    const localNames = new Set(localNetworks.map((n) => n.id));
    for (const rule of await store.net.hostRules.all()) {
      if (rule.networkId !== null && !localNames.has(rule.networkId)) continue;
      state.hostRules.push({
        ...(rule.networkId ? { network: networks.get(rule.networkId)!.name } : {}),
        protocol: rule.protocol as 'tcp',
        ...(rule.ports ? { ports: rule.ports } : {}),
        ...(rule.cidr ? { cidr: rule.cidr } : {}),
        action: rule.action as 'accept' | 'drop',
      });
    }
    if (state.networks.length === 0) state.hostRules = [];
    return state;
  }

  /** Computes the host's state and PUTs it to its agent (one at a time per host). */
  async pushHost(hostId: string, without?: { vmId: string; hostId?: string }): Promise<void> {
    const previous = this.pushes.get(hostId) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(async () => {
      const host = await this.o.store.hosts.tryGet(hostId);
      if (!host) return;
      const state = await this.hostState(hostId, without);
      await this.o.link.call(host, 'PUT', '/v1/network-state', state, 120_000);
    });
    this.pushes.set(hostId, next);
    try {
      await next;
    } finally {
      if (this.pushes.get(hostId) === next) this.pushes.delete(hostId);
    }
  }

  /** Pushes every host that runs a VM with NICs (after a group, rule or network change); a host that fails is logged. */
  async pushAll(): Promise<void> {
    const { placements } = await this.placements();
    const hostIds = new Set([...placements.values()].flatMap((on) => [...on]));
    await Promise.all([...hostIds].map((id) => this.pushHost(id).catch((error: unknown) => this.o.logger.warn({ host: id, err: error }, 'pushing the network state failed'))));
  }

  /** Whether the VM has NICs on networks (its hosts need pushing when it comes and goes). */
  async hasNics(vmId: string): Promise<boolean> {
    return (await this.nicsOf(vmId)).length > 0;
  }

  // ------------------------------------------------------------ explain

  /** The VM's effective rules: per NIC the defaults, the rules of its groups (group peers with their addresses), the host rules, and the lines loaded on its host. */
  async explain(vm: VmRecord): Promise<FirewallExplain> {
    const store = this.o.store;
    const nics = await this.nicsOf(vm.id);
    const networks = new Map((await store.net.networks.all()).map((n) => [n.id, n]));
    const groups = new Map((await store.net.groups.all()).map((g) => [g.name, g]));
    const { nics: all, placements } = await this.placements();
    const host = vm.hostId ? await store.hosts.tryGet(vm.hostId) : undefined;
    const membersOf = (group: string) => [...new Set(all.filter((n) => n.groups.includes(group) && placements.has(n.vmId)).map((n) => n.ip))].sort();
    const explained: FirewallExplain['nics'] = nics.map((nic) => {
      const network = networks.get(nic.networkId)!;
      const rules = nic.groups.flatMap((g) => (groups.get(g)?.rules ?? []).map((rule) => ({ group: g, rule })));
      const render = ({ group, rule }: { group: string; rule: SecurityGroupRuleRecord }) => ({
        group,
        direction: rule.direction,
        protocol: rule.protocol,
        ...(describePorts(rule) ? { ports: describePorts(rule)! } : {}),
        ...(rule.icmpType !== undefined ? { icmpType: rule.icmpType } : {}),
        peer: rule.cidr ?? (rule.group ? `group ${rule.group} (${membersOf(rule.group).join(', ') || 'no members'})` : 'anywhere'),
        ...(rule.description ? { description: rule.description } : {}),
      });
      const ingress = rules.filter((r) => r.rule.direction === 'ingress').map(render);
      const egress = rules.filter((r) => r.rule.direction === 'egress').map(render);
      const ingressDeny = nic.groups.length > 0 || network.kind === 'isolated';
      return {
        nic: `eth${nic.nicIndex}`,
        network: network.name,
        kind: network.kind,
        ip: nic.ip,
        mac: nic.mac,
        tap: nic.tap,
        securityGroups: nic.groups,
        antiSpoofing: `only frames from ${nic.mac} with IPv4 source ${nic.ip} (or DHCP from 0.0.0.0) leave tap ${nic.tap}; IPv6 dropped`,
        ingressDefault: ingressDeny ? (nic.groups.length > 0 ? 'deny (security groups attached)' : 'deny (isolated network)') : 'allow (no security group)',
        egressDefault: egress.length > 0 ? 'deny (the groups have egress rules)' : 'allow',
        ingress,
        egress,
      };
    });
    const hostRules = (await store.net.hostRules.all())
      .filter((r) => r.networkId === null || nics.some((n) => n.networkId === r.networkId))
      .map((r) => `${r.action} ${r.protocol}${r.ports ? ` ${describePorts(r)}` : ''} from ${r.cidr ?? 'anywhere'} on ${r.networkId ? networks.get(r.networkId)?.name : 'every network'} to the host`);
    let ruleset: string[] = [];
    if (host && placements.get(vm.id)?.has(host.id) && nics.length > 0) {
      try {
        const answer = await this.o.link.call<{ script: string }>(host, 'GET', '/v1/network-state/ruleset', undefined, 10_000);
        const needles = nics.flatMap((n) => [`"${n.tap}"`, n.ip, n.mac]);
        ruleset = answer.script.split('\n').filter((line) => needles.some((needle) => line.includes(needle))).map((line) => line.trim());
      } catch (error) {
        this.o.logger.warn({ err: error, host: host.name }, 'cannot read the ruleset of the host');
      }
    }
    const lines = [`VM ${vm.name}: ${vm.state}${host ? ` on ${host.name}` : ''}`];
    if (explained.length === 0) lines.push('  no NICs on Drover networks');
    for (const nic of explained) {
      lines.push(`${nic.nic}  network ${nic.network} (${nic.kind})  ip ${nic.ip}  mac ${nic.mac}  tap ${nic.tap}  groups ${nic.securityGroups.join(',') || '-'}`);
      lines.push(`  anti-spoofing: ${nic.antiSpoofing}`);
      const show = (rule: FirewallExplain['nics'][number]['ingress'][number], dir: string) =>
        `    allow ${rule.protocol}${rule.ports ? ` port ${rule.ports}` : ''}${rule.icmpType !== undefined ? ` type ${rule.icmpType}` : ''} ${dir} ${rule.peer}  [${rule.group}]${rule.description ? ` ${rule.description}` : ''}`;
      lines.push(`  ingress: default ${nic.ingressDefault}`, ...nic.ingress.map((r) => show(r, 'from')));
      lines.push(`  egress: default ${nic.egressDefault}; replies to allowed connections always pass`, ...nic.egress.map((r) => show(r, 'to')));
    }
    lines.push('host: DHCP and metadata (169.254.169.254:80) allowed, then:', ...hostRules.map((r) => `  ${r}`), '  drop everything else to the host');
    if (ruleset.length > 0) lines.push(`loaded on ${host!.name}:`, ...ruleset.map((l) => `  ${l}`));
    return { vm: vm.name, state: vm.state, host: host?.name ?? null, nics: explained, hostRules, ruleset, text: lines.join('\n') + '\n' };
  }
}

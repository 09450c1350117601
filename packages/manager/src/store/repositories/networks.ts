import { errors } from '@drover/core';
import { column } from '../record-codec.js';
import type { StoreContext } from '../store-context.js';
import { listEvery } from '../paging.js';
import type { UpdateOptions } from '../types.js';
import { EntityRepository, NamedEntityRepository } from './entity-repository.js';
import { checkNotEmpty } from './field-checks.js';
import { filterBy, type FilterSpec } from './list-filters.js';

// ---------------------------------------------------------------- records

const networkKinds = ['bridged', 'nat', 'isolated'] as const;

/** A Drover network (networks/network.service.ts). */
export interface NetworkRecord {
  id: string;
  name: string;
  kind: string;
  subnet: string;
  gateway: string;
  uplink: string | null;
  mtu: number | null;
  /** VXLAN id, allocated at creation, used while the network spans hosts. */
  vni: number;
  labels: Record<string, string>;
  owner: string;
  /** The lab the network belongs to (labs make their own isolated networks). */
  lab: string | null;
  rev: number;
  createdAt: string;
  updatedAt: string;
}

/** One rule of a security group, as the agent takes it (`SecurityGroupRule`). */
export interface SecurityGroupRuleRecord {
  direction: 'ingress' | 'egress';
  protocol: 'tcp' | 'udp' | 'icmp' | 'any';
  ports?: { from: number; to: number };
  icmpType?: number;
  cidr?: string;
  group?: string;
  description?: string;
}

export interface SecurityGroupRecord {
  id: string;
  name: string;
  description: string;
  /** The rules, written whole with the group's rev. */
  rules: SecurityGroupRuleRecord[];
  owner: string;
  lab: string | null;
  rev: number;
  createdAt: string;
  updatedAt: string;
}

/** A VM's NIC on a network: its address, MAC, tap and groups (the VM's `eth<nicIndex>`). */
export interface VmNicRecord {
  id: string;
  vmId: string;
  nicIndex: number;
  networkId: string;
  mac: string;
  ip: string;
  tap: string;
  /** Security group names. */
  groups: string[];
  /** What the metadata service adds for the VM (update channel, lab settings, …). */
  settings: Record<string, unknown>;
  rev: number;
  createdAt: string;
  updatedAt: string;
}

/** A rule about traffic from VM networks (one, or all when networkId is null) to the hosts. */
export interface HostRuleRecord {
  id: string;
  networkId: string | null;
  protocol: string;
  ports: { from: number; to: number } | null;
  cidr: string | null;
  action: string;
  createdAt: string;
}

// ---------------------------------------------------------------- repositories

const oneOf = (kind: string, field: string, value: unknown, allowed: readonly string[]) => {
  if (value !== undefined && !allowed.includes(String(value))) {
    throw errors.invalid(`Invalid ${kind} ${field} "${String(value)}": expected one of ${allowed.join(', ')}`, { field });
  }
};
const versionColumns = { rev: column.integer('rev'), createdAt: column.timestamp('created_at'), updatedAt: column.timestamp('updated_at') };
/** Who made a network or a security group, and the lab it belongs to (none outside a lab). */
const labOwnedColumns = { owner: column.text('owner'), lab: column.text('lab', { nullable: true }) };
/** Networks and security groups are listed by lab. */
const byLab: FilterSpec<{ lab?: string }> = { lab: filterBy.equals('lab') };

export class NetworkRepository extends NamedEntityRepository<NetworkRecord, { lab?: string }> {
  constructor(context: StoreContext) {
    super(context, {
      table: 'networks',
      kind: 'network',
      fields: {
        id: column.id('id'),
        name: column.text('name'),
        kind: column.text('kind'),
        subnet: column.text('subnet'),
        gateway: column.text('gateway'),
        uplink: column.text('uplink', { nullable: true }),
        mtu: column.integer('mtu', { nullable: true }),
        vni: column.integer('vni'),
        labels: column.json('labels'),
        ...labOwnedColumns,
        ...versionColumns,
      },
      order: ['name', 'id'],
      filters: byLab,
      references: [],
      versioned: true,
      validate: (v) => {
        checkNotEmpty('network', 'name', v.name);
        oneOf('network', 'kind', v.kind, networkKinds);
      },
    });
  }

  async create(input: Omit<NetworkRecord, 'id' | 'rev' | 'createdAt' | 'updatedAt'>): Promise<NetworkRecord> {
    return this.insert({ ...this.newIdentity(), ...input });
  }

  async update(id: string, patch: Partial<Pick<NetworkRecord, 'mtu' | 'labels'>>, options: UpdateOptions = {}): Promise<NetworkRecord> {
    return this.patch(id, patch, options);
  }

  async all(filter: { lab?: string } = {}): Promise<NetworkRecord[]> {
    return listEvery((query) => this.list(query), filter);
  }
}

export class SecurityGroupRepository extends NamedEntityRepository<SecurityGroupRecord, { lab?: string }> {
  constructor(context: StoreContext) {
    super(context, {
      table: 'security_groups',
      kind: 'security group',
      fields: {
        id: column.id('id'),
        name: column.text('name'),
        description: column.text('description'),
        rules: column.json('rules'),
        ...labOwnedColumns,
        ...versionColumns,
      },
      order: ['name', 'id'],
      filters: byLab,
      references: [],
      versioned: true,
      validate: (v) => {
        checkNotEmpty('security group', 'name', v.name);
        if (v.rules !== undefined && !Array.isArray(v.rules)) throw errors.invalid('Security group rules must be a list', { field: 'rules' });
      },
    });
  }

  async create(input: Omit<SecurityGroupRecord, 'id' | 'rev' | 'createdAt' | 'updatedAt'>): Promise<SecurityGroupRecord> {
    return this.insert({ ...this.newIdentity(), ...input });
  }

  async update(id: string, patch: Partial<Pick<SecurityGroupRecord, 'rules' | 'description'>>, options: UpdateOptions = {}): Promise<SecurityGroupRecord> {
    return this.patch(id, patch, options);
  }

  async all(filter: { lab?: string } = {}): Promise<SecurityGroupRecord[]> {
    return listEvery((query) => this.list(query), filter);
  }
}

export interface VmNicFilter {
  vmId?: string;
  networkId?: string;
}

export class VmNicRepository extends EntityRepository<VmNicRecord, VmNicFilter> {
  constructor(context: StoreContext) {
    super(context, {
      table: 'vm_nics',
      kind: 'VM NIC',
      fields: {
        id: column.id('id'),
        vmId: column.id('vm_id'),
        nicIndex: column.integer('nic_index'),
        networkId: column.id('network_id'),
        mac: column.text('mac'),
        ip: column.text('ip'),
        tap: column.text('tap'),
        groups: column.json('groups'),
        settings: column.json('settings'),
        ...versionColumns,
      },
      order: ['id'],
      filters: { vmId: filterBy.reference('vm_id') as never, networkId: filterBy.reference('network_id') as never },
      references: ['vmId', 'networkId'],
      versioned: true,
      validate: (v) => {
        if (v.nicIndex !== undefined && (!Number.isInteger(v.nicIndex) || (v.nicIndex as number) < 0)) throw errors.invalid('Invalid NIC index', { field: 'nicIndex' });
        if (v.groups !== undefined && !Array.isArray(v.groups)) throw errors.invalid('NIC security groups must be a list', { field: 'groups' });
      },
    });
  }

  async create(input: Omit<VmNicRecord, 'id' | 'rev' | 'createdAt' | 'updatedAt'>): Promise<VmNicRecord> {
    return this.insert({ ...this.newIdentity(), ...input });
  }

  async update(id: string, patch: Partial<Pick<VmNicRecord, 'groups' | 'settings'>>, options: UpdateOptions = {}): Promise<VmNicRecord> {
    return this.patch(id, patch, options);
  }

  /** Every NIC (of one VM, of one network, or all), in no particular order. */
  async all(filter: VmNicFilter = {}): Promise<VmNicRecord[]> {
    return listEvery((query) => this.list(query), filter);
  }

  /** A VM's NICs by index. */
  async ofVm(vmId: string): Promise<VmNicRecord[]> {
    return (await this.all({ vmId })).sort((a, b) => a.nicIndex - b.nicIndex);
  }
}

export class HostRuleRepository extends EntityRepository<HostRuleRecord, { networkId?: string }> {
  constructor(context: StoreContext) {
    super(context, {
      table: 'host_rules',
      kind: 'host rule',
      fields: {
        id: column.id('id'),
        networkId: column.id('network_id', { nullable: true }),
        protocol: column.text('protocol'),
        ports: column.json('ports', { nullable: true }),
        cidr: column.text('cidr', { nullable: true }),
        action: column.text('action'),
        createdAt: column.timestamp('created_at'),
      },
      order: ['createdAt', 'id'],
      filters: { networkId: filterBy.reference('network_id') as never },
      references: ['networkId'],
      versioned: false,
      validate: (v) => {
        oneOf('host rule', 'protocol', v.protocol, ['tcp', 'udp', 'icmp', 'any']);
        oneOf('host rule', 'action', v.action, ['accept', 'drop']);
      },
    });
  }

  async create(input: Omit<HostRuleRecord, 'id' | 'createdAt'>): Promise<HostRuleRecord> {
    const { id, createdAt } = this.newIdentity();
    return this.insert({ id, createdAt, ...input });
  }

  async all(): Promise<HostRuleRecord[]> {
    return listEvery((query) => this.list(query));
  }
}

/** The network tables, grouped: `store.net.networks`, `store.net.groups`, `store.net.nics`, `store.net.hostRules`. */
export class NetworkRepositories {
  readonly networks: NetworkRepository;
  readonly groups: SecurityGroupRepository;
  readonly nics: VmNicRepository;
  readonly hostRules: HostRuleRepository;

  constructor(context: StoreContext) {
    this.networks = new NetworkRepository(context);
    this.groups = new SecurityGroupRepository(context);
    this.nics = new VmNicRepository(context);
    this.hostRules = new HostRuleRepository(context);
  }
}

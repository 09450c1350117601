import { errors } from '@drover/core';
import { column, type RecordSpec } from '../record-codec.js';
import type { StoreContext } from '../store-context.js';
import { listEvery } from '../paging.js';
import type { UpdateOptions } from '../types.js';
import { EntityRepository, NamedEntityRepository, type EntityDefinition } from './entity-repository.js';
import { checkNotEmpty, checkRange } from './field-checks.js';
import { filterBy, type FilterSpec } from './list-filters.js';

// ---------------------------------------------------------------- records

/** How an appliance boots: its own disk (firmware), or Drover's appliance kernel and initramfs with this root disk. */
export const bootMethods = ['disk', 'appliance-kernel'] as const;
export type BootMethod = (typeof bootMethods)[number];

/** What the image library knows about an appliance image beyond its file (one per image). */
export interface ApplianceMetadataRecord {
  id: string;
  imageId: string;
  architecture: string;
  bootMethod: string;
  minMemoryMiB: number;
  minCpus: number;
  labels: Record<string, string>;
  createdAt: string;
}

export const vmcastKeyStates = ['active', 'retired', 'revoked'] as const;
/** A publisher's Ed25519 key: `active` signs new releases, `retired` still verifies old ones, `revoked` verifies nothing. */
export interface VmcastKeyRecord {
  id: string;
  name: string;
  /** SPKI PEM. */
  publicKey: string;
  /** PKCS#8 PEM; never leaves the manager. */
  privateKey: string;
  state: string;
  rev: number;
  createdAt: string;
  updatedAt: string;
}

/** A channel this manager publishes. */
export interface VmcastChannelRecord {
  id: string;
  name: string;
  title: string;
  description: string;
  rev: number;
  createdAt: string;
  updatedAt: string;
}

/** A pinned publisher key: its id (sha256 of the SPKI DER) and PEM; `revoked` ones refuse what they signed. */
export interface PinnedKey {
  keyId: string;
  publicKey: string;
  revoked?: boolean;
}

/** Another manager's (or any publisher's) feed, polled here; its name is the channel local VMs follow. */
export interface VmcastSubscriptionRecord {
  id: string;
  name: string;
  url: string;
  pinnedKeys: PinnedKey[];
  /** Hosts enclosures may come from; empty: any. */
  allowedHosts: string[];
  pollSeconds: number;
  etag: string | null;
  lastModified: string | null;
  failures: number;
  nextPollAt: string | null;
  lastPolledAt: string | null;
  lastError: string | null;
  rev: number;
  createdAt: string;
  updatedAt: string;
}

export const vmcastReleaseStates = ['published', 'available', 'downloading', 'verified', 'quarantined'] as const;
/** One release of a channel: published here (channelId) or received from a subscription (subscriptionId). */
export interface VmcastReleaseRecord {
  id: string;
  channelId: string | null;
  subscriptionId: string | null;
  name: string;
  version: string;
  state: string;
  /** The signed manifest (see vmcasting/manifest.ts). */
  manifest: Record<string, unknown>;
  url: string;
  keyId: string;
  signature: string;
  imageId: string | null;
  reason: string | null;
  receivedBytes: number;
  rev: number;
  createdAt: string;
  updatedAt: string;
}

export const followPolicies = ['auto', 'notify', 'pinned'] as const;
export type FollowPolicy = (typeof followPolicies)[number];
/** The channel (subscription) a VM follows and how. */
export interface VmcastFollowRecord {
  id: string;
  vmId: string;
  subscriptionId: string;
  policy: string;
  held: boolean;
  currentReleaseId: string | null;
  pendingReleaseId: string | null;
  /** UTC "HH:MM-HH:MM" in which an auto update may run; null: any time. */
  maintenanceWindow: string | null;
  rev: number;
  createdAt: string;
  updatedAt: string;
}

// ---------------------------------------------------------------- repositories

const oneOf = (kind: string, field: string, value: unknown, allowed: readonly string[]) => {
  if (value !== undefined && !allowed.includes(String(value))) {
    throw errors.invalid(`Invalid ${kind} ${field} "${String(value)}": expected one of ${allowed.join(', ')}`, { field });
  }
};

/** The columns that end every versioned VMcasting record. */
const versionColumns = { rev: column.integer('rev'), createdAt: column.timestamp('created_at'), updatedAt: column.timestamp('updated_at') };

/** The columns a release and a package of a channel (or of a subscription) both start with. */
const channelItemColumns = {
  id: column.id('id'),
  channelId: column.id('channel_id', { nullable: true }),
  subscriptionId: column.id('subscription_id', { nullable: true }),
  name: column.text('name'),
  version: column.text('version'),
  state: column.text('state'),
  manifest: column.json('manifest'),
};

/** How the releases and the packages of a channel or a subscription are listed. */
const channelItemFilters: FilterSpec<VmcastReleaseFilter> = {
  channelId: filterBy.reference('channel_id'),
  subscriptionId: filterBy.reference('subscription_id'),
  state: filterBy.equals('state'),
  name: filterBy.equals('name'),
};

/** Checks a release or a package of a channel: a name, a version and one of `states`. */
function checkChannelItem(kind: string, states: readonly string[]): (v: { name?: unknown; version?: unknown; state?: unknown }) => void {
  return (v) => {
    checkNotEmpty(kind, 'name', v.name);
    checkNotEmpty(kind, 'version', v.version);
    oneOf(kind, 'state', v.state, states);
  };
}

const metadataDefinition: EntityDefinition<ApplianceMetadataRecord, { imageId?: string }> = {
  table: 'appliance_metadata',
  kind: 'appliance metadata',
  fields: {
    id: column.id('id'),
    imageId: column.id('image_id'),
    architecture: column.text('architecture'),
    bootMethod: column.text('boot_method'),
    minMemoryMiB: column.integer('min_memory_mib'),
    minCpus: column.integer('min_cpus'),
    labels: column.json('labels'),
    createdAt: column.timestamp('created_at'),
  },
  order: ['id'],
  filters: { imageId: filterBy.reference('image_id') as never },
  references: ['imageId'],
  versioned: false,
  validate: (v) => {
    checkNotEmpty('appliance metadata', 'architecture', v.architecture);
    oneOf('appliance metadata', 'bootMethod', v.bootMethod, bootMethods);
    checkRange('appliance metadata', 'minMemoryMiB', v.minMemoryMiB, 1);
    checkRange('appliance metadata', 'minCpus', v.minCpus, 1);
  },
};

export class ApplianceMetadataRepository extends EntityRepository<ApplianceMetadataRecord, { imageId?: string }> {
  constructor(context: StoreContext) {
    super(context, metadataDefinition);
  }

  async create(input: Omit<ApplianceMetadataRecord, 'id' | 'createdAt'>): Promise<ApplianceMetadataRecord> {
    const { id, createdAt } = this.newIdentity();
    return this.insert({ id, createdAt, ...input });
  }

  async byImage(imageId: string): Promise<ApplianceMetadataRecord | undefined> {
    return this.tryGetWhere({ imageId });
  }
}

const keyFields: RecordSpec<VmcastKeyRecord> = {
  id: column.id('id'),
  name: column.text('name'),
  publicKey: column.text('public_key'),
  privateKey: column.text('private_key'),
  state: column.text('state'),
  ...versionColumns,
};

export class VmcastKeyRepository extends NamedEntityRepository<VmcastKeyRecord, { state?: string }> {
  constructor(context: StoreContext) {
    super(context, {
      table: 'vmcast_keys',
      kind: 'publisher key',
      fields: keyFields,
      order: ['name', 'id'],
      filters: { state: filterBy.equals('state') as never },
      references: [],
      versioned: true,
      validate: (v) => {
        checkNotEmpty('publisher key', 'name', v.name);
        oneOf('publisher key', 'state', v.state, vmcastKeyStates);
      },
    });
  }

  async create(input: Pick<VmcastKeyRecord, 'name' | 'publicKey' | 'privateKey' | 'state'>): Promise<VmcastKeyRecord> {
    return this.insert({ ...this.newIdentity(), ...input });
  }

  async update(id: string, patch: Partial<Pick<VmcastKeyRecord, 'state'>>, options: UpdateOptions = {}): Promise<VmcastKeyRecord> {
    return this.patch(id, patch, options);
  }
}

export class VmcastChannelRepository extends NamedEntityRepository<VmcastChannelRecord, Record<string, never>> {
  constructor(context: StoreContext) {
    super(context, {
      table: 'vmcast_channels',
      kind: 'channel',
      fields: {
        id: column.id('id'),
        name: column.text('name'),
        title: column.text('title'),
        description: column.text('description'),
        ...versionColumns,
      },
      order: ['name', 'id'],
      filters: {},
      references: [],
      versioned: true,
      validate: (v) => checkNotEmpty('channel', 'name', v.name),
    });
  }

  async create(input: Pick<VmcastChannelRecord, 'name' | 'title' | 'description'>): Promise<VmcastChannelRecord> {
    return this.insert({ ...this.newIdentity(), ...input });
  }
}

export class VmcastSubscriptionRepository extends NamedEntityRepository<VmcastSubscriptionRecord, Record<string, never>> {
  constructor(context: StoreContext) {
    super(context, {
      table: 'vmcast_subscriptions',
      kind: 'subscription',
      fields: {
        id: column.id('id'),
        name: column.text('name'),
        url: column.text('url'),
        pinnedKeys: column.json('pinned_keys'),
        allowedHosts: column.json('allowed_hosts'),
        pollSeconds: column.integer('poll_seconds'),
        etag: column.text('etag', { nullable: true }),
        lastModified: column.text('last_modified', { nullable: true }),
        failures: column.integer('failures'),
        nextPollAt: column.timestamp('next_poll_at', { nullable: true }),
        lastPolledAt: column.timestamp('last_polled_at', { nullable: true }),
        lastError: column.text('last_error', { nullable: true }),
        ...versionColumns,
      },
      order: ['name', 'id'],
      filters: {},
      references: [],
      versioned: true,
      validate: (v) => {
        checkNotEmpty('subscription', 'name', v.name);
        checkRange('subscription', 'pollSeconds', v.pollSeconds, 1);
      },
    });
  }

  async create(input: Pick<VmcastSubscriptionRecord, 'name' | 'url' | 'pinnedKeys' | 'allowedHosts' | 'pollSeconds'>): Promise<VmcastSubscriptionRecord> {
    return this.insert({ ...this.newIdentity(), etag: null, lastModified: null, failures: 0, nextPollAt: null, lastPolledAt: null, lastError: null, ...input });
  }

  async update(id: string, patch: Partial<Omit<VmcastSubscriptionRecord, 'id' | 'rev' | 'createdAt' | 'updatedAt'>>, options: UpdateOptions = {}): Promise<VmcastSubscriptionRecord> {
    return this.patch(id, patch, options);
  }
}

export interface VmcastReleaseFilter {
  channelId?: string;
  subscriptionId?: string;
  state?: string | string[];
  name?: string;
}

export class VmcastReleaseRepository extends EntityRepository<VmcastReleaseRecord, VmcastReleaseFilter> {
  constructor(context: StoreContext) {
    super(context, {
      table: 'vmcast_releases',
      kind: 'release',
      fields: {
        ...channelItemColumns,
        url: column.text('url'),
        keyId: column.text('key_id'),
        signature: column.text('signature'),
        imageId: column.id('image_id', { nullable: true }),
        reason: column.text('reason', { nullable: true }),
        receivedBytes: column.integer('received_bytes'),
        ...versionColumns,
      },
      order: ['createdAt', 'id'],
      filters: channelItemFilters,
      references: ['channelId', 'subscriptionId', 'imageId'],
      versioned: true,
      validate: checkChannelItem('release', vmcastReleaseStates),
    });
  }

  async create(input: Omit<VmcastReleaseRecord, 'id' | 'rev' | 'createdAt' | 'updatedAt'>): Promise<VmcastReleaseRecord> {
    return this.insert({ ...this.newIdentity(), ...input });
  }

  async update(id: string, patch: Partial<Pick<VmcastReleaseRecord, 'state' | 'imageId' | 'reason' | 'receivedBytes'>>, options: UpdateOptions = {}): Promise<VmcastReleaseRecord> {
    return this.patch(id, patch, options);
  }

  /** Every release of a channel or a subscription, oldest first. */
  async all(filter: VmcastReleaseFilter): Promise<VmcastReleaseRecord[]> {
    return listEvery((query) => this.list(query), filter);
  }
}

export class VmcastFollowRepository extends EntityRepository<VmcastFollowRecord, { subscriptionId?: string }> {
  constructor(context: StoreContext) {
    super(context, {
      table: 'vmcast_follows',
      kind: 'follow',
      fields: {
        id: column.id('id'),
        vmId: column.id('vm_id'),
        subscriptionId: column.id('subscription_id'),
        policy: column.text('policy'),
        held: column.boolean('held'),
        currentReleaseId: column.id('current_release_id', { nullable: true }),
        pendingReleaseId: column.id('pending_release_id', { nullable: true }),
        maintenanceWindow: column.text('maintenance_window', { nullable: true }),
        ...versionColumns,
      },
      order: ['id'],
      filters: { subscriptionId: filterBy.reference('subscription_id') as never },
      references: ['vmId', 'subscriptionId'],
      versioned: true,
      validate: (v) => oneOf('follow', 'policy', v.policy, followPolicies),
    });
  }

  async create(input: Pick<VmcastFollowRecord, 'vmId' | 'subscriptionId' | 'policy' | 'held' | 'currentReleaseId' | 'maintenanceWindow'>): Promise<VmcastFollowRecord> {
    return this.insert({ ...this.newIdentity(), pendingReleaseId: null, ...input });
  }

  async update(id: string, patch: Partial<Pick<VmcastFollowRecord, 'policy' | 'held' | 'currentReleaseId' | 'pendingReleaseId' | 'subscriptionId' | 'maintenanceWindow'>>, options: UpdateOptions = {}): Promise<VmcastFollowRecord> {
    return this.patch(id, patch, options);
  }

  async byVm(vmId: string): Promise<VmcastFollowRecord | undefined> {
    return this.tryGetWhere({ vmId });
  }

  async all(filter: { subscriptionId?: string } = {}): Promise<VmcastFollowRecord[]> {
    return (await this.list({ limit: 1000, filter })).items;
  }
}

export const vmcastPackageStates = ['published', 'available', 'verified', 'quarantined'] as const;
/** A package of a channel (a signed tar.gz with an install script): published here (channelId) or received (subscriptionId). */
export interface VmcastPackageRecord {
  id: string;
  channelId: string | null;
  subscriptionId: string | null;
  name: string;
  version: string;
  state: string;
  /** The signed manifest (see vmcasting/manifest.ts, `PackageManifest`). */
  manifest: Record<string, unknown>;
  sha256: string;
  sizeBytes: number;
  url: string;
  keyId: string;
  signature: string;
  reason: string | null;
  rev: number;
  createdAt: string;
  updatedAt: string;
}

export interface VmcastPackageFilter {
  channelId?: string;
  subscriptionId?: string;
  state?: string | string[];
  name?: string;
}

export class VmcastPackageRepository extends EntityRepository<VmcastPackageRecord, VmcastPackageFilter> {
  constructor(context: StoreContext) {
    super(context, {
      table: 'vmcast_packages',
      kind: 'package',
      fields: {
        ...channelItemColumns,
        sha256: column.text('sha256'),
        sizeBytes: column.integer('size_bytes'),
        url: column.text('url'),
        keyId: column.text('key_id'),
        signature: column.text('signature'),
        reason: column.text('reason', { nullable: true }),
        ...versionColumns,
      },
      order: ['createdAt', 'id'],
      filters: channelItemFilters,
      references: ['channelId', 'subscriptionId'],
      versioned: true,
      validate: checkChannelItem('package', vmcastPackageStates),
    });
  }

  async create(input: Omit<VmcastPackageRecord, 'id' | 'rev' | 'createdAt' | 'updatedAt'>): Promise<VmcastPackageRecord> {
    return this.insert({ ...this.newIdentity(), ...input });
  }

  async update(id: string, patch: Partial<Pick<VmcastPackageRecord, 'state' | 'reason' | 'keyId' | 'signature'>>, options: UpdateOptions = {}): Promise<VmcastPackageRecord> {
    return this.patch(id, patch, options);
  }

  /** Every package of a channel or a subscription, oldest first. */
  async all(filter: VmcastPackageFilter): Promise<VmcastPackageRecord[]> {
    return listEvery((query) => this.list(query), filter);
  }
}

/** A package name and version (what a guest has, or is offered). */
export interface PackageVersionEntry {
  name: string;
  version: string;
}

/** One VM's packages: approvals (notify), the offer last pushed and where, and the guest's last report. */
export interface VmPackagesRecord {
  id: string;
  vmId: string;
  /** Package name → the version the operator approved (notify policy). */
  approved: Record<string, string>;
  offered: PackageVersionEntry[];
  installed: PackageVersionEntry[];
  reportedAt: string | null;
  pushedHostId: string | null;
  pushedAt: string | null;
  rev: number;
  createdAt: string;
  updatedAt: string;
}

type VmPackagesPatch = Partial<Pick<VmPackagesRecord, 'approved' | 'offered' | 'installed' | 'reportedAt' | 'pushedHostId' | 'pushedAt'>>;

export class VmPackagesRepository extends EntityRepository<VmPackagesRecord, Record<string, never>> {
  constructor(context: StoreContext) {
    super(context, {
      table: 'vm_packages',
      kind: 'VM packages',
      fields: {
        id: column.id('id'),
        vmId: column.id('vm_id'),
        approved: column.json('approved'),
        offered: column.json('offered'),
        installed: column.json('installed'),
        reportedAt: column.timestamp('reported_at', { nullable: true }),
        pushedHostId: column.id('pushed_host_id', { nullable: true }),
        pushedAt: column.timestamp('pushed_at', { nullable: true }),
        ...versionColumns,
      },
      order: ['id'],
      filters: {},
      references: ['vmId'],
      versioned: true,
      validate: () => undefined,
    });
  }

  async byVm(vmId: string): Promise<VmPackagesRecord | undefined> {
    return this.tryGetWhere({ vmId });
  }

  /** The VM's row, made empty when it has none yet, then patched. */
  async put(vmId: string, patch: VmPackagesPatch): Promise<VmPackagesRecord> {
    const existing = await this.byVm(vmId);
    if (existing) return this.patch(existing.id, patch, {});
    return this.insert({ ...this.newIdentity(), vmId, approved: {}, offered: [], installed: [], reportedAt: null, pushedHostId: null, pushedAt: null, ...patch });
  }
}

/** The VMcasting tables, grouped: `store.vmcast.releases`, ... */
export class VmcastRepositories {
  readonly metadata: ApplianceMetadataRepository;
  readonly keys: VmcastKeyRepository;
  readonly channels: VmcastChannelRepository;
  readonly subscriptions: VmcastSubscriptionRepository;
  readonly releases: VmcastReleaseRepository;
  readonly follows: VmcastFollowRepository;
  /** Channel packages (0010_guest_packages). */
  readonly packages: VmcastPackageRepository;
  readonly vmPackages: VmPackagesRepository;

  constructor(context: StoreContext) {
    this.metadata = new ApplianceMetadataRepository(context);
    this.keys = new VmcastKeyRepository(context);
    this.channels = new VmcastChannelRepository(context);
    this.subscriptions = new VmcastSubscriptionRepository(context);
    this.releases = new VmcastReleaseRepository(context);
    this.follows = new VmcastFollowRepository(context);
    this.packages = new VmcastPackageRepository(context);
    this.vmPackages = new VmPackagesRepository(context);
  }
}

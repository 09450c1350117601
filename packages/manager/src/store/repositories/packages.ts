import { errors } from '@drover/core';
import { column } from '../record-codec.js';
import type { StoreContext } from '../store-context.js';
import { listEvery } from '../paging.js';
import { EntityRepository } from './entity-repository.js';
import { checkNotEmpty, checkRange } from './field-checks.js';
import { filterBy } from './list-filters.js';

export const packageSources = ['export', 'import', 'ova', 'vmcast'] as const;

/** An imported appliance package (migration 0008_packages); immutable, like an image. */
export interface PackageRecord {
  id: string;
  name: string;
  version: string;
  description: string | null;
  formatVersion: number;
  /** The EVA manifest (packages/api EvaManifest). */
  manifest: Record<string, unknown>;
  /** The library image id of each file of the manifest, by its path in the package. */
  images: Record<string, string>;
  signerKeyId: string | null;
  source: string;
  origin: string;
  fileSizeBytes: number | null;
  fileSha256: string | null;
  owner: string;
  createdAt: string;
}

export interface PackageFilter {
  exactName?: string;
  name?: string;
}

export class PackageRepository extends EntityRepository<PackageRecord, PackageFilter> {
  constructor(context: StoreContext) {
    super(context, {
      table: 'packages',
      kind: 'package',
      fields: {
        id: column.id('id'),
        name: column.text('name'),
        version: column.text('version'),
        description: column.text('description', { nullable: true }),
        formatVersion: column.integer('format_version'),
        manifest: column.json('manifest'),
        images: column.json('images'),
        signerKeyId: column.text('signer_key_id', { nullable: true }),
        source: column.text('source'),
        origin: column.text('origin'),
        fileSizeBytes: column.integer('file_size_bytes', { nullable: true }),
        fileSha256: column.text('file_sha256', { nullable: true }),
        owner: column.text('owner'),
        createdAt: column.timestamp('created_at'),
      },
      order: ['name', 'id'],
      filters: { exactName: filterBy.equals('name') as never, name: filterBy.contains('name') },
      references: [],
      versioned: false,
      validate: (v) => {
        checkNotEmpty('package', 'name', v.name);
        checkNotEmpty('package', 'version', v.version);
        checkRange('package', 'formatVersion', v.formatVersion, 1);
        if (v.source !== undefined && !packageSources.includes(String(v.source) as never)) {
          throw errors.invalid(`Invalid package source "${String(v.source)}": expected one of ${packageSources.join(', ')}`, { field: 'source' });
        }
        if (v.fileSha256 !== undefined && v.fileSha256 !== null && !/^[0-9a-f]{64}$/.test(String(v.fileSha256))) {
          throw errors.invalid(`Invalid package fileSha256 "${String(v.fileSha256)}": expected 64 lowercase hex digits`, { field: 'fileSha256' });
        }
      },
    });
  }

  async create(input: Omit<PackageRecord, 'id' | 'createdAt'>): Promise<PackageRecord> {
    const { id, createdAt } = this.newIdentity();
    return this.insert({ id, createdAt, ...input });
  }

  /** The release `version` of package `name`, or undefined. */
  async tryRelease(name: string, version: string): Promise<PackageRecord | undefined> {
    return this.tryGetWhere({ name, version });
  }

  async all(): Promise<PackageRecord[]> {
    return listEvery((query) => this.list(query), {});
  }

  protected override labelOf(values: Partial<Record<string, unknown>>): string {
    return values['version'] === undefined ? super.labelOf(values) : `${String(values['name'])}:${String(values['version'])}`;
  }
}

/** A publisher key trusted for packages on this manager. */
export interface PackageTrustedKeyRecord {
  id: string;
  keyId: string;
  name: string;
  publicKey: string;
  createdAt: string;
}

export class PackageTrustedKeyRepository extends EntityRepository<PackageTrustedKeyRecord, { keyId?: string }> {
  constructor(context: StoreContext) {
    super(context, {
      table: 'package_trusted_keys',
      kind: 'trusted package key',
      fields: {
        id: column.id('id'),
        keyId: column.text('key_id'),
        name: column.text('name'),
        publicKey: column.text('public_key'),
        createdAt: column.timestamp('created_at'),
      },
      order: ['name', 'id'],
      filters: { keyId: filterBy.equals('key_id') as never },
      references: [],
      versioned: false,
      validate: (v) => {
        checkNotEmpty('trusted package key', 'name', v.name);
        if (v.keyId !== undefined && !/^[0-9a-f]{64}$/.test(String(v.keyId))) throw errors.invalid(`Invalid key id "${String(v.keyId)}"`, { field: 'keyId' });
      },
    });
  }

  async create(input: Omit<PackageTrustedKeyRecord, 'id' | 'createdAt'>): Promise<PackageTrustedKeyRecord> {
    const { id, createdAt } = this.newIdentity();
    return this.insert({ id, createdAt, ...input });
  }

  /** A key by its key id or its name. */
  async tryFind(ref: string): Promise<PackageTrustedKeyRecord | undefined> {
    return (await this.tryGetWhere({ keyId: ref })) ?? (await this.tryGetWhere({ name: ref }));
  }

  async all(): Promise<PackageTrustedKeyRecord[]> {
    return listEvery((query) => this.list(query), {});
  }
}

import { errors } from '@drover/core';
import { column, type RecordSpec } from '../record-codec.js';
import type { StoreContext } from '../store-context.js';
import type { NewVolume, UpdateOptions, VolumeFilter, VolumePatch, VolumeRecord } from '../types.js';
import { EntityRepository, type EntityDefinition } from './entity-repository.js';
import { checkNotEmpty, checkRange } from './field-checks.js';
import { filterBy } from './list-filters.js';

const fields: RecordSpec<VolumeRecord> = {
  id: column.id('id'),
  poolId: column.id('pool_id'),
  name: column.text('name'),
  hostId: column.id('host_id', { nullable: true }),
  sizeBytes: column.integer('size_bytes'),
  format: column.text('format'),
  backingVolumeId: column.id('backing_volume_id', { nullable: true }),
  vmId: column.id('vm_id', { nullable: true }),
  rev: column.integer('rev'),
  createdAt: column.timestamp('created_at'),
  updatedAt: column.timestamp('updated_at'),
};

const definition: EntityDefinition<VolumeRecord, VolumeFilter> = {
  table: 'volumes',
  kind: 'volume',
  fields,
  order: ['name', 'id'],
  filters: {
    poolId: filterBy.reference('pool_id'),
    hostId: filterBy.reference('host_id'),
    vmId: filterBy.reference('vm_id'),
    backingVolumeId: filterBy.reference('backing_volume_id'),
    name: filterBy.contains('name'),
  },
  references: ['poolId', 'hostId', 'backingVolumeId', 'vmId'],
  versioned: true,
  validate: (values) => {
    checkNotEmpty('volume', 'name', values.name);
    checkNotEmpty('volume', 'format', values.format);
    checkRange('volume', 'sizeBytes', values.sizeBytes, 0);
  },
};

/** Volumes: names are unique within their pool, not globally. */
export class VolumeRepository extends EntityRepository<VolumeRecord, VolumeFilter> {
  constructor(context: StoreContext) {
    super(context, definition);
  }

  async create(input: NewVolume): Promise<VolumeRecord> {
    return this.insert({
      ...this.newIdentity(),
      poolId: input.poolId,
      name: input.name,
      hostId: input.hostId ?? null,
      sizeBytes: input.sizeBytes,
      format: input.format,
      backingVolumeId: input.backingVolumeId ?? null,
      vmId: input.vmId ?? null,
    });
  }

  /** The volume named `name` in pool `poolId`; `not_found` otherwise. */
  async getInPool(poolId: string, name: string): Promise<VolumeRecord> {
    const volume = await this.tryGetWhere({ poolId, name });
    if (volume === undefined) throw errors.notFound('volume', `${poolId}/${name}`);
    return volume;
  }

  async update(id: string, patch: VolumePatch, options?: UpdateOptions): Promise<VolumeRecord> {
    return this.patch(id, patch, options);
  }
}

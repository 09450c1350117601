import { column, type RecordSpec } from '../record-codec.js';
import type { StoreContext } from '../store-context.js';
import type { NewPool, PoolFilter, PoolPatch, PoolRecord, UpdateOptions } from '../types.js';
import { NamedEntityRepository, type EntityDefinition } from './entity-repository.js';
import { checkNotEmpty } from './field-checks.js';
import { filterBy } from './list-filters.js';

const fields: RecordSpec<PoolRecord> = {
  id: column.id('id'),
  name: column.text('name'),
  path: column.text('path'),
  shared: column.boolean('shared'),
  hostIds: column.json('host_ids'),
  rev: column.integer('rev'),
  createdAt: column.timestamp('created_at'),
  updatedAt: column.timestamp('updated_at'),
};

const definition: EntityDefinition<PoolRecord, PoolFilter> = {
  table: 'pools',
  kind: 'pool',
  fields,
  order: ['name', 'id'],
  filters: {
    hostId: filterBy.arrayContains('host_ids'),
    shared: filterBy.flag('shared'),
    name: filterBy.contains('name'),
  },
  references: [],
  versioned: true,
  validate: (values) => {
    checkNotEmpty('pool', 'name', values.name);
    checkNotEmpty('pool', 'path', values.path);
  },
};

export class PoolRepository extends NamedEntityRepository<PoolRecord, PoolFilter> {
  constructor(context: StoreContext) {
    super(context, definition);
  }

  async create(input: NewPool): Promise<PoolRecord> {
    return this.insert({
      ...this.newIdentity(),
      name: input.name,
      path: input.path,
      shared: input.shared ?? false,
      hostIds: input.hostIds ?? [],
    });
  }

  async update(id: string, patch: PoolPatch, options?: UpdateOptions): Promise<PoolRecord> {
    return this.patch(id, patch, options);
  }
}

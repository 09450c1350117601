import { column, type RecordSpec } from '../record-codec.js';
import type { StoreContext } from '../store-context.js';
import type { NewVm, UpdateOptions, VmFilter, VmPatch, VmRecord } from '../types.js';
import { NamedEntityRepository, type EntityDefinition } from './entity-repository.js';
import { checkNotEmpty } from './field-checks.js';
import { filterBy } from './list-filters.js';

const fields: RecordSpec<VmRecord> = {
  id: column.id('id'),
  name: column.text('name'),
  spec: column.json('spec'),
  state: column.text('state'),
  hostId: column.id('host_id', { nullable: true }),
  owner: column.text('owner'),
  labels: column.json('labels'),
  lastError: column.text('last_error', { nullable: true }),
  autostart: column.boolean('autostart'),
  rev: column.integer('rev'),
  createdAt: column.timestamp('created_at'),
  updatedAt: column.timestamp('updated_at'),
};

const definition: EntityDefinition<VmRecord, VmFilter> = {
  table: 'vms',
  kind: 'vm',
  fields,
  order: ['name', 'id'],
  filters: {
    state: filterBy.equals('state'),
    hostId: filterBy.reference('host_id'),
    owner: filterBy.equals('owner'),
    label: filterBy.label('labels'),
    name: filterBy.contains('name'),
  },
  references: ['hostId'],
  versioned: true,
  validate: (values) => {
    checkNotEmpty('vm', 'name', values.name);
    checkNotEmpty('vm', 'state', values.state);
  },
};

export class VmRepository extends NamedEntityRepository<VmRecord, VmFilter> {
  constructor(context: StoreContext) {
    super(context, definition);
  }

  async create(input: NewVm): Promise<VmRecord> {
    return this.insert({
      ...this.newIdentity(),
      name: input.name,
      spec: input.spec,
      state: input.state,
      hostId: input.hostId ?? null,
      owner: input.owner,
      labels: input.labels ?? {},
      lastError: input.lastError ?? null,
      autostart: input.autostart ?? false,
    });
  }

  async update(id: string, patch: VmPatch, options?: UpdateOptions): Promise<VmRecord> {
    return this.patch(id, patch, options);
  }
}

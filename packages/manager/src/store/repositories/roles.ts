import { column, type RecordSpec } from '../record-codec.js';
import type { StoreContext } from '../store-context.js';
import type { NewRole, RoleFilter, RoleRecord } from '../access-types.js';
import type { UpdateOptions } from '../types.js';
import { NamedEntityRepository, type EntityDefinition } from './entity-repository.js';
import { checkNotEmpty } from './field-checks.js';
import { filterBy } from './list-filters.js';

const fields: RecordSpec<RoleRecord> = {
  id: column.id('id'),
  name: column.text('name'),
  description: column.text('description'),
  permissions: column.json('permissions'),
  rev: column.integer('rev'),
  createdAt: column.timestamp('created_at'),
  updatedAt: column.timestamp('updated_at'),
};

const definition: EntityDefinition<RoleRecord, RoleFilter> = {
  table: 'roles',
  kind: 'role',
  fields,
  order: ['name', 'id'],
  filters: { name: filterBy.contains('name') },
  references: [],
  versioned: true,
  validate: (values) => checkNotEmpty('role', 'name', values.name),
};

/** Custom roles (the built-in ones are defined in code). */
export class RoleRepository extends NamedEntityRepository<RoleRecord, RoleFilter> {
  constructor(context: StoreContext) {
    super(context, definition);
  }

  async create(input: NewRole): Promise<RoleRecord> {
    return this.insert({ ...this.newIdentity(), name: input.name, description: input.description ?? '', permissions: input.permissions });
  }

  async update(id: string, patch: Partial<Omit<NewRole, 'name'>>, options?: UpdateOptions): Promise<RoleRecord> {
    return this.patch(id, patch, options);
  }

  async tryGetByName(name: string): Promise<RoleRecord | undefined> {
    return this.tryGetWhere({ name });
  }
}

import { column, type RecordSpec } from '../record-codec.js';
import type { StoreContext } from '../store-context.js';
import { userSources, type NewUser, type UserFilter, type UserPatch, type UserRecord } from '../access-types.js';
import type { UpdateOptions } from '../types.js';
import { NamedEntityRepository, type EntityDefinition } from './entity-repository.js';
import { checkNotEmpty, checkOneOf } from './field-checks.js';
import { filterBy } from './list-filters.js';

const fields: RecordSpec<UserRecord> = {
  id: column.id('id'),
  name: column.text('name'),
  source: column.text('source'),
  passwordHash: column.text('password_hash', { nullable: true }),
  bindings: column.json('bindings'),
  ldapDn: column.text('ldap_dn', { nullable: true }),
  groupsCheckedAt: column.timestamp('groups_checked_at', { nullable: true }),
  defaultProject: column.text('default_project', { nullable: true }),
  disabled: column.boolean('disabled'),
  rev: column.integer('rev'),
  createdAt: column.timestamp('created_at'),
  updatedAt: column.timestamp('updated_at'),
};

const definition: EntityDefinition<UserRecord, UserFilter> = {
  table: 'users',
  kind: 'user',
  fields,
  order: ['name', 'id'],
  filters: { source: filterBy.equals('source'), name: filterBy.contains('name') },
  references: [],
  versioned: true,
  validate: (values) => {
    checkNotEmpty('user', 'name', values.name);
    checkOneOf('user', 'source', values.source, userSources);
  },
};

/** Users: local ones (scrypt password hash) and those LDAP signed in. */
export class UserRepository extends NamedEntityRepository<UserRecord, UserFilter> {
  constructor(context: StoreContext) {
    super(context, definition);
  }

  async create(input: NewUser): Promise<UserRecord> {
    return this.insert({
      ...this.newIdentity(),
      name: input.name,
      source: input.source,
      passwordHash: input.passwordHash ?? null,
      bindings: input.bindings ?? [],
      ldapDn: input.ldapDn ?? null,
      groupsCheckedAt: input.groupsCheckedAt ?? null,
      defaultProject: input.defaultProject ?? null,
      disabled: input.disabled ?? false,
    });
  }

  async update(id: string, patch: UserPatch, options?: UpdateOptions): Promise<UserRecord> {
    return this.patch(id, patch, options);
  }

  /** The user with this name, or undefined. */
  async tryGetByName(name: string): Promise<UserRecord | undefined> {
    return this.tryGetWhere({ name });
  }
}

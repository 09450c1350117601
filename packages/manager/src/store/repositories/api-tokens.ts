import { errors } from '@drover/core';
import { column, toTimestamp, type RecordSpec } from '../record-codec.js';
import { nowIso, type StoreContext } from '../store-context.js';
import { runQuery } from '../store-errors.js';
import type { ApiTokenFilter, ApiTokenRecord, NewApiToken, TimestampInput } from '../types.js';
import { EntityRepository, type EntityDefinition } from './entity-repository.js';
import { checkNotEmpty } from './field-checks.js';
import { filterBy } from './list-filters.js';

const fields: RecordSpec<ApiTokenRecord> = {
  id: column.id('id'),
  name: column.text('name'),
  tokenHash: column.text('token_hash'),
  role: column.text('role'),
  createdAt: column.timestamp('created_at'),
  expiresAt: column.timestamp('expires_at', { nullable: true }),
  revokedAt: column.timestamp('revoked_at', { nullable: true }),
  userName: column.text('user_name', { nullable: true }),
  scope: column.json('scope', { nullable: true }),
};

const definition: EntityDefinition<ApiTokenRecord, ApiTokenFilter> = {
  table: 'api_tokens',
  kind: 'API token',
  fields,
  order: ['name', 'id'],
  filters: {
    role: filterBy.equals('role'),
    name: filterBy.contains('name'),
    userName: filterBy.equals('user_name'),
  },
  references: [],
  versioned: false,
  validate: (values) => {
    checkNotEmpty('API token', 'name', values.name);
    checkNotEmpty('API token', 'tokenHash', values.tokenHash);
    checkNotEmpty('API token', 'role', values.role);
  },
};

/** API tokens. Only their hashes are stored; names need not be unique. */
export class ApiTokenRepository extends EntityRepository<ApiTokenRecord, ApiTokenFilter> {
  constructor(context: StoreContext) {
    super(context, definition);
  }

  async create(input: NewApiToken): Promise<ApiTokenRecord> {
    const { id, createdAt } = this.newIdentity();
    return this.insert({
      id,
      createdAt,
      name: input.name,
      tokenHash: input.tokenHash,
      role: input.role,
      expiresAt: input.expiresAt ?? null,
      revokedAt: null,
      userName: input.userName ?? null,
      scope: input.scope ?? null,
    });
  }

  /**
   * The token with this hash, whatever its state (the caller checks
   * `expiresAt` and `revokedAt`), or undefined.
   */
  async findByHash(tokenHash: string): Promise<ApiTokenRecord | undefined> {
    return this.tryGetWhere({ tokenHash });
  }

  /** Marks the token revoked (from `at`, now by default). Revoking twice keeps the first time. */
  async revoke(id: string, at?: TimestampInput): Promise<ApiTokenRecord> {
    const token = await this.get(id);
    if (token.revokedAt !== null) return token;
    const revokedAt = at === undefined ? nowIso(this.context) : toTimestamp(at, 'revokedAt');
    this.context.checkUse();
    const row = await runQuery(() =>
      this.context.db
        .updateTable('api_tokens')
        .set({ revoked_at: revokedAt })
        .where('id', '=', token.id)
        .where('revoked_at', 'is', null)
        .returningAll()
        .executeTakeFirst(),
    );
    if (row !== undefined) return this.decode(row);
    // Revoked or deleted in between.
    const current = await this.tryGet(id);
    if (current === undefined) throw errors.notFound('API token', id);
    return current;
  }
}

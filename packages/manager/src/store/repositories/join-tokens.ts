import { DroverError } from '@drover/core';
import { column, toTimestamp, type RecordSpec } from '../record-codec.js';
import { nowIso, type StoreContext } from '../store-context.js';
import { runQuery } from '../store-errors.js';
import type { JoinTokenRecord, NewJoinToken, TimestampInput } from '../types.js';
import { EntityRepository, type EntityDefinition } from './entity-repository.js';
import { checkNotEmpty } from './field-checks.js';

const fields: RecordSpec<JoinTokenRecord> = {
  id: column.id('id'),
  tokenHash: column.text('token_hash'),
  expiresAt: column.timestamp('expires_at'),
  usedAt: column.timestamp('used_at', { nullable: true }),
  createdAt: column.timestamp('created_at'),
};

const definition: EntityDefinition<JoinTokenRecord, Record<string, never>> = {
  table: 'join_tokens',
  kind: 'join token',
  fields,
  order: ['createdAt', 'id'],
  filters: {},
  references: [],
  versioned: false,
  validate: (values) => checkNotEmpty('join token', 'tokenHash', values.tokenHash),
};

/** Single-use tokens a new host presents to join the cluster. Only hashes are stored. */
export class JoinTokenRepository extends EntityRepository<JoinTokenRecord, Record<string, never>> {
  constructor(context: StoreContext) {
    super(context, definition);
  }

  async create(input: NewJoinToken): Promise<JoinTokenRecord> {
    const { id, createdAt } = this.newIdentity();
    return this.insert({ id, createdAt, tokenHash: input.tokenHash, expiresAt: input.expiresAt, usedAt: null });
  }

  /**
   * Marks the token used, atomically: of two hosts presenting the same token at
   * once, exactly one gets it. Unknown → `not_found`, already used → `conflict`,
   * expired (at `now`) → `precondition_failed`. Messages never show the hash.
   */
  async consume(tokenHash: string, now?: TimestampInput): Promise<JoinTokenRecord> {
    const at = now === undefined ? nowIso(this.context) : toTimestamp(now, 'now');
    this.context.checkUse();
    const row = await runQuery(() =>
      this.context.db
        .updateTable('join_tokens')
        .set({ used_at: at })
        .where('token_hash', '=', tokenHash)
        .where('used_at', 'is', null)
        .where('expires_at', '>', at)
        .returningAll()
        .executeTakeFirst(),
    );
    if (row !== undefined) return this.decode(row);
    const token = await this.tryGetWhere({ tokenHash });
    if (token === undefined) {
      throw new DroverError('not_found', 'Cannot use join token: it does not exist', { details: { kind: 'join token' } });
    }
    if (token.usedAt !== null) {
      throw new DroverError('conflict', `Cannot use join token ${token.id}: it was already used at ${token.usedAt}`, {
        details: { kind: 'join token', id: token.id, usedAt: token.usedAt },
      });
    }
    throw new DroverError('precondition_failed', `Cannot use join token ${token.id}: it expired at ${token.expiresAt}`, {
      details: { kind: 'join token', id: token.id, expiresAt: token.expiresAt },
    });
  }

  /** Deletes the tokens that expired before `now`; returns how many. */
  async deleteExpired(now: TimestampInput): Promise<number> {
    const at = toTimestamp(now, 'now');
    this.context.checkUse();
    const result = await runQuery(() => this.context.db.deleteFrom('join_tokens').where('expires_at', '<=', at).executeTakeFirst());
    return Number(result.numDeletedRows);
  }

  protected override labelOf(values: Partial<Record<string, unknown>>): string {
    return String(values['id'] ?? '');
  }
}

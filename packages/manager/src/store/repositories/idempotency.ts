import { column, decodeRecord, encodeFields, toTimestamp, type RecordSpec } from '../record-codec.js';
import { nowIso, type StoreContext } from '../store-context.js';
import { runQuery, uniqueConflict } from '../store-errors.js';
import type { IdempotencyRecord, NewIdempotencyRecord, TimestampInput } from '../types.js';
import { checkNotEmpty, checkRange } from './field-checks.js';

const fields: RecordSpec<IdempotencyRecord> = {
  key: column.text('key'),
  actor: column.text('actor'),
  requestHash: column.text('request_hash'),
  status: column.integer('status'),
  response: column.json('response', { nullable: true }),
  createdAt: column.timestamp('created_at'),
};

/**
 * Stored answers to POSTs with an `Idempotency-Key`, per actor: a retried
 * request gets the first answer instead of acting twice.
 */
export class IdempotencyRepository {
  constructor(private readonly context: StoreContext) {}

  /** The stored answer for this key and actor, or undefined. */
  async get(key: string, actor: string): Promise<IdempotencyRecord | undefined> {
    this.context.checkUse();
    const row = await runQuery(() =>
      this.context.db.selectFrom('idempotency').selectAll().where('key', '=', key).where('actor', '=', actor).executeTakeFirst(),
    );
    return row === undefined ? undefined : decodeRecord(fields, row);
  }

  /**
   * Stores an answer. A second answer for the same key and actor is a
   * `conflict`: two requests with one key raced, and the first one won.
   */
  async put(input: NewIdempotencyRecord): Promise<IdempotencyRecord> {
    checkNotEmpty('idempotency record', 'key', input.key);
    checkNotEmpty('idempotency record', 'actor', input.actor);
    checkRange('idempotency record', 'status', input.status, 100, 599);
    const row = encodeFields(fields, {
      key: input.key,
      actor: input.actor,
      requestHash: input.requestHash,
      status: input.status,
      response: input.response ?? null,
      createdAt: nowIso(this.context),
    });
    this.context.checkUse();
    const inserted = await runQuery(
      () => this.context.db.insertInto('idempotency').values(row).returningAll().executeTakeFirstOrThrow(),
      (violation) =>
        violation.kind === 'unique'
          ? uniqueConflict('store the answer of', 'request', input.key, [
              ['Idempotency-Key', input.key],
              ['actor', input.actor],
            ])
          : undefined,
    );
    return decodeRecord(fields, inserted);
  }

  /** Forgets the answers stored before `before`; returns how many. */
  async deleteOlderThan(before: TimestampInput): Promise<number> {
    const at = toTimestamp(before, 'before');
    this.context.checkUse();
    const result = await runQuery(() => this.context.db.deleteFrom('idempotency').where('created_at', '<', at).executeTakeFirst());
    return Number(result.numDeletedRows);
  }
}

import { errors } from '@drover/core';
import { sql } from 'kysely';
import type { StoreDatabase } from '../backend.js';
import { column, decodeRecord, encodeFields, toTimestamp, type RecordSpec } from '../record-codec.js';
import { nowIso, type StoreContext } from '../store-context.js';
import { runQuery } from '../store-errors.js';
import type { EventRecord, NewEvent, TimestampInput } from '../types.js';
import { checkNotEmpty } from './field-checks.js';

const fields: RecordSpec<EventRecord> = {
  seq: column.integer('seq'),
  type: column.text('type'),
  objectKind: column.text('object_kind'),
  objectId: column.text('object_id'),
  data: column.json('data'),
  createdAt: column.timestamp('created_at'),
};

export const defaultEventBatch = 1000;
export const maxEventBatch = 10_000;

/**
 * The change feed: an append-only log the event stream reads, and resumes from
 * with `since(seq)`.
 *
 * A reader that saw seq N must never later find a new event below N, or a
 * resumed stream would skip it. With one writer (SQLite) that holds by itself.
 * On PostgreSQL a sequence hands out numbers at insert time but transactions
 * commit in any order, so appends take a transaction-level advisory lock: seqs
 * then become visible in order. Append events last in a transaction, after its
 * row locks, to keep that lock short and the lock order one way.
 */
export class EventRepository {
  constructor(private readonly context: StoreContext) {}

  /** Appends an event and returns it with its seq. */
  async append(event: NewEvent): Promise<EventRecord> {
    checkNotEmpty('event', 'type', event.type);
    const row = encodeFields(fields, {
      type: event.type,
      objectKind: event.objectKind,
      objectId: event.objectId,
      data: event.data ?? {},
      createdAt: nowIso(this.context),
    });
    const insert = async (db: StoreDatabase) => {
      await this.context.backend.serializeEventAppends(db);
      return db.insertInto('events').values(row).returningAll().executeTakeFirstOrThrow();
    };
    this.context.checkUse();
    const { db } = this.context;
    const inserted = await runQuery(() => (db.isTransaction ? insert(db) : db.transaction().execute(insert)));
    return decodeRecord(fields, inserted);
  }

  /** The events after `seq` (0: from the start), oldest first, at most `limit` (1000 by default, 10 000 at most). */
  async since(seq: number, limit = defaultEventBatch): Promise<EventRecord[]> {
    if (!Number.isSafeInteger(seq) || seq < 0) throw errors.invalid(`Invalid event seq "${String(seq)}": expected an integer of at least 0`);
    if (!Number.isInteger(limit) || limit < 1) throw errors.invalid(`Invalid limit "${String(limit)}": it must be a positive integer`);
    this.context.checkUse();
    const rows = await runQuery(() =>
      this.context.db
        .selectFrom('events')
        .selectAll()
        .where('seq', '>', seq)
        .orderBy('seq')
        .limit(Math.min(limit, maxEventBatch))
        .execute(),
    );
    return rows.map((row) => decodeRecord(fields, row));
  }

  /** The seq of the newest event, 0 when there is none: where a new subscriber starts. */
  async lastSeq(): Promise<number> {
    this.context.checkUse();
    const row = await runQuery(() =>
      this.context.db.selectFrom('events').select(sql<number | string | null>`max(seq)`.as('last')).executeTakeFirst(),
    );
    return Number(row?.last ?? 0);
  }

  /**
   * Deletes events older than `before`; returns how many. Seqs are never
   * reused (AUTOINCREMENT, a sequence), so a stream resuming below the oldest
   * kept event can tell it missed some.
   */
  async deleteOlderThan(before: TimestampInput): Promise<number> {
    const at = toTimestamp(before, 'before');
    this.context.checkUse();
    const result = await runQuery(() => this.context.db.deleteFrom('events').where('created_at', '<', at).executeTakeFirst());
    return Number(result.numDeletedRows);
  }
}

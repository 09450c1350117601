import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import type { Row } from '../record-codec.js';
import { nowIso, type StoreContext } from '../store-context.js';
import { runQuery } from '../store-errors.js';
import type { AuditDecision, AuditQuery, AuditRecord, NewAuditRecord } from '../access-types.js';

/** The prevHash of the first record. */
export const auditGenesis = '0'.repeat(64);

/** The hash of a record: sha256 over the previous hash and every other field, in a fixed order. */
export function auditHash(record: Omit<AuditRecord, 'hash'>): string {
  const fields = [record.seq, record.at, record.actor, record.action, record.target, record.source, record.decision, record.reason, record.status, record.prevHash];
  return createHash('sha256').update(JSON.stringify(fields)).digest('hex');
}

function decode(row: Row): AuditRecord {
  return {
    seq: Number(row['seq']),
    at: new Date(String(row['at'])).toISOString(),
    actor: String(row['actor']),
    action: String(row['action']),
    target: String(row['target']),
    source: String(row['source']),
    decision: String(row['decision']) as AuditDecision,
    reason: String(row['reason']),
    status: Number(row['status']),
    prevHash: String(row['prev_hash']),
    hash: String(row['hash']),
  };
}

/** What `verify` found: `ok`, or the first record whose hash or link is wrong. */
export interface AuditVerification {
  ok: boolean;
  checked: number;
  firstBad?: { seq: number; reason: string };
}

/**
 * The audit log: append-only (this repository has no update nor delete), each
 * record chained to the previous one by sha256, so changing, removing or
 * reordering a record is seen by `verify`.
 */
export class AuditLogRepository {
  /** Appends of this process, one at a time (the transaction also serializes them across managers). */
  #tail: Promise<unknown> = Promise.resolve();

  constructor(private readonly context: StoreContext) {}

  async append(input: NewAuditRecord): Promise<AuditRecord> {
    const run = this.#tail.then(() => this.appendNow(input));
    this.#tail = run.catch(() => undefined);
    return run;
  }

  private async appendNow(input: NewAuditRecord): Promise<AuditRecord> {
    this.context.checkUse();
    const { db, backend } = this.context;
    const write = async (trx: typeof db): Promise<AuditRecord> => {
      // PostgreSQL: one appender at a time across managers; SQLite transactions are exclusive already.
      if (backend.kind === 'postgres') await sql`select pg_advisory_xact_lock(7310001)`.execute(trx);
      const last = await trx.selectFrom('audit_log').select(['seq', 'hash']).orderBy('seq', 'desc').limit(1).executeTakeFirst();
      const base = {
        ...input,
        seq: last ? Number(last['seq']) + 1 : 1,
        at: nowIso(this.context),
        prevHash: last ? String(last['hash']) : auditGenesis,
      };
      const record: AuditRecord = { ...base, hash: auditHash(base) };
      await trx
        .insertInto('audit_log')
        .values({ seq: record.seq, at: record.at, actor: record.actor, action: record.action, target: record.target, source: record.source, decision: record.decision, reason: record.reason, status: record.status, prev_hash: record.prevHash, hash: record.hash })
        .execute();
      return record;
    };
    if (db.isTransaction) return runQuery(() => write(db));
    return runQuery(() => db.transaction().execute((trx) => write(trx)));
  }

  /** Records matching the query, oldest first (at most `limit`, 100 by default, 1000 at most). */
  async list(query: AuditQuery = {}): Promise<AuditRecord[]> {
    this.context.checkUse();
    let select = this.context.db.selectFrom('audit_log').selectAll();
    if (query.actor !== undefined) select = select.where('actor', '=', query.actor);
    if (query.decision !== undefined) select = select.where('decision', '=', query.decision);
    if (query.action !== undefined) select = select.where(this.context.backend.textContains('action', query.action));
    if (query.since !== undefined) select = select.where('at', '>=', query.since);
    if (query.until !== undefined) select = select.where('at', '<', query.until);
    if (query.after !== undefined) select = select.where('seq', '>', query.after);
    const limit = Math.min(Math.max(query.limit ?? 100, 1), 1000);
    const rows = await runQuery(() => select.orderBy('seq', 'asc').limit(limit).execute());
    return rows.map(decode);
  }

  /** Walks the whole chain: each record's link to the one before and its own hash. */
  async verify(): Promise<AuditVerification> {
    let prev = auditGenesis;
    let expectedSeq = 1;
    let checked = 0;
    for (let after = 0; ; ) {
      const page = await this.list({ after, limit: 1000 });
      for (const record of page) {
        if (record.seq !== expectedSeq) return { ok: false, checked, firstBad: { seq: record.seq, reason: `record ${expectedSeq} is missing` } };
        if (record.prevHash !== prev) return { ok: false, checked, firstBad: { seq: record.seq, reason: 'its link to the previous record is broken' } };
        const { hash, ...rest } = record;
        if (auditHash(rest) !== hash) return { ok: false, checked, firstBad: { seq: record.seq, reason: 'its content does not match its hash (it was modified)' } };
        prev = hash;
        expectedSeq += 1;
        checked += 1;
      }
      if (page.length < 1000) return { ok: true, checked };
      after = page[page.length - 1]!.seq;
    }
  }
}

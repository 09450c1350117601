import { sql } from 'kysely';
import { column, isUuid, toTimestamp, type RecordSpec } from '../record-codec.js';
import type { StoreContext } from '../store-context.js';
import { runQuery } from '../store-errors.js';
import type { NewReservation, ReservationRecord, ReservedCapacity, TimestampInput } from '../types.js';
import { EntityRepository, type EntityDefinition } from './entity-repository.js';
import { checkRange } from './field-checks.js';
import { filterBy } from './list-filters.js';

const fields: RecordSpec<ReservationRecord> = {
  id: column.id('id'),
  hostId: column.id('host_id'),
  vmId: column.id('vm_id'),
  cpus: column.integer('cpus'),
  memoryMiB: column.integer('memory_mib'),
  expiresAt: column.timestamp('expires_at'),
  createdAt: column.timestamp('created_at'),
};

interface ReservationFilter {
  hostId?: string;
}

const definition: EntityDefinition<ReservationRecord, ReservationFilter> = {
  table: 'reservations',
  kind: 'reservation',
  fields,
  order: ['createdAt', 'id'],
  filters: { hostId: filterBy.reference('host_id') },
  references: ['hostId', 'vmId'],
  versioned: false,
  validate: (values) => {
    checkRange('reservation', 'cpus', values.cpus, 0);
    checkRange('reservation', 'memoryMiB', values.memoryMiB, 0);
  },
};

/**
 * Capacity held on a host for VM starts in flight, one reservation per VM.
 * To never overcommit, check and reserve in one transaction after locking the
 * host: `tx.hosts.getForUpdate(hostId)`, then `sumByHost`, then `create`.
 */
export class ReservationRepository extends EntityRepository<ReservationRecord, ReservationFilter> {
  constructor(context: StoreContext) {
    super(context, definition);
  }

  /** Holds capacity for a VM; a second reservation for the same VM is a `conflict`. */
  async create(input: NewReservation): Promise<ReservationRecord> {
    const { id, createdAt } = this.newIdentity();
    return this.insert({
      id,
      createdAt,
      hostId: input.hostId,
      vmId: input.vmId,
      cpus: input.cpus,
      memoryMiB: input.memoryMiB,
      expiresAt: input.expiresAt,
    });
  }

  /** Releases the VM's reservation; false when it had none. */
  async deleteByVm(vmId: string): Promise<boolean> {
    if (!isUuid(vmId)) return false;
    this.context.checkUse();
    const result = await runQuery(() => this.context.db.deleteFrom('reservations').where('vm_id', '=', vmId.toLowerCase()).executeTakeFirst());
    return Number(result.numDeletedRows) > 0;
  }

  /** The host's reservations, oldest first. */
  async listByHost(hostId: string): Promise<ReservationRecord[]> {
    const items: ReservationRecord[] = [];
    let after: string | undefined;
    do {
      const page = await this.list({ filter: { hostId }, after, limit: 1000 });
      items.push(...page.items);
      after = page.next;
    } while (after !== undefined);
    return items;
  }

  /** Deletes the reservations expired at `now`; returns how many. */
  async deleteExpired(now: TimestampInput): Promise<number> {
    const at = toTimestamp(now, 'now');
    this.context.checkUse();
    const result = await runQuery(() => this.context.db.deleteFrom('reservations').where('expires_at', '<=', at).executeTakeFirst());
    return Number(result.numDeletedRows);
  }

  /**
   * What is reserved on the host. With `now`, reservations expired by then no
   * longer count (without it they count until `deleteExpired` removes them,
   * which errs on the safe side).
   */
  async sumByHost(hostId: string, options: { now?: TimestampInput } = {}): Promise<ReservedCapacity> {
    if (!isUuid(hostId)) return { cpus: 0, memoryMiB: 0 };
    let query = this.context.db
      .selectFrom('reservations')
      .select([sql<number | string>`coalesce(sum(cpus), 0)`.as('cpus'), sql<number | string>`coalesce(sum(memory_mib), 0)`.as('memory_mib')])
      .where('host_id', '=', hostId.toLowerCase());
    if (options.now !== undefined) query = query.where('expires_at', '>', toTimestamp(options.now, 'now'));
    this.context.checkUse();
    const row = await runQuery(() => query.executeTakeFirstOrThrow());
    return { cpus: Number(row.cpus), memoryMiB: Number(row.memory_mib) };
  }

  protected override labelOf(values: Partial<Record<string, unknown>>): string {
    return String(values['vmId'] ?? values['id'] ?? '');
  }
}

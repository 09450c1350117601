import { randomUUID } from 'node:crypto';
import { isUuid, toTimestamp } from '../record-codec.js';
import { nowIso, type StoreContext } from '../store-context.js';
import { runQuery } from '../store-errors.js';

/** A host's power driver settings (secrets included: never hand this record to a client as is). */
export interface HostPowerRecord {
  hostId: string;
  config: Record<string, unknown>;
  /** Since when the host is powered off by Drover; null while it is on. */
  poweredOffAt: string | null;
  /** Time spent powered off by Drover, closed periods only. */
  offMsTotal: number;
  updatedAt: string;
}

/** One VM an evacuation moved away (or stopped) from a host, for `restore`. */
export interface EvacuationRecord {
  id: string;
  hostId: string;
  vmId: string;
  policy: string;
  toHostId: string | null;
  operationId: string;
  createdAt: string;
}

type Row = Record<string, unknown>;

function json(value: unknown): unknown {
  return typeof value === 'string' ? JSON.parse(value) : value;
}

function time(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  return value instanceof Date ? value.toISOString() : new Date(String(value)).toISOString();
}

function powerOf(row: Row): HostPowerRecord {
  return {
    hostId: String(row.host_id),
    config: json(row.config) as Record<string, unknown>,
    poweredOffAt: time(row.powered_off_at),
    offMsTotal: Number(row.off_ms_total),
    updatedAt: time(row.updated_at)!,
  };
}

function evacuationOf(row: Row): EvacuationRecord {
  return {
    id: String(row.id),
    hostId: String(row.host_id),
    vmId: String(row.vm_id),
    policy: String(row.policy),
    toHostId: row.to_host_id === null || row.to_host_id === undefined ? null : String(row.to_host_id),
    operationId: String(row.operation_id),
    createdAt: time(row.created_at)!,
  };
}

/**
 * Host power settings, evacuation records and the power policy's settings
 * (tables of migration 0005_power).
 */
export class PowerRepository {
  constructor(private readonly context: StoreContext) {}

  private get db() {
    this.context.checkUse();
    return this.context.db;
  }

  async getHostPower(hostId: string): Promise<HostPowerRecord | undefined> {
    if (!isUuid(hostId)) return undefined;
    const row = await runQuery(() => this.db.selectFrom('host_power').selectAll().where('host_id', '=', hostId.toLowerCase()).executeTakeFirst());
    return row ? powerOf(row) : undefined;
  }

  async listHostPower(): Promise<HostPowerRecord[]> {
    const rows = await runQuery(() => this.db.selectFrom('host_power').selectAll().orderBy('host_id').execute());
    return rows.map(powerOf);
  }

  /** Sets (or replaces) a host's power settings; the time-off bookkeeping stays. */
  async putHostPower(hostId: string, config: Record<string, unknown>): Promise<HostPowerRecord> {
    const now = nowIso(this.context);
    const existing = await this.getHostPower(hostId);
    if (existing) {
      await runQuery(() => this.db.updateTable('host_power').set({ config: JSON.stringify(config), updated_at: now }).where('host_id', '=', hostId.toLowerCase()).execute());
    } else {
      await runQuery(() =>
        this.db.insertInto('host_power').values({ host_id: hostId.toLowerCase(), config: JSON.stringify(config), powered_off_at: null, off_ms_total: 0, updated_at: now }).execute(),
      );
    }
    return (await this.getHostPower(hostId))!;
  }

  async deleteHostPower(hostId: string): Promise<boolean> {
    if (!isUuid(hostId)) return false;
    const result = await runQuery(() => this.db.deleteFrom('host_power').where('host_id', '=', hostId.toLowerCase()).executeTakeFirst());
    return Number(result.numDeletedRows) > 0;
  }

  /** Records that the host went off (at `at`) or came back on (closing the period into `offMsTotal`). */
  async markPower(hostId: string, off: boolean, at: Date = this.context.now()): Promise<void> {
    const record = await this.getHostPower(hostId);
    if (!record) return;
    if (off && record.poweredOffAt === null) {
      await runQuery(() => this.db.updateTable('host_power').set({ powered_off_at: toTimestamp(at, 'at') }).where('host_id', '=', hostId.toLowerCase()).execute());
    } else if (!off && record.poweredOffAt !== null) {
      const total = record.offMsTotal + Math.max(0, at.getTime() - Date.parse(record.poweredOffAt));
      await runQuery(() => this.db.updateTable('host_power').set({ powered_off_at: null, off_ms_total: total }).where('host_id', '=', hostId.toLowerCase()).execute());
    }
  }

  async addEvacuation(input: Omit<EvacuationRecord, 'id' | 'createdAt'>): Promise<EvacuationRecord> {
    const id = randomUUID();
    await runQuery(() =>
      this.db
        .insertInto('host_evacuations')
        .values({ id, host_id: input.hostId.toLowerCase(), vm_id: input.vmId.toLowerCase(), policy: input.policy, to_host_id: input.toHostId?.toLowerCase() ?? null, operation_id: input.operationId, created_at: nowIso(this.context) })
        .execute(),
    );
    return { ...input, id, createdAt: nowIso(this.context) };
  }

  async listEvacuations(hostId: string): Promise<EvacuationRecord[]> {
    if (!isUuid(hostId)) return [];
    const rows = await runQuery(() => this.db.selectFrom('host_evacuations').selectAll().where('host_id', '=', hostId.toLowerCase()).orderBy('created_at').orderBy('id').execute());
    return rows.map(evacuationOf);
  }

  async deleteEvacuation(id: string): Promise<void> {
    if (!isUuid(id)) return;
    await runQuery(() => this.db.deleteFrom('host_evacuations').where('id', '=', id.toLowerCase()).execute());
  }

  async getSetting<T>(name: string): Promise<T | undefined> {
    const row = await runQuery(() => this.db.selectFrom('power_settings').selectAll().where('name', '=', name).executeTakeFirst());
    return row ? (json(row.value) as T) : undefined;
  }

  async putSetting(name: string, value: unknown): Promise<void> {
    const now = nowIso(this.context);
    const exists = await runQuery(() => this.db.selectFrom('power_settings').select('name').where('name', '=', name).executeTakeFirst());
    if (exists) await runQuery(() => this.db.updateTable('power_settings').set({ value: JSON.stringify(value), updated_at: now }).where('name', '=', name).execute());
    else await runQuery(() => this.db.insertInto('power_settings').values({ name, value: JSON.stringify(value), updated_at: now }).execute());
  }
}

import { nowIso, type StoreContext } from '../store-context.js';
import { runQuery } from '../store-errors.js';

/** The active mandatory policy: its validated native form and how it came. */
export interface SecurityPolicyRecord {
  name: string;
  /** The policy's native form (`SecurityPolicy` of @drover/core), validated before it was stored. */
  document: Record<string, unknown>;
  /** What it was loaded from: xml, yaml or json. */
  sourceFormat: string;
  loadedBy: string;
  loadedAt: string;
}

/** Kinds of objects carrying a security label here (a VM's label is in its labels). */
export type LabelledKind = 'host' | 'volume' | 'image' | 'network';

export interface SecurityLabelRecord {
  kind: LabelledKind;
  /** Host, image or network id; a volume is `<hostId>/<pool>/<volume>`. */
  objectId: string;
  /** `ACM:<policy>:<label>`. */
  label: string;
  updatedAt: string;
}

type Row = Record<string, unknown>;

function time(value: unknown): string {
  return value instanceof Date ? value.toISOString() : new Date(String(value)).toISOString();
}

/** Tables of migration 0003_policy. */
export class SecurityRepository {
  constructor(private readonly context: StoreContext) {}

  private get db() {
    this.context.checkUse();
    return this.context.db;
  }

  async activePolicy(): Promise<SecurityPolicyRecord | undefined> {
    const row = (await runQuery(() => this.db.selectFrom('security_policy').selectAll().where('slot', '=', 'active').executeTakeFirst())) as Row | undefined;
    if (!row) return undefined;
    return {
      name: String(row.name),
      document: (typeof row.document === 'string' ? JSON.parse(row.document) : row.document) as Record<string, unknown>,
      sourceFormat: String(row.source_format),
      loadedBy: String(row.loaded_by),
      loadedAt: time(row.loaded_at),
    };
  }

  /** Makes `policy` the active one, replacing any other. */
  async putActivePolicy(policy: Omit<SecurityPolicyRecord, 'loadedAt'>): Promise<SecurityPolicyRecord> {
    const values = { name: policy.name, document: JSON.stringify(policy.document), source_format: policy.sourceFormat, loaded_by: policy.loadedBy, loaded_at: nowIso(this.context) };
    await runQuery(() => this.db.deleteFrom('security_policy').where('slot', '=', 'active').execute());
    await runQuery(() => this.db.insertInto('security_policy').values({ slot: 'active', ...values }).execute());
    return (await this.activePolicy())!;
  }

  async label(kind: LabelledKind, objectId: string): Promise<string | undefined> {
    const row = (await runQuery(() => this.db.selectFrom('security_labels').select('label').where('object_kind', '=', kind).where('object_id', '=', objectId).executeTakeFirst())) as Row | undefined;
    return row ? String(row.label) : undefined;
  }

  /** Sets (label) or removes (null) an object's label. */
  async setLabel(kind: LabelledKind, objectId: string, label: string | null): Promise<void> {
    await runQuery(() => this.db.deleteFrom('security_labels').where('object_kind', '=', kind).where('object_id', '=', objectId).execute());
    if (label !== null) {
      await runQuery(() => this.db.insertInto('security_labels').values({ object_kind: kind, object_id: objectId, label, updated_at: nowIso(this.context) }).execute());
    }
  }

  /** Every label, or those of one kind, ordered by kind then object. */
  async labels(kind?: LabelledKind): Promise<SecurityLabelRecord[]> {
    const rows = (await runQuery(() => {
      let query = this.db.selectFrom('security_labels').selectAll();
      if (kind) query = query.where('object_kind', '=', kind);
      return query.orderBy('object_kind').orderBy('object_id').execute();
    })) as Row[];
    return rows.map((row) => ({ kind: String(row.object_kind) as LabelledKind, objectId: String(row.object_id), label: String(row.label), updatedAt: time(row.updated_at) }));
  }
}

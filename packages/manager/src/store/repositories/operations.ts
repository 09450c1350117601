import { column, type RecordSpec } from '../record-codec.js';
import type { StoreContext } from '../store-context.js';
import { operationStates, type NewOperation, type OperationFilter, type OperationPatch, type OperationRecord, type UpdateOptions } from '../types.js';
import { EntityRepository, type EntityDefinition } from './entity-repository.js';
import { checkNotEmpty, checkOneOf, checkRange } from './field-checks.js';
import { filterBy } from './list-filters.js';

const fields: RecordSpec<OperationRecord> = {
  id: column.id('id'),
  kind: column.text('kind'),
  targetKind: column.text('target_kind'),
  targetId: column.text('target_id'),
  state: column.text('state'),
  phase: column.text('phase'),
  progress: column.integer('progress'),
  params: column.json('params'),
  result: column.json('result', { nullable: true }),
  error: column.json('error', { nullable: true }),
  journal: column.json('journal'),
  actor: column.text('actor'),
  idempotencyKey: column.text('idempotency_key', { nullable: true }),
  rev: column.integer('rev'),
  createdAt: column.timestamp('created_at'),
  updatedAt: column.timestamp('updated_at'),
  startedAt: column.timestamp('started_at', { nullable: true }),
  finishedAt: column.timestamp('finished_at', { nullable: true }),
};

const definition: EntityDefinition<OperationRecord, OperationFilter> = {
  table: 'operations',
  kind: 'operation',
  fields,
  // Operations have no name: they list oldest first.
  order: ['createdAt', 'id'],
  filters: {
    state: filterBy.equals('state'),
    kind: filterBy.equals('kind'),
    targetKind: filterBy.equals('target_kind'),
    targetId: filterBy.equals('target_id'),
    actor: filterBy.equals('actor'),
  },
  references: [],
  versioned: true,
  validate: (values) => {
    checkNotEmpty('operation', 'kind', values.kind);
    checkOneOf('operation', 'state', values.state, operationStates);
    checkRange('operation', 'progress', values.progress, 0, 100);
  },
};

/**
 * The operations journal's records. The store keeps them; what the phases mean
 * and how a restarted manager resumes them is the journal's business.
 */
export class OperationRepository extends EntityRepository<OperationRecord, OperationFilter> {
  constructor(context: StoreContext) {
    super(context, definition);
  }

  async create(input: NewOperation): Promise<OperationRecord> {
    return this.insert({
      ...this.newIdentity(),
      kind: input.kind,
      targetKind: input.targetKind,
      targetId: input.targetId,
      state: input.state ?? 'pending',
      phase: input.phase ?? 'pending',
      progress: input.progress ?? 0,
      params: input.params ?? {},
      result: null,
      error: null,
      journal: input.journal ?? [],
      actor: input.actor,
      idempotencyKey: input.idempotencyKey ?? null,
      startedAt: input.startedAt ?? null,
      finishedAt: null,
    });
  }

  async update(id: string, patch: OperationPatch, options?: UpdateOptions): Promise<OperationRecord> {
    return this.patch(id, patch, options);
  }

  protected override labelOf(values: Partial<Record<string, unknown>>): string {
    return typeof values['kind'] === 'string' ? `${values['kind']} ${String(values['id'] ?? '')}`.trim() : String(values['id'] ?? '');
  }
}

import { sql } from 'kysely';
import { column, isUuid, type RecordSpec } from '../record-codec.js';
import type { StoreContext } from '../store-context.js';
import { runQuery } from '../store-errors.js';
import type { NewProject, ProjectFilter, ProjectQuota, ProjectRecord } from '../access-types.js';
import type { UpdateOptions } from '../types.js';
import { NamedEntityRepository, type EntityDefinition } from './entity-repository.js';
import { checkNotEmpty } from './field-checks.js';
import { filterBy } from './list-filters.js';

const fields: RecordSpec<ProjectRecord> = {
  id: column.id('id'),
  name: column.text('name'),
  description: column.text('description'),
  quota: column.json('quota'),
  rev: column.integer('rev'),
  createdAt: column.timestamp('created_at'),
  updatedAt: column.timestamp('updated_at'),
};

const definition: EntityDefinition<ProjectRecord, ProjectFilter> = {
  table: 'projects',
  kind: 'project',
  fields,
  order: ['name', 'id'],
  filters: { name: filterBy.contains('name') },
  references: [],
  versioned: true,
  validate: (values) => checkNotEmpty('project', 'name', values.name),
};

/** Projects (tenants) with their quotas, and which project each VM belongs to. */
export class ProjectRepository extends NamedEntityRepository<ProjectRecord, ProjectFilter> {
  constructor(context: StoreContext) {
    super(context, definition);
  }

  async create(input: NewProject): Promise<ProjectRecord> {
    return this.insert({ ...this.newIdentity(), name: input.name, description: input.description ?? '', quota: input.quota ?? {} });
  }

  async update(id: string, patch: { description?: string; quota?: ProjectQuota }, options?: UpdateOptions): Promise<ProjectRecord> {
    return this.patch(id, patch, options);
  }

  /** Puts a VM in a project (or moves it). */
  async assignVm(vmId: string, projectId: string): Promise<void> {
    this.context.checkUse();
    await runQuery(() => this.context.db.deleteFrom('vm_projects').where('vm_id', '=', vmId).execute());
    await runQuery(() => this.context.db.insertInto('vm_projects').values({ vm_id: vmId, project_id: projectId }).execute());
  }

  /** The project id of each of these VMs (absent: in no project). */
  async projectsOfVms(vmIds: readonly string[]): Promise<Map<string, string>> {
    const ids = vmIds.filter(isUuid).map((id) => id.toLowerCase());
    if (ids.length === 0) return new Map();
    this.context.checkUse();
    const rows = await runQuery(() => this.context.db.selectFrom('vm_projects').select(['vm_id', 'project_id']).where('vm_id', 'in', ids).execute());
    return new Map(rows.map((row) => [String(row['vm_id']), String(row['project_id'])]));
  }

  /** The ids of the VMs in a project. */
  async vmIds(projectId: string): Promise<string[]> {
    this.context.checkUse();
    const rows = await runQuery(() => this.context.db.selectFrom('vm_projects').select('vm_id').where('project_id', '=', projectId).execute());
    return rows.map((row) => String(row['vm_id']));
  }

  /** How many VMs a project holds (for the delete check). */
  async vmCount(projectId: string): Promise<number> {
    this.context.checkUse();
    const row = await runQuery(() => this.context.db.selectFrom('vm_projects').select(sql<number>`count(*)`.as('n')).where('project_id', '=', projectId).executeTakeFirst());
    return Number(row?.['n'] ?? 0);
  }
}

import { column, type RecordSpec } from '../record-codec.js';
import type { StoreContext } from '../store-context.js';
import type { Labels, UpdateOptions } from '../types.js';
import { NamedEntityRepository, type EntityDefinition } from './entity-repository.js';
import { checkNotEmpty } from './field-checks.js';
import { filterBy } from './list-filters.js';

/** A network a lab made: its name in the manifest, the namespaced network and the subnet from the lab address pool. */
export interface LabNetworkEntry {
  name: string;
  network: string;
  kind: string;
  subnet: string;
  /** The manifest's own subnet (addresses in the manifest are translated from it). */
  manifestSubnet: string;
  /** Whether the network exists (made by this lab; for the clean-up after a failure). */
  made: boolean;
}

/** A VM of a lab: its name in the manifest, the VM made for it (null until made), its start level and how it is reached. */
export interface LabVmEntry {
  name: string;
  vm: string;
  vmId: string | null;
  order: number;
  addresses: string[];
  endpoints: Array<{ guestPort: number; host: string; hostPort: number }>;
}

export interface LabRecord {
  id: string;
  name: string;
  state: string;
  /** Where the manifest came from: { kind: package|example|manifest|clone, ref }. */
  source: { kind: string; ref: string | null };
  /** The lab manifest as deployed (packages are mapped onto it first). */
  manifest: Record<string, unknown>;
  networkMode: string;
  networks: LabNetworkEntry[];
  groups: Array<{ name: string; group: string; made: boolean }>;
  vms: LabVmEntry[];
  labels: Labels;
  updatePolicy: string;
  owner: string;
  project: string | null;
  lastError: string | null;
  rev: number;
  createdAt: string;
  updatedAt: string;
}

export type NewLab = Omit<LabRecord, 'id' | 'rev' | 'createdAt' | 'updatedAt'>;
export type LabPatch = Partial<Pick<LabRecord, 'state' | 'networks' | 'groups' | 'vms' | 'lastError'>>;
export interface LabFilter {
  name?: string;
  owner?: string;
  state?: string | string[];
}

const fields: RecordSpec<LabRecord> = {
  id: column.id('id'),
  name: column.text('name'),
  state: column.text('state'),
  source: column.json('source'),
  manifest: column.json('manifest'),
  networkMode: column.text('network_mode'),
  networks: column.json('networks'),
  groups: column.json('security_groups'),
  vms: column.json('vms'),
  labels: column.json('labels'),
  updatePolicy: column.text('update_policy'),
  owner: column.text('owner'),
  project: column.text('project', { nullable: true }),
  lastError: column.text('last_error', { nullable: true }),
  rev: column.integer('rev'),
  createdAt: column.timestamp('created_at'),
  updatedAt: column.timestamp('updated_at'),
};

const definition: EntityDefinition<LabRecord, LabFilter> = {
  table: 'labs',
  kind: 'lab',
  fields,
  order: ['name', 'id'],
  filters: { name: filterBy.contains('name'), owner: filterBy.equals('owner'), state: filterBy.equals('state') },
  references: [],
  versioned: true,
  validate: (values) => {
    checkNotEmpty('lab', 'name', values.name);
    checkNotEmpty('lab', 'state', values.state);
  },
};

/** Labs (labs/): one row per lab, its networks and VMs as JSON lists (a lab's parts are always read and written together). */
export class LabRepository extends NamedEntityRepository<LabRecord, LabFilter> {
  constructor(context: StoreContext) {
    super(context, definition);
  }

  /** `id` may be chosen by the caller (a lab's deploy operation names it before the lab is written). */
  async create(input: NewLab, id?: string): Promise<LabRecord> {
    return this.insert({ ...this.newIdentity(), ...(id ? { id } : {}), ...input });
  }

  async update(id: string, patch: LabPatch, options?: UpdateOptions): Promise<LabRecord> {
    return this.patch(id, patch, options);
  }
}

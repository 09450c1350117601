import { column, type RecordSpec } from '../record-codec.js';
import type { StoreContext } from '../store-context.js';
import { hostStates, type HostFilter, type HostPatch, type HostRecord, type NewHost, type UpdateOptions } from '../types.js';
import { NamedEntityRepository, type EntityDefinition } from './entity-repository.js';
import { checkNotEmpty, checkOneOf, checkRange } from './field-checks.js';
import { filterBy } from './list-filters.js';

const fields: RecordSpec<HostRecord> = {
  id: column.id('id'),
  name: column.text('name'),
  address: column.text('address'),
  state: column.text('state'),
  certSerial: column.text('cert_serial'),
  certFingerprint: column.text('cert_fingerprint'),
  certExpiresAt: column.timestamp('cert_expires_at', { nullable: true }),
  capacity: column.json('capacity'),
  cpuModels: column.json('cpu_models'),
  labels: column.json('labels'),
  lastHeartbeatAt: column.timestamp('last_heartbeat_at', { nullable: true }),
  rev: column.integer('rev'),
  createdAt: column.timestamp('created_at'),
  updatedAt: column.timestamp('updated_at'),
};

const definition: EntityDefinition<HostRecord, HostFilter> = {
  table: 'hosts',
  kind: 'host',
  fields,
  order: ['name', 'id'],
  filters: {
    state: filterBy.equals('state'),
    label: filterBy.label('labels'),
    name: filterBy.contains('name'),
  },
  references: [],
  versioned: true,
  validate: (values) => {
    checkNotEmpty('host', 'name', values.name);
    checkOneOf('host', 'state', values.state, hostStates);
    const capacity = values.capacity as HostRecord['capacity'] | undefined;
    if (capacity !== undefined) {
      checkRange('host', 'capacity.cpus', capacity.cpus, 0);
      checkRange('host', 'capacity.memoryMiB', capacity.memoryMiB, 0);
    }
  },
};

export class HostRepository extends NamedEntityRepository<HostRecord, HostFilter> {
  constructor(context: StoreContext) {
    super(context, definition);
  }

  async create(input: NewHost): Promise<HostRecord> {
    return this.insert({
      ...this.newIdentity(),
      name: input.name,
      address: input.address,
      state: input.state ?? 'joining',
      certSerial: input.certSerial,
      certFingerprint: input.certFingerprint,
      certExpiresAt: input.certExpiresAt ?? null,
      capacity: input.capacity,
      cpuModels: input.cpuModels ?? [],
      labels: input.labels ?? {},
      lastHeartbeatAt: input.lastHeartbeatAt ?? null,
    });
  }

  async update(id: string, patch: HostPatch, options?: UpdateOptions): Promise<HostRecord> {
    return this.patch(id, patch, options);
  }
}

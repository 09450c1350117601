import { errors } from '@drover/core';
import { column, type RecordSpec } from '../record-codec.js';
import type { StoreContext } from '../store-context.js';
import type { ImageFilter, ImageRecord, NewImage } from '../types.js';
import { EntityRepository, type EntityDefinition } from './entity-repository.js';
import { checkNotEmpty, checkRange } from './field-checks.js';
import { filterBy } from './list-filters.js';

const fields: RecordSpec<ImageRecord> = {
  id: column.id('id'),
  name: column.text('name'),
  version: column.text('version'),
  format: column.text('format'),
  sizeBytes: column.integer('size_bytes'),
  sha256: column.text('sha256'),
  source: column.text('source'),
  createdAt: column.timestamp('created_at'),
};

const definition: EntityDefinition<ImageRecord, ImageFilter> = {
  table: 'images',
  kind: 'image',
  fields,
  order: ['name', 'id'],
  filters: {
    name: filterBy.contains('name'),
    exactName: filterBy.equals('name'),
    format: filterBy.equals('format'),
  },
  references: [],
  versioned: false,
  validate: (values) => {
    checkNotEmpty('image', 'name', values.name);
    checkNotEmpty('image', 'version', values.version);
    checkRange('image', 'sizeBytes', values.sizeBytes, 0);
    if (values.sha256 !== undefined && !/^[0-9a-f]{64}$/.test(String(values.sha256))) {
      throw errors.invalid(`Invalid image sha256 "${String(values.sha256)}": expected 64 lowercase hex digits`, { field: 'sha256' });
    }
  },
};

/** The appliance library's images. Immutable: a new release is a new record, so there is no update. */
export class ImageRepository extends EntityRepository<ImageRecord, ImageFilter> {
  constructor(context: StoreContext) {
    super(context, definition);
  }

  async create(input: NewImage): Promise<ImageRecord> {
    const { id, createdAt } = this.newIdentity();
    return this.insert({
      id,
      createdAt,
      name: input.name,
      version: input.version,
      format: input.format,
      sizeBytes: input.sizeBytes,
      sha256: input.sha256,
      source: input.source,
    });
  }

  /** The release `version` of image `name`; `not_found` otherwise. */
  async getRelease(name: string, version: string): Promise<ImageRecord> {
    const image = await this.tryGetWhere({ name, version });
    if (image === undefined) throw errors.notFound('image', `${name}@${version}`);
    return image;
  }

  /** Messages name an image by its release: "debian-web@1.2". */
  protected override labelOf(values: Partial<Record<string, unknown>>): string {
    return values['version'] === undefined ? super.labelOf(values) : `${String(values['name'])}@${String(values['version'])}`;
  }
}

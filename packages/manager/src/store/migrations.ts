import { errors } from '@drover/core';
import { Migrator, sql, type Kysely, type Migration, type MigrationProvider, type RawBuilder } from 'kysely';
import type { BackendKind } from './backend.js';

/**
 * The schema's history, in code: each migration is named `NNNN_what` and runs
 * once, in name order, in a transaction (both backends have transactional
 * DDL). A shipped migration is never edited: a change is a new migration,
 * written for both backends and exercised by the conformance suite, which
 * builds every test database from migration 0001.
 *
 * Column types per backend: ids are uuid in PostgreSQL and text in SQLite; JSON
 * is jsonb / text; timestamps timestamptz / ISO 8601 text; booleans boolean /
 * 0-1 integers. Names sort byte-wise on both (`collate "C"` in PostgreSQL), so
 * lists come out in the same order whichever backend serves them.
 */

interface ColumnTypes {
  id: RawBuilder<unknown>;
  name: RawBuilder<unknown>;
  text: RawBuilder<unknown>;
  integer: RawBuilder<unknown>;
  bigint: RawBuilder<unknown>;
  boolean: RawBuilder<unknown>;
  json: RawBuilder<unknown>;
  timestamp: RawBuilder<unknown>;
}

const columnTypes: Record<BackendKind, ColumnTypes> = {
  sqlite: {
    id: sql`text`,
    name: sql`text`,
    text: sql`text`,
    integer: sql`integer`,
    bigint: sql`integer`,
    boolean: sql`integer`,
    json: sql`text`,
    timestamp: sql`text`,
  },
  postgres: {
    id: sql`uuid`,
    name: sql`text collate "C"`,
    text: sql`text`,
    integer: sql`integer`,
    bigint: sql`bigint`,
    boolean: sql`boolean`,
    json: sql`jsonb`,
    timestamp: sql`timestamptz`,
  },
};

// Kysely's migration functions take Kysely<any>: the schema is being built.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type SchemaDb = Kysely<any>;

function initialSchema(kind: BackendKind): Migration {
  const t = columnTypes[kind];
  return {
    async up(db: SchemaDb) {
      await db.schema
        .createTable('hosts')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('name', t.name, (c) => c.notNull().unique())
        .addColumn('address', t.text, (c) => c.notNull())
        .addColumn('state', t.text, (c) => c.notNull())
        .addColumn('cert_serial', t.text, (c) => c.notNull())
        .addColumn('cert_fingerprint', t.text, (c) => c.notNull())
        .addColumn('cert_expires_at', t.timestamp)
        .addColumn('capacity', t.json, (c) => c.notNull())
        .addColumn('cpu_models', t.json, (c) => c.notNull())
        .addColumn('labels', t.json, (c) => c.notNull())
        .addColumn('last_heartbeat_at', t.timestamp)
        .addColumn('rev', t.integer, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('vms')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('name', t.name, (c) => c.notNull().unique())
        .addColumn('spec', t.json, (c) => c.notNull())
        .addColumn('state', t.text, (c) => c.notNull())
        .addColumn('host_id', t.id, (c) => c.references('hosts.id').onDelete('set null'))
        .addColumn('owner', t.text, (c) => c.notNull())
        .addColumn('labels', t.json, (c) => c.notNull())
        .addColumn('last_error', t.text)
        .addColumn('autostart', t.boolean, (c) => c.notNull())
        .addColumn('rev', t.integer, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('vms_host_id_idx').on('vms').column('host_id').execute();

      await db.schema
        .createTable('pools')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('name', t.name, (c) => c.notNull().unique())
        .addColumn('path', t.text, (c) => c.notNull())
        .addColumn('shared', t.boolean, (c) => c.notNull())
        .addColumn('host_ids', t.json, (c) => c.notNull())
        .addColumn('rev', t.integer, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('volumes')
        .addColumn('id', t.id, (c) => c.primaryKey())
        // No cascade: a pool that still holds volumes cannot be deleted.
        .addColumn('pool_id', t.id, (c) => c.notNull().references('pools.id'))
        .addColumn('name', t.name, (c) => c.notNull())
        .addColumn('host_id', t.id, (c) => c.references('hosts.id').onDelete('set null'))
        .addColumn('size_bytes', t.bigint, (c) => c.notNull())
        .addColumn('format', t.text, (c) => c.notNull())
        // A backing file still used by a clone cannot be deleted.
        .addColumn('backing_volume_id', t.id, (c) => c.references('volumes.id'))
        .addColumn('vm_id', t.id, (c) => c.references('vms.id').onDelete('set null'))
        .addColumn('rev', t.integer, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .addUniqueConstraint('volumes_pool_id_name_key', ['pool_id', 'name'])
        .execute();
      await db.schema.createIndex('volumes_host_id_idx').on('volumes').column('host_id').execute();
      await db.schema.createIndex('volumes_backing_volume_id_idx').on('volumes').column('backing_volume_id').execute();
      await db.schema.createIndex('volumes_vm_id_idx').on('volumes').column('vm_id').execute();

      await db.schema
        .createTable('images')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('name', t.name, (c) => c.notNull())
        .addColumn('version', t.text, (c) => c.notNull())
        .addColumn('format', t.text, (c) => c.notNull())
        .addColumn('size_bytes', t.bigint, (c) => c.notNull())
        .addColumn('sha256', t.text, (c) => c.notNull())
        .addColumn('source', t.text, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addUniqueConstraint('images_name_version_key', ['name', 'version'])
        .execute();

      await db.schema
        .createTable('operations')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('kind', t.text, (c) => c.notNull())
        .addColumn('target_kind', t.text, (c) => c.notNull())
        // Text, not a reference: operations outlive their targets.
        .addColumn('target_id', t.text, (c) => c.notNull())
        .addColumn('state', t.text, (c) => c.notNull())
        .addColumn('phase', t.text, (c) => c.notNull())
        .addColumn('progress', t.integer, (c) => c.notNull())
        .addColumn('params', t.json, (c) => c.notNull())
        .addColumn('result', t.json)
        .addColumn('error', t.json)
        .addColumn('journal', t.json, (c) => c.notNull())
        .addColumn('actor', t.text, (c) => c.notNull())
        .addColumn('idempotency_key', t.text)
        .addColumn('rev', t.integer, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .addColumn('started_at', t.timestamp)
        .addColumn('finished_at', t.timestamp)
        .execute();
      await db.schema.createIndex('operations_created_at_id_idx').on('operations').columns(['created_at', 'id']).execute();
      await db.schema.createIndex('operations_target_idx').on('operations').columns(['target_kind', 'target_id']).execute();
      await db.schema.createIndex('operations_state_idx').on('operations').column('state').execute();

      await db.schema
        .createTable('idempotency')
        .addColumn('key', t.text, (c) => c.notNull())
        .addColumn('actor', t.text, (c) => c.notNull())
        .addColumn('request_hash', t.text, (c) => c.notNull())
        .addColumn('status', t.integer, (c) => c.notNull())
        .addColumn('response', t.json)
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addPrimaryKeyConstraint('idempotency_pkey', ['key', 'actor'])
        .execute();
      await db.schema.createIndex('idempotency_created_at_idx').on('idempotency').column('created_at').execute();

      await db.schema
        .createTable('join_tokens')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('token_hash', t.text, (c) => c.notNull().unique())
        .addColumn('expires_at', t.timestamp, (c) => c.notNull())
        .addColumn('used_at', t.timestamp)
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('api_tokens')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('name', t.name, (c) => c.notNull())
        .addColumn('token_hash', t.text, (c) => c.notNull().unique())
        .addColumn('role', t.text, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addColumn('expires_at', t.timestamp)
        .addColumn('revoked_at', t.timestamp)
        .execute();

      // AUTOINCREMENT (not a plain rowid alias) so that seqs are never reused,
      // even after the newest events are deleted.
      await (kind === 'sqlite'
        ? db.schema.createTable('events').addColumn('seq', 'integer', (c) => c.primaryKey().autoIncrement())
        : db.schema.createTable('events').addColumn('seq', 'bigserial', (c) => c.primaryKey())
      )
        .addColumn('type', t.text, (c) => c.notNull())
        .addColumn('object_kind', t.text, (c) => c.notNull())
        .addColumn('object_id', t.text, (c) => c.notNull())
        .addColumn('data', t.json, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('events_created_at_idx').on('events').column('created_at').execute();

      await db.schema
        .createTable('reservations')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('host_id', t.id, (c) => c.notNull().references('hosts.id').onDelete('cascade'))
        .addColumn('vm_id', t.id, (c) => c.notNull().unique().references('vms.id').onDelete('cascade'))
        .addColumn('cpus', t.integer, (c) => c.notNull())
        .addColumn('memory_mib', t.integer, (c) => c.notNull())
        .addColumn('expires_at', t.timestamp, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('reservations_host_id_idx').on('reservations').column('host_id').execute();
      await db.schema.createIndex('reservations_expires_at_idx').on('reservations').column('expires_at').execute();
    },

    async down(db: SchemaDb) {
      for (const table of ['reservations', 'events', 'api_tokens', 'join_tokens', 'idempotency', 'operations', 'images', 'volumes', 'pools', 'vms', 'hosts']) {
        await db.schema.dropTable(table).execute();
      }
    },
  };
}

/**
 * Users, roles, projects (tenants with quotas), the project of each VM, the
 * scope of API tokens, and the audit log (each record chained to the previous
 * one by sha256; `seq` is assigned by the appender, never reused).
 */
function accessSchema(kind: BackendKind): Migration {
  const t = columnTypes[kind];
  return {
    async up(db: SchemaDb) {
      await db.schema
        .createTable('users')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('name', t.name, (c) => c.notNull().unique())
        .addColumn('source', t.text, (c) => c.notNull())
        .addColumn('password_hash', t.text)
        .addColumn('bindings', t.json, (c) => c.notNull())
        .addColumn('ldap_dn', t.text)
        .addColumn('groups_checked_at', t.timestamp)
        .addColumn('default_project', t.text)
        .addColumn('disabled', t.boolean, (c) => c.notNull())
        .addColumn('rev', t.integer, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('roles')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('name', t.name, (c) => c.notNull().unique())
        .addColumn('description', t.text, (c) => c.notNull())
        .addColumn('permissions', t.json, (c) => c.notNull())
        .addColumn('rev', t.integer, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('projects')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('name', t.name, (c) => c.notNull().unique())
        .addColumn('description', t.text, (c) => c.notNull())
        .addColumn('quota', t.json, (c) => c.notNull())
        .addColumn('rev', t.integer, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('vm_projects')
        .addColumn('vm_id', t.id, (c) => c.primaryKey().references('vms.id').onDelete('cascade'))
        .addColumn('project_id', t.id, (c) => c.notNull().references('projects.id'))
        .execute();
      await db.schema.createIndex('vm_projects_project_id_idx').on('vm_projects').column('project_id').execute();
      await db.schema.alterTable('api_tokens').addColumn('user_name', t.text).execute();
      await db.schema.alterTable('api_tokens').addColumn('scope', t.json).execute();
      await db.schema
        .createTable('audit_log')
        .addColumn('seq', t.bigint, (c) => c.primaryKey())
        .addColumn('at', t.timestamp, (c) => c.notNull())
        .addColumn('actor', t.text, (c) => c.notNull())
        .addColumn('action', t.text, (c) => c.notNull())
        .addColumn('target', t.text, (c) => c.notNull())
        .addColumn('source', t.text, (c) => c.notNull())
        .addColumn('decision', t.text, (c) => c.notNull())
        .addColumn('reason', t.text, (c) => c.notNull())
        .addColumn('status', t.integer, (c) => c.notNull())
        .addColumn('prev_hash', t.text, (c) => c.notNull())
        .addColumn('hash', t.text, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('audit_log_at_idx').on('audit_log').column('at').execute();
      await db.schema.createIndex('audit_log_actor_idx').on('audit_log').column('actor').execute();
    },

    async down(db: SchemaDb) {
      for (const table of ['audit_log', 'vm_projects', 'projects', 'roles', 'users']) await db.schema.dropTable(table).execute();
      await db.schema.alterTable('api_tokens').dropColumn('scope').execute();
      await db.schema.alterTable('api_tokens').dropColumn('user_name').execute();
    },
  };
}

/**
 * VMcasting (issue 9): appliance metadata beside the image library, publisher
 * keys, published channels, subscriptions to other managers' feeds, releases
 * (published and received) and the channel each VM follows.
 */
function vmcastingSchema(kind: BackendKind): Migration {
  const t = columnTypes[kind];
  return {
    async up(db: SchemaDb) {
      await db.schema
        .createTable('appliance_metadata')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('image_id', t.id, (c) => c.notNull().unique().references('images.id').onDelete('cascade'))
        .addColumn('architecture', t.text, (c) => c.notNull())
        .addColumn('boot_method', t.text, (c) => c.notNull())
        .addColumn('min_memory_mib', t.integer, (c) => c.notNull())
        .addColumn('min_cpus', t.integer, (c) => c.notNull())
        .addColumn('labels', t.json, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('vmcast_keys')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('name', t.name, (c) => c.notNull().unique())
        .addColumn('public_key', t.text, (c) => c.notNull())
        .addColumn('private_key', t.text, (c) => c.notNull())
        .addColumn('state', t.text, (c) => c.notNull())
        .addColumn('rev', t.integer, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('vmcast_channels')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('name', t.name, (c) => c.notNull().unique())
        .addColumn('title', t.text, (c) => c.notNull())
        .addColumn('description', t.text, (c) => c.notNull())
        .addColumn('rev', t.integer, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('vmcast_subscriptions')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('name', t.name, (c) => c.notNull().unique())
        .addColumn('url', t.text, (c) => c.notNull())
        .addColumn('pinned_keys', t.json, (c) => c.notNull())
        .addColumn('allowed_hosts', t.json, (c) => c.notNull())
        .addColumn('poll_seconds', t.integer, (c) => c.notNull())
        .addColumn('etag', t.text)
        .addColumn('last_modified', t.text)
        .addColumn('failures', t.integer, (c) => c.notNull())
        .addColumn('next_poll_at', t.timestamp)
        .addColumn('last_polled_at', t.timestamp)
        .addColumn('last_error', t.text)
        .addColumn('rev', t.integer, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('vmcast_releases')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('channel_id', t.id, (c) => c.references('vmcast_channels.id').onDelete('cascade'))
        .addColumn('subscription_id', t.id, (c) => c.references('vmcast_subscriptions.id').onDelete('cascade'))
        .addColumn('name', t.name, (c) => c.notNull())
        .addColumn('version', t.text, (c) => c.notNull())
        .addColumn('state', t.text, (c) => c.notNull())
        .addColumn('manifest', t.json, (c) => c.notNull())
        .addColumn('url', t.text, (c) => c.notNull())
        .addColumn('key_id', t.text, (c) => c.notNull())
        .addColumn('signature', t.text, (c) => c.notNull())
        .addColumn('image_id', t.id, (c) => c.references('images.id').onDelete('set null'))
        .addColumn('reason', t.text)
        .addColumn('received_bytes', t.bigint, (c) => c.notNull())
        .addColumn('rev', t.integer, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('vmcast_releases_channel_idx').on('vmcast_releases').columns(['channel_id', 'version']).execute();
      await db.schema.createIndex('vmcast_releases_subscription_idx').on('vmcast_releases').columns(['subscription_id', 'version']).execute();
      await db.schema
        .createTable('vmcast_follows')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('vm_id', t.id, (c) => c.notNull().unique().references('vms.id').onDelete('cascade'))
        .addColumn('subscription_id', t.id, (c) => c.notNull().references('vmcast_subscriptions.id').onDelete('cascade'))
        .addColumn('policy', t.text, (c) => c.notNull())
        .addColumn('held', t.boolean, (c) => c.notNull())
        .addColumn('current_release_id', t.id)
        .addColumn('pending_release_id', t.id)
        .addColumn('maintenance_window', t.text)
        .addColumn('rev', t.integer, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .execute();
    },
    async down(db: SchemaDb) {
      for (const table of ['vmcast_follows', 'vmcast_releases', 'vmcast_subscriptions', 'vmcast_channels', 'vmcast_keys', 'appliance_metadata']) {
        await db.schema.dropTable(table).execute();
      }
    },
  };
}

/**
 * Host power and maintenance (power/): each host's power driver settings
 * (secrets included, never returned by the API) and time spent powered off;
 * the VMs an evacuation moved away, so `restore` brings back exactly those;
 * the power policy and its state (one JSON value per name).
 */
function powerSchema(kind: BackendKind): Migration {
  const t = columnTypes[kind];
  return {
    async up(db: SchemaDb) {
      await db.schema
        .createTable('host_power')
        .addColumn('host_id', t.id, (c) => c.primaryKey().references('hosts.id').onDelete('cascade'))
        .addColumn('config', t.json, (c) => c.notNull())
        .addColumn('powered_off_at', t.timestamp)
        .addColumn('off_ms_total', t.bigint, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('host_evacuations')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('host_id', t.id, (c) => c.notNull().references('hosts.id').onDelete('cascade'))
        .addColumn('vm_id', t.id, (c) => c.notNull().references('vms.id').onDelete('cascade'))
        .addColumn('policy', t.text, (c) => c.notNull())
        .addColumn('to_host_id', t.id)
        .addColumn('operation_id', t.text, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('host_evacuations_host_id_idx').on('host_evacuations').column('host_id').execute();
      await db.schema
        .createTable('power_settings')
        .addColumn('name', t.name, (c) => c.primaryKey())
        .addColumn('value', t.json, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .execute();
    },
    async down(db: SchemaDb) {
      for (const table of ['power_settings', 'host_evacuations', 'host_power']) await db.schema.dropTable(table).execute();
    },
  };
}

/**
 * Mandatory access control (policy/): the active sHype policy (one row, slot
 * "active", replaced on load) and the security labels of hosts, volumes,
 * images and networks (a VM's label lives in its labels).
 */
function policySchema(kind: BackendKind): Migration {
  const t = columnTypes[kind];
  return {
    async up(db: SchemaDb) {
      await db.schema
        .createTable('security_policy')
        .addColumn('slot', t.name, (c) => c.primaryKey())
        .addColumn('name', t.name, (c) => c.notNull())
        .addColumn('document', t.json, (c) => c.notNull())
        .addColumn('source_format', t.text, (c) => c.notNull())
        .addColumn('loaded_by', t.text, (c) => c.notNull())
        .addColumn('loaded_at', t.timestamp, (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('security_labels')
        .addColumn('object_kind', t.name, (c) => c.notNull())
        .addColumn('object_id', t.name, (c) => c.notNull())
        .addColumn('label', t.text, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .addPrimaryKeyConstraint('security_labels_pk', ['object_kind', 'object_id'])
        .execute();
    },
    async down(db: SchemaDb) {
      for (const table of ['security_labels', 'security_policy']) await db.schema.dropTable(table).execute();
    },
  };
}

/**
 * Appliance packages (packages/): imported .eva packages (their manifest and
 * the library image of each file) and the publisher keys trusted for them.
 */
function packagesSchema(kind: BackendKind): Migration {
  const t = columnTypes[kind];
  return {
    async up(db: SchemaDb) {
      await db.schema
        .createTable('packages')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('name', t.name, (c) => c.notNull())
        .addColumn('version', t.text, (c) => c.notNull())
        .addColumn('description', t.text)
        .addColumn('format_version', t.integer, (c) => c.notNull())
        .addColumn('manifest', t.json, (c) => c.notNull())
        .addColumn('images', t.json, (c) => c.notNull())
        .addColumn('signer_key_id', t.text)
        .addColumn('source', t.text, (c) => c.notNull())
        .addColumn('origin', t.text, (c) => c.notNull())
        .addColumn('file_size_bytes', t.bigint)
        .addColumn('file_sha256', t.text)
        .addColumn('owner', t.text, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addUniqueConstraint('packages_name_version_key', ['name', 'version'])
        .execute();
      await db.schema
        .createTable('package_trusted_keys')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('key_id', t.name, (c) => c.notNull().unique())
        .addColumn('name', t.name, (c) => c.notNull().unique())
        .addColumn('public_key', t.text, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .execute();
    },
    async down(db: SchemaDb) {
      for (const table of ['package_trusted_keys', 'packages']) await db.schema.dropTable(table).execute();
    },
  };
}

/**
 * Networks and firewall (networks/): networks, security groups (their rules
 * as one JSON list, written whole with the group's rev), VM NICs on networks
 * (a NIC goes with its VM; a network with NICs cannot be deleted), and the
 * host-level rules.
 */
function networksSchema(kind: BackendKind): Migration {
  const t = columnTypes[kind];
  return {
    async up(db: SchemaDb) {
      await db.schema
        .createTable('networks')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('name', t.name, (c) => c.notNull().unique())
        .addColumn('kind', t.text, (c) => c.notNull())
        .addColumn('subnet', t.text, (c) => c.notNull())
        .addColumn('gateway', t.text, (c) => c.notNull())
        .addColumn('uplink', t.text)
        .addColumn('mtu', t.integer)
        .addColumn('vni', t.integer, (c) => c.notNull().unique())
        .addColumn('labels', t.json, (c) => c.notNull())
        .addColumn('owner', t.text, (c) => c.notNull())
        .addColumn('lab', t.text)
        .addColumn('rev', t.integer, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('security_groups')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('name', t.name, (c) => c.notNull().unique())
        .addColumn('description', t.text, (c) => c.notNull())
        .addColumn('rules', t.json, (c) => c.notNull())
        .addColumn('owner', t.text, (c) => c.notNull())
        .addColumn('lab', t.text)
        .addColumn('rev', t.integer, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('vm_nics')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('vm_id', t.id, (c) => c.notNull().references('vms.id').onDelete('cascade'))
        .addColumn('nic_index', t.integer, (c) => c.notNull())
        .addColumn('network_id', t.id, (c) => c.notNull().references('networks.id'))
        .addColumn('mac', t.text, (c) => c.notNull().unique())
        .addColumn('ip', t.text, (c) => c.notNull())
        .addColumn('tap', t.text, (c) => c.notNull().unique())
        .addColumn('groups', t.json, (c) => c.notNull())
        .addColumn('settings', t.json, (c) => c.notNull())
        .addColumn('rev', t.integer, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .addUniqueConstraint('vm_nics_vm_index_key', ['vm_id', 'nic_index'])
        .addUniqueConstraint('vm_nics_network_ip_key', ['network_id', 'ip'])
        .execute();
      await db.schema.createIndex('vm_nics_network_id_idx').on('vm_nics').column('network_id').execute();
      await db.schema
        .createTable('host_rules')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('network_id', t.id, (c) => c.references('networks.id').onDelete('cascade'))
        .addColumn('protocol', t.text, (c) => c.notNull())
        .addColumn('ports', t.json)
        .addColumn('cidr', t.text)
        .addColumn('action', t.text, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .execute();
    },
    async down(db: SchemaDb) {
      for (const table of ['host_rules', 'vm_nics', 'security_groups', 'networks']) await db.schema.dropTable(table).execute();
    },
  };
}

/**
 * Scale-out (cluster/): the managers sharing this store (one row per running
 * process, refreshed while it lives), the leader's record (the truth is the
 * leader lock; the row says who holds it and since when, with a term that grows
 * at every change), which manager runs each unfinished operation, and secrets
 * every manager needs (sealed with the key file all managers share).
 */
function clusterSchema(kind: BackendKind): Migration {
  const t = columnTypes[kind];
  return {
    async up(db: SchemaDb) {
      await db.schema
        .createTable('cluster_managers')
        .addColumn('id', t.name, (c) => c.primaryKey())
        .addColumn('name', t.text, (c) => c.notNull())
        .addColumn('url', t.text, (c) => c.notNull())
        .addColumn('version', t.text, (c) => c.notNull())
        .addColumn('pid', t.integer, (c) => c.notNull())
        .addColumn('started_at', t.timestamp, (c) => c.notNull())
        .addColumn('last_seen_at', t.timestamp, (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('cluster_leader')
        .addColumn('slot', t.name, (c) => c.primaryKey())
        .addColumn('manager_id', t.text, (c) => c.notNull())
        .addColumn('term', t.integer, (c) => c.notNull())
        .addColumn('since', t.timestamp, (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('operation_claims')
        .addColumn('operation_id', t.id, (c) => c.primaryKey().references('operations.id').onDelete('cascade'))
        .addColumn('manager_id', t.text, (c) => c.notNull())
        .addColumn('claimed_at', t.timestamp, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('operation_claims_manager_idx').on('operation_claims').column('manager_id').execute();
      await db.schema
        .createTable('cluster_secrets')
        .addColumn('name', t.name, (c) => c.primaryKey())
        .addColumn('sealed', t.text, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .execute();
    },
    async down(db: SchemaDb) {
      for (const table of ['cluster_secrets', 'operation_claims', 'cluster_leader', 'cluster_managers']) await db.schema.dropTable(table).execute();
    },
  };
}

/**
 * Labs (labs/): one row per lab; its networks, security groups and VMs are
 * JSON lists in the row (always read and written with the lab).
 */
function labsSchema(kind: BackendKind): Migration {
  const t = columnTypes[kind];
  return {
    async up(db: SchemaDb) {
      await db.schema
        .createTable('labs')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('name', t.name, (c) => c.notNull().unique())
        .addColumn('state', t.text, (c) => c.notNull())
        .addColumn('source', t.json, (c) => c.notNull())
        .addColumn('manifest', t.json, (c) => c.notNull())
        .addColumn('network_mode', t.text, (c) => c.notNull())
        .addColumn('networks', t.json, (c) => c.notNull())
        .addColumn('security_groups', t.json, (c) => c.notNull())
        .addColumn('vms', t.json, (c) => c.notNull())
        .addColumn('labels', t.json, (c) => c.notNull())
        .addColumn('update_policy', t.text, (c) => c.notNull())
        .addColumn('owner', t.text, (c) => c.notNull())
        .addColumn('project', t.text)
        .addColumn('last_error', t.text)
        .addColumn('rev', t.integer, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .execute();
    },
    async down(db: SchemaDb) {
      await db.schema.dropTable('labs').execute();
    },
  };
}

/** Package updates to guests (VMcasting): channel packages and each VM's packages (offer, approvals, report). */
function guestPackagesSchema(kind: BackendKind): Migration {
  const t = columnTypes[kind];
  return {
    async up(db: SchemaDb) {
      await db.schema
        .createTable('vmcast_packages')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('channel_id', t.id, (c) => c.references('vmcast_channels.id').onDelete('cascade'))
        .addColumn('subscription_id', t.id, (c) => c.references('vmcast_subscriptions.id').onDelete('cascade'))
        .addColumn('name', t.name, (c) => c.notNull())
        .addColumn('version', t.text, (c) => c.notNull())
        .addColumn('state', t.text, (c) => c.notNull())
        .addColumn('manifest', t.json, (c) => c.notNull())
        .addColumn('sha256', t.text, (c) => c.notNull())
        .addColumn('size_bytes', t.bigint, (c) => c.notNull())
        .addColumn('url', t.text, (c) => c.notNull())
        .addColumn('key_id', t.text, (c) => c.notNull())
        .addColumn('signature', t.text, (c) => c.notNull())
        .addColumn('reason', t.text)
        .addColumn('rev', t.integer, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('vmcast_packages_channel_idx').on('vmcast_packages').columns(['channel_id', 'name']).execute();
      await db.schema.createIndex('vmcast_packages_subscription_idx').on('vmcast_packages').columns(['subscription_id', 'name']).execute();
      await db.schema
        .createTable('vm_packages')
        .addColumn('id', t.id, (c) => c.primaryKey())
        .addColumn('vm_id', t.id, (c) => c.notNull().unique().references('vms.id').onDelete('cascade'))
        .addColumn('approved', t.json, (c) => c.notNull())
        .addColumn('offered', t.json, (c) => c.notNull())
        .addColumn('installed', t.json, (c) => c.notNull())
        .addColumn('reported_at', t.timestamp)
        .addColumn('pushed_host_id', t.id)
        .addColumn('pushed_at', t.timestamp)
        .addColumn('rev', t.integer, (c) => c.notNull())
        .addColumn('created_at', t.timestamp, (c) => c.notNull())
        .addColumn('updated_at', t.timestamp, (c) => c.notNull())
        .execute();
    },
    async down(db: SchemaDb) {
      for (const table of ['vm_packages', 'vmcast_packages']) await db.schema.dropTable(table).execute();
    },
  };
}

/** Every migration, by name, for one backend. Append only. */
export function storeMigrations(kind: BackendKind): Record<string, Migration> {
  return {
    '0001_initial': initialSchema(kind),
    '0003_policy': policySchema(kind),
    '0005_power': powerSchema(kind),
    '0002_access': accessSchema(kind),
    '0006_vmcasting': vmcastingSchema(kind),
    '0010_guest_packages': guestPackagesSchema(kind),
    '0011_cluster_leader': clusterSchema(kind),
    '0007_networks': networksSchema(kind),
    '0008_packages': packagesSchema(kind),
    '0009_labs': labsSchema(kind),
  };
}

export const migrationTableName = 'drover_migration';
export const migrationLockTableName = 'drover_migration_lock';

function migrator(db: SchemaDb, kind: BackendKind): Migrator {
  const provider: MigrationProvider = { getMigrations: async () => storeMigrations(kind) };
  return new Migrator({ db, provider, migrationTableName, migrationLockTableName });
}

/**
 * Brings the schema up to date; returns the names of the migrations it ran.
 * Fails (`unavailable`) naming the migration that failed, or when the database
 * has migrations this version does not know (it was written by a newer one).
 */
export async function migrateToLatest(db: SchemaDb, kind: BackendKind): Promise<string[]> {
  const { error, results = [] } = await migrator(db, kind).migrateToLatest();
  if (error !== undefined) {
    const failed = results.find((result) => result.status === 'Error')?.migrationName;
    const message = error instanceof Error ? error.message : String(error);
    const newer = /previously executed migration .* is missing/.test(message);
    throw errors.unavailable(
      newer
        ? `Cannot open the store: its schema was written by a newer Drover (${message})`
        : `Cannot migrate the store schema${failed ? ` at "${failed}"` : ''}: ${message}`,
      { migration: failed ?? null },
      error,
    );
  }
  return results.filter((result) => result.status === 'Success').map((result) => result.migrationName);
}

/** The names of the migrations applied to the database, oldest first. */
export async function appliedMigrations(db: SchemaDb, kind: BackendKind): Promise<string[]> {
  const migrations = await migrator(db, kind).getMigrations();
  return migrations.filter((migration) => migration.executedAt !== undefined).map((migration) => migration.name);
}

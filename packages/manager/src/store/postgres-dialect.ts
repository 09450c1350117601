import { PostgresDialect } from 'kysely';
import pg from 'pg';

export interface PostgresPoolOptions {
  connectionString: string;
  /** Connections in the pool; 10 by default. */
  maxConnections?: number;
  /** How long to wait for a connection (the pool's or a new one); 10 s by default. */
  connectTimeoutMs?: number;
  /** Server-side limit on one statement, lock waits included; 30 s by default. */
  statementTimeoutMs?: number;
  /** A transaction idle longer than this is ended by the server (its locks freed); 60 s by default. */
  idleInTransactionTimeoutMs?: number;
  /** Errors of idle pooled connections (e.g. a server restart); the next query reconnects. */
  onIdleError?: (error: Error) => void;
}

const oid = { int8: 20, json: 114, jsonb: 3802, timestamptz: 1184 } as const;

/**
 * Rows come back in the shape SQLite gives, so one record codec serves both:
 * int8 (bigint, bigserial, count, sum) as a number (sizes stay below 2^53),
 * json/jsonb as their text, timestamptz as an ISO 8601 string.
 */
const types: pg.CustomTypesConfig = {
  getTypeParser: ((id: number, format?: 'text' | 'binary') => {
    if (format === undefined || format === 'text') {
      if (id === oid.int8) return (value: string) => Number(value);
      if (id === oid.json || id === oid.jsonb) return (value: string) => value;
      if (id === oid.timestamptz) {
        const parseDate = pg.types.getTypeParser(oid.timestamptz, 'text') as (value: string) => Date;
        return (value: string) => parseDate(value).toISOString();
      }
    }
    return pg.types.getTypeParser(id, format as 'text');
  }) as pg.CustomTypesConfig['getTypeParser'],
};

export function createPostgresPool(options: PostgresPoolOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: options.connectionString,
    max: options.maxConnections ?? 10,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 10_000,
    statement_timeout: options.statementTimeoutMs ?? 30_000,
    idle_in_transaction_session_timeout: options.idleInTransactionTimeoutMs ?? 60_000,
    application_name: 'drover-manager',
    types,
  });
  // Without a listener, an idle connection's error would crash the process.
  pool.on('error', (error) => options.onIdleError?.(error));
  return pool;
}

export function createPostgresDialect(pool: pg.Pool): PostgresDialect {
  return new PostgresDialect({ pool });
}

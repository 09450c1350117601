import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Type, type Static } from 'typebox';
import { Compile } from 'typebox/compile';
import { parse as parseYaml } from 'yaml';
import { errors } from '@drover/core';
import { StringEnum } from '@drover/api';

export const ManagerConfigSchema = Type.Object(
  {
    /** host:port of the API. */
    listen: Type.String({ pattern: '^[^:\\s]+:\\d{1,5}$' }),
    dataDir: Type.String({ pattern: '^/' }),
    /**
     * host:port of a second, TLS listener (certificate from the cluster CA, for that
     * address) that agents on other machines join through, pinning the CA.
     */
    tlsListen: Type.Optional(Type.String({ pattern: '^[0-9.]+:\\d{1,5}$' })),
    /** `sqlite` (default: `<dataDir>/drover.db`) or a PostgreSQL connection string. */
    store: Type.Union([Type.Literal('sqlite'), Type.String({ pattern: '^postgres(ql)?://' })]),
    /** Bearer token of the admin; generated into `<dataDir>/admin-token` when absent. */
    adminToken: Type.Optional(Type.String({ minLength: 16 })),
    /** Token Prometheus sends to /metrics; generated into `<dataDir>/metrics-token` when absent. */
    metricsToken: Type.Optional(Type.String({ minLength: 16 })),
    heartbeatMs: Type.Integer({ minimum: 100 }),
    missesBeforeUnreachable: Type.Integer({ minimum: 1 }),
    agentTimeoutMs: Type.Integer({ minimum: 100 }),
    /** Build the demo appliances into the library at start. */
    appliances: Type.Boolean(),
    applianceCacheDir: Type.String({ pattern: '^/' }),
    logLevel: StringEnum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  },
  { additionalProperties: false },
);
export type ManagerConfig = Static<typeof ManagerConfigSchema>;
const check = Compile(ManagerConfigSchema);

export function defaultManagerConfig(dataDir = '/var/lib/drover/manager'): ManagerConfig {
  return {
    listen: '127.0.0.1:8300',
    dataDir,
    store: 'sqlite',
    heartbeatMs: 5_000,
    missesBeforeUnreachable: 3,
    agentTimeoutMs: 30_000,
    appliances: true,
    applianceCacheDir: process.env.DROVER_APPLIANCE_CACHE ?? '/var/cache/drover/appliances',
    logLevel: 'warn',
  };
}

const envKeys: Record<string, keyof ManagerConfig> = {
  LISTEN: 'listen',
  TLS_LISTEN: 'tlsListen',
  DATA_DIR: 'dataDir',
  STORE: 'store',
  ADMIN_TOKEN: 'adminToken',
  LOG_LEVEL: 'logLevel',
};

/** Defaults, then the YAML file, then DROVER_MANAGER_* variables; a bad key stops the start naming it. */
export function loadManagerConfig(options: { file?: string; env?: NodeJS.ProcessEnv; overrides?: Partial<ManagerConfig> } = {}): ManagerConfig {
  const env = options.env ?? process.env;
  let fromFile: Record<string, unknown> = {};
  if (options.file) {
    try {
      fromFile = (parseYaml(readFileSync(options.file, 'utf8')) ?? {}) as Record<string, unknown>;
    } catch (cause) {
      throw errors.invalid(`Cannot read manager configuration "${options.file}": ${(cause as Error).message}`);
    }
  }
  const fromEnv: Record<string, unknown> = {};
  for (const [suffix, key] of Object.entries(envKeys)) {
    const value = env[`DROVER_MANAGER_${suffix}`];
    if (value !== undefined) fromEnv[key] = value;
  }
  const dataDir = (options.overrides?.dataDir ?? fromEnv.dataDir ?? fromFile.dataDir) as string | undefined;
  const merged = { ...defaultManagerConfig(dataDir ? path.resolve(dataDir) : undefined), ...fromFile, ...fromEnv, ...options.overrides };
  if (!check.Check(merged)) {
    const first = check.Errors(merged)[0];
    const key = first?.instancePath ? first.instancePath.slice(1).replaceAll('/', '.') : String((first?.params as { additionalProperties?: string[] } | undefined)?.additionalProperties?.[0] ?? '(root)');
    throw errors.invalid(`Invalid manager configuration: key "${key}" ${first?.message ?? 'is invalid'}`, { key });
  }
  return merged as ManagerConfig;
}

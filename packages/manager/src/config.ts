import path from 'node:path';
import { Type, type Static } from 'typebox';
import { maxVolumeUploadBytes, StringEnum } from '@drover/api';
import { loadLayeredConfig } from '@drover/agent';

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
    /** Directories `POST /api/v1/images` may copy a file from (`source.path`), judged by real path; default `<dataDir>/import`. */
    imageImportDirs: Type.Array(Type.String({ pattern: '^/' }), { maxItems: 64 }),
    /** The largest file an image import downloads or copies; at most what an agent accepts as a volume upload (8 GiB, the default). */
    imageMaxBytes: Type.Integer({ minimum: 1024 * 1024, maximum: maxVolumeUploadBytes }),
    /** The largest virtual disk size an imported image may have (default 256 GiB). */
    imageMaxVirtualBytes: Type.Integer({ minimum: 1024 * 1024 }),
    /** Time limit of one image download, headers to last byte (default 1 hour). */
    imageDownloadTimeoutMs: Type.Integer({ minimum: 1000 }),
    logLevel: StringEnum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
    /** The web console's built files; default: packages/web/dist of this installation; `none` turns the console off. */
    webRoot: Type.Optional(Type.String({ pattern: '^(/|none$)' })),
  },
  { additionalProperties: false },
);
export type ManagerConfig = Static<typeof ManagerConfigSchema>;

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
    imageImportDirs: [path.join(dataDir, 'import')],
    imageMaxBytes: maxVolumeUploadBytes,
    imageMaxVirtualBytes: 256 * 1024 ** 3,
    imageDownloadTimeoutMs: 3_600_000,
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
  WEB_ROOT: 'webRoot',
};

/** Defaults, then the YAML file, then DROVER_MANAGER_* variables; a bad key stops the start naming it. */
export function loadManagerConfig(options: { file?: string; env?: NodeJS.ProcessEnv; overrides?: Partial<ManagerConfig> } = {}): ManagerConfig {
  return loadLayeredConfig<ManagerConfig>({
    what: 'manager',
    schema: ManagerConfigSchema,
    defaults: (dir) => defaultManagerConfig(dir ? path.resolve(dir) : undefined),
    dirKey: 'dataDir',
    envPrefix: 'MANAGER',
    envKeys,
    ...options,
  });
}

import path from 'node:path';
import { Type, type Static } from 'typebox';
import { maxVolumeUploadBytes, StringEnum } from '@drover/api';
import { loadLayeredConfig } from '@drover/agent';

const LdapConfigSchema = Type.Object(
  {
    /** ldap://host:port (with startTls) or ldaps://host:port. */
    url: Type.String({ pattern: '^ldaps?://' }),
    startTls: Type.Optional(Type.Boolean()),
    /** PEM file of the CA that signed the directory's certificate. */
    caFile: Type.Optional(Type.String({ pattern: '^/' })),
    bindDn: Type.String({ minLength: 1 }),
    bindPassword: Type.String(),
    userBase: Type.String({ minLength: 1 }),
    userFilter: Type.Optional(Type.String({ pattern: '\\{user\\}' })),
    groupBase: Type.String({ minLength: 1 }),
    groupFilter: Type.Optional(Type.String({ minLength: 3 })),
    /** Group cn → roles over scopes, e.g. {"lab-admins": [{"role": "operator", "scope": "*"}]}. */
    groupRoles: Type.Record(Type.String(), Type.Array(Type.Object({ role: Type.String({ minLength: 1 }), scope: Type.String({ minLength: 1 }) }, { additionalProperties: false }))),
    /** Group membership is re-read at most this often per signed-in user (default 300). */
    refreshSeconds: Type.Optional(Type.Integer({ minimum: 1 })),
    timeoutMs: Type.Optional(Type.Integer({ minimum: 100 })),
  },
  { additionalProperties: false },
);

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
    /**
     * Where imported images (`library/`) and packages (`packages/`) are kept; default the data
     * directory. Several managers on one PostgreSQL must share it (one mount at the same path on
     * each), since the store names files another manager may have to stream to an agent.
     */
    filesDir: Type.Optional(Type.String({ pattern: '^/' })),
    imageImportDirs: Type.Array(Type.String({ pattern: '^/' }), { maxItems: 64 }),
    /** The largest file an image import downloads or copies; at most what an agent accepts as a volume upload (8 GiB, the default). */
    imageMaxBytes: Type.Integer({ minimum: 1024 * 1024, maximum: maxVolumeUploadBytes }),
    /** The largest virtual disk size an imported image may have (default 256 GiB). */
    imageMaxVirtualBytes: Type.Integer({ minimum: 1024 * 1024 }),
    /** Time limit of one image download, headers to last byte (default 1 hour). */
    imageDownloadTimeoutMs: Type.Integer({ minimum: 1000 }),
    logLevel: StringEnum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
    /** How often the power policy looks at its schedule and the capacity reserve (default 30 s). */
    powerTickMs: Type.Optional(Type.Integer({ minimum: 100 })),
    /** How long HA waits after a host is lost before it judges (fencing storms are seen then); default 5 s. */
    haGraceMs: Type.Optional(Type.Integer({ minimum: 0 })),
    /** How long a power driver's claim is checked against its status before it counts as a lie (default 30 s). */
    powerVerifyMs: Type.Optional(Type.Integer({ minimum: 100 })),
    /** How long a host powered on may take until its agent answers (default 10 minutes). */
    powerBootTimeoutMs: Type.Optional(Type.Integer({ minimum: 1000 })),
    /** Several managers on PostgreSQL (docs/scale-out.md): how often each refreshes its row, tries for the lead and adopts orphaned operations (default 1000). */
    clusterIntervalMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 60_000 })),
    /**
     * A 32-byte key file (mode 0600) every manager of the cluster has: the CA key and the
     * manager's tokens are then kept sealed (AES-256-GCM) in the shared store (docs/scale-out.md).
     * Also DROVER_SECRET_KEY_FILE.
     */
    secretKeyFile: Type.Optional(Type.String({ pattern: '^/' })),
    /** Cluster load balancing (docs/planner.md): the automatic rebalance is off unless `auto` is true. */
    rebalance: Type.Optional(
      Type.Object(
        {
          auto: Type.Optional(Type.Boolean()),
          /** Imbalance (most − least loaded online host, 0–1) above which the automatic rebalance starts; default 0.2. */
          threshold: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
          /** No automatic rebalance sooner than this after the last one (default 1800000, 30 minutes). */
          cooldownMs: Type.Optional(Type.Integer({ minimum: 0 })),
          /** How often the imbalance is checked (default 60000). */
          intervalMs: Type.Optional(Type.Integer({ minimum: 100 })),
          /** Live migrations at once (default 2). */
          concurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 16 })),
        },
        { additionalProperties: false },
      ),
    ),
    /** The web console's built files; default: packages/web/dist of this installation; `none` turns the console off. */
    webRoot: Type.Optional(Type.String({ pattern: '^(/|none$)' })),
    /** Users from an LDAP directory (see docs/access-control-users.md); absent: local users only. */
    ldap: Type.Optional(LdapConfigSchema),
    /** Failed sign-ins from one address and user name before 429 (default 5; the address alone gets four times as many). */
    loginMaxFailures: Type.Optional(Type.Integer({ minimum: 1 })),
    /** The window those failures are counted in (default 60 s). */
    loginWindowSeconds: Type.Optional(Type.Integer({ minimum: 1 })),
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
  SECRET_KEY_FILE: 'secretKeyFile',
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

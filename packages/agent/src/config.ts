import os from 'node:os';
import path from 'node:path';
import { Type, type Static } from 'typebox';
import { errors } from '@drover/core';
import { StringEnum } from '@drover/api';
import { loadLayeredConfig } from './layered-config.js';

export const AgentConfigSchema = Type.Object(
  {
    /** host:port for the HTTP API. */
    listen: Type.String({ pattern: '^[^:\\s]+:\\d{1,5}$' }),
    stateDir: Type.String({ pattern: '^/' }),
    /** Bearer token; when absent one is generated into `<stateDir>/agent-token`. */
    token: Type.Optional(Type.String({ minLength: 16 })),
    hostName: Type.String({ minLength: 1, maxLength: 63 }),
    /** The unprivileged account QEMU runs as; created when missing. */
    qemuUser: Type.String({ pattern: '^[a-z_][a-z0-9_-]*$' }),
    capacity: Type.Object(
      { cpus: Type.Integer({ minimum: 1 }), memoryMiB: Type.Integer({ minimum: 64 }) },
      { additionalProperties: false },
    ),
    /** vCPUs the host may hand out per physical CPU (like OpenStack's cpu_allocation_ratio); memory is never overcommitted. */
    cpuAllocationRatio: Type.Number({ minimum: 1, maximum: 64 }),
    cpuModels: Type.Array(Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$' }), { minItems: 1 }),
    defaultCpuModel: Type.String(),
    accel: Type.Union([Type.Literal('auto'), Type.Literal('kvm'), Type.Literal('tcg')]),
    stopTimeoutMs: Type.Integer({ minimum: 0 }),
    qmpTimeoutMs: Type.Integer({ minimum: 100 }),
    /** Flush a saved VM state to disk before reporting it saved (libvirt's iohelper does the same). */
    durableSaves: Type.Boolean(),
    applianceCacheDir: Type.String({ pattern: '^/' }),
    /** Directories that volume imports (`importFrom`) may read; the appliance cache is always allowed. */
    importDirs: Type.Array(Type.String({ pattern: '^/' })),
    /** Where the acceleration probe's verdict is kept, per machine boot. */
    probeCacheFile: Type.String({ pattern: '^/' }),
    pools: Type.Array(
      Type.Object(
        {
          name: Type.String({ minLength: 1, maxLength: 63, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$' }),
          /** A directory pool's path; an iSCSI pool has `iscsi` instead. */
          path: Type.Optional(Type.String({ pattern: '^/' })),
          shared: Type.Optional(Type.Boolean()),
          iscsi: Type.Optional(Type.Object({ portal: Type.String({ minLength: 3, maxLength: 262 }), target: Type.String({ minLength: 5, maxLength: 223 }) }, { additionalProperties: false })),
        },
        { additionalProperties: false },
      ),
    ),
    qemuBinary: Type.String(),
    logLevel: StringEnum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  },
  { additionalProperties: false },
);
export type AgentConfig = Static<typeof AgentConfigSchema>;

export function defaultAgentConfig(stateDir = '/var/lib/drover/agent'): AgentConfig {
  return {
    listen: '127.0.0.1:8301',
    stateDir,
    hostName: os.hostname().split('.')[0] ?? 'host',
    qemuUser: 'drover',
    capacity: { cpus: os.cpus().length, memoryMiB: Math.floor(os.totalmem() / 1024 / 1024) },
    cpuAllocationRatio: 4,
    cpuModels: ['qemu64', 'max'],
    defaultCpuModel: 'qemu64',
    accel: 'auto',
    stopTimeoutMs: 60_000,
    qmpTimeoutMs: 10_000,
    durableSaves: true,
    applianceCacheDir: process.env.DROVER_APPLIANCE_CACHE ?? '/var/cache/drover/appliances',
    importDirs: [path.join(stateDir, 'import')],
    probeCacheFile: process.env.DROVER_PROBE_CACHE ?? '/var/cache/drover/accel-probe.json',
    pools: [{ name: 'default', path: path.join(stateDir, 'pools', 'default'), shared: false }],
    qemuBinary: 'qemu-system-x86_64',
    logLevel: 'warn',
  };
}

/** Environment overrides: DROVER_AGENT_<KEY> for top-level scalar keys, e.g. DROVER_AGENT_LISTEN. */
const envKeys: Record<string, keyof AgentConfig> = {
  LISTEN: 'listen',
  STATE_DIR: 'stateDir',
  TOKEN: 'token',
  HOST_NAME: 'hostName',
  QEMU_USER: 'qemuUser',
  ACCEL: 'accel',
  LOG_LEVEL: 'logLevel',
  QEMU_BINARY: 'qemuBinary',
};

/**
 * Loads the agent configuration: defaults, then the YAML file, then the
 * environment. Any bad key fails the start with a message naming it.
 */
export function loadAgentConfig(
  options: { file?: string; env?: NodeJS.ProcessEnv; overrides?: Partial<AgentConfig> } = {},
): AgentConfig {
  const config = loadLayeredConfig<AgentConfig>({
    what: 'agent',
    schema: AgentConfigSchema,
    defaults: (dir) => defaultAgentConfig(dir),
    dirKey: 'stateDir',
    envPrefix: 'AGENT',
    envKeys,
    ...options,
  });
  if (!config.cpuModels.includes(config.defaultCpuModel)) {
    throw errors.invalid(`Invalid agent configuration: key "defaultCpuModel" is "${config.defaultCpuModel}", which is not in cpuModels (${config.cpuModels.join(', ')})`, { key: 'defaultCpuModel' });
  }
  return config;
}

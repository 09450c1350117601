import { Type, type Static, type TSchema } from 'typebox';
import { Name, StringEnum } from './common.js';

/**
 * The manager's public REST API, `/api/v1/...`: what the CLI, the web console
 * and scripts use. Requests are validated against these schemas (unknown
 * fields refused); answers are described by them in the OpenAPI document.
 */

export const Labels = Type.Record(Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$' }), Type.String({ maxLength: 255, pattern: '^[^\\x00-\\x1f]*$' }), {
  description: 'Free-form key/value labels; keys: at most 63 letters, digits, "_", ".", "/" or "-", starting with a letter or digit',
  // A record only checks the keys that match its pattern (the key's maxLength is not used at all): refuse the others.
  additionalProperties: false,
});

export const Uuid = Type.String({ pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' });
/** An object is addressed by its id or its name. */
export const IdOrName = Type.String({ minLength: 1, maxLength: 63, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$' });
export const Timestamp = Type.String({ description: 'ISO 8601' });

export const hostStates = ['joining', 'online', 'unreachable', 'maintenance', 'powered_off'] as const;
export const Host = Type.Object({
  id: Uuid,
  name: Type.String(),
  address: Type.String(),
  state: StringEnum(hostStates),
  capacity: Type.Object({ cpus: Type.Integer(), memoryMiB: Type.Integer() }),
  allocated: Type.Object({ cpus: Type.Integer(), memoryMiB: Type.Integer(), vms: Type.Integer() }),
  cpuModels: Type.Array(Type.String()),
  labels: Labels,
  certExpiresAt: Type.Union([Timestamp, Type.Null()]),
  lastHeartbeatAt: Type.Union([Timestamp, Type.Null()]),
  rev: Type.Integer(),
  createdAt: Timestamp,
});
export type Host = Static<typeof Host>;

export const JoinTokenCreate = Type.Object(
  { ttlSeconds: Type.Optional(Type.Integer({ minimum: 60, maximum: 7 * 24 * 3600, description: 'Default 3600' })) },
  { additionalProperties: false },
);
export const JoinToken = Type.Object({
  token: Type.String({ description: 'Shown once; give it to `drover-agent --join`' }),
  expiresAt: Timestamp,
  caFingerprint: Type.String({ description: 'sha256 of the cluster CA certificate, for the agent to pin' }),
});

export const HostJoin = Type.Object(
  {
    token: Type.String({ minLength: 16, maxLength: 128 }),
    csr: Type.String({ minLength: 64, maxLength: 8192 }),
    name: Name,
    address: Type.String({ minLength: 8, maxLength: 256, pattern: '^https://' }),
    sanIps: Type.Optional(Type.Array(Type.String({ maxLength: 45 }), { maxItems: 8 })),
    sanDns: Type.Optional(Type.Array(Type.String({ maxLength: 253 }), { maxItems: 8 })),
  },
  { additionalProperties: false },
);
export const HostJoined = Type.Object({ hostId: Uuid, certPem: Type.String(), caPem: Type.String(), crlPem: Type.Optional(Type.String()) });

export const managedVmStates = ['defined', 'starting', 'running', 'paused', 'saving', 'saved', 'stopping', 'stopped', 'migrating', 'error'] as const;
export type ManagedVmState = (typeof managedVmStates)[number];

export const VmCreate = Type.Object(
  {
    name: Name,
    image: Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*(:[A-Za-z0-9_.+-]+)?$', description: 'Appliance image name (e.g. "web") or name:version' }),
    cpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
    memoryMiB: Type.Optional(Type.Integer({ minimum: 64, maximum: 1024 * 1024 })),
    cpuModel: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$' })),
    labels: Type.Optional(Labels),
    antiAffinityGroups: Type.Optional(Type.Array(Name, { maxItems: 8 })),
    hostInclude: Type.Optional(Type.Array(IdOrName, { maxItems: 64 })),
    hostExclude: Type.Optional(Type.Array(IdOrName, { maxItems: 64 })),
    forwards: Type.Optional(
      Type.Array(
        Type.Object({ hostPort: Type.Integer({ minimum: 1024, maximum: 65535 }), guestPort: Type.Integer({ minimum: 1, maximum: 65535 }) }, { additionalProperties: false }),
        { maxItems: 16 },
      ),
    ),
    cmdline: Type.Optional(Type.String({ maxLength: 1024, pattern: '^[A-Za-z0-9_.:/@,+= -]*$', description: 'Extra kernel command-line settings (drover.* keys)' })),
    autostart: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type VmCreate = Static<typeof VmCreate>;

export const VmEdit = Type.Object(
  {
    cpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
    memoryMiB: Type.Optional(Type.Integer({ minimum: 64, maximum: 1024 * 1024 })),
    labels: Type.Optional(Labels),
    autostart: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type VmEdit = Static<typeof VmEdit>;

export const Vm = Type.Object({
  id: Uuid,
  name: Type.String(),
  state: StringEnum(managedVmStates),
  hostId: Type.Union([Uuid, Type.Null()]),
  hostName: Type.Union([Type.String(), Type.Null()]),
  spec: Type.Object({
    image: Type.String(),
    cpus: Type.Integer(),
    memoryMiB: Type.Integer(),
    cpuModel: Type.Optional(Type.String()),
    antiAffinityGroups: Type.Array(Type.String()),
    hostInclude: Type.Array(Type.String()),
    hostExclude: Type.Array(Type.String()),
    forwards: Type.Array(Type.Object({ hostPort: Type.Integer(), guestPort: Type.Integer() })),
    cmdline: Type.String(),
  }),
  labels: Labels,
  owner: Type.String(),
  autostart: Type.Boolean(),
  lastError: Type.Union([Type.String(), Type.Null()]),
  rev: Type.Integer(),
  createdAt: Timestamp,
  updatedAt: Timestamp,
});
export type Vm = Static<typeof Vm>;

export const operationStates = ['pending', 'running', 'done', 'failed', 'cancelled', 'rolled_back'] as const;
export const Operation = Type.Object({
  id: Uuid,
  kind: Type.String({ description: 'e.g. vm.start, vm.stop, host.remove' }),
  targetKind: Type.String(),
  targetId: Type.String(),
  state: StringEnum(operationStates),
  phase: Type.String(),
  progress: Type.Integer({ minimum: 0, maximum: 100 }),
  error: Type.Union([Type.Object({ code: Type.String(), message: Type.String(), details: Type.Record(Type.String(), Type.Unknown()) }), Type.Null()]),
  result: Type.Union([Type.Unknown(), Type.Null()]),
  actor: Type.String(),
  createdAt: Timestamp,
  updatedAt: Timestamp,
  startedAt: Type.Union([Timestamp, Type.Null()]),
  finishedAt: Type.Union([Timestamp, Type.Null()]),
});
export type Operation = Static<typeof Operation>;

export const Image = Type.Object({
  id: Uuid,
  name: Type.String(),
  version: Type.String(),
  format: Type.String(),
  sizeBytes: Type.Integer(),
  sha256: Type.String(),
  source: Type.String(),
  createdAt: Timestamp,
});
export type Image = Static<typeof Image>;

/** A page of a list; `next` is the cursor of the following page, absent on the last one. */
export function Page<T extends TSchema>(item: T) {
  return Type.Object({ items: Type.Array(item), next: Type.Optional(Type.String()) });
}

export const ListQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: 'Default 100' })),
    cursor: Type.Optional(Type.String({ maxLength: 512, pattern: '^[A-Za-z0-9_-]+$' })),
    state: Type.Optional(Type.String({ maxLength: 32, pattern: '^[a-z_]+$' })),
    host: Type.Optional(IdOrName),
    label: Type.Optional(Type.String({ maxLength: 320, pattern: '^[^=\\x00-\\x1f]+=[^\\x00-\\x1f]*$', description: 'key=value' })),
    name: Type.Optional(Type.String({ maxLength: 63, pattern: '^[A-Za-z0-9_.-]*$' })),
  },
  { additionalProperties: false },
);
export type ListQuery = Static<typeof ListQuery>;

export const ActionQuery = Type.Object(
  { wait: Type.Optional(Type.Boolean({ description: 'Answer when the operation has ended instead of at once (202)' })) },
  { additionalProperties: false },
);

import { Type, type Static } from 'typebox';
import { Name, VolumeName } from './common.js';
import { SnapshotInfo, VmSpec, VolumeEnsure } from './agent.js';

/**
 * Live migration: the manager's request, and the agent routes it drives on
 * the source and the destination host (docs/migration.md has the protocol).
 */

const Uuid = Type.String({ pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' });
const NodeName = Type.String({ pattern: '^[A-Za-z][A-Za-z0-9_.-]{0,25}$' });
const Address = Type.String({ pattern: '^[0-9]{1,3}(\\.[0-9]{1,3}){3}$', description: 'IPv4 address' });

// ---------------------------------------------------------------- manager API

export const MigrateRequest = Type.Object(
  {
    to: Type.String({ minLength: 1, maxLength: 64, description: 'Destination host: id or name' }),
    storage: Type.Optional(Type.Boolean({ description: 'Copy local disks to the destination (NBD mirror); without it every disk must be on a shared pool' })),
    downtimeMs: Type.Optional(Type.Integer({ minimum: 1, maximum: 60_000, description: 'Longest pause allowed at switchover, default 300. QEMU\'s downtime-limit starts lower (30 ms, or this if smaller) and doubles with every pass of pre-copy that does not converge, up to this (docs/migration.md, "Downtime steps")' })),
    bandwidth: Type.Optional(Type.Integer({ minimum: 1_048_576, maximum: 1024 ** 4, description: 'Bytes per second for the memory stream (QEMU max-bandwidth), 1 MiB/s to 1 TiB/s; default 1 GiB/s' })),
    mirrorBandwidth: Type.Optional(Type.Integer({ minimum: 1_048_576, maximum: 1024 ** 4, description: 'Bytes per second for the disk mirror (blockdev-mirror speed), so the copy of local disks does not saturate the link; default unlimited' })),
    postcopy: Type.Optional(Type.Boolean({ description: 'Allow switching to post-copy; refused (unavailable) where the destination has no userfaultfd' })),
    timeoutMs: Type.Optional(Type.Integer({ minimum: 1_000, maximum: 86_400_000, description: 'Pre-copy that has not reached switchover by then is cancelled; default 600000' })),
  },
  { additionalProperties: false },
);
export type MigrateRequest = Static<typeof MigrateRequest>;

/** QEMU's `downtime-limit` at the start of pre-copy, when the allowed downtime is larger. */
export const downtimeStartMs = 30;

/**
 * The parallel TLS connections a stream between hosts sends its RAM pages over (QEMU's `multifd`,
 * `multifd-channels`; zero pages and device state stay on the main connection): encryption and
 * decryption spread over as many threads on each side instead of one. Measured on 2 cores under
 * TCG (raw QMP, idle 256 MiB guests) the total fell from about 960 to 765 ms (docs/migration.md).
 */
export const migrationMultifdChannels = 2;

/**
 * QEMU's `downtime-limit` for a pre-copy in its `pass` (QEMU's dirty-sync-count) when
 * `maxMs` is the longest pause allowed: `downtimeStartMs` (or `maxMs` if smaller) for the
 * first copy and the first pass over what it dirtied, then doubled with every further pass,
 * up to `maxMs`. A guest that converges does so at a short pause; one that dirties fast is
 * allowed more, step by step (Proxmox and OpenStack Nova raise theirs the same way).
 */
export function downtimeLimitForPass(maxMs: number, pass: number): number {
  const start = Math.min(maxMs, downtimeStartMs);
  return Math.min(maxMs, start * 2 ** Math.min(20, Math.max(0, pass - 2)));
}

// ---------------------------------------------------------------- agent API

/** One disk of a migrating VM, as the source sees it. */
export const MigrationMode = Type.Union([Type.Literal('live'), Type.Literal('stopped'), Type.Literal('saved')]);
export type MigrationMode = Static<typeof MigrationMode>;

export const MigrationDisk = Type.Object({
  nodeName: NodeName,
  pool: Name,
  volume: VolumeName,
  format: Type.Union([Type.Literal('qcow2'), Type.Literal('raw')]),
  /** Virtual size in bytes. */
  sizeBytes: Type.Integer({ minimum: 0 }),
  readOnly: Type.Boolean(),
  /** The pool is marked shared on the source: the same file is visible on the destination. */
  shared: Type.Boolean(),
  /** The pool's directory on the source (a shared pool must have the same one on the destination). */
  poolPath: Type.String(),
});
export type MigrationDisk = Static<typeof MigrationDisk>;

/** What the source answers to `begin`: everything the destination needs to build the same machine. */
export const MigrationPlan = Type.Object({
  vmId: Uuid,
  spec: VmSpec,
  slots: Type.Optional(Type.Object({ disks: Type.Array(Type.Integer()), nics: Type.Array(Type.Integer()), ports: Type.Optional(Type.Array(Type.Integer(), { description: 'The hotplug root ports of the source QEMU; absent: all of 0-23' })) })),
  snapshots: Type.Array(SnapshotInfo),
  disks: Type.Array(MigrationDisk),
  qemuStatus: Type.String(),
  /** What moves: a running or paused guest (`live`), a stopped VM (`stopped`: its disks), a saved one (`saved`: its saved state and disks). */
  mode: Type.Optional(MigrationMode),
  /** The guest ran when it was saved, or when the migration began: it runs on the destination afterwards. */
  wasRunning: Type.Optional(Type.Boolean()),
});
export type MigrationPlan = Static<typeof MigrationPlan>;

export const MigrationBegin = Type.Object(
  {
    operationId: Type.String({ maxLength: 64 }),
    destination: Type.String({ maxLength: 64 }),
    mode: Type.Optional(MigrationMode),
    /** QEMU's auto-converge (throttles a guest that dirties memory faster than it is sent); default true. Set with the other capabilities at begin. */
    autoConverge: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type MigrationBegin = Static<typeof MigrationBegin>;

export const IncomingRequest = Type.Object(
  {
    operationId: Type.String({ maxLength: 64 }),
    plan: MigrationPlan,
    /** The source host's certificate name: only it may feed this migration (QEMU tls-authz). */
    sourceName: Type.String({ minLength: 1, maxLength: 63 }),
    /** Node names of the disks to receive over NBD (local on the source); the others must be on shared pools here. */
    mirror: Type.Array(NodeName),
    /** The image volumes the VM boots from (kernel, initrd, ISO), checked before anything is made: a missing one refuses with not_found and details.missingVolumes. */
    ensure: Type.Optional(VolumeEnsure),
  },
  { additionalProperties: false },
);
export type IncomingRequest = Static<typeof IncomingRequest>;

export const NbdTarget = Type.Object({ host: Address, port: Type.Integer({ minimum: 1, maximum: 65535 }), exports: Type.Array(Type.Object({ nodeName: NodeName, name: Type.String({ maxLength: 64 }) })) });
export type NbdTarget = Static<typeof NbdTarget>;

export const IncomingReady = Type.Object({
  /** tcp:HOST:PORT, where the destination QEMU listens (TLS). */
  uri: Type.String(),
  /** The destination's address: the name its certificate carries, for tls-hostname. */
  tlsHostname: Address,
  nbd: Type.Optional(NbdTarget),
});
export type IncomingReady = Static<typeof IncomingReady>;

export const MirrorRequest = Type.Object(
  {
    nbd: NbdTarget,
    tlsHostname: Address,
    timeoutMs: Type.Optional(Type.Integer({ minimum: 1000 })),
    /** blockdev-mirror `speed` in bytes/s (absent: unlimited). */
    speed: Type.Optional(Type.Integer({ minimum: 1 })),
    /** No byte copied by any job for this long before READY: the NBD connection is yanked and the mirror fails (default 15 s). */
    stallMs: Type.Optional(Type.Integer({ minimum: 1000 })),
  },
  { additionalProperties: false },
);
export type MirrorRequest = Static<typeof MirrorRequest>;

export const PerformRequest = Type.Object(
  {
    uri: Type.String({ pattern: '^tcp:[0-9.]+:[0-9]{1,5}$' }),
    tlsHostname: Address,
    /** The longest pause allowed: QEMU's downtime-limit starts at `downtimeLimitForPass(downtimeMs, 0)` and is raised by await-switchover. */
    downtimeMs: Type.Integer({ minimum: 1, maximum: 60_000 }),
    bandwidth: Type.Integer({ minimum: 1 }),
  },
  { additionalProperties: false },
);
export type PerformRequest = Static<typeof PerformRequest>;

/** QEMU's view of one side of a migration, with the numbers the manager reports as progress. */
export const MigrationStatus = Type.Object({
  /** Whether this host holds the migration (its marker) at all. */
  active: Type.Boolean(),
  role: Type.Optional(Type.Union([Type.Literal('source'), Type.Literal('destination')])),
  /** QEMU's migration status (`none`, `setup`, `active`, `pre-switchover`, `device`, `completed`, `failed`, `cancelled`, ...); `gone` when no QEMU is left. */
  status: Type.String(),
  qemuStatus: Type.Optional(Type.String()),
  transferredBytes: Type.Optional(Type.Number()),
  /** Of `transferredBytes`, those sent over the multifd connections (RAM pages; zero pages and device state go over the main one). */
  multifdBytes: Type.Optional(Type.Number()),
  remainingBytes: Type.Optional(Type.Number()),
  totalBytes: Type.Optional(Type.Number()),
  dirtyBytesPerSecond: Type.Optional(Type.Number()),
  mbps: Type.Optional(Type.Number()),
  expectedDowntimeMs: Type.Optional(Type.Number()),
  downtimeMs: Type.Optional(Type.Number()),
  totalTimeMs: Type.Optional(Type.Number()),
  setupTimeMs: Type.Optional(Type.Number()),
  dirtySyncCount: Type.Optional(Type.Number()),
  /** QEMU's downtime-limit in force on the source (it steps up while pre-copy does not converge). */
  downtimeLimitMs: Type.Optional(Type.Number()),
  mirrors: Type.Optional(Type.Array(Type.Object({ nodeName: Type.String(), status: Type.String(), offset: Type.Number(), length: Type.Number() }))),
  error: Type.Optional(Type.String()),
});
export type MigrationStatus = Static<typeof MigrationStatus>;

/** What the destination does once its stream completed: run the guest, keep it paused, or end QEMU (a stopped VM moved). */
export const FinishRequest = Type.Object(
  { timeoutMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 86_400_000 })), after: Type.Optional(Type.Union([Type.Literal('run'), Type.Literal('pause'), Type.Literal('stop')])) },
  { additionalProperties: false },
);
export type FinishRequest = Static<typeof FinishRequest>;

export const SwitchoverWait = Type.Object(
  {
    timeoutMs: Type.Integer({ minimum: 100, maximum: 86_400_000 }),
    /** The longest pause allowed (the perform's `downtimeMs`): while waiting, QEMU's downtime-limit follows `downtimeLimitForPass`. */
    downtimeMs: Type.Optional(Type.Integer({ minimum: 1, maximum: 60_000 })),
  },
  { additionalProperties: false },
);
export type SwitchoverWait = Static<typeof SwitchoverWait>;

export const ConfirmRequest = Type.Object(
  {
    deleteVolumes: Type.Array(Type.Object({ pool: Name, volume: VolumeName })),
    /** The last bytes of the source's serial log to answer with, read before it goes (the guest-measured downtime). */
    serialTailBytes: Type.Optional(Type.Integer({ minimum: 1, maximum: 65_536 })),
  },
  { additionalProperties: false },
);
export type ConfirmRequest = Static<typeof ConfirmRequest>;
export const ConfirmAnswer = Type.Object({
  serialTail: Type.Optional(Type.String()),
  /** The source's last `query-migrate` (its downtime and total time, which `continue` may answer before QEMU has them), read before QEMU quits. */
  migration: Type.Optional(MigrationStatus),
});
export type ConfirmAnswer = Static<typeof ConfirmAnswer>;

export const MigrationCapabilities = Type.Object({
  postcopy: Type.Object({ available: Type.Boolean(), reason: Type.String() }),
});
export type MigrationCapabilities = Static<typeof MigrationCapabilities>;

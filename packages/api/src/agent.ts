import { Type, type Static } from 'typebox';
import { CloudInit, MacAddress, Name, StringEnum, VolumeName, VolumeRef } from './common.js';

/**
 * The host agent's HTTP API (`/v1/...`). The manager is its only client in a
 * cluster; `drover up` and the tests use it directly on a single host.
 */

export const VmDisk = Type.Object(
  {
    pool: Name,
    volume: VolumeName,
    readOnly: Type.Optional(Type.Boolean()),
    media: Type.Optional(Type.Union([Type.Literal('disk'), Type.Literal('cdrom')])),
  },
  { additionalProperties: false },
);
export type VmDisk = Static<typeof VmDisk>;

export const PortForward = Type.Object(
  {
    protocol: Type.Optional(Type.Union([Type.Literal('tcp'), Type.Literal('udp')])),
    hostPort: Type.Integer({ minimum: 1, maximum: 65535 }),
    guestPort: Type.Integer({ minimum: 1, maximum: 65535 }),
  },
  { additionalProperties: false },
);

export const VmNic = Type.Object(
  {
    mac: Type.Optional(MacAddress),
    /**
     * `user` (default): QEMU user networking, forwards bound to 127.0.0.1. `tap`: the
     * tap `tap` that the host's network state (`PUT /v1/network-state`) put on a
     * network's bridge; no forwards.
     */
    mode: Type.Optional(Type.Union([Type.Literal('user'), Type.Literal('tap')])),
    tap: Type.Optional(Type.String({ pattern: '^dt[A-Za-z0-9_.-]{1,13}$', description: 'Tap device (Drover taps start with "dt")' })),
    forwards: Type.Optional(Type.Array(PortForward, { maxItems: 32 })),
  },
  { additionalProperties: false },
);
export type VmNic = Static<typeof VmNic>;

export const KernelCmdline = Type.String({ maxLength: 4096, pattern: '^[^\\n\\r\\x00]*$' });

export const VmBoot = Type.Union([
  Type.Object(
    { kind: Type.Literal('kernel'), kernel: VolumeRef, initrd: Type.Optional(VolumeRef), cmdline: Type.Optional(KernelCmdline) },
    { additionalProperties: false },
  ),
  Type.Object({ kind: Type.Literal('disk') }, { additionalProperties: false }),
  Type.Object({ kind: Type.Literal('cdrom') }, { additionalProperties: false }),
]);

export const VmSpec = Type.Object(
  {
    name: Name,
    id: Type.Optional(Type.String({ pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' })),
    cpus: Type.Integer({ minimum: 1, maximum: 255 }),
    memoryMiB: Type.Integer({ minimum: 16, maximum: 4 * 1024 * 1024 }),
    cpuModel: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$' })),
    disks: Type.Array(VmDisk, { maxItems: 16 }),
    nics: Type.Optional(Type.Array(VmNic, { maxItems: 8 })),
    boot: VmBoot,
    vnc: Type.Optional(Type.Boolean({ description: 'Give the VM a VGA screen served over VNC (default true)' })),
    cloudInit: Type.Optional(CloudInit),
    security: Type.Optional(
      Type.Object(
        {
          label: Type.String({ minLength: 1, maxLength: 255 }),
          cwTypes: Type.Array(Type.String({ minLength: 1, maxLength: 200 }), { maxItems: 1024 }),
          conflictSets: Type.Array(Type.Array(Type.String({ minLength: 1, maxLength: 200 }), { maxItems: 1024 }), { maxItems: 1024 }),
        },
        {
          additionalProperties: false,
          description:
            "The VM's sHype label as the manager's active policy defines it: its Chinese Wall types and the conflict sets holding them. The agent refuses to run it beside a VM of a conflicting type (the manager checks first; this is the check where the action happens)",
        },
      ),
    ),
  },
  { additionalProperties: false },
);
export type VmSpec = Static<typeof VmSpec>;

export const vmStates = ['stopped', 'starting', 'running', 'paused', 'saving', 'saved', 'restoring', 'stopping', 'error'] as const;
export const VmState = StringEnum(vmStates);
export type VmState = (typeof vmStates)[number];

export const SnapshotInfo = Type.Object({
  name: Name,
  createdAt: Type.String(),
  withMemory: Type.Boolean(),
});
export type SnapshotInfo = Static<typeof SnapshotInfo>;

export const VmInfo = Type.Object({
  id: Type.String(),
  name: Type.String(),
  state: VmState,
  spec: VmSpec,
  pid: Type.Optional(Type.Integer()),
  accel: Type.Optional(Type.String()),
  qemuStatus: Type.Optional(Type.String()),
  busy: Type.Optional(Type.String({ description: 'The action in progress, if any' })),
  savedState: Type.Optional(Type.Object({ file: Type.String(), bytes: Type.Integer(), savedAt: Type.String() })),
  snapshots: Type.Array(SnapshotInfo),
  lastError: Type.Optional(Type.String()),
});
export type VmInfo = Static<typeof VmInfo>;

export const StopRequest = Type.Object(
  {
    timeoutMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 3_600_000, description: 'Grace period for the ACPI shutdown; then the VM is forced off' })),
    force: Type.Optional(Type.Boolean({ description: 'Skip ACPI and force the VM off at once' })),
  },
  { additionalProperties: false },
);
export type StopRequest = Static<typeof StopRequest>;


export const SnapshotRequest = Type.Object(
  { name: Name, withMemory: Type.Optional(Type.Boolean({ description: 'Include RAM and device state (running VMs; default true)' })) },
  { additionalProperties: false },
);
export type SnapshotRequest = Static<typeof SnapshotRequest>;

export const IscsiTarget = Type.Object(
  {
    portal: Type.String({ minLength: 3, maxLength: 262, description: 'HOST:PORT of the target\'s portal, reachable from the host (e.g. "192.0.2.10:3260")' }),
    target: Type.String({ minLength: 5, maxLength: 223, description: 'The target\'s IQN (e.g. "iqn.2026-11.example:san1")' }),
  },
  { additionalProperties: false },
);
export type IscsiTarget = Static<typeof IscsiTarget>;

export const PoolSpec = Type.Union([
  Type.Object(
    {
      name: Name,
      path: Type.String({ minLength: 1, maxLength: 1024, pattern: '^/[^\\n\\r\\x00]*$' }),
      shared: Type.Optional(Type.Boolean({ description: 'The same directory is visible to several hosts at this path (NFS, or a directory two test hosts share)' })),
    },
    { additionalProperties: false, description: 'A directory pool: a new or empty directory, or a Drover pool already' },
  ),
  Type.Object(
    {
      name: Name,
      iscsi: IscsiTarget,
      shared: Type.Optional(Type.Boolean({ description: 'Default true: every host that defines the same target sees the same LUNs' })),
    },
    { additionalProperties: false, description: 'An iSCSI pool: the LUNs of a target (volumes lun<N>, raw), opened by QEMU\'s built-in initiator; provisioned on the target, not by Drover' },
  ),
]);
export type PoolSpec = Static<typeof PoolSpec>;

export const PoolInfo = Type.Object({
  name: Type.String(),
  path: Type.String({ description: 'The directory, or iscsi://PORTAL/TARGET' }),
  shared: Type.Boolean(),
  kind: Type.Optional(Type.Union([Type.Literal('directory'), Type.Literal('iscsi')], { description: 'Absent: directory' })),
  capacityBytes: Type.Integer(),
  availableBytes: Type.Integer(),
  allocatedBytes: Type.Integer(),
  volumes: Type.Integer(),
});
export type PoolInfo = Static<typeof PoolInfo>;

export const VolumeCreate = Type.Union([
  Type.Object(
    { name: VolumeName, sizeBytes: Type.Integer({ minimum: 1024 * 1024, maximum: 64 * 1024 ** 4 }) },
    { additionalProperties: false },
  ),
  Type.Object(
    { name: VolumeName, cloneOf: VolumeName, sizeBytes: Type.Optional(Type.Integer({ minimum: 1024 * 1024, maximum: 64 * 1024 ** 4 })) },
    { additionalProperties: false },
  ),
  Type.Object(
    {
      name: VolumeName,
      importFrom: Type.String({ minLength: 1, maxLength: 1024, pattern: '^/[^\\n\\r\\x00]*$' }),
      format: Type.Union([Type.Literal('raw'), Type.Literal('qcow2')]),
    },
    { additionalProperties: false },
  ),
]);
export type VolumeCreate = Static<typeof VolumeCreate>;

/**
 * `POST /v1/vms/:vm/start`. With `spec`, the VM is defined first when the host
 * does not have it, or its definition replaced when it is stopped (as `PUT`
 * would): one request for what would be a define and a start. With `ensure`,
 * the volumes the VM boots from are checked and its own made first, so a start
 * on a host that has the VM's image needs no other request.
 */
export const VolumeEnsure = Type.Object(
  {
    pool: Name,
    volumes: Type.Array(VolumeCreate, { maxItems: 64 }),
  },
  {
    additionalProperties: false,
    description:
      'Volumes a start (or an incoming migration) needs, as volume creations: one that exists is left as it is; a missing thin clone or empty disk is made; ' +
      'a missing import, or a clone whose base is missing, refuses the request with not_found and details.missingVolumes, changing nothing ' +
      '(imports are slow: the manager makes them in a step of their own, then asks again)',
  },
);
export type VolumeEnsure = Static<typeof VolumeEnsure>;

export const StartRequest = Type.Object(
  {
    spec: Type.Optional(VmSpec),
    ensure: Type.Optional(VolumeEnsure),
  },
  { additionalProperties: false },
);
export type StartRequest = Static<typeof StartRequest>;

export const VolumeResize = Type.Object(
  { sizeBytes: Type.Integer({ minimum: 1024 * 1024, maximum: 64 * 1024 ** 4 }) },
  { additionalProperties: false },
);

export const VolumeInfo = Type.Object({
  pool: Type.String(),
  name: Type.String(),
  format: Type.Union([Type.Literal('raw'), Type.Literal('qcow2')]),
  virtualBytes: Type.Integer(),
  allocatedBytes: Type.Integer(),
  backing: Type.Optional(Type.String()),
  usedBy: Type.Array(Type.String()),
});
export type VolumeInfo = Static<typeof VolumeInfo>;

export const HostFacts = Type.Object({
  hostname: Type.String(),
  agentVersion: Type.String(),
  qemuVersion: Type.String(),
  accel: Type.String(),
  accelReason: Type.String(),
  capacity: Type.Object({ cpus: Type.Integer(), memoryMiB: Type.Integer() }),
  allocated: Type.Object({ cpus: Type.Integer(), memoryMiB: Type.Integer(), vms: Type.Integer() }),
  cpuModels: Type.Array(Type.String()),
  pools: Type.Array(PoolInfo),
  bootTime: Type.String(),
});
export type HostFacts = Static<typeof HostFacts>;


/** The largest volume upload (`PUT .../volumes/:volume/content`) the agent and the manager accept. */
export const maxVolumeUploadBytes = 8 * 1024 ** 3;

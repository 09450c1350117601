import { Type, type Static, type TSchema } from 'typebox';
import { CloudInit, MacAddress, Name, StringEnum, VolumeName, VolumeRef } from './common.js';
import { EvacuationPolicySchema } from './power.js';
import { SecurityLabelRef } from './policy.js';

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

/** An image of the library: "name" (its newest version) or "name:version". */
function ImageRef(options: { description: string }) {
  return Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*(:[A-Za-z0-9_.+-]+)?$', ...options });
}

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

/** One NIC of a new VM on a Drover network (networks/): the manager allocates what is not given. */
export const VmNetworkAttachment = Type.Object(
  {
    network: Type.String({ pattern: '^[a-z][a-z0-9-]{0,30}$', description: 'The network\'s name' }),
    securityGroups: Type.Optional(Type.Array(Type.String({ pattern: '^[a-z][a-z0-9-]{0,30}$' }), { maxItems: 16 })),
    ip: Type.Optional(Type.String({ maxLength: 15, pattern: '^[0-9]{1,3}(\\.[0-9]{1,3}){3}$', description: 'A free host address of the subnet (default: the first free one)' })),
    mac: Type.Optional(MacAddress),
  },
  { additionalProperties: false },
);
export type VmNetworkAttachment = Static<typeof VmNetworkAttachment>;

export const VmCreate = Type.Object(
  {
    name: Name,
    image: Type.Optional(ImageRef({ description: 'The image to boot: an appliance (e.g. "web") or an imported disk image (each VM boots a thin clone of it), "name" or "name:version"; optional with an iso' })),
    iso: Type.Optional(
      Type.Union([ImageRef({ description: 'An ISO image of the library' }), VolumeRef], {
        description: 'A CD-ROM attached read-only and booted first (then the disk): an ISO image of the library, or {pool, volume} on the host the VM is placed on (pin it with hostInclude)',
      }),
    ),
    bootVolume: Type.Optional(
      Type.Object(
        { pool: Name, volume: VolumeName },
        {
          additionalProperties: false,
          description: 'Appliance images only: boot from this existing volume (holding the appliance\'s root file system) instead of a fresh thin clone, e.g. a LUN of a shared iSCSI pool ({pool: "san", volume: "lun1"}); the pool must exist on the VM\'s host (pin it with hostInclude); the volume is kept when the VM is deleted',
        },
      ),
    ),
    dataImages: Type.Optional(
      Type.Array(ImageRef({ description: 'A qcow2 disk image of the library' }), {
        maxItems: 8,
        description: 'Data disks after the root disk (vdb, vdc, … in this order), each a thin clone of a qcow2 disk image of the library (e.g. the data disks of an imported package); not with an appliance image, which brings its own',
      }),
    ),
    diskSizeBytes: Type.Optional(Type.Integer({ minimum: 1024 * 1024, maximum: 64 * 1024 ** 4, description: 'Without an image: an empty qcow2 disk of this size (to install onto from the ISO). With a disk image: the size of its clone (at least the image\'s virtual size)' })),
    cloudInit: Type.Optional(CloudInit),
    cpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
    memoryMiB: Type.Optional(Type.Integer({ minimum: 64, maximum: 1024 * 1024 })),
    cpuModel: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$' })),
    labels: Type.Optional(Labels),
    securityLabel: Type.Optional(SecurityLabelRef),
    antiAffinityGroups: Type.Optional(Type.Array(Name, { maxItems: 8 })),
    hostInclude: Type.Optional(Type.Array(IdOrName, { maxItems: 64 })),
    hostExclude: Type.Optional(Type.Array(IdOrName, { maxItems: 64 })),
    forwards: Type.Optional(
      Type.Array(
        Type.Object({ hostPort: Type.Integer({ minimum: 1024, maximum: 65535 }), guestPort: Type.Integer({ minimum: 1, maximum: 65535 }) }, { additionalProperties: false }),
        { maxItems: 16 },
      ),
    ),
    cmdline: Type.Optional(Type.String({ maxLength: 1024, pattern: '^[A-Za-z0-9_.:/@,+= -]*$', description: 'Extra kernel command-line settings (drover.* keys); appliance images and disk images booted by the appliance kernel (VMcasting releases, packages) only' })),
    autostart: Type.Optional(Type.Boolean()),
    evacuationPolicy: Type.Optional(EvacuationPolicySchema),
    project: Type.Optional(Name),
    networks: Type.Optional(Type.Array(VmNetworkAttachment, { maxItems: 8, description: 'NICs on Drover networks (eth0, eth1, … in this order), each a tap with its address by DHCP; see docs/networks.md' })),
  },
  { additionalProperties: false },
);
export type VmCreate = Static<typeof VmCreate>;

export const VmEdit = Type.Object(
  {
    cpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
    memoryMiB: Type.Optional(Type.Integer({ minimum: 64, maximum: 1024 * 1024 })),
    labels: Type.Optional(Labels),
    securityLabel: Type.Optional(Type.Union([SecurityLabelRef, Type.Null()], { description: 'The VM\'s sHype label (ACM:<policy>:<label>), or null to remove it; only while the VM holds no host (stopped, saved or defined)' })),
    autostart: Type.Optional(Type.Boolean()),
    cloudInit: Type.Optional(Type.Union([CloudInit, Type.Null()], { description: 'A new cloud-init seed, or null to remove it (while stopped; applied at the next start)' })),
    evacuationPolicy: Type.Optional(EvacuationPolicySchema),
  },
  { additionalProperties: false },
);
export type VmEdit = Static<typeof VmEdit>;

/** A disk added to a VM through the API (`Vm.spec.addedDisks`). */
export const AddedDisk = Type.Object({
  pool: Type.String(),
  volume: Type.String(),
  readOnly: Type.Optional(Type.Boolean()),
  created: Type.Optional(Type.Boolean({ description: 'Made for the VM by POST .../disks {sizeBytes}: deleted with the VM' })),
});
/** A NIC added to a VM through the API (`Vm.spec.addedNics`). */
export const AddedNic = Type.Object({
  mac: Type.String(),
  forwards: Type.Array(Type.Object({ hostPort: Type.Integer(), guestPort: Type.Integer() })),
});

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
    evacuationPolicy: Type.Optional(Type.String({ description: 'What a host evacuation does with the VM (live-migrate when absent)' })),
    ha: Type.Optional(Type.Boolean({ description: 'Restarted on another host after its host is lost and fenced (PUT /api/v1/vms/{id}/ha)' })),
    addedDisks: Type.Optional(Type.Array(AddedDisk, { description: 'Disks added through POST /api/v1/vms/:id/disks, after the image\'s own; kept across restarts' })),
    addedNics: Type.Optional(Type.Array(AddedNic, { description: 'NICs added through POST /api/v1/vms/:id/nics, after the image\'s one; kept across restarts' })),
    iso: Type.Optional(Type.String({ description: 'The attached ISO: "name:version" of a library image, or "pool/volume"' })),
    bootVolume: Type.Optional(Type.String({ description: 'The existing volume the appliance boots from ("pool/volume"), when given at creation' })),
    diskSizeBytes: Type.Optional(Type.Integer()),
    dataImages: Type.Optional(Type.Array(Type.String(), { description: 'The images ("name:version") the data disks were cloned from, when given at creation' })),
    cloudInit: Type.Optional(
      Type.Object({ userDataBytes: Type.Integer(), metaDataBytes: Type.Optional(Type.Integer()), networkConfigBytes: Type.Optional(Type.Integer()) }, { description: 'The sizes of the cloud-init files (their content is not echoed back)' }),
    ),
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

// ---------------------------------------------------------------- disks and NICs of a VM (hotplug)

/**
 * Body of `POST /api/v1/vms/:id/disks`: an existing volume of a pool on the VM's
 * host, or a new empty volume made there for the VM.
 */
export const VmDiskAdd = Type.Union([
  Type.Object(
    {
      volume: VolumeName,
      pool: Type.Optional(Name),
      readOnly: Type.Optional(Type.Boolean({ description: 'The guest may only read it (a volume may be shared read-only by several VMs)' })),
    },
    { additionalProperties: false, description: 'Attach an existing volume of a pool on the VM\'s host (pool "default" when omitted)' },
  ),
  Type.Object(
    {
      sizeBytes: Type.Integer({ minimum: 1024 * 1024, maximum: 64 * 1024 ** 4 }),
      name: Type.Optional(VolumeName),
      pool: Type.Optional(Name),
    },
    { additionalProperties: false, description: 'Create an empty volume of this size on the VM\'s host and attach it; qcow2 unless name says otherwise (default name <vm id>.disk-<hex>.qcow2); deleted with the VM' },
  ),
]);
export type VmDiskAdd = Static<typeof VmDiskAdd>;

export const VmNicAdd = Type.Object(
  {
    mac: Type.Optional(MacAddress),
    forwards: Type.Optional(
      Type.Array(Type.Object({ hostPort: Type.Integer({ minimum: 1024, maximum: 65535 }), guestPort: Type.Integer({ minimum: 1, maximum: 65535 }) }, { additionalProperties: false }), { maxItems: 16 }),
    ),
  },
  { additionalProperties: false, description: 'A user-mode NIC (MAC generated when omitted), with TCP forwards from the host\'s 127.0.0.1' },
);
export type VmNicAdd = Static<typeof VmNicAdd>;

/** A disk of a VM as its host has it (an item of `GET /api/v1/vms/:id/disks`). */
export const VmDiskInfo = Type.Object({
  index: Type.Integer({ description: 'Position in the VM\'s disks: the guest sees them in this order at boot' }),
  pool: Type.String(),
  volume: Type.String(),
  readOnly: Type.Boolean(),
  media: StringEnum(['disk', 'cdrom'] as const),
  boot: Type.Boolean({ description: 'The disk the VM boots from (cannot be removed)' }),
  added: Type.Boolean({ description: 'Added through this API, so it can be removed through it' }),
});
export type VmDiskInfo = Static<typeof VmDiskInfo>;

/** A NIC of a VM as its host has it (an item of `GET /api/v1/vms/:id/nics`). */
export const VmNicInfo = Type.Object({
  index: Type.Integer(),
  mac: Type.String(),
  forwards: Type.Array(Type.Object({ hostPort: Type.Integer(), guestPort: Type.Integer() })),
  added: Type.Boolean({ description: 'Added through this API, so it can be removed through it' }),
});
export type VmNicInfo = Static<typeof VmNicInfo>;

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
  format: Type.String({ description: '"appliance" (kernel, initramfs and disks), "qcow2" (an imported disk image, stored as qcow2) or "iso"' }),
  sizeBytes: Type.Integer(),
  sha256: Type.String(),
  source: Type.String(),
  createdAt: Timestamp,
});
export type Image = Static<typeof Image>;

/** A release of an image: letters, digits, ".", "_", "+" and "-". */
export const ImageVersion = Type.String({ minLength: 1, maxLength: 63, pattern: '^[A-Za-z0-9][A-Za-z0-9_.+-]*$' });

export const imageImportFormats = ['qcow2', 'raw', 'iso'] as const;
export const ImageImport = Type.Object(
  {
    name: Name,
    version: Type.Optional(ImageVersion),
    source: Type.Union(
      [
        Type.Object({ url: Type.String({ minLength: 8, maxLength: 2048, pattern: '^https?://[^\\s]+$', description: 'http or https; downloaded by the manager' }) }, { additionalProperties: false }),
        Type.Object({ path: Type.String({ minLength: 2, maxLength: 1024, pattern: '^/[^\\n\\r\\x00]*$', description: "A file on the manager's machine, under one of its imageImportDirs" }) }, { additionalProperties: false }),
      ],
      { description: 'Where the image comes from: {url} or {path}' },
    ),
    format: Type.Optional(StringEnum(imageImportFormats, { description: 'The format of the source; default: recognised from its content (qcow2, ISO 9660, or raw with a partition table)' })),
  },
  { additionalProperties: false },
);
export type ImageImport = Static<typeof ImageImport>;

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

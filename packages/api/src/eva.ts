import { Type, type Static } from 'typebox';
import { Name, StringEnum } from './common.js';
import { Labels, Timestamp, Uuid } from './manager.js';
import { SecurityLabelRef } from './policy.js';

/**
 * EVA appliance packages (docs/eva-packages.md): one tar holding several
 * pre-configured VMs. `EvaManifest` is the `manifest.json` that comes first in
 * the tar; `Package` is an imported package as the manager keeps it (its disks
 * and boot files are images of the library).
 */

/** The format versions this code reads and writes; a package with a newer `formatVersion` is refused. */
export const evaFormatVersion = 1;
/** The media type of an .eva file (also the VMcasting enclosure type of a package release). */
export const evaMediaType = 'application/vnd.drover.eva+tar';

const Short = Type.String({ minLength: 1, maxLength: 64 });
const Version = Type.String({ minLength: 1, maxLength: 63, pattern: '^[A-Za-z0-9][A-Za-z0-9_.+-]*$' });
/** A boot file inside the package: `files/<name>`. */
export const EvaBootFile = Type.String({ maxLength: 128, pattern: '^files/[A-Za-z0-9][A-Za-z0-9_.-]*$', description: 'A file of the package: files/<name>' });
/** A disk inside the package: `disks/<name>.qcow2`. */
export const EvaDiskFile = Type.String({ maxLength: 128, pattern: '^disks/[A-Za-z0-9][A-Za-z0-9_.-]*\\.qcow2$', description: 'A disk of the package: disks/<name>.qcow2' });
const Sha256 = Type.String({ pattern: '^[0-9a-f]{64}$' });

export const EvaNetwork = Type.Object(
  {
    name: Name,
    kind: StringEnum(['isolated', 'nat'] as const),
    subnet: Type.String({ minLength: 9, maxLength: 18, pattern: '^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$', description: 'IPv4 CIDR, e.g. 10.10.0.0/24' }),
    labels: Type.Optional(Labels),
  },
  { additionalProperties: false },
);
export type EvaNetwork = Static<typeof EvaNetwork>;

export const EvaSecurityRule = Type.Object(
  {
    direction: StringEnum(['ingress', 'egress'] as const),
    protocol: StringEnum(['tcp', 'udp', 'icmp', 'any'] as const),
    ports: Type.Optional(Type.Object({ from: Type.Integer({ minimum: 1, maximum: 65535 }), to: Type.Integer({ minimum: 1, maximum: 65535 }) }, { additionalProperties: false })),
    icmpType: Type.Optional(Type.Integer({ minimum: 0, maximum: 255 })),
    cidr: Type.Optional(Short),
    group: Type.Optional(Name),
  },
  { additionalProperties: false },
);
export type EvaSecurityRule = Static<typeof EvaSecurityRule>;

export const EvaSecurityGroup = Type.Object(
  { name: Name, rules: Type.Array(EvaSecurityRule, { maxItems: 1000 }) },
  { additionalProperties: false },
);
export type EvaSecurityGroup = Static<typeof EvaSecurityGroup>;

export const EvaBoot = Type.Union(
  [
    Type.Object(
      {
        method: Type.Literal('appliance'),
        kernel: EvaBootFile,
        initrd: EvaBootFile,
        cmdline: Type.String({ maxLength: 1024, pattern: '^[A-Za-z0-9_.:/@,+= -]*$' }),
      },
      { additionalProperties: false, description: 'Direct kernel boot (the Drover appliances): the root disk holds the root file system' },
    ),
    Type.Object({ method: Type.Literal('disk') }, { additionalProperties: false, description: 'The root disk boots by itself (firmware, boot loader)' }),
  ],
  { description: 'How the VM boots' },
);
export type EvaBoot = Static<typeof EvaBoot>;

export const EvaDisk = Type.Object(
  {
    file: EvaDiskFile,
    format: Type.Literal('qcow2'),
    role: StringEnum(['root', 'data'] as const),
    sha256: Sha256,
    sizeBytes: Type.Integer({ minimum: 1, description: 'The size of the qcow2 file' }),
    virtualSizeBytes: Type.Integer({ minimum: 1, description: 'The size of the disk the guest sees' }),
  },
  { additionalProperties: false },
);
export type EvaDisk = Static<typeof EvaDisk>;

export const EvaNic = Type.Object(
  {
    network: Name,
    securityGroups: Type.Optional(Type.Array(Name, { maxItems: 16 })),
    ip: Type.Optional(Type.String({ pattern: '^[0-9]{1,3}(\\.[0-9]{1,3}){3}$' })),
  },
  { additionalProperties: false },
);
export type EvaNic = Static<typeof EvaNic>;

export const EvaHealthCheck = Type.Union([
  Type.Object({ kind: Type.Literal('serial'), pattern: Type.String({ minLength: 1, maxLength: 256, description: 'A JavaScript regular expression matched against the serial console' }) }, { additionalProperties: false }),
  Type.Object({ kind: Type.Literal('tcp'), port: Type.Integer({ minimum: 1, maximum: 65535 }) }, { additionalProperties: false }),
  Type.Object(
    {
      kind: Type.Literal('http'),
      port: Type.Integer({ minimum: 1, maximum: 65535 }),
      path: Type.String({ minLength: 1, maxLength: 256, pattern: '^/' }),
      expect: Type.Optional(Type.String({ maxLength: 256, description: 'Text the answer body must contain' })),
    },
    { additionalProperties: false },
  ),
]);
export type EvaHealthCheck = Static<typeof EvaHealthCheck>;

export const EvaGuest = Type.Object(
  {
    cmdline: Type.Optional(Type.String({ maxLength: 1024, pattern: '^[A-Za-z0-9_.:/@,+= -]*$', description: 'Extra kernel settings (drover.* keys), appliance boot only' })),
    userData: Type.Optional(Type.String({ maxLength: 64 * 1024 })),
    settings: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$' }), Type.Unknown(), { additionalProperties: false })),
  },
  { additionalProperties: false, description: 'Per-VM guest configuration' },
);
export type EvaGuest = Static<typeof EvaGuest>;

export const EvaVm = Type.Object(
  {
    name: Name,
    cpus: Type.Integer({ minimum: 1, maximum: 64 }),
    memoryMiB: Type.Integer({ minimum: 64, maximum: 1024 * 1024 }),
    boot: EvaBoot,
    disks: Type.Array(EvaDisk, { minItems: 1, maxItems: 16, description: 'The first disk is the root disk' }),
    nics: Type.Array(EvaNic, { maxItems: 8 }),
    securityLabel: Type.Optional(SecurityLabelRef),
    labels: Type.Optional(Labels),
    guest: Type.Optional(EvaGuest),
    dependsOn: Type.Optional(Type.Array(Name, { maxItems: 64, description: 'VMs that must be started and healthy before this one' })),
    healthCheck: Type.Optional(EvaHealthCheck),
    startDelaySeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 3600, description: 'Wait this long after the VM started before starting the VMs that depend on it (OVF startDelay)' })),
  },
  { additionalProperties: false },
);
export type EvaVm = Static<typeof EvaVm>;

export const EvaUpdatePolicy = Type.Object(
  {
    channel: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$', description: 'The VMcasting channel new versions of the package come from' })),
    policy: StringEnum(['pinned', 'notify', 'auto'] as const),
  },
  { additionalProperties: false },
);

export const EvaManifest = Type.Object(
  {
    format: Type.Literal('drover-eva'),
    formatVersion: Type.Literal(evaFormatVersion, { description: 'The major version of the format; a reader refuses a newer one' }),
    name: Name,
    version: Version,
    description: Type.Optional(Type.String({ maxLength: 2000 })),
    networks: Type.Array(EvaNetwork, { maxItems: 32 }),
    securityGroups: Type.Array(EvaSecurityGroup, { maxItems: 64 }),
    vms: Type.Array(EvaVm, { minItems: 1, maxItems: 64 }),
    updatePolicy: Type.Optional(EvaUpdatePolicy),
  },
  { additionalProperties: false, description: 'manifest.json of an .eva package' },
);
export type EvaManifest = Static<typeof EvaManifest>;

// ---------------------------------------------------------------- the manager's package records

export const Package = Type.Object({
  id: Uuid,
  name: Type.String(),
  version: Type.String(),
  description: Type.Union([Type.String(), Type.Null()]),
  formatVersion: Type.Integer(),
  manifest: EvaManifest,
  images: Type.Record(Type.String(), Uuid, {
    description: 'The library image of each file of the manifest (disks/... and files/...), by its path in the package',
  }),
  signerKeyId: Type.Union([Type.String(), Type.Null()], { description: 'sha256 of the signer\'s Ed25519 public key (SPKI DER), hex; null for an OVA import (not signed)' }),
  source: StringEnum(['export', 'import', 'ova', 'vmcast'] as const, { description: 'How the package came: exported here, an .eva imported, an OVA converted, or a VMcasting release' }),
  origin: Type.String({ description: 'Where it came from: VM names, an upload, a URL (without query) or a release' }),
  fileSizeBytes: Type.Union([Type.Integer(), Type.Null()], { description: 'The size of its .eva file (GET .../file); null when there is none (OVA)' }),
  fileSha256: Type.Union([Type.String(), Type.Null()]),
  owner: Type.String(),
  createdAt: Timestamp,
});
export type Package = Static<typeof Package>;

export const PackageExport = Type.Object(
  {
    name: Name,
    version: Version,
    description: Type.Optional(Type.String({ maxLength: 2000 })),
    vms: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 63 }), { minItems: 1, maxItems: 64, uniqueItems: true, description: 'The stopped VMs to export (ids or names); or give lab' })),
    lab: Type.Optional(
      Type.String({ minLength: 1, maxLength: 63, description: 'A deployed lab (id or name) whose VMs are all stopped: its VMs with their current disks, and its manifest\'s networks, groups, NICs, guest settings, start order and health checks' }),
    ),
    signWith: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'The VMcasting key (name or key id) that signs the package; default: the newest active key' })),
    updatePolicy: Type.Optional(EvaUpdatePolicy),
  },
  { additionalProperties: false },
);
export type PackageExport = Static<typeof PackageExport>;

export const PackageImportUrl = Type.Object(
  {
    url: Type.String({ minLength: 8, maxLength: 2048, pattern: '^https?://[^\\s]+$', description: 'An .eva or .ova file, downloaded by the manager' }),
    kind: Type.Optional(StringEnum(['eva', 'ova'] as const, { description: 'Default: eva' })),
    trustKeys: Type.Optional(Type.Array(Type.String({ minLength: 40, maxLength: 4096 }), { maxItems: 8, description: 'Ed25519 public keys (PEM) trusted for this import, besides the manager\'s own VMcasting keys and its subscriptions\' pinned keys' })),
  },
  { additionalProperties: false },
);
export type PackageImportUrl = Static<typeof PackageImportUrl>;

export const PackageImportQuery = Type.Object(
  {
    kind: Type.Optional(StringEnum(['eva', 'ova'] as const, { description: 'The uploaded file: an .eva package (default) or an OVA' })),
    name: Type.Optional(Name),
    version: Type.Optional(Version),
  },
  { additionalProperties: false },
);

/** A publisher key this manager trusts for packages (beside its own VMcasting keys and its subscriptions' pinned keys). */
export const PackageTrustedKey = Type.Object({
  keyId: Type.String({ description: 'sha256 of the SPKI DER, hex' }),
  name: Type.String(),
  publicKey: Type.String(),
  createdAt: Timestamp,
});
export type PackageTrustedKey = Static<typeof PackageTrustedKey>;
export const PackageTrustedKeyCreate = Type.Object(
  {
    name: Name,
    publicKey: Type.String({ minLength: 40, maxLength: 4096, description: 'An Ed25519 public key (SPKI PEM)' }),
  },
  { additionalProperties: false },
);

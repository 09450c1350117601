import { Type, type Static } from 'typebox';
import { StringEnum } from './common.js';
import { Labels } from './manager.js';

/** VMcasting: appliance feeds, verified downloads, update channels (see docs/vmcasting.md). */

const VmcastName = Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$', description: 'Lowercase letters, digits, "_", "." or "-"; at most 63' });
const Pem = Type.String({ minLength: 40, maxLength: 4096, description: 'A PEM public key (SPKI), Ed25519' });

export const VmcastKey = Type.Object({
  id: Type.String(),
  name: Type.String(),
  keyId: Type.String({ description: 'sha256 of the SPKI DER, hex' }),
  publicKey: Type.String(),
  state: StringEnum(['active', 'retired', 'revoked'] as const),
  createdAt: Type.String(),
  updatedAt: Type.String(),
});
export type VmcastKey = Static<typeof VmcastKey>;
export const VmcastKeyCreate = Type.Object({ name: VmcastName }, { additionalProperties: false });

export const VmcastChannel = Type.Object({
  id: Type.String(),
  name: Type.String(),
  title: Type.String(),
  description: Type.String(),
  feedPath: Type.String(),
  catalogPath: Type.String(),
  createdAt: Type.String(),
});
export type VmcastChannel = Static<typeof VmcastChannel>;
export const VmcastChannelCreate = Type.Object(
  { name: VmcastName, title: Type.Optional(Type.String({ maxLength: 200 })), description: Type.Optional(Type.String({ maxLength: 2000 })) },
  { additionalProperties: false },
);

export const VmcastPublish = Type.Object(
  {
    image: Type.String({ minLength: 1, maxLength: 200, description: 'A qcow2 image of the library: "name" or "name:version"' }),
    name: Type.Optional(VmcastName),
    version: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_.+-]{1,64}$' })),
    architecture: Type.Optional(Type.String({ pattern: '^[a-z0-9_]{1,32}$' })),
    bootMethod: Type.Optional(StringEnum(['disk', 'appliance-kernel'] as const)),
    minMemoryMiB: Type.Optional(Type.Integer({ minimum: 1, maximum: 1048576 })),
    minCpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 1024 })),
    labels: Type.Optional(Labels),
  },
  { additionalProperties: false },
);
export type VmcastPublish = Static<typeof VmcastPublish>;

/** Publish an imported appliance package (.eva, docs/eva-packages.md) on a channel. */
export const VmcastPackageReleasePublish = Type.Object(
  {
    package: Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*(:[A-Za-z0-9_.+-]+)?$', description: 'An imported appliance package: its id, "name:version", or a name with one version' }),
  },
  { additionalProperties: false },
);
export type VmcastPackageReleasePublish = Static<typeof VmcastPackageReleasePublish>;

export const VmcastRelease = Type.Object({
  id: Type.String(),
  channel: Type.Union([Type.String(), Type.Null()]),
  subscription: Type.Union([Type.String(), Type.Null()]),
  name: Type.String(),
  version: Type.String(),
  state: StringEnum(['published', 'available', 'downloading', 'verified', 'quarantined'] as const),
  manifest: Type.Record(Type.String(), Type.Unknown()),
  url: Type.String(),
  keyId: Type.String(),
  imageId: Type.Union([Type.String(), Type.Null()]),
  reason: Type.Union([Type.String(), Type.Null()]),
  receivedBytes: Type.Integer(),
  createdAt: Type.String(),
  updatedAt: Type.String(),
});
export type VmcastRelease = Static<typeof VmcastRelease>;

export const VmcastSubscription = Type.Object({
  id: Type.String(),
  name: Type.String(),
  url: Type.String(),
  pinnedKeys: Type.Array(Type.Object({ keyId: Type.String(), revoked: Type.Boolean() })),
  allowedHosts: Type.Array(Type.String()),
  pollSeconds: Type.Integer(),
  etag: Type.Union([Type.String(), Type.Null()]),
  lastModified: Type.Union([Type.String(), Type.Null()]),
  failures: Type.Integer(),
  nextPollAt: Type.Union([Type.String(), Type.Null()]),
  lastPolledAt: Type.Union([Type.String(), Type.Null()]),
  lastError: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String(),
});
export type VmcastSubscription = Static<typeof VmcastSubscription>;
export const VmcastSubscriptionCreate = Type.Object(
  {
    name: VmcastName,
    url: Type.String({ minLength: 1, maxLength: 2000 }),
    pinnedKeys: Type.Array(Pem, { minItems: 1, maxItems: 16 }),
    allowedHosts: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 255 }), { maxItems: 64 })),
    pollSeconds: Type.Optional(Type.Integer({ minimum: 10, maximum: 604800 })),
  },
  { additionalProperties: false },
);
export type VmcastSubscriptionCreate = Static<typeof VmcastSubscriptionCreate>;

export const VmcastPollResult = Type.Object({
  subscription: Type.String(),
  status: Type.Integer(),
  bodyBytes: Type.Integer(),
  imported: Type.Array(Type.String()),
  quarantined: Type.Array(Type.Object({ release: Type.String(), reason: Type.String() })),
  failed: Type.Array(Type.Object({ release: Type.String(), reason: Type.String() })),
  error: Type.Optional(Type.String()),
});

export const VmcastFollow = Type.Object({
  vmId: Type.String(),
  vm: Type.String(),
  channel: Type.String(),
  policy: StringEnum(['auto', 'notify', 'pinned'] as const),
  held: Type.Boolean(),
  currentRelease: Type.Union([Type.String(), Type.Null()]),
  pendingRelease: Type.Union([Type.String(), Type.Null()]),
  maintenanceWindow: Type.Union([Type.String(), Type.Null()]),
  updatedAt: Type.String(),
});
export type VmcastFollow = Static<typeof VmcastFollow>;
export const VmcastFollowRequest = Type.Object(
  {
    channel: VmcastName,
    policy: StringEnum(['auto', 'notify', 'pinned'] as const),
    maintenanceWindow: Type.Optional(Type.String({ minLength: 1, maxLength: 11, description: 'UTC "HH:MM-HH:MM" in which auto updates run (checked by the manager)' })),
  },
  { additionalProperties: false },
);
export const VmcastApply = Type.Object({ version: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_.+-]{1,64}$' })) }, { additionalProperties: false });

// ---------------------------------------------------------------- package updates to guests

const PackageVersion = Type.String({ pattern: '^[A-Za-z0-9_.+-]{1,64}$' });
const Sha256 = Type.String({ pattern: '^[0-9a-f]{64}$' });

/** A package of a channel: a signed tar.gz of files plus an `install` script. */
export const VmcastPackage = Type.Object({
  id: Type.String(),
  channel: Type.Union([Type.String(), Type.Null()]),
  subscription: Type.Union([Type.String(), Type.Null()]),
  name: Type.String(),
  version: Type.String(),
  state: StringEnum(['published', 'available', 'verified', 'quarantined'] as const),
  description: Type.String(),
  sha256: Type.String(),
  sizeBytes: Type.Integer(),
  url: Type.String(),
  keyId: Type.String(),
  reason: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String(),
  updatedAt: Type.String(),
});
export type VmcastPackage = Static<typeof VmcastPackage>;
export const VmcastPackagePublish = Type.Object(
  {
    name: VmcastName,
    version: PackageVersion,
    description: Type.Optional(Type.String({ maxLength: 500 })),
    archiveBase64: Type.String({ minLength: 4, maxLength: 1_000_000, description: 'The package: a tar.gz (base64) of regular files and directories with an `install` script at its top; the API\'s JSON body limit (1 MiB) makes it at most about 750 KiB here (a feed may carry packages up to 8 MiB)' }),
  },
  { additionalProperties: false },
);
export type VmcastPackagePublish = Static<typeof VmcastPackagePublish>;

const PackageVersionRef = Type.Object({ name: Type.String(), version: Type.String() });
/** What a VM has, is offered and waits for, by package name. */
export const VmPackages = Type.Object({
  vmId: Type.String(),
  vm: Type.String(),
  channel: Type.Union([Type.String(), Type.Null()]),
  policy: Type.Union([StringEnum(['auto', 'notify', 'pinned'] as const), Type.Null()]),
  held: Type.Boolean(),
  /** The guest's own report (through the metadata service), as last read. */
  installed: Type.Array(PackageVersionRef),
  reportedAt: Type.Union([Type.String(), Type.Null()]),
  /** Offered to the guest now (its update agent installs these). */
  offered: Type.Array(PackageVersionRef),
  /** Newer versions waiting for the operator's approval (`notify`). */
  pending: Type.Array(PackageVersionRef),
  /** Where the offer was last pushed (a host name) and when. */
  pushedTo: Type.Union([Type.String(), Type.Null()]),
  pushedAt: Type.Union([Type.String(), Type.Null()]),
});
export type VmPackages = Static<typeof VmPackages>;
export const VmPackagesApprove = Type.Object(
  { names: Type.Optional(Type.Array(VmcastName, { maxItems: 100, description: 'Package names to approve; absent: every pending package' })) },
  { additionalProperties: false },
);

/** Agent side: the packages offered to one VM (`PUT /v1/vms/:vm/package-offer`). */
export const GuestPackageOffer = Type.Object(
  {
    /** The VM's name (what a host's network state may call it). */
    vmName: Type.String({ minLength: 1, maxLength: 128 }),
    packages: Type.Array(Type.Object({ name: VmcastName, version: PackageVersion, sha256: Sha256, sizeBytes: Type.Integer({ minimum: 1 }) }, { additionalProperties: false }), { maxItems: 256 }),
  },
  { additionalProperties: false },
);
export type GuestPackageOffer = Static<typeof GuestPackageOffer>;
/** Agent side: the offer and the guest's last report of one VM (`GET /v1/vms/:vm/packages`). */
export const GuestPackageState = Type.Object({
  offer: Type.Union([GuestPackageOffer, Type.Null()]),
  installed: Type.Array(PackageVersionRef),
  reportedAt: Type.Union([Type.String(), Type.Null()]),
});
export type GuestPackageState = Static<typeof GuestPackageState>;

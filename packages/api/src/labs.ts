import { Type, type Static } from 'typebox';
import { Name, StringEnum } from './common.js';
import { EvaHealthCheck, EvaNetwork, EvaNic, EvaSecurityGroup, EvaUpdatePolicy } from './eva.js';
import { Labels, Timestamp, Uuid } from './manager.js';
import { SecurityLabelRef } from './policy.js';

/**
 * Labs (docs/labs.md): a deployment of an appliance package, or of a lab
 * manifest given inline, with its own networks, security groups, labels and
 * VMs, handled as one unit (deploy, start, stop, snapshot, reset, clone,
 * destroy: each one operation on the whole lab).
 */

/** Lab names are short: a lab's VMs and networks are named `<lab>-<name>` and must stay valid names (63 characters). */
export const LabName = Type.String({
  minLength: 1,
  maxLength: 20,
  pattern: '^[a-z][a-z0-9-]*$',
  description: 'Lower-case letters, digits and "-", starting with a letter; at most 20 characters (the lab\'s VMs and networks are named <lab>-<name>)',
});

/** A lab VM's guest configuration: its kernel settings (an EVA package's user-data and settings are not carried into labs yet). */
export const LabGuest = Type.Object(
  { cmdline: Type.Optional(Type.String({ maxLength: 1024, pattern: '^[A-Za-z0-9_.:/@,+= -]*$', description: 'Extra kernel settings (drover.* keys); addresses of the manifest\'s subnets in them are moved to the lab\'s' })) },
  { additionalProperties: false },
);

/**
 * A VM of a lab manifest. Like a VM of an EVA manifest (eva.ts), but it boots
 * an image of the library (`image`, e.g. the `web` appliance) instead of files
 * carried in a package: a package's VMs are mapped onto this when it is deployed.
 */
export const LabVm = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 38, pattern: '^[a-z0-9][a-z0-9-]*$', description: 'Lower-case letters, digits and "-" (the VM is named <lab>-<name>)' }),
    image: Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*(:[A-Za-z0-9_.+-]+)?$', description: 'An image of the library: "name" or "name:version"' }),
    dataImages: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*(:[A-Za-z0-9_.+-]+)?$' }), {
        maxItems: 8,
        description: 'qcow2 images of the library cloned as the VM\'s data disks after its root disk (a package VM\'s data disks)',
      }),
    ),
    cpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
    memoryMiB: Type.Optional(Type.Integer({ minimum: 64, maximum: 1024 * 1024 })),
    nics: Type.Optional(Type.Array(EvaNic, { maxItems: 8 })),
    securityLabel: Type.Optional(SecurityLabelRef),
    labels: Type.Optional(Labels),
    guest: Type.Optional(LabGuest),
    dependsOn: Type.Optional(Type.Array(Name, { maxItems: 64, description: 'VMs that must be started and healthy before this one' })),
    healthCheck: Type.Optional(EvaHealthCheck),
    startDelaySeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 3600 })),
  },
  { additionalProperties: false },
);
export type LabVm = Static<typeof LabVm>;

export const LabManifest = Type.Object(
  {
    format: Type.Optional(StringEnum(['drover-lab', 'drover-eva'] as const)),
    formatVersion: Type.Optional(Type.Literal(1)),
    name: Name,
    version: Type.Optional(Type.String({ minLength: 1, maxLength: 63, pattern: '^[A-Za-z0-9][A-Za-z0-9_.+-]*$' })),
    description: Type.Optional(Type.String({ maxLength: 2000 })),
    networks: Type.Array(EvaNetwork, { maxItems: 32 }),
    securityGroups: Type.Optional(Type.Array(EvaSecurityGroup, { maxItems: 64 })),
    vms: Type.Array(LabVm, { minItems: 1, maxItems: 64 }),
    updatePolicy: Type.Optional(EvaUpdatePolicy),
  },
  { additionalProperties: false, description: 'What a lab deploys: networks, security groups, VMs with their start order and health checks' },
);
export type LabManifest = Static<typeof LabManifest>;

export const LabCreate = Type.Object(
  {
    name: LabName,
    package: Type.Optional(Type.String({ minLength: 1, maxLength: 100, description: 'Deploy this imported package (id)' })),
    example: Type.Optional(Type.String({ minLength: 1, maxLength: 63, pattern: '^[a-z0-9][a-z0-9-]*$', description: 'Deploy a lab shipped with Drover (GET /api/v1/lab-examples)' })),
    manifest: Type.Optional(LabManifest),
    labels: Type.Optional(Labels),
    project: Type.Optional(Name),
    healthTimeoutSeconds: Type.Optional(Type.Integer({ minimum: 5, maximum: 3600, description: 'How long each VM may take to pass its health check (default 300)' })),
  },
  { additionalProperties: false, description: 'Exactly one of package, example or manifest' },
);
export type LabCreate = Static<typeof LabCreate>;

export const LabClone = Type.Object(
  { name: LabName, labels: Type.Optional(Labels) },
  { additionalProperties: false },
);
export type LabClone = Static<typeof LabClone>;

export const LabSnapshot = Type.Object({ name: Name }, { additionalProperties: false });
export type LabSnapshot = Static<typeof LabSnapshot>;

export const labStates = ['deploying', 'running', 'stopped', 'partial', 'busy', 'failed', 'destroying'] as const;

export const LabNetworkInfo = Type.Object({
  name: Type.String({ description: 'The name in the manifest' }),
  network: Type.String({ description: 'The network made for the lab (namespaced <lab>-<name>)' }),
  kind: Type.String(),
  subnet: Type.String({ description: 'The subnet the lab got from the lab address pool' }),
});

export const LabVmInfo = Type.Object({
  name: Type.String({ description: 'The name in the manifest' }),
  vmId: Type.Union([Uuid, Type.Null()]),
  vm: Type.String({ description: 'The VM\'s name (<lab>-<name>)' }),
  state: Type.String({ description: 'The VM\'s state, or "absent" before it is made' }),
  order: Type.Integer({ description: 'Its start level: 0 starts first, then 1 (it depends on level 0), ...' }),
  addresses: Type.Array(Type.String(), { description: 'Its IPv4 addresses on the lab networks' }),
  endpoints: Type.Array(Type.Object({ guestPort: Type.Integer(), host: Type.String(), hostPort: Type.Integer() }), { description: 'Guest ports reachable on its host (loopback forwards)' }),
});

export const Lab = Type.Object({
  id: Uuid,
  name: Type.String(),
  state: StringEnum(labStates),
  source: Type.Object({ kind: StringEnum(['package', 'example', 'manifest', 'clone'] as const), ref: Type.Union([Type.String(), Type.Null()]) }),
  manifestName: Type.String(),
  manifestVersion: Type.Union([Type.String(), Type.Null()]),
  networkMode: StringEnum(['networks', 'user'] as const, { description: '"networks": isolated Drover networks; "user": each VM on QEMU user networking with loopback forwards (no Drover networks on this manager)' }),
  networks: Type.Array(LabNetworkInfo),
  securityGroups: Type.Array(Type.Object({ name: Type.String(), group: Type.String() })),
  vms: Type.Array(LabVmInfo),
  labels: Labels,
  updatePolicy: StringEnum(['pinned', 'notify', 'auto'] as const),
  owner: Type.String(),
  lastError: Type.Union([Type.String(), Type.Null()]),
  rev: Type.Integer(),
  createdAt: Timestamp,
  updatedAt: Timestamp,
});
export type Lab = Static<typeof Lab>;

export const LabExample = Type.Object({
  name: Type.String(),
  description: Type.String(),
  manifest: LabManifest,
});
export type LabExample = Static<typeof LabExample>;

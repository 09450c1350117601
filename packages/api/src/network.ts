import { Type, type Static } from 'typebox';
import { StringEnum } from './common.js';

/**
 * The agent's network state (`PUT /v1/network-state`): what the manager pushes
 * to every host that runs a VM of a network. The agent checks everything else
 * (names, addresses, ranges, references; docs/networks.md) before changing
 * anything.
 */
const Ports = Type.Object({ from: Type.Integer(), to: Type.Integer() }, { additionalProperties: false });
const Protocol = StringEnum(['tcp', 'udp', 'icmp', 'any'] as const);
const Short = Type.String({ minLength: 1, maxLength: 64 });

export const NetworkSpecBody = Type.Object(
  {
    name: Short,
    kind: StringEnum(['bridged', 'nat', 'isolated'] as const),
    subnet: Short,
    gateway: Short,
    hostAddress: Type.Optional(Short),
    bridge: Short,
    uplink: Type.Optional(Short),
    mtu: Type.Optional(Type.Integer()),
    vxlan: Type.Optional(Type.Object(
      { vni: Type.Integer(), local: Short, remotes: Type.Array(Short, { maxItems: 1024 }), device: Short, underlay: Type.Optional(Short) },
      { additionalProperties: false },
    )),
  },
  { additionalProperties: false },
);

export const SecurityGroupRuleBody = Type.Object(
  {
    direction: StringEnum(['ingress', 'egress'] as const),
    protocol: Protocol,
    ports: Type.Optional(Ports),
    icmpType: Type.Optional(Type.Integer()),
    cidr: Type.Optional(Short),
    group: Type.Optional(Short),
    description: Type.Optional(Type.String({ maxLength: 200 })),
  },
  { additionalProperties: false },
);

export const VmMetadataBody = Type.Object(
  {
    instanceId: Short,
    hostname: Short,
    userData: Type.Optional(Type.String({ maxLength: 64 * 1024 })),
    settings: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  },
  { additionalProperties: false },
);

export const NetworkStateBody = Type.Object(
  {
    networks: Type.Array(NetworkSpecBody, { maxItems: 256 }),
    groups: Type.Array(Type.Object({ name: Short, rules: Type.Array(SecurityGroupRuleBody, { maxItems: 1000 }) }, { additionalProperties: false }), { maxItems: 1000 }),
    nics: Type.Array(Type.Object(
      { vm: Short, nic: Short, network: Short, tap: Short, mac: Short, ip: Short, groups: Type.Array(Short, { maxItems: 16 }) },
      { additionalProperties: false },
    ), { maxItems: 4096 }),
    hostRules: Type.Array(Type.Object(
      { network: Type.Optional(Short), protocol: Protocol, ports: Type.Optional(Ports), cidr: Type.Optional(Short), action: StringEnum(['accept', 'drop'] as const) },
      { additionalProperties: false },
    ), { maxItems: 1000 }),
    groupMembers: Type.Optional(Type.Record(Type.String(), Type.Array(Short, { maxItems: 65536 }))),
    /** What the metadata service answers each VM, by VM name. */
    metadata: Type.Optional(Type.Record(Type.String(), VmMetadataBody)),
  },
  { additionalProperties: false },
);
export type NetworkStateBody = Static<typeof NetworkStateBody>;

export const NetworkStateAnswer = Type.Object({
  ruleCount: Type.Integer({ description: 'Rules in the loaded ruleset' }),
  script: Type.String({ description: 'The nft script last loaded (Drover tables only)' }),
});
export type NetworkStateAnswer = Static<typeof NetworkStateAnswer>;

// ---------------------------------------------------------------- the manager's API (networks/)

/**
 * Names of networks and security groups: they end up in nft comments, chain
 * names and bridge names on every host, so only this small alphabet is taken.
 */
export const NetName = Type.String({ pattern: '^[a-z][a-z0-9-]{0,30}$', description: '1 to 31 characters of a-z, 0-9 and "-", starting with a letter' });
const Ipv4 = Type.String({ maxLength: 15, pattern: '^[0-9]{1,3}(\\.[0-9]{1,3}){3}$', description: 'IPv4 address' });
const Cidr = Type.String({ maxLength: 18, pattern: '^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$', description: 'IPv4 CIDR, e.g. 10.42.0.0/24' });
const Iface = Type.String({ pattern: '^[A-Za-z0-9_.-]{1,15}$', description: 'A host interface name' });
const NetLabels = Type.Record(Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$' }), Type.String({ maxLength: 255, pattern: '^[^\\x00-\\x1f]*$' }), { additionalProperties: false });
const PortRange = Type.Object({ from: Type.Integer({ minimum: 1, maximum: 65535 }), to: Type.Integer({ minimum: 1, maximum: 65535 }) }, { additionalProperties: false, description: 'Inclusive port range (tcp/udp only)' });

export const networkKinds = ['bridged', 'nat', 'isolated'] as const;

export const NetworkCreate = Type.Object(
  {
    name: NetName,
    kind: StringEnum(networkKinds, { description: 'bridged: the hosts\' `uplink` is on the bridge; nat: masqueraded out through `uplink`; isolated: no route in or out' }),
    subnet: Cidr,
    gateway: Type.Optional(Ipv4),
    uplink: Type.Optional(Iface),
    mtu: Type.Optional(Type.Integer({ minimum: 576, maximum: 9000, description: 'Guests\' MTU (default 1500; 1450 while the network spans hosts over VXLAN)' })),
    labels: Type.Optional(NetLabels),
  },
  { additionalProperties: false },
);
export type NetworkCreate = Static<typeof NetworkCreate>;

export const NetworkEdit = Type.Object(
  { mtu: Type.Optional(Type.Union([Type.Integer({ minimum: 576, maximum: 9000 }), Type.Null()])), labels: Type.Optional(NetLabels) },
  { additionalProperties: false },
);
export type NetworkEdit = Static<typeof NetworkEdit>;

export const Network = Type.Object({
  id: Type.String(),
  name: Type.String(),
  kind: StringEnum(networkKinds),
  subnet: Type.String(),
  gateway: Type.String(),
  uplink: Type.Union([Type.String(), Type.Null()]),
  mtu: Type.Union([Type.Integer(), Type.Null()]),
  vni: Type.Integer({ description: 'VXLAN id, used while the network spans hosts' }),
  labels: Type.Record(Type.String(), Type.String()),
  owner: Type.String(),
  lab: Type.Union([Type.String(), Type.Null()]),
  nics: Type.Integer({ description: 'VM NICs on the network' }),
  hosts: Type.Array(Type.String(), { description: 'Hosts running a VM of the network now' }),
  rev: Type.Integer(),
  createdAt: Type.String(),
  updatedAt: Type.String(),
});
export type Network = Static<typeof Network>;

export const SecurityGroupRuleInput = Type.Object(
  {
    direction: StringEnum(['ingress', 'egress'] as const),
    protocol: Protocol,
    ports: Type.Optional(PortRange),
    icmpType: Type.Optional(Type.Integer({ minimum: 0, maximum: 255, description: 'icmp only' })),
    cidr: Type.Optional(Cidr),
    group: Type.Optional(NetName),
    description: Type.Optional(Type.String({ maxLength: 200 })),
  },
  { additionalProperties: false, description: 'The peer is `cidr`, or every NIC of another `group`, or anywhere when neither is given' },
);
export type SecurityGroupRuleInput = Static<typeof SecurityGroupRuleInput>;

export const SecurityGroupCreate = Type.Object(
  { name: NetName, description: Type.Optional(Type.String({ maxLength: 200 })), rules: Type.Optional(Type.Array(SecurityGroupRuleInput, { maxItems: 1000 })) },
  { additionalProperties: false },
);
export type SecurityGroupCreate = Static<typeof SecurityGroupCreate>;

export const SecurityGroupRulesPut = Type.Object({ rules: Type.Array(SecurityGroupRuleInput, { maxItems: 1000 }) }, { additionalProperties: false });

export const SecurityGroup = Type.Object({
  id: Type.String(),
  name: Type.String(),
  description: Type.String(),
  rules: Type.Array(SecurityGroupRuleBody),
  owner: Type.String(),
  lab: Type.Union([Type.String(), Type.Null()]),
  rev: Type.Integer(),
  createdAt: Type.String(),
  updatedAt: Type.String(),
});
export type SecurityGroup = Static<typeof SecurityGroup>;

export const HostRuleCreate = Type.Object(
  {
    network: Type.Optional(NetName),
    protocol: Protocol,
    ports: Type.Optional(PortRange),
    cidr: Type.Optional(Cidr),
    action: StringEnum(['accept', 'drop'] as const),
  },
  { additionalProperties: false, description: 'Traffic from VM networks (one, or all) to the hosts themselves, checked after DHCP and metadata and before the final drop' },
);
export type HostRuleCreate = Static<typeof HostRuleCreate>;

export const HostRule = Type.Object({
  id: Type.String(),
  network: Type.Union([Type.String(), Type.Null()]),
  protocol: Protocol,
  ports: Type.Union([Type.Object({ from: Type.Integer(), to: Type.Integer() }), Type.Null()]),
  cidr: Type.Union([Type.String(), Type.Null()]),
  action: StringEnum(['accept', 'drop'] as const),
  createdAt: Type.String(),
});
export type HostRule = Static<typeof HostRule>;

export const VmNicView = Type.Object({
  index: Type.Integer(),
  nic: Type.String({ description: 'eth<index>' }),
  network: Type.String(),
  mac: Type.String(),
  ip: Type.String(),
  tap: Type.String(),
  securityGroups: Type.Array(Type.String()),
  rev: Type.Integer(),
});
export type VmNicView = Static<typeof VmNicView>;

export const NicSecurityGroupsPut = Type.Object({ securityGroups: Type.Array(NetName, { maxItems: 16 }) }, { additionalProperties: false });

const ExplainedRule = Type.Object({
  group: Type.String(),
  direction: Type.String(),
  protocol: Type.String(),
  ports: Type.Optional(Type.String()),
  icmpType: Type.Optional(Type.Integer()),
  peer: Type.String({ description: '"anywhere", a CIDR, or "group NAME (addresses…)"' }),
  description: Type.Optional(Type.String()),
});

export const FirewallExplain = Type.Object({
  vm: Type.String(),
  state: Type.String(),
  host: Type.Union([Type.String(), Type.Null()]),
  nics: Type.Array(
    Type.Object({
      nic: Type.String(),
      network: Type.String(),
      kind: Type.String(),
      ip: Type.String(),
      mac: Type.String(),
      tap: Type.String(),
      securityGroups: Type.Array(Type.String()),
      antiSpoofing: Type.String(),
      ingressDefault: Type.String({ description: 'What inbound traffic no rule allows gets' }),
      egressDefault: Type.String(),
      ingress: Type.Array(ExplainedRule),
      egress: Type.Array(ExplainedRule),
    }),
  ),
  hostRules: Type.Array(Type.String()),
  /** The nft lines loaded on the VM's host that name its taps (when it runs). */
  ruleset: Type.Array(Type.String()),
  text: Type.String({ description: 'The same, as `drover fw explain` prints it' }),
});
export type FirewallExplain = Static<typeof FirewallExplain>;

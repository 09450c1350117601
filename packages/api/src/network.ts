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

import { Type, type Static } from 'typebox';
import { StringEnum } from './common.js';

/**
 * Host power, maintenance and the power policy (manager power/,
 * docs/maintenance-and-power.md).
 */

const Uuid = Type.String({ pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' });
const TimeoutMs = Type.Optional(Type.Integer({ minimum: 100, maximum: 600_000, description: 'Time limit of one driver call (default 15000)' }));

export const evacuationPolicies = ['live-migrate', 'cold-migrate', 'stop', 'stay'] as const;
export type EvacuationPolicy = (typeof evacuationPolicies)[number];
export const EvacuationPolicySchema = StringEnum(evacuationPolicies, {
  description: 'What a host evacuation does with this VM: live-migrate (default), cold-migrate (stop, move, start), stop (stays on the host, stopped; restore starts it), stay (left running)',
});

export const IpmiPowerSettings = Type.Object(
  {
    driver: Type.Literal('ipmi'),
    address: Type.String({ minLength: 1, maxLength: 253, pattern: '^[A-Za-z0-9.:-]+$', description: 'The BMC address' }),
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
    username: Type.String({ minLength: 1, maxLength: 64 }),
    password: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: 'Kept by the manager; never returned. Left out: the stored one is kept' })),
    timeoutMs: TimeoutMs,
  },
  { additionalProperties: false },
);
export const WolPowerSettings = Type.Object(
  {
    driver: Type.Literal('wol'),
    mac: Type.String({ pattern: '^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$' }),
    address: Type.String({ pattern: '^\\d{1,3}(\\.\\d{1,3}){3}$', description: 'Where the magic packet is sent (directed UDP): the subnet\'s directed broadcast address' }),
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535, description: 'UDP port (default 9)' })),
    timeoutMs: TimeoutMs,
  },
  { additionalProperties: false },
);
export const CommandPowerSettings = Type.Object(
  {
    driver: Type.Literal('command'),
    on: Type.String({ minLength: 1, maxLength: 4096, description: 'Shell command that powers the host on (exit 0)' }),
    off: Type.String({ minLength: 1, maxLength: 4096, description: 'Shell command that powers the host off (exit 0)' }),
    status: Type.String({ minLength: 1, maxLength: 4096, description: 'Shell command that prints "on" or "off"' }),
    timeoutMs: TimeoutMs,
  },
  { additionalProperties: false },
);
export const HostPowerSettings = Type.Union([CommandPowerSettings, IpmiPowerSettings, WolPowerSettings], { description: 'A power driver: ipmi, wol (power on only) or command' });
export type HostPowerSettings = Static<typeof HostPowerSettings>;

export const HostPower = Type.Object({
  hostId: Uuid,
  hostName: Type.String(),
  driver: StringEnum(['ipmi', 'wol', 'command'] as const),
  /** The settings without secrets (an IPMI password shows as passwordSet). */
  settings: Type.Record(Type.String(), Type.Unknown()),
  actions: Type.Array(Type.String()),
  poweredOffAt: Type.Union([Type.String(), Type.Null()]),
  hoursOff: Type.Number({ description: 'Hours this host spent powered off by Drover' }),
});
export type HostPower = Static<typeof HostPower>;

export const powerActions = ['on', 'off', 'cycle', 'status'] as const;
export type PowerActionName = (typeof powerActions)[number];
/** `action` is one of `powerActions`; any other name is a 404 (no such action), as for any path name. */
export const PowerActionParams = Type.Object(
  { id: Type.String({ minLength: 1, maxLength: 63, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$' }), action: Type.String({ minLength: 1, maxLength: 63, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$', description: 'on, off, cycle or status' }) },
  { additionalProperties: false },
);

export const EvacuateRequest = Type.Object(
  {
    dryRun: Type.Optional(Type.Boolean({ description: 'Only show the plan: what moves where, what stays, what cannot move and why' })),
    concurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 16, description: 'Moves at the same time (default 2)' })),
  },
  { additionalProperties: false },
);
export type EvacuateRequest = Static<typeof EvacuateRequest>;

const PlannedVm = Type.Object({ vmId: Uuid, vmName: Type.String(), policy: Type.String() });
export const HostEvacuationPlan = Type.Object({
  hostId: Uuid,
  hostName: Type.String(),
  moves: Type.Array(Type.Object({ ...PlannedVm.properties, toHostId: Uuid, toHostName: Type.String() })),
  stops: Type.Array(PlannedVm),
  stays: Type.Array(Type.Object({ ...PlannedVm.properties, reason: Type.String() })),
  cannotMove: Type.Array(Type.Object({ ...PlannedVm.properties, reason: Type.String() })),
});
export type HostEvacuationPlan = Static<typeof HostEvacuationPlan>;

export const RestorePlan = Type.Object({
  hostId: Uuid,
  hostName: Type.String(),
  returns: Type.Array(Type.Object({ vmId: Uuid, vmName: Type.String(), policy: Type.String(), fromHostName: Type.Union([Type.String(), Type.Null()]), action: Type.String() })),
});
export type RestorePlan = Static<typeof RestorePlan>;

export const DryRunBody = Type.Object({ dryRun: Type.Optional(Type.Boolean()) }, { additionalProperties: false });

export const PowerPolicy = Type.Object(
  {
    enabled: Type.Boolean({ description: 'Whether the schedule runs by itself (manual runs work either way)' }),
    timeZone: Type.String({ minLength: 1, maxLength: 64, description: 'IANA time zone of the window, e.g. "Europe/Berlin"' }),
    window: Type.String({ minLength: 1, maxLength: 32, description: 'Consolidation window "HH:MM-HH:MM" (may cross midnight), e.g. "22:00-06:00"' }),
    spareHosts: Type.Integer({ minimum: 0, maximum: 1000, description: 'Emptied hosts kept powered on' }),
    wattsPerHost: Type.Number({ minimum: 0, maximum: 100_000, description: 'Power a host draws while on, for the energy estimate' }),
    reserveMemoryPercent: Type.Integer({ minimum: 0, maximum: 100, description: 'Wake hosts early when free memory of the powered-on hosts drops under this share of their capacity' }),
    headroomPercent: Type.Integer({ minimum: 0, maximum: 90, description: 'Capacity left free on each host when packing' }),
    rebalanceThresholdPercent: Type.Optional(Type.Integer({ minimum: 0, maximum: 100, description: 'After waking hosts, VMs move until the load of the most and least loaded hosts differs by at most this (default 20)' })),
  },
  { additionalProperties: false },
);
export type PowerPolicy = Static<typeof PowerPolicy>;

export const PowerReport = Type.Object({
  policy: Type.Union([PowerPolicy, Type.Null()]),
  mode: StringEnum(['day', 'night'] as const),
  inWindow: Type.Boolean(),
  hostsPoweredOff: Type.Array(Type.Object({ hostId: Uuid, hostName: Type.String(), since: Type.String() })),
  hoursOff: Type.Number({ description: 'Host-hours spent powered off by Drover, all hosts' }),
  energySavedKWh: Type.Number({ description: 'hoursOff × wattsPerHost / 1000' }),
  lastRun: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
});
export type PowerReport = Static<typeof PowerReport>;

const NamedMove = Type.Object({ vmId: Uuid, vmName: Type.String(), from: Type.String(), to: Type.String() });
export const NightPlan = Type.Object({
  moves: Type.Array(NamedMove),
  powerOff: Type.Array(Type.Object({ hostId: Uuid, hostName: Type.String() })),
  spareHosts: Type.Array(Type.String()),
  hostsUsedBefore: Type.Integer(),
  hostsUsed: Type.Integer(),
  lowerBound: Type.Integer(),
  ffd: Type.Object({ hostsUsed: Type.Integer(), moves: Type.Integer() }),
  notPlanned: Type.Array(Type.Object({ vmId: Uuid, reason: Type.String() })),
});
export type NightPlan = Static<typeof NightPlan>;
export const WakePlan = Type.Object({
  powerOn: Type.Array(Type.Object({ hostId: Uuid, hostName: Type.String() })),
  reason: Type.String(),
});
export type WakePlan = Static<typeof WakePlan>;

export const HaSetting = Type.Object({ enabled: Type.Boolean({ description: 'Restart the VM on another host when its host is lost, after fencing it; only for VMs whose disks are on shared storage' }) }, { additionalProperties: false });
export type HaSetting = Static<typeof HaSetting>;

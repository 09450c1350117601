/** Host states as the manager tracks them; only `online` hosts take new VMs. */
export type HostState = 'online' | 'unreachable' | 'maintenance' | 'powered_off' | 'joining';

export interface ResourceAmounts {
  readonly cpus: number;
  readonly memoryMiB: number;
}

/** A VM that counts against a host for affinity rules: running, paused, or a start in flight. */
export interface HostVm {
  readonly id: string;
  /** For explanations (policy filters name the VM that bars a host); the id when absent. */
  readonly name?: string;
  readonly antiAffinityGroups: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
}

/**
 * What the scheduler knows about one host. Treated as immutable: per-host indexes
 * (anti-affinity groups) are memoized on the `vms` array, so give a host a new `vms`
 * array when its VMs change rather than editing entries in place.
 */
export interface HostCandidate {
  readonly id: string;
  readonly name: string;
  readonly state: HostState;
  /** Physical CPUs and memory the host offers to VMs. */
  readonly capacity: ResourceAmounts;
  /** vCPUs per physical CPU; default 4 (`DEFAULT_CPU_ALLOCATION_RATIO`). Memory is never overcommitted. */
  readonly cpuAllocationRatio?: number;
  /** VMs with a QEMU process on the host. */
  readonly used: ResourceAmounts;
  /** Starts (and incoming migrations) in flight, not yet in `used`. */
  readonly reserved: ResourceAmounts;
  readonly cpuModels: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  readonly vms: readonly HostVm[];
}

export interface PlacementRequest {
  readonly vmId: string;
  readonly name: string;
  /** vCPUs. */
  readonly cpus: number;
  readonly memoryMiB: number;
  readonly cpuModel?: string;
  /** No two VMs sharing a group run on the same host. */
  readonly antiAffinityGroups?: readonly string[];
  /** Host ids or names; when given, only these hosts are considered. */
  readonly hostInclude?: readonly string[];
  /** Host ids or names never to use. */
  readonly hostExclude?: readonly string[];
  /** The VM's own labels (for policy filters such as sHype's Chinese Wall). */
  readonly labels?: Readonly<Record<string, string>>;
  /** Every key must be present on the host with exactly this value. */
  readonly requiredHostLabels?: Readonly<Record<string, string>>;
}

/** `spread` keeps the most room free on each host (starts); `pack` fills the fullest host first (consolidation). */
export type PlacementMode = 'spread' | 'pack';

/**
 * A filter's answer. `reason` is a full sentence naming the host and the numbers;
 * `short` (optional) is the same without the host name, for one-line summaries
 * such as `h1: 96 MiB free; h2: in maintenance`.
 */
export type FilterVerdict = { readonly pass: true } | { readonly pass: false; readonly reason: string; readonly short?: string };

export interface PlacementContext {
  readonly mode: PlacementMode;
}

/** A pure function deciding whether a host can take the VM at all. Its `name` appears in explanations. */
export type PlacementFilter = ((request: PlacementRequest, host: HostCandidate, context: PlacementContext) => FilterVerdict) & {
  readonly name: string;
};

/**
 * A pure function scoring a host that passed every filter, in [0, 1] (1 = best).
 * Totals are the weight-weighted sum of all weighers' scores.
 */
export type PlacementWeigher = ((request: PlacementRequest, host: HostCandidate, context: PlacementContext) => number) & {
  readonly name: string;
  readonly weight: number;
};

export interface PlacementOptions {
  /** Default `spread`. */
  readonly mode?: PlacementMode;
  /** Default `defaultFilters`; append to it to add a rule. */
  readonly filters?: readonly PlacementFilter[];
  /** Default `defaultWeighers`. */
  readonly weighers?: readonly PlacementWeigher[];
}

export interface PlacementResult {
  readonly hostId: string;
  readonly hostName: string;
  /** Weighted total of the chosen host. */
  readonly score: number;
  /** Each weigher's score for the chosen host, by weigher name. */
  readonly scores: Readonly<Record<string, number>>;
  /** How many hosts passed every filter. */
  readonly candidates: number;
}

export interface FilterOutcome {
  readonly filter: string;
  readonly pass: boolean;
  readonly reason?: string;
}

export interface HostExplanation {
  readonly hostId: string;
  readonly hostName: string;
  readonly state: HostState;
  /** True when every filter passed. */
  readonly passed: boolean;
  /** Every filter's verdict, in chain order (not short-circuited). */
  readonly filters: readonly FilterOutcome[];
  /** Only for hosts that passed: each weigher's score, the weighted total, and the rank (1 = chosen). */
  readonly scores?: Readonly<Record<string, number>>;
  readonly score?: number;
  readonly rank?: number;
}

export interface PlacementExplanation {
  readonly vmId: string;
  readonly vmName: string;
  readonly mode: PlacementMode;
  /** Weight of each weigher, by name. */
  readonly weights: Readonly<Record<string, number>>;
  /** The host `placeVm` would choose, or null when none passes. */
  readonly chosen: { readonly hostId: string; readonly hostName: string } | null;
  /** In the order the hosts were given. */
  readonly hosts: readonly HostExplanation[];
}

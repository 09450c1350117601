/**
 * An sHype-style mandatory access control policy (Xen's ACM): Simple Type
 * Enforcement (STE) decides which workloads may share a resource, the Chinese
 * Wall (CW) which may share a host. This is also the native (YAML/JSON) form.
 */
export interface SecurityPolicy {
  /** Policy name, the middle part of `ACM:<policy>:<label>`. */
  readonly name: string;
  readonly url?: string;
  readonly date?: string;
  readonly version?: string;
  readonly steTypes: readonly string[];
  readonly cwTypes: readonly string[];
  /** Types of one set are exclusive on a host: once a VM with one runs, VMs with another may not start there. */
  readonly conflictSets: readonly ConflictSet[];
  /** Subject labels: what a VM (or a host) is. */
  readonly vmLabels: readonly VmLabel[];
  /** Object labels: what a volume, image or network is. */
  readonly resourceLabels: readonly ResourceLabel[];
  /** The VM label a host carries unless it is given one (Xen's bootstrap label, given to Dom0). */
  readonly bootstrapLabel?: string;
}

export interface ConflictSet {
  readonly name: string;
  readonly types: readonly string[];
}

export interface VmLabel {
  readonly name: string;
  readonly steTypes: readonly string[];
  readonly cwTypes: readonly string[];
}

export interface ResourceLabel {
  readonly name: string;
  readonly steTypes: readonly string[];
}

/** One thing wrong with a policy document: where (a path such as `vmLabels[2].cwTypes[0]`) and what. */
export interface PolicyProblem {
  readonly path: string;
  readonly message: string;
}

/** A label resolved against a policy: the type sets the checks use. */
export interface ResolvedLabel {
  /** `ACM:<policy>:<label>`. */
  readonly ref: string;
  readonly name: string;
  readonly kind: 'vm' | 'resource';
  readonly steTypes: ReadonlySet<string>;
  readonly cwTypes: ReadonlySet<string>;
}

import { DroverError, errors } from '../errors.js';
import { formatLabelRef, parseLabelRef } from './label-ref.js';
import type { ConflictSet, ResolvedLabel, SecurityPolicy } from './types.js';
import { validatePolicy } from './validate.js';

/** A mandatory-policy refusal (HTTP 403, code `policy_denied`); `details.reason` says which rule. */
export function policyDenied(message: string, details: Record<string, unknown>): DroverError {
  return new DroverError('policy_denied', message, { details });
}

/** Why two VM labels may not share a host: `type` (of the first) and `otherType` (of the second) are in `set`. */
export interface LabelConflict {
  readonly set: string;
  readonly type: string;
  readonly otherType: string;
}

/**
 * A validated policy with its lookups built: labels by name, conflict sets by
 * Chinese Wall type. Immutable; build one per loaded policy and share it.
 *
 * @example
 * const policy = compilePolicy(importAcmXml(xml));
 * policy.conflicts(policy.vmLabel('ACM:example.client_v1:dom_HomeBanking'), policy.vmLabel('ACM:example.client_v1:dom_Fun'));
 * // → [{ set: 'Protection1', type: 'cw_Sensitive', otherType: 'cw_Distrusted' }]
 */
export class CompiledPolicy {
  readonly name: string;
  private readonly vmLabels = new Map<string, ResolvedLabel>();
  private readonly resourceLabels = new Map<string, ResolvedLabel>();
  /** Chinese Wall type → the conflict sets holding it. */
  readonly setsOfType = new Map<string, ConflictSet[]>();

  constructor(readonly policy: SecurityPolicy) {
    this.name = policy.name;
    for (const label of policy.vmLabels) {
      this.vmLabels.set(label.name, { ref: formatLabelRef(policy.name, label.name), name: label.name, kind: 'vm', steTypes: new Set(label.steTypes), cwTypes: new Set(label.cwTypes) });
    }
    for (const label of policy.resourceLabels) {
      this.resourceLabels.set(label.name, { ref: formatLabelRef(policy.name, label.name), name: label.name, kind: 'resource', steTypes: new Set(label.steTypes), cwTypes: new Set() });
    }
    for (const set of policy.conflictSets) {
      for (const type of set.types) {
        const sets = this.setsOfType.get(type);
        if (sets) sets.push(set);
        else this.setsOfType.set(type, [set]);
      }
    }
  }

  private readonly resolved = new Map<string, ResolvedLabel>();
  private readonly deltas = new Map<ResolvedLabel, ReadonlyArray<readonly [string, number]>>();

  /**
   * Xen's conflict-aggregate increment of a VM with `label`: for each conflict
   * set holding one of its types, every other type of the set, once per set.
   * Computed once per label.
   */
  aggregateDelta(label: ResolvedLabel): ReadonlyArray<readonly [string, number]> {
    const known = this.deltas.get(label);
    if (known) return known;
    const delta = new Map<string, number>();
    const sets = new Set<string>();
    for (const type of label.cwTypes) {
      for (const set of this.setsOfType.get(type) ?? []) {
        if (sets.has(set.name)) continue;
        sets.add(set.name);
        for (const other of set.types) if (!label.cwTypes.has(other)) delta.set(other, (delta.get(other) ?? 0) + 1);
      }
    }
    const entries = [...delta];
    this.deltas.set(label, entries);
    return entries;
  }

  private lookup(ref: string, kind: 'vm' | 'resource'): ResolvedLabel {
    // Placement resolves the same few references thousands of times.
    const key = `${kind}\u0000${ref}`;
    const hit = this.resolved.get(key);
    if (hit) return hit;
    const found = this.lookupUncached(ref, kind);
    if (this.resolved.size < 100_000) this.resolved.set(key, found);
    return found;
  }

  private lookupUncached(ref: string, kind: 'vm' | 'resource'): ResolvedLabel {
    const { policy, label } = parseLabelRef(ref);
    if (policy !== this.name) {
      throw errors.invalid(`Security label "${ref}" belongs to policy "${policy}", but the active policy is "${this.name}"`, { label: ref, policy: this.name });
    }
    const found = (kind === 'vm' ? this.vmLabels : this.resourceLabels).get(label);
    if (!found) {
      const other = (kind === 'vm' ? this.resourceLabels : this.vmLabels).has(label);
      const hint = other ? ` ("${label}" is a ${kind === 'vm' ? 'resource' : 'VM'} label)` : '';
      throw errors.invalid(`Policy "${this.name}" has no ${kind === 'vm' ? 'VM' : 'resource'} label "${label}"${hint}`, { label: ref, policy: this.name });
    }
    return found;
  }

  /** A VM (subject) label by reference; `invalid` naming it when the policy lacks it. */
  vmLabel(ref: string): ResolvedLabel {
    return this.lookup(ref, 'vm');
  }

  /** A resource (object) label by reference: volumes, images, networks. */
  resourceLabel(ref: string): ResolvedLabel {
    return this.lookup(ref, 'resource');
  }

  hasVmLabel(ref: string): boolean {
    try {
      this.vmLabel(ref);
      return true;
    } catch {
      return false;
    }
  }

  /** The label of a host: its own, else the policy's bootstrap label, else none (a host without a label covers nothing). */
  hostLabel(ref: string | undefined | null): ResolvedLabel | undefined {
    if (ref) return this.vmLabel(ref);
    return this.policy.bootstrapLabel === undefined ? undefined : this.vmLabels.get(this.policy.bootstrapLabel);
  }

  /**
   * Whether `label` may start where `running` counts, Xen's rule: for every
   * conflict set holding one of `running`'s types, the set's other types are
   * barred. Symmetric for valid labels (no label holds two types of one set).
   */
  conflicts(label: ResolvedLabel, running: ResolvedLabel): LabelConflict[] {
    const found: LabelConflict[] = [];
    for (const otherType of running.cwTypes) {
      for (const set of this.setsOfType.get(otherType) ?? []) {
        for (const type of set.types) {
          if (type !== otherType && label.cwTypes.has(type) && !running.cwTypes.has(type)) found.push({ set: set.name, type, otherType });
        }
      }
    }
    return found;
  }
}

/** Validates then compiles. */
export function compilePolicy(policy: unknown): CompiledPolicy {
  return new CompiledPolicy(validatePolicy(policy));
}

import type { Logger } from 'pino';
import {
  checkCountedVms,
  CompiledPolicy,
  DroverError,
  defaultFilters,
  detectPolicyFormat,
  errors,
  explainPlacement,
  exportAcmXml,
  exportNativePolicy,
  hostMissingTypes,
  parseLabelRef,
  parsePolicy,
  policyDenied,
  SECURITY_LABEL_KEY,
  securityPolicyFilters,
  steShares,
  type CountedVm,
  type HostCandidate,
  type PlacementFilter,
  type PolicyFormat,
  type PolicyViolation,
  type ResolvedLabel,
  type SecurityPolicy,
} from '@drover/core';
import type { PolicyExplanation, PolicyInfo, PolicyLoad, PolicyValidation, SecurityLabelInfo } from '@drover/api';
import type { EventHub } from '../http/event-hub.js';
import type { Store } from '../store/index.js';
import { listEvery } from '../store/paging.js';
import type { LabelledKind, SecurityPolicyRecord } from '../store/repositories/security.js';
import type { VmRecord } from '../store/types.js';

export { SECURITY_LABEL_KEY };

/** Filters whose refusal is the policy's, not the cluster's (capacity, state…). */
const policyFilterNames = new Set(['chineseWall', 'steHostCoverage']);
/** Filters that only narrow the hosts asked about (a migration names its destination). */
const narrowingFilterNames = new Set(['hostInclude', 'hostExclude']);

export interface PolicyServiceOptions {
  store: Store;
  hub: EventHub;
  logger: Logger;
  /** States in which a VM counts on its host (vm.service.ts `holdingStates`). */
  holdingStates: readonly string[];
  /** The scheduler's view of the hosts (vm.service.ts), for explain. */
  hostCandidates: (store: Store) => Promise<HostCandidate[]>;
}

/** The label a VM carries (in its labels), or undefined. */
export function vmLabelOf(vm: Pick<VmRecord, 'labels'>): string | undefined {
  return Object.hasOwn(vm.labels, SECURITY_LABEL_KEY) ? vm.labels[SECURITY_LABEL_KEY] : undefined;
}

/**
 * sHype-style mandatory access control (Xen's ACM): the active policy, the
 * labels of hosts and resources, and the checks the VM actions call. The
 * Chinese Wall and host coverage are scheduler filters (`placementFilters`),
 * so every placement — start, migration, restore, evacuation, consolidation —
 * obeys them inside the transaction that reserves the host.
 */
export class PolicyService {
  #compiled: { key: string; policy: CompiledPolicy; filters: PlacementFilter[] } | undefined;

  constructor(private readonly o: PolicyServiceOptions) {}

  private compiledOf(record: SecurityPolicyRecord | undefined): { policy: CompiledPolicy; filters: PlacementFilter[] } | undefined {
    if (!record) return undefined;
    const key = `${record.name}\u0000${record.loadedAt}`;
    if (this.#compiled?.key !== key) {
      // Stored only after validation: compiling it again cannot fail unless the row was edited by hand.
      const policy = new CompiledPolicy(record.document as unknown as SecurityPolicy);
      this.#compiled = { key, policy, filters: [...defaultFilters, ...securityPolicyFilters(policy)] };
    }
    return this.#compiled;
  }

  /** The active policy, read through `store` (a transaction when placing), or undefined. */
  async active(store: Store = this.o.store): Promise<CompiledPolicy | undefined> {
    return this.compiledOf(await store.security.activePolicy())?.policy;
  }

  /** The scheduler's filter chain: the default one, plus the policy's filters when a policy is active. */
  async placementFilters(store: Store = this.o.store): Promise<readonly PlacementFilter[]> {
    return this.compiledOf(await store.security.activePolicy())?.filters ?? defaultFilters;
  }

  /** Host candidates with each host's security label set in its labels, for the policy filters. */
  async labelHosts(store: Store, candidates: HostCandidate[]): Promise<HostCandidate[]> {
    const labels = new Map((await store.security.labels('host')).map((l) => [l.objectId, l.label]));
    return candidates.map((host) => {
      const label = labels.get(host.id);
      if (label === undefined) {
        if (!Object.hasOwn(host.labels, SECURITY_LABEL_KEY)) return host;
        const { [SECURITY_LABEL_KEY]: _dropped, ...rest } = host.labels;
        return { ...host, labels: rest };
      }
      return { ...host, labels: { ...host.labels, [SECURITY_LABEL_KEY]: label } };
    });
  }

  /**
   * A scheduler refusal in which every host asked about was refused by a policy
   * filter becomes `policy_denied` (HTTP 403), naming the rule; otherwise the
   * refusal stands (a full cluster is still a 409).
   */
  asDenial(error: unknown): unknown {
    if (!(error instanceof DroverError) || error.code !== 'conflict' || !Array.isArray(error.details.hosts)) return error;
    const hosts = (error.details.hosts as Array<{ filter: string; reason: string; host: string }>).filter((h) => !narrowingFilterNames.has(h.filter));
    if (hosts.length === 0 || !hosts.every((h) => policyFilterNames.has(h.filter))) return error;
    const reason = hosts.some((h) => h.filter === 'chineseWall') ? 'chinese_wall' : 'ste_host_coverage';
    return policyDenied(hosts.length === 1 ? `Security policy: ${hosts[0]!.reason}` : error.message.replace(/^No host can run/, 'Security policy: no host may run'), { ...error.details, reason });
  }

  /**
   * What the agent needs to check the Chinese Wall itself ("again where the
   * action happens"): the VM's label, its CW types and the conflict sets
   * holding them, under the active policy. Undefined without a label or policy.
   */
  async agentSecurity(vm: Pick<VmRecord, 'labels'>): Promise<{ label: string; cwTypes: string[]; conflictSets: string[][] } | undefined> {
    const ref = vmLabelOf(vm);
    const policy = ref === undefined ? undefined : await this.active();
    if (!policy || ref === undefined || !policy.hasVmLabel(ref)) return undefined;
    const label = policy.vmLabel(ref);
    const sets = new Map<string, string[]>();
    for (const type of label.cwTypes) for (const set of policy.setsOfType.get(type) ?? []) sets.set(set.name, [...set.types]);
    return { label: ref, cwTypes: [...label.cwTypes], conflictSets: [...sets.values()] };
  }

  // ------------------------------------------------------------ labels

  /** Checks that `label` is a VM label of the active policy; `invalid` when there is none or it lacks it. */
  async checkVmLabel(label: string, store: Store = this.o.store): Promise<ResolvedLabel> {
    parseLabelRef(label);
    const policy = await this.active(store);
    if (!policy) throw errors.invalid(`Cannot use security label "${label}": no security policy is loaded`, { label });
    return policy.vmLabel(label);
  }

  private async resourceLabel(kind: LabelledKind, id: string, store: Store): Promise<ResolvedLabel | undefined> {
    const ref = await store.security.label(kind, id);
    const policy = await this.active(store);
    if (!ref || !policy) return undefined;
    try {
      return kind === 'host' ? policy.vmLabel(ref) : policy.resourceLabel(ref);
    } catch (error) {
      // A label of another policy: the resource is closed to everyone until relabelled.
      throw policyDenied(`The ${kind} carries security label "${ref}", which the active policy does not define: ${(error as Error).message}`, { reason: 'unknown_label', label: ref });
    }
  }

  /**
   * STE: the VM may use the volume, image or network only if they share a type.
   * Without a policy, or for an unlabelled resource, anything goes.
   * @throws DroverError `policy_denied` with `details.reason` `ste`.
   */
  async checkResourceUse(vm: VmRecord, kind: Exclude<LabelledKind, 'host'>, id: string, what: string, store: Store = this.o.store): Promise<void> {
    const policy = await this.active(store);
    if (!policy) return;
    const resource = await this.resourceLabel(kind, id, store);
    if (!resource) return;
    const ref = vmLabelOf(vm);
    const vmLabel = ref === undefined ? undefined : policy.vmLabel(ref);
    const verdict = steShares(vmLabel, resource, kind);
    if (!verdict.allowed) throw policyDenied(`Security policy: VM "${vm.name}" may not use ${what}: ${verdict.reason}`, { reason: 'ste', vm: vm.name, resource: id, kind });
  }

  async labels(): Promise<SecurityLabelInfo[]> {
    const labels = await this.o.store.security.labels();
    const hosts = new Map((await this.o.store.hosts.getMany(labels.filter((l) => l.kind === 'host').map((l) => l.objectId))).map((h) => [h.id, h.name]));
    return labels.map((l) => ({ ...l, ...(hosts.has(l.objectId) ? { objectName: hosts.get(l.objectId)! } : {}) }));
  }

  /**
   * Labels a host, volume, image or network. A host's label must be a VM label
   * of the active policy that covers the STE types of the VMs counting there;
   * a resource's, a resource label. `null` removes it.
   */
  async setLabel(kind: LabelledKind, ref: string, label: string | null): Promise<SecurityLabelInfo | null> {
    return this.o.store.transaction(async (tx) => {
      const { objectId, objectName } = await this.objectOf(tx, kind, ref);
      if (label !== null) {
        const policy = await this.active(tx);
        if (!policy) throw errors.invalid(`Cannot label ${kind} "${objectName}": no security policy is loaded`);
        const resolved = kind === 'host' ? policy.vmLabel(label) : policy.resourceLabel(label);
        if (kind === 'host') {
          for (const counted of await this.countedVms(tx)) {
            if (counted.hostId !== objectId || !counted.label) continue;
            const missing = hostMissingTypes(resolved, policy.vmLabel(counted.label));
            if (missing.length > 0) throw errors.conflict(`Cannot label host "${objectName}" ${label}: it runs VM "${counted.vmName}", whose STE types ${missing.join(', ')} the label does not cover`, { vm: counted.vmName, missing });
          }
        }
      } else if (kind === 'host') {
        const policy = await this.active(tx);
        const fallback = policy?.hostLabel(undefined);
        for (const counted of await this.countedVms(tx)) {
          if (counted.hostId !== objectId || !counted.label || !policy) continue;
          const missing = hostMissingTypes(fallback, policy.vmLabel(counted.label));
          if (missing.length > 0) throw errors.conflict(`Cannot remove the label of host "${objectName}": it runs VM "${counted.vmName}", whose STE types ${missing.join(', ')} the bootstrap label does not cover`, { vm: counted.vmName, missing });
        }
      }
      await tx.security.setLabel(kind, objectId, label);
      if (label === null) return null;
      return { kind, objectId, objectName, label, updatedAt: new Date().toISOString() };
    });
  }

  /** Resolves a host, image or network by id or name; a volume is `<host id or name>/<pool>/<volume>`. */
  private async objectOf(store: Store, kind: LabelledKind, ref: string): Promise<{ objectId: string; objectName: string }> {
    if (kind === 'host') {
      const host = await store.hosts.find(ref);
      return { objectId: host.id, objectName: host.name };
    }
    if (kind === 'image') {
      // An image release: its id, "name:version", or "name" (the newest release).
      const byId = await store.images.tryGet(ref);
      if (byId) return { objectId: byId.id, objectName: `${byId.name}:${byId.version}` };
      const [name, version] = ref.split(':', 2) as [string, string | undefined];
      const releases = (await store.images.list({ limit: 1000, filter: { exactName: name } })).items.filter((i) => version === undefined || i.version === version);
      const image = releases.sort((a, b) => b.createdAt.localeCompare(a.createdAt))[0];
      if (!image) throw errors.notFound('image', ref);
      return { objectId: image.id, objectName: `${image.name}:${image.version}` };
    }
    if (kind === 'volume') {
      const parts = ref.split('/');
      if (parts.length !== 3 || parts.some((p) => p.length === 0)) throw errors.invalid(`A volume is named <host>/<pool>/<volume>; got "${ref}"`, { ref });
      const host = await store.hosts.find(parts[0]!);
      return { objectId: `${host.id}/${parts[1]}/${parts[2]}`, objectName: `${host.name}/${parts[1]}/${parts[2]}` };
    }
    // A network of the manager (networks/): by id or name.
    const network = await store.net.networks.find(ref);
    return { objectId: network.id, objectName: network.name };
  }

  // ------------------------------------------------------------ policies

  private async record(): Promise<SecurityPolicyRecord> {
    const record = await this.o.store.security.activePolicy();
    if (!record) throw errors.notFound('security policy', 'active');
    return record;
  }

  async info(): Promise<PolicyInfo> {
    const record = await this.record();
    return { name: record.name, sourceFormat: record.sourceFormat, loadedBy: record.loadedBy, loadedAt: record.loadedAt, policy: record.document as unknown as PolicyInfo['policy'] };
  }

  async export(format: PolicyFormat): Promise<{ text: string; contentType: string }> {
    const policy = (await this.record()).document as unknown as SecurityPolicy;
    if (format === 'xml') return { text: exportAcmXml(policy), contentType: 'application/xml; charset=utf-8' };
    return { text: exportNativePolicy(policy, format), contentType: format === 'json' ? 'application/json; charset=utf-8' : 'application/yaml; charset=utf-8' };
  }

  /** Every VM counting on a host: running, paused or otherwise holding it, and those with a start, restore or migration to it in flight. */
  private async countedVms(store: Store): Promise<CountedVm[]> {
    const hosts: Array<{ id: string; name: string }> = await listEvery((query) => store.hosts.list(query));
    const hostLabels = new Map((await store.security.labels('host')).map((l) => [l.objectId, l.label]));
    const counted: CountedVm[] = [];
    for (const host of hosts) {
      const seen = new Set<string>();
      const add = (vm: VmRecord) => {
        if (seen.has(vm.id)) return;
        seen.add(vm.id);
        counted.push({ vmId: vm.id, vmName: vm.name, hostId: host.id, hostName: host.name, label: vmLabelOf(vm) ?? null, hostLabel: hostLabels.get(host.id) ?? null });
      };
      (await listEvery((query) => store.vms.list(query), { hostId: host.id, state: [...this.o.holdingStates] })).forEach(add);
      for (const reservation of await store.reservations.listByHost(host.id)) {
        const vm = await store.vms.tryGet(reservation.vmId);
        if (vm) add(vm);
      }
    }
    return counted;
  }

  private parse(body: PolicyLoad): { policy: SecurityPolicy; format: PolicyFormat } {
    const format = body.format ?? detectPolicyFormat(body.document);
    return { policy: parsePolicy(body.document, format), format };
  }

  /**
   * Whether `body` could be loaded now. A document that is no valid policy is
   * refused as a load would be (400, every problem in `details.problems`); a
   * valid one answers with what running VMs would violate. Changes nothing.
   */
  async validate(body: PolicyLoad): Promise<PolicyValidation> {
    const parsed = this.parse(body);
    const violations = checkCountedVms(new CompiledPolicy(parsed.policy), await this.countedVms(this.o.store));
    return { valid: violations.length === 0, name: parsed.policy.name, problems: [], violations: violations.map(publicViolation), summary: summaryOf(parsed.policy) };
  }

  /**
   * Makes the policy active. Everything counting on a host is re-checked
   * against it inside one transaction holding every host row (as placements
   * do, so no start slips in between); one that running VMs would violate is
   * refused (409) with the list of conflicts, and nothing changes.
   */
  async load(body: PolicyLoad, actor: string): Promise<PolicyInfo> {
    const { policy, format } = this.parse(body);
    const compiled = new CompiledPolicy(policy);
    const loaded = await this.o.store.transaction(async (tx) => {
      const hostIds = (await tx.hosts.list({ limit: 1000 })).items.map((h) => h.id).sort();
      for (const id of hostIds) await tx.hosts.getForUpdate(id);
      const violations = checkCountedVms(compiled, await this.countedVms(tx));
      if (violations.length > 0) {
        throw errors.conflict(`Cannot load security policy "${policy.name}": ${violations.length === 1 ? 'a running VM violates it' : `running VMs violate it ${violations.length} times`}: ${violations[0]!.message}${violations.length > 1 ? '; …' : ''}`, {
          reason: 'policy_violated',
          violations: violations.map(publicViolation),
        });
      }
      const record = await tx.security.putActivePolicy({ name: policy.name, document: policy as unknown as Record<string, unknown>, sourceFormat: format, loadedBy: actor });
      const event = await tx.events.append({ type: 'policy.loaded', objectKind: 'policy', objectId: policy.name, data: { name: policy.name, loadedBy: actor, sourceFormat: format } });
      return { record, event };
    });
    this.o.hub.publish(loaded.event);
    this.o.logger.info({ policy: policy.name, actor }, 'security policy loaded');
    return { name: loaded.record.name, sourceFormat: loaded.record.sourceFormat, loadedBy: loaded.record.loadedBy, loadedAt: loaded.record.loadedAt, policy: policy as unknown as PolicyInfo['policy'] };
  }

  /** Why the VM may or may not be placed on the host, by the policy and by the whole filter chain. */
  async explain(vm: VmRecord, hostRef: string): Promise<PolicyExplanation> {
    const store = this.o.store;
    const host = await store.hosts.find(hostRef);
    const record = await store.security.activePolicy();
    const compiled = this.compiledOf(record);
    const candidates = (await this.o.hostCandidates(store)).map((c) => ({ ...c, vms: c.vms.filter((other) => other.id !== vm.id) }));
    const candidate = candidates.find((c) => c.id === host.id)!;
    const spec = vm.spec as { cpus?: number; memoryMiB?: number; cpuModel?: string; antiAffinityGroups?: string[] };
    const explanation = explainPlacement(
      { vmId: vm.id, name: vm.name, cpus: spec.cpus ?? 1, memoryMiB: spec.memoryMiB ?? 64, ...(spec.cpuModel ? { cpuModel: spec.cpuModel } : {}), antiAffinityGroups: spec.antiAffinityGroups ?? [], labels: vm.labels },
      [candidate],
      { filters: compiled?.filters ?? defaultFilters },
    );
    const filters = explanation.hosts[0]!.filters.map((f) => ({ filter: f.filter, pass: f.pass, ...(f.reason ? { reason: f.reason } : {}) }));
    const vmRef = vmLabelOf(vm) ?? null;
    const hostLabelRef = candidate.labels[SECURITY_LABEL_KEY] ?? null;
    const base = { vm: vm.name, host: host.name, policy: record?.name ?? null, vmLabel: vmRef, filters };
    if (!compiled) return { ...base, allowed: true, hostLabel: hostLabelRef, reasons: ['no security policy is loaded'], conflicts: [], missingSteTypes: [] };
    const policy = compiled.policy;
    const reasons: string[] = [];
    let vmLabel: ResolvedLabel | undefined;
    let hostLabel: ResolvedLabel | undefined;
    try {
      vmLabel = vmRef ? policy.vmLabel(vmRef) : undefined;
    } catch (error) {
      reasons.push((error as Error).message);
    }
    try {
      hostLabel = policy.hostLabel(hostLabelRef);
    } catch (error) {
      reasons.push(`host "${host.name}": ${(error as Error).message}`);
    }
    const missing = hostMissingTypes(hostLabel, vmLabel);
    if (missing.length > 0) reasons.push(`host "${host.name}" (${hostLabel?.ref ?? 'no security label'}) does not cover STE type${missing.length === 1 ? '' : 's'} ${missing.join(', ')} of VM "${vm.name}"`);
    const conflicts: PolicyExplanation['conflicts'] = [];
    if (vmLabel) {
      for (const other of candidate.vms) {
        const ref = other.labels[SECURITY_LABEL_KEY];
        if (!ref || !policy.hasVmLabel(ref)) continue;
        for (const c of policy.conflicts(vmLabel, policy.vmLabel(ref))) {
          conflicts.push({ vm: other.name ?? other.id, vmLabel: ref, type: c.type, otherType: c.otherType, set: c.set });
          reasons.push(`VM "${other.name ?? other.id}" (${ref}) counts on host "${host.name}": its type "${c.otherType}" and VM "${vm.name}"'s type "${c.type}" are in Chinese Wall conflict set "${c.set}"`);
        }
      }
    }
    const allowed = reasons.length === 0;
    if (allowed) {
      reasons.push(
        vmLabel
          ? `host "${host.name}" (${hostLabel?.ref ?? 'no label'}) covers the STE types of ${vmLabel.ref} and no VM counting there has a type in a conflict set with ${[...vmLabel.cwTypes].join(', ') || 'its (no) Chinese Wall types'}`
          : `VM "${vm.name}" has no security label: the policy does not restrict where it runs`,
      );
    }
    return { ...base, allowed, hostLabel: hostLabel?.ref ?? hostLabelRef, reasons, conflicts, missingSteTypes: missing };
  }
}

function publicViolation(v: PolicyViolation) {
  return { kind: v.kind, vm: v.vm, host: v.host, ...(v.otherVm !== undefined ? { otherVm: v.otherVm } : {}), message: v.message };
}

function summaryOf(policy: SecurityPolicy) {
  return { steTypes: policy.steTypes.length, cwTypes: policy.cwTypes.length, conflictSets: policy.conflictSets.length, vmLabels: policy.vmLabels.length, resourceLabels: policy.resourceLabels.length };
}

/** States in which a VM's security label may change: it holds no host and nothing is in flight. */
const relabelStates = ['defined', 'stopped', 'saved', 'error'];

/**
 * A VM's labels with its security label applied: `securityLabel` sets (or with
 * null removes) it; labels given without it keep the current one, so editing
 * free-form labels never drops the security label. Returns undefined when
 * nothing changes.
 */
export async function labelsWithSecurity(
  policy: PolicyService,
  vm: { name: string; state: string; labels: Record<string, string> } | undefined,
  labels: Record<string, string> | undefined,
  securityLabel: string | null | undefined,
): Promise<Record<string, string> | undefined> {
  if (labels === undefined && securityLabel === undefined) return undefined;
  const next: Record<string, string> = { ...(labels ?? vm?.labels ?? {}) };
  const current = vm ? vmLabelOf(vm) : undefined;
  if (securityLabel === null) delete next[SECURITY_LABEL_KEY];
  else if (securityLabel !== undefined) next[SECURITY_LABEL_KEY] = securityLabel;
  else if (labels !== undefined && !Object.hasOwn(labels, SECURITY_LABEL_KEY) && current !== undefined) next[SECURITY_LABEL_KEY] = current;
  const wanted = Object.hasOwn(next, SECURITY_LABEL_KEY) ? next[SECURITY_LABEL_KEY] : undefined;
  if (wanted !== current) {
    if (vm && !relabelStates.includes(vm.state)) {
      throw errors.conflict(`Cannot change the security label of VM "${vm.name}" while it is ${vm.state}; stop it first`, { state: vm.state });
    }
    if (wanted !== undefined) await policy.checkVmLabel(wanted);
  }
  return next;
}

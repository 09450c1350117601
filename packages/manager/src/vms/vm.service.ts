import type { Logger } from 'pino';
import { DroverError, errors, placeVm, type HostCandidate, type PlacementRequest } from '@drover/core';
import { takeRequestAudit } from '../access/request-audit.js';
import type { EvacuationPolicy, Vm, VmCreate, VmEdit, VmInfo, VmSpec, VolumeCreate } from '@drover/api';
import type { Store } from '../store/index.js';
import { listEvery } from '../store/paging.js';
import type { HostRecord, NewEvent, OperationRecord, VmRecord } from '../store/types.js';
import type { EventHub } from '../http/event-hub.js';
import type { AgentLink } from '../hosts/agent-link.js';
import type { ImageLibrary } from '../images/image-library.js';
import { cloudInitSummary, dataVolumeName, isoLabel, prepareVmMedia, resolveVmMedia, type VmMedia } from '../images/vm-media.js';
import type { FirstPhase, OperationContext, OperationRunner } from '../operations/operation-runner.js';
import { addedAgentDevices, VmDeviceService, type AddedDisk, type AddedNic } from './vm-devices.service.js';
import { MigrationService } from './migration.service.js';
import { labelsWithSecurity, PolicyService } from '../policy/policy.service.js';
import { NetworkService } from '../networks/network.service.js';

/** The VM's desired configuration as the manager keeps it (`vms.spec`); what it boots is VmMedia (images/vm-media.ts). */
export interface ManagedVmSpec extends VmMedia {
  cpus: number;
  memoryMiB: number;
  cpuModel?: string;
  antiAffinityGroups: string[];
  hostInclude: string[];
  hostExclude: string[];
  forwards: Array<{ hostPort: number; guestPort: number }>;
  cmdline: string;
  /** Disks and NICs added through the API, after the image's (vm-devices.service.ts). */
  addedDisks?: AddedDisk[];
  addedNics?: AddedNic[];
  /** What a host evacuation does with the VM (power/maintenance.service.ts); live-migrate when absent. */
  evacuationPolicy?: EvacuationPolicy;
  /** Restarted on another host when its host is lost and fenced (power/ha.service.ts); only on shared storage. */
  ha?: boolean;
}

/** States in which a VM holds capacity on its host. */
export const holdingStates = ['running', 'paused', 'starting', 'stopping', 'saving', 'migrating'];

/** Which actions each state allows; anything else is a 409 naming the state. */
const allowed: Record<string, string[]> = {
  start: ['defined', 'stopped', 'error'],
  stop: ['running', 'paused'],
  'force-off': ['running', 'paused', 'error', 'starting', 'stopping'],
  pause: ['running'],
  resume: ['paused'],
  reset: ['running'],
  save: ['running', 'paused'],
  restore: ['saved'],
  delete: ['defined', 'stopped', 'error', 'saved'],
  snapshot: ['running', 'paused', 'stopped'],
};

const pool = 'default';
const reservationTtlMs = 10 * 60_000;

export interface VmServiceOptions {
  store: Store;
  runner: OperationRunner;
  link: AgentLink;
  images: ImageLibrary;
  hub: EventHub;
  logger: Logger;
}

function specOf(vm: VmRecord): ManagedVmSpec {
  return vm.spec as unknown as ManagedVmSpec;
}

/** What placement reads of a VM's spec: its size, CPU model and host constraints (empty lists when unset). */
export function placementSpec(spec: ManagedVmSpec): Pick<Vm['spec'], 'cpus' | 'memoryMiB' | 'cpuModel' | 'antiAffinityGroups' | 'hostInclude' | 'hostExclude'> {
  return {
    cpus: spec.cpus,
    memoryMiB: spec.memoryMiB,
    ...(spec.cpuModel ? { cpuModel: spec.cpuModel } : {}),
    antiAffinityGroups: spec.antiAffinityGroups ?? [],
    hostInclude: spec.hostInclude ?? [],
    hostExclude: spec.hostExclude ?? [],
  };
}

/** The names of the hosts these VMs are on, read in one query. */
export async function hostNamesOf(store: Store, vms: ReadonlyArray<Pick<VmRecord, 'hostId'>>): Promise<Map<string, string>> {
  const ids = [...new Set(vms.map((vm) => vm.hostId).filter((id): id is string => id !== null))];
  return new Map((await store.hosts.getMany(ids)).map((host) => [host.id, host.name]));
}

/** The `vm.updated` event of a VM whose host's name is known. */
export function vmUpdatedEvent(vm: VmRecord, hostName: string | null): NewEvent {
  return { type: 'vm.updated', objectKind: 'vm', objectId: vm.id, data: publicVm(vm, hostName) as unknown as Record<string, unknown> };
}

/**
 * A VM as the API shows it. It depends on the record and its host's name only:
 * the list route keeps each VM's JSON while its rev, host and host name stay the
 * same (http/vm-list.ts), so anything added here from elsewhere must be added
 * to that check too.
 */
export function publicVm(vm: VmRecord, hostName: string | null): Vm {
  const spec = specOf(vm);
  return {
    id: vm.id,
    name: vm.name,
    state: vm.state as Vm['state'],
    hostId: vm.hostId,
    hostName,
    spec: {
      image: spec.image,
      ...placementSpec(spec),
      forwards: spec.forwards ?? [],
      cmdline: spec.cmdline ?? '',
      ...(spec.evacuationPolicy ? { evacuationPolicy: spec.evacuationPolicy } : {}),
      ...(spec.ha ? { ha: true } : {}),
      ...(spec.addedDisks?.length ? { addedDisks: spec.addedDisks } : {}),
      ...(spec.addedNics?.length ? { addedNics: spec.addedNics } : {}),
      ...(spec.iso ? { iso: isoLabel(spec.iso)! } : {}),
      ...(spec.bootVolume ? { bootVolume: `${spec.bootVolume.pool}/${spec.bootVolume.volume}` } : {}),
      ...(spec.diskSizeBytes !== undefined ? { diskSizeBytes: spec.diskSizeBytes } : {}),
      ...(spec.dataImages?.length ? { dataImages: spec.dataImages.map((d) => d.image) } : {}),
      ...(spec.cloudInit ? { cloudInit: cloudInitSummary(spec.cloudInit)! } : {}),
    },
    labels: vm.labels,
    owner: vm.owner,
    autostart: vm.autostart,
    lastError: vm.lastError,
    rev: vm.rev,
    createdAt: vm.createdAt,
    updatedAt: vm.updatedAt,
  };
}

/**
 * VMs as the cluster sees them: the manager is the only writer of desired
 * state. Each action is validated, authorized and placed synchronously (so a
 * full cluster is a 409 at once), then runs as a journaled operation that asks
 * the VM's host to act.
 */
export class VmService {
  constructor(private readonly o: VmServiceOptions) {
    const handler = (kind: string, run: (ctx: OperationContext, vm: VmRecord, host: HostRecord) => Promise<unknown>) => ({
      run: async (ctx: OperationContext) => {
        const { vm, host } = await this.targetOf(ctx.op);
        return run(ctx, vm, host);
      },
      recover: (ctx: OperationContext) => this.recover(ctx, kind),
      compensate: (ctx: OperationContext, error: DroverError) => this.compensate(ctx, error),
    });
    o.runner.register('vm.start', {
      ...handler('vm.start', (ctx, vm, host) => this.runStart(ctx, vm, host)),
      // Until QEMU is asked to boot: disks may still be importing; the compensation releases the reservation.
      cancellable: (op) => op.phase === 'pending' || op.phase === 'prepare' || op.phase === 'import',
    });
    for (const action of ['stop', 'force-off', 'pause', 'resume', 'reset', 'save', 'restore']) {
      o.runner.register(`vm.${action}`, handler(`vm.${action}`, (ctx, vm, host) => this.runSimple(ctx, vm, host, action)));
    }
    o.runner.register('vm.delete', {
      run: (ctx) => this.runDelete(ctx),
      recover: (ctx) => this.runDelete(ctx),
    });
    for (const action of ['snapshot.create', 'snapshot.revert', 'snapshot.delete']) {
      o.runner.register(`vm.${action}`, handler(`vm.${action}`, (ctx, vm, host) => this.runSnapshot(ctx, vm, host, action)));
    }
    this.devices = new VmDeviceService({ store: o.store, runner: o.runner, link: o.link, logger: o.logger, vms: this });
    this.migrations = new MigrationService({ ...o, vms: this });
    this.networks = new NetworkService({ store: o.store, link: o.link, logger: o.logger.child({ module: 'networks' }), holdingStates });
    this.policy = new PolicyService({ store: o.store, hub: o.hub, logger: o.logger.child({ module: 'policy' }), holdingStates, hostCandidates: (store) => this.hostCandidates(store) });
  }

  /** sHype mandatory access control: the active policy, labels, and the checks below (policy/policy.service.ts). */
  readonly policy: PolicyService;

  /** Live migration between hosts (migration.service.ts). */
  readonly migrations: MigrationService;

  /** Disks and NICs added and removed (hotplug while the VM runs). */
  readonly devices: VmDeviceService;

  /** Networks, security groups, the VMs' NICs on them and each host's network state (networks/). */
  readonly networks: NetworkService;

  /** Pushes a host's network state after a VM with NICs left it (stop, delete, failed start); failures are logged, not thrown. */
  private async networkLeft(vmId: string, hostId: string | null, hadNics?: boolean): Promise<void> {
    if (!hostId || !(hadNics ?? (await this.networks.hasNics(vmId)))) return;
    await this.networks.pushHost(hostId, { vmId, hostId }).catch((error: unknown) => this.o.logger.warn({ err: error, vm: vmId }, 'pushing the network state failed'));
  }

  // ------------------------------------------------------------ reads

  async find(ref: string): Promise<VmRecord> {
    return this.o.store.vms.find(ref);
  }

  async publish(vm: VmRecord): Promise<void> {
    const data = (await this.toPublic(vm)) as unknown as Record<string, unknown>;
    const event = await this.o.store.events.append({ type: 'vm.updated', objectKind: 'vm', objectId: vm.id, data });
    this.o.hub.publish({ ...event, data });
  }

  /**
   * The `vm.updated` event of `vm`, read in the transaction that wrote it, to
   * be appended there (one commit instead of two: on SQLite each commit is an
   * fsync) and handed to the hub once the transaction committed.
   */
  private async vmEvent(tx: Store, vm: VmRecord): Promise<NewEvent> {
    return vmUpdatedEvent(vm, vm.hostId ? ((await tx.hosts.tryGet(vm.hostId))?.name ?? null) : null);
  }

  /** Many VMs at once (a list page): the hosts are read in one query, not once per VM. */
  async toPublicMany(vms: VmRecord[]): Promise<Vm[]> {
    const names = await hostNamesOf(this.o.store, vms);
    return vms.map((vm) => publicVm(vm, vm.hostId ? (names.get(vm.hostId) ?? null) : null));
  }

  async toPublic(vm: VmRecord, knownHostName?: string | null): Promise<Vm> {
    const hostName = knownHostName !== undefined ? knownHostName : vm.hostId ? ((await this.o.store.hosts.tryGet(vm.hostId))?.name ?? null) : null;
    return publicVm(vm, hostName);
  }

  // ------------------------------------------------------------ define / edit

  /** `admit` (quotas) sees the VM's CPUs and memory before anything is stored, and may refuse it. */
  async create(request: VmCreate, actor: string, admit?: (need: { cpus: number; memoryMiB: number }) => Promise<void>): Promise<VmRecord> {
    const { media, minMemoryMiB, defaultMemoryMiB } = await resolveVmMedia(request, this.o.images);
    const memoryMiB = request.memoryMiB ?? defaultMemoryMiB;
    if (memoryMiB < minMemoryMiB) {
      throw errors.invalid(`Image "${media.image}" needs at least ${minMemoryMiB} MiB; ${memoryMiB} MiB asked`, { field: 'memoryMiB' });
    }
    const spec: ManagedVmSpec = {
      ...media,
      cpus: request.cpus ?? 1,
      memoryMiB,
      ...(request.cpuModel ? { cpuModel: request.cpuModel } : {}),
      antiAffinityGroups: request.antiAffinityGroups ?? [],
      hostInclude: request.hostInclude ?? [],
      hostExclude: request.hostExclude ?? [],
      forwards: request.forwards ?? [],
      cmdline: request.cmdline ?? '',
      ...(request.evacuationPolicy ? { evacuationPolicy: request.evacuationPolicy } : {}),
    };
    await admit?.({ cpus: spec.cpus, memoryMiB: spec.memoryMiB });
    const labels = (await labelsWithSecurity(this.policy, undefined, request.labels, request.securityLabel)) ?? {};
    // STE: a labelled VM may boot only an image it shares a type with.
    if (spec.imageId) await this.policy.checkResourceUse({ name: request.name, labels } as VmRecord, 'image', spec.imageId, `image "${spec.image}"`);
    let audited = () => undefined as void;
    const { vm, event } = await this.o.store.transaction(async (tx) => {
      const vm = await tx.vms.create({
        name: request.name,
        spec: spec as unknown as Record<string, unknown>,
        state: 'defined',
        owner: actor,
        labels,
        autostart: request.autostart ?? false,
      });
      // NICs on Drover networks: addresses and MACs allocated, or the whole VM refused
      // (STE too: each network must share a type with the VM).
      const nics = await this.networks.bindNewVm(tx, vm, request.networks ?? []);
      await this.checkNetworksUse(tx, vm, nics);
      // POST /vms is answered 201 once this commits: its audit record commits with it.
      audited = await takeRequestAudit(tx, 201);
      return { vm, event: await tx.events.append(await this.vmEvent(tx, vm)) };
    });
    audited();
    this.o.hub.publish(event);
    return vm;
  }

  async edit(ref: string, patch: VmEdit, expectedRev?: number): Promise<VmRecord> {
    const vm = await this.find(ref);
    if ((patch.cpus !== undefined || patch.memoryMiB !== undefined) && !['defined', 'stopped'].includes(vm.state)) {
      throw errors.conflict(`Cannot change the CPUs or memory of VM "${vm.name}" while it is ${vm.state}; stop it first`, { state: vm.state });
    }
    if (patch.cloudInit !== undefined && !['defined', 'stopped'].includes(vm.state)) {
      throw errors.conflict(`Cannot change the cloud-init of VM "${vm.name}" while it is ${vm.state}; stop it first`, { state: vm.state });
    }
    const spec: ManagedVmSpec = {
      ...specOf(vm),
      ...(patch.cpus !== undefined ? { cpus: patch.cpus } : {}),
      ...(patch.memoryMiB !== undefined ? { memoryMiB: patch.memoryMiB } : {}),
      ...(patch.evacuationPolicy !== undefined ? { evacuationPolicy: patch.evacuationPolicy } : {}),
    };
    // The host's seed is rebuilt when the next start rewrites the VM's definition there.
    if (patch.cloudInit === null) delete spec.cloudInit;
    else if (patch.cloudInit !== undefined) spec.cloudInit = patch.cloudInit;
    const labels = await labelsWithSecurity(this.policy, vm, patch.labels, patch.securityLabel);
    const updated = await this.o.store.vms.update(
      vm.id,
      {
        spec: spec as unknown as Record<string, unknown>,
        ...(labels ? { labels } : {}),
        ...(patch.autostart !== undefined ? { autostart: patch.autostart } : {}),
      },
      expectedRev === undefined ? {} : { expectedRev },
    );
    // The agent keeps its own copy of the definition; it is rewritten at the next start.
    await this.publish(updated);
    return updated;
  }

  // ------------------------------------------------------------ actions

  private checkState(vm: VmRecord, action: string): void {
    const states = allowed[action] ?? [];
    if (!states.includes(vm.state)) {
      throw errors.conflict(`Cannot ${action} VM "${vm.name}": it is ${vm.state}`, { state: vm.state, action });
    }
  }

  /** What the scheduler needs to know of every host, read through `store` (a transaction when placing). */
  async hostCandidates(store: Store = this.o.store): Promise<HostCandidate[]> {
    const hosts: HostRecord[] = await listEvery((query) => store.hosts.list(query));
    const candidates: HostCandidate[] = [];
    for (const host of hosts) {
      const vms: VmRecord[] = await listEvery((query) => store.vms.list(query), { hostId: host.id, state: holdingStates });
      const reserved = await store.reservations.sumByHost(host.id);
      // A start in flight is counted once: by its reservation, not also as a VM in "starting".
      const reservedVms = new Set((await store.reservations.listByHost(host.id)).map((r) => r.vmId));
      // A VM migrating or being restored here counts among the host's VMs too (anti-affinity, the
      // security policy's Chinese Wall) from the moment it is admitted, though its record names another host or none.
      const counted = [...vms];
      const listed = new Set(vms.map((vm) => vm.id));
      for (const id of reservedVms) {
        const incoming = listed.has(id) ? undefined : await store.vms.tryGet(id);
        if (incoming) counted.push(incoming);
      }
      candidates.push({
        id: host.id,
        name: host.name,
        state: host.state,
        capacity: host.capacity,
        used: vms
          .filter((vm) => !reservedVms.has(vm.id))
          .reduce((sum, vm) => ({ cpus: sum.cpus + specOf(vm).cpus, memoryMiB: sum.memoryMiB + specOf(vm).memoryMiB }), { cpus: 0, memoryMiB: 0 }),
        reserved,
        cpuModels: host.cpuModels,
        labels: host.labels,
        vms: counted.map((vm) => ({ id: vm.id, name: vm.name, antiAffinityGroups: specOf(vm).antiAffinityGroups ?? [], labels: vm.labels })),
      });
    }
    // Each host's security label (or none) in its labels, for the policy filters: placements and the planners alike.
    return this.policy.labelHosts(store, candidates);
  }

  /**
   * Inside `tx`: locks every host row (PostgreSQL; in id order, so two placements never
   * deadlock; SQLite's BEGIN IMMEDIATE already serializes them), runs the scheduler for
   * `vm` within `hosts` and reserves its capacity on the chosen host, replacing an older
   * reservation of the VM. The VM is no neighbour of its own anti-affinity groups.
   * Returns the host's id; a full cluster is the scheduler's 409.
   */
  async placeAndReserveIn(tx: Store, vm: VmRecord, hosts: { include: string[]; exclude: string[] }, ttlMs = reservationTtlMs): Promise<string> {
    const spec = specOf(vm);
    const hostIds = (await tx.hosts.list({ limit: 1000 })).items.map((h) => h.id).sort();
    for (const id of hostIds) await tx.hosts.getForUpdate(id);
    const candidates = (await this.hostCandidates(tx)).map((candidate) => ({ ...candidate, vms: candidate.vms.filter((other) => other.id !== vm.id) }));
    const request: PlacementRequest = {
      vmId: vm.id,
      name: vm.name,
      cpus: spec.cpus,
      memoryMiB: spec.memoryMiB,
      ...(spec.cpuModel ? { cpuModel: spec.cpuModel } : {}),
      antiAffinityGroups: spec.antiAffinityGroups ?? [],
      hostInclude: hosts.include,
      hostExclude: hosts.exclude,
      labels: vm.labels,
    };
    // The active security policy's filters (Chinese Wall, host STE coverage) join the chain; a refusal by them alone is policy_denied.
    const filters = await this.policy.placementFilters(tx);
    let placed: ReturnType<typeof placeVm>;
    try {
      placed = placeVm(request, candidates, { filters });
    } catch (error) {
      throw this.policy.asDenial(error);
    }
    await tx.reservations.deleteByVm(vm.id);
    await tx.reservations.create({ hostId: placed.hostId, vmId: vm.id, cpus: spec.cpus, memoryMiB: spec.memoryMiB, expiresAt: new Date(Date.now() + ttlMs).toISOString() });
    return placed.hostId;
  }

  /** STE: a VM may have a NIC on a network only if they share a type (unlabelled networks are public). */
  private async checkNetworksUse(store: Store, vm: VmRecord, nics: readonly { networkId: string }[]): Promise<void> {
    for (const networkId of new Set(nics.map((nic) => nic.networkId))) {
      const network = await store.net.networks.get(networkId);
      await this.policy.checkResourceUse(vm, 'network', network.id, `network "${network.name}"`, store);
    }
  }

  /**
   * Places and reserves in one store transaction, so concurrent starts never
   * overcommit a host. A VM whose disks already live on a host goes back there.
   */
  private async placeAndReserve(store: Store, vm: VmRecord): Promise<{ host: HostRecord; event: NewEvent }> {
    const spec = specOf(vm);
    return store.transaction(async (tx) => {
      const current = await tx.vms.get(vm.id);
      this.checkState(current, 'start');
      // STE: the image it boots (labelled since the VM was defined, perhaps) must share a type with it.
      if (spec.imageId) await this.policy.checkResourceUse(current, 'image', spec.imageId, `image "${spec.image}"`, tx);
      await this.checkNetworksUse(tx, current, await tx.net.nics.ofVm(current.id));
      const hostId = await this.placeAndReserveIn(tx, vm, {
        include: current.hostId ? [current.hostId] : (spec.hostInclude ?? []),
        exclude: spec.hostExclude ?? [],
      });
      const placed = { hostId };
      const starting = await tx.vms.update(vm.id, { state: 'starting', hostId: placed.hostId, lastError: null });
      return { host: await tx.hosts.get(placed.hostId), event: await this.vmEvent(tx, starting) };
    });
  }

  async action(ref: string, action: string, params: Record<string, unknown>, actor: string, idempotencyKey?: string): Promise<OperationRecord> {
    const vm = await this.find(ref);
    const checked = action === 'snapshot.create' || action === 'snapshot.revert' || action === 'snapshot.delete' ? 'snapshot' : action;
    this.checkState(vm, checked);
    // A VM busy with another operation is refused by `submit` (409 naming the operation); one
    // deleted or changed since it was read here, by the state check again under the target's lock.
    const hostId = vm.hostId;
    const previousState = vm.state;
    // A start's placement and reservation commit with its operation, in one transaction: a refusal (409) leaves nothing.
    // The operation is created running in its first phase, `prepare`, which the placement names (one commit fewer).
    let placement: ((tx: Store) => Promise<{ params: Record<string, unknown>; events: NewEvent[]; phase?: FirstPhase }>) | undefined;
    if (action === 'start') {
      placement = async (tx) => {
        const { host, event } = await this.placeAndReserve(tx, vm);
        return { params: { hostId: host.id }, events: [event], phase: { name: 'prepare', progress: 10, note: `placed on ${host.name}` } };
      };
    } else if (action === 'restore') {
      if (!hostId) throw errors.conflict(`VM "${vm.name}" has no host holding its saved state`);
      // A restore is placed on the host holding the saved state and reserved there like a start: capacity
      // and the security policy's Chinese Wall are checked, and the VM counts there while it is in flight.
      placement = async (tx) => {
        const current = await tx.vms.get(vm.id);
        this.checkState(current, 'restore');
        await this.placeAndReserveIn(tx, current, { include: [hostId], exclude: [] });
        return { params: {}, events: [] };
      };
    } else if (!hostId) {
      throw errors.conflict(`VM "${vm.name}" is not placed on any host`);
    }
    try {
      return await this.o.runner.submit(
        { kind: `vm.${action}`, targetKind: 'vm', targetId: vm.id, params: { ...params, hostId, previousState }, actor, idempotencyKey: idempotencyKey ?? null },
        `VM "${vm.name}"`,
        // A start's and a restore's placement reads the VM again itself.
        placement ??
          (async (tx) => {
            this.checkState(await tx.vms.get(vm.id), checked);
            return {};
          }),
      );
    } catch (error) {
      if (action === 'start' || action === 'restore') await this.releaseStart(vm.id, previousState);
      throw error;
    }
  }

  async remove(ref: string, actor: string, idempotencyKey?: string): Promise<OperationRecord> {
    const vm = await this.find(ref);
    this.checkState(vm, 'delete');
    // Checked again under the target's lock: another manager may have deleted it since (404).
    return this.o.runner.submit(
      { kind: 'vm.delete', targetKind: 'vm', targetId: vm.id, params: { hostId: vm.hostId }, actor, idempotencyKey: idempotencyKey ?? null },
      `VM "${vm.name}"`,
      async (tx) => {
        this.checkState(await tx.vms.get(vm.id), 'delete');
        return {};
      },
    );
  }

  private async releaseStart(vmId: string, previousState: string): Promise<void> {
    await this.o.store.reservations.deleteByVm(vmId);
    const vm = await this.o.store.vms.tryGet(vmId);
    if (vm?.state === 'starting') await this.publish(await this.o.store.vms.update(vmId, { state: previousState }));
  }

  // ------------------------------------------------------------ operation bodies

  private async targetOf(op: OperationRecord): Promise<{ vm: VmRecord; host: HostRecord }> {
    const vm = await this.o.store.vms.get(op.targetId);
    const hostId = (op.params.hostId as string | null | undefined) ?? vm.hostId;
    if (!hostId) throw errors.conflict(`VM "${vm.name}" is not placed on any host`);
    return { vm, host: await this.o.store.hosts.get(hostId) };
  }

  /**
   * The agent-side definition: a thin clone of the image's disks on the host's
   * default pool. The volumes are made here; the definition is returned, to
   * travel with the start (`runStart`).
   */
  private async prepareOnHost(ctx: OperationContext, vm: VmRecord, host: HostRecord, deferred?: VolumeCreate[]): Promise<VmSpec> {
    const spec = specOf(vm);
    // Create what is missing; a 409 means it is already there (listing the pool would
    // cost a qemu-img call per volume on the host). With `deferred`, the volumes are
    // only collected: the start request asks the host for them (see runStart).
    const ensure = async (body: Record<string, unknown>) => {
      ctx.signal.throwIfAborted(); // a cancelled start stops between imports
      if (deferred) {
        deferred.push(body as VolumeCreate);
        return;
      }
      try {
        await this.o.link.createVolume(host, pool, body);
      } catch (error) {
        if (!(error instanceof DroverError && error.code === 'conflict')) throw error;
      }
    };
    // The image's volumes (imported or uploaded once per host), the VM's clones, its ISO, and how it boots.
    const { disks, boot } = await prepareVmMedia({ store: this.o.store, link: this.o.link, images: this.o.images }, host, vm, spec, ensure, ctx.signal);
    // The agent checks the security policy's Chinese Wall again when it launches the VM.
    const security = await this.policy.agentSecurity(vm);
    // NICs on Drover networks come first (eth0, …), as taps; QEMU's user network only when the VM forwards ports.
    const taps = await this.networks.agentNics(vm.id);
    const userNic = taps.length > 0 && (spec.forwards ?? []).length === 0 ? [] : [{ forwards: spec.forwards ?? [] }];
    // An appliance on a network asks DHCP on eth0 (its tap) instead of assuming QEMU's user network.
    const booted = taps.length > 0 && boot.kind === 'kernel' && boot.cmdline ? { ...boot, cmdline: boot.cmdline.replace(/(^| )drover\.net=user(?= |$)/g, '') } : boot;
    return {
      name: vm.name,
      id: vm.id,
      cpus: spec.cpus,
      memoryMiB: spec.memoryMiB,
      ...(spec.cpuModel ? { cpuModel: spec.cpuModel } : {}),
      disks: [...disks, ...addedAgentDevices(spec).disks],
      nics: [...taps, ...userNic, ...addedAgentDevices(spec).nics],
      boot: booted,
      ...(spec.cloudInit ? { cloudInit: spec.cloudInit } : {}),
      ...(security ? { security } : {}),
    };
  }

  private async runStart(ctx: OperationContext, vm: VmRecord, host: HostRecord): Promise<unknown> {
    // Journaled with the operation's creation (the placement), unless it was submitted without it.
    if (ctx.op.phase !== 'prepare') await ctx.phase('prepare', 10, `placed on ${host.name}`);
    // The volumes the VM needs travel with the start: on a host that has its image, the
    // start request makes its clones and boots it, with no request of their own.
    const volumes: VolumeCreate[] = [];
    const agentSpec = await this.prepareOnHost(ctx, vm, host, volumes);
    // The taps, bridges, leases and rules of the VM's NICs exist on the host before QEMU opens them.
    if (agentSpec.nics?.some((nic) => nic.mode === 'tap')) {
      await ctx.phase('network', 55, 'network state pushed to the host');
      await this.networks.pushHost(host.id);
    }
    // From here a cancel is refused. No commit of its own: a recovery asks the host whether QEMU
    // runs whatever the phase, so `boot` is journaled with the operation's next write.
    ctx.mark('boot', 60);
    // One request defines the VM on the host (or rewrites its definition there when it is
    // stopped: an edit, a new cloud-init) and starts it; a running or saved VM is refused as is.
    const start = (ensure?: VolumeCreate[]) => this.o.link.action(host, vm.id, 'start', { spec: agentSpec, ...(ensure?.length ? { ensure: { pool, volumes: ensure } } : {}) }, 120_000);
    let info: VmInfo;
    try {
      info = await start(volumes);
    } catch (error) {
      // The host lacks the image (nothing was started): import it in a step that may be
      // cancelled again, as a first start on a host always did, then boot.
      if (!(error instanceof DroverError && error.code === 'not_found' && Array.isArray(error.details.missingVolumes))) throw error;
      ctx.mark('import', 30, `${host.name} lacks ${(error.details.missingVolumes as string[]).join(', ')}`);
      await this.prepareOnHost(ctx, vm, host);
      ctx.mark('boot', 60);
      info = await start();
    }
    return this.settle(ctx, vm.id, host, info);
  }

  /** Writes what the agent reports into the store and releases the start's reservation. */
  private async settle(ctx: OperationContext, vmId: string, host: HostRecord, info: VmInfo | undefined): Promise<unknown> {
    const state = agentToManagedState(info);
    // The state the host reported, the released reservation and the VM's event commit with the
    // operation's end (phase `confirm` in its journal): one commit, and nothing acts after it.
    ctx.lastPhase('confirm', async (tx) => {
      const updated = await tx.vms.update(vmId, { state, hostId: host.id, lastError: null });
      await tx.reservations.deleteByVm(vmId);
      return [vmUpdatedEvent(updated, host.name)];
    });
    return { state, host: host.name, ...(info?.pid ? { pid: info.pid } : {}) };
  }

  private async runSimple(ctx: OperationContext, vm: VmRecord, host: HostRecord, action: string): Promise<unknown> {
    const transitional: Record<string, string> = { stop: 'stopping', 'force-off': 'stopping', save: 'saving', restore: 'starting' };
    if (transitional[action]) await this.publish(await this.o.store.vms.update(vm.id, { state: transitional[action]! }));
    await ctx.phase(action, 20);
    const body = action === 'stop' && ctx.op.params.timeoutMs !== undefined ? { timeoutMs: ctx.op.params.timeoutMs } : {};
    // The agent's own limits: the stop's grace period then a forced stop; saves and restores up to 300 s.
    const timeoutMs = action === 'stop' ? Number(ctx.op.params.timeoutMs ?? 60_000) + 60_000 : 360_000;
    const info = await this.o.link.action(host, vm.id, action, body, timeoutMs);
    // A VM whose QEMU is gone leaves its host's network state (its tap and rules go).
    if (['stop', 'force-off', 'save'].includes(action)) await this.networkLeft(vm.id, host.id);
    return this.settle(ctx, vm.id, host, info);
  }

  private async runSnapshot(ctx: OperationContext, vm: VmRecord, host: HostRecord, action: string): Promise<unknown> {
    const name = String(ctx.op.params.name);
    await ctx.phase(action, 20);
    // withMemory false: disks only, even while the VM runs (a lab's initial snapshot, labs/lab.service.ts).
    const body = { name, ...(ctx.op.params.withMemory === false ? { withMemory: false } : {}) };
    if (action === 'snapshot.create') await this.o.link.call(host, 'POST', `/v1/vms/${vm.id}/snapshots`, body, 300_000);
    if (action === 'snapshot.revert') await this.o.link.call(host, 'POST', `/v1/vms/${vm.id}/snapshots/${name}/revert`, {}, 300_000);
    if (action === 'snapshot.delete') await this.o.link.call(host, 'DELETE', `/v1/vms/${vm.id}/snapshots/${name}`, undefined, 300_000);
    return this.settle(ctx, vm.id, host, await this.o.link.vm(host, vm.id));
  }

  private async runDelete(ctx: OperationContext): Promise<unknown> {
    const vm = await this.o.store.vms.get(ctx.op.targetId).catch(() => undefined);
    if (!vm) return { deleted: true };
    const hadNics = await this.networks.hasNics(vm.id);
    if (vm.hostId) {
      const host = await this.o.store.hosts.get(vm.hostId);
      await ctx.phase('undefine', 30, host.name);
      const info = await this.o.link.vm(host, vm.id);
      if (info?.pid !== undefined) throw errors.conflict(`VM "${vm.name}" is running on host "${host.name}"; stop it first`);
      await this.o.link.deleteVm(host, vm.id);
      await ctx.phase('volumes', 60);
      await this.o.link.deleteVolume(host, pool, `${vm.id}.root.qcow2`);
      await this.o.link.deleteVolume(host, pool, `${vm.id}.data.qcow2`);
      for (let index = 1; index < (specOf(vm).dataImages ?? []).length; index++) await this.o.link.deleteVolume(host, pool, dataVolumeName(vm.id, index));
      // Volumes made for the VM by POST .../disks {sizeBytes}; attached existing volumes stay.
      for (const disk of specOf(vm).addedDisks ?? []) if (disk.created) await this.o.link.deleteVolume(host, disk.pool, disk.volume);
    }
    await this.o.store.reservations.deleteByVm(vm.id);
    await this.o.store.vms.delete(vm.id);
    // Its NICs went with the record: the host loses the VM's tap, lease and rules.
    await this.networkLeft(vm.id, vm.hostId, hadNics);
    const event = await this.o.store.events.append({ type: 'vm.deleted', objectKind: 'vm', objectId: vm.id, data: { id: vm.id, name: vm.name } });
    this.o.hub.publish(event);
    return { deleted: true };
  }

  /**
   * A failed action: the VM's state is read back from its host (the truth),
   * and a start's reservation is released.
   */
  private async compensate(ctx: OperationContext, error: DroverError): Promise<void> {
    const vm = await this.o.store.vms.get(ctx.op.targetId);
    const hostId = (ctx.op.params.hostId as string | undefined) ?? vm.hostId;
    await this.o.store.reservations.deleteByVm(vm.id);
    const host = hostId ? await this.o.store.hosts.get(hostId).catch(() => undefined) : undefined;
    let info: VmInfo | undefined;
    try {
      info = host ? await this.o.link.vm(host, vm.id) : undefined;
    } catch {
      info = undefined;
    }
    const previous = String(ctx.op.params.previousState ?? vm.state);
    const state = info ? agentToManagedState(info) : ctx.op.kind === 'vm.start' ? previous : vm.state;
    // A first start that never got a definition on the host leaves the VM unplaced.
    const keepHost = info !== undefined || (ctx.op.kind !== 'vm.start' && vm.hostId !== null);
    await this.publish(await this.o.store.vms.update(vm.id, { state, hostId: keepHost ? vm.hostId : previous === 'defined' ? null : vm.hostId, lastError: error.message }));
    if (hostId && !holdingStates.includes(state)) await this.networkLeft(vm.id, hostId);
  }

  /**
   * A previous manager died during this operation. Ask the host what really
   * happened (waiting out an action still in progress there), then record it:
   * the operation ends done when the goal was reached, rolled back otherwise.
   */
  private async recover(ctx: OperationContext, kind: string): Promise<unknown> {
    const { vm, host } = await this.targetOf(ctx.op);
    await ctx.phase('recover', ctx.op.progress, `after a manager restart, from phase "${ctx.op.phase}"`);
    let info = await this.o.link.vm(host, vm.id);
    for (let i = 0; i < 600 && info?.busy; i++) {
      await new Promise((r) => setTimeout(r, 200));
      info = await this.o.link.vm(host, vm.id);
    }
    const goal: Record<string, string[]> = {
      'vm.start': ['running'],
      'vm.restore': ['running', 'paused'],
      'vm.stop': ['stopped'],
      'vm.force-off': ['stopped'],
      'vm.pause': ['paused'],
      'vm.resume': ['running'],
      'vm.save': ['saved'],
    };
    const state = agentToManagedState(info);
    if (goal[kind]?.includes(state)) return this.settle(ctx, vm.id, host, info);
    throw errors.unavailable(`Operation ${ctx.op.kind} was interrupted by a manager restart in phase "${ctx.op.phase}"; VM "${vm.name}" is ${state}`);
  }

  /** Starts the VMs marked autostart that are stopped on a host that just came back. */
  async autostart(host: HostRecord): Promise<string[]> {
    const started: string[] = [];
    const page = await this.o.store.vms.list({ limit: 1000, filter: { hostId: host.id, state: ['stopped', 'error'] } });
    for (const vm of page.items.filter((v) => v.autostart)) {
      try {
        await this.action(vm.id, 'start', {}, 'system:autostart');
        started.push(vm.name);
      } catch (error) {
        this.o.logger.warn({ vm: vm.name, err: error }, 'autostart refused');
      }
    }
    if (started.length > 0) this.o.logger.info({ host: host.name, started }, 'autostarted VMs');
    return started;
  }

  /** Brings the store in line with what a host reports (guest powered itself off, crashed, ...). */
  async reconcile(host: HostRecord): Promise<void> {
    const reported = new Map((await this.o.link.vms(host)).map((v) => [v.id, v]));
    let after: string | undefined;
    do {
      const page = await this.o.store.vms.list({ limit: 1000, ...(after ? { after } : {}), filter: { hostId: host.id } });
      for (const vm of page.items) {
        if (await this.o.runner.busyWith(vm.id)) continue;
        const info = reported.get(vm.id);
        if (!info || info.busy) continue;
        const state = agentToManagedState(info);
        if (state !== vm.state && !(vm.state === 'defined' && state === 'stopped')) {
          this.o.logger.info({ vm: vm.name, from: vm.state, to: state }, 'reconciled VM state with its host');
          await this.publish(await this.o.store.vms.update(vm.id, { state }));
          if (!holdingStates.includes(state)) await this.networkLeft(vm.id, host.id);
        }
      }
      after = page.next;
    } while (after);
  }
}

export function agentToManagedState(info: VmInfo | undefined): string {
  if (!info) return 'stopped';
  switch (info.state) {
    case 'running':
    case 'paused':
    case 'saved':
    case 'stopped':
      return info.state;
    case 'restoring':
      return 'starting';
    case 'starting':
    case 'stopping':
    case 'saving':
      return info.state;
    default:
      return 'error';
  }
}

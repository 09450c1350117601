import type { Logger } from 'pino';
import { DroverError, errors } from '@drover/core';
import type { ConfirmAnswer, HostFacts, IncomingReady, MigrateRequest, MigrationCapabilities, MigrationMode, MigrationPlan, MigrationStatus, VmInfo, VolumeCreate } from '@drover/api';
import { downtimeLimitForPass } from '@drover/api';
import type { Store } from '../store/index.js';
import type { HostRecord, OperationRecord, VmRecord } from '../store/types.js';
import type { EventHub } from '../http/event-hub.js';
import type { AgentLink } from '../hosts/agent-link.js';
import type { ImageLibrary } from '../images/image-library.js';
import { prepareVmMedia, vmPool } from '../images/vm-media.js';
import { publicOperation, type OperationContext, type OperationRunner } from '../operations/operation-runner.js';
import { agentToManagedState, vmUpdatedEvent, type ManagedVmSpec, type VmService } from './vm.service.js';

/**
 * Live migration of a running VM between two hosts, as the operation
 * `vm.migrate` (docs/migration.md has the protocol and the recovery table).
 *
 *   begin (source) → prepare (destination) → mirror (source, local disks) →
 *   perform (source, pre-copy with progress) → switchover (owner flipped in the
 *   store while the guest is paused at pre-switchover) → finish (destination:
 *   its `completed` is the truth, then `cont`; alongside it the source's QEMU
 *   ends and the volumes copied are deleted there, as it is never resumed
 *   once `finish` is journaled) → confirm (the outcome recorded, with the end)
 *
 * Until switchover every failure, cancel or manager restart rolls back: the
 * source keeps running, the destination QEMU and its volumes go, the
 * reservation is released. From switchover on the destination decides: if it
 * completed, the migration is finished forward; if it failed, the source
 * takes the guest back (its images were never activated on the destination).
 */

export interface MigrationServiceOptions {
  store: Store;
  runner: OperationRunner;
  link: AgentLink;
  images: ImageLibrary;
  hub: EventHub;
  logger: Logger;
  vms: VmService;
}

interface MigrateParams {
  /** live (running or paused), stopped (a cold move of its disks), saved (its saved state and disks: restored there). */
  mode: MigrationMode;
  /** Whether the guest runs on the destination afterwards (it ran, or was saved running). */
  wasRunning: boolean;
  hostId: string;
  destinationId: string;
  previousState: string;
  storage: boolean;
  downtimeMs: number;
  bandwidth: number;
  timeoutMs: number;
  /** No progress of the stream for this long: it is stuck (a cut link), and is yanked. */
  stallMs: number;
  /** Bytes/s for the disk mirror; absent: unlimited. */
  mirrorBandwidth?: number;
}

const earlyPhases = ['pending', 'begin', 'prepare', 'mirror', 'perform'];
const defaults = { downtimeMs: 300, bandwidth: 1024 ** 3, timeoutMs: 600_000, stallMs: 15_000 };
const reservationTtlMs = 60 * 60_000;
const agentCallMs = 120_000;

/**
 * For the recovery tests only: with DROVER_TEST_HOLD_MIGRATION=<phase> the
 * manager stops for good right after that phase's work, so a test can kill it
 * exactly there. Unset in any real deployment.
 */
async function holdForTest(phase: string): Promise<void> {
  // `<phase>` holds for good; `<phase>:<ms>` holds that long, then goes on (a window for a fault at that moment).
  const [held, ms] = (process.env.DROVER_TEST_HOLD_MIGRATION ?? '').split(':');
  if (held !== phase) return;
  if (ms === undefined) await new Promise(() => undefined);
  else await sleep(Number(ms));
}

function paramsOf(op: OperationRecord): MigrateParams {
  return op.params as unknown as MigrateParams;
}

function specOf(vm: VmRecord): ManagedVmSpec {
  return vm.spec as unknown as ManagedVmSpec;
}


/** A 404 of an agent (the VM is not there) as `undefined`; anything else rethrown. */
function notFoundAsUndefined(error: unknown): undefined {
  if (error instanceof DroverError && error.code === 'not_found') return undefined;
  throw error;
}

function isUnreachable(error: unknown): boolean {
  return error instanceof DroverError && (error.code === 'unavailable' || error.code === 'timeout') && (error.details as { status?: number } | undefined)?.status === undefined;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    // The listener goes with the timer: a long wait loop must not pile listeners up on the operation's signal.
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Rejects as soon as the signal aborts (the request itself is left to finish or fail on its own). */
function raced<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

/**
 * The disks to copy: every writable disk, except those on a pool marked shared
 * that the destination has too, at the same path (it sees the same file).
 */
function mirrorSet(plan: MigrationPlan, destination: HostFacts): MigrationPlan['disks'] {
  return plan.disks.filter((d) => !d.readOnly && !(d.shared && destination.pools.some((p) => p.name === d.pool && p.shared && p.path === d.poolPath)));
}

/** The counter lines a guest prints on its serial console (the `counter` appliance): `DROVER-COUNTER gen=N t=SECONDS.MILLIS`. */
export function counterTicks(text: string): Array<{ gen: number; t: number }> {
  return [...text.matchAll(/DROVER-COUNTER gen=(\d+) t=(\d+\.\d{3})\b/g)].map((m) => ({ gen: Number(m[1]), t: Number(m[2]) }));
}

/**
 * The guest-measured downtime of a live migration: the largest gap between two
 * consecutive counter ticks (one generation apart) from the source's last
 * ticks to the destination's first ones, in ms of the guest's own clock. The
 * counter ticks every 100 ms and catches up missed ticks at once, so a pause
 * shows as one gap. Undefined when the guest prints no ticks on both sides.
 */
export function guestGapAroundSwitchover(sourceTail: string, destHead: string): number | undefined {
  const before = counterTicks(sourceTail).slice(-3);
  const last = before.at(-1);
  if (!last) return undefined;
  const after = counterTicks(destHead).filter((tick) => tick.gen > last.gen).slice(0, 10);
  if (after.length === 0) return undefined;
  const ticks = [...before, ...after];
  let gap: number | undefined;
  for (let i = 1; i < ticks.length; i++) {
    if (ticks[i]!.gen !== ticks[i - 1]!.gen + 1) continue;
    const dt = Math.round((ticks[i]!.t - ticks[i - 1]!.t) * 1000);
    // A byte the emulated UART sent twice garbles a timestamp now and then (a digit doubled): such a pair gives no gap.
    if (dt >= 0 && dt <= 600_000) gap = Math.max(gap ?? 0, dt);
  }
  return gap;
}

/** The figures of a migration status, as the operation's live result and its final one carry them. */
function figures(status: MigrationStatus): Record<string, unknown> {
  const keep = ['status', 'transferredBytes', 'multifdBytes', 'remainingBytes', 'totalBytes', 'dirtyBytesPerSecond', 'mbps', 'expectedDowntimeMs', 'downtimeMs', 'totalTimeMs', 'setupTimeMs', 'dirtySyncCount', 'downtimeLimitMs', 'mirrors'] as const;
  const out: Record<string, unknown> = {};
  for (const key of keep) if (status[key] !== undefined) out[key] = status[key];
  return out;
}

/**
 * What the run already knows when the switchover has started: the source's figures, and the
 * volumes the destination got copies of (the source deletes them at `confirm`); a recovering
 * manager knows none of it and asks again.
 */
interface LateFacts {
  preCopy?: MigrationStatus;
  continued?: MigrationStatus;
  mirroredBytes?: number;
  storage?: boolean;
  deleteVolumes?: Array<{ pool: string; volume: string }>;
}

/** What the destination's `incoming` is made from: a plan that differs in these needs another. */
function destinationView(plan: MigrationPlan, mirror: MigrationPlan['disks']): string {
  return JSON.stringify([plan.vmId, plan.spec, plan.slots ?? null, plan.snapshots, plan.disks, mirror.map((d) => d.nodeName)]);
}

export class MigrationService {
  /** Background clean-ups of destinations that were unreachable when a migration rolled back. */
  private readonly cleanups = new Set<Promise<void>>();
  /**
   * A live move's plan, destination facts and image volumes as its request read them, by VM, for its run
   * to prepare the destination alongside the source's `begin` (taken by the run; begin's plan is checked against it).
   */
  private readonly requestPlans = new Map<string, { plan: MigrationPlan; facts: HostFacts; volumes?: VolumeCreate[] }>();

  constructor(private readonly o: MigrationServiceOptions) {
    o.runner.register('vm.migrate', {
      run: (ctx) => this.run(ctx),
      recover: (ctx) => this.recover(ctx),
      compensate: (ctx, error) => this.compensate(ctx, error),
      // Until the switchover starts: the source still runs the guest and owns it.
      cancellable: (op) => earlyPhases.includes(op.phase),
    });
  }

  // ------------------------------------------------------------ request

  /**
   * Checks everything before anything moves (each refusal a clear 4xx), then
   * reserves capacity on the destination and submits `vm.migrate`.
   */
  async migrate(ref: string, request: MigrateRequest, actor: string, idempotencyKey?: string): Promise<OperationRecord> {
    const { store, link, runner } = this.o;
    const vm = await this.o.vms.find(ref);
    const mode: MigrationMode | undefined = vm.state === 'running' || vm.state === 'paused' ? 'live' : vm.state === 'stopped' ? 'stopped' : vm.state === 'saved' ? 'saved' : undefined;
    if (!mode) throw errors.conflict(`Cannot migrate VM "${vm.name}": it is ${vm.state}; a running, paused, stopped or saved VM can move`, { state: vm.state });
    const busy = await runner.busyWith(vm.id);
    if (busy) throw errors.conflict(`VM "${vm.name}" is busy with operation ${busy.id} (${busy.kind})`, { operationId: busy.id });
    if (!vm.hostId) throw errors.conflict(`VM "${vm.name}" is not placed on any host`);
    const source = await store.hosts.get(vm.hostId);
    const dest = await store.hosts.find(request.to).catch((error: unknown) => {
      if (error instanceof DroverError && error.code === 'not_found') throw errors.invalid(`No host "${request.to}"`, { field: 'to' });
      throw error;
    });
    if (dest.id === source.id) throw errors.conflict(`VM "${vm.name}" already runs on host "${dest.name}"`, { reason: 'same-host' });
    if (dest.state !== 'online') throw errors.conflict(`Host "${dest.name}" is ${dest.state}; a VM can only move to an online host`, { reason: 'host-state', hostState: dest.state });
    // A host in maintenance is being evacuated: its VMs may leave it.
    if (source.state !== 'online' && source.state !== 'maintenance') throw errors.conflict(`The source host "${source.name}" is ${source.state}`, { reason: 'host-state', hostState: source.state });

    // All read-only: asked alongside (one round trip of waiting, not two). A live move's run prepares the
    // destination with the image volumes read here too (or reads them itself, if this read failed).
    const [plan, destFacts, volumes] = await Promise.all([
      link.call<MigrationPlan>(source, 'GET', `/v1/vms/${vm.id}/migration/plan`, undefined, 30_000),
      link.call<HostFacts>(dest, 'GET', '/v1/host', undefined, 10_000),
      mode === 'live' ? this.imageVolumes(vm, dest).catch(() => undefined) : undefined,
    ]);
    await holdForTest('request');
    if (plan.mode && plan.mode !== mode) throw errors.conflict(`VM "${vm.name}" is ${plan.mode} on host "${source.name}", not ${vm.state} as recorded; try again after the next heartbeat`, { state: vm.state });
    const cpuModel = plan.spec.cpuModel ?? specOf(vm).cpuModel;
    if (cpuModel && !dest.cpuModels.includes(cpuModel)) {
      throw errors.conflict(`Host "${dest.name}" does not offer CPU model "${cpuModel}" (it offers ${dest.cpuModels.join(', ')})`, { reason: 'cpu-model' });
    }
    const local = mirrorSet(plan, destFacts);
    if (local.length > 0 && request.storage !== true) {
      throw errors.conflict(
        `VM "${vm.name}" has disks that host "${dest.name}" cannot see (${local.map((d) => `${d.pool}/${d.volume}`).join(', ')}); pass "storage": true to copy them`,
        { reason: 'local-disks' },
      );
    }
    if (local.length > 0 && plan.snapshots.length > 0) {
      throw errors.conflict(`VM "${vm.name}" has internal snapshots (${plan.snapshots.map((s) => s.name).join(', ')}); a disk mirror copies only the current state: delete them or use shared storage`, { reason: 'snapshots' });
    }
    if (request.postcopy) {
      const capabilities = await link.call<MigrationCapabilities>(dest, 'GET', '/v1/migration/capabilities', undefined, 10_000);
      if (!capabilities.postcopy.available) throw errors.unavailable(`Post-copy is not available on host "${dest.name}": ${capabilities.postcopy.reason}`, { reason: 'postcopy' });
      throw errors.unavailable(`Post-copy is not built in this Drover (host "${dest.name}" could do it: ${capabilities.postcopy.reason}); migrate without it`, { reason: 'postcopy' });
    }

    const previousState = vm.state;
    const params: MigrateParams = {
      mode,
      wasRunning: plan.wasRunning ?? mode === 'live',
      hostId: source.id,
      destinationId: dest.id,
      previousState,
      storage: request.storage === true,
      downtimeMs: request.downtimeMs ?? defaults.downtimeMs,
      bandwidth: request.bandwidth ?? defaults.bandwidth,
      timeoutMs: request.timeoutMs ?? defaults.timeoutMs,
      stallMs: defaults.stallMs,
      ...(request.mirrorBandwidth !== undefined ? { mirrorBandwidth: request.mirrorBandwidth } : {}),
    };
    // One commit: the capacity check and the reservation on the destination (the scheduler restricted
    // to it), the VM's `migrating` and its event, and the operation, created running in its first
    // phase `begin`. A refusal leaves nothing.
    if (mode === 'live') this.requestPlans.set(vm.id, { plan, facts: destFacts, ...(volumes ? { volumes } : {}) });
    return runner.submit(
      { kind: 'vm.migrate', targetKind: 'vm', targetId: vm.id, params: params as unknown as Record<string, unknown>, actor, idempotencyKey: idempotencyKey ?? null },
      `VM "${vm.name}"`,
      async (tx) => {
        const current = await tx.vms.get(vm.id);
        if (current.state !== vm.state) throw errors.conflict(`Cannot migrate VM "${vm.name}": it is ${current.state} now`, { state: current.state });
        await this.o.vms.placeAndReserveIn(tx, vm, { include: [dest.id], exclude: [] }, reservationTtlMs);
        const updated = await tx.vms.update(vm.id, { state: 'migrating', lastError: null });
        return { events: [vmUpdatedEvent(updated, source.name)], phase: { name: 'begin', progress: 5, note: `${source.name} → ${dest.name}` } };
      },
    ).catch((error: unknown) => {
      this.requestPlans.delete(vm.id);
      throw error;
    });
  }

  // ------------------------------------------------------------ run

  private async hosts(op: OperationRecord): Promise<{ vm: VmRecord; source: HostRecord; dest: HostRecord }> {
    const params = paramsOf(op);
    const [vm, source, dest] = await Promise.all([this.o.store.vms.get(op.targetId), this.o.store.hosts.get(params.hostId), this.o.store.hosts.get(params.destinationId)]);
    return { vm, source, dest };
  }

  private async run(ctx: OperationContext): Promise<unknown> {
    const { link } = this.o;
    const params = paramsOf(ctx.op);
    const { vm, source, dest } = await this.hosts(ctx.op);
    const path = `/v1/vms/${vm.id}/migration`;

    // Created in `begin` (its journal entry came with the operation); an older operation journals it here.
    if (!ctx.op.journal.some((entry) => entry.phase === 'begin')) await ctx.phase('begin', 5, `${source.name} → ${dest.name}`);
    // A live move whose request read the source's plan prepares the destination alongside the
    // source's begin: begin's plan is the truth, and a destination prepared from a plan that
    // differs from it is aborted and prepared again. Recovering from `begin` rolls back both
    // sides whatever they did, so the destination may act before `prepare` is journaled.
    const early = params.mode === 'live' || params.mode === undefined ? this.requestPlans.get(vm.id) : undefined;
    this.requestPlans.delete(vm.id);
    const earlyMirror = early ? mirrorSet(early.plan, early.facts) : [];
    const withNics = await this.o.vms.networks.hasNics(vm.id);
    // Alongside the source's begin: the destination's facts (read-only; the request's, read moments ago, for an
    // early move: the destination checks the disks it is told are shared itself) and, early, its incoming QEMU.
    // All are awaited whatever happens, so a failure never leaves a call in flight behind the roll back.
    const [begun, facts, earlyReady] = await Promise.allSettled([
      link.call<MigrationPlan>(source, 'POST', `${path}/begin`, { operationId: ctx.op.id, destination: dest.name, mode: params.mode ?? 'live' }, agentCallMs),
      early ? Promise.resolve(early.facts) : link.call<HostFacts>(dest, 'GET', '/v1/host', undefined, 10_000),
      early && (earlyMirror.length === 0 || params.storage) ? this.incoming(ctx, vm, source, dest, early.plan, earlyMirror, withNics, early.volumes) : Promise.resolve(undefined),
    ]);
    for (const settled of [begun, facts]) if (settled.status === 'rejected') throw settled.reason;
    const plan = (begun as PromiseFulfilledResult<MigrationPlan>).value;
    const mirrored = mirrorSet(plan, (facts as PromiseFulfilledResult<HostFacts>).value);
    // The early destination stands only if it was prepared from what begin answered; one from a plan that
    // changed meanwhile is dropped (a refusal of it too: the destination cleaned up after itself).
    const planChanged = early !== undefined && destinationView(early.plan, earlyMirror) !== destinationView(plan, mirrored);
    if (earlyReady.status === 'rejected' && !planChanged) throw earlyReady.reason;
    if (mirrored.length > 0 && !params.storage) throw errors.conflict(`VM "${vm.name}" has local disks; migrate with storage`);
    await holdForTest('begin');

    // Journaled with the next write: a recovery does the same from `begin` and from `prepare` (roll back).
    ctx.mark('prepare', 10, mirrored.length > 0 ? `${mirrored.length} disk(s) to mirror` : 'shared storage: memory only');
    let ready = earlyReady.status === 'fulfilled' ? earlyReady.value : undefined;
    if (planChanged && (ready || earlyReady.status === 'rejected')) {
      ctx.logger.info('the VM changed between the request and begin: the destination is prepared again');
      await link.call(dest, 'POST', `/v1/migrations/incoming/${vm.id}/abort`, {}, 30_000);
      ready = undefined;
    }
    ready ??= await this.incoming(ctx, vm, source, dest, plan, mirrored, withNics, early?.volumes);
    await holdForTest('prepare');

    let mirroredBytes = 0;
    if (ready.nbd && mirrored.length > 0) {
      await ctx.phase('mirror', 20, `${ready.nbd.exports.length} disk(s) over NBD+TLS to ${ready.nbd.host}:${ready.nbd.port}`);
      const status = await raced(link.call<MigrationStatus>(source, 'POST', `${path}/mirror`, { nbd: ready.nbd, tlsHostname: ready.tlsHostname, timeoutMs: params.timeoutMs, stallMs: params.stallMs, ...(params.mirrorBandwidth ? { speed: params.mirrorBandwidth } : {}) }, params.timeoutMs + 30_000), ctx.signal);
      mirroredBytes = (status.mirrors ?? []).reduce((sum, m) => sum + m.length, 0);
      await ctx.progress(40, { phase: 'mirror', mirroredBytes });
      await holdForTest('mirror');
    }

    // Committed before the stream starts: other managers (and a recovering leader) see the phase in the store.
    await ctx.phase('perform', 40, `downtime-limit ${downtimeLimitForPass(params.downtimeMs, 0)} ms, stepping up to ${params.downtimeMs} ms; bandwidth ${params.bandwidth} B/s`);
    await link.call(source, 'POST', `${path}/perform`, { uri: ready.uri, tlsHostname: ready.tlsHostname, downtimeMs: params.downtimeMs, bandwidth: params.bandwidth }, agentCallMs);
    await holdForTest('perform');
    const preCopy = await this.awaitSwitchover(ctx, vm, source, params);

    // Past this point the guest is paused on the source and a cancel is no longer possible.
    // The owner flips with the phase's journal entry, in one commit (the guest is paused until `continue`);
    // its `vm.updated` event commits with them. A restarted manager that finds `switchover` finds the owner flipped.
    await ctx.phase('switchover', 88, 'guest paused at pre-switchover; owner → destination', async (tx) => {
      return [vmUpdatedEvent(await tx.vms.update(vm.id, { hostId: dest.id }), dest.name)];
    });
    let continued: MigrationStatus | undefined;
    try {
      await holdForTest('switchover');
      continued = await link.call<MigrationStatus>(source, 'POST', `${path}/continue`, { timeoutMs: 60_000 }, 90_000);
    } catch (error) {
      ctx.logger.warn({ err: error }, 'switchover did not answer; the destination decides');
    }
    const extra: LateFacts = { preCopy, continued, mirroredBytes, storage: mirrored.length > 0, deleteVolumes: mirrored.map((d) => ({ pool: d.pool, volume: d.volume })) };
    if (continued?.status === 'completed') {
      // The usual case: the whole stream went out. The guest waits for the destination's `cont`, so finish
      // there at once (its `finish` waits for its own `completed`, the truth); anything odd goes to resolveLate.
      try {
        return await this.forward(ctx, vm, source, dest, extra);
      } catch (error) {
        ctx.logger.warn({ err: error }, 'finishing on the destination failed; the destination decides');
      }
    } else if (continued) ctx.logger.warn({ status: continued }, 'source did not complete; the destination decides');
    return this.resolveLate(ctx, extra);
  }

  /**
   * The destination's QEMU `-incoming`, after the VM's taps, leases and rules are there (its
   * reservation places it there). The image volumes the VM boots from travel with the request;
   * a destination that lacks one refuses, and they are imported first.
   */
  private async incoming(ctx: OperationContext, vm: VmRecord, source: HostRecord, dest: HostRecord, plan: MigrationPlan, mirror: MigrationPlan['disks'], withNics: boolean, known?: VolumeCreate[]): Promise<IncomingReady> {
    const [, volumes] = await Promise.all([withNics ? this.o.vms.networks.pushHost(dest.id) : undefined, known ?? this.imageVolumes(vm, dest, ctx.signal)]);
    const call = (ensure: boolean) =>
      this.o.link.call<IncomingReady>(
        dest,
        'POST',
        '/v1/migrations/incoming',
        { operationId: ctx.op.id, plan, sourceName: source.name, mirror: mirror.map((d) => d.nodeName), ...(ensure && volumes.length ? { ensure: { pool: vmPool, volumes } } : {}) },
        agentCallMs,
      );
    try {
      return await call(true);
    } catch (error) {
      if (!(error instanceof DroverError && error.code === 'not_found' && Array.isArray(error.details.missingVolumes))) throw error;
      ctx.logger.info({ missing: error.details.missingVolumes }, 'the destination lacks image volumes: importing them');
      // All asked for at once: the agent runs its imports one at a time; one made meanwhile is there (409).
      await Promise.all(
        volumes.map(async (body) => {
          ctx.signal.throwIfAborted();
          await this.o.link.createVolume(dest, vmPool, body).catch((cause: unknown) => {
            if (!(cause instanceof DroverError && cause.code === 'conflict')) throw cause;
          });
        }),
      );
      return call(false);
    }
  }

  /** The image volumes the VM boots from (kernel, initrd, ISO), as volume creations; its own disks come by the migration. */
  private async imageVolumes(vm: VmRecord, dest: HostRecord, signal?: AbortSignal): Promise<VolumeCreate[]> {
    const volumes: VolumeCreate[] = [];
    const collect = async (body: Record<string, unknown>) => {
      signal?.throwIfAborted();
      if ('cloneOf' in body || String(body.name).startsWith(`${vm.id}.`)) return; // the VM's own volumes: mirrored or shared
      if ('sizeBytes' in body) return;
      volumes.push(body as VolumeCreate);
    };
    await prepareVmMedia({ store: this.o.store, link: this.o.link, images: this.o.images }, dest, vm, specOf(vm), collect, signal);
    return volumes;
  }

  /**
   * Pre-copy: asks the source every second (a long poll that answers at once
   * on pre-switchover) and reports the figures as progress. Ends at
   * pre-switchover; throws on failure, timeout, a stuck stream (yanked) or cancel.
   */
  private async awaitSwitchover(ctx: OperationContext, vm: VmRecord, source: HostRecord, params: MigrateParams): Promise<MigrationStatus> {
    const path = `/v1/vms/${vm.id}/migration`;
    const deadline = Date.now() + params.timeoutMs;
    let lastTransferred = -1;
    let lastMove = Date.now();
    let unreachableSince: number | undefined;
    for (;;) {
      ctx.signal.throwIfAborted();
      let status: MigrationStatus;
      try {
        status = await raced(this.o.link.call<MigrationStatus>(source, 'POST', `${path}/await-switchover`, { timeoutMs: 1000, downtimeMs: params.downtimeMs }, 30_000), ctx.signal);
        unreachableSince = undefined;
      } catch (error) {
        if (ctx.signal.aborted) throw error;
        // An agent restart on the source: QEMU migrates on by itself; ask again for a while.
        unreachableSince ??= Date.now();
        if (!isUnreachable(error) || Date.now() - unreachableSince > 60_000) throw error;
        await sleep(1000, ctx.signal);
        continue;
      }
      if (status.status === 'pre-switchover') return status;
      if (['failed', 'cancelled', 'completed', 'none', 'gone'].includes(status.status)) {
        throw errors.unavailable(`Migration of VM "${vm.name}" ${status.status === 'gone' ? 'lost its source QEMU' : status.status}${status.error ? `: ${status.error}` : ''}`, { status: status.status });
      }
      const transferred = status.transferredBytes ?? 0;
      if (transferred !== lastTransferred) {
        lastTransferred = transferred;
        lastMove = Date.now();
      } else if (Date.now() - lastMove > params.stallMs && status.status === 'active') {
        // A cut link makes nothing fail for many minutes (TCP retries): end it now.
        await this.o.link.call(source, 'POST', `${path}/yank`, {}, 30_000).catch(() => undefined);
        throw errors.unavailable(`Migration of VM "${vm.name}" made no progress for ${params.stallMs} ms; the stream was yanked`, { reason: 'stalled' });
      }
      if (Date.now() > deadline) throw errors.timeout(`Migration of VM "${vm.name}" did not reach switchover within ${params.timeoutMs} ms; cancelled`);
      const total = (status.transferredBytes ?? 0) + (status.remainingBytes ?? 0);
      const done = total > 0 ? (status.transferredBytes ?? 0) / total : 0;
      await ctx.progress(40 + 45 * done, { phase: 'perform', ...figures(status) });
      await this.event(vm, ctx.op, status);
    }
  }

  private async event(vm: VmRecord, op: OperationRecord, status: MigrationStatus): Promise<void> {
    const data = { vmId: vm.id, operationId: op.id, ...figures(status) };
    const event = await this.o.store.events.append({ type: 'vm.migration.progress', objectKind: 'vm', objectId: vm.id, data });
    this.o.hub.publish({ ...event, data });
  }

  // ------------------------------------------------------------ resolution

  /**
   * After the switchover started: the destination's state decides.
   * - It runs the guest, or its stream completed → finish there, confirm the source.
   * - Before `finish` was journaled the destination has never run the guest
   *   (`-S`, images inactive until `cont`), so going back is always safe: the
   *   source still at pre-switchover, its stream failed or cancelled, or the
   *   destination failed or gone → roll back (the source resumes). A destination
   *   that does not answer for 2 minutes while the source completed → roll back
   *   too, and it is aborted when it answers again.
   * - Once `finish` was journaled the guest may have run there: the source is
   *   never resumed; a destination lost then leaves the VM in `error`.
   */
  private async resolveLate(ctx: OperationContext, extra: LateFacts = {}): Promise<unknown> {
    const { link } = this.o;
    const { vm, source, dest } = await this.hosts(ctx.op);
    const started = Date.now();
    for (;;) {
      const finishStarted = ctx.op.journal.some((entry) => entry.phase === 'finish');
      let destReachable = true;
      let destInfo: VmInfo | undefined;
      let destStatus: MigrationStatus | undefined;
      try {
        destInfo = await link.vm(dest, vm.id);
        destStatus = destInfo ? await link.call<MigrationStatus>(dest, 'GET', `/v1/vms/${vm.id}/migration`, undefined, 10_000) : undefined;
      } catch (error) {
        destReachable = false;
        ctx.logger.warn({ err: error }, 'destination does not answer');
      }
      // Finished there already (the marker is gone): running, or paused, or stopped after a cold move.
      const destFinished = destInfo !== undefined && destStatus?.active === false;
      if (destFinished || destStatus?.status === 'completed') {
        try {
          return await this.forward(ctx, vm, source, dest, extra);
        } catch (error) {
          ctx.logger.warn({ err: error }, 'finishing on the destination failed; looking again');
        }
      }
      const destDead = destReachable && (!destInfo || ['failed', 'cancelled', 'gone', 'none'].includes(destStatus?.status ?? 'gone'));
      let sourceStatus: MigrationStatus | undefined;
      try {
        sourceStatus = await link.call<MigrationStatus>(source, 'GET', `/v1/vms/${vm.id}/migration`, undefined, 10_000);
      } catch (error) {
        ctx.logger.warn({ err: error }, 'source does not answer');
      }
      const describe = `destination ${destReachable ? (destStatus?.status ?? 'gone') : 'unreachable'}, source ${sourceStatus?.status ?? 'unreachable'}`;
      if (!finishStarted) {
        const sourceGaveUp = ['pre-switchover', 'failed', 'cancelled', 'none'].includes(sourceStatus?.status ?? '');
        if (sourceGaveUp || destDead || (!destReachable && Date.now() - started > 120_000)) {
          const error = errors.unavailable(`Migration of VM "${vm.name}" failed at switchover (${describe}); it runs on "${source.name}" again`, { reason: 'switchover' });
          await this.rollBack(ctx, error);
          throw error;
        }
      } else if (destDead || Date.now() - started > 10 * 60_000) {
        const message = `Migration of VM "${vm.name}" lost the guest after it started on "${dest.name}" (${describe}); the source is not resumed, its state is older`;
        await this.o.vms.publish(await this.o.store.vms.update(vm.id, { state: 'error', lastError: message }));
        throw errors.unavailable(message, { reason: 'unresolved' });
      }
      await sleep(1000);
    }
  }

  private async forward(ctx: OperationContext, vm: VmRecord, source: HostRecord, dest: HostRecord, extra: LateFacts): Promise<unknown> {
    const { link } = this.o;
    await ctx.phase('finish', 92, `${dest.name} completed; starting the guest there while the source QEMU on ${source.name} ends`);
    const params = paramsOf(ctx.op);
    const after = params.mode === 'stopped' ? 'stop' : params.wasRunning === false ? 'pause' : 'run';
    const measure = params.mode === 'live' && after === 'run';
    // From `finish` on the source is never resumed (the recovery table), so its QEMU ends while the
    // destination starts the guest (libvirt's Confirm waits for Finish because its source may resume).
    // Both are awaited whatever happens: a failed finish leaves no call in flight behind it.
    const finishing = link.call<VmInfo>(dest, 'POST', `/v1/migrations/incoming/${vm.id}/finish`, { timeoutMs: 60_000, after }, 90_000);
    // The destination's console from its start, for the guest-measured downtime (its first tick after the source's
    // last), read as soon as the guest runs there: while the source's QEMU may still be ending.
    const destHead = finishing.then(
      () => (measure ? link.serialLog(dest, vm.id, 0).then((head) => head.text, () => undefined) : undefined),
      () => undefined,
    );
    const [finished, confirmed] = await Promise.allSettled([finishing, this.confirmSource(vm, source, dest, extra, measure)]);
    if (finished.status === 'rejected') throw finished.reason;
    const info = finished.value;
    await holdForTest('finish');
    const state = agentToManagedState(info);
    // The VM's state there, its reservation's end, its event and the `confirm` journal entry commit with
    // the operation's end: one commit. A manager that dies before it recovers from `finish` (its
    // `finish` call answers again at once; the source, gone, answers 404) and confirms again.
    ctx.lastPhase(
      'confirm',
      async (tx) => {
        const updated = await tx.vms.update(vm.id, { state, hostId: dest.id, lastError: null });
        await tx.reservations.deleteByVm(vm.id);
        return [vmUpdatedEvent(updated, dest.name)];
      },
      96,
    );
    await holdForTest('confirm');
    let sourceTail: string | undefined;
    let warning: string | undefined;
    let sourceFinal: MigrationStatus | undefined = extra.continued;
    if (confirmed.status === 'fulfilled') {
      sourceTail = confirmed.value?.serialTail;
      // QEMU's final figures come with the source's `confirm` (its `continue` answers at `completed`, often before QEMU has them).
      if (confirmed.value?.migration?.downtimeMs !== undefined) sourceFinal = confirmed.value.migration;
    } else {
      warning = `The source host "${source.name}" was not cleaned up: ${(confirmed.reason as Error).message}`;
      ctx.logger.warn({ err: confirmed.reason }, 'confirm on the source failed');
    }
    // The guest-measured gap when the destination's first tick is there already; else it is added to
    // the operation's result once it is (the answer does not wait for the guest's next tick).
    const head = await destHead;
    let guestMaxGapMs: number | undefined;
    if (sourceTail && head !== undefined) {
      const last = counterTicks(sourceTail).at(-1);
      guestMaxGapMs = last && counterTicks(head).some((tick) => tick.gen > last.gen) ? guestGapAroundSwitchover(sourceTail, head) : undefined;
      if (guestMaxGapMs === undefined && last) this.recordGapLater(ctx.op.id, vm, dest, sourceTail);
    }
    // The source loses the VM's tap and rules; the destination's state is pushed again without the reservation.
    if (await this.o.vms.networks.hasNics(vm.id)) {
      await Promise.all(
        [source, dest].map((host) => this.o.vms.networks.pushHost(host.id).catch((error: unknown) => ctx.logger.warn({ err: error, host: host.name }, 'pushing the network state failed'))),
      );
    }
    return {
      state,
      mode: params.mode ?? 'live',
      from: source.name,
      to: dest.name,
      storage: extra.storage ?? false,
      ...(extra.mirroredBytes ? { mirroredBytes: extra.mirroredBytes } : {}),
      ...(sourceFinal ? { qemuDowntimeMs: sourceFinal.downtimeMs, totalTimeMs: sourceFinal.totalTimeMs, setupTimeMs: sourceFinal.setupTimeMs, transferredBytes: sourceFinal.transferredBytes, multifdBytes: sourceFinal.multifdBytes } : {}),
      ...(guestMaxGapMs !== undefined ? { guestMaxGapMs } : {}),
      ...(extra.preCopy?.expectedDowntimeMs !== undefined ? { expectedDowntimeMs: extra.preCopy.expectedDowntimeMs } : {}),
      ...(extra.preCopy?.downtimeLimitMs !== undefined ? { downtimeLimitMs: extra.preCopy.downtimeLimitMs } : {}),
      ...(extra.preCopy?.dirtySyncCount !== undefined ? { passes: extra.preCopy.dirtySyncCount } : {}),
      ...(warning ? { warning } : {}),
    };
  }

  /**
   * The source's QEMU ends, its record goes and the volumes copied to the destination are deleted
   * (`confirm`); it answers with the last lines of its console, read before its directory goes (the
   * guest-measured downtime), and QEMU's final figures. A source without the VM (a recovering
   * manager's second confirm) answers 404: nothing is left there (undefined).
   */
  private async confirmSource(vm: VmRecord, source: HostRecord, dest: HostRecord, extra: LateFacts, measure: boolean): Promise<ConfirmAnswer | undefined> {
    const { link } = this.o;
    // A recovering manager does not know the disks that were copied: it asks.
    let deleteVolumes = extra.deleteVolumes;
    if (!deleteVolumes) {
      const [plan, facts] = await Promise.all([
        link.call<MigrationPlan>(source, 'GET', `/v1/vms/${vm.id}/migration/plan`, undefined, 30_000).catch(notFoundAsUndefined),
        link.call<HostFacts>(dest, 'GET', '/v1/host', undefined, 10_000),
      ]);
      if (!plan) return undefined;
      deleteVolumes = mirrorSet(plan, facts).map((d) => ({ pool: d.pool, volume: d.volume }));
    }
    return link
      .call<ConfirmAnswer | undefined>(source, 'POST', `/v1/vms/${vm.id}/migration/confirm`, { deleteVolumes, ...(measure ? { serialTailBytes: 4096 } : {}) }, agentCallMs)
      .catch(notFoundAsUndefined);
  }

  /**
   * The guest-measured downtime (`guestGapAroundSwitchover`) of a migration that ended before the
   * destination's first tick after the source's last one: the destination's console is read every
   * 10 ms for up to 1 s (a garbled tick gives no gap: the next is awaited), and the gap is added to
   * the operation's result once the operation has ended (with its `operation.updated` event).
   */
  private recordGapLater(operationId: string, vm: VmRecord, dest: HostRecord, sourceTail: string): void {
    const job = (async () => {
      const gap = await this.guestGap(vm, dest, sourceTail);
      if (gap === undefined) return;
      await this.o.runner.wait(operationId, 60_000);
      const events = await this.o.store.transaction(async (tx) => {
        const op = await tx.operations.get(operationId);
        if (op.state !== 'done' || typeof op.result !== 'object' || op.result === null) return [];
        const updated = await tx.operations.update(operationId, { result: { ...(op.result as Record<string, unknown>), guestMaxGapMs: gap } });
        return [await tx.events.append({ type: 'operation.updated', objectKind: 'operation', objectId: operationId, data: publicOperation(updated) as unknown as Record<string, unknown> })];
      });
      for (const event of events) this.o.hub.publish(event);
    })().catch((error: unknown) => this.o.logger.warn({ err: error, operationId }, 'recording the guest-measured downtime failed'));
    this.cleanups.add(job);
    void job.finally(() => this.cleanups.delete(job));
  }

  private async guestGap(vm: VmRecord, dest: HostRecord, sourceTail: string): Promise<number | undefined> {
    const last = counterTicks(sourceTail).at(-1);
    if (!last) return undefined;
    for (const deadline = Date.now() + 1000; ; ) {
      const head = await this.o.link.serialLog(dest, vm.id, 0).catch(() => undefined);
      if (!head) return undefined;
      // The first tick after the source's last one gives the gap; a garbled one gives none, and the next is awaited.
      const gap = counterTicks(head.text).some((tick) => tick.gen > last.gen) ? guestGapAroundSwitchover(sourceTail, head.text) : undefined;
      if (gap !== undefined || Date.now() > deadline) return gap;
      await sleep(10);
    }
  }

  /**
   * The guest stays on (or goes back to) the source: its migration is
   * cancelled there (it resumes if it ran), the destination QEMU and the
   * volumes made for it go, the reservation is released, the owner is the
   * source again.
   */
  private async rollBack(ctx: OperationContext, error: DroverError): Promise<void> {
    const { link, store } = this.o;
    const { vm, source, dest } = await this.hosts(ctx.op);
    let info: VmInfo | undefined;
    for (const deadline = Date.now() + 60_000; ; ) {
      try {
        info = await link.call<VmInfo>(source, 'POST', `/v1/vms/${vm.id}/migration/cancel`, { resume: true }, 60_000);
        break;
      } catch (cause) {
        if (cause instanceof DroverError && cause.code === 'not_found') break;
        if (Date.now() > deadline) {
          ctx.logger.error({ err: cause }, 'cannot cancel the migration on the source');
          break;
        }
        await sleep(2000);
      }
    }
    try {
      await link.call(dest, 'POST', `/v1/migrations/incoming/${vm.id}/abort`, {}, 30_000);
    } catch (cause) {
      ctx.logger.warn({ err: cause }, 'destination unreachable for the abort; retrying in the background');
      this.cleanLater(dest, vm.id);
    }
    await store.reservations.deleteByVm(vm.id);
    if (await this.o.vms.networks.hasNics(vm.id)) await this.o.vms.networks.pushHost(dest.id).catch((cause: unknown) => ctx.logger.warn({ err: cause }, 'pushing the network state failed'));
    const previous = paramsOf(ctx.op).previousState;
    const state = info ? agentToManagedState(info) : previous;
    await this.o.vms.publish(await store.vms.update(vm.id, { state, hostId: source.id, lastError: error.message }));
  }

  /** Keeps asking an unreachable destination to drop a half-made incoming VM (a cut link heals later). */
  private cleanLater(dest: HostRecord, vmId: string): void {
    const job = (async () => {
      for (let attempt = 0; attempt < 200; attempt++) {
        await sleep(3000);
        try {
          await this.o.link.call(dest, 'POST', `/v1/migrations/incoming/${vmId}/abort`, {}, 30_000);
          this.o.logger.info({ host: dest.name, vm: vmId }, 'destination cleaned up after a failed migration');
          return;
        } catch (error) {
          if (error instanceof DroverError && error.code === 'conflict') {
            this.o.logger.error({ err: error, host: dest.name, vm: vmId }, 'destination refused the clean-up');
            return;
          }
        }
      }
    })();
    this.cleanups.add(job);
    void job.finally(() => this.cleanups.delete(job));
  }

  /**
   * A failure, cancel or timeout. Before switchover: roll back. From
   * switchover on, `resolveLate` has already settled the VM (forward, back,
   * or `error`): a VM left in error makes the operation `failed`.
   */
  private async compensate(ctx: OperationContext, error: DroverError): Promise<void> {
    if (earlyPhases.includes(ctx.op.phase)) {
      await this.rollBack(ctx, error);
      return;
    }
    if ((error.details as { reason?: string } | undefined)?.reason !== 'switchover') throw error;
  }

  /**
   * A previous manager died during the migration (docs/migration.md, recovery
   * table): before switchover it is rolled back (by the runner's
   * compensation); from switchover on, the destination's state finishes it
   * forward or back.
   */
  private async recover(ctx: OperationContext): Promise<unknown> {
    const phase = ctx.op.phase;
    if (earlyPhases.includes(phase)) {
      // `compensate` runs next, and sees the phase the dead manager reached.
      throw errors.unavailable(`Migration was interrupted by a manager restart in phase "${phase}"; rolled back`, { phase });
    }
    await ctx.phase('recover', ctx.op.progress, `after a manager restart, from phase "${phase}"`);
    return this.resolveLate(ctx);
  }

  /** Waits for background clean-ups (tests, shutdown). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.cleanups]);
  }
}

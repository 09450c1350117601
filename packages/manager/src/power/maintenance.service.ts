import type { Logger } from 'pino';
import { errors, planEvacuation } from '@drover/core';
import type { HostEvacuationPlan, RestorePlan } from '@drover/api';
import type { Store } from '../store/index.js';
import type { HostRecord, OperationRecord, VmRecord } from '../store/types.js';
import type { HostService } from '../hosts/host.service.js';
import type { OperationContext, OperationRunner } from '../operations/operation-runner.js';
import type { VmService } from '../vms/vm.service.js';
import { awaitOperation, evacuationPolicyOf, listVms, plannerVm, runLimited, vmReaches } from './cluster-view.js';

export interface MaintenanceServiceOptions {
  store: Store;
  runner: OperationRunner;
  vms: VmService;
  hosts: HostService;
  logger: Logger;
}

const busyStates = ['starting', 'stopping', 'saving', 'migrating'];

/**
 * Host maintenance: a host in state `maintenance` takes no new VMs (the
 * scheduler's state filter). `evacuate` moves its VMs away by each VM's
 * evacuation policy as one parent operation (`host.evacuate`) whose children
 * are ordinary VM operations, a few at a time; each VM that left is recorded,
 * and `restore` (`host.restore`) brings back exactly those.
 */
export class MaintenanceService {
  constructor(private readonly o: MaintenanceServiceOptions) {
    o.runner.register('host.evacuate', {
      run: (ctx) => this.runEvacuate(ctx),
      // The children are operations of their own (recovered by their handlers); what is left is re-planned by running evacuate again.
      recover: async (ctx) => {
        throw errors.unavailable(`Evacuation was interrupted by a manager restart in phase "${ctx.op.phase}"; VMs already moved are recorded: run evacuate again to move the rest`);
      },
    });
    o.runner.register('host.restore', {
      run: (ctx) => this.runRestore(ctx),
      recover: async (ctx) => {
        throw errors.unavailable(`Restore was interrupted by a manager restart in phase "${ctx.op.phase}"; run restore again to bring back the rest`);
      },
    });
  }

  private async publishHost(host: HostRecord): Promise<void> {
    await this.o.hosts.publish(host);
  }

  /** Puts an online host into maintenance: it keeps its VMs and takes no new ones. */
  async enterMaintenance(ref: string): Promise<HostRecord> {
    const host = await this.o.store.hosts.find(ref);
    if (host.state === 'maintenance') return host;
    if (host.state !== 'online') throw errors.conflict(`Cannot put host "${host.name}" into maintenance: it is ${host.state}`, { state: host.state });
    const updated = await this.o.store.hosts.update(host.id, { state: 'maintenance' });
    await this.publishHost(updated);
    return updated;
  }

  /**
   * What evacuating the host would do, computed by the planner: running and
   * paused VMs move (live or cold) or stop by their policy; VMs with policy
   * `stay`, and stopped or saved VMs (their disks stay on the host), stay;
   * VMs that cannot move are listed with the reason.
   */
  async plan(host: HostRecord): Promise<HostEvacuationPlan> {
    const vms = await listVms(this.o.store, host.id);
    const plan: HostEvacuationPlan = { hostId: host.id, hostName: host.name, moves: [], stops: [], stays: [], cannotMove: [] };
    const movers: VmRecord[] = [];
    for (const vm of vms) {
      const policy = evacuationPolicyOf(vm);
      const entry = { vmId: vm.id, vmName: vm.name, policy };
      if (busyStates.includes(vm.state)) plan.cannotMove.push({ ...entry, reason: `VM "${vm.name}" is ${vm.state}; wait until it settles` });
      else if (vm.state !== 'running' && vm.state !== 'paused') plan.stays.push({ ...entry, reason: `it is ${vm.state}; its disks stay on the host` });
      else if (policy === 'stay') plan.stays.push({ ...entry, reason: 'its evacuation policy is "stay"' });
      else if (policy === 'stop') plan.stops.push(entry);
      else movers.push(vm);
    }
    if (movers.length === 0) return plan;
    const hosts = await this.o.vms.hostCandidates();
    const others = hosts.filter((h) => h.id !== host.id && h.state === 'online');
    const names = new Map(hosts.map((h) => [h.id, h.name]));
    const byId = new Map(movers.map((vm) => [vm.id, vm]));
    if (others.length === 0) {
      for (const vm of movers) plan.cannotMove.push({ vmId: vm.id, vmName: vm.name, policy: evacuationPolicyOf(vm), reason: `host "${host.name}" is the last online host: there is nowhere to go` });
      return plan;
    }
    const planned = planEvacuation({ hosts, vms: movers.map((vm) => plannerVm(vm)), hostId: host.id, filters: await this.o.vms.policy.placementFilters() });
    for (const move of planned.moves) {
      const vm = byId.get(move.vmId)!;
      plan.moves.push({ vmId: vm.id, vmName: vm.name, policy: evacuationPolicyOf(vm), toHostId: move.to, toHostName: names.get(move.to) ?? move.to });
    }
    for (const refused of planned.cannotMove) {
      const vm = byId.get(refused.vmId)!;
      plan.cannotMove.push({ vmId: vm.id, vmName: vm.name, policy: evacuationPolicyOf(vm), reason: refused.reason });
    }
    return plan;
  }

  /**
   * Evacuates a host: with `dryRun` only the plan. Otherwise every VM that
   * must leave has to be able to (else 409 listing them, nothing done); the
   * host goes into maintenance with the operation, in one transaction.
   */
  async evacuate(ref: string, request: { dryRun?: boolean; concurrency?: number }, actor: string, idempotencyKey?: string): Promise<HostEvacuationPlan | OperationRecord> {
    const host = await this.o.store.hosts.find(ref);
    if (host.state !== 'online' && host.state !== 'maintenance') throw errors.conflict(`Cannot evacuate host "${host.name}": it is ${host.state}`, { state: host.state });
    const plan = await this.plan(host);
    if (request.dryRun) return plan;
    if (plan.cannotMove.length > 0) {
      throw errors.conflict(
        `Cannot evacuate host "${host.name}": ${plan.cannotMove.length} VM(s) cannot move (${plan.cannotMove.map((c) => `"${c.vmName}": ${c.reason}`).join('; ')}); nothing was changed`,
        { cannotMove: plan.cannotMove },
      );
    }
    return this.submitMove('host.evacuate', host, { plan, concurrency: request.concurrency ?? 2 }, actor, idempotencyKey, { from: 'online', to: 'maintenance' });
  }

  private async runEvacuate(ctx: OperationContext): Promise<unknown> {
    const { store, vms, runner } = this.o;
    const host = await store.hosts.get(ctx.op.targetId);
    await this.publishHost(host);
    const plan = ctx.op.params.plan as HostEvacuationPlan;
    const concurrency = Number(ctx.op.params.concurrency ?? 2);
    const actor = `system:evacuate:${ctx.op.id}`;
    const steps: Array<{ vmId: string; vmName: string; policy: string; toHostId: string | null }> = [
      ...plan.moves.map((m) => ({ vmId: m.vmId, vmName: m.vmName, policy: m.policy, toHostId: m.toHostId })),
      ...plan.stops.map((s) => ({ vmId: s.vmId, vmName: s.vmName, policy: s.policy, toHostId: null })),
    ];
    await ctx.phase('move', 5, `${plan.moves.length} to move, ${plan.stops.length} to stop, ${plan.stays.length} staying, at most ${concurrency} at a time`);
    let finished = 0;
    const outcomes = await runLimited(steps, concurrency, async (step) => {
      ctx.signal.throwIfAborted();
      const vm = await store.vms.get(step.vmId);
      if (vm.hostId !== host.id) throw errors.conflict(`VM "${vm.name}" is no longer on host "${host.name}"`);
      if (step.policy === 'stop') {
        await awaitOperation(runner, await vms.action(vm.id, 'stop', {}, actor), `Stopping VM "${vm.name}"`);
      } else if (step.policy === 'cold-migrate') {
        await this.coldMove(vm, step.toHostId!, actor);
      } else {
        await awaitOperation(runner, await vms.migrations.migrate(vm.id, { to: step.toHostId!, storage: true }, actor), `Live migration of VM "${vm.name}"`);
      }
      await store.power.addEvacuation({ hostId: host.id, vmId: vm.id, policy: step.policy, toHostId: step.toHostId, operationId: ctx.op.id });
      finished += 1;
      await ctx.progress(5 + (90 * finished) / Math.max(1, steps.length), { done: finished, of: steps.length });
      return step;
    });
    const failed = outcomes
      .map((outcome, i) => (outcome.status === 'rejected' ? { vmId: steps[i]!.vmId, vmName: steps[i]!.vmName, error: (outcome.reason as Error).message } : undefined))
      .filter((f) => f !== undefined);
    const result = {
      host: host.name,
      moved: steps.filter((s, i) => s.toHostId && outcomes[i]!.status === 'fulfilled').map((s) => s.vmName),
      stopped: steps.filter((s, i) => !s.toHostId && outcomes[i]!.status === 'fulfilled').map((s) => s.vmName),
      stayed: plan.stays.map((s) => s.vmName),
      failed,
    };
    if (failed.length > 0) throw errors.unavailable(`Evacuation of host "${host.name}" left ${failed.length} VM(s) behind: ${failed.map((f) => `"${f.vmName}": ${f.error}`).join('; ')}`, result);
    return result;
  }

  /** Cold migration: stop (cleanly), move the stopped VM and its disks, start it there. */
  private async coldMove(vm: VmRecord, toHostId: string, actor: string): Promise<void> {
    const { runner, vms, store } = this.o;
    const wasRunning = vm.state === 'running' || vm.state === 'paused';
    if (wasRunning) {
      await awaitOperation(runner, await vms.action(vm.id, 'stop', {}, actor), `Stopping VM "${vm.name}"`);
      await vmReaches(store, vm.id, ['stopped']);
    }
    await awaitOperation(runner, await vms.migrations.migrate(vm.id, { to: toHostId, storage: true }, actor), `Cold migration of VM "${vm.name}"`);
    if (wasRunning) {
      await vmReaches(store, vm.id, ['stopped']);
      await awaitOperation(runner, await vms.action(vm.id, 'start', {}, actor), `Starting VM "${vm.name}"`);
    }
  }

  /** What restoring the host would bring back: the VMs its evacuations moved or stopped, that still exist. */
  async restorePlan(host: HostRecord): Promise<RestorePlan> {
    const records = await this.o.store.power.listEvacuations(host.id);
    const plan: RestorePlan = { hostId: host.id, hostName: host.name, returns: [] };
    const seen = new Set<string>();
    for (const record of [...records].reverse()) {
      if (seen.has(record.vmId)) continue;
      seen.add(record.vmId);
      const vm = await this.o.store.vms.tryGet(record.vmId);
      if (!vm) continue;
      const from = vm.hostId ? ((await this.o.store.hosts.tryGet(vm.hostId))?.name ?? null) : null;
      const action =
        vm.hostId === host.id ? (vm.state === 'stopped' && record.policy !== 'cold-migrate' ? 'start' : 'none') : vm.state === 'running' || vm.state === 'paused' ? (record.policy === 'cold-migrate' ? 'cold-migrate' : 'live-migrate') : 'cold-migrate';
      plan.returns.push({ vmId: vm.id, vmName: vm.name, policy: record.policy, fromHostName: from, action });
    }
    return plan;
  }

  /** Takes the host out of maintenance and brings back exactly the VMs that left it. */
  async restore(ref: string, request: { dryRun?: boolean; concurrency?: number }, actor: string, idempotencyKey?: string): Promise<RestorePlan | OperationRecord> {
    const host = await this.o.store.hosts.find(ref);
    if (host.state !== 'online' && host.state !== 'maintenance') throw errors.conflict(`Cannot restore host "${host.name}": it is ${host.state}; power it on first`, { state: host.state });
    const plan = await this.restorePlan(host);
    if (request.dryRun) return plan;
    return this.submitMove('host.restore', host, { concurrency: request.concurrency ?? 2 }, actor, idempotencyKey, { from: 'maintenance', to: 'online' });
  }

  /** Submits an evacuation or a restore of `host`; in the same transaction the host goes from state `from` to `to` (when it is in `from`). */
  private submitMove(
    kind: 'host.evacuate' | 'host.restore',
    host: HostRecord,
    params: Record<string, unknown>,
    actor: string,
    idempotencyKey: string | undefined,
    state: { from: HostRecord['state']; to: HostRecord['state'] },
  ): Promise<OperationRecord> {
    return this.o.runner.submit({ kind, targetKind: 'host', targetId: host.id, params, actor, idempotencyKey: idempotencyKey ?? null }, `Host "${host.name}"`, async (tx) => {
      const current = await tx.hosts.get(host.id);
      if (current.state === state.from) await tx.hosts.update(host.id, { state: state.to });
      return {};
    });
  }

  private async runRestore(ctx: OperationContext): Promise<unknown> {
    const { store, vms, runner } = this.o;
    const host = await store.hosts.get(ctx.op.targetId);
    await this.publishHost(host);
    const plan = await this.restorePlan(host);
    const records = await store.power.listEvacuations(host.id);
    const concurrency = Number(ctx.op.params.concurrency ?? 2);
    const actor = `system:restore:${ctx.op.id}`;
    await ctx.phase('return', 5, `${plan.returns.length} VM(s) to bring back`);
    let finished = 0;
    const outcomes = await runLimited(plan.returns, concurrency, async (entry) => {
      const vm = await store.vms.get(entry.vmId);
      if (entry.action === 'start') await awaitOperation(runner, await vms.action(vm.id, 'start', {}, actor), `Starting VM "${vm.name}"`);
      else if (entry.action === 'live-migrate') await awaitOperation(runner, await vms.migrations.migrate(vm.id, { to: host.id, storage: true }, actor), `Live migration of VM "${vm.name}"`);
      else if (entry.action === 'cold-migrate') {
        if (vm.state === 'running' || vm.state === 'paused') await this.coldMove(vm, host.id, actor);
        else await awaitOperation(runner, await vms.migrations.migrate(vm.id, { to: host.id, storage: true }, actor), `Cold migration of VM "${vm.name}"`);
      }
      for (const record of records.filter((r) => r.vmId === vm.id)) await store.power.deleteEvacuation(record.id);
      finished += 1;
      await ctx.progress(5 + (90 * finished) / Math.max(1, plan.returns.length), { done: finished, of: plan.returns.length });
      return entry;
    });
    // Records of VMs deleted meanwhile go with them (cascade); what is left failed.
    const failed = outcomes
      .map((outcome, i) => (outcome.status === 'rejected' ? { vmId: plan.returns[i]!.vmId, vmName: plan.returns[i]!.vmName, error: (outcome.reason as Error).message } : undefined))
      .filter((f) => f !== undefined);
    const result = { host: host.name, returned: plan.returns.filter((_, i) => outcomes[i]!.status === 'fulfilled').map((r) => r.vmName), failed };
    if (failed.length > 0) throw errors.unavailable(`Restore of host "${host.name}" could not bring back ${failed.length} VM(s): ${failed.map((f) => `"${f.vmName}": ${f.error}`).join('; ')}`, result);
    return result;
  }
}

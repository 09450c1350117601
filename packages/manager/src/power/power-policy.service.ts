import type { Logger } from 'pino';
import { errors, planConsolidation, planRebalance } from '@drover/core';
import type { NightPlan, PowerPolicy, PowerReport, WakePlan } from '@drover/api';
import type { Store } from '../store/index.js';
import type { HostRecord, OperationRecord } from '../store/types.js';
import type { OperationContext, OperationRunner } from '../operations/operation-runner.js';
import type { VmService } from '../vms/vm.service.js';
import { awaitOperation, clusterView, plannerVm } from './cluster-view.js';
import { checkTimeZone, inWindow, parseWindow } from './power-schedule.js';
import type { PowerService } from './power.service.js';

export interface PowerPolicyServiceOptions {
  store: Store;
  runner: OperationRunner;
  vms: VmService;
  power: PowerService;
  logger: Logger;
  /** How often the schedule and the capacity reserve are looked at (default 30 s). */
  tickMs?: number;
  now?: () => Date;
}

interface PolicyState {
  mode: 'day' | 'night';
  since: string;
  lastRun: Record<string, unknown> | null;
  /**
   * Whether the last tick was inside the window. The schedule acts on
   * crossings only, so a manual run (or a wake for the reserve) holds until
   * the next window boundary. Unset after the policy changes: the next tick
   * applies it at once.
   */
  lastInside?: boolean | null;
}

/** Operations of the policy run against this target: one at a time. */
const target = 'power-policy';

/**
 * The power policy: in its nightly window (in its time zone) the cluster is
 * packed by the planner and the emptied hosts are powered off
 * (`power.night-plan`); at the window's end — or as soon as free memory of the
 * powered-on hosts drops under the reserve — every host Drover powered off is
 * powered on again, their agents are awaited and the load is rebalanced
 * (`power.wake`). Both can be run by hand, and as a dry run.
 */
export class PowerPolicyService {
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;

  constructor(private readonly o: PowerPolicyServiceOptions) {
    o.runner.register('power.night-plan', {
      run: (ctx) => this.runNight(ctx),
      recover: (ctx) => this.recoverNight(ctx),
    });
    o.runner.register('power.wake', {
      run: (ctx) => this.runWake(ctx),
      // Waking is always safe to do again.
      recover: (ctx) => this.runWake(ctx),
    });
  }

  private now(): Date {
    return this.o.now?.() ?? new Date();
  }

  async policy(): Promise<PowerPolicy | null> {
    return (await this.o.store.power.getSetting<PowerPolicy>('policy')) ?? null;
  }

  /** Stores the policy; a window that does not parse or an unknown time zone is refused and changes nothing. */
  async setPolicy(policy: PowerPolicy): Promise<PowerPolicy> {
    parseWindow(policy.window);
    checkTimeZone(policy.timeZone);
    await this.o.store.power.putSetting('policy', policy);
    await this.setState({ lastInside: null });
    return policy;
  }

  private async state(): Promise<PolicyState> {
    return (await this.o.store.power.getSetting<PolicyState>('state')) ?? { mode: 'day', since: new Date(0).toISOString(), lastRun: null };
  }

  private async setState(patch: Partial<PolicyState>): Promise<void> {
    await this.o.store.power.putSetting('state', { ...(await this.state()), ...patch });
  }

  /** Hosts powered off by Drover, hours off, energy saved (hours × watts per host). */
  async report(): Promise<PowerReport> {
    const policy = await this.policy();
    const state = await this.state();
    const now = this.now().getTime();
    let offMs = 0;
    const hostsPoweredOff: PowerReport['hostsPoweredOff'] = [];
    for (const record of await this.o.store.power.listHostPower()) {
      offMs += record.offMsTotal;
      if (record.poweredOffAt) {
        offMs += Math.max(0, now - Date.parse(record.poweredOffAt));
        const host = await this.o.store.hosts.tryGet(record.hostId);
        if (host) hostsPoweredOff.push({ hostId: host.id, hostName: host.name, since: record.poweredOffAt });
      }
    }
    const hoursOff = offMs / 3_600_000;
    return {
      policy,
      mode: state.mode,
      inWindow: policy ? inWindow(parseWindow(policy.window), policy.timeZone, this.now()) : false,
      hostsPoweredOff,
      hoursOff,
      energySavedKWh: (hoursOff * (policy?.wattsPerHost ?? 0)) / 1000,
      lastRun: state.lastRun,
    };
  }

  // ------------------------------------------------------------ night

  /** The night plan as it would run now (the planner's moves, the hosts to power off, the figures next to FFD). */
  async nightPlan(): Promise<NightPlan> {
    const policy = await this.policy();
    const { hosts, movable } = await clusterView(this.o.store, this.o.vms);
    const records = new Map((await Promise.all(hosts.map(async (h) => [h.id, await this.o.store.hosts.get(h.id)] as const))));
    const switchable = new Set<string>();
    for (const host of hosts) {
      const record = records.get(host.id)!;
      if ((await this.o.power.can(record, 'off')) && (await this.o.power.can(record, 'on'))) switchable.add(host.id);
    }
    // VMs on hosts Drover cannot switch off and on stay put: emptying such a host saves nothing.
    const vms = movable.filter((vm) => hosts.some((h) => h.id === vm.hostId)).map((vm) => plannerVm(vm, !switchable.has(vm.hostId!)));
    const plan = planConsolidation({ hosts, vms, filters: await this.o.vms.policy.placementFilters(), headroom: (policy?.headroomPercent ?? 0) / 100, keepSpareHosts: policy?.spareHosts ?? 0 });
    const name = (id: string) => records.get(id)?.name ?? id;
    const vmNames = new Map(movable.map((vm) => [vm.id, vm.name]));
    const powerOff = plan.emptiedHosts.filter((id) => switchable.has(id));
    return {
      moves: plan.moves.map((m) => ({ vmId: m.vmId, vmName: vmNames.get(m.vmId) ?? m.vmId, from: name(m.from), to: name(m.to) })),
      powerOff: powerOff.map((id) => ({ hostId: id, hostName: name(id) })),
      spareHosts: plan.spareHosts.map(name),
      hostsUsedBefore: plan.hostsUsedBefore,
      hostsUsed: plan.hostsUsed,
      lowerBound: plan.lowerBound,
      ffd: { hostsUsed: plan.ffd.hostsUsed, moves: plan.ffd.moves },
      notPlanned: plan.unplaceable.map((u) => ({ vmId: u.vmId, reason: u.reason })),
    };
  }

  /** Runs the night plan now (`dryRun`: only shows it). */
  async runNightPlan(request: { dryRun?: boolean }, actor: string): Promise<NightPlan | OperationRecord> {
    const plan = await this.nightPlan();
    if (request.dryRun) return plan;
    return this.o.runner.submit({ kind: 'power.night-plan', targetKind: 'cluster', targetId: target, params: {}, actor }, 'The power policy');
  }

  private async runNight(ctx: OperationContext): Promise<unknown> {
    const { store, vms, runner, power } = this.o;
    await ctx.phase('plan', 5);
    const plan = await this.nightPlan();
    const actor = `system:night-plan:${ctx.op.id}`;
    await ctx.phase('migrate', 10, `${plan.moves.length} move(s); ${plan.powerOff.length} host(s) to power off`);
    const failed: Array<{ what: string; error: string }> = [];
    let done = 0;
    // In the planner's order: each move is valid after the ones before it.
    for (const move of plan.moves) {
      ctx.signal.throwIfAborted();
      try {
        const destination = await store.hosts.find(move.to);
        await awaitOperation(runner, await vms.migrations.migrate(move.vmId, { to: destination.id, storage: true }, actor), `Live migration of VM "${move.vmName}"`);
      } catch (error) {
        failed.push({ what: `move "${move.vmName}" to "${move.to}"`, error: (error as Error).message });
      }
      done += 1;
      await ctx.progress(10 + (60 * done) / Math.max(1, plan.moves.length), { moved: done, of: plan.moves.length });
    }
    await ctx.phase('power-off', 75);
    const poweredOff: string[] = [];
    for (const entry of plan.powerOff) {
      try {
        const host = await store.hosts.get(entry.hostId);
        // A move that failed leaves its VM on the host: the check refuses to switch it off.
        await power.check(host, 'off');
        await power.apply(host, 'off');
        poweredOff.push(host.name);
      } catch (error) {
        failed.push({ what: `power off "${entry.hostName}"`, error: (error as Error).message });
      }
    }
    const result = { kind: 'night-plan', at: this.now().toISOString(), moved: plan.moves.length - failed.filter((f) => f.what.startsWith('move')).length, poweredOff, hostsUsed: plan.hostsUsed, lowerBound: plan.lowerBound, ffd: plan.ffd, failed };
    await this.setState({ mode: 'night', since: this.now().toISOString(), lastRun: result });
    return result;
  }

  /**
   * The manager running the night plan died (a leader killed in the middle of
   * its consolidation; the next leader adopted the plan). The move it was
   * waiting for is an operation of its own, adopted with it and finished or
   * rolled back by the migration's recovery table; once every move the plan
   * started has ended, the plan is made again from where the cluster is now
   * and run, so the consolidation finishes. Not when the policy's window has
   * closed meanwhile: then the schedule wakes the hosts instead, and the plan
   * ends failed.
   */
  private async recoverNight(ctx: OperationContext): Promise<unknown> {
    const from = ctx.op.phase;
    await ctx.phase('recover', ctx.op.progress, `after a manager restart, from phase "${from}"`);
    const actor = `system:night-plan:${ctx.op.id}`;
    for (const deadline = Date.now() + 900_000; ; ) {
      const moving = await this.o.store.operations.list({ limit: 1, filter: { actor, state: ['pending', 'running'] } });
      if (moving.items.length === 0) break;
      if (Date.now() > deadline) throw errors.timeout(`The night plan's move (operation ${moving.items[0]!.id}) did not end after a manager restart`, { operationId: moving.items[0]!.id });
      await new Promise((r) => setTimeout(r, 250));
    }
    const policy = await this.policy();
    if (policy?.enabled && !inWindow(parseWindow(policy.window), policy.timeZone, this.now())) {
      throw errors.unavailable(`The night plan was interrupted by a manager restart in phase "${from}" and its window has closed; moves already made stay`, { phase: from });
    }
    return this.runNight(ctx);
  }

  // ------------------------------------------------------------ wake

  async wakePlan(reason = 'manual'): Promise<WakePlan> {
    const off = await this.poweredOffHosts();
    return { powerOn: off.map((h) => ({ hostId: h.id, hostName: h.name })), reason };
  }

  private async poweredOffHosts(): Promise<HostRecord[]> {
    const out: HostRecord[] = [];
    for (const record of await this.o.store.power.listHostPower()) {
      const host = await this.o.store.hosts.tryGet(record.hostId);
      if (host && (host.state === 'powered_off' || record.poweredOffAt !== null)) out.push(host);
    }
    return out;
  }

  /** Wakes every host Drover powered off, waits for their agents and rebalances (`dryRun`: only shows which). */
  async wake(request: { dryRun?: boolean; reason?: string }, actor: string): Promise<WakePlan | OperationRecord> {
    const plan = await this.wakePlan(request.reason);
    if (request.dryRun) return plan;
    return this.o.runner.submit({ kind: 'power.wake', targetKind: 'cluster', targetId: target, params: { reason: request.reason ?? 'manual' }, actor }, 'The power policy');
  }

  private async runWake(ctx: OperationContext): Promise<unknown> {
    const { store, vms, runner, power } = this.o;
    const off = await this.poweredOffHosts();
    await ctx.phase('power-on', 10, `${off.length} host(s); reason: ${String(ctx.op.params.reason ?? 'manual')}`);
    const failed: Array<{ what: string; error: string }> = [];
    const woken: HostRecord[] = [];
    for (const host of off) {
      try {
        await power.apply(host, 'on');
        woken.push(host);
      } catch (error) {
        failed.push({ what: `power on "${host.name}"`, error: (error as Error).message });
      }
    }
    await ctx.phase('wait', 30, 'waiting for the agents');
    const up = await Promise.allSettled(woken.map((host) => power.waitUp(host.id, undefined, ctx.signal)));
    up.forEach((outcome, i) => {
      if (outcome.status === 'rejected') failed.push({ what: `agent of "${woken[i]!.name}"`, error: (outcome.reason as Error).message });
    });
    await this.setState({ mode: 'day', since: this.now().toISOString() });
    await ctx.phase('rebalance', 60);
    const policy = await this.policy();
    const { hosts, movable } = await clusterView(store, vms);
    const plan = planRebalance({ hosts, vms: movable.map((vm) => plannerVm(vm)), filters: await this.o.vms.policy.placementFilters(), threshold: (policy?.rebalanceThresholdPercent ?? 20) / 100 });
    const names = new Map(hosts.map((h) => [h.id, h.name]));
    const actor = `system:wake:${ctx.op.id}`;
    let moved = 0;
    for (const move of plan.moves) {
      try {
        await awaitOperation(runner, await vms.migrations.migrate(move.vmId, { to: move.to, storage: true }, actor), `Rebalancing move to "${names.get(move.to)}"`);
        moved += 1;
      } catch (error) {
        failed.push({ what: `rebalance move to "${names.get(move.to)}"`, error: (error as Error).message });
      }
    }
    const result = {
      kind: 'wake',
      reason: String(ctx.op.params.reason ?? 'manual'),
      at: this.now().toISOString(),
      poweredOn: woken.map((h) => h.name),
      rebalanced: moved,
      imbalanceBefore: plan.imbalanceBefore,
      imbalanceAfter: plan.imbalanceAfter,
      failed,
    };
    await this.setState({ lastRun: result });
    return result;
  }

  // ------------------------------------------------------------ schedule

  /** Share of memory free on the powered-on hosts (1 when there are none). */
  private async freeMemoryShare(): Promise<number> {
    const hosts = (await this.o.vms.hostCandidates()).filter((h) => h.state === 'online');
    const capacity = hosts.reduce((sum, h) => sum + h.capacity.memoryMiB, 0);
    if (capacity === 0) return 1;
    const used = hosts.reduce((sum, h) => sum + h.used.memoryMiB + h.reserved.memoryMiB, 0);
    return (capacity - used) / capacity;
  }

  /** Looks at the schedule once: starts the night plan at the window's start, wakes at its end or under the reserve. */
  async tick(): Promise<'night' | 'wake' | undefined> {
    if (this.ticking) return undefined;
    this.ticking = true;
    try {
      const policy = await this.policy();
      if (!policy?.enabled) return undefined;
      if (await this.o.runner.busyWith(target)) return undefined;
      const state = await this.state();
      const inside = inWindow(parseWindow(policy.window), policy.timeZone, this.now());
      const crossed = state.lastInside === undefined || state.lastInside === null || state.lastInside !== inside;
      if (crossed) await this.setState({ lastInside: inside });
      if (crossed && inside && state.mode === 'day') {
        await this.runNightPlan({}, 'system:power-policy');
        return 'night';
      }
      if (crossed && !inside && state.mode === 'night') {
        await this.wake({ reason: 'window end' }, 'system:power-policy');
        return 'wake';
      }
      if (state.mode === 'night' && (await this.freeMemoryShare()) * 100 < policy.reserveMemoryPercent && (await this.poweredOffHosts()).length > 0) {
        await this.wake({ reason: 'free capacity under the reserve' }, 'system:power-policy');
        return 'wake';
      }
      return undefined;
    } finally {
      this.ticking = false;
    }
  }

  start(): void {
    const every = this.o.tickMs ?? 30_000;
    const loop = () => {
      void this.tick()
        .catch((error: unknown) => this.o.logger.warn({ err: error }, 'power policy tick failed'))
        .finally(() => {
          if (this.timer !== undefined) this.timer = setTimeout(loop, every);
        });
    };
    this.timer = setTimeout(loop, every);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

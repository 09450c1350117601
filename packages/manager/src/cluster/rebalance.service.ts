import type { Logger } from 'pino';
import type { RebalancePlan, RebalanceRequest } from '@drover/api';
import { errors, planRebalance } from '@drover/core';
import type { OperationContext, OperationRunner } from '../operations/operation-runner.js';
import { awaitOperation, clusterView, plannerVm, runLimited } from '../power/cluster-view.js';
import type { Store } from '../store/index.js';
import type { OperationRecord } from '../store/types.js';
import type { VmService } from '../vms/vm.service.js';

/** Manager config `rebalance`: the automatic rebalance is off unless `auto` is set. */
export interface RebalanceSettings {
  /** Rebalance by itself when the imbalance is above `threshold`. Default false. */
  auto: boolean;
  /** Imbalance (most − least loaded online host, 0–1) above which the automatic rebalance starts, and the one a plan aims at. Default 0.2. */
  threshold: number;
  /** No automatic rebalance sooner than this after the last rebalance (automatic or manual). Default 30 minutes. */
  cooldownMs: number;
  /** How often the imbalance is looked at. Default 60 s. */
  intervalMs: number;
  /** Live migrations at once. Default 2. */
  concurrency: number;
}

export const defaultRebalanceSettings: RebalanceSettings = { auto: false, threshold: 0.2, cooldownMs: 30 * 60_000, intervalMs: 60_000, concurrency: 2 };

export interface RebalanceServiceOptions {
  store: Store;
  runner: OperationRunner;
  vms: VmService;
  logger: Logger;
  settings?: Partial<RebalanceSettings>;
  /** A reason not to rebalance automatically now (e.g. the power policy is at work), or undefined. */
  holdOff?: () => Promise<string | undefined>;
  now?: () => number;
}

/** Operations of kind `cluster.rebalance` all target this id, so only one runs at a time. */
export const rebalanceTarget = 'cluster-rebalance';

/**
 * Spreads load over the online hosts: the planner's `planRebalance` over the
 * running and paused VMs (the ones a live migration moves), with the scheduler's
 * filters and the active security policy's, run as live migrations through the
 * MigrationService, a few at a time, as the operation `cluster.rebalance`. An
 * automatic rebalance (config `rebalance.auto`) starts when the imbalance is
 * above the threshold, at most once per cooldown.
 */
export class RebalanceService {
  readonly settings: RebalanceSettings;
  #timer: NodeJS.Timeout | undefined;
  #lastStarted = -Infinity;
  #ticking = false;

  constructor(private readonly o: RebalanceServiceOptions) {
    this.settings = { ...defaultRebalanceSettings, ...o.settings };
    o.runner.register('cluster.rebalance', {
      run: (ctx) => this.run(ctx),
      // The migrations recover on their own; the rebalance itself just ends, saying so.
      recover: async () => ({ interrupted: true, note: 'the manager restarted during the rebalance; migrations in flight finish on their own' }),
    });
  }

  #now(): number {
    return this.o.now?.() ?? Date.now();
  }

  /** The plan for the cluster as it is now. */
  async plan(threshold = this.settings.threshold): Promise<RebalancePlan> {
    if (!(typeof threshold === 'number' && threshold >= 0 && threshold <= 1)) {
      throw errors.invalid(`Rebalance threshold is ${JSON.stringify(threshold)}, expected a number in [0, 1]`, { field: 'threshold' });
    }
    const { store, vms } = this.o;
    const view = await clusterView(store, vms);
    const hosts = await vms.policy.labelHosts(store, view.hosts);
    const filters = await vms.policy.placementFilters(store);
    const busy = new Set<string>();
    for (const vm of view.movable) if (await this.o.runner.busyWith(vm.id)) busy.add(vm.id);
    // A VM busy with another operation stays where it is (pinned), but still counts.
    const planned = planRebalance({ hosts, vms: view.movable.map((vm) => plannerVm(vm, busy.has(vm.id))), threshold, filters });
    const hostNames = new Map(hosts.map((h) => [h.id, h.name]));
    const vmNames = new Map(view.movable.map((vm) => [vm.id, vm.name]));
    return {
      threshold,
      imbalanceBefore: round(planned.imbalanceBefore),
      imbalanceAfter: round(planned.imbalanceAfter),
      moves: planned.moves.map((m) => ({
        vmId: m.vmId,
        vmName: vmNames.get(m.vmId) ?? m.vmId,
        fromHostId: m.from,
        fromHostName: hostNames.get(m.from) ?? m.from,
        toHostId: m.to,
        toHostName: hostNames.get(m.to) ?? m.to,
      })),
    };
  }

  /** `dryRun`: the plan. Otherwise the operation `cluster.rebalance` running it (409 while one runs). */
  async rebalance(request: RebalanceRequest, actor: string, idempotencyKey?: string): Promise<RebalancePlan | OperationRecord> {
    const concurrency = request.concurrency ?? this.settings.concurrency;
    if (!(Number.isSafeInteger(concurrency) && concurrency >= 1 && concurrency <= 16)) {
      throw errors.invalid(`Rebalance concurrency is ${JSON.stringify(concurrency)}, expected an integer from 1 to 16`, { field: 'concurrency' });
    }
    const plan = await this.plan(request.threshold ?? this.settings.threshold);
    if (request.dryRun) return plan;
    const op = await this.o.runner.submit(
      { kind: 'cluster.rebalance', targetKind: 'cluster', targetId: rebalanceTarget, params: { plan, concurrency }, actor, idempotencyKey: idempotencyKey ?? null },
      'The cluster rebalance',
    );
    this.#lastStarted = this.#now();
    return op;
  }

  private async run(ctx: OperationContext): Promise<unknown> {
    const { runner, vms } = this.o;
    const plan = ctx.op.params.plan as RebalancePlan;
    const concurrency = Number(ctx.op.params.concurrency ?? this.settings.concurrency);
    await ctx.phase('migrate', 10, `${plan.moves.length} live migration(s), ${concurrency} at a time`);
    let done = 0;
    const outcomes = await runLimited(plan.moves, concurrency, async (move) => {
      const what = `Moving VM "${move.vmName}" to host "${move.toHostName}"`;
      const op = await vms.migrations.migrate(move.vmId, { to: move.toHostId }, `${ctx.op.actor} (rebalance ${ctx.op.id})`);
      await awaitOperation(runner, op, what);
      done += 1;
      await ctx.progress(10 + Math.floor((80 * done) / Math.max(1, plan.moves.length)), { moved: done, planned: plan.moves.length });
      return op.id;
    });
    const failed = outcomes.flatMap((outcome, i) => (outcome.status === 'rejected' ? [{ vmName: plan.moves[i]!.vmName, toHostName: plan.moves[i]!.toHostName, error: (outcome.reason as Error).message }] : []));
    const after = await this.plan(plan.threshold).catch(() => undefined);
    return {
      planned: plan.moves.length,
      moved: plan.moves.length - failed.length,
      failed,
      imbalanceBefore: plan.imbalanceBefore,
      imbalanceAfter: after?.imbalanceBefore ?? plan.imbalanceAfter,
    };
  }

  /** Starts the automatic rebalance's timer (only when `auto` is set). */
  start(): void {
    if (!this.settings.auto || this.#timer) return;
    this.#timer = setInterval(() => void this.tick().catch((error: unknown) => this.o.logger.warn({ err: error }, 'automatic rebalance failed')), this.settings.intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /**
   * One look at the cluster: starts a rebalance when automatic rebalancing is on,
   * the imbalance is above the threshold, the cooldown has passed, nothing holds
   * it off and the plan moves something. Returns what it did, for logs and tests.
   */
  async tick(): Promise<{ started?: OperationRecord; skipped?: string }> {
    if (!this.settings.auto) return { skipped: 'automatic rebalancing is off' };
    if (this.#ticking) return { skipped: 'a check is already running' };
    this.#ticking = true;
    try {
      const since = this.#now() - this.#lastStarted;
      if (since < this.settings.cooldownMs) return { skipped: `cooldown: the last rebalance started ${Math.round(since / 1000)} s ago` };
      if (await this.o.runner.busyWith(rebalanceTarget)) return { skipped: 'a rebalance is running' };
      const held = await this.o.holdOff?.();
      if (held) return { skipped: held };
      const plan = await this.plan();
      if (plan.imbalanceBefore <= this.settings.threshold) return { skipped: `imbalance ${plan.imbalanceBefore} is at most the threshold ${this.settings.threshold}` };
      if (plan.moves.length === 0) return { skipped: `imbalance ${plan.imbalanceBefore} is above the threshold, but no move helps` };
      const started = (await this.rebalance({}, 'system:auto-rebalance')) as OperationRecord;
      this.o.logger.info({ operation: started.id, imbalance: plan.imbalanceBefore, moves: plan.moves.length }, 'automatic rebalance started');
      return { started };
    } finally {
      this.#ticking = false;
    }
  }
}

function round(value: number): number {
  return Math.round(value * 10_000) / 10_000;
}

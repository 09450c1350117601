import type { Logger } from 'pino';
import { errors } from '@drover/core';
import type { HostFacts } from '@drover/api';
import type { Store } from '../store/index.js';
import type { HostRecord, VmRecord } from '../store/types.js';
import type { AgentLink } from '../hosts/agent-link.js';
import type { HostService } from '../hosts/host.service.js';
import type { OperationContext, OperationRunner } from '../operations/operation-runner.js';
import type { ManagedVmSpec, VmService } from '../vms/vm.service.js';
import { awaitOperation, listVms, specOf } from './cluster-view.js';
import type { PowerService } from './power.service.js';

export interface HaServiceOptions {
  store: Store;
  runner: OperationRunner;
  link: AgentLink;
  vms: VmService;
  hosts: HostService;
  power: PowerService;
  logger: Logger;
  /** How long to wait after a host is lost before judging (other hosts vanishing in the same moment are seen then). Default 5 s. */
  graceMs?: number;
}

/** States in which an HA VM was running when its host was lost. */
const wasRunning = ['running', 'paused', 'starting', 'stopping', 'migrating', 'saving'];

/**
 * High availability: a VM marked HA (only with its disks on shared storage) is
 * restarted on another host when its host is lost — only after that host is
 * fenced (powered off through its driver, and the driver's status says off),
 * so the VM never runs twice. When more than half of the hosts that were up
 * vanish at once, the manager is more likely the one cut off: nothing is
 * fenced (no fencing storm).
 */
export class HaService {
  private readonly handling = new Set<string>();

  constructor(private readonly o: HaServiceOptions) {
    o.runner.register('host.ha-failover', {
      run: (ctx) => this.runFailover(ctx),
      // Fencing and restarting are both safe to repeat: the host is checked off again first.
      recover: (ctx) => this.runFailover(ctx),
    });
  }

  /** Marks a VM HA or not; HA needs every disk on a pool marked shared. */
  async setHa(ref: string, enabled: boolean): Promise<VmRecord> {
    const vm = await this.o.vms.find(ref);
    if (enabled) await this.checkSharedStorage(vm);
    const spec: ManagedVmSpec = { ...specOf(vm) };
    if (enabled) spec.ha = true;
    else delete spec.ha;
    const updated = await this.o.store.vms.update(vm.id, { spec: spec as unknown as Record<string, unknown> });
    await this.o.vms.publish(updated);
    return updated;
  }

  private async checkSharedStorage(vm: VmRecord): Promise<void> {
    const pools = new Set(['default', ...(specOf(vm).addedDisks ?? []).map((d) => d.pool)]);
    const hosts: HostRecord[] = vm.hostId ? [await this.o.store.hosts.get(vm.hostId)] : (await this.o.store.hosts.list({ limit: 1000, filter: { state: 'online' } })).items;
    if (hosts.length === 0) throw errors.conflict(`Cannot mark VM "${vm.name}" HA: no online host to check its storage on`);
    for (const host of hosts) {
      const facts = await this.o.link.call<HostFacts>(host, 'GET', '/v1/host', undefined, 10_000);
      for (const name of pools) {
        const pool = facts.pools.find((p) => p.name === name);
        if (!pool?.shared) {
          throw errors.conflict(`Cannot mark VM "${vm.name}" HA: its disks are on pool "${name}", which is not shared on host "${host.name}"; HA needs shared storage`, { reason: 'not-shared', pool: name, host: host.name });
        }
      }
    }
  }

  /** Called when an online host stops answering. */
  async onHostLost(host: HostRecord): Promise<void> {
    if (this.handling.has(host.id)) return;
    const victims = (await listVms(this.o.store, host.id)).filter((vm) => specOf(vm).ha && wasRunning.includes(vm.state));
    if (victims.length === 0) return;
    this.handling.add(host.id);
    try {
      // Hosts that vanish together (a switch, the manager's own link) are marked within a round or two of each other.
      await new Promise((r) => setTimeout(r, this.o.graceMs ?? 5_000));
      if ((await this.o.store.hosts.get(host.id)).state !== 'unreachable') return;
      const all = (await this.o.store.hosts.list({ limit: 1000 })).items;
      // Hosts that were meant to be up: not powered off or in maintenance on purpose.
      const expected = all.filter((h) => h.state === 'online' || h.state === 'unreachable');
      const lost = expected.filter((h) => h.state === 'unreachable');
      if (lost.length * 2 > expected.length) {
        this.o.logger.error({ host: host.name, lost: lost.map((h) => h.name), of: expected.length }, 'most hosts vanished at once: no fencing, no HA restart');
        await this.o.store.events.append({ type: 'ha.storm', objectKind: 'host', objectId: host.id, data: { host: host.name, lost: lost.map((h) => h.name), of: expected.length } });
        return;
      }
      await this.o.runner.submit({ kind: 'host.ha-failover', targetKind: 'host', targetId: host.id, params: { vms: victims.map((vm) => vm.id) }, actor: 'system:ha' }, `Host "${host.name}"`);
    } finally {
      this.handling.delete(host.id);
    }
  }

  private async runFailover(ctx: OperationContext): Promise<unknown> {
    const { store, power, vms, runner } = this.o;
    const host = await store.hosts.get(ctx.op.targetId);
    await ctx.phase('fence', 10, `powering "${host.name}" off through its driver`);
    if (host.state !== 'powered_off') {
      if (!(await power.can(host, 'off'))) throw errors.conflict(`Host "${host.name}" is lost but cannot be fenced: it has no power driver that can switch it off; its HA VMs are not restarted elsewhere`);
      // The status check inside `apply` is the proof: until the driver reads the host off, nothing restarts.
      await power.apply(host, 'off');
    }
    await ctx.phase('restart', 50);
    const restarted: string[] = [];
    const failed: Array<{ vm: string; error: string }> = [];
    for (const id of ctx.op.params.vms as string[]) {
      const vm = await store.vms.tryGet(id);
      if (!vm || vm.hostId !== host.id) continue;
      try {
        // The fenced host's copy is dead: the VM is stopped and unplaced; its disks on the shared pool stay.
        await vms.publish(await store.vms.update(vm.id, { state: 'stopped', hostId: null, lastError: `Host "${host.name}" was lost and fenced; restarted by HA` }));
        await awaitOperation(runner, await vms.action(vm.id, 'start', {}, 'system:ha'), `HA restart of VM "${vm.name}"`);
        restarted.push(vm.name);
      } catch (error) {
        failed.push({ vm: vm.name, error: (error as Error).message });
      }
    }
    const result = { host: host.name, fenced: true, restarted, failed };
    if (failed.length > 0) throw errors.unavailable(`HA restarted ${restarted.length} VM(s) of host "${host.name}" but not ${failed.map((f) => `"${f.vm}": ${f.error}`).join('; ')}`, result);
    return result;
  }
}

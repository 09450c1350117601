import type { Logger } from 'pino';
import { errors } from '@drover/core';
import type { HostPower, HostPowerSettings } from '@drover/api';
import type { Store } from '../store/index.js';
import type { HostPowerRecord } from '../store/repositories/power.js';
import type { HostRecord, OperationRecord } from '../store/types.js';
import type { HostService } from '../hosts/host.service.js';
import type { OperationContext, OperationRunner } from '../operations/operation-runner.js';
import { applyPower, createPowerDriver, type PowerOutcome } from './drivers.js';
import type { PowerAction, PowerConfig } from './power-driver.js';

export interface PowerServiceOptions {
  store: Store;
  runner: OperationRunner;
  hosts: HostService;
  logger: Logger;
  /** How long a driver's claim is checked against its status (default 30 s). */
  verifyMs?: number;
  /** How long a host powered on may take until its agent answers (default 10 minutes). */
  bootTimeoutMs?: number;
}

/** The settings as the API shows them: secrets replaced by whether they are set. */
function publicSettings(config: Record<string, unknown>): Record<string, unknown> {
  const { password, ...rest } = config;
  return password === undefined ? rest : { ...rest, passwordSet: true };
}

/**
 * Host power: each host's driver settings (IPMI, Wake-on-LAN, command) and
 * power actions as operations (`host.power`). Switching a host off or cycling
 * it is refused while it holds VMs: evacuate it first; nothing is stopped by
 * surprise. A host switched off is `powered_off` (no heartbeats); switched on,
 * it is `unreachable` until its agent answers, then `online`.
 */
export class PowerService {
  constructor(private readonly o: PowerServiceOptions) {
    o.runner.register('host.power', {
      run: (ctx) => this.runPower(ctx),
      recover: async (ctx) => {
        // Power actions are not resumed blindly: the host's real state decides.
        const host = await o.store.hosts.get(ctx.op.targetId);
        throw errors.unavailable(`Power action "${String(ctx.op.params.action)}" on host "${host.name}" was interrupted by a manager restart; check its status and try again`);
      },
    });
  }

  async publicPower(host: HostRecord, record: HostPowerRecord): Promise<HostPower> {
    const driver = createPowerDriver(record.config as unknown as PowerConfig, host);
    const open = record.poweredOffAt ? Date.now() - Date.parse(record.poweredOffAt) : 0;
    return {
      hostId: host.id,
      hostName: host.name,
      driver: driver.kind,
      settings: publicSettings(record.config),
      actions: [...driver.supports],
      poweredOffAt: record.poweredOffAt,
      hoursOff: (record.offMsTotal + open) / 3_600_000,
    };
  }

  /** The host's power settings; null when it has none. */
  async get(ref: string): Promise<HostPower | null> {
    const host = await this.o.store.hosts.find(ref);
    const record = await this.o.store.power.getHostPower(host.id);
    return record ? this.publicPower(host, record) : null;
  }

  /** Sets a host's power driver; checked first (a bad setting changes nothing). An IPMI password left out keeps the stored one. */
  async put(ref: string, settings: HostPowerSettings): Promise<HostPower> {
    const host = await this.o.store.hosts.find(ref);
    const existing = await this.o.store.power.getHostPower(host.id);
    const config = { ...settings } as Record<string, unknown>;
    if (config.driver === 'ipmi' && config.password === undefined) {
      if (existing?.config.driver !== 'ipmi' || existing.config.password === undefined) throw errors.invalid('IPMI needs a password', { field: 'password' });
      config.password = existing.config.password;
    }
    createPowerDriver(config as unknown as PowerConfig, host);
    const record = await this.o.store.power.putHostPower(host.id, config);
    return this.publicPower(host, record);
  }

  async remove(ref: string): Promise<void> {
    const host = await this.o.store.hosts.find(ref);
    if (host.state === 'powered_off') throw errors.conflict(`Host "${host.name}" is powered off by Drover; power it on before removing its power settings`);
    if (!(await this.o.store.power.deleteHostPower(host.id))) throw errors.notFound('power settings of host', host.name);
  }

  /** Whether the host has a driver that can do `action`. */
  async can(host: HostRecord, action: PowerAction): Promise<boolean> {
    const record = await this.o.store.power.getHostPower(host.id);
    if (!record) return false;
    return createPowerDriver(record.config as unknown as PowerConfig, host).supports.has(action);
  }

  /** Refuses (before anything happens) what would stop VMs by surprise or that the driver cannot do. */
  async check(host: HostRecord, action: PowerAction): Promise<void> {
    const record = await this.o.store.power.getHostPower(host.id);
    if (!record) throw errors.conflict(`Host "${host.name}" has no power settings; set them with PUT /api/v1/hosts/${host.name}/power`, { reason: 'no-power-settings' });
    const driver = createPowerDriver(record.config as unknown as PowerConfig, host);
    if (!driver.supports.has(action)) throw errors.invalid(`The ${driver.kind} power driver of host "${host.name}" cannot "${action}"`, { driver: driver.kind, action });
    if (action === 'off' || action === 'cycle') {
      const used = await this.o.hosts.allocated(host.id);
      if (used.vms > 0) throw errors.conflict(`Cannot power ${action === 'off' ? 'off' : 'cycle'} host "${host.name}": it runs ${used.vms} VM(s); evacuate it first`, { reason: 'vms-running', vms: used.vms });
      const reserved = await this.o.store.reservations.sumByHost(host.id);
      if (reserved.memoryMiB > 0 || reserved.cpus > 0) throw errors.conflict(`Cannot power ${action} host "${host.name}": a VM is being started or moved there`, { reason: 'reserved' });
    }
  }

  /** Submits a power action as the operation `host.power`. */
  async action(ref: string, action: PowerAction, actor: string, idempotencyKey?: string): Promise<OperationRecord> {
    const host = await this.o.store.hosts.find(ref);
    await this.check(host, action);
    return this.o.runner.submit({ kind: 'host.power', targetKind: 'host', targetId: host.id, params: { action }, actor, idempotencyKey: idempotencyKey ?? null }, `Host "${host.name}"`);
  }

  private async runPower(ctx: OperationContext): Promise<unknown> {
    const host = await this.o.store.hosts.get(ctx.op.targetId);
    const action = ctx.op.params.action as PowerAction;
    // Checked again: a VM may have been placed since the request.
    await this.check(host, action);
    await ctx.phase(action, 20, `${action} through the host's power driver`);
    const outcome = await this.apply(host, action);
    return { host: host.name, ...outcome };
  }

  /**
   * Does a power action now and records its effect on the host's state. Used
   * by `host.power` and by the power policy's operations.
   */
  async apply(host: HostRecord, action: PowerAction): Promise<PowerOutcome> {
    const record = await this.o.store.power.getHostPower(host.id);
    if (!record) throw errors.conflict(`Host "${host.name}" has no power settings`);
    const driver = createPowerDriver(record.config as unknown as PowerConfig, host);
    if (action === 'off' || action === 'cycle') {
      // Mark it first: the heartbeat must not call the dying host unreachable, and the scheduler must not pick it.
      if (action === 'off') await this.o.hosts.publish(await this.o.store.hosts.update(host.id, { state: 'powered_off' }));
    }
    let outcome: PowerOutcome;
    try {
      outcome = await applyPower(driver, action, { hostName: host.name, verifyMs: this.o.verifyMs ?? 30_000 });
    } catch (error) {
      if (action === 'off') {
        // It may or may not be off: let the heartbeat find out.
        await this.o.hosts.publish(await this.o.store.hosts.update(host.id, { state: 'unreachable' }));
      }
      throw error;
    }
    if (action === 'off') await this.o.store.power.markPower(host.id, true);
    if (action === 'on' || action === 'cycle') {
      await this.o.store.power.markPower(host.id, false);
      const current = await this.o.store.hosts.get(host.id);
      // Heartbeats skip powered-off hosts: `unreachable` lets them look again, and `online` follows when the agent answers.
      if (current.state === 'powered_off' || action === 'cycle') await this.o.hosts.publish(await this.o.store.hosts.update(host.id, { state: current.state === 'maintenance' ? 'maintenance' : 'unreachable' }));
    }
    return outcome;
  }

  /** Waits until the host's agent answers again (state online or maintenance). */
  async waitUp(hostId: string, timeoutMs = this.o.bootTimeoutMs ?? 600_000, signal?: AbortSignal): Promise<HostRecord> {
    for (const deadline = Date.now() + timeoutMs; ; ) {
      signal?.throwIfAborted();
      const host = await this.o.store.hosts.get(hostId);
      if (host.state === 'online' || host.state === 'maintenance') return host;
      if (Date.now() > deadline) throw errors.timeout(`Host "${host.name}" was powered on but its agent did not answer within ${timeoutMs} ms`, { hostId });
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

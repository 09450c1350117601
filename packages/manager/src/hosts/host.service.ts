import type { Logger } from 'pino';
import { errors } from '@drover/core';
import type { Host, HostFacts } from '@drover/api';
import { generateJoinToken, hashToken, type ClusterCa } from '../pki/index.js';
import type { Store } from '../store/index.js';
import type { HostRecord } from '../store/types.js';
import type { EventHub } from '../http/event-hub.js';
import type { AgentLink } from './agent-link.js';
import type { CrlPush } from './crl-push.js';

export interface HostServiceOptions {
  store: Store;
  ca: ClusterCa;
  link: AgentLink;
  /** Keeps agents' CRLs current (refreshed each round, pushed in the background). */
  crl?: CrlPush;
  hub: EventHub;
  logger: Logger;
  /** How often agents are asked for their facts. */
  heartbeatMs: number;
  /** Missed heartbeats before a host is marked unreachable. */
  missesBeforeUnreachable: number;
  /** Called after each successful heartbeat (the VM service reconciles states there). */
  onHeartbeat?: (host: HostRecord) => Promise<void>;
  /** Called when a host that was lost or joining answers again (after `onHeartbeat`). */
  onHostBack?: (host: HostRecord) => Promise<void>;
  /** Called (in the background) when an online host stops answering: HA fences it and restarts its VMs elsewhere. */
  onHostLost?: (host: HostRecord) => Promise<void>;
}

/**
 * Hosts: joining with a one-time token (the manager's CA signs the agent's
 * CSR; from then on only mutual TLS), heartbeats that keep capacity and state
 * current, removal, certificate rotation and revocation.
 */
export class HostService {
  private timer: NodeJS.Timeout | undefined;
  private readonly misses = new Map<string, number>();
  private beating = false;

  constructor(private readonly o: HostServiceOptions) {}

  async publish(host: HostRecord): Promise<void> {
    const data = publicHost(host, await this.allocated(host.id)) as unknown as Record<string, unknown>;
    const event = await this.o.store.events.append({ type: 'host.updated', objectKind: 'host', objectId: host.id, data });
    this.o.hub.publish({ ...event, data });
  }

  async allocated(hostId: string): Promise<{ cpus: number; memoryMiB: number; vms: number }> {
    let cpus = 0;
    let memoryMiB = 0;
    let vms = 0;
    let after: string | undefined;
    do {
      const page = await this.o.store.vms.list({ limit: 1000, ...(after ? { after } : {}), filter: { hostId, state: ['running', 'paused', 'starting', 'stopping', 'saving', 'migrating'] } });
      for (const vm of page.items) {
        cpus += Number(vm.spec.cpus ?? 0);
        memoryMiB += Number(vm.spec.memoryMiB ?? 0);
        vms += 1;
      }
      after = page.next;
    } while (after);
    return { cpus, memoryMiB, vms };
  }

  async createJoinToken(ttlSeconds = 3600): Promise<{ token: string; expiresAt: string; caFingerprint: string }> {
    const { token, hash } = generateJoinToken();
    const expiresAt = new Date(Date.now() + ttlSeconds * 1000).toISOString();
    await this.o.store.joinTokens.create({ tokenHash: hash, expiresAt });
    return { token, expiresAt, caFingerprint: this.o.ca.caFingerprint() };
  }

  /**
   * An agent joins: the token is consumed (single use, unexpired), the CSR is
   * signed for the host's name and addresses, the host is recorded, and its
   * facts are read over the new mutual-TLS channel before it counts as online.
   */
  async join(request: { token: string; csr: string; name: string; address: string; sanIps?: string[]; sanDns?: string[] }): Promise<{ hostId: string; certPem: string; caPem: string; crlPem: string }> {
    const existing = await this.o.store.hosts.getByName(request.name).catch(() => undefined);
    if (existing) throw errors.conflict(`A host named "${request.name}" is already a member; remove it first`);
    await this.o.store.joinTokens.consume(hashToken(request.token), new Date());
    const url = new URL(request.address);
    const issued = await this.o.ca.issueServerAndClientCert({
      csrPem: request.csr,
      commonName: request.name,
      sanIps: request.sanIps ?? (/^[0-9.]+$/.test(url.hostname) ? [url.hostname] : []),
      sanDns: request.sanDns ?? (/^[0-9.]+$/.test(url.hostname) ? [] : [url.hostname]),
    });
    const host = await this.o.store.hosts.create({
      name: request.name,
      address: url.origin,
      state: 'joining',
      certSerial: issued.serial,
      certFingerprint: issued.fingerprint,
      certExpiresAt: issued.notAfter,
      capacity: { cpus: 0, memoryMiB: 0 },
    });
    await this.publish(host);
    // The agent starts serving right after it saved its certificate: greet it soon, not at the next round.
    for (const delay of [300, 1_000, 2_500]) {
      setTimeout(() => void this.heartbeat().catch(() => undefined), delay).unref();
    }
    return { hostId: host.id, certPem: issued.certPem, caPem: await this.o.ca.caCertPem(), crlPem: await this.o.ca.crlPem() };
  }

  /** One round of heartbeats; also what `start` repeats on a timer. */
  async heartbeat(): Promise<void> {
    if (this.beating) return;
    this.beating = true;
    try {
      // The CA re-signs a CRL that is getting stale; a new one is pushed in the background.
      void this.o.crl?.refresh();
      // Reservations of starts whose manager died are released after their TTL.
      await this.o.store.reservations.deleteExpired(new Date());
      let after: string | undefined;
      do {
        const page = await this.o.store.hosts.list({ limit: 1000, ...(after ? { after } : {}) });
        await Promise.all(page.items.map((host) => this.beat(host)));
        after = page.next;
      } while (after);
    } finally {
      this.beating = false;
    }
  }

  private async beat(host: HostRecord): Promise<void> {
    if (host.state === 'powered_off') return;
    let facts: HostFacts;
    try {
      facts = await this.o.link.facts(host);
    } catch (error) {
      this.o.crl?.lost(host.id);
      const misses = (this.misses.get(host.id) ?? 0) + 1;
      this.misses.set(host.id, misses);
      // Read again: a power-off may have marked the host while its facts were asked for.
      if (misses >= this.o.missesBeforeUnreachable && host.state === 'online' && (await this.o.store.hosts.get(host.id)).state === 'online') {
        this.o.logger.warn({ host: host.name, err: error }, 'host unreachable');
        const lost = await this.o.store.hosts.update(host.id, { state: 'unreachable' });
        await this.publish(lost);
        if (this.o.onHostLost) void this.o.onHostLost(lost).catch((cause: unknown) => this.o.logger.error({ host: host.name, err: cause }, 'handling a lost host failed'));
      }
      return;
    }
    this.misses.delete(host.id);
    // A power-off may have marked the host while its facts were asked for: that state stands.
    if ((await this.o.store.hosts.get(host.id)).state === 'powered_off') return;
    const next = host.state === 'joining' || host.state === 'unreachable' ? 'online' : host.state;
    const changed =
      next !== host.state ||
      facts.capacity.cpus !== host.capacity.cpus ||
      facts.capacity.memoryMiB !== host.capacity.memoryMiB ||
      facts.cpuModels.join(',') !== host.cpuModels.join(',');
    const updated = await this.o.store.hosts.update(host.id, {
      // Written only when it changes: a state set meanwhile (maintenance, powered off) must not be overwritten by this round's older read.
      ...(next !== host.state ? { state: next } : {}),
      capacity: facts.capacity,
      cpuModels: facts.cpuModels,
      lastHeartbeatAt: new Date().toISOString(),
    });
    if (changed) await this.publish(updated);
    // A host that missed a CRL (unreachable, failed push, manager restart) gets it now, in the background.
    this.o.crl?.seen(updated);
    await this.o.onHeartbeat?.(updated);
    if (next !== host.state && next === 'online') await this.o.onHostBack?.(updated);
  }

  start(): void {
    const tick = () => {
      void this.heartbeat()
        .catch((error: unknown) => this.o.logger.error({ err: error }, 'heartbeat round failed'))
        .finally(() => {
          if (this.timer !== undefined) this.timer = setTimeout(tick, this.o.heartbeatMs);
        });
    };
    this.timer = setTimeout(tick, 0);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /**
   * Certificate rotation: the agent makes a new key and CSR, the CA signs it,
   * the agent installs it, and only then is the old serial revoked (revoking
   * first would cut the very connection that delivers the new certificate).
   */
  async rotateCertificate(host: HostRecord, phase: (name: string, progress: number) => Promise<void>): Promise<{ serial: string; revoked: string }> {
    const csr = await this.o.link.call<{ csrPem: string; commonName: string; sanIps: string[]; sanDns: string[]; serial: string }>(host, 'POST', '/v1/identity/csr', {});
    await phase('sign', 30);
    const issued = await this.o.ca.issueServerAndClientCert({ csrPem: csr.csrPem, commonName: host.name, sanIps: csr.sanIps, sanDns: csr.sanDns });
    await phase('install', 60);
    await this.o.link.call(host, 'POST', '/v1/identity/certificate', { certPem: issued.certPem, crlPem: await this.o.ca.crlPem() });
    const updated = await this.o.store.hosts.update(host.id, { certSerial: issued.serial, certFingerprint: issued.fingerprint, certExpiresAt: issued.notAfter });
    await phase('revoke', 85);
    await this.o.ca.revoke(host.certSerial, 'superseded');
    // Pooled connections still speak with the old certificate's session: start afresh.
    this.o.link.forget(host.id);
    // The CRL the agent installed above predates this revocation: push the new one to every host.
    await this.o.crl?.revoked();
    await this.publish(updated);
    return { serial: issued.serial, revoked: host.certSerial };
  }

  /** Removes a host that runs no VM: its certificate is revoked and it is forgotten. */
  async remove(host: HostRecord): Promise<void> {
    const used = await this.allocated(host.id);
    if (used.vms > 0) throw errors.conflict(`Host "${host.name}" still runs ${used.vms} VM(s); stop or move them first`);
    const placed = await this.o.store.vms.list({ limit: 1, filter: { hostId: host.id } });
    if (placed.items.length > 0) throw errors.conflict(`Host "${host.name}" still holds VM "${placed.items[0]!.name}"; delete or move it first`);
    await this.o.ca.revoke(host.certSerial, 'cessationOfOperation');
    this.o.link.forget(host.id);
    this.o.crl?.forget(host.id);
    await this.o.crl?.revoked();
    await this.o.store.hosts.delete(host.id);
    const event = await this.o.store.events.append({ type: 'host.removed', objectKind: 'host', objectId: host.id, data: { id: host.id, name: host.name } });
    this.o.hub.publish(event);
  }
}

export function publicHost(host: HostRecord, allocated: { cpus: number; memoryMiB: number; vms: number }): Host {
  return {
    id: host.id,
    name: host.name,
    address: host.address,
    state: host.state,
    capacity: host.capacity,
    allocated,
    cpuModels: host.cpuModels,
    labels: host.labels,
    certExpiresAt: host.certExpiresAt,
    lastHeartbeatAt: host.lastHeartbeatAt,
    rev: host.rev,
    createdAt: host.createdAt,
  };
}

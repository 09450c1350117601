import type https from 'node:https';
import { DroverError, errors, isErrorCode } from '@drover/core';
import type { HostFacts, VmInfo, VmSpec } from '@drover/api';
import { agentDispatcherOptions, mtlsJson, type AgentClientCredentials } from '../pki/index.js';
import type { HostRecord } from '../store/types.js';

/**
 * The manager's only way to an agent: JSON over mutual TLS, with the cluster
 * CA as the sole trust anchor and the host's certificate CN pinned. An agent's
 * error answer is turned back into the same DroverError (code and message), so
 * "VM is already running" on the agent reads the same in the manager's API.
 */
export class AgentLink {
  private readonly dispatchers = new Map<string, https.Agent>();

  constructor(
    private readonly credentials: () => AgentClientCredentials,
    private readonly isRevoked: (serial: string) => boolean,
    private readonly timeoutMs: number,
  ) {}

  private dispatcher(host: Pick<HostRecord, 'id' | 'name'>): https.Agent {
    let agent = this.dispatchers.get(host.id);
    if (!agent) {
      agent = agentDispatcherOptions(this.credentials(), { expectedCommonName: host.name, isRevoked: this.isRevoked });
      this.dispatchers.set(host.id, agent);
    }
    return agent;
  }

  /** Forgets pooled connections of a host (after removal or a certificate change). */
  forget(hostId: string): void {
    this.dispatchers.get(hostId)?.destroy();
    this.dispatchers.delete(hostId);
  }

  close(): void {
    for (const agent of this.dispatchers.values()) agent.destroy();
    this.dispatchers.clear();
  }

  async call<T>(host: Pick<HostRecord, 'id' | 'name' | 'address'>, method: string, path: string, body?: unknown, timeoutMs = this.timeoutMs): Promise<T> {
    const answer = await mtlsJson<unknown>(this.dispatcher(host), `${host.address}${path}`, method, body ?? (method === 'POST' ? {} : undefined), timeoutMs);
    if (answer.status >= 200 && answer.status < 300) return answer.body as T;
    const error = (answer.body as { error?: { code?: string; message?: string; details?: Record<string, unknown> } } | undefined)?.error;
    const code = isErrorCode(error?.code) ? error.code : 'unavailable';
    throw new DroverError(code, error?.message ?? `Host "${host.name}" answered ${answer.status} to ${method} ${path}`, {
      details: { ...(error?.details ?? {}), host: host.name, status: answer.status },
    });
  }

  facts(host: HostRecord): Promise<HostFacts> {
    return this.call<HostFacts>(host, 'GET', '/v1/host', undefined, 10_000);
  }

  vms(host: HostRecord): Promise<VmInfo[]> {
    return this.call<VmInfo[]>(host, 'GET', '/v1/vms', undefined, 10_000);
  }

  async vm(host: HostRecord, id: string): Promise<VmInfo | undefined> {
    try {
      return await this.call<VmInfo>(host, 'GET', `/v1/vms/${id}`);
    } catch (error) {
      if (error instanceof DroverError && error.code === 'not_found') return undefined;
      throw error;
    }
  }

  defineVm(host: HostRecord, spec: VmSpec): Promise<VmInfo> {
    return this.call<VmInfo>(host, 'POST', '/v1/vms', spec);
  }

  action(host: HostRecord, id: string, action: string, body: unknown = {}, timeoutMs?: number): Promise<VmInfo> {
    return this.call<VmInfo>(host, 'POST', `/v1/vms/${id}/${action}`, body, timeoutMs);
  }

  async volumeNames(host: HostRecord, pool: string): Promise<Set<string>> {
    const volumes = await this.call<Array<{ name: string }>>(host, 'GET', `/v1/pools/${pool}/volumes`);
    return new Set(volumes.map((v) => v.name));
  }

  createVolume(host: HostRecord, pool: string, body: Record<string, unknown>): Promise<unknown> {
    return this.call(host, 'POST', `/v1/pools/${pool}/volumes`, body, 300_000);
  }

  async deleteVolume(host: HostRecord, pool: string, volume: string): Promise<void> {
    try {
      await this.call(host, 'DELETE', `/v1/pools/${pool}/volumes/${volume}`);
    } catch (error) {
      if (!(error instanceof DroverError && error.code === 'not_found')) throw error;
    }
  }

  async deleteVm(host: HostRecord, id: string): Promise<void> {
    try {
      await this.call(host, 'DELETE', `/v1/vms/${id}`);
    } catch (error) {
      if (!(error instanceof DroverError && error.code === 'not_found')) throw error;
    }
  }

  /** Raw text (the serial log): the one non-JSON answer. */
  async serialLog(host: HostRecord, id: string, offset: number): Promise<{ text: string; next: number }> {
    const answer = await mtlsJson<unknown>(this.dispatcher(host), `${host.address}/v1/vms/${id}/console/serial/log?offset=${offset}`, 'GET', undefined, 10_000, {
      headers: { accept: 'text/plain' },
    });
    if (answer.status !== 200) throw errors.unavailable(`Host "${host.name}" answered ${answer.status} for the serial log`);
    const text = typeof answer.body === 'string' ? answer.body : JSON.stringify(answer.body ?? '');
    return { text, next: offset + Buffer.byteLength(text) };
  }
}

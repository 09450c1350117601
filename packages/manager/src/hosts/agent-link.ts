import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import WebSocket from 'ws';
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

  /**
   * One raw request to an agent over the same mutual TLS connection pool, for
   * bodies too large to hold in memory: `body` (if any) is piped to the agent as
   * it arrives, and the answer is returned as a stream once its headers are in.
   * A non-2xx answer is read (bounded) and thrown as the agent's DroverError,
   * like `call`. The request fails when no byte moves for `idleTimeoutMs`.
   */
  async stream(
    host: Pick<HostRecord, 'id' | 'name' | 'address'>,
    method: string,
    path: string,
    options: { body?: Readable; headers?: Record<string, string>; idleTimeoutMs?: number } = {},
  ): Promise<IncomingMessage> {
    const target = new URL(`${host.address}${path}`);
    if (target.protocol !== 'https:') throw errors.invalid(`agent URL must be https, got ${target.href}`);
    const idle = options.idleTimeoutMs ?? 120_000;
    const request = https.request(target, { agent: this.dispatcher(host), method, headers: { accept: 'application/json, application/octet-stream', ...options.headers } });
    request.setTimeout(idle, () => request.destroy(errors.timeout(`${method} ${target.href}: no data for ${idle} ms`, { url: target.href, timeoutMs: idle })));
    const answered = new Promise<IncomingMessage>((resolve, reject) => {
      request.once('response', resolve);
      request.on('error', (error: NodeJS.ErrnoException) =>
        reject(error instanceof DroverError ? error : errors.unavailable(`${method} ${target.href} failed: ${error.message}`, { url: target.href, code: error.code }, error)),
      );
    });
    if (options.body) {
      // The agent may answer (an error) before it has read everything: then the rest is dropped.
      pipeline(options.body, request).catch((error: Error) => request.destroy(error));
    } else {
      request.end();
    }
    const response = await answered;
    const status = response.statusCode ?? 0;
    if (status >= 200 && status < 300) return response;
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of response as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > 64 * 1024) break;
      chunks.push(chunk);
    }
    response.destroy();
    if (options.body && !options.body.readableEnded) options.body.destroy();
    let body: unknown;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      body = undefined;
    }
    throw this.agentError(host, method, path, status, body);
  }

  /**
   * A WebSocket to an agent's stream (a console) over mutual TLS with the same
   * pinned identity as every other call: the TLS settings come from the host's
   * connection pool.
   */
  webSocket(host: Pick<HostRecord, 'id' | 'name' | 'address'>, path: string): WebSocket {
    const target = new URL(`${host.address}${path}`);
    if (target.protocol !== 'https:') throw errors.invalid(`agent URL must be https, got ${target.href}`);
    target.protocol = 'wss:';
    return new WebSocket(target, { agent: this.dispatcher(host), handshakeTimeout: 10_000, maxPayload: 16 * 1024 * 1024 });
  }

  private agentError(host: Pick<HostRecord, 'name'>, method: string, path: string, status: number, body: unknown): DroverError {
    const error = (body as { error?: { code?: string; message?: string; details?: Record<string, unknown> } } | undefined)?.error;
    const code = isErrorCode(error?.code) ? error.code : 'unavailable';
    return new DroverError(code, error?.message ?? `Host "${host.name}" answered ${status} to ${method} ${path}`, {
      details: { ...(error?.details ?? {}), host: host.name, status },
    });
  }

  async call<T>(host: Pick<HostRecord, 'id' | 'name' | 'address'>, method: string, path: string, body?: unknown, timeoutMs = this.timeoutMs): Promise<T> {
    const answer = await mtlsJson<unknown>(this.dispatcher(host), `${host.address}${path}`, method, body ?? (method === 'POST' ? {} : undefined), timeoutMs);
    if (answer.status >= 200 && answer.status < 300) return answer.body as T;
    throw this.agentError(host, method, path, answer.status, answer.body);
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

  /** The last `bytes` bytes of a VM's serial log (for the guest-measured downtime of a migration). */
  async serialTail(host: HostRecord, id: string, bytes: number): Promise<string> {
    const answer = await mtlsJson<unknown>(this.dispatcher(host), `${host.address}/v1/vms/${id}/console/serial/log?tail=${bytes}`, 'GET', undefined, 10_000, {
      headers: { accept: 'text/plain' },
    });
    if (answer.status !== 200) throw errors.unavailable(`Host "${host.name}" answered ${answer.status} for the serial log`);
    return typeof answer.body === 'string' ? answer.body : '';
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

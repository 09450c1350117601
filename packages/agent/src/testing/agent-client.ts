import { errors } from '@drover/core';
import type { VmInfo, VmSpec, VolumeInfo } from '@drover/api';

export interface ApiAnswer<T = unknown> {
  status: number;
  body: T;
}

/**
 * A small typed client of the agent API. Used by tests, benchmarks and (until
 * the manager exists) `drover up`; the manager will have its own mTLS client.
 */
export class AgentClient {
  constructor(
    readonly url: string,
    readonly token: string,
  ) {}

  async request<T = unknown>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<ApiAnswer<T>> {
    const response = await fetch(`${this.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...headers,
      },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
      signal: AbortSignal.timeout(600_000),
    });
    const text = await response.text();
    let parsed: unknown = text;
    if ((response.headers.get('content-type') ?? '').includes('json') && text) parsed = JSON.parse(text);
    return { status: response.status, body: parsed as T };
  }

  /** Like `request` but throws on any non-2xx answer, with the server's message. */
  async ok<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    const answer = await this.request<T>(method, path, body);
    if (answer.status >= 300) {
      const message = (answer.body as { error?: { message?: string } })?.error?.message ?? JSON.stringify(answer.body);
      throw errors.unavailable(`${method} ${path} answered ${answer.status}: ${message}`, { status: answer.status, body: answer.body });
    }
    return answer.body;
  }

  defineVm(spec: VmSpec): Promise<VmInfo> {
    return this.ok<VmInfo>('POST', '/v1/vms', spec);
  }

  vm(ref: string): Promise<VmInfo> {
    return this.ok<VmInfo>('GET', `/v1/vms/${encodeURIComponent(ref)}`);
  }

  vms(): Promise<VmInfo[]> {
    return this.ok<VmInfo[]>('GET', '/v1/vms');
  }

  action(ref: string, action: string, body: unknown = {}): Promise<VmInfo> {
    return this.ok<VmInfo>('POST', `/v1/vms/${encodeURIComponent(ref)}/${action}`, body);
  }

  createVolume(pool: string, body: Record<string, unknown>): Promise<VolumeInfo> {
    return this.ok<VolumeInfo>('POST', `/v1/pools/${pool}/volumes`, body);
  }

  /** The serial log from `offset`, and the offset to read on from. */
  async serialLog(ref: string, offset = 0): Promise<{ text: string; next: number }> {
    const answer = await fetch(`${this.url}/v1/vms/${encodeURIComponent(ref)}/console/serial/log?offset=${offset}`, {
      headers: { authorization: `Bearer ${this.token}` },
    });
    const text = await answer.text();
    if (answer.status !== 200) throw errors.unavailable(`Serial log of "${ref}" answered ${answer.status}: ${text}`);
    return { text, next: Number(answer.headers.get('x-log-size') ?? offset + Buffer.byteLength(text)) };
  }

  /** Polls the serial log until `pattern` appears after `offset`; returns the match and the text read. */
  async waitForSerial(ref: string, pattern: RegExp, options: { offset?: number; timeoutMs?: number } = {}): Promise<{ match: RegExpMatchArray; text: string; next: number }> {
    const deadline = Date.now() + (options.timeoutMs ?? 90_000);
    let text = '';
    let offset = options.offset ?? 0;
    for (;;) {
      const chunk = await this.serialLog(ref, offset);
      text += chunk.text;
      offset = chunk.next;
      const match = text.match(pattern);
      if (match) return { match, text, next: offset };
      if (Date.now() > deadline) {
        throw errors.timeout(`Serial console of "${ref}" did not show ${pattern} in time; last output: ${JSON.stringify(text.slice(-600))}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

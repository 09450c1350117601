import https from 'node:https';
import { checkServerIdentity as defaultCheckServerIdentity, type PeerCertificate } from 'node:tls';
import { DroverError, errors } from '@drover/core';
import { normalizeSerial } from './cert-fields.js';

export interface AgentClientCredentials {
  /** The cluster CA: the only trust anchor (the system store is not used). */
  caPem: string;
  /** The manager's client certificate (CN "drover-manager", clientAuth). */
  certPem: string;
  keyPem: string;
}

export interface AgentDispatcherExtras {
  /**
   * When set, the agent's certificate must carry this CN besides matching the URL's
   * IP/DNS name. Pinning is per https.Agent (Node lets agent options override
   * per-request ones), so pin with one Agent per host.
   */
  expectedCommonName?: string;
  /** The manager is the CA: it can refuse a revoked agent certificate itself. */
  isRevoked?: (serial: string) => boolean;
  /** Keep connections open between calls (default true). */
  keepAlive?: boolean;
}

/**
 * An https.Agent for manager → agent calls: presents the manager's client
 * certificate, trusts only the cluster CA, requires TLS 1.3, and checks the agent's
 * certificate against the host in the URL (an IP URL is matched against IP SANs;
 * Node sends no SNI for IP addresses).
 */
export function agentDispatcherOptions(credentials: AgentClientCredentials, extras: AgentDispatcherExtras = {}): https.Agent {
  const { expectedCommonName, isRevoked } = extras;
  return new https.Agent({
    ca: credentials.caPem,
    cert: credentials.certPem,
    key: credentials.keyPem,
    minVersion: 'TLSv1.3',
    rejectUnauthorized: true,
    keepAlive: extras.keepAlive ?? true,
    checkServerIdentity: (host: string, certificate: PeerCertificate): Error | undefined => {
      const mismatch = defaultCheckServerIdentity(host, certificate);
      if (mismatch) return mismatch;
      if (expectedCommonName !== undefined && certificate.subject?.CN !== expectedCommonName) {
        return errors.forbidden(`agent at ${host} presented "${String(certificate.subject?.CN)}", expected "${expectedCommonName}"`, {
          host,
          commonName: certificate.subject?.CN,
        });
      }
      if (isRevoked?.(normalizeSerial(certificate.serialNumber))) {
        return errors.forbidden(`agent at ${host} presented revoked certificate ${certificate.serialNumber}`, {
          host,
          serial: certificate.serialNumber,
        });
      }
      return undefined;
    },
  });
}

export interface MtlsAnswer<T = unknown> {
  status: number;
  body: T;
}

export interface MtlsJsonOptions {
  headers?: Record<string, string>;
  /** Answers larger than this are cut off with `too_large` (default 8 MiB). */
  maxResponseBytes?: number;
}

/**
 * One JSON call to an agent over mutual TLS. Resolves with any HTTP status (the
 * caller maps agent errors); rejects with `timeout` past `timeoutMs` (whole call),
 * `unavailable` when the agent cannot be reached or fails TLS verification (details
 * carry Node's error code), `forbidden` for a CN or revocation mismatch.
 */
export function mtlsJson<T = unknown>(
  agent: https.Agent,
  url: string | URL,
  method: string,
  body?: unknown,
  timeoutMs = 30_000,
  options: MtlsJsonOptions = {},
): Promise<MtlsAnswer<T>> {
  const target = new URL(url);
  if (target.protocol !== 'https:') return Promise.reject(errors.invalid(`agent URL must be https, got ${target.href}`));
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const limit = options.maxResponseBytes ?? 8 * 1024 * 1024;
  return new Promise<MtlsAnswer<T>>((resolve, reject) => {
    let settled = false;
    const finish = (error: Error | undefined, answer?: MtlsAnswer<T>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (error) reject(error);
      else resolve(answer as MtlsAnswer<T>);
    };
    const request = https.request(target, {
      agent,
      method,
      headers: {
        accept: 'application/json',
        ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
        ...options.headers,
      },
    });
    const timer = setTimeout(() => {
      const error = errors.timeout(`${method} ${target.href} did not answer within ${timeoutMs} ms`, { url: target.href, timeoutMs });
      finish(error);
      request.destroy(error);
    }, timeoutMs);
    request.on('error', (error: NodeJS.ErrnoException) => {
      if (error instanceof DroverError) {
        finish(error);
        return;
      }
      finish(
        errors.unavailable(`${method} ${target.href} failed: ${error.message}`, { url: target.href, code: error.code }, error),
      );
    });
    request.on('response', (response) => {
      const chunks: Buffer[] = [];
      let size = 0;
      response.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > limit) {
          const error = errors.tooLarge(`${method} ${target.href} answered more than ${limit} bytes`, { url: target.href, limit });
          finish(error);
          response.destroy();
          request.destroy();
          return;
        }
        chunks.push(chunk);
      });
      response.on('error', (error) => finish(errors.unavailable(`${method} ${target.href}: ${error.message}`, { url: target.href }, error)));
      response.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = text;
        if (text.length > 0 && (response.headers['content-type'] ?? '').includes('json')) {
          try {
            parsed = JSON.parse(text);
          } catch {
            finish(errors.unavailable(`${method} ${target.href} answered invalid JSON`, { url: target.href, status: response.statusCode }));
            return;
          }
        }
        finish(undefined, { status: response.statusCode ?? 0, body: parsed as T });
      });
    });
    request.end(payload);
  });
}

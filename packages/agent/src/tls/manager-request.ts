import http from 'node:http';
import https from 'node:https';
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { connect as tlsConnect, type DetailedPeerCertificate } from 'node:tls';
import { DroverError, errors } from '@drover/core';

export interface ManagerAnswer {
  status: number;
  body: unknown;
}

export interface ManagerRequestOptions {
  timeoutMs: number;
  /**
   * SHA-256 fingerprint of a certificate in the manager's TLS chain (normally the
   * cluster CA, or the manager's self-signed certificate). Required for https.
   */
  caFingerprint?: string;
  maxResponseBytes?: number;
}

/** Loopback names: the only hosts the agent will talk plain HTTP to. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '');
  if (host === 'localhost' || host === '::1') return true;
  return isIP(host) === 4 && host.startsWith('127.');
}

/**
 * POSTs JSON to the manager before the agent has any credentials. Over https the
 * manager is trusted only through the pinned fingerprint: a first connection reads
 * the presented chain and picks the certificate with that fingerprint (sending
 * nothing), a second one uses exactly that certificate as its only trust anchor with
 * the usual chain and host name checks, and only then is the token sent. Finding
 * the pinned CA in a chain proves nothing by itself (a CA certificate is public),
 * hence the second, verified connection.
 */
export async function postJsonToManager(url: URL, body: unknown, options: ManagerRequestOptions): Promise<ManagerAnswer> {
  const deadline = Date.now() + options.timeoutMs;
  if (url.protocol === 'http:') {
    if (!isLoopbackHost(url.hostname)) {
      throw errors.invalid(`plain http is allowed only to a loopback manager; use https with a CA fingerprint for ${url.host}`);
    }
    return send(http.request, url, body, {}, deadline, options.maxResponseBytes);
  }
  if (url.protocol !== 'https:') throw errors.invalid(`manager URL must be http(s), got ${url.protocol}`);
  if (!options.caFingerprint) throw errors.invalid('joining over https needs the cluster CA fingerprint (caFingerprint) to trust the manager');
  const anchorPem = await pinnedCertificate(url, options.caFingerprint, deadline);
  return send(https.request, url, body, { ca: anchorPem, rejectUnauthorized: true, agent: false }, deadline, options.maxResponseBytes);
}

function remaining(deadline: number, url: URL): number {
  const left = deadline - Date.now();
  if (left <= 0) throw errors.timeout(`manager at ${url.host} did not answer in time`, { url: url.href });
  return left;
}

function pinnedCertificate(url: URL, pin: string, deadline: number): Promise<string> {
  const wanted = canonicalFingerprint(pin);
  if (wanted.length !== 64 || !/^[0-9a-f]+$/.test(wanted)) {
    return Promise.reject(errors.invalid(`caFingerprint "${pin}" is not a SHA-256 fingerprint (64 hex digits)`));
  }
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const timeoutMs = remaining(deadline, url);
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host,
      port: Number(url.port || 443),
      ...(isIP(host) === 0 ? { servername: host } : {}),
      // Only reading the chain here; trust is decided below and by the second connection.
      rejectUnauthorized: false,
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(errors.timeout(`TLS handshake with manager ${url.host} took longer than ${timeoutMs} ms`, { url: url.href }));
    }, timeoutMs);
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(errors.unavailable(`cannot reach manager at ${url.host}: ${error.message}`, { url: url.href, code: error.code }, error));
    });
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const seen: string[] = [];
      let certificate: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
      let found: string | undefined;
      while (certificate && certificate.raw && !found) {
        const fingerprint = canonicalFingerprint(certificate.fingerprint256);
        if (seen.includes(fingerprint)) break;
        seen.push(fingerprint);
        if (fingerprint === wanted) found = new X509Certificate(certificate.raw).toString();
        certificate = certificate.issuerCertificate;
      }
      socket.destroy();
      if (found) resolve(found);
      else reject(errors.unauthenticated(`manager at ${url.host} presented no certificate with the pinned fingerprint ${pin}`));
    });
  });
}

function canonicalFingerprint(value: string): string {
  return value.replace(/[:\s]/g, '').toLowerCase();
}

type RequestFunction = typeof http.request;

function send(request: RequestFunction, url: URL, body: unknown, tlsOptions: https.RequestOptions, deadline: number, maxResponseBytes = 1024 * 1024): Promise<ManagerAnswer> {
  const payload = Buffer.from(JSON.stringify(body));
  const timeoutMs = remaining(deadline, url);
  return new Promise((resolve, reject) => {
    let settled = false;
    const finish = (error: Error | undefined, answer?: ManagerAnswer) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (error) reject(error);
      else resolve(answer as ManagerAnswer);
    };
    const outgoing = request(url, {
      method: 'POST',
      ...tlsOptions,
      headers: { 'content-type': 'application/json', 'content-length': String(payload.length), accept: 'application/json' },
    });
    const timer = setTimeout(() => {
      const error = errors.timeout(`POST ${url.href} did not answer within ${timeoutMs} ms`, { url: url.href });
      finish(error);
      outgoing.destroy(error);
    }, timeoutMs);
    outgoing.on('error', (error: NodeJS.ErrnoException) => {
      if (error instanceof DroverError) finish(error);
      else finish(errors.unavailable(`POST ${url.href} failed: ${error.message}`, { url: url.href, code: error.code }, error));
    });
    outgoing.on('response', (response) => {
      const chunks: Buffer[] = [];
      let size = 0;
      response.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > maxResponseBytes) {
          finish(errors.tooLarge(`manager answer exceeds ${maxResponseBytes} bytes`, { url: url.href }));
          outgoing.destroy();
          return;
        }
        chunks.push(chunk);
      });
      response.on('error', (error) => finish(errors.unavailable(`POST ${url.href}: ${error.message}`, { url: url.href }, error)));
      response.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = text;
        try {
          if (text.length > 0) parsed = JSON.parse(text);
        } catch {
          // not JSON: keep the text, the caller reports it
        }
        finish(undefined, { status: response.statusCode ?? 0, body: parsed });
      });
    });
    outgoing.end(payload);
  });
}

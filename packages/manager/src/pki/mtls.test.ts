// Manager and agent halves together over real TLS on 127.0.0.1. The agent half is
// imported by path because @drover/agent does not export its tls module yet.
import http from 'node:http';
import https from 'node:https';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DroverError, httpStatusOf } from '@drover/core';
import {
  agentTlsOptions,
  applyAgentTlsContext,
  createAgentIdentity,
  joinCluster,
  loadAgentIdentity,
  loadJoinRecord,
  requireManagerCertificate,
  rotateAgentCertificate,
  saveAgentCertificate,
  saveAgentCrl,
  trackAgentConnections,
  type AgentIdentity,
} from '../../../agent/src/tls/index.js';
import { ClusterCa, type IssuedCredentials } from './cluster-ca.js';
import { agentDispatcherOptions, mtlsJson } from './agent-client-tls.js';
import { generateJoinToken, tokenMatchesHash } from './join-tokens.js';

interface RunningServer {
  url: string;
  server: https.Server | http.Server;
  hits: number;
  close(): Promise<void>;
}

async function listen(server: https.Server | http.Server, scheme: 'http' | 'https', counter: { hits: number }): Promise<RunningServer> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `${scheme}://127.0.0.1:${port}`,
    server,
    get hits() {
      return counter.hits;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** An agent API stand-in: answers with the caller's certificate, 403 unless it is the manager's. */
async function startAgentServer(identity: AgentIdentity): Promise<RunningServer> {
  const counter = { hits: 0 };
  const server = https.createServer(agentTlsOptions(identity), (request, response) => {
    counter.hits += 1;
    try {
      const caller = requireManagerCertificate(request.socket);
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(caller));
    } catch (error) {
      const failure = error as DroverError;
      response.writeHead(httpStatusOf(failure.code), { 'content-type': 'application/json' }).end(JSON.stringify({ error: failure.toJSON() }));
    }
  });
  return listen(server, 'https', counter);
}

async function failureOf(promise: Promise<unknown>): Promise<DroverError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof DroverError) return error;
    throw error;
  }
  throw new Error('expected a failure, got an answer');
}

describe('manager ↔ agent mutual TLS', () => {
  let root: string;
  let ca: ClusterCa;
  let otherCa: ClusterCa;
  let agentDir: string;
  let identity: AgentIdentity;
  let manager: IssuedCredentials;
  let agentServer: RunningServer;
  const closers: Array<() => Promise<void>> = [];

  const managerAgent = (credentials: { certPem: string; keyPem: string }, extras = {}) =>
    agentDispatcherOptions({ caPem: ca.caCertPem(), certPem: credentials.certPem, keyPem: credentials.keyPem }, { keepAlive: false, ...extras });

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'drover-mtls-test-'));
    ca = await ClusterCa.open(join(root, 'ca'));
    otherCa = await ClusterCa.open(join(root, 'other-ca'));
    agentDir = join(root, 'agent-tls');
    const { csrPem } = await createAgentIdentity(agentDir, { commonName: 'host1', sanIps: ['127.0.0.1'] });
    const issued = await ca.issueServerAndClientCert({ csrPem, commonName: 'host1', sanIps: ['127.0.0.1'] });
    identity = await saveAgentCertificate(agentDir, issued.certPem, ca.caCertPem(), await ca.crlPem());
    manager = await ca.issueManagerClientCert();
    agentServer = await startAgentServer(identity);
    closers.push(() => agentServer.close());
  });

  afterAll(async () => {
    for (const close of closers.reverse()) await close();
    await rm(root, { recursive: true, force: true });
  });

  it('keeps the agent key private and the identity loadable', async () => {
    expect((await stat(join(agentDir, 'identity.pem'))).mode & 0o777).toBe(0o600);
    expect((await stat(agentDir)).mode & 0o777).toBe(0o700);
    const loaded = await loadAgentIdentity(agentDir);
    expect(loaded?.certPem).toBe(identity.certPem);
    expect(loaded?.crlPem).toBeDefined();
    expect(await loadAgentIdentity(join(root, 'never-joined'))).toBeUndefined();
  });

  it('accepts the manager client certificate', async () => {
    const answer = await mtlsJson<{ commonName: string; serial: string; fingerprint: string }>(managerAgent(manager), `${agentServer.url}/v1/ping`, 'GET', undefined, 10_000);
    expect(answer.status).toBe(200);
    expect(answer.body).toEqual({ commonName: 'drover-manager', serial: manager.serial, fingerprint: manager.fingerprint });
  });

  it('fails the TLS handshake for a client without a certificate', async () => {
    const before = agentServer.hits;
    const bare = new https.Agent({ ca: ca.caCertPem(), keepAlive: false });
    const failure = await failureOf(mtlsJson(bare, `${agentServer.url}/v1/ping`, 'GET', undefined, 10_000));
    expect(failure.code).toBe('unavailable');
    // TLS 1.3: the client finishes its handshake first and learns of the refusal from an alert.
    expect(String(failure.details.code)).toMatch(/CERTIFICATE_REQUIRED|ECONNRESET|EPIPE/);
    expect(agentServer.hits).toBe(before);
  });

  it('fails the TLS handshake for a client certificate of another CA', async () => {
    const before = agentServer.hits;
    const foreign = await otherCa.issueManagerClientCert();
    const failure = await failureOf(mtlsJson(managerAgent(foreign), `${agentServer.url}/v1/ping`, 'GET', undefined, 10_000));
    expect(failure.code).toBe('unavailable');
    expect(String(failure.details.code)).toMatch(/UNKNOWN_CA|ECONNRESET|EPIPE/);
    expect(agentServer.hits).toBe(before);
  });

  it('lets another cluster certificate through TLS but refuses it as the manager', async () => {
    const { csrPem, keyPem } = await (async () => {
      const dir = join(root, 'host2-tls');
      const request = await createAgentIdentity(dir, { commonName: 'host2', sanIps: ['127.0.0.2'] });
      return { csrPem: request.csrPem, keyPem: await readFile(join(dir, 'pending.key'), 'utf8') };
    })();
    const host2 = await ca.issueServerAndClientCert({ csrPem, commonName: 'host2', sanIps: ['127.0.0.2'] });
    const answer = await mtlsJson<{ error: { code: string } }>(managerAgent({ certPem: host2.certPem, keyPem }), `${agentServer.url}/v1/ping`, 'GET', undefined, 10_000);
    expect(answer.status).toBe(403);
    expect(answer.body.error.code).toBe('forbidden');
  });

  it('checks the agent certificate name on the manager side', async () => {
    const wrongName = await failureOf(
      mtlsJson(managerAgent(manager, { expectedCommonName: 'host9' }), `${agentServer.url}/v1/ping`, 'GET', undefined, 10_000),
    );
    expect(wrongName.code).toBe('forbidden');
    const byName = await failureOf(mtlsJson(managerAgent(manager), `${agentServer.url.replace('127.0.0.1', 'localhost')}/v1/ping`, 'GET', undefined, 10_000));
    expect(byName.details.code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
    const ok = await mtlsJson(managerAgent(manager, { expectedCommonName: 'host1' }), `${agentServer.url}/v1/ping`, 'GET', undefined, 10_000);
    expect(ok.status).toBe(200);
  });

  it('does not resume TLS sessions (a resumed session skips the CRL check)', async () => {
    const port = Number(new URL(agentServer.url).port);
    const connect = (session?: Buffer) =>
      new Promise<{ socket: TLSSocket; session: Buffer | undefined }>((resolve, reject) => {
        let saved: Buffer | undefined;
        const socket = tlsConnect({ host: '127.0.0.1', port, ca: ca.caCertPem(), cert: manager.certPem, key: manager.keyPem, ...(session ? { session } : {}) });
        socket.on('session', (value: Buffer) => (saved = value));
        socket.once('error', reject);
        socket.once('secureConnect', () => setTimeout(() => resolve({ socket, session: saved }), 50));
      });
    const first = await connect();
    first.socket.destroy();
    if (first.session) {
      const second = await connect(first.session);
      expect(second.socket.isSessionReused()).toBe(false);
      second.socket.destroy();
    }
  });

  it('refuses a revoked manager certificate once the agent loads the new CRL', async () => {
    const doomed = await ca.issueManagerClientCert();
    const url = `${agentServer.url}/v1/ping`;
    expect((await mtlsJson(managerAgent(doomed), url, 'GET', undefined, 10_000)).status).toBe(200);

    await ca.revoke(doomed.serial, 'keyCompromise');
    await saveAgentCrl(agentDir, await ca.crlPem());
    const updated = await loadAgentIdentity(agentDir);
    applyAgentTlsContext(agentServer.server as https.Server, updated as AgentIdentity);

    const before = agentServer.hits;
    const failure = await failureOf(mtlsJson(managerAgent(doomed), url, 'GET', undefined, 10_000));
    expect(failure.code).toBe('unavailable');
    expect(String(failure.details.code)).toMatch(/REVOKED|ECONNRESET|EPIPE/);
    expect(agentServer.hits).toBe(before);
    // The other manager certificate still works.
    expect((await mtlsJson(managerAgent(manager), url, 'GET', undefined, 10_000)).status).toBe(200);
  });

  it('refuses a CRL of another CA and an older CRL', async () => {
    await expect(saveAgentCrl(agentDir, await otherCa.crlPem())).rejects.toMatchObject({ code: 'invalid' });
    // A flipped signature byte: `openssl crl -CAfile` still exits 0 on OpenSSL 3.0.
    const der = Buffer.from((await ca.crlPem()).replace(/-----[^-]+-----/g, '').replace(/\s/g, ''), 'base64');
    der[der.length - 3] = (der[der.length - 3] ?? 0) ^ 0x01;
    const tampered = `-----BEGIN X509 CRL-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END X509 CRL-----\n`;
    await expect(saveAgentCrl(agentDir, tampered)).rejects.toMatchObject({ code: 'invalid', message: /signature|not signed by the cluster CA/ });
    const current = await ca.crlPem();
    const older = (await readFile(join(agentDir, 'crl.pem'), 'utf8')) === current;
    expect(older).toBe(true);
    await ca.revoke((await ca.issueManagerClientCert()).serial);
    await saveAgentCrl(agentDir, await ca.crlPem());
    await expect(saveAgentCrl(agentDir, current)).rejects.toMatchObject({ code: 'conflict' });
  });

  it('closes the open connections of a client that a new CRL revokes, and only those', async () => {
    const identityNow = (await loadAgentIdentity(agentDir)) as AgentIdentity;
    const server = https.createServer(agentTlsOptions(identityNow), (request, response) => {
      try {
        response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(requireManagerCertificate(request.socket)));
      } catch (error) {
        response.writeHead(httpStatusOf((error as DroverError).code)).end();
      }
    });
    trackAgentConnections(server);
    const running = await listen(server, 'https', { hits: 0 });
    closers.push(() => running.close());
    const doomed = await ca.issueManagerClientCert();
    // Kept-alive connections: authenticated once, never checked against a later CRL by TLS itself.
    const doomedAgent = managerAgent(doomed, { keepAlive: true });
    const keptAgent = managerAgent(manager, { keepAlive: true });
    const url = `${running.url}/v1/ping`;
    expect((await mtlsJson(doomedAgent, url, 'GET', undefined, 10_000)).status).toBe(200);
    expect((await mtlsJson(keptAgent, url, 'GET', undefined, 10_000)).status).toBe(200);
    const keptSocket = Object.values(keptAgent.freeSockets).flat()[0];
    expect(keptSocket).toBeDefined();

    await ca.revoke(doomed.serial, 'keyCompromise');
    const saved = await saveAgentCrl(agentDir, await ca.crlPem());
    expect(saved.changed).toBe(true);
    expect(saved.revokedSerials).toContain(doomed.serial);
    const closed = applyAgentTlsContext(server, (await loadAgentIdentity(agentDir)) as AgentIdentity, { revokedSerials: saved.revokedSerials });
    expect(closed).toBe(1);
    // The manager's kept-alive connection is still the same open socket.
    expect(keptSocket?.destroyed).toBe(false);
    expect((await mtlsJson(keptAgent, url, 'GET', undefined, 10_000)).status).toBe(200);
    const failure = await failureOf(mtlsJson(doomedAgent, url, 'GET', undefined, 10_000));
    expect(failure.code).toBe('unavailable');
    // The same CRL again changes nothing.
    expect((await saveAgentCrl(agentDir, await ca.crlPem())).changed).toBe(false);
    doomedAgent.destroy();
    keptAgent.destroy();
  });

  it('keeps a newer installed CRL when a certificate arrives with an older one', async () => {
    const older = await ca.crlPem();
    await ca.revoke((await ca.issueManagerClientCert()).serial);
    const newer = await ca.crlPem();
    await saveAgentCrl(agentDir, newer);
    const current = (await loadAgentIdentity(agentDir)) as AgentIdentity;
    // Re-delivery of the current certificate with the CRL of before the revocation.
    await saveAgentCertificate(agentDir, current.certPem, ca.caCertPem(), older);
    expect(await readFile(join(agentDir, 'crl.pem'), 'utf8')).toBe(newer);
  });

  it('rotates the agent certificate: new one works, the old one is refused at the TLS layer', async () => {
    const before = await loadAgentIdentity(agentDir);
    const oldCertificate = new X509Certificate((before as AgentIdentity).certPem);
    const rotated = await rotateAgentCertificate({
      dir: agentDir,
      server: agentServer.server as https.Server,
      sign: async (request) => {
        const answer = await ca.rotateCertificate(request);
        return { certPem: answer.certPem, crlPem: answer.crlPem };
      },
    });
    const newCertificate = new X509Certificate(rotated.certPem);
    expect(newCertificate.serialNumber).not.toBe(oldCertificate.serialNumber);
    expect(newCertificate.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(ca.isRevoked(oldCertificate.serialNumber)).toBe(true);
    expect(rotated.keyPem).not.toBe(before?.keyPem);

    // The manager reaches the agent, which now presents the new certificate,
    // and the manager (the CA) can itself refuse a revoked agent certificate.
    const socketCertificate = await new Promise<string>((resolve, reject) => {
      const request = https.request(`${agentServer.url}/v1/ping`, { agent: managerAgent(manager, { isRevoked: (serial: string) => ca.isRevoked(serial) }) }, (response) => {
        resolve((response.socket as TLSSocket).getPeerCertificate().fingerprint256);
        response.resume();
      });
      request.on('error', reject);
      request.end();
    });
    expect(socketCertificate).toBe(newCertificate.fingerprint256);

    // The old agent certificate (it has clientAuth too) no longer passes the agent's TLS.
    const oldClient = { certPem: (before as AgentIdentity).certPem, keyPem: (before as AgentIdentity).keyPem };
    const failure = await failureOf(mtlsJson(managerAgent(oldClient), `${agentServer.url}/v1/ping`, 'GET', undefined, 10_000));
    expect(String(failure.details.code)).toMatch(/REVOKED|ECONNRESET|EPIPE/);
    // And a second, revoked-aware manager agent refuses an agent serving a revoked certificate.
    const staleServer = await startAgentServer(before as AgentIdentity);
    closers.push(() => staleServer.close());
    const stale = await failureOf(
      mtlsJson(managerAgent(manager, { isRevoked: (serial: string) => ca.isRevoked(serial) }), `${staleServer.url}/v1/ping`, 'GET', undefined, 10_000),
    );
    expect(stale.code).toBe('forbidden');
  });

  describe('joinCluster', () => {
    const token = generateJoinToken();
    let joinServer: RunningServer;
    let joinServerTls: RunningServer;

    /** Plays the manager's join endpoint: checks the token hash, signs with ClusterCa. */
    const handleJoin = (request: http.IncomingMessage, response: http.ServerResponse, counter: { hits: number }) => {
      counter.hits += 1;
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', async () => {
        const reply = (status: number, body: unknown) => response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
        try {
          if (request.method !== 'POST' || request.url !== '/api/v1/hosts/join') return reply(404, { error: { code: 'not_found', message: request.url } });
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { token: string; csr: string; name: string; address: string; sanIps: string[] };
          if (!tokenMatchesHash(body.token, token.hash)) return reply(401, { error: { code: 'unauthenticated', message: 'unknown join token' } });
          expect(body.address).toMatch(/^https:\/\/127\.0\.0\.1:/);
          const issued = await ca.issueServerAndClientCert({ csrPem: body.csr, commonName: body.name, sanIps: body.sanIps });
          reply(200, { hostId: `h-${body.name}`, certPem: issued.certPem, caPem: ca.caCertPem(), crlPem: await ca.crlPem() });
        } catch (error) {
          const failure = error instanceof DroverError ? error : new DroverError('internal', String(error));
          reply(httpStatusOf(failure.code), { error: failure.toJSON() });
        }
      });
    };

    beforeAll(async () => {
      const plain = { hits: 0 };
      joinServer = await listen(http.createServer((request, response) => handleJoin(request, response, plain)), 'http', plain);
      const secure = { hits: 0 };
      const apiCert = await ca.issueManagerServerCert({ sanIps: ['127.0.0.1'] });
      joinServerTls = await listen(
        https.createServer({ cert: apiCert.chainPem, key: apiCert.keyPem }, (request, response) => handleJoin(request, response, secure)),
        'https',
        secure,
      );
      closers.push(() => joinServer.close(), () => joinServerTls.close());
    });

    const joinOptions = (dir: string, name: string) => ({
      managerUrl: joinServer.url,
      joinToken: token.token,
      dir,
      commonName: name,
      sanIps: ['127.0.0.1'],
      agentUrl: 'https://127.0.0.1:7443',
      timeoutMs: 20_000,
    });

    it('joins over loopback http and saves an identity that loadAgentIdentity returns', async () => {
      const dir = join(root, 'joined-http');
      const result = await joinCluster(joinOptions(dir, 'host10'));
      expect(result.hostId).toBe('h-host10');
      const loaded = await loadAgentIdentity(dir);
      expect(loaded).toBeDefined();
      const certificate = new X509Certificate((loaded as AgentIdentity).certPem);
      expect(certificate.subject).toBe('CN=host10');
      expect(certificate.verify(new X509Certificate(ca.caCertPem()).publicKey)).toBe(true);
      expect(loaded?.caPem).toBe(ca.caCertPem());
      expect(await loadJoinRecord(dir)).toMatchObject({ hostId: 'h-host10', managerUrl: `${joinServer.url}/` });

      // The joined identity serves mTLS to the manager at once.
      const server = await startAgentServer(loaded as AgentIdentity);
      closers.push(() => server.close());
      expect((await mtlsJson(managerAgent(manager, { expectedCommonName: 'host10' }), `${server.url}/v1/ping`, 'GET', undefined, 10_000)).status).toBe(200);

      await expect(joinCluster(joinOptions(dir, 'host10'))).rejects.toMatchObject({ code: 'conflict' });
    });

    it('joins over https only through the pinned CA fingerprint', async () => {
      const dir = join(root, 'joined-https');
      const options = { ...joinOptions(dir, 'host11'), managerUrl: joinServerTls.url };
      await expect(joinCluster(options)).rejects.toMatchObject({ code: 'invalid', message: /fingerprint/ });
      const wrongPin = otherCa.caFingerprint();
      await expect(joinCluster({ ...options, caFingerprint: wrongPin })).rejects.toMatchObject({ code: 'unauthenticated' });
      expect(joinServerTls.hits).toBe(0);
      const result = await joinCluster({ ...options, caFingerprint: ca.caFingerprint().replace(/:/g, '').toLowerCase() });
      expect(result.hostId).toBe('h-host11');
      expect(await loadAgentIdentity(dir)).toBeDefined();
    });

    it('reports a refused token and refuses plain http to a remote manager', async () => {
      const dir = join(root, 'joined-refused');
      await expect(joinCluster({ ...joinOptions(dir, 'host12'), joinToken: generateJoinToken().token })).rejects.toMatchObject({
        code: 'unauthenticated',
      });
      expect(await loadAgentIdentity(dir)).toBeUndefined();
      await expect(joinCluster({ ...joinOptions(dir, 'host12'), managerUrl: 'http://192.0.2.1:8080' })).rejects.toMatchObject({ code: 'invalid' });
      await expect(joinCluster({ ...joinOptions(dir, 'host12'), managerUrl: 'http://127.0.0.1:1', timeoutMs: 5_000 })).rejects.toMatchObject({ code: 'unavailable' });
    });
  });
});

// CRL distribution on real parts: a manager with its openssl CA, real agents joined
// over mutual TLS on 127.0.0.1, and clients that open a fresh TLS connection for
// every call (a kept-alive connection is never checked against a new CRL).
import https from 'node:https';
import { readFileSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '@drover/agent';
import { freePort, tempDir, testAgentConfig } from '@drover/agent/testing';
import { agentTlsOptions, describeCertificate, inspectCrl, loadAgentIdentity, type AgentIdentity } from '../../../agent/src/tls/index.js';
import { agentDispatcherOptions, mtlsJson, type MtlsAnswer } from '../pki/agent-client-tls.js';
import { ClusterCa } from '../pki/cluster-ca.js';
import { generateCrl } from '../pki/openssl-ca.js';
import { startTestCluster, type TestCluster } from '../testing/cluster.js';
import { managerClientCredentials } from '../testing/multihost.js';

interface CrlStatus {
  crlNumber: string;
  lastUpdate: string;
  nextUpdate: string;
  revokedSerials: number;
  changed?: boolean;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  for (const deadline = Date.now() + timeoutMs; ; ) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** The manager's own client credentials, as it keeps them in its CA directory. */
const managerCredentials = (cluster: TestCluster) => managerClientCredentials(cluster.dataDir);

/** One call to an agent on a new TLS connection, with the given client certificate (the manager's by default). */
function agentCall<T>(cluster: TestCluster, url: string, method: string, route: string, body?: unknown, client?: { certPem: string; keyPem: string }): Promise<MtlsAnswer<T>> {
  const manager = managerCredentials(cluster);
  const dispatcher = agentDispatcherOptions({ ...manager, ...client }, { keepAlive: false });
  return mtlsJson<T>(dispatcher, `${url}${route}`, method, body, 15_000);
}

async function installedCrl(cluster: TestCluster, url = cluster.agent.url): Promise<CrlStatus> {
  const answer = await agentCall<CrlStatus>(cluster, url, 'GET', '/v1/identity/crl');
  expect(answer.status).toBe(200);
  return answer.body;
}

const crlFile = (stateDir: string) => readFileSync(path.join(stateDir, 'tls', 'crl.pem'), 'utf8');

async function hostState(cluster: TestCluster, name: string): Promise<{ state: string; lastHeartbeatAt?: string } | undefined> {
  const answer = await cluster.api<{ state: string; lastHeartbeatAt?: string }>('GET', `/api/v1/hosts/${name}`);
  return answer.status === 200 ? answer.body : undefined;
}

describe('CRL push after revocations (heartbeats far apart)', () => {
  let cluster: TestCluster;
  let originalCrl: string;
  let second: RunningAgent | undefined;
  const secondDir = tempDir('crl-second-agent');

  beforeAll(async () => {
    // One heartbeat a minute: whatever reaches the agent within seconds was pushed, not polled.
    cluster = await startTestCluster({ hostName: 'h1', manager: { heartbeatMs: 60_000, appliances: false } });
    originalCrl = crlFile(cluster.agentDir);
  });

  afterAll(async () => {
    await second?.close();
    await cluster?.close();
    rmSync(secondDir, { recursive: true, force: true });
  });

  it('pushes the CRL to every host right after a host removal, without a rotation', async () => {
    const join = await cluster.api<{ token: string }>('POST', '/api/v1/hosts/join-tokens', {});
    expect(join.status).toBe(201);
    second = await startAgent(testAgentConfig(secondDir, { listen: `127.0.0.1:${await freePort()}`, hostName: 'h2' }), {
      join: { managerUrl: cluster.manager.url, token: join.body.token },
    });
    await waitFor('h2 online', async () => ((await hostState(cluster, 'h2'))?.state === 'online' ? true : undefined), 30_000);
    // The greetings after a join (0.3, 1, 2.5 s) are over before the removal.
    await sleep(3_500);

    const h2 = (await loadAgentIdentity(path.join(secondDir, 'tls'))) as AgentIdentity;
    const h2Serial = describeCertificate(h2.certPem).serial;
    const h2Client = { certPem: h2.certPem, keyPem: h2.keyPem };
    // Before: h2's certificate passes h1's TLS layer (and is then refused as not the manager's).
    expect((await agentCall(cluster, cluster.agent.url, 'GET', '/v1/host', undefined, h2Client)).status).toBe(403);
    const before = await installedCrl(cluster);

    const removedAt = Date.now();
    expect((await cluster.api('DELETE', '/api/v1/hosts/h2')).status).toBe(204);
    const after = await waitFor('a newer CRL on h1', async () => {
      const now = await installedCrl(cluster);
      return BigInt(now.crlNumber) > BigInt(before.crlNumber) ? now : undefined;
    });
    expect(Date.now() - removedAt).toBeLessThan(10_000);
    expect(after.revokedSerials).toBeGreaterThan(before.revokedSerials);
    const caPem = managerCredentials(cluster).caPem;
    expect((await inspectCrl(crlFile(cluster.agentDir), caPem)).revokedSerials).toContain(h2Serial);
    expect(cluster.manager.crl.hostCrlNumber((await cluster.api<{ items: Array<{ id: string }> }>('GET', '/api/v1/hosts')).body.items[0]!.id)).toBe(Number(after.crlNumber));

    // In force at once, listener untouched: h2's certificate no longer gets through TLS, the manager does.
    const refused = await agentCall(cluster, cluster.agent.url, 'GET', '/v1/host', undefined, h2Client).then(
      () => undefined,
      (error: { code: string; details: { code?: string } }) => error,
    );
    expect(refused?.code).toBe('unavailable');
    expect(String(refused?.details.code)).toMatch(/REVOKED|ECONNRESET|EPIPE/);
    expect((await agentCall(cluster, cluster.agent.url, 'GET', '/v1/host')).status).toBe(200);
    expect((await hostState(cluster, 'h1'))?.state).toBe('online');
  });

  it('pushes the CRL that revokes the old certificate after a rotation', async () => {
    const oldSerial = describeCertificate(((await loadAgentIdentity(path.join(cluster.agentDir, 'tls'))) as AgentIdentity).certPem).serial;
    const rotation = await cluster.api<{ id: string; state: string }>('POST', '/api/v1/hosts/h1/rotate-certificate?wait=true', {});
    expect(rotation.status).toBeLessThan(300);
    expect((await cluster.waitOp(rotation.body.id)).state).toBe('done');
    const caPem = managerCredentials(cluster).caPem;
    // The CRL handed over with the new certificate predates the revocation of the old one; the push follows.
    await waitFor('the old serial on the CRL of h1', async () => ((await inspectCrl(crlFile(cluster.agentDir), caPem)).revokedSerials.includes(oldSerial) ? true : undefined));
    expect((await agentCall(cluster, cluster.agent.url, 'GET', '/v1/host')).status).toBe(200);
  });

  it('refuses bad CRLs (400, 409) and keeps the installed one', async () => {
    const installedPem = crlFile(cluster.agentDir);
    const installed = await installedCrl(cluster);
    const put = (crlPem: unknown) => agentCall<{ error: { code: string; message: string } }>(cluster, cluster.agent.url, 'PUT', '/v1/identity/crl', { crlPem });
    const unchanged = async () => {
      expect(crlFile(cluster.agentDir)).toBe(installedPem);
      expect((await installedCrl(cluster)).crlNumber).toBe(installed.crlNumber);
      expect((await agentCall(cluster, cluster.agent.url, 'GET', '/v1/host')).status).toBe(200);
    };

    // Another CA's CRL (installing it would lock out every client of this cluster).
    const otherDir = await mkdtemp(path.join(tmpdir(), 'drover-other-ca-'));
    try {
      const other = await ClusterCa.open(otherDir);
      const foreign = await put(await other.crlPem());
      expect(foreign.status).toBe(400);
      expect(foreign.body.error.message).toMatch(/cluster CA/);
    } finally {
      await rm(otherDir, { recursive: true, force: true });
    }
    await unchanged();

    // Garbage, PEM-shaped garbage, a flipped signature byte, an empty string, a wrong type.
    for (const body of ['hello', '-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n', '', 42]) {
      expect((await put(body)).status).toBe(400);
    }
    const der = Buffer.from(installedPem.replace(/-----[^-]+-----/g, '').replace(/\s/g, ''), 'base64');
    der[der.length - 3] = (der[der.length - 3] ?? 0) ^ 0x01;
    const tampered = await put(`-----BEGIN X509 CRL-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END X509 CRL-----\n`);
    expect(tampered.status).toBe(400);
    // A flipped byte either breaks the signature or the DER around it: refused either way.
    expect(tampered.body.error.message).toMatch(/signature|not signed by the cluster CA/);
    await unchanged();

    // An older CRL of the right CA: no rollback (it would un-revoke h2 and the old h1 certificate).
    const older = await put(originalCrl);
    expect(older.status).toBe(409);
    expect(older.body.error.code).toBe('conflict');
    await unchanged();

    // Signed by the right CA with a higher number, but expired, or not valid yet: either would lock everyone out.
    const authority = path.join(cluster.dataDir, 'ca', 'authority');
    const signed = (lastUpdate: Date, nextUpdate: Date) =>
      generateCrl({ caCertPath: path.join(authority, 'ca.crt'), caKeyPath: path.join(authority, 'ca.key'), crlNumber: Number(installed.crlNumber) + 100, revoked: [], lastUpdate, nextUpdate, timeoutMs: 30_000 });
    const expired = await put(await signed(new Date(Date.now() - 3_600_000), new Date(Date.now() - 60_000)));
    expect(expired.status).toBe(400);
    expect(expired.body.error.message).toMatch(/expired/);
    const early = await put(await signed(new Date(Date.now() + 3_600_000), new Date(Date.now() + 7_200_000)));
    expect(early.status).toBe(400);
    expect(early.body.error.message).toMatch(/not valid before/);
    await unchanged();

    // Only the manager may push: the agent's own certificate is refused.
    const self = (await loadAgentIdentity(path.join(cluster.agentDir, 'tls'))) as AgentIdentity;
    const bySelf = await agentCall<{ error: { code: string } }>(cluster, cluster.agent.url, 'PUT', '/v1/identity/crl', { crlPem: installedPem }, { certPem: self.certPem, keyPem: self.keyPem });
    expect(bySelf.status).toBe(403);
    await unchanged();

    // The same CRL again is accepted and changes nothing.
    const again = await put(installedPem);
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ crlNumber: installed.crlNumber, changed: false });
    await unchanged();
  });
});

describe('CRL renewal before expiry (CRL valid 12 s)', () => {
  let cluster: TestCluster;

  beforeAll(async () => {
    cluster = await startTestCluster({ hostName: 'h1', manager: { appliances: false }, ca: { crlValiditySeconds: 12 } });
  });

  afterAll(async () => {
    await cluster?.close();
  });

  it('replaces a CRL near its nextUpdate, and the manager still gets in once the first one expired', async () => {
    const firstPem = crlFile(cluster.agentDir);
    const first = await installedCrl(cluster);
    const firstExpiry = Date.parse(first.nextUpdate);
    expect(firstExpiry - Date.now()).toBeLessThan(13_000);

    await waitFor('the first CRL to expire', async () => (Date.now() > firstExpiry + 1_500 ? true : undefined), 20_000);

    // A fresh TLS connection with the manager's certificate is accepted: the agent holds a newer CRL.
    const now = await installedCrl(cluster);
    expect(BigInt(now.crlNumber)).toBeGreaterThan(BigInt(first.crlNumber));
    expect(Date.parse(now.nextUpdate)).toBeGreaterThan(Date.now());
    expect((await agentCall(cluster, cluster.agent.url, 'GET', '/v1/host')).status).toBe(200);
    const host = await hostState(cluster, 'h1');
    expect(host?.state).toBe('online');
    expect(Date.now() - Date.parse(host?.lastHeartbeatAt ?? '')).toBeLessThan(5_000);

    // Without the push: the same agent identity serving the first CRL refuses the manager.
    const identity = (await loadAgentIdentity(path.join(cluster.agentDir, 'tls'))) as AgentIdentity;
    const stale = https.createServer(agentTlsOptions({ ...identity, crlPem: firstPem }), (_request, response) => response.end('{}'));
    await new Promise<void>((resolve) => stale.listen(0, '127.0.0.1', resolve));
    try {
      const url = `https://127.0.0.1:${(stale.address() as AddressInfo).port}`;
      const refused = await agentCall(cluster, url, 'GET', '/v1/host').then(
        () => undefined,
        (error: { code: string }) => error,
      );
      expect(refused?.code).toBe('unavailable');
    } finally {
      stale.closeAllConnections();
      await new Promise<void>((resolve) => stale.close(() => resolve()));
    }
  });
});

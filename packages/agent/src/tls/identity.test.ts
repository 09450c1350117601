import { execFileSync } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAgentIdentity, describeCertificate, loadAgentIdentity, saveAgentCertificate, saveAgentCrl } from './identity.js';
import { agentTlsOptions, clientCertificateOf, requireManagerCertificate } from './tls-options.js';
import { isLoopbackHost } from './manager-request.js';
import { joinCluster } from './join.js';

/**
 * A throw-away CA made with the openssl CLI, so these tests need nothing from the
 * manager (the manager's tests run the agent side against the real ClusterCa).
 */
function makeTestCa(dir: string, name: string): { caPem: string; sign: (csrPem: string, eku?: string) => string } {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.crt`);
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-config', '/dev/null',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:true', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ], { stdio: 'pipe' });
  let serial = 1;
  return {
    caPem: readFileSync(cert, 'utf8'),
    sign: (csrPem: string, eku = 'serverAuth,clientAuth') => {
      const ext = join(dir, `${name}-ext.cnf`);
      writeFileSync(ext, `extendedKeyUsage=${eku}\nsubjectAltName=IP:127.0.0.1\n`);
      serial += 1;
      return execFileSync('openssl', ['x509', '-req', '-CA', cert, '-CAkey', key, '-set_serial', String(serial), '-days', '1', '-extfile', ext], {
        input: csrPem,
        encoding: 'utf8',
        stdio: ['pipe', 'pipe', 'pipe'],
      });
    },
  };
}

describe('agent identity', () => {
  let root: string;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'drover-agent-tls-test-'));
  });

  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('makes a private P-256 key and a CSR for exactly CN=<name>', async () => {
    const dir = join(root, 'fresh');
    const { csrPem } = await createAgentIdentity(dir, { commonName: 'host1', sanIps: ['127.0.0.1'] });
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    expect((await stat(join(dir, 'pending.key'))).mode & 0o777).toBe(0o600);
    const key = createPrivateKey(await readFile(join(dir, 'pending.key'), 'utf8'));
    expect(key.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    const text = execFileSync('openssl', ['req', '-verify', '-noout', '-subject', '-nameopt', 'RFC2253'], { input: csrPem, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
    expect(text.trim()).toBe('subject=CN=host1');
    expect(await loadAgentIdentity(dir)).toBeUndefined();
    await expect(createAgentIdentity(dir, { commonName: 'bad/name' })).rejects.toMatchObject({ code: 'invalid' });
    await expect(createAgentIdentity(dir, { commonName: 'host1', sanIps: ['nope'] })).rejects.toMatchObject({ code: 'invalid' });
  });

  it('saves only a certificate for its own key, from the given CA, with both usages', async () => {
    const dir = join(root, 'save');
    const ca = makeTestCa(root, 'test-ca');
    const other = makeTestCa(root, 'other-ca');
    const { csrPem } = await createAgentIdentity(dir, { commonName: 'host2', sanIps: ['127.0.0.1'] });

    await expect(saveAgentCertificate(dir, other.sign(csrPem), ca.caPem)).rejects.toMatchObject({ code: 'invalid', message: /not signed/ });
    await expect(saveAgentCertificate(dir, ca.sign(csrPem, 'serverAuth'), ca.caPem)).rejects.toMatchObject({ code: 'invalid', message: /clientAuth/ });
    const stranger = await createAgentIdentity(join(root, 'stranger'), { commonName: 'host2' });
    await expect(saveAgentCertificate(dir, ca.sign(stranger.csrPem), ca.caPem)).rejects.toMatchObject({ code: 'invalid', message: /key/ });
    await expect(saveAgentCertificate(dir, 'garbage', ca.caPem)).rejects.toMatchObject({ code: 'invalid' });
    expect(await loadAgentIdentity(dir)).toBeUndefined();

    const certPem = ca.sign(csrPem);
    const identity = await saveAgentCertificate(dir, certPem, ca.caPem);
    expect(new X509Certificate(identity.certPem).fingerprint256).toBe(new X509Certificate(certPem).fingerprint256);
    expect((await stat(join(dir, 'identity.pem'))).mode & 0o777).toBe(0o600);
    await expect(stat(join(dir, 'pending.key'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await loadAgentIdentity(dir)).toEqual(identity);
    expect(identity.crlPem).toBeUndefined();
    expect(describeCertificate(identity.certPem)).toMatchObject({ commonName: 'host2', sanIps: ['127.0.0.1'], serial: new X509Certificate(certPem).serialNumber.replace(/^0+/, '') });

    const options = agentTlsOptions(identity);
    expect(options).toMatchObject({ requestCert: true, rejectUnauthorized: true, ca: ca.caPem, minVersion: 'TLSv1.3' });
    expect('crl' in options).toBe(false);

    // Re-delivery of a certificate for the current key is accepted.
    await saveAgentCertificate(dir, ca.sign(csrPem), ca.caPem);
    // Garbage and corrupted CRLs never get installed.
    await expect(saveAgentCrl(dir, 'not a crl')).rejects.toMatchObject({ code: 'invalid' });
  });

  it('reads no certificate from a plain socket and refuses it as the manager', () => {
    const socket = new Socket();
    expect(clientCertificateOf(socket)).toBeUndefined();
    expect(clientCertificateOf(undefined)).toBeUndefined();
    expect(() => requireManagerCertificate(socket)).toThrow(expect.objectContaining({ code: 'unauthenticated' }));
    socket.destroy();
  });

  it('talks plain http only to loopback managers and https only with a pin', async () => {
    expect(isLoopbackHost('127.0.0.1')).toBe(true);
    expect(isLoopbackHost('[::1]')).toBe(true);
    expect(isLoopbackHost('localhost')).toBe(true);
    expect(isLoopbackHost('10.0.0.1')).toBe(false);
    expect(isLoopbackHost('127.example.com')).toBe(false);
    const base = { joinToken: 't', dir: join(root, 'join'), commonName: 'host3', sanIps: ['10.0.0.3'], agentUrl: 'https://10.0.0.3:7443', timeoutMs: 5_000 };
    await expect(joinCluster({ ...base, managerUrl: 'http://10.0.0.1:8080' })).rejects.toMatchObject({ code: 'invalid' });
    await expect(joinCluster({ ...base, managerUrl: 'https://10.0.0.1:8443' })).rejects.toMatchObject({ code: 'invalid', message: /fingerprint/ });
    await expect(joinCluster({ ...base, managerUrl: 'https://10.0.0.1:8443', caFingerprint: 'abc' })).rejects.toMatchObject({ code: 'invalid' });
    await expect(joinCluster({ ...base, managerUrl: 'not a url' })).rejects.toMatchObject({ code: 'invalid' });
  });
});

import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DroverError } from '@drover/core';
import { ClusterCa } from './cluster-ca.js';
import { makeCsr, opensslText } from './test-support.js';

const serverAuth = '1.3.6.1.5.5.7.3.1';
const clientAuth = '1.3.6.1.5.5.7.3.2';

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof DroverError) return error.code;
    throw error;
  }
  return 'resolved';
}

describe('ClusterCa', () => {
  let dir: string;
  let ca: ClusterCa;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'drover-ca-test-'));
    ca = await ClusterCa.open(join(dir, 'ca'));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('creates a P-256 CA with a private key and reopens the same CA', async () => {
    const caDir = join(dir, 'ca');
    expect((await stat(caDir)).mode & 0o777).toBe(0o700);
    expect((await stat(join(caDir, 'authority', 'ca.key'))).mode & 0o777).toBe(0o600);
    const key = createPrivateKey(await readFile(join(caDir, 'authority', 'ca.key'), 'utf8'));
    expect(key.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');

    const certificate = new X509Certificate(ca.caCertPem());
    expect(certificate.subject).toMatch(/^CN=Drover cluster CA [0-9a-f]{16}$/);
    expect(certificate.ca).toBe(true);
    expect(certificate.verify(certificate.publicKey)).toBe(true);
    const years = (Date.parse(certificate.validTo) - Date.parse(certificate.validFrom)) / (365.25 * 86_400_000);
    expect(years).toBeGreaterThan(9.9);
    const text = opensslText(['x509', '-noout', '-text'], ca.caCertPem());
    expect(text).toMatch(/CA:TRUE, pathlen:0/);
    expect(text).toMatch(/Certificate Sign, CRL Sign/);

    const again = await ClusterCa.open(caDir);
    expect(again.caFingerprint()).toBe(ca.caFingerprint());
    expect(again.id).toBe(ca.id);
    expect(ca.caFingerprint()).toBe(ca.fingerprint(ca.caCertPem()));
  });

  it('signs an agent CSR into a server+client certificate with the requested SANs', async () => {
    const { csrPem, keyPem } = makeCsr('/CN=host1');
    const issued = await ca.issueServerAndClientCert({ csrPem, commonName: 'host1', sanIps: ['127.0.0.1', '::1'], sanDns: ['host1.lab'], days: 30 });
    const certificate = new X509Certificate(issued.certPem);
    const authority = new X509Certificate(ca.caCertPem());
    expect(certificate.verify(authority.publicKey)).toBe(true);
    expect(certificate.checkIssued(authority)).toBe(true);
    expect(certificate.checkPrivateKey(createPrivateKey(keyPem))).toBe(true);
    expect(certificate.subject).toBe('CN=host1');
    expect(certificate.keyUsage).toEqual(expect.arrayContaining([serverAuth, clientAuth]));
    expect(certificate.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(certificate.checkIP('::1')).toBe('::1');
    expect(certificate.checkIP('127.0.0.2')).toBeUndefined();
    expect(certificate.checkHost('host1.lab')).toBe('host1.lab');
    expect(certificate.ca).toBe(false);
    expect(issued.serial).toMatch(/^[1-7][0-9A-F]{31}$/);
    expect(issued.serial).toBe(certificate.serialNumber);
    // Back-dated for clock skew, and ~30 days long.
    expect(Date.parse(certificate.validFrom)).toBeLessThan(Date.now() - 60_000);
    expect((Date.parse(certificate.validTo) - Date.now()) / 86_400_000).toBeCloseTo(30, 0);
    expect(ca.certificate(issued.serial)).toMatchObject({ commonName: 'host1', profile: 'agent', fingerprint: issued.fingerprint });
    // OpenSSL agrees on both purposes.
    const chain = join(dir, 'ca', 'authority', 'ca.crt');
    expect(opensslText(['verify', '-CAfile', chain, '-purpose', 'sslserver'], issued.certPem)).toMatch(/OK/);
    expect(opensslText(['verify', '-CAfile', chain, '-purpose', 'sslclient'], issued.certPem)).toMatch(/OK/);
  });

  it('refuses bad CSRs and bad requests with invalid', async () => {
    const good = makeCsr('/CN=host2').csrPem;
    const request = { commonName: 'host2', sanIps: ['127.0.0.1'] };
    expect(await codeOf(ca.issueServerAndClientCert({ ...request, csrPem: 'garbage' }))).toBe('invalid');
    const fakePem = `-----BEGIN CERTIFICATE REQUEST-----\n${Buffer.from('not DER at all').toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    expect(await codeOf(ca.issueServerAndClientCert({ ...request, csrPem: fakePem }))).toBe('invalid');
    const oversize = good.replace('-----END', `${'A'.repeat(9000)}\n-----END`);
    await expect(ca.issueServerAndClientCert({ ...request, csrPem: oversize })).rejects.toMatchObject({ code: 'invalid', message: /bytes; at most 8192/ });
    await expect(ca.issueServerAndClientCert({ ...request, commonName: 'host3', csrPem: good })).rejects.toMatchObject({
      code: 'invalid',
      message: /does not match/,
    });
    const extraAttributes = makeCsr('/O=evil/CN=host2').csrPem;
    expect(await codeOf(ca.issueServerAndClientCert({ ...request, csrPem: extraAttributes }))).toBe('invalid');
    // A CSR whose self-signature does not verify (last signature byte flipped).
    const der = Buffer.from(good.replace(/-----[^-]+-----/g, '').replace(/\s/g, ''), 'base64');
    der[der.length - 3] = (der[der.length - 3] ?? 0) ^ 0x01;
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE REQUEST-----\n`;
    await expect(ca.issueServerAndClientCert({ ...request, csrPem: tampered })).rejects.toMatchObject({ code: 'invalid', message: /self-signature/ });
    // The manager's name is reserved; SANs are required and validated.
    const managerCsr = makeCsr('/CN=drover-manager').csrPem;
    expect(await codeOf(ca.issueServerAndClientCert({ ...request, commonName: 'drover-manager', csrPem: managerCsr }))).toBe('invalid');
    expect(await codeOf(ca.issueServerAndClientCert({ commonName: 'host2', csrPem: good }))).toBe('invalid');
    expect(await codeOf(ca.issueServerAndClientCert({ ...request, sanIps: ['127.0.0.1, DNS:evil'], csrPem: good }))).toBe('invalid');
    expect(await codeOf(ca.issueServerAndClientCert({ ...request, commonName: 'a/CN=b', csrPem: good }))).toBe('invalid');
    expect(await codeOf(ca.issueServerAndClientCert({ ...request, days: 0, csrPem: good }))).toBe('invalid');
    const rsa = makeCsr('/CN=host2', 'rsa').csrPem;
    await expect(ca.issueServerAndClientCert({ ...request, csrPem: rsa })).rejects.toMatchObject({ code: 'invalid', message: /ECDSA/ });
    // Nothing refused made it into the index.
    expect(ca.certificates().filter((entry) => entry.commonName === 'host2')).toEqual([]);
  });

  it('issues the manager client certificate: CN drover-manager, clientAuth only', async () => {
    const credentials = await ca.issueManagerClientCert();
    const certificate = new X509Certificate(credentials.certPem);
    expect(certificate.subject).toBe('CN=drover-manager');
    expect(certificate.keyUsage).toEqual([clientAuth]);
    expect(certificate.checkPrivateKey(createPrivateKey(credentials.keyPem))).toBe(true);
    expect(certificate.verify(new X509Certificate(ca.caCertPem()).publicKey)).toBe(true);
    expect(ca.certificate(credentials.serial)?.profile).toBe('manager-client');
  });

  it('revokes serials into a signed CRL with increasing numbers', async () => {
    const first = await ca.issueServerAndClientCert({ csrPem: makeCsr('/CN=host4').csrPem, commonName: 'host4', sanIps: ['10.0.0.4'] });
    const before = await ca.crlPem();
    expect(opensslText(['crl', '-noout', '-text'], before)).not.toContain(first.serial);

    const record = await ca.revoke(first.serial.toLowerCase(), 'keyCompromise');
    expect(record.revokedAt).toBeDefined();
    expect(ca.isRevoked(first.serial)).toBe(true);
    const after = await ca.crlPem();
    const text = opensslText(['crl', '-noout', '-text'], after);
    expect(text).toContain(`Serial Number: ${first.serial}`);
    expect(text).toMatch(/Key Compromise/);
    expect(opensslText(['crl', '-noout', '-CAfile', join(dir, 'ca', 'authority', 'ca.crt')], after)).toMatch(/verify OK/);
    const number = (pem: string) => Number(/crlNumber=(0x[0-9A-F]+)/.exec(opensslText(['crl', '-noout', '-crlnumber'], pem))?.[1]);
    expect(number(after)).toBeGreaterThan(number(before));

    // Idempotent, unknown serials are not found, the index survives a reopen.
    expect((await ca.revoke(first.serial)).revokedAt).toBe(record.revokedAt);
    expect(await codeOf(ca.revoke('0123456789ABCDEF'))).toBe('not_found');
    expect(await codeOf(ca.revoke('not-hex'))).toBe('invalid');
    const reopened = await ClusterCa.open(join(dir, 'ca'));
    expect(reopened.isRevoked(first.serial)).toBe(true);
    expect(await reopened.crlPem()).toBe(after);
  });

  it('rotates only a live certificate of the same host', async () => {
    const host5 = await ca.issueServerAndClientCert({ csrPem: makeCsr('/CN=host5').csrPem, commonName: 'host5', sanIps: ['10.0.0.5'] });
    const host6 = await ca.issueServerAndClientCert({ csrPem: makeCsr('/CN=host6').csrPem, commonName: 'host6', sanIps: ['10.0.0.6'] });
    const stolen = { csrPem: makeCsr('/CN=host6').csrPem, commonName: 'host6', sanIps: ['10.0.0.6'], previousSerial: host5.serial };
    expect(await codeOf(ca.rotateCertificate(stolen))).toBe('forbidden');
    expect(ca.isRevoked(host5.serial)).toBe(false);

    const rotated = await ca.rotateCertificate({ csrPem: makeCsr('/CN=host6').csrPem, commonName: 'host6', sanIps: ['10.0.0.6'], previousSerial: host6.serial });
    expect(rotated.revokedSerial).toBe(host6.serial);
    expect(ca.isRevoked(host6.serial)).toBe(true);
    expect(ca.certificate(host6.serial)?.revocationReason).toBe('superseded');
    expect(opensslText(['crl', '-noout', '-text'], rotated.crlPem)).toContain(host6.serial);
    expect(opensslText(['crl', '-noout', '-text'], rotated.crlPem)).toMatch(/Superseded/);
    expect(await codeOf(ca.rotateCertificate({ ...stolen, previousSerial: host6.serial }))).toBe('conflict');
  });

  it('keeps the manager client credentials and renews them once revoked', async () => {
    const first = await ca.managerClientCredentials();
    const again = await ca.managerClientCredentials();
    expect(again.serial).toBe(first.serial);
    expect((await stat(join(dir, 'ca', 'manager-client', 'client.key'))).mode & 0o777).toBe(0o600);
    await ca.revoke(first.serial, 'keyCompromise');
    const renewed = await ca.managerClientCredentials();
    expect(renewed.serial).not.toBe(first.serial);
    expect(renewed.commonName).toBe('drover-manager');
    // Near expiry also renews (the old one is revoked as superseded).
    const early = await ca.managerClientCredentials({ renewWithinDays: 400 });
    expect(early.serial).not.toBe(renewed.serial);
    expect(ca.certificate(renewed.serial)?.revocationReason).toBe('superseded');
  });

  it('re-signs the CRL once less than half of its validity is left', async () => {
    await expect(ClusterCa.open(join(dir, 'short-ca'), { crlValiditySeconds: 5 })).rejects.toMatchObject({ code: 'invalid' });
    const short = await ClusterCa.open(join(dir, 'short-ca'), { crlValiditySeconds: 10 });
    const first = await short.crl();
    const nextUpdate = (pem: string) => new Date(/nextUpdate=(.+)/.exec(opensslText(['crl', '-noout', '-nextupdate'], pem))?.[1] ?? '');
    // openssl writes whole seconds.
    expect(Math.abs(nextUpdate(first.crlPem).getTime() - first.nextUpdate.getTime())).toBeLessThan(1_000);
    expect(first.nextUpdate.getTime() - Date.now()).toBeLessThanOrEqual(10_000);
    expect(await short.crl()).toEqual(first);
    expect(await short.crlPem()).toBe(first.crlPem);
    await new Promise((resolve) => setTimeout(resolve, first.nextUpdate.getTime() - 5_000 - Date.now() + 200));
    const second = await short.crl();
    expect(second.crlNumber).toBe(first.crlNumber + 1);
    expect(second.nextUpdate.getTime()).toBeGreaterThan(first.nextUpdate.getTime());
    // A reopened CA serves the same CRL from its directory.
    expect(await (await ClusterCa.open(join(dir, 'short-ca'), { crlValiditySeconds: 10 })).crl()).toEqual(second);
  });

  it('refuses to open a CA directory that lost its certificate', async () => {
    const broken = join(dir, 'broken-ca');
    await ClusterCa.open(broken);
    await rm(join(broken, 'authority', 'ca.crt'));
    await expect(ClusterCa.open(broken)).rejects.toMatchObject({ code: 'internal', message: /incomplete/ });
  });

  it('issues a manager server certificate whose chain ends at the CA', async () => {
    const server = await ca.issueManagerServerCert({ sanIps: ['127.0.0.1'], sanDns: ['manager.lab'] });
    const certificate = new X509Certificate(server.certPem);
    expect(certificate.keyUsage).toEqual([serverAuth]);
    expect(server.chainPem).toContain(ca.caCertPem().trim());
    expect(certificate.subject).toBe('CN=drover-manager-api');
  });
});

import { X509Certificate, createPrivateKey, randomBytes, type KeyObject } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { errors } from '@drover/core';
import { runOpenssl } from './openssl.js';
import { assertCrlUsable, inspectCrl, type CrlFacts } from './crl.js';

/** What the agent's TLS server needs; everything PEM. */
export interface AgentIdentity {
  keyPem: string;
  certPem: string;
  caPem: string;
  crlPem?: string;
}

export interface AgentIdentityRequest {
  commonName: string;
  sanIps?: string[];
  sanDns?: string[];
}

export interface CertificateFacts {
  commonName: string;
  serial: string;
  fingerprint: string;
  notBefore: Date;
  notAfter: Date;
  sanIps: string[];
  sanDns: string[];
}

/**
 * Layout of the agent's TLS directory (0700):
 *   pending.key, pending.csr  a key and CSR waiting for a certificate (join, rotation)
 *   identity.pem              private key + certificate in ONE file (0600), so a
 *                             rotation swaps both with a single rename
 *   ca.crt                    the cluster CA (the only CA the agent trusts)
 *   crl.pem                   the newest CRL the manager sent
 *   join.json                 host id and manager URL, written by joinCluster
 */
const files = {
  pendingKey: 'pending.key',
  pendingCsr: 'pending.csr',
  identity: 'identity.pem',
  ca: 'ca.crt',
  crl: 'crl.pem',
  join: 'join.json',
} as const;

const serverAuth = '1.3.6.1.5.5.7.3.1';
const clientAuth = '1.3.6.1.5.5.7.3.2';
const clockSkewMs = 5 * 60_000;
const defaultTimeoutMs = 30_000;

/**
 * Makes a new ECDSA P-256 key (0600) and a CSR for CN=<commonName>. They wait in
 * `pending.*` until saveAgentCertificate; a current identity is left alone, so the
 * agent keeps serving during a rotation. SANs are sent to the manager beside the CSR
 * (the CA takes them from the request, not from the CSR).
 */
export async function createAgentIdentity(dir: string, request: AgentIdentityRequest, timeoutMs = defaultTimeoutMs): Promise<{ csrPem: string }> {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(request.commonName)) {
    throw errors.invalid(`agent name "${request.commonName}" is not a valid certificate common name`, { commonName: request.commonName });
  }
  for (const ip of request.sanIps ?? []) if (isIP(ip) === 0) throw errors.invalid(`sanIps: "${ip}" is not an IP address`);
  await ensurePrivateDir(dir);
  const key = await runOpenssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'], { timeoutMs });
  if (!key.stdout.includes('-----BEGIN PRIVATE KEY-----')) throw errors.internal('openssl genpkey produced no key');
  const keyPath = join(dir, files.pendingKey);
  await atomicWrite(keyPath, key.stdout, 0o600);
  const csr = await runOpenssl(['req', '-new', '-config', '/dev/null', '-key', keyPath, '-subj', `/CN=${request.commonName}`], { timeoutMs });
  if (!csr.stdout.includes('-----BEGIN CERTIFICATE REQUEST-----')) throw errors.internal('openssl req produced no CSR');
  await atomicWrite(join(dir, files.pendingCsr), csr.stdout, 0o644);
  return { csrPem: csr.stdout };
}

/**
 * Installs a certificate from the manager. It must be signed by `caPem`, be valid
 * now, carry both serverAuth and clientAuth, and belong to the pending key (join,
 * rotation) or to the current one (re-delivery). A CRL, when given, must be signed
 * by the same CA and be usable now; it is not installed when a newer one already is
 * (no rollback). The identity switches atomically; the pending key is then removed.
 */
export async function saveAgentCertificate(dir: string, certPem: string, caPem: string, crlPem?: string, timeoutMs = defaultTimeoutMs): Promise<AgentIdentity> {
  const certificate = parsePem(certPem, 'certificate');
  const ca = parsePem(caPem, 'CA certificate');
  if (!ca.ca) throw errors.invalid('the CA certificate is not a CA (basicConstraints CA:false)');
  if (!certificate.checkIssued(ca) || !certificate.verify(ca.publicKey)) {
    throw errors.invalid(`certificate "${certificate.subject}" is not signed by the cluster CA "${ca.subject}"`);
  }
  const now = Date.now();
  if (new Date(certificate.validFrom).getTime() - clockSkewMs > now || new Date(certificate.validTo).getTime() <= now) {
    throw errors.invalid(`certificate is not valid now (${certificate.validFrom} .. ${certificate.validTo})`);
  }
  const usages = certificate.keyUsage ?? [];
  if (!usages.includes(serverAuth) || !usages.includes(clientAuth)) {
    throw errors.invalid('agent certificate must allow both serverAuth and clientAuth', { extendedKeyUsage: usages });
  }
  const offeredCrl = crlPem === undefined ? undefined : await inspectCrl(crlPem, caPem, timeoutMs);
  if (offeredCrl) assertCrlUsable(offeredCrl);

  return withDirLock(dir, async () => {
    const candidates = [await readOptional(join(dir, files.pendingKey)), splitIdentity(await readOptional(join(dir, files.identity)))?.keyPem];
    const keyPem = candidates.find((pem) => pem !== undefined && certificate.checkPrivateKey(privateKey(pem)));
    if (keyPem === undefined) throw errors.invalid('certificate does not belong to this agent\'s key (no pending or current key matches)');

    await ensurePrivateDir(dir);
    const previousCa = await readOptional(join(dir, files.ca));
    await atomicWrite(join(dir, files.ca), normalizePem(caPem), 0o644);
    if (crlPem !== undefined && offeredCrl !== undefined) {
      // Never a rollback: a newer CRL pushed meanwhile stays (an installed CRL of another CA does not count).
      const installed = await installedCrlFacts(dir, caPem, timeoutMs);
      if (installed === undefined || offeredCrl.crlNumber >= installed.crlNumber) await atomicWrite(join(dir, files.crl), normalizePem(crlPem), 0o644);
    } else if (previousCa !== undefined && parsePem(previousCa, 'CA certificate').fingerprint256 !== ca.fingerprint256) {
      // A CRL of the previous CA would make OpenSSL refuse every client of the new one.
      await rm(join(dir, files.crl), { force: true });
    }
    await atomicWrite(join(dir, files.identity), `${normalizePem(keyPem)}${normalizePem(certPem)}`, 0o600);
    await rm(join(dir, files.pendingKey), { force: true });
    await rm(join(dir, files.pendingCsr), { force: true });
    const identity = await loadAgentIdentity(dir);
    if (!identity) throw errors.internal(`identity in ${dir} vanished while being saved`);
    return identity;
  });
}

export interface SavedCrl extends CrlFacts {
  /** False when the same CRL number was installed already (nothing was written). */
  changed: boolean;
}

/**
 * Installs a CRL the manager pushes (after each revocation, and before the current
 * one expires). It must be signed by the cluster CA (`invalid` otherwise), be usable
 * now (not expired, not from the future: `invalid`), and must not be older than the
 * installed one (`conflict`), so an old CRL cannot be replayed to un-revoke a serial.
 * The file is replaced atomically; the same number again changes nothing. The caller
 * reloads the TLS context (`applyAgentTlsContext`) when `changed`.
 */
export async function saveAgentCrl(dir: string, crlPem: string, timeoutMs = defaultTimeoutMs): Promise<SavedCrl> {
  const caPem = await readOptional(join(dir, files.ca));
  if (caPem === undefined) throw errors.conflict(`agent in ${dir} has not joined a cluster: no CA to check the CRL against`);
  const facts = await inspectCrl(crlPem, caPem, timeoutMs);
  return withDirLock(dir, async () => {
    const current = await installedCrlFacts(dir, caPem, timeoutMs);
    if (current && facts.crlNumber < current.crlNumber) {
      throw errors.conflict(`CRL number ${facts.crlNumber} is older than the installed ${current.crlNumber}`, {
        offered: facts.crlNumber.toString(),
        installed: current.crlNumber.toString(),
      });
    }
    if (current && facts.crlNumber === current.crlNumber) return { ...current, changed: false };
    assertCrlUsable(facts);
    await atomicWrite(join(dir, files.crl), normalizePem(crlPem), 0o644);
    return { ...facts, changed: true };
  });
}

/** Number, dates and revoked serials of the installed CRL; undefined when there is none. */
export async function loadAgentCrl(dir: string, timeoutMs = defaultTimeoutMs): Promise<CrlFacts | undefined> {
  const caPem = await readOptional(join(dir, files.ca));
  const crlPem = await readOptional(join(dir, files.crl));
  if (caPem === undefined || crlPem === undefined) return undefined;
  return inspectCrl(crlPem, caPem, timeoutMs);
}

/** The installed CRL if it is one of `caPem`'s (anything else is about to be replaced). */
async function installedCrlFacts(dir: string, caPem: string, timeoutMs: number): Promise<CrlFacts | undefined> {
  const currentPem = await readOptional(join(dir, files.crl));
  if (currentPem === undefined) return undefined;
  return inspectCrl(currentPem, caPem, timeoutMs).catch(() => undefined);
}

const dirLocks = new Map<string, Promise<unknown>>();

/** One change of a TLS directory's CRL or identity at a time (the read-compare-write must not interleave). */
function withDirLock<T>(dir: string, work: () => Promise<T>): Promise<T> {
  const previous = dirLocks.get(dir) ?? Promise.resolve();
  const result = previous.then(work, work);
  const settled = result.catch(() => undefined);
  dirLocks.set(dir, settled);
  void settled.then(() => {
    if (dirLocks.get(dir) === settled) dirLocks.delete(dir);
  });
  return result;
}

/** The agent's identity, or undefined when it has not joined a cluster yet. */
export async function loadAgentIdentity(dir: string): Promise<AgentIdentity | undefined> {
  const bundle = splitIdentity(await readOptional(join(dir, files.identity)));
  if (!bundle) return undefined;
  const caPem = await readOptional(join(dir, files.ca));
  if (caPem === undefined) throw errors.internal(`${join(dir, files.identity)} exists but ${files.ca} is missing`);
  const certificate = parsePem(bundle.certPem, 'certificate');
  if (!certificate.checkPrivateKey(privateKey(bundle.keyPem))) throw errors.internal(`${join(dir, files.identity)}: key and certificate do not match`);
  const crlPem = await readOptional(join(dir, files.crl));
  return { keyPem: bundle.keyPem, certPem: bundle.certPem, caPem, ...(crlPem === undefined ? {} : { crlPem }) };
}

export interface JoinRecord {
  hostId: string;
  managerUrl: string;
  joinedAt: string;
}

export async function saveJoinRecord(dir: string, record: JoinRecord): Promise<void> {
  await atomicWrite(join(dir, files.join), `${JSON.stringify(record, null, 2)}\n`, 0o600);
}

export async function loadJoinRecord(dir: string): Promise<JoinRecord | undefined> {
  const text = await readOptional(join(dir, files.join));
  return text === undefined ? undefined : (JSON.parse(text) as JoinRecord);
}

/** Serial, names and dates of a certificate (for rotation decisions and status). */
export function describeCertificate(certPem: string): CertificateFacts {
  const certificate = parsePem(certPem, 'certificate');
  const alternativeNames = (certificate.subjectAltName ?? '').split(',').map((entry) => entry.trim());
  return {
    commonName: /^CN=(.*)$/m.exec(certificate.subject)?.[1] ?? '',
    serial: certificate.serialNumber.toUpperCase().replace(/^0+(?=.)/, ''),
    fingerprint: certificate.fingerprint256,
    notBefore: new Date(certificate.validFrom),
    notAfter: new Date(certificate.validTo),
    sanIps: alternativeNames.filter((entry) => entry.startsWith('IP Address:')).map((entry) => entry.slice('IP Address:'.length)),
    sanDns: alternativeNames.filter((entry) => entry.startsWith('DNS:')).map((entry) => entry.slice('DNS:'.length)),
  };
}

function splitIdentity(text: string | undefined): { keyPem: string; certPem: string } | undefined {
  if (text === undefined) return undefined;
  const keyPem = /-----BEGIN PRIVATE KEY-----[\s\S]+?-----END PRIVATE KEY-----/.exec(text)?.[0];
  const certPem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(text)?.[0];
  if (!keyPem || !certPem) throw errors.internal('agent identity file lacks its key or certificate');
  return { keyPem: `${keyPem}\n`, certPem: `${certPem}\n` };
}

function parsePem(pem: string, what: string): X509Certificate {
  if (typeof pem !== 'string') throw errors.invalid(`${what} must be a PEM string`);
  try {
    return new X509Certificate(pem);
  } catch (error) {
    throw errors.invalid(`${what} is not a PEM certificate: ${(error as Error).message}`);
  }
}

function privateKey(pem: string): KeyObject {
  return createPrivateKey(pem);
}

function normalizePem(pem: string): string {
  return `${pem.trim()}\n`;
}

async function ensurePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const info = await stat(dir);
  if ((info.mode & 0o077) !== 0) await chmod(dir, 0o700);
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** Temporary file + rename; the mode is set at creation, so a key is never readable by others. */
async function atomicWrite(path: string, content: string, mode: number): Promise<void> {
  const temporary = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(temporary, content, { mode, flag: 'wx' });
  await rename(temporary, path);
}

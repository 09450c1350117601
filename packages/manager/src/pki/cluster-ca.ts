import { X509Certificate, createPrivateKey, randomBytes, type KeyObject } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DroverError, errors } from '@drover/core';
import { runOpenssl, defaultOpensslTimeoutMs } from '@drover/agent';
import { emptyCaIndex, readCaIndex, revocationReasons, writeCaIndex, type CaIndex, type CertificateProfile, type CertificateRecord, type RevocationReason } from './ca-index.js';
import {
  commonNameOf,
  fingerprint,
  managerClientCommonName,
  managerServerCommonName,
  normalizeSerial,
  parseCertificate,
  randomSerial,
  validateAgentCommonName,
  validateDays,
  validateSanDns,
  validateSanIps,
} from './cert-fields.js';
import { generateCrl, inspectCsr, selfSignCa, signCsr, withWorkDir, type LeafExtensions } from './openssl-ca.js';

export interface ClusterCaOptions {
  /** How long a CRL stays valid (default 90 days); a fresh one is made when less than half of it is left. */
  crlValidityDays?: number;
  /** The same in seconds (at least 10), for tests that watch a CRL expire; wins over `crlValidityDays`. */
  crlValiditySeconds?: number;
  /** Timeout of each openssl run. */
  timeoutMs?: number;
  /**
   * Several managers sharing this CA (cluster/secrets.ts `sharedCaState`): every change
   * of the index runs inside `exclusive`, which holds a lock across the managers, puts the
   * latest `index.json` and `crl.pem` of the store into `dir` before `work`, and stores
   * them after it. Absent: one process owns the directory.
   */
  shared?: { exclusive<T>(work: () => Promise<T>): Promise<T> };
}

export interface IssueAgentCertificateRequest {
  /** The agent's CSR (PEM, at most 8 KiB); its subject must be exactly CN=<commonName>. */
  csrPem: string;
  commonName: string;
  sanDns?: string[];
  sanIps?: string[];
  /** Validity in days (default 365), clamped to the CA's own end of validity. */
  days?: number;
}

export interface IssuedCertificate {
  certPem: string;
  serial: string;
  commonName: string;
  fingerprint: string;
  notBefore: Date;
  notAfter: Date;
}

export interface IssuedCredentials extends IssuedCertificate {
  keyPem: string;
  /** Leaf then CA certificate: what a TLS server presents. */
  chainPem: string;
}

export interface RotateCertificateRequest extends IssueAgentCertificateRequest {
  /** Serial of the certificate being replaced; revoked ("superseded") once the new one exists. */
  previousSerial: string;
}

/** The CA's current CRL. */
export interface CurrentCrl {
  crlPem: string;
  /** Grows with every CRL the CA signs: agents refuse a smaller one. */
  crlNumber: number;
  nextUpdate: Date;
}

export interface RotatedCertificate extends IssuedCertificate {
  revokedSerial: string;
  crlPem: string;
}

const caValidityDays = 3650;
const maxLeafDays = 3650;
const defaultLeafDays = 365;
const defaultCrlValidityDays = 90;
/** Back-dating of notBefore / lastUpdate, for hosts whose clock lags the manager's. */
const clockSkewMs = 5 * 60_000;
const dayMs = 86_400_000;
/** Index entries expired this long ago are dropped (they left the CRL at expiry). */
const forgetExpiredAfterMs = 365 * dayMs;

/**
 * The cluster's certificate authority: an ECDSA P-256 key and a self-signed
 * certificate in `dir`, an index of everything issued and revoked, and the CRL.
 *
 * Layout of `dir` (0700):
 *   authority/ca.key   CA private key (0600)
 *   authority/ca.crt   CA certificate (10 years, pathlen 0)
 *   index.json         issued and revoked serials, CRL number
 *   crl.pem            the current CRL
 *   manager-client/    the manager's own client credentials (see managerClientCredentials)
 *
 * One process owns a CA directory; calls that change the index are serialized.
 */
export class ClusterCa {
  readonly #caCertPem: string;
  readonly #caCert: X509Certificate;
  readonly #timeoutMs: number;
  readonly #crlValidityMs: number;
  #index: CaIndex;
  /** The CRL in crl.pem, once read or written by this process. */
  #crl: CurrentCrl | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  readonly #shared: ClusterCaOptions['shared'];

  private constructor(
    readonly dir: string,
    caCertPem: string,
    index: CaIndex,
    options: ClusterCaOptions,
  ) {
    this.#caCertPem = caCertPem;
    this.#caCert = new X509Certificate(caCertPem);
    this.#index = index;
    this.#timeoutMs = options.timeoutMs ?? defaultOpensslTimeoutMs;
    this.#shared = options.shared;
    this.#crlValidityMs =
      options.crlValiditySeconds === undefined
        ? validateDays(options.crlValidityDays, defaultCrlValidityDays, 3650) * dayMs
        : validateCrlSeconds(options.crlValiditySeconds);
  }

  /** Opens the CA in `dir`, creating key, certificate and index on first use. */
  static async open(dir: string, options: ClusterCaOptions = {}): Promise<ClusterCa> {
    const timeoutMs = options.timeoutMs ?? defaultOpensslTimeoutMs;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await chmod(dir, 0o700);
    const authority = join(dir, 'authority');
    if (!(await exists(join(authority, 'ca.crt')))) await createAuthority(dir, timeoutMs);
    const keyPath = join(authority, 'ca.key');
    for (const file of [keyPath, join(authority, 'ca.crt')]) {
      if (!(await exists(file))) throw errors.internal(`CA directory ${dir} is incomplete: ${file} is missing (restore it from a backup)`);
    }
    const keyStat = await stat(keyPath);
    // A key readable by others is tightened rather than refused: the directory is
    // 0700 already, and refusing would take the whole cluster down.
    if ((keyStat.mode & 0o077) !== 0) await chmod(keyPath, 0o600);
    const caCertPem = await readFile(join(authority, 'ca.crt'), 'utf8');
    const caCert = parseCertificate(caCertPem);
    if (!caCert.checkPrivateKey(await loadPrivateKey(keyPath))) {
      throw errors.internal(`CA key ${keyPath} does not belong to the CA certificate`);
    }
    let index = await readCaIndex(join(dir, 'index.json'));
    if (index === undefined) {
      index = emptyCaIndex();
      await writeCaIndex(join(dir, 'index.json'), index);
    }
    return new ClusterCa(dir, caCertPem, index, options);
  }

  /** The random part of the CA's CN ("Drover cluster CA <id>"). */
  get id(): string {
    return (commonNameOf(this.#caCert) ?? '').replace(/^Drover cluster CA /, '');
  }

  caCertPem(): string {
    return this.#caCertPem;
  }

  /** What an operator pins when joining a host (`--ca-fingerprint`). */
  caFingerprint(): string {
    return this.#caCert.fingerprint256;
  }

  /** SHA-256 fingerprint ("AB:CD:...") of any PEM certificate. */
  fingerprint(certPem: string): string {
    return fingerprint(certPem);
  }

  /**
   * Signs an agent's CSR into a certificate that serves the agent API (serverAuth)
   * and authenticates the agent to peers (clientAuth). The CSR's subject must be
   * exactly CN=<commonName>; SANs come from the request, never from the CSR.
   */
  async issueServerAndClientCert(request: IssueAgentCertificateRequest): Promise<IssuedCertificate> {
    const commonName = validateAgentCommonName(request.commonName);
    const sanIps = validateSanIps(request.sanIps);
    const sanDns = validateSanDns(request.sanDns);
    if (sanIps.length + sanDns.length === 0) {
      throw errors.invalid('an agent certificate needs at least one IP or DNS subject alternative name (the manager checks it)');
    }
    const days = validateDays(request.days, defaultLeafDays, maxLeafDays);
    const csr = await inspectCsr(request.csrPem, this.#timeoutMs);
    if (csr.subject !== `CN=${commonName}`) {
      throw errors.invalid(`CSR subject "${csr.subject}" does not match the requested "CN=${commonName}"`, {
        csrSubject: csr.subject,
        commonName,
      });
    }
    const issued = await this.#sign(request.csrPem, commonName, days, { serverAuth: true, clientAuth: true, sanIps, sanDns });
    if (!parseCertificate(issued.certPem).publicKey.equals(csr.publicKey)) {
      throw errors.internal('issued certificate does not carry the CSR key');
    }
    await this.#exclusive(() => this.#recordUnlocked(recordOf(issued, 'agent')));
    return issued;
  }

  /** The manager's client credentials for calling agents: CN "drover-manager", clientAuth only. */
  async issueManagerClientCert(options: { days?: number } = {}): Promise<IssuedCredentials> {
    const days = validateDays(options.days, defaultLeafDays, maxLeafDays);
    return this.#issueWithNewKey(managerClientCommonName, days, { serverAuth: false, clientAuth: true, sanIps: [], sanDns: [] }, 'manager-client');
  }

  /** A server certificate for the manager's own HTTPS API (what joining agents pin through the CA). */
  async issueManagerServerCert(options: { sanDns?: string[]; sanIps?: string[]; days?: number }): Promise<IssuedCredentials> {
    const sanIps = validateSanIps(options.sanIps);
    const sanDns = validateSanDns(options.sanDns);
    if (sanIps.length + sanDns.length === 0) throw errors.invalid('a server certificate needs at least one IP or DNS name');
    const days = validateDays(options.days, defaultLeafDays, maxLeafDays);
    return this.#issueWithNewKey(managerServerCommonName, days, { serverAuth: true, clientAuth: false, sanIps, sanDns }, 'manager-server');
  }

  /**
   * The manager's client credentials, kept in `dir/manager-client/`: issued on first
   * use and re-issued (the old one revoked as superseded) when revoked or within
   * `renewWithinDays` of expiry.
   */
  async managerClientCredentials(options: { renewWithinDays?: number; days?: number } = {}): Promise<IssuedCredentials> {
    return this.#exclusive(async () => {
      const folder = join(this.dir, 'manager-client');
      const renewWithinMs = (options.renewWithinDays ?? 30) * dayMs;
      let current: IssuedCredentials | undefined;
      try {
        const keyPem = await readFile(join(folder, 'client.key'), 'utf8');
        const certPem = await readFile(join(folder, 'client.crt'), 'utf8');
        current = { ...describe(certPem), keyPem, chainPem: `${certPem.trimEnd()}\n${this.#caCertPem}` };
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
      if (current && !this.#isRevoked(current.serial) && current.notAfter.getTime() - Date.now() > renewWithinMs) return current;
      const days = validateDays(options.days, defaultLeafDays, maxLeafDays);
      const fresh = await this.#issueWithNewKeyUnlocked(managerClientCommonName, days, { serverAuth: false, clientAuth: true, sanIps: [], sanDns: [] }, 'manager-client');
      await mkdir(folder, { recursive: true, mode: 0o700 });
      await atomicWrite(join(folder, 'client.key'), fresh.keyPem, 0o600);
      await atomicWrite(join(folder, 'client.crt'), fresh.certPem, 0o644);
      if (current && !this.#isRevoked(current.serial) && this.#index.certificates.some((entry) => entry.serial === current.serial)) {
        await this.#revokeUnlocked(current.serial, 'superseded');
      }
      return fresh;
    });
  }

  /**
   * Rotation, manager side: signs the agent's new CSR, then revokes the certificate
   * it replaces. The previous certificate must be a live agent certificate of the
   * same host, so one host cannot retire another's.
   */
  async rotateCertificate(request: RotateCertificateRequest): Promise<RotatedCertificate> {
    const previousSerial = normalizeSerial(request.previousSerial);
    const previous = this.certificate(previousSerial);
    if (!previous) throw errors.notFound('certificate', previousSerial);
    if (previous.profile !== 'agent' || previous.commonName !== request.commonName) {
      throw errors.forbidden(`certificate ${previousSerial} belongs to "${previous.commonName}", not to "${request.commonName}"`, {
        serial: previousSerial,
      });
    }
    if (previous.revokedAt) throw errors.conflict(`certificate ${previousSerial} is already revoked; the host must join again`, { serial: previousSerial });
    const issued = await this.issueServerAndClientCert(request);
    await this.revoke(previousSerial, 'superseded');
    return { ...issued, revokedSerial: previousSerial, crlPem: await this.crlPem() };
  }

  /** Revokes a serial and publishes a new CRL at once. Revoking twice is harmless. */
  async revoke(serial: string, reason: RevocationReason = 'unspecified'): Promise<CertificateRecord> {
    if (!(revocationReasons as readonly string[]).includes(reason)) {
      throw errors.invalid(`unknown revocation reason "${reason}"`, { reason, known: [...revocationReasons] });
    }
    return this.#exclusive(() => this.#revokeUnlocked(normalizeSerial(serial), reason));
  }

  isRevoked(serial: string): boolean {
    return this.#isRevoked(normalizeSerial(serial));
  }

  certificate(serial: string): CertificateRecord | undefined {
    const wanted = normalizeSerial(serial);
    const record = this.#index.certificates.find((entry) => entry.serial === wanted);
    return record ? { ...record } : undefined;
  }

  certificates(): CertificateRecord[] {
    return this.#index.certificates.map((entry) => ({ ...entry }));
  }

  /** The current CRL (PEM); see `crl()`. */
  async crlPem(): Promise<string> {
    return (await this.crl()).crlPem;
  }

  /**
   * The current CRL with its number and end of validity. A new one is signed when
   * none exists or when less than half of its validity is left, so calling this
   * regularly (the manager does at every heartbeat round, and pushes the result to
   * agents) keeps agents from holding an expired CRL, which would make them refuse
   * every client, the manager included.
   */
  async crl(): Promise<CurrentCrl> {
    return this.#exclusive(async () => {
      const next = this.#index.crlNextUpdate ? Date.parse(this.#index.crlNextUpdate) : 0;
      const freshEnough = next - Date.now() > this.#crlValidityMs / 2;
      if (freshEnough) {
        if (this.#crl?.crlNumber === this.#index.crlNumber) return this.#crl;
        try {
          // crlNextUpdate is set only once crl.pem holds the CRL numbered crlNumber.
          const crlPem = await readFile(join(this.dir, 'crl.pem'), 'utf8');
          this.#crl = { crlPem, crlNumber: this.#index.crlNumber, nextUpdate: new Date(next) };
          return this.#crl;
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
        }
      }
      return this.#publishCrl();
    });
  }

  #isRevoked(serial: string): boolean {
    return this.#index.certificates.some((entry) => entry.serial === serial && entry.revokedAt !== undefined);
  }

  async #revokeUnlocked(serial: string, reason: RevocationReason): Promise<CertificateRecord> {
    const record = this.#index.certificates.find((entry) => entry.serial === serial);
    if (!record) throw errors.notFound('certificate', serial);
    if (record.revokedAt) return { ...record };
    const updated: CertificateRecord = { ...record, revokedAt: new Date().toISOString(), revocationReason: reason };
    // Forgetting crlNextUpdate in the same write means a crash before the new CRL
    // is out still makes the next crlPem() publish one.
    await this.#saveIndex({
      ...this.#index,
      crlNextUpdate: undefined,
      certificates: this.#index.certificates.map((entry) => (entry.serial === serial ? updated : entry)),
    });
    await this.#publishCrl();
    return { ...updated };
  }

  async #publishCrl(): Promise<CurrentCrl> {
    const now = Date.now();
    const crlNumber = this.#index.crlNumber + 1;
    const nextUpdate = new Date(now + this.#crlValidityMs);
    const revoked = this.#index.certificates
      .filter((entry) => entry.revokedAt !== undefined && Date.parse(entry.notAfter) > now)
      .map((entry) => ({
        serial: entry.serial,
        commonName: entry.commonName,
        notAfter: new Date(entry.notAfter),
        revokedAt: new Date(entry.revokedAt as string),
        reason: entry.revocationReason ?? 'unspecified',
      }));
    const crlPem = await generateCrl({
      ...this.#paths(),
      crlNumber,
      revoked,
      lastUpdate: new Date(now - clockSkewMs),
      nextUpdate,
      timeoutMs: this.#timeoutMs,
    });
    // The number is taken before the file is written (never reused after a crash);
    // crlNextUpdate is set only once the file is in place.
    await this.#saveIndex({ ...this.#index, crlNumber, crlNextUpdate: undefined });
    await atomicWrite(join(this.dir, 'crl.pem'), crlPem, 0o644);
    await this.#saveIndex({ ...this.#index, crlNextUpdate: nextUpdate.toISOString() });
    this.#crl = { crlPem, crlNumber, nextUpdate };
    return this.#crl;
  }

  #issueWithNewKey(commonName: string, days: number, extensions: LeafExtensions, profile: CertificateProfile): Promise<IssuedCredentials> {
    return this.#issueWithNewKeyUnlocked(commonName, days, extensions, profile, (record) => this.#exclusive(() => this.#recordUnlocked(record)));
  }

  /** `record` is how the new certificate enters the index: under the lock or not. */
  async #issueWithNewKeyUnlocked(
    commonName: string,
    days: number,
    extensions: LeafExtensions,
    profile: CertificateProfile,
    record: (record: CertificateRecord) => Promise<void> = (entry) => this.#recordUnlocked(entry),
  ): Promise<IssuedCredentials> {
    const { keyPem, csrPem } = await withWorkDir(async (work) => {
      const key = await generateEcPrivateKey(this.#timeoutMs);
      const keyPath = join(work, 'leaf.key');
      await writeFile(keyPath, key, { mode: 0o600 });
      const csr = await runOpenssl(['req', '-new', '-config', '/dev/null', '-key', keyPath, '-subj', `/CN=${commonName}`], {
        timeoutMs: this.#timeoutMs,
      });
      return { keyPem: key, csrPem: csr.stdout };
    });
    const issued = await this.#sign(csrPem, commonName, days, extensions);
    await record(recordOf(issued, profile));
    return { ...issued, keyPem, chainPem: `${issued.certPem.trimEnd()}\n${this.#caCertPem}` };
  }

  async #sign(csrPem: string, commonName: string, days: number, extensions: LeafExtensions): Promise<IssuedCertificate> {
    const now = Date.now();
    const caEnd = new Date(this.#caCert.validTo).getTime();
    const notAfter = new Date(Math.min(now + days * dayMs, caEnd));
    if (notAfter.getTime() <= now) throw new DroverError('unavailable', 'the cluster CA has expired; it must be replaced');
    const serial = randomSerial();
    const certPem = await signCsr({
      ...this.#paths(),
      csrPem,
      commonName,
      serial,
      notBefore: new Date(now - clockSkewMs),
      notAfter,
      extensions,
      timeoutMs: this.#timeoutMs,
    });
    const issued = describe(certPem);
    const certificate = parseCertificate(certPem);
    if (issued.serial !== normalizeSerial(serial) || !certificate.verify(this.#caCert.publicKey)) {
      throw errors.internal('openssl issued a certificate other than the one requested');
    }
    return issued;
  }

  #recordUnlocked(record: CertificateRecord): Promise<void> {
    return this.#saveIndex({ ...this.#index, certificates: [...this.#index.certificates, record] });
  }

  async #saveIndex(index: CaIndex): Promise<void> {
    const horizon = Date.now() - forgetExpiredAfterMs;
    const kept = { ...index, certificates: index.certificates.filter((entry) => Date.parse(entry.notAfter) > horizon) };
    await writeCaIndex(join(this.dir, 'index.json'), kept);
    this.#index = kept;
  }

  #paths(): { caCertPath: string; caKeyPath: string } {
    return { caCertPath: join(this.dir, 'authority', 'ca.crt'), caKeyPath: join(this.dir, 'authority', 'ca.key') };
  }

  /**
   * Takes the index as other managers left it (shared CA), so revocations made through
   * any manager are in this one's checks and CRLs; the CRL is re-signed when due.
   */
  async refresh(): Promise<void> {
    if (this.#shared) await this.#exclusive(async () => undefined);
  }

  async #reload(): Promise<void> {
    const index = await readCaIndex(join(this.dir, 'index.json'));
    if (index) this.#index = index;
  }

  /** Serializes index changes (across managers, when shared). Not re-entrant: never call it from inside itself. */
  #exclusive<T>(work: () => Promise<T>): Promise<T> {
    const shared = this.#shared;
    const run = shared
      ? () =>
          shared.exclusive(async () => {
            await this.#reload();
            return work();
          })
      : work;
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => undefined);
    return result;
  }
}

function validateCrlSeconds(seconds: unknown): number {
  if (typeof seconds !== 'number' || !Number.isInteger(seconds) || seconds < 10 || seconds > 3650 * 86_400) {
    throw errors.invalid(`crlValiditySeconds must be an integer between 10 and ${3650 * 86_400}, got ${JSON.stringify(seconds)}`);
  }
  return seconds * 1000;
}

function recordOf(issued: IssuedCertificate, profile: CertificateProfile): CertificateRecord {
  return {
    serial: issued.serial,
    commonName: issued.commonName,
    profile,
    fingerprint: issued.fingerprint,
    notBefore: issued.notBefore.toISOString(),
    notAfter: issued.notAfter.toISOString(),
    issuedAt: new Date().toISOString(),
  };
}

function describe(certPem: string): IssuedCertificate {
  const certificate = parseCertificate(certPem);
  return {
    certPem,
    serial: normalizeSerial(certificate.serialNumber),
    commonName: commonNameOf(certificate) ?? '',
    fingerprint: certificate.fingerprint256,
    notBefore: new Date(certificate.validFrom),
    notAfter: new Date(certificate.validTo),
  };
}

async function generateEcPrivateKey(timeoutMs: number): Promise<string> {
  const run = await runOpenssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'], { timeoutMs });
  if (!run.stdout.includes('-----BEGIN PRIVATE KEY-----')) throw errors.internal('openssl genpkey produced no key');
  return run.stdout;
}

/**
 * Creates key and certificate in a staging directory and renames it into place:
 * a crash leaves either no authority or a complete one, and of two processes racing
 * to create it exactly one wins (rename onto a non-empty directory fails).
 */
async function createAuthority(dir: string, timeoutMs: number): Promise<void> {
  const staging = join(dir, `.authority-${randomBytes(6).toString('hex')}`);
  await mkdir(staging, { mode: 0o700 });
  try {
    const keyPath = join(staging, 'ca.key');
    await writeFile(keyPath, await generateEcPrivateKey(timeoutMs), { mode: 0o600, flag: 'wx' });
    const now = Date.now();
    const certPem = await selfSignCa({
      caKeyPath: keyPath,
      commonName: `Drover cluster CA ${randomBytes(8).toString('hex')}`,
      serial: randomSerial(),
      notBefore: new Date(now - clockSkewMs),
      notAfter: new Date(now + caValidityDays * dayMs),
      timeoutMs,
    });
    await writeFile(join(staging, 'ca.crt'), certPem, { mode: 0o644 });
    try {
      await rename(staging, join(dir, 'authority'));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error;
      // Another process created the authority first: use theirs.
    }
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

async function loadPrivateKey(path: string): Promise<KeyObject> {
  return createPrivateKey(await readFile(path, 'utf8'));
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}

async function atomicWrite(path: string, content: string, mode: number): Promise<void> {
  const temporary = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(temporary, content, { mode });
  await rename(temporary, path);
}

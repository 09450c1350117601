import { X509Certificate, createHash, randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { errors } from '@drover/core';

/** The CN the manager's client certificate carries; agents authorize exactly this name. */
export const managerClientCommonName = 'drover-manager';
/** The CN of the manager's own HTTPS (API) certificate. */
export const managerServerCommonName = 'drover-manager-api';

const maxSanEntries = 32;
const commonNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const dnsLabelPattern = /^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$/;

/**
 * Host names become the CN of agent certificates. The alphabet is narrow on purpose:
 * the value is written into `-subj` and into an `openssl ca` index line, where `/`,
 * `=`, `,` or a newline would change the meaning. Names starting with
 * "drover-manager" are reserved, otherwise a joining host could obtain a certificate
 * that agents take for the manager's.
 */
export function validateAgentCommonName(commonName: unknown): string {
  if (typeof commonName !== 'string' || !commonNamePattern.test(commonName)) {
    throw errors.invalid(`common name ${JSON.stringify(commonName)} is not a valid host name (letters, digits, ".", "_", "-"; at most 63)`, {
      commonName,
    });
  }
  if (commonName.toLowerCase().startsWith('drover-manager')) {
    throw errors.invalid(`common name "${commonName}" is reserved for the manager`, { commonName });
  }
  return commonName;
}

export function validateSanIps(values: unknown): string[] {
  const list = validateList(values, 'sanIps');
  return list.map((value) => {
    if (isIP(value) === 0) throw errors.invalid(`sanIps: "${value}" is not an IP address`, { value });
    return value;
  });
}

export function validateSanDns(values: unknown): string[] {
  const list = validateList(values, 'sanDns');
  return list.map((value) => {
    const labels = value.split('.');
    if (value.length > 253 || !labels.every((label) => dnsLabelPattern.test(label))) {
      throw errors.invalid(`sanDns: "${value}" is not a DNS name`, { value });
    }
    return value.toLowerCase();
  });
}

function validateList(values: unknown, key: string): string[] {
  if (values === undefined) return [];
  if (!Array.isArray(values) || values.some((value) => typeof value !== 'string')) {
    throw errors.invalid(`${key} must be a list of strings`, { [key]: values });
  }
  if (values.length > maxSanEntries) throw errors.invalid(`${key} has ${values.length} entries; at most ${maxSanEntries}`);
  return [...new Set(values as string[])];
}

export function validateDays(days: unknown, fallback: number, max: number): number {
  const value = days ?? fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max) {
    throw errors.invalid(`days must be an integer between 1 and ${max}, got ${JSON.stringify(days)}`, { days });
  }
  return value;
}

/** 128 random bits, positive, always 32 hex digits (first byte 0x10..0x7f). */
export function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = 0x10 + ((bytes[0] ?? 0) % 0x70);
  return bytes.toString('hex').toUpperCase();
}

/** Serials as Node prints them: upper-case hex, no separators, no leading zeros. */
export function normalizeSerial(serial: unknown): string {
  if (typeof serial !== 'string') throw errors.invalid(`serial must be a hex string, got ${JSON.stringify(serial)}`);
  const hex = serial.replace(/:/g, '').toUpperCase().replace(/^0+(?=.)/, '');
  if (!/^[0-9A-F]{1,40}$/.test(hex)) throw errors.invalid(`serial "${serial}" is not a hex serial number`, { serial });
  return hex;
}

/** SHA-256 of the DER certificate, as Node prints it ("AB:CD:..."). */
export function fingerprint(certPem: string): string {
  return parseCertificate(certPem).fingerprint256;
}

/** Fingerprints compare without regard to case or colons. */
export function sameFingerprint(a: string, b: string): boolean {
  const canonical = (value: string) => value.replace(/[:\s]/g, '').toLowerCase();
  return canonical(a).length === 64 && canonical(a) === canonical(b);
}

export function parseCertificate(certPem: string): X509Certificate {
  try {
    return new X509Certificate(certPem);
  } catch (error) {
    throw errors.invalid(`not a PEM certificate: ${(error as Error).message}`);
  }
}

/** The first certificate of a PEM bundle (a chain file starts with its leaf). */
export function firstPemCertificate(pem: string): string {
  const match = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(pem);
  if (!match) throw errors.invalid('no PEM certificate found');
  return `${match[0]}\n`;
}

/** The CN of an X509Certificate subject ("CN=name" lines); undefined when absent. */
export function commonNameOf(certificate: X509Certificate): string | undefined {
  for (const line of certificate.subject.split('\n')) {
    if (line.startsWith('CN=')) return line.slice(3);
  }
  return undefined;
}

/** ASN.1 time as `openssl ca` wants it: UTCTime until 2049, GeneralizedTime after. */
export function opensslTime(date: Date): string {
  const iso = date.toISOString(); // 2026-01-01T00:00:00.000Z
  const digits = iso.slice(0, 19).replace(/[-T:]/g, '');
  return date.getUTCFullYear() < 2050 ? `${digits.slice(2)}Z` : `${digits}Z`;
}

export function sha256Hex(value: string | Buffer): string {
  return createHash('sha256').update(value).digest('hex');
}

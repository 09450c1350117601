import { readFile, rename, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { errors } from '@drover/core';

export type CertificateProfile = 'agent' | 'manager-client' | 'manager-server';

/** The reason names `openssl ca` understands in its index and writes into the CRL. */
export const revocationReasons = [
  'unspecified',
  'keyCompromise',
  'affiliationChanged',
  'superseded',
  'cessationOfOperation',
] as const;
export type RevocationReason = (typeof revocationReasons)[number];

export interface CertificateRecord {
  serial: string;
  commonName: string;
  profile: CertificateProfile;
  fingerprint: string;
  notBefore: string;
  notAfter: string;
  issuedAt: string;
  revokedAt?: string;
  revocationReason?: RevocationReason;
}

/**
 * The CA's own record of what it issued and revoked. It is the source of every CRL;
 * `openssl ca` only ever sees a throw-away database generated from it.
 */
export interface CaIndex {
  version: 1;
  /** Number of the last CRL issued (0: none yet). */
  crlNumber: number;
  /** When the current crl.pem stops being valid (ISO), if one was issued. */
  crlNextUpdate?: string;
  certificates: CertificateRecord[];
}

export function emptyCaIndex(): CaIndex {
  return { version: 1, crlNumber: 0, certificates: [] };
}

export async function readCaIndex(path: string): Promise<CaIndex | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw errors.internal(`CA index ${path} is not valid JSON`, error);
  }
  const index = parsed as Partial<CaIndex>;
  if (index?.version !== 1 || !Number.isInteger(index.crlNumber) || !Array.isArray(index.certificates)) {
    throw errors.internal(`CA index ${path} has an unknown layout`);
  }
  return index as CaIndex;
}

/** Written to a temporary file and renamed over the old one: never half written. */
export async function writeCaIndex(path: string, index: CaIndex): Promise<void> {
  const temporary = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(temporary, `${JSON.stringify(index, null, 2)}\n`, { mode: 0o600 });
  await rename(temporary, path);
}

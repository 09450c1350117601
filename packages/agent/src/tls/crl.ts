import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DroverError, errors } from '@drover/core';
import { runOpenssl } from './openssl.js';

export interface CrlFacts {
  crlNumber: bigint;
  lastUpdate: Date;
  nextUpdate: Date;
  /** Serials the CRL lists, upper-case hex without leading zeros (as ClusterCa records them). */
  revokedSerials: string[];
}

export const maxCrlBytes = 1024 * 1024;

/**
 * Checks that a CRL is signed by the cluster CA and reads its number, dates and
 * revoked serials. A CRL from another issuer must never reach the TLS context: with
 * a CRL loaded, OpenSSL refuses every client whose issuer has no CRL ("unable to get
 * certificate CRL"), so a wrong one would lock everybody out, the manager included.
 */
export async function inspectCrl(crlPem: string, caPem: string, timeoutMs = 30_000): Promise<CrlFacts> {
  if (typeof crlPem !== 'string' || Buffer.byteLength(crlPem) > maxCrlBytes) throw errors.invalid(`CRL must be a PEM string of at most ${maxCrlBytes} bytes`);
  const trimmed = crlPem.trim();
  if (!trimmed.startsWith('-----BEGIN X509 CRL-----') || !trimmed.endsWith('-----END X509 CRL-----')) throw errors.invalid('CRL is not a PEM "X509 CRL"');
  const work = await mkdtemp(join(tmpdir(), 'drover-crl-'));
  try {
    const caPath = join(work, 'ca.crt');
    await writeFile(caPath, caPem);
    let run;
    try {
      run = await runOpenssl(['crl', '-noout', '-CAfile', caPath, '-crlnumber', '-lastupdate', '-nextupdate', '-text'], { input: `${trimmed}\n`, timeoutMs });
    } catch (error) {
      if (error instanceof DroverError && error.code === 'internal') throw errors.invalid(`CRL is not signed by the cluster CA or unreadable: ${error.message}`);
      throw error;
    }
    // OpenSSL 3.0 exits 0 after "verify failure": only "verify OK" counts.
    if (!/^verify OK$/m.test(run.stderr)) throw errors.invalid('CRL signature does not verify against the cluster CA');
    const field = (name: string) => new RegExp(`^${name}=(.+)$`, 'm').exec(run.stdout)?.[1]?.trim();
    const number = field('crlNumber');
    const lastUpdate = new Date(field('lastUpdate') ?? '');
    const nextUpdate = new Date(field('nextUpdate') ?? '');
    if (!number || !/^0x[0-9A-Fa-f]+$/.test(number) || Number.isNaN(lastUpdate.getTime()) || Number.isNaN(nextUpdate.getTime())) {
      throw errors.invalid('CRL lacks a CRL number or its update times');
    }
    const listed = run.stdout.split(/^Revoked Certificates:$/m)[1] ?? '';
    const revokedSerials = [...listed.matchAll(/^\s+Serial Number: ([0-9A-Fa-f]+)$/gm)].map((match) => (match[1] as string).toUpperCase().replace(/^0+(?=.)/, ''));
    return { crlNumber: BigInt(number), lastUpdate, nextUpdate, revokedSerials };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Refuses a CRL that OpenSSL would not accept right now: once loaded, a CRL past its
 * nextUpdate ("CRL has expired") or before its lastUpdate ("CRL is not yet valid")
 * makes the TLS layer refuse every client, the manager included. Keeping the CRL
 * already installed is always better than that.
 */
export function assertCrlUsable(facts: CrlFacts, now = Date.now()): void {
  if (facts.nextUpdate.getTime() <= now) {
    throw errors.invalid(`CRL ${facts.crlNumber} expired at ${facts.nextUpdate.toISOString()}; installing it would lock every client out`, {
      crlNumber: facts.crlNumber.toString(),
      nextUpdate: facts.nextUpdate.toISOString(),
    });
  }
  if (facts.lastUpdate.getTime() > now) {
    throw errors.invalid(`CRL ${facts.crlNumber} is not valid before ${facts.lastUpdate.toISOString()} (is this host's clock behind?); installing it would lock every client out`, {
      crlNumber: facts.crlNumber.toString(),
      lastUpdate: facts.lastUpdate.toISOString(),
    });
  }
}

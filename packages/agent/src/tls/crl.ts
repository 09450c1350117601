import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DroverError, errors } from '@drover/core';
import { runOpenssl } from './openssl.js';

export interface CrlFacts {
  crlNumber: bigint;
  lastUpdate: Date;
  nextUpdate: Date;
}

export const maxCrlBytes = 1024 * 1024;

/**
 * Checks that a CRL is signed by the cluster CA and reads its number and dates.
 * A CRL from another issuer must never reach the TLS context: with a CRL loaded,
 * OpenSSL refuses every client whose issuer has no CRL ("unable to get certificate
 * CRL"), so a wrong one would lock everybody out, the manager included.
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
      run = await runOpenssl(['crl', '-noout', '-CAfile', caPath, '-crlnumber', '-lastupdate', '-nextupdate'], { input: `${trimmed}\n`, timeoutMs });
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
    return { crlNumber: BigInt(number), lastUpdate, nextUpdate };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import { errors } from '@drover/core';

/**
 * What a publisher signs for one release: everything a subscriber relies on,
 * but not the enclosure URL (a mirror may serve the same bytes elsewhere).
 */
export interface ReleaseManifest {
  channel: string;
  name: string;
  version: string;
  architecture: string;
  format: 'qcow2';
  bootMethod: 'disk' | 'appliance-kernel';
  sha256: string;
  sizeBytes: number;
  minMemoryMiB: number;
  minCpus: number;
  labels: Record<string, string>;
}

/** What a package and an appliance package manifest both sign (with a `kind` telling them apart). */
export interface SignedFileManifest {
  channel: string;
  name: string;
  version: string;
  description: string;
  sha256: string;
  sizeBytes: number;
}

/**
 * What a publisher signs for one package (files plus an `install` script, a
 * tar.gz): `kind: 'package'` keeps a release's signature from ever verifying
 * as a package's, and the other way round.
 */
export interface PackageManifest extends SignedFileManifest {
  kind: 'package';
}

/**
 * What a publisher signs for one appliance package (an `.eva` file, see
 * docs/eva-packages.md) carried by a channel: `kind: 'eva'` keeps its
 * signature from verifying as a release's or a guest package's.
 */
export interface EvaReleaseManifest extends SignedFileManifest {
  kind: 'eva';
}

/** Whether a stored release manifest is an appliance package's (the rest are qcow2 image releases). */
export function isEvaManifest(manifest: unknown): manifest is EvaReleaseManifest {
  return !!manifest && typeof manifest === 'object' && (manifest as { kind?: unknown }).kind === 'eva';
}

/** The canonical bytes of a manifest: JSON with keys sorted at every level, no spaces. */
export function canonicalManifest(manifest: ReleaseManifest | PackageManifest | EvaReleaseManifest): Buffer {
  const sorted = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(sorted);
    if (value && typeof value === 'object') {
      return Object.fromEntries(Object.keys(value as object).sort().map((k) => [k, sorted((value as Record<string, unknown>)[k])]));
    }
    return value;
  };
  return Buffer.from(JSON.stringify(sorted(manifest)), 'utf8');
}

/** A key's id: the sha256 of its SPKI DER, in hex. */
export function keyIdOf(publicKeyPem: string): string {
  let der: Buffer;
  try {
    der = createPublicKey(publicKeyPem).export({ type: 'spki', format: 'der' });
  } catch {
    throw errors.invalid('The publisher key is not a valid PEM public key', { field: 'publicKey' });
  }
  return createHash('sha256').update(der).digest('hex');
}

/** A new Ed25519 key pair, as PEM. */
export function newPublisherKey(): { publicKey: string; privateKey: string; keyId: string } {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519', { publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
  return { publicKey, privateKey, keyId: keyIdOf(publicKey) };
}

/** A detached Ed25519 signature (base64) over `data`. */
export function signBytes(data: Buffer, privateKeyPem: string): string {
  return sign(null, data, createPrivateKey(privateKeyPem)).toString('base64');
}

/** Whether `signature` (base64) is `publicKeyPem`'s Ed25519 signature over `data`; false for any malformed input. */
export function verifyBytes(data: Buffer, signature: string, publicKeyPem: string): boolean {
  try {
    const key = createPublicKey(publicKeyPem);
    if (key.asymmetricKeyType !== 'ed25519') return false;
    return verify(null, data, key, Buffer.from(signature, 'base64'));
  } catch {
    return false;
  }
}

/** What a key endorsement signs: "a key with this id may sign for this publisher". */
export function endorsementBytes(keyId: string): Buffer {
  return Buffer.from(`drover-vmcast-key-endorsement:${keyId}`, 'utf8');
}

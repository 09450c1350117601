import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { errors } from '@drover/core';
import type { Store } from '../store/index.js';

/**
 * Secrets every manager of a cluster needs, kept in the shared store sealed
 * with a key file each manager has (`secretKeyFile`, DROVER_SECRET_KEY_FILE):
 * AES-256-GCM, a fresh IV per seal, the secret's name as associated data (a
 * sealed value cannot be passed off as another). The database holds only
 * ciphertext; whoever has the database but not the key file learns nothing.
 *
 * The secrets are files of the data directory; at start a manager copies the
 * store's into its data directory (0600) before it opens the CA and reads its
 * tokens, and copies up what the store does not have yet. Of two managers
 * starting at once on an empty store, the first to write wins and the other
 * takes its files.
 */
export const sharedSecretFiles = ['ca/authority/ca.key', 'ca/authority/ca.crt', 'ca/index.json', 'ca/crl.pem', 'admin-token', 'metrics-token', 'session-key'] as const;

/** Reads the 32-byte key: raw, or 64 hex digits, or base64; the file must be 0600 (or stricter). */
export async function readSecretKey(file: string): Promise<Buffer> {
  let info;
  try {
    info = await stat(file);
  } catch (error) {
    throw errors.invalid(`Cannot read the secret key file ${file}: ${(error as Error).message}`, { file });
  }
  if ((info.mode & 0o077) !== 0) {
    throw errors.invalid(`The secret key file ${file} is readable by others (mode ${(info.mode & 0o777).toString(8)}): make it 0600`, { file });
  }
  const raw = await readFile(file);
  if (raw.length === 32) return raw;
  const text = raw.toString('utf8').trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex');
  const decoded = Buffer.from(text, 'base64');
  if (decoded.length === 32 && /^[A-Za-z0-9+/=_-]+$/.test(text)) return decoded;
  throw errors.invalid(`The secret key file ${file} must hold 32 bytes (raw, 64 hex digits or base64), e.g. from "openssl rand -hex 32"`, { file });
}

export function seal(key: Buffer, name: string, plaintext: Buffer): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(name));
  const data = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return JSON.stringify({ v: 1, iv: iv.toString('base64'), tag: cipher.getAuthTag().toString('base64'), data: data.toString('base64') });
}

export function unseal(key: Buffer, name: string, sealed: string): Buffer {
  try {
    const box = JSON.parse(sealed) as { v: number; iv: string; tag: string; data: string };
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(box.iv, 'base64'));
    decipher.setAAD(Buffer.from(name));
    decipher.setAuthTag(Buffer.from(box.tag, 'base64'));
    return Buffer.concat([decipher.update(Buffer.from(box.data, 'base64')), decipher.final()]);
  } catch {
    throw errors.invalid(`The store's secret "${name}" cannot be opened with this secret key file: every manager needs the same key`, { secret: name });
  }
}

async function readIfExists(file: string): Promise<Buffer | undefined> {
  try {
    return await readFile(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

async function writeSecretFile(file: string, content: Buffer): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const temporary = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(temporary, content, { mode: file.endsWith('.crt') || file.endsWith('.pem') ? 0o644 : 0o600 });
  await rename(temporary, file);
}

/** Store → data directory: every sealed secret the store has replaces the local file. Returns the names copied. */
export async function pullSecrets(store: Store, key: Buffer, dataDir: string): Promise<string[]> {
  const pulled: string[] = [];
  for (const name of sharedSecretFiles) {
    const sealed = await store.cluster.secret(name);
    if (sealed === undefined) continue;
    const content = unseal(key, name, sealed);
    const file = path.join(dataDir, name);
    const local = await readIfExists(file);
    if (!local || !local.equals(content)) await writeSecretFile(file, content);
    pulled.push(name);
  }
  return pulled;
}

/**
 * Data directory → store, for the secrets the store does not have yet. When
 * another manager stored one first, its value replaces the local file. Returns
 * whether any local file was replaced (the caller re-reads them).
 */
export async function pushSecrets(store: Store, key: Buffer, dataDir: string): Promise<boolean> {
  let replaced = false;
  for (const name of sharedSecretFiles) {
    const file = path.join(dataDir, name);
    const local = await readIfExists(file);
    if (!local) continue;
    const stored = unseal(key, name, await store.cluster.putSecretIfAbsent(name, seal(key, name, local)));
    if (!stored.equals(local)) {
      await writeSecretFile(file, stored);
      replaced = true;
    }
  }
  return replaced;
}

/**
 * Makes the data directory hold the cluster's shared secrets: takes the
 * store's, lets `create` make what is missing (the CA, the tokens), stores
 * those, and takes the store's again if another manager was faster.
 */
export async function shareSecrets(store: Store, keyFile: string, dataDir: string, create: () => Promise<void>): Promise<void> {
  const key = await readSecretKey(keyFile);
  // One manager at a time (a lock held by this transaction): the CA key and certificate
  // must come from the same manager, never one half from each of two starting at once.
  await store.transaction(async (tx) => {
    await tx.cluster.lockTarget('drover:cluster-secrets');
    await pullSecrets(tx, key, dataDir);
    await create();
    await pushSecrets(tx, key, dataDir);
  });
}

/** The files of the CA that change after its creation: shared through the store under a lock. */
const caStateFiles = ['ca/index.json', 'ca/crl.pem'] as const;

/**
 * `ClusterCaOptions.shared` for managers sharing a store: each change of the CA's
 * index (issue, revoke, CRL) runs under a lock held across managers, on the index and
 * CRL the store has, and stores them after (sealed).
 */
export async function sharedCaState(store: Store, keyFile: string, dataDir: string): Promise<{ exclusive<T>(work: () => Promise<T>): Promise<T> }> {
  const key = await readSecretKey(keyFile);
  return {
    exclusive: (work) =>
      store.transaction(async (tx) => {
        await tx.cluster.lockTarget('drover:cluster-ca');
        const before = new Map<string, Buffer>();
        for (const name of caStateFiles) {
          const sealed = await tx.cluster.secret(name);
          if (sealed === undefined) continue;
          const content = unseal(key, name, sealed);
          const file = path.join(dataDir, name);
          const local = await readIfExists(file);
          if (!local || !local.equals(content)) await writeSecretFile(file, content);
          before.set(name, content);
        }
        const result = await work();
        for (const name of caStateFiles) {
          const local = await readIfExists(path.join(dataDir, name));
          if (local && !local.equals(before.get(name) ?? Buffer.alloc(0))) await tx.cluster.putSecret(name, seal(key, name, local));
        }
        return result;
      }),
  };
}

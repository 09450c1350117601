import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errors } from '@drover/core';

/**
 * Content-addressed artifact cache. An artifact lives in `<cacheDir>/<hash>/`,
 * where hash is the sha256 of a canonical JSON of everything it is built from.
 * It is built in a private temporary directory beside it and renamed into
 * place, so a reader (or a concurrent builder in another process) sees either
 * nothing or the complete artifact; the loser of a race discards its copy.
 */

export const MANIFEST = 'manifest.json';

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  try {
    for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  } catch (cause) {
    throw errors.unavailable(`Cannot read ${path} to hash it`, { path }, cause);
  }
  return hash.digest('hex');
}

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** JSON with sorted object keys, so equal inputs always hash equally. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export function hashInputs(inputs: unknown): string {
  return sha256(canonicalJson(inputs));
}

export interface ArtifactResult<M> {
  dir: string;
  hash: string;
  manifest: M;
  /** False when the artifact was already in the cache. */
  built: boolean;
}

export interface PublishOptions<M> {
  cacheDir: string;
  /** What the artifact is built from; its hash names the directory. */
  inputs: Record<string, unknown>;
  /** Fills `tmpDir` and returns the manifest (file names, metadata). */
  build: (tmpDir: string) => Promise<M>;
}

const inFlight = new Map<string, Promise<ArtifactResult<unknown>>>();

/**
 * Returns the cached artifact for `inputs`, building it first if needed.
 * Concurrent calls in this process share one build; other processes race on
 * the atomic rename and agree on whichever copy landed first.
 */
export function ensureArtifact<M>(options: PublishOptions<M>): Promise<ArtifactResult<M>> {
  const hash = hashInputs(options.inputs);
  const dir = join(options.cacheDir, hash);
  const running = inFlight.get(dir);
  if (running) return running as Promise<ArtifactResult<M>>;
  const job = buildOnce(options, hash, dir).finally(() => inFlight.delete(dir));
  inFlight.set(dir, job as Promise<ArtifactResult<unknown>>);
  return job;
}

async function readManifest<M>(dir: string): Promise<M | undefined> {
  try {
    return JSON.parse(await readFile(join(dir, MANIFEST), 'utf8')) as M;
  } catch {
    return undefined;
  }
}

async function buildOnce<M>(options: PublishOptions<M>, hash: string, dir: string): Promise<ArtifactResult<M>> {
  const existing = await readManifest<M>(dir);
  if (existing !== undefined) return { dir, hash, manifest: existing, built: false };

  try {
    await mkdir(options.cacheDir, { recursive: true });
  } catch (cause) {
    throw errors.unavailable(`Cannot create the appliance cache ${options.cacheDir}`, { cacheDir: options.cacheDir }, cause);
  }
  // A directory without a manifest cannot come from a rename (the manifest is
  // written first): it was damaged by hand. Move it out of the way.
  if (await exists(dir)) await discard(options.cacheDir, dir);

  const tmp = join(options.cacheDir, `.tmp-${hash.slice(0, 16)}-${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(tmp);
  try {
    const manifest = await options.build(tmp);
    await writeFile(join(tmp, MANIFEST), `${JSON.stringify({ ...manifest }, null, 2)}\n`);
    try {
      await rename(tmp, dir);
    } catch (cause) {
      const code = (cause as NodeJS.ErrnoException).code;
      const winner = await readManifest<M>(dir);
      if ((code === 'ENOTEMPTY' || code === 'EEXIST') && winner !== undefined) {
        await rm(tmp, { recursive: true, force: true });
        return { dir, hash, manifest: winner, built: false };
      }
      throw errors.unavailable(`Cannot move the built artifact into ${dir}`, { dir }, cause);
    }
    return { dir, hash, manifest, built: true };
  } catch (error) {
    await rm(tmp, { recursive: true, force: true });
    throw error;
  }
}

async function discard(cacheDir: string, dir: string): Promise<void> {
  const aside = join(cacheDir, `.stale-${randomBytes(6).toString('hex')}`);
  try {
    await rename(dir, aside);
  } catch {
    return;
  }
  await rm(aside, { recursive: true, force: true });
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Removes temporary build directories that crashed builders left behind (older than a day). */
export async function removeStaleTemporaries(cacheDir: string, maxAgeMs = 24 * 3600_000): Promise<void> {
  let names: string[];
  try {
    names = await readdir(cacheDir);
  } catch {
    return;
  }
  const now = Date.now();
  for (const name of names) {
    if (!name.startsWith('.tmp-') && !name.startsWith('.stale-')) continue;
    try {
      const info = await stat(join(cacheDir, name));
      if (now - info.mtimeMs > maxAgeMs) await rm(join(cacheDir, name), { recursive: true, force: true });
    } catch {
      // Another process removed or renamed it meanwhile.
    }
  }
}

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import type { TSchema } from 'typebox';
import { Compile } from 'typebox/compile';
import { parse as parseYaml } from 'yaml';
import { errors } from '@drover/core';

export interface LayeredConfigOptions<T> {
  /** "agent", "manager": used in messages. */
  what: string;
  schema: TSchema;
  /** Defaults; given the directory the file, environment or overrides chose (they decide paths below it). */
  defaults: (dir: string | undefined) => T;
  /** Which key names that directory (stateDir, dataDir). */
  dirKey: keyof T & string;
  /** DROVER_<PREFIX>_<SUFFIX> → key, for top-level scalar keys. */
  envPrefix: string;
  envKeys: Record<string, keyof T & string>;
  file?: string;
  env?: NodeJS.ProcessEnv;
  overrides?: Partial<T>;
}

/**
 * Defaults, then the YAML file, then the environment, then explicit overrides
 * (command-line flags); validated at once, failing with a message that names
 * the bad key. The agent and the manager load their configuration this way.
 */
export function loadLayeredConfig<T>(o: LayeredConfigOptions<T>): T {
  const env = o.env ?? process.env;
  let fromFile: Record<string, unknown> = {};
  if (o.file) {
    let text: string;
    try {
      text = readFileSync(o.file, 'utf8');
    } catch (cause) {
      throw errors.invalid(`Cannot read ${o.what} configuration "${o.file}": ${(cause as Error).message}`);
    }
    let parsed: unknown;
    try {
      parsed = parseYaml(text);
    } catch (cause) {
      throw errors.invalid(`${o.what} configuration "${o.file}" is not valid YAML: ${(cause as Error).message}`);
    }
    if (parsed !== null && (typeof parsed !== 'object' || Array.isArray(parsed))) {
      throw errors.invalid(`${o.what} configuration "${o.file}" must be a YAML mapping`);
    }
    fromFile = (parsed ?? {}) as Record<string, unknown>;
  }
  const fromEnv: Record<string, unknown> = {};
  for (const [suffix, key] of Object.entries(o.envKeys)) {
    const value = env[`DROVER_${o.envPrefix}_${suffix}`];
    if (value !== undefined) fromEnv[key] = value;
  }
  const overrides = (o.overrides ?? {}) as Record<string, unknown>;
  const dir = (overrides[o.dirKey] ?? fromEnv[o.dirKey] ?? fromFile[o.dirKey]) as unknown;
  const merged: Record<string, unknown> = {
    ...(o.defaults(typeof dir === 'string' ? dir : undefined) as Record<string, unknown>),
    ...fromFile,
    ...fromEnv,
    ...overrides,
  };
  const check = Compile(o.schema);
  if (!check.Check(merged)) {
    const first = check.Errors(merged)[0];
    const unknownKey = (first?.params as { additionalProperties?: string[] } | undefined)?.additionalProperties?.[0];
    const key = first?.instancePath ? first.instancePath.slice(1).replaceAll('/', '.') : String(unknownKey ?? '(root)');
    throw errors.invalid(`Invalid ${o.what} configuration: key "${key}" ${first?.message ?? 'is invalid'}`, { key });
  }
  return merged as T;
}

/**
 * A secret kept in a 0600 file: read it, or make a random one on first use.
 * Written under a temporary name and renamed, so a crash never leaves half a token.
 */
export async function loadOrCreateSecret(file: string, configured?: string): Promise<string> {
  if (configured) return configured;
  try {
    const existing = (await readFile(file, 'utf8')).trim();
    if (existing) return existing;
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code !== 'ENOENT') throw cause;
  }
  const secret = randomBytes(24).toString('base64url');
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${secret}\n`, { mode: 0o600 });
  await rename(tmp, file);
  return secret;
}

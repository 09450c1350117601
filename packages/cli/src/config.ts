import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { errors } from '@drover/core';
import { normalizeBaseUrl } from './client.js';

/**
 * Where the CLI finds the manager and its token. Precedence, highest first:
 * `--url`/`--token`, `DROVER_URL`/`DROVER_TOKEN`, the config file
 * (`$XDG_CONFIG_HOME/drover/config.yaml`, else `~/.config/drover/config.yaml`).
 */

export const configKeys = ['url', 'token'] as const;
export type ConfigKey = (typeof configKeys)[number];
export type ConfigFile = Partial<Record<ConfigKey, string>>;
export type ConfigSource = 'flag' | 'env' | 'file';

export interface ResolvedConfig {
  url: string;
  token: string | undefined;
  sources: { url: ConfigSource; token: ConfigSource | undefined };
  filePath: string;
}

export interface ConfigFlags {
  url?: string | undefined;
  token?: string | undefined;
}

/** Loaded on demand: most runs take URL and token from flags or the environment. */
async function yaml() {
  return (await import('yaml')).default;
}

export function configFilePath(env: NodeJS.ProcessEnv): string {
  // The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
  const xdg = env.XDG_CONFIG_HOME;
  if (xdg && path.isAbsolute(xdg)) return path.join(xdg, 'drover', 'config.yaml');
  return path.join(env.HOME || os.homedir(), '.config', 'drover', 'config.yaml');
}

/** Reads and validates the config file; a missing file is an empty configuration. */
export async function readConfigFile(filePath: string): Promise<ConfigFile> {
  let text: string;
  try {
    text = await readFile(filePath, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw errors.invalid(`Cannot read the config file ${filePath}: ${(error as Error).message}`, { file: filePath });
  }
  const doc = (await yaml()).parseDocument(text);
  if (doc.errors.length > 0) {
    throw errors.invalid(`The config file ${filePath} is not valid YAML: ${doc.errors[0]!.message.split('\n')[0]}`, { file: filePath });
  }
  const value: unknown = doc.toJS();
  if (value === null || value === undefined) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw errors.invalid(`The config file ${filePath} must hold a mapping with "url" and "token"`, { file: filePath });
  }
  const config: ConfigFile = {};
  for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
    if (!isConfigKey(key)) {
      throw errors.invalid(`The config file ${filePath} has an unknown key "${key}" (known: ${configKeys.join(', ')})`, { file: filePath, key });
    }
    if (item === null || item === undefined) continue;
    if (typeof item !== 'string') {
      throw errors.invalid(`The config file ${filePath}: "${key}" must be a string`, { file: filePath, key });
    }
    config[key] = item;
  }
  return config;
}

export function isConfigKey(key: string): key is ConfigKey {
  return (configKeys as readonly string[]).includes(key);
}

/** Pure precedence: flag > environment > file. Empty strings count as unset. */
export function resolveConfig(flags: ConfigFlags, env: NodeJS.ProcessEnv, file: ConfigFile, filePath: string): ResolvedConfig {
  const pick = (flag: string | undefined, fromEnv: string | undefined, fromFile: string | undefined) => {
    if (flag) return { value: flag, source: 'flag' as const };
    if (fromEnv) return { value: fromEnv, source: 'env' as const };
    if (fromFile) return { value: fromFile, source: 'file' as const };
    return undefined;
  };
  const url = pick(flags.url, env.DROVER_URL, file.url);
  if (!url) {
    throw errors.invalid(`No manager URL: pass --url, set DROVER_URL, or run "drover config set url URL" (config file: ${filePath})`, { file: filePath });
  }
  const token = pick(flags.token, env.DROVER_TOKEN, file.token);
  if (token) validateToken(token.value, token.source);
  return {
    url: normalizeBaseUrl(url.value),
    token: token?.value,
    sources: { url: url.source, token: token?.source },
    filePath,
  };
}

export async function loadConfig(flags: ConfigFlags, env: NodeJS.ProcessEnv): Promise<ResolvedConfig> {
  const filePath = configFilePath(env);
  // The file is only read when flags and environment leave something open.
  const needFile = !(flags.url || env.DROVER_URL) || !(flags.token || env.DROVER_TOKEN);
  const file = needFile ? await readConfigFile(filePath) : {};
  return resolveConfig(flags, env, file, filePath);
}

function validateToken(token: string, source: ConfigSource): void {
  // A token goes into a header: a stray newline from `echo` or a copy must fail here, clearly.
  if (!/^[\x21-\x7e]+$/.test(token)) {
    const where = source === 'flag' ? '--token' : source === 'env' ? 'DROVER_TOKEN' : 'the config file token';
    throw errors.invalid(`The token from ${where} contains spaces or control characters`);
  }
}

/**
 * Sets (or, with `undefined`, removes) one key, keeping the rest of the file and its
 * comments. The file holds a credential: it is written 0600 in a 0700 directory, by
 * rename so a crash never leaves half a file.
 */
export async function writeConfigValue(filePath: string, key: ConfigKey, value: string | undefined): Promise<void> {
  if (value !== undefined) {
    if (key === 'url') normalizeBaseUrl(value);
    if (key === 'token') validateToken(value, 'flag');
  }
  let text = '';
  try {
    text = await readFile(filePath, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw errors.invalid(`Cannot read the config file ${filePath}: ${(error as Error).message}`);
  }
  const YAML = await yaml();
  const doc = YAML.parseDocument(text);
  if (doc.errors.length > 0) {
    throw errors.invalid(`The config file ${filePath} is not valid YAML; fix or remove it first`, { file: filePath });
  }
  if (doc.contents === null || doc.contents === undefined) doc.contents = doc.createNode({}) as unknown as typeof doc.contents;
  if (!YAML.isMap(doc.contents)) throw errors.invalid(`The config file ${filePath} must hold a mapping`, { file: filePath });
  if (value === undefined) doc.delete(key);
  else doc.set(key, value);
  await mkdir(path.dirname(filePath), { recursive: true, mode: 0o700 });
  const temp = `${filePath}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(temp, doc.toString(), { mode: 0o600, flag: 'wx' });
    await rename(temp, filePath);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

/** For display: enough of a token to recognise it, not to use it. */
export function maskToken(token: string | undefined): string {
  if (!token) return '(none)';
  return token.length <= 8 ? '********' : `${token.slice(0, 4)}…${token.slice(-2)}`;
}

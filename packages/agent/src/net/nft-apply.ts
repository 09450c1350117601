import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { errors } from '@drover/core';
import { DROVER_TABLES, renderRuleset, type RenderedRuleset } from './nft-render.js';
import type { HostNetworkState } from './firewall-model.js';

const run = promisify(execFile);

export interface NftOptions {
  /** Run nft in this network namespace (`ip netns exec`); the agent itself runs in its host's namespace. */
  namespace?: string;
  timeoutMs?: number;
}

function command(options: NftOptions, args: string[]): [string, string[]] {
  return options.namespace === undefined ? ['nft', args] : ['ip', ['netns', 'exec', options.namespace, 'nft', ...args]];
}

async function nft(options: NftOptions, args: string[]): Promise<string> {
  const [file, argv] = command(options, args);
  try {
    const { stdout } = await run(file, argv, { timeout: options.timeoutMs ?? 20_000, maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim() ?? String(error);
    throw errors.invalid(`nft refused the ruleset: ${stderr.split('\n').slice(0, 6).join(' | ')}`, { stderr });
  }
}

/**
 * Loads a rendered script with one `nft -f`: the kernel applies the whole
 * transaction or nothing, so a refused script leaves the previous rules
 * byte-identical.
 */
export async function loadRuleset(script: string, options: NftOptions = {}): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'drover-nft-'));
  try {
    const file = path.join(dir, 'ruleset.nft');
    await writeFile(file, script, { mode: 0o600 });
    await nft(options, ['-f', file]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Validates, renders and applies the host's state; nothing changes when any step fails. */
export async function applyHostFirewall(state: HostNetworkState, options: NftOptions = {}): Promise<RenderedRuleset> {
  const rendered = renderRuleset(state);
  await loadRuleset(rendered.script, options);
  return rendered;
}

/** The current text of Drover's tables (absent tables are skipped). */
export async function listDroverTables(options: NftOptions = {}): Promise<string> {
  const parts: string[] = [];
  for (const table of DROVER_TABLES) {
    parts.push(await nft(options, ['list', 'table', table.family, table.name]).catch(() => ''));
  }
  return parts.join('');
}

/** Removes Drover's tables, and only those, in one transaction. */
export async function removeDroverTables(options: NftOptions = {}): Promise<void> {
  const script = DROVER_TABLES.flatMap((t) => [`table ${t.family} ${t.name}`, `delete table ${t.family} ${t.name}`]).join('\n') + '\n';
  await loadRuleset(script, options);
}

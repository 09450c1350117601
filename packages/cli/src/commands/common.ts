import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { Command } from 'commander';
import { errors } from '@drover/core';
import { positiveInt, type Session } from '../cli.js';
import type { QueryValue } from '../client.js';
import type { Page } from '../types.js';

/** Options every list command shares. */
export interface ListOptions {
  limit?: number;
  cursor?: string;
  all?: boolean;
}

export function withListOptions(command: Command, noun: string): Command {
  return command
    .option('--limit <n>', `at most this many ${noun} per page (server default 100)`, positiveInt('--limit', 1, 1000))
    .option('--cursor <cursor>', 'continue a previous listing from this cursor')
    .option('--all', 'follow the cursors and list everything');
}

export function withWaitOption(command: Command): Command {
  return command.option('--no-wait', 'print the operation at once instead of waiting for it to end');
}

/**
 * One page, or with --all every page merged into one. A cursor seen twice means
 * the server is going round in circles: stop rather than loop forever.
 */
export async function fetchList<T>(session: Session, path: string, query: Record<string, QueryValue>, options: ListOptions): Promise<Page<T>> {
  const client = await session.client();
  let page = await client.get<Page<T>>(path, { ...query, limit: options.limit, cursor: options.cursor });
  if (!options.all) return page;
  const items = [...page.items];
  const seen = new Set<string>();
  while (page.next) {
    if (seen.has(page.next)) throw errors.internal(`GET ${path}: the manager returned the cursor "${page.next}" twice`);
    seen.add(page.next);
    page = await client.get<Page<T>>(path, { ...query, limit: options.limit, cursor: page.next });
    items.push(...page.items);
  }
  return { items };
}

/** Prints a page: the table, and on stderr how to get the rest. */
export function printPage<T>(session: Session, page: Page<T>, table: (items: T[]) => string, more: string): void {
  session.print(page, () => table(page.items));
  if (!session.json && page.next) session.note(`More results: ${more} --cursor ${page.next} (or --all)\n`);
}

export function yesNo(value: boolean): string {
  return value ? 'yes' : 'no';
}

/**
 * Saves the bytes of GET `path` to `file`, which must not exist yet (made
 * 0600); a failed download removes the partial file. Answers the byte count.
 */
export async function downloadToNewFile(session: Session, path: string, file: string): Promise<number> {
  const out = createWriteStream(file, { flags: 'wx', mode: 0o600 });
  await new Promise<void>((resolve, reject) => {
    out.once('open', () => resolve());
    out.once('error', reject);
  });
  try {
    return await (await session.client()).download(path, out);
  } catch (error) {
    out.destroy();
    await rm(file, { force: true });
    throw error;
  }
}

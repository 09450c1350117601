import { InputError } from './api/client.js';
import type { Operation, Page, Vm } from './api/types.js';

/** Pure helpers of the list pages (unit-tested without a browser). */

export interface VmFilter {
  state: string;
  name: string;
  label: string;
  host?: string;
}

/** Whether a VM belongs on a list with this filter (the same rules as the manager's). */
export function vmMatches(vm: Vm, filter: VmFilter): boolean {
  if (filter.state && vm.state !== filter.state) return false;
  if (filter.host && vm.hostName !== filter.host && vm.hostId !== filter.host) return false;
  if (filter.name && !vm.name.includes(filter.name)) return false;
  if (filter.label) {
    const eq = filter.label.indexOf('=');
    const key = filter.label.slice(0, eq);
    if (eq <= 0 || vm.labels[key] !== filter.label.slice(eq + 1)) return false;
  }
  return true;
}

/** "8080:80, 2222:22" → forwards; throws with a readable message. */
export function parseForwards(text: string): Array<{ hostPort: number; guestPort: number }> {
  const forwards: Array<{ hostPort: number; guestPort: number }> = [];
  for (const part of text.split(/[,\s]+/)) {
    if (!part) continue;
    const match = /^(\d+):(\d+)$/.exec(part);
    if (!match) throw new InputError(`Port forward "${part}" is not HOSTPORT:GUESTPORT`);
    forwards.push({ hostPort: Number(match[1]), guestPort: Number(match[2]) });
  }
  return forwards;
}

/**
 * The manager lists operations oldest first (keyset pagination); the page
 * walks the list to its end (at most `maxPages` pages) and keeps the newest
 * `keep`, newest first.
 */
export async function newestOperations(
  fetchPage: (params: { limit: number; cursor?: string; state?: string }) => Promise<Page<Operation>>,
  state: string,
  { maxPages = 50, keep = 2000, pageSize = 1000 }: { maxPages?: number; keep?: number; pageSize?: number } = {},
): Promise<{ items: Operation[]; truncated: boolean }> {
  let tail: Operation[] = [];
  let cursor: string | undefined;
  let pages = 0;
  let dropped = false;
  do {
    const page = await fetchPage({ limit: pageSize, ...(cursor ? { cursor } : {}), ...(state ? { state } : {}) });
    tail = tail.concat(page.items);
    if (tail.length > keep) {
      tail = tail.slice(tail.length - keep);
      dropped = true;
    }
    cursor = page.next;
  } while (cursor && ++pages < maxPages);
  return { items: tail.reverse(), truncated: dropped || cursor !== undefined };
}


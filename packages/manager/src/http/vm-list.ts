import type { Vm } from '@drover/api';
import type { Store } from '../store/index.js';
import type { ListQuery, VmFilter, VmRecord } from '../store/types.js';
import { hostNamesOf, publicVm } from '../vms/vm.service.js';

/**
 * The same string, stored flat. A serializer builds its output by appending, so
 * V8 keeps it as a tree of pieces, and joining 100 of them walked every tree on
 * every request (ten times the cost of joining flat strings). Converting it to
 * a number makes V8 flatten it in place; the number itself is not used.
 */
function flattened(text: string): string {
  void Number(text);
  return text;
}

/** One VM's JSON and what it was made from. */
interface RenderedVm {
  rev: number;
  hostId: string | null;
  hostName: string | null;
  json: string;
}

/** One page's JSON and what it was made from. */
interface RenderedPage {
  /** The store's `changeToken` when the page was last known current (SQLite), read before the page or its signature. */
  token: string | undefined;
  /** The store's `pageSignature` of (id, rev, hostId), read before the page was. */
  signature: string;
  /** The name of each host the page names. */
  hostNames: Map<string, string | null>;
  /** The page's JSON, encoded once (UTF-8) rather than at every answer. */
  body: Buffer;
}

/**
 * `GET /api/v1/vms` as JSON text, keeping what it made between requests.
 *
 * Decoding a page of 100 VMs from the store and serializing them cost several
 * times what checking the page did, and most pages are asked for again
 * unchanged. Nothing here is ever stale; every request checks with the store,
 * cheapest first:
 *
 * 1. the store's change token (SQLite: a commit by another connection, or any
 *    row this manager wrote): the same as when the page was last known current
 *    means no row of the database changed since, so the kept page is answered;
 * 2. otherwise (or on PostgreSQL) the page's signature (the id, rev and hostId
 *    of each of its VMs, one value, read with the same filters and cursor) and,
 *    when the page names hosts, their names: the same as when the page was made
 *    means the same page. Every write to a VM row bumps its rev (the store's
 *    `patch`, as If-Match relies on); the one exception, a host's removal
 *    clearing host_id, is why hostId is in the signature;
 * 3. otherwise the page is read whole and made again, reusing the JSON of each
 *    VM whose rev, host and host name are unchanged.
 *
 * The token and the signature are always read *before* the reads they vouch
 * for, and neither ever comes back once something changed (the token counts
 * writes, revs only grow, ids are never reused), so a page kept under them can
 * cost a miss but never answer stale data.
 *
 * Everything is read from the store outside transactions, so nothing kept ever
 * comes from a write that could still roll back. At most `limits.vms` VMs and
 * `limits.pageBytes` bytes of pages are kept, the oldest dropped first.
 */
export class VmListJson {
  readonly #vms = new Map<string, RenderedVm>();
  readonly #pages = new Map<string, RenderedPage>();
  #pageBytes = 0;

  constructor(
    private readonly store: Store,
    private readonly limits: { vms: number; pageBytes: number } = { vms: 50_000, pageBytes: 32 * 1024 * 1024 },
  ) {}

  /**
   * The page as the API answers it, in UTF-8: `{"items":[…],"next":"…"}`, each VM in the JSON that `render` makes of it.
   * `read`: the change token the request read already (when it checked its bearer token), read here otherwise.
   * Any token read since the request arrived will do: an earlier one can only cost a miss.
   */
  async page(query: ListQuery<VmFilter>, render: (vm: Vm) => string, read?: { value: string | undefined }): Promise<Buffer> {
    const key = JSON.stringify([query.limit ?? null, query.after ?? null, query.filter ?? {}]);
    const token = read ? read.value : await this.store.changeToken();
    const kept = this.#pages.get(key);
    if (kept !== undefined && token !== undefined && kept.token === token) return kept.body;
    const signature = await this.store.vms.pageSignature(query, ['id', 'rev', 'hostId']);
    if (kept !== undefined && kept.signature === signature && (await this.sameHostNames(kept.hostNames))) {
      kept.token = token;
      return kept.body;
    }

    const page = await this.store.vms.list(query);
    const names = await hostNamesOf(this.store, page.items);
    const hostNames = new Map<string, string | null>();
    const parts = page.items.map((vm) => {
      const hostName = vm.hostId === null ? null : (names.get(vm.hostId) ?? null);
      if (vm.hostId !== null) hostNames.set(vm.hostId, hostName);
      return this.rendered(vm, hostName, render);
    });
    const body = Buffer.from(`{"items":[${parts.join(',')}]${page.next === undefined ? '' : `,"next":${JSON.stringify(page.next)}`}}`);
    this.keepPage(key, { token, signature, hostNames, body });
    return body;
  }

  /** How many VMs and pages are kept. */
  get size(): { vms: number; pages: number } {
    return { vms: this.#vms.size, pages: this.#pages.size };
  }

  private async sameHostNames(hostNames: Map<string, string | null>): Promise<boolean> {
    if (hostNames.size === 0) return true;
    const now = await hostNamesOf(this.store, [...hostNames.keys()].map((hostId) => ({ hostId })));
    for (const [hostId, name] of hostNames) if ((now.get(hostId) ?? null) !== name) return false;
    return true;
  }

  private rendered(vm: VmRecord, hostName: string | null, render: (vm: Vm) => string): string {
    const kept = this.#vms.get(vm.id);
    if (kept !== undefined && kept.rev === vm.rev && kept.hostId === vm.hostId && kept.hostName === hostName) return kept.json;
    const json = flattened(render(publicVm(vm, hostName)));
    this.#vms.delete(vm.id);
    if (this.#vms.size >= this.limits.vms) this.#vms.delete(this.#vms.keys().next().value!);
    this.#vms.set(vm.id, { rev: vm.rev, hostId: vm.hostId, hostName, json });
    return json;
  }

  private keepPage(key: string, page: RenderedPage): void {
    const previous = this.#pages.get(key);
    if (previous !== undefined) {
      this.#pages.delete(key);
      this.#pageBytes -= previous.body.length;
    }
    if (page.body.length > this.limits.pageBytes) return;
    while (this.#pageBytes + page.body.length > this.limits.pageBytes) {
      const [oldestKey, oldest] = this.#pages.entries().next().value!;
      this.#pages.delete(oldestKey);
      this.#pageBytes -= oldest.body.length;
    }
    this.#pages.set(key, page);
    this.#pageBytes += page.body.length;
  }
}

import type { Backend, StoreDatabase } from './backend.js';

/** What every repository runs on: the root database or one transaction of it. */
export interface StoreContext {
  readonly db: StoreDatabase;
  readonly backend: Backend;
  /** The store's clock: createdAt, updatedAt and defaults come from it. */
  readonly now: () => Date;
  /**
   * Throws when this context must not be used right now: the root store from
   * inside one of its own transactions (on SQLite that would wait forever for
   * the one connection the transaction holds; on PostgreSQL it would run outside
   * the transaction), or a transactional store after its transaction ended.
   */
  readonly checkUse: () => void;
}

export function nowIso(context: StoreContext): string {
  return context.now().toISOString();
}

import { errors } from '@drover/core';

/**
 * One action at a time per object. A second action on a busy object is refused
 * at once (409) instead of queueing: the caller (the manager's operation
 * journal) decides whether to retry, so nothing waits invisibly.
 */
export class KeyedLock {
  private readonly busy = new Map<string, string>();

  current(key: string): string | undefined {
    return this.busy.get(key);
  }

  /**
   * Takes the key for an action that spans several requests (a migration) and
   * returns its release; refused like `run` when the key is busy.
   */
  hold(key: string, action: string, label: string): () => void {
    const holder = this.busy.get(key);
    if (holder !== undefined) throw errors.conflict(`Cannot ${action} ${label}: it is busy with "${holder}"`, { busyWith: holder });
    this.busy.set(key, action);
    return () => {
      if (this.busy.get(key) === action) this.busy.delete(key);
    };
  }

  async run<T>(key: string, action: string, label: string, fn: () => Promise<T>): Promise<T> {
    const holder = this.busy.get(key);
    if (holder !== undefined) {
      throw errors.conflict(`Cannot ${action} ${label}: it is busy with "${holder}"`, { busyWith: holder });
    }
    this.busy.set(key, action);
    try {
      return await fn();
    } finally {
      this.busy.delete(key);
    }
  }
}

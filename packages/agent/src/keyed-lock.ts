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

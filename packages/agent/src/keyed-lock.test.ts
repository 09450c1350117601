import { describe, expect, it } from 'vitest';
import { KeyedLock } from './keyed-lock.js';

describe('KeyedLock', () => {
  it('refuses a second action on a busy key and frees it afterwards', async () => {
    const lock = new KeyedLock();
    let release!: () => void;
    const first = lock.run('vm1', 'stop', 'VM "a"', () => new Promise<void>((r) => (release = r)));
    await expect(lock.run('vm1', 'start', 'VM "a"', async () => 1)).rejects.toThrow(/busy with "stop"/);
    await expect(lock.run('vm2', 'start', 'VM "b"', async () => 2)).resolves.toBe(2);
    release();
    await first;
    await expect(lock.run('vm1', 'start', 'VM "a"', async () => 3)).resolves.toBe(3);
  });
});

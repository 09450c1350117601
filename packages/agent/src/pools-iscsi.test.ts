import { existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DroverError } from '@drover/core';
import { PoolRegistry } from './pools.js';
import { tempDir } from './testing/harness.js';

/**
 * iSCSI pools: bad input is a clear error and changes nothing. (Reaching a
 * real target, booting from a LUN and migrating on it: migration.test.ts.)
 */
const dir = tempDir('pools-iscsi');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function failure(work: Promise<unknown>): Promise<DroverError> {
  try {
    await work;
  } catch (error) {
    if (error instanceof DroverError) return error;
    throw error;
  }
  throw new Error('expected a failure');
}

describe('iSCSI pools', () => {
  it('refuses a bad portal or IQN, and a target that cannot be reached, keeping nothing', async () => {
    const pools = new PoolRegistry(dir, [{ name: 'default', path: path.join(dir, 'default') }], { name: 'root', uid: 0, gid: 0 }, () => [], [], 'h1');
    await pools.init();
    for (const [iscsi, field] of [
      [{ portal: '127.0.0.1', target: 'iqn.2026-11.test:x' }, 'iscsi.portal'],
      [{ portal: '127.0.0.1:99999', target: 'iqn.2026-11.test:x' }, 'iscsi.portal'],
      [{ portal: '127.0.0.1:3260', target: 'san1' }, 'iscsi.target'],
      [{ portal: '127.0.0.1:3260', target: 'iqn.2026-11.test:x,driver=file' }, 'iscsi.target'],
    ] as const) {
      const error = await failure(pools.define({ name: 'san', iscsi }));
      expect(error.code).toBe('invalid');
      expect((error.details as { field?: string }).field).toBe(field);
    }
    // Nothing listens on port 1: QEMU's initiator cannot log in, the pool is not kept.
    const unreachable = await failure(pools.define({ name: 'san', iscsi: { portal: '127.0.0.1:1', target: 'iqn.2026-11.test:none' } }));
    expect(unreachable.code).toBe('invalid');
    expect(unreachable.message).toContain('iscsi://127.0.0.1:1/iqn.2026-11.test:none');
    expect(pools.names()).toEqual(['default']);
    expect(existsSync(path.join(dir, 'pools.json')) ? readFileSync(path.join(dir, 'pools.json'), 'utf8') : '[]').not.toContain('san');
  }, 120_000);

  it('refuses a configured pool with both a path and a target, or neither', async () => {
    for (const bad of [{ name: 'x', path: path.join(dir, 'x'), iscsi: { portal: '127.0.0.1:3260', target: 'iqn.2026-11.test:x' } }, { name: 'y' }]) {
      const pools = new PoolRegistry(dir, [bad], { name: 'root', uid: 0, gid: 0 }, () => []);
      expect((await failure(pools.init())).code).toBe('invalid');
    }
  });
});

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestWorkspace {
  /** A fresh mkdtemp directory, removed by cleanup(). */
  dir: string;
  /** DROVER_APPLIANCE_CACHE when set (shared between test files), else inside dir. */
  cacheDir: string;
  cleanup(): Promise<void>;
}

export async function makeTestWorkspace(prefix: string): Promise<TestWorkspace> {
  const dir = await mkdtemp(join(tmpdir(), `drover-${prefix}-`));
  const shared = process.env.DROVER_APPLIANCE_CACHE;
  return {
    dir,
    cacheDir: shared !== undefined && shared.length > 0 ? shared : join(dir, 'cache'),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

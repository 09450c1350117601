import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { canonicalJson, ensureArtifact, hashInputs } from './cache.js';

describe('artifact cache', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'drover-cache-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('hashes inputs independently of key order', () => {
    expect(canonicalJson({ b: 1, a: [{ d: 2, c: 3 }] })).toBe('{"a":[{"c":3,"d":2}],"b":1}');
    expect(hashInputs({ x: 1, y: 'z' })).toBe(hashInputs({ y: 'z', x: 1 }));
    expect(hashInputs({ x: 1 })).not.toBe(hashInputs({ x: 2 }));
  });

  it('builds once, then returns the cached artifact without calling the builder', async () => {
    const cacheDir = join(dir, 'once');
    let calls = 0;
    const build = async (tmp: string) => {
      calls += 1;
      await writeFile(join(tmp, 'file'), 'content');
      return { file: 'file' };
    };
    const first = await ensureArtifact({ cacheDir, inputs: { n: 1 }, build });
    const second = await ensureArtifact({ cacheDir, inputs: { n: 1 }, build });
    expect(calls).toBe(1);
    expect(first.built).toBe(true);
    expect(second).toEqual({ ...first, built: false });
    expect(await readFile(join(second.dir, 'file'), 'utf8')).toBe('content');
    // Concurrent callers in one process share the build.
    const [a, b] = await Promise.all([
      ensureArtifact({ cacheDir, inputs: { n: 2 }, build }),
      ensureArtifact({ cacheDir, inputs: { n: 2 }, build }),
    ]);
    expect(calls).toBe(2);
    expect(a.dir).toBe(b.dir);
  });

  it('lets exactly one of two racing builders publish, and the loser adopts its copy', async () => {
    // Two paths to one directory defeat the in-process sharing, like two processes would.
    const real = join(dir, 'race');
    await mkdir(real);
    const alias = join(dir, 'race-alias');
    await symlink(real, alias);
    let arrived = 0;
    let release!: () => void;
    const barrier = new Promise<void>((resolve) => (release = resolve));
    const builder = (who: string) => async (tmp: string) => {
      await writeFile(join(tmp, 'who'), who);
      arrived += 1;
      if (arrived === 2) release();
      await barrier;
      return { who };
    };
    const [a, b] = await Promise.all([
      ensureArtifact({ cacheDir: real, inputs: { same: true }, build: builder('a') }),
      ensureArtifact({ cacheDir: alias, inputs: { same: true }, build: builder('b') }),
    ]);
    expect([a.built, b.built].sort()).toEqual([false, true]);
    expect(a.manifest).toEqual(b.manifest);
    const winner = a.built ? 'a' : 'b';
    expect(await readFile(join(real, a.hash, 'who'), 'utf8')).toBe(winner);
    expect((await readdir(real)).filter((n) => n.startsWith('.'))).toEqual([]);
  });

  it('leaves nothing behind when a build fails, and replaces a damaged directory', async () => {
    const cacheDir = join(dir, 'fail');
    await expect(
      ensureArtifact({
        cacheDir,
        inputs: { n: 1 },
        build: async (tmp) => {
          await writeFile(join(tmp, 'half'), 'x');
          throw new Error('mke2fs exploded');
        },
      }),
    ).rejects.toThrow('mke2fs exploded');
    expect(await readdir(cacheDir)).toEqual([]);

    const damaged = join(cacheDir, hashInputs({ n: 1 }));
    await mkdir(damaged);
    await writeFile(join(damaged, 'junk'), 'x');
    const result = await ensureArtifact({
      cacheDir,
      inputs: { n: 1 },
      build: async (tmp) => {
        await writeFile(join(tmp, 'good'), 'y');
        return {};
      },
    });
    expect(result.built).toBe(true);
    expect((await readdir(result.dir)).sort()).toEqual(['good', 'manifest.json']);
  });
});

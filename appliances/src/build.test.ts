import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { APPLIANCE_MODULES } from './kernel.js';
import {
  buildAllAppliances,
  buildAppliance,
  buildProbeImage,
  defaultApplianceCacheDir,
  type ApplianceArtifacts,
  type ApplianceName,
} from './index.js';
import { makeTestWorkspace, type TestWorkspace } from './test-support/workspace.js';

function qemuImgInfo(path: string): Record<string, unknown> {
  return JSON.parse(execFileSync('qemu-img', ['info', '-f', 'qcow2', '--output=json', path], { encoding: 'utf8' })) as Record<
    string,
    unknown
  >;
}

/** Reads a file out of a qcow2 ext4 image (converted to raw in the workspace). */
function debugfs(ws: TestWorkspace, qcow2: string, request: string): string {
  const raw = join(ws.dir, 'inspect.raw');
  execFileSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', qcow2, raw]);
  return execFileSync('debugfs', ['-R', request, raw], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
}

async function fingerprint(paths: string[]): Promise<string[]> {
  return Promise.all(paths.map(async (p) => `${p}:${(await stat(p)).ino}:${(await stat(p)).mtimeMs}`));
}

describe('appliance builder', () => {
  let ws: TestWorkspace;
  let all: Record<ApplianceName, ApplianceArtifacts>;

  beforeAll(async () => {
    ws = await makeTestWorkspace('build');
    all = await buildAllAppliances({ cacheDir: ws.cacheDir });
  });
  afterAll(async () => {
    await ws?.cleanup();
  });

  it('returns the documented artifacts for every appliance', () => {
    expect(Object.keys(all).sort()).toEqual(['counter', 'db', 'web']);
    for (const a of Object.values(all)) {
      expect(a.version).toBe('1.0.0');
      expect(a.hash).toMatch(/^[0-9a-f]{64}$/);
      expect(a.readyPattern).toBe('DROVER-READY');
      expect(a.cmdline).toContain('console=ttyS0');
      expect(a.minMemoryMiB).toBeGreaterThanOrEqual(96);
      expect(a.minMemoryMiB).toBeLessThanOrEqual(128);
      for (const p of [a.kernel, a.initrd, a.rootDisk]) expect(p.startsWith(ws.cacheDir)).toBe(true);
    }
    expect(all.web.ports).toEqual({ http: 80 });
    expect(all.db.ports).toEqual({ db: 7000 });
    expect(all.db.dataDisk).toBeDefined();
    expect(all.web.dataDisk).toBeUndefined();
    // One kernel and one initramfs serve all appliances.
    expect(new Set(Object.values(all).map((a) => a.initrd)).size).toBe(1);
  });

  it('makes standalone qcow2 disks with the appliance inside', () => {
    for (const disk of [all.web.rootDisk, all.db.rootDisk, all.db.dataDisk!, all.counter.rootDisk]) {
      const info = qemuImgInfo(disk);
      expect(info.format).toBe('qcow2');
      expect(info['backing-filename']).toBeUndefined();
    }
    expect(debugfs(ws, all.db.rootDisk, 'cat /etc/drover/appliance')).toBe("DROVER_APPLIANCE='db'\nDROVER_VERSION='1.0.0'\n");
    const counterBin = debugfs(ws, all.counter.rootDisk, 'stat /usr/bin/drover-counter');
    expect(counterBin).toMatch(/Mode:\s+0755/);
    expect(debugfs(ws, all.counter.rootDisk, 'stat /sbin/init')).toMatch(/Fast link dest: "\.\.\/bin\/busybox"/);
    expect(debugfs(ws, all.db.dataDisk!, 'stats')).toMatch(/Filesystem volume name:\s+drover-data/);
  });

  it('packs busybox, /init and the modules in load order into the initramfs', async () => {
    const cpio = gunzipSync(await readFile(all.web.initrd));
    const listing = execFileSync('cpio', ['-it', '--quiet'], { input: cpio, encoding: 'utf8' }).trim().split('\n');
    expect(listing).toEqual(expect.arrayContaining(['init', 'bin/busybox', 'dev/console', 'etc/drover-modules']));
    for (const m of APPLIANCE_MODULES) expect(listing).toContain(`lib/modules/${m}.ko`);
    const order = execFileSync('cpio', ['-i', '--quiet', '--to-stdout', 'etc/drover-modules'], { input: cpio, encoding: 'utf8' });
    expect(order.trim().split('\n')).toEqual([...APPLIANCE_MODULES]);
  });

  it('a second build with the same inputs reuses every artifact untouched', async () => {
    const files = (a: ApplianceArtifacts) => [a.kernel, a.initrd, a.rootDisk, ...(a.dataDisk ? [a.dataDisk] : [])];
    const before = await fingerprint(Object.values(all).flatMap(files));
    const again = await buildAllAppliances({ cacheDir: ws.cacheDir });
    expect(again).toEqual(all);
    expect(await buildAppliance('web', { cacheDir: ws.cacheDir })).toEqual(all.web);
    expect(await fingerprint(Object.values(again).flatMap(files))).toEqual(before);
    expect((await readdir(ws.cacheDir)).filter((n) => n.startsWith('.'))).toEqual([]);
  });

  it('names artifacts by their inputs, not by where the cache is', async () => {
    const elsewhere = await buildAppliance('web', { cacheDir: join(ws.dir, 'other-cache') });
    expect(elsewhere.hash).toBe(all.web.hash);
    expect(elsewhere.rootDisk).toBe(join(ws.dir, 'other-cache', all.web.hash, 'root.qcow2'));
  });

  it('builds the probe image on the same kernel, cached as well', async () => {
    const probe = await buildProbeImage({ cacheDir: ws.cacheDir });
    expect(probe).toEqual({ kernel: all.web.kernel, initrd: expect.any(String), cmdline: all.web.cmdline, expect: 'DROVER-PROBE-OK' });
    expect(probe.initrd).not.toBe(all.web.initrd);
    expect(await buildProbeImage({ cacheDir: ws.cacheDir })).toEqual(probe);
  });

  it('refuses unknown appliances and relative cache directories', async () => {
    await expect(buildAppliance('mail' as ApplianceName, { cacheDir: ws.cacheDir })).rejects.toMatchObject({ code: 'invalid' });
    await expect(buildAppliance('web', { cacheDir: 'relative/cache' })).rejects.toMatchObject({ code: 'invalid' });
  });

  it('takes its default cache directory from DROVER_APPLIANCE_CACHE', () => {
    const saved = process.env.DROVER_APPLIANCE_CACHE;
    try {
      process.env.DROVER_APPLIANCE_CACHE = '/srv/cache/x';
      expect(defaultApplianceCacheDir()).toBe('/srv/cache/x');
      delete process.env.DROVER_APPLIANCE_CACHE;
      expect(defaultApplianceCacheDir()).toBe('/var/cache/drover/appliances');
    } finally {
      if (saved === undefined) delete process.env.DROVER_APPLIANCE_CACHE;
      else process.env.DROVER_APPLIANCE_CACHE = saved;
    }
  });
});

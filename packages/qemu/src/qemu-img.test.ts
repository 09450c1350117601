import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DroverError, rejectionOf } from '@drover/core';
import {
  QemuImg,
  createQemuImg,
  parseImageInfo,
  qemuImgArgv,
  runQemuImg,
  untrustedImageProblems,
} from './qemu-img.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;


describe('qemuImgArgv', () => {
  it('runs qemu-img under prlimit with the default CPU and address-space limits', () => {
    expect(qemuImgArgv(['info', '-f', 'raw', '/x.img'])).toEqual([
      'prlimit', '--cpu=60', '--as=1073741824', '--', 'qemu-img', 'info', '-f', 'raw', '/x.img',
    ]);
  });

  it('takes other limits and binaries, and refuses nonsense limits', () => {
    expect(
      qemuImgArgv(['check'], { limits: { cpuSeconds: 5 }, binary: '/opt/qemu-img', prlimitBinary: '/usr/bin/prlimit' }),
    ).toEqual(['/usr/bin/prlimit', '--cpu=5', '--as=1073741824', '--', '/opt/qemu-img', 'check']);
    expect(() => qemuImgArgv(['info'], { limits: { addressSpaceBytes: 0 } })).toThrow(/addressSpaceBytes/);
  });
});

describe('QemuImg with real qemu-img', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'drover-qemu-img-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('creates a thin clone of a 1 GiB base that takes almost no space', async () => {
    const base = join(dir, 'base.qcow2');
    const clone = join(dir, 'clone.qcow2');
    await QemuImg.create(base, 'qcow2', GiB);
    await QemuImg.createThinClone(base, 'qcow2', clone);
    expect((await stat(clone)).size).toBeLessThan(512 * 1024);
    const info = await QemuImg.info(clone, 'qcow2');
    expect(info).toMatchObject({
      format: 'qcow2',
      virtualSize: GiB,
      backingFilename: base,
      backingFormat: 'qcow2',
      dataFile: undefined,
      corrupt: false,
    });
    // The clone is exactly what inspectUntrusted exists to refuse from outside.
    await expect(QemuImg.inspectUntrusted(clone, 'qcow2')).rejects.toMatchObject({ code: 'invalid' });
  });

  it('refuses to overwrite an existing image', async () => {
    const path = join(dir, 'precious.raw');
    await writeFile(path, 'keep me');
    const error = await rejectionOf(QemuImg.create(path, 'raw', MiB));
    expect(error.code).toBe('conflict');
    expect(await readFile(path, 'utf8')).toBe('keep me');
    await expect(QemuImg.convert(path, 'raw', path, 'qcow2')).rejects.toMatchObject({ code: 'conflict' });
  });

  it('resizes, and shrinks only when asked', async () => {
    const path = join(dir, 'resize.qcow2');
    await QemuImg.create(path, 'qcow2', 64 * MiB);
    await QemuImg.resize(path, 'qcow2', 128 * MiB);
    expect((await QemuImg.info(path, 'qcow2')).virtualSize).toBe(128 * MiB);
    const error = await rejectionOf(QemuImg.resize(path, 'qcow2', 32 * MiB));
    expect(error.code).toBe('invalid');
    expect(error.message).toContain('shrink');
    await QemuImg.resize(path, 'qcow2', 32 * MiB, { shrink: true });
    expect((await QemuImg.info(path, 'qcow2')).virtualSize).toBe(32 * MiB);
  });

  it('converts, checks and snapshots images', async () => {
    const src = join(dir, 'convert-src.qcow2');
    const dst = join(dir, 'convert-dst.raw');
    await QemuImg.create(src, 'qcow2', 8 * MiB);
    await QemuImg.convert(src, 'qcow2', dst, 'raw');
    expect((await stat(dst)).size).toBe(8 * MiB);
    expect(await QemuImg.check(src, 'qcow2')).toMatchObject({ supported: true, ok: true, corruptions: 0, leaks: 0 });
    expect(await QemuImg.check(dst, 'raw')).toMatchObject({ supported: false });

    await QemuImg.snapshotCreate(src, 'before-upgrade');
    const [snapshot] = await QemuImg.snapshotList(src);
    expect(snapshot).toMatchObject({ name: 'before-upgrade', vmStateSize: 0 });
    expect(snapshot?.date).toBeInstanceOf(Date);
    await QemuImg.snapshotApply(src, 'before-upgrade');
    await QemuImg.snapshotDelete(src, 'before-upgrade');
    expect(await QemuImg.snapshotList(src)).toEqual([]);
    await expect(QemuImg.snapshotApply(src, 'missing')).rejects.toBeInstanceOf(DroverError);
  });

  it('reports a missing image as not_found and a wrong format as unprocessable', async () => {
    expect((await rejectionOf(QemuImg.info(join(dir, 'none.qcow2'), 'qcow2'))).code).toBe('not_found');
    const raw = join(dir, 'plain.raw');
    await QemuImg.create(raw, 'raw', MiB);
    const error = await rejectionOf(QemuImg.info(raw, 'qcow2'));
    expect(error.code).toBe('unprocessable');
    expect(error.message).toContain('not in qcow2 format');
  });

  it('refuses bad arguments before running anything', async () => {
    await expect(QemuImg.create('relative.qcow2', 'qcow2', MiB)).rejects.toMatchObject({ code: 'invalid' });
    await expect(QemuImg.create(join(dir, 'a\nb'), 'qcow2', MiB)).rejects.toMatchObject({ code: 'invalid' });
    await expect(QemuImg.create(join(dir, 'zero.raw'), 'raw', 0)).rejects.toMatchObject({ code: 'invalid' });
    await expect(QemuImg.info(join(dir, 'x.vmdk'), 'vmdk' as 'raw')).rejects.toMatchObject({ code: 'invalid' });
  });

  it('really applies the address-space limit: a tiny one makes qemu-img fail cleanly', async () => {
    const path = join(dir, 'limited.raw');
    await QemuImg.create(path, 'raw', MiB);
    const tiny = createQemuImg({ limits: { addressSpaceBytes: 16 * MiB } });
    const error = await rejectionOf(tiny.info(path, 'raw'));
    expect(error.code).toBe('unprocessable');
    expect(error.message).toContain('qemu-img info');
    expect(error.details.limits).toEqual({ cpuSeconds: 60, addressSpaceBytes: 16 * MiB });
    // The same call within the default limits works.
    expect((await QemuImg.info(path, 'raw')).virtualSize).toBe(MiB);
  });

  it('kills a run that outlives its wall-clock timeout', async () => {
    const error = await rejectionOf(runQemuImg(['30'], { binary: 'sleep', timeoutMs: 200 }, { op: 'sleep', path: '-' }));
    expect(error.code).toBe('timeout');
    expect(error.message).toContain('it was killed');
  });

  describe('inspectUntrusted', () => {
    it('accepts a plain qcow2 and a raw image', async () => {
      const qcow2 = join(dir, 'clean.qcow2');
      const raw = join(dir, 'clean.raw');
      await QemuImg.create(qcow2, 'qcow2', 16 * MiB);
      await QemuImg.create(raw, 'raw', 4 * MiB);
      expect(await QemuImg.inspectUntrusted(qcow2, 'qcow2')).toMatchObject({ format: 'qcow2', virtualSize: 16 * MiB });
      expect(await QemuImg.inspectUntrusted(raw, 'raw')).toMatchObject({ format: 'raw', virtualSize: 4 * MiB });
      // A qcow2 declared raw is just bytes to QEMU: harmless, so it passes as raw.
      expect((await QemuImg.inspectUntrusted(qcow2, 'raw')).format).toBe('raw');
      const limited = await rejectionOf(QemuImg.inspectUntrusted(qcow2, 'qcow2', { maxVirtualSizeBytes: MiB }));
      expect(limited.message).toContain('above the limit');
    });

    it('refuses a qcow2 whose backing file points at /etc/shadow', async () => {
      const path = join(dir, 'shadow.qcow2');
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', '/etc/shadow', '-F', 'raw', path, '1M']);
      const error = await rejectionOf(QemuImg.inspectUntrusted(path, 'qcow2'));
      expect(error.code).toBe('invalid');
      expect(error.message).toContain(path);
      expect(error.message).toContain('backing file');
    });

    it('refuses a qcow2 with an external data file', async () => {
      const path = join(dir, 'datafile.qcow2');
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${join(dir, 'datafile.raw')}`, path, '1M']);
      const error = await rejectionOf(QemuImg.inspectUntrusted(path, 'qcow2'));
      expect(error.code).toBe('invalid');
      expect(error.message).toContain('external data file');
      expect(error.details.path).toBe(path);
    });

    it('refuses garbage declared as qcow2, with a clear message', async () => {
      const path = join(dir, 'garbage.qcow2');
      await writeFile(path, Buffer.alloc(4096, 0x41));
      const error = await rejectionOf(QemuImg.inspectUntrusted(path, 'qcow2'));
      expect(error.code).toBe('invalid');
      expect(error.message).toBe(`Image "${path}" was refused: it is not a qcow2 image (no qcow2 header)`);

      // A valid-looking header over nonsense gets past our header check and is refused by qemu-img.
      const forged = join(dir, 'forged.qcow2');
      const header = Buffer.alloc(4096, 0xff);
      header.writeUInt32BE(0x514649fb, 0);
      header.writeUInt32BE(3, 4);
      header.fill(0, 8, 20); // no backing file
      header.fill(0, 32, 36); // not encrypted
      header.fill(0, 72, 80); // no incompatible features
      header.writeUInt32BE(104, 100);
      header.fill(0, 104, 112); // end of header extensions
      await writeFile(forged, header);
      const forgedError = await rejectionOf(QemuImg.inspectUntrusted(forged, 'qcow2'));
      expect(forgedError.code).toBe('invalid');
      expect(forgedError.message).toContain('qemu-img cannot read it as qcow2');
    });

    it('refuses other formats, symlinks and devices', async () => {
      const qcow2 = join(dir, 'target.qcow2');
      await QemuImg.create(qcow2, 'qcow2', MiB);
      const vmdk = await rejectionOf(QemuImg.inspectUntrusted(qcow2, 'vmdk'));
      expect(vmdk.message).toContain('format "vmdk" is not accepted');
      const link = join(dir, 'link.qcow2');
      await symlink(qcow2, link);
      expect((await rejectionOf(QemuImg.inspectUntrusted(link, 'qcow2'))).message).toContain('not a regular file');
      expect((await rejectionOf(QemuImg.inspectUntrusted('/dev/zero', 'raw'))).message).toContain('not a regular file');
      expect((await rejectionOf(QemuImg.inspectUntrusted(join(dir, 'absent.raw'), 'raw'))).code).toBe('not_found');
    });
  });
});

describe('untrustedImageProblems', () => {
  const base = {
    filename: '/x',
    'virtual-size': 1024,
    format: 'qcow2',
    'format-specific': { type: 'qcow2', data: { compat: '1.1', corrupt: false } },
  };

  it('finds nothing wrong with a plain image', () => {
    expect(untrustedImageProblems(parseImageInfo(JSON.stringify(base)), 'qcow2')).toEqual([]);
  });

  it('names every problem qemu-img reports', () => {
    const info = parseImageInfo(
      JSON.stringify({
        ...base,
        'backing-filename': '/etc/shadow',
        'format-specific': { type: 'qcow2', data: { 'data-file': '/dev/sda', corrupt: true, extents: [{}, {}] } },
        children: [{}, {}],
      }),
    );
    expect(untrustedImageProblems(info, 'raw')).toEqual([
      'it opened as "qcow2", not "raw"',
      'it has a backing file ("/etc/shadow")',
      'it has an external data file ("/dev/sda")',
      'it has 2 extents',
      'it has 2 child nodes',
      'it is marked corrupt',
    ]);
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { lstat, mkdtemp, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpioWriter } from './cpio.js';

describe('CpioWriter (newc)', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'drover-cpio-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  // Sizes 0..5 and names of every length modulo 4 exercise both paddings.
  const sample = () =>
    new CpioWriter()
      .addDirectory('bin')
      .addDirectory('etc', 0o750)
      .addFile('bin/tool', '#!/bin/sh\necho hi\n', 0o755)
      .addFile('etc/e0', '')
      .addFile('etc/e01', 'a')
      .addFile('etc/e012', 'ab')
      .addFile('etc/e0123', 'abc')
      .addFile('etc/e01234', 'abcd')
      .addFile('etc/e012345', Buffer.from([0, 1, 2, 3, 255]), 0o600)
      .addSymlink('bin/sh', 'tool');

  it('is listed by GNU cpio and busybox cpio', async () => {
    const archive = join(dir, 'list.cpio');
    await writeFile(archive, sample().addDirectory('dev').addCharDevice('dev/console', 5, 1).toBuffer());
    const expected = ['bin', 'etc', 'bin/tool', 'etc/e0', 'etc/e01', 'etc/e012', 'etc/e0123', 'etc/e01234', 'etc/e012345', 'bin/sh', 'dev', 'dev/console'];
    const gnu = execFileSync('cpio', ['-it', '--quiet', '-F', archive], { encoding: 'utf8' });
    expect(gnu.trim().split('\n')).toEqual(expected);
    const bb = execFileSync('busybox', ['cpio', '-t', '-F', archive], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    expect(bb.trim().split('\n')).toEqual(expected);
    const verbose = execFileSync('cpio', ['-itv', '--quiet', '-F', archive], { encoding: 'utf8' });
    expect(verbose).toMatch(/^crw------- .* 5,\s+1 .* dev\/console$/m);
    expect(verbose).toMatch(/^lrwxrwxrwx .* bin\/sh -> tool$/m);
    expect(verbose).toMatch(/^drwxr-x--- .* etc$/m);
  });

  it('extracts to the same content, modes and links', async () => {
    const archive = join(dir, 'x.cpio');
    const out = join(dir, 'out');
    await writeFile(archive, sample().toBuffer());
    execFileSync('mkdir', ['-p', out]);
    execFileSync('cpio', ['-idm', '--quiet', '--no-absolute-filenames', '-F', archive], { cwd: out });
    expect(await readFile(join(out, 'bin/tool'), 'utf8')).toBe('#!/bin/sh\necho hi\n');
    expect(await readFile(join(out, 'etc/e012345'))).toEqual(Buffer.from([0, 1, 2, 3, 255]));
    expect(await readFile(join(out, 'etc/e0123'), 'utf8')).toBe('abc');
    expect((await lstat(join(out, 'bin/tool'))).mode & 0o7777).toBe(0o755);
    expect((await lstat(join(out, 'etc/e012345'))).mode & 0o7777).toBe(0o600);
    expect(await readlink(join(out, 'bin/sh'))).toBe('tool');
  });

  it('is deterministic and 4-byte aligned', () => {
    const a = sample().toBuffer();
    expect(a.equals(sample().toBuffer())).toBe(true);
    expect(a.length % 4).toBe(0);
    expect(a.subarray(0, 6).toString()).toBe('070701');
    expect(a.includes(Buffer.from('TRAILER!!!\0'))).toBe(true);
  });

  it('refuses bad paths, duplicates and orphans', () => {
    expect(() => new CpioWriter().addFile('../x', 'a')).toThrow(/not a valid archive path/);
    expect(() => new CpioWriter().addFile('a/./b', 'a')).toThrow(/not a valid archive path/);
    expect(() => new CpioWriter().addFile('a/b', 'a')).toThrow(/add the directory "a" before/);
    expect(() => new CpioWriter().addFile('a', 'x').addFile('/a', 'y')).toThrow(/already in the archive/);
    expect(() => new CpioWriter().addFile('TRAILER!!!', 'x')).toThrow(/reserved/);
    expect(() => new CpioWriter().addFile('a', 'x', 0o10000)).toThrow(/permissions/);
  });
});

import { access, rm } from 'node:fs/promises';
import { constants } from 'node:fs';
import { errors } from '@drover/core';
import { runTool } from './run.js';

/** A tool from PATH or, because non-login root shells often lack sbin, a fixed place. */
export async function findTool(name: string, fallbacks: readonly string[] = []): Promise<string> {
  const dirs = (process.env.PATH ?? '').split(':').filter((d) => d.length > 0);
  for (const candidate of [...dirs.map((d) => `${d}/${name}`), ...fallbacks]) {
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // try the next one
    }
  }
  throw errors.unavailable(`${name} is not installed (looked in PATH and ${fallbacks.join(', ') || 'nowhere else'})`, {
    tool: name,
  });
}

export interface Ext4ImageOptions {
  /** Directory whose tree becomes the filesystem's content; omitted: an empty filesystem. */
  sourceDir?: string;
  label: string;
  sizeMiB: number;
  /** Scratch raw image path; removed afterwards. */
  rawPath: string;
  /** The qcow2 written. */
  output: string;
}

/**
 * ext4 from a directory without mounting anything (`mke2fs -d`), then qcow2.
 * Root owns the filesystem root; files keep the owner they have in sourceDir.
 */
export async function makeExt4Qcow2(options: Ext4ImageOptions): Promise<void> {
  const mke2fs = await findTool('mke2fs', ['/usr/sbin/mke2fs', '/sbin/mke2fs']);
  const qemuImg = await findTool('qemu-img', ['/usr/bin/qemu-img']);
  const args = ['-q', '-t', 'ext4', '-L', options.label];
  if (options.sourceDir !== undefined) args.push('-d', options.sourceDir);
  args.push('-E', 'root_owner=0:0', options.rawPath, `${options.sizeMiB}M`);
  try {
    await runTool(mke2fs, args);
    // Always name the source format: never let qemu-img probe an image.
    await runTool(qemuImg, ['convert', '-f', 'raw', '-O', 'qcow2', options.rawPath, options.output]);
  } finally {
    await rm(options.rawPath, { force: true });
  }
}

import { readdir, readFile, open } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join, relative, sep } from 'node:path';
import { errors } from '@drover/core';
import { sha256 } from './cache.js';

/**
 * The guest side of the appliances lives as plain files in appliances/guest/
 * (shell scripts, configuration, counter.c). It sits beside src/ and dist/, so
 * both the TypeScript sources and the compiled JavaScript find it.
 */
export const GUEST_DIR = fileURLToPath(new URL('../guest/', import.meta.url));

export interface GuestFile {
  /** Path relative to the listed directory, with `/` separators. */
  rel: string;
  abs: string;
  /** Scripts (`#!` first line) are installed 0755, everything else 0644: checkouts may lose mode bits. */
  executable: boolean;
  sha256: string;
}

/** Regular files under GUEST_DIR/subdir, sorted by path. */
export async function listGuestFiles(subdir: string): Promise<GuestFile[]> {
  const root = join(GUEST_DIR, subdir);
  const out: GuestFile[] = [];
  const walk = async (dir: string) => {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (cause) {
      throw errors.internal(`Guest files missing: cannot read ${dir}`, cause);
    }
    for (const e of entries) {
      const abs = join(dir, e.name);
      if (e.isDirectory()) await walk(abs);
      else if (e.isFile()) {
        const content = await readFile(abs);
        out.push({
          rel: relative(root, abs).split(sep).join('/'),
          abs,
          executable: content.subarray(0, 2).toString('latin1') === '#!',
          sha256: sha256(content),
        });
      } else {
        throw errors.internal(`Guest files hold only regular files and directories: ${abs}`);
      }
    }
  };
  await walk(root);
  return out.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
}

/** What goes into a cache hash for a set of guest files. */
export function guestFilesDigest(files: readonly GuestFile[]): Array<[string, string, boolean]> {
  return files.map((f) => [f.rel, f.sha256, f.executable]);
}

/**
 * Refuses a dynamically linked binary: the initramfs and root disks carry no
 * libc, so busybox must be the static build (package busybox-static).
 */
export async function assertStaticElf(path: string): Promise<void> {
  const handle = await open(path, 'r').catch((cause: unknown) => {
    throw errors.unavailable(`Cannot open ${path}`, { path }, cause);
  });
  try {
    const header = Buffer.alloc(64);
    await handle.read(header, 0, 64, 0);
    if (header.readUInt32BE(0) !== 0x7f454c46 || header[4] !== 2 || header[5] !== 1) {
      throw errors.invalid(`${path} is not a 64-bit little-endian ELF executable`, { path });
    }
    const phoff = Number(header.readBigUInt64LE(32));
    const phentsize = header.readUInt16LE(54);
    const phnum = header.readUInt16LE(56);
    const table = Buffer.alloc(phentsize * phnum);
    await handle.read(table, 0, table.length, phoff);
    for (let i = 0; i < phnum; i++) {
      if (table.readUInt32LE(i * phentsize) === 3 /* PT_INTERP */) {
        throw errors.invalid(`${path} is dynamically linked; install busybox-static`, { path });
      }
    }
  } finally {
    await handle.close();
  }
}

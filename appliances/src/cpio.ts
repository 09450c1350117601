import { errors } from '@drover/core';

/**
 * A writer for "newc" cpio archives (the SVR4 format without checksums, magic
 * 070701), the format the Linux kernel unpacks as an initramfs.
 *
 * Entries are kept in insertion order; parents must be added before their
 * children (the kernel creates entries in archive order). Everything is owned
 * by root and timestamps are fixed, so the same entries always give the same bytes.
 */

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

const HEADER_SIZE = 110;
const TRAILER = 'TRAILER!!!';
/** Newc fields are 8 hex digits. */
const MAX_FIELD = 0xffffffff;

interface Entry {
  path: string;
  mode: number;
  data: Buffer;
  rdevMajor: number;
  rdevMinor: number;
}

export interface CpioWriterOptions {
  /** Modification time written for every entry, in seconds since the epoch (default 0). */
  mtime?: number;
}

export class CpioWriter {
  private readonly entries: Entry[] = [];
  private readonly paths = new Set<string>();
  private readonly mtime: number;

  constructor(options: CpioWriterOptions = {}) {
    this.mtime = options.mtime ?? 0;
  }

  addDirectory(path: string, permissions = 0o755): this {
    return this.add(path, S_IFDIR | checkPermissions(permissions), Buffer.alloc(0));
  }

  addFile(path: string, content: Buffer | string, permissions = 0o644): this {
    const data = typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
    return this.add(path, S_IFREG | checkPermissions(permissions), data);
  }

  addSymlink(path: string, target: string): this {
    if (target.length === 0 || target.includes('\0')) {
      throw errors.invalid(`cpio: symlink "${path}" needs a non-empty target without NUL bytes`);
    }
    return this.add(path, S_IFLNK | 0o777, Buffer.from(target, 'utf8'));
  }

  addCharDevice(path: string, major: number, minor: number, permissions = 0o600): this {
    return this.add(path, S_IFCHR | checkPermissions(permissions), Buffer.alloc(0), major, minor);
  }

  /** The whole archive, trailer included. */
  toBuffer(): Buffer {
    const chunks: Buffer[] = [];
    let ino = 1;
    for (const entry of this.entries) {
      const isDir = (entry.mode & 0o170000) === S_IFDIR;
      chunks.push(...encodeEntry(entry.path, { ...entry, ino: ino++, nlink: isDir ? 2 : 1, mtime: this.mtime }));
    }
    chunks.push(
      ...encodeEntry(TRAILER, { mode: 0, data: Buffer.alloc(0), rdevMajor: 0, rdevMinor: 0, ino: 0, nlink: 1, mtime: 0 }),
    );
    return Buffer.concat(chunks);
  }

  private add(rawPath: string, mode: number, data: Buffer, rdevMajor = 0, rdevMinor = 0): this {
    const path = normalizeArchivePath(rawPath);
    if (this.paths.has(path)) throw errors.conflict(`cpio: "${path}" is already in the archive`, { path });
    const slash = path.lastIndexOf('/');
    if (slash > 0 && !this.paths.has(path.slice(0, slash))) {
      throw errors.invalid(`cpio: add the directory "${path.slice(0, slash)}" before "${path}"`, { path });
    }
    if (data.length > MAX_FIELD) throw errors.tooLarge(`cpio: "${path}" is larger than 4 GiB`, { path });
    for (const n of [rdevMajor, rdevMinor]) {
      if (!Number.isInteger(n) || n < 0 || n > MAX_FIELD) throw errors.invalid(`cpio: bad device number ${n} for "${path}"`);
    }
    this.paths.add(path);
    this.entries.push({ path, mode, data, rdevMajor, rdevMinor });
    return this;
  }
}

function checkPermissions(permissions: number): number {
  if (!Number.isInteger(permissions) || permissions < 0 || permissions > 0o7777) {
    throw errors.invalid(`cpio: permissions must be between 0 and 0o7777, got ${permissions}`);
  }
  return permissions;
}

/** Archive paths are relative ("bin/busybox"): no leading slash, no `.`/`..` parts. */
function normalizeArchivePath(path: string): string {
  const parts = path.split('/').filter((p) => p.length > 0);
  if (parts.length === 0 || parts.some((p) => p === '.' || p === '..') || path.includes('\0')) {
    throw errors.invalid(`cpio: "${path}" is not a valid archive path`, { path });
  }
  const normalized = parts.join('/');
  if (normalized === TRAILER) throw errors.invalid(`cpio: "${TRAILER}" is reserved`);
  return normalized;
}

interface EncodeFields {
  mode: number;
  data: Buffer;
  rdevMajor: number;
  rdevMinor: number;
  ino: number;
  nlink: number;
  mtime: number;
}

function encodeEntry(path: string, f: EncodeFields): Buffer[] {
  const name = Buffer.from(`${path}\0`, 'utf8');
  const hex = (n: number) => n.toString(16).padStart(8, '0');
  const header =
    '070701' +
    hex(f.ino) +
    hex(f.mode) +
    hex(0) + // uid
    hex(0) + // gid
    hex(f.nlink) +
    hex(f.mtime) +
    hex(f.data.length) +
    hex(0) + // devmajor
    hex(0) + // devminor
    hex(f.rdevMajor) +
    hex(f.rdevMinor) +
    hex(name.length) +
    hex(0); // check (unused by newc)
  const out = [Buffer.from(header, 'ascii'), name, padding(HEADER_SIZE + name.length)];
  if (f.data.length > 0) out.push(f.data, padding(f.data.length));
  return out;
}

/** Zero bytes up to the next multiple of 4. */
function padding(length: number): Buffer {
  return Buffer.alloc((4 - (length % 4)) % 4);
}

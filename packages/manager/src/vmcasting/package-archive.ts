import { gunzipSync } from 'node:zlib';

/** The largest package archive (compressed) a channel carries. */
export const maxPackageBytes = 8 * 1024 * 1024;
/** The most its files may unpack to. */
export const maxPackageUnpackedBytes = 64 * 1024 * 1024;

export interface PackageEntry {
  path: string;
  type: 'file' | 'directory';
  size: number;
}

/**
 * Reads a package archive as untrusted input and says why it is refused, or
 * lists its entries: a gzip'd tar (ustar or GNU headers) holding only regular
 * files and directories with relative paths (no `..`, no links, devices or
 * long-name extensions) and a regular file `install` at its top. Nothing is
 * unpacked; the guest's update agent unpacks it into a fresh directory.
 */
export function inspectPackageArchive(archive: Buffer): { entries: PackageEntry[] } | { refused: string } {
  if (archive.length > maxPackageBytes) return { refused: `the archive is ${archive.length} bytes, over the limit of ${maxPackageBytes}` };
  let tar: Buffer;
  try {
    tar = gunzipSync(archive, { maxOutputLength: maxPackageUnpackedBytes + 1024 * 1024 });
  } catch (cause) {
    const message = (cause as Error).message;
    return { refused: /larger than|Cannot create a Buffer|maxOutputLength/i.test(message) ? `it unpacks to more than ${maxPackageUnpackedBytes} bytes` : `it is not a gzip file (${message})` };
  }
  const entries: PackageEntry[] = [];
  let total = 0;
  for (let offset = 0; offset + 512 <= tar.length; ) {
    const header = tar.subarray(offset, offset + 512);
    if (header.every((b) => b === 0)) break;
    const text = (start: number, length: number) => {
      const field = header.subarray(start, start + length);
      const end = field.indexOf(0);
      return field.subarray(0, end === -1 ? length : end).toString('utf8');
    };
    const checksum = parseInt(text(148, 8).trim() || 'x', 8);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : header[i]!;
    if (checksum !== sum) return { refused: `it is not a tar archive (bad header checksum at byte ${offset})` };
    // POSIX ustar ("ustar\0") has a name prefix at 345; GNU headers ("ustar  ") keep other fields there.
    const prefix = text(257, 6) === 'ustar' ? text(345, 155) : '';
    const name = (prefix ? `${prefix}/` : '') + text(0, 100);
    const size = parseInt(text(124, 12).trim() || '0', 8);
    const type = String.fromCharCode(header[156]!);
    if (!Number.isFinite(size) || size < 0) return { refused: `entry "${name.slice(0, 80)}" has a bad size` };
    const path = name.replace(/^(\.\/)+/, '').replace(/\/+$/, '');
    if (type !== '0' && type !== '\0' && type !== '5') {
      const what = { '1': 'a hard link', '2': 'a symbolic link', '3': 'a device', '4': 'a device', '6': 'a FIFO', L: 'a long-name extension', K: 'a long-name extension', x: 'a pax header', g: 'a pax header' }[type] ?? `type "${type}"`;
      return { refused: `entry "${name.slice(0, 80)}" is ${what}; only regular files and directories are allowed` };
    }
    if (name.startsWith('/') || path.split('/').includes('..')) return { refused: `entry "${name.slice(0, 80)}" leaves the package directory` };
    if (path !== '' && path !== '.') entries.push({ path, type: type === '5' ? 'directory' : 'file', size: type === '5' ? 0 : size });
    total += size;
    if (total > maxPackageUnpackedBytes) return { refused: `it unpacks to more than ${maxPackageUnpackedBytes} bytes` };
    offset += 512 + Math.ceil((type === '5' ? 0 : size) / 512) * 512;
    if (offset > tar.length) return { refused: 'the tar archive is truncated' };
  }
  if (!entries.some((e) => e.path === 'install' && e.type === 'file')) return { refused: 'it has no `install` script at its top' };
  return { entries };
}

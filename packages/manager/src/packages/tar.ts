import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { errors } from '@drover/core';

/**
 * A small streaming ustar (POSIX.1-1988) reader and writer: what .eva and
 * .ova files need and nothing more. The reader never buffers more than one
 * chunk plus a header; the writer streams file bodies from their source.
 */

const block = 512;
const typeNames: Record<string, string> = {
  '0': 'regular file',
  '\0': 'regular file',
  '1': 'hard link',
  '2': 'symbolic link',
  '3': 'character device',
  '4': 'block device',
  '5': 'directory',
  '6': 'FIFO',
  '7': 'contiguous file',
  g: 'pax global header',
  x: 'pax extended header',
  L: 'GNU long name',
  K: 'GNU long link name',
  S: 'GNU sparse file',
  V: 'GNU volume header',
  M: 'GNU multi-volume continuation',
};

export interface TarHeader {
  /** The entry's path as written (prefix + "/" + name for ustar long names). */
  name: string;
  /** The type flag ("0" regular, "5" directory, ...). */
  type: string;
  /** What the type is, for messages ("symbolic link"). */
  typeName: string;
  size: number;
  mode: number;
  linkName: string;
}

/** An entry whose body must be consumed (or skipped) before the next one is read. */
export interface TarEntry {
  header: TarHeader;
  /** The body, chunk by chunk. */
  body(): AsyncGenerator<Buffer>;
}

/** A tar the reader refuses: not a tar, a bad header checksum, truncated. */
export class TarFormatError extends Error {}

function text(buf: Buffer, at: number, length: number): string {
  const field = buf.subarray(at, at + length);
  const end = field.indexOf(0);
  return field.toString('utf8', 0, end === -1 ? length : end);
}

/** A numeric field: octal text, or GNU base-256 (high bit set) for large values. */
function numeric(buf: Buffer, at: number, length: number, what: string): number {
  const field = buf.subarray(at, at + length);
  if ((field[0]! & 0x80) !== 0) {
    if ((field[0]! & 0x40) !== 0) throw new TarFormatError(`its ${what} field is negative`);
    let value = BigInt(field[0]! & 0x3f);
    for (let i = 1; i < length; i++) value = (value << 8n) | BigInt(field[i]!);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new TarFormatError(`its ${what} field is too large (${value})`);
    return Number(value);
  }
  const digits = field.toString('latin1').replace(/[\0 ]+$/g, '').replace(/^ +/, '');
  if (digits === '') return 0;
  if (!/^[0-7]+$/.test(digits)) throw new TarFormatError(`its ${what} field "${digits.slice(0, 20)}" is not an octal number`);
  return parseInt(digits, 8);
}

function parseHeader(buf: Buffer): TarHeader {
  const stored = numeric(buf, 148, 8, 'checksum');
  let sum = 0;
  for (let i = 0; i < block; i++) sum += i >= 148 && i < 156 ? 0x20 : buf[i]!;
  if (sum !== stored) throw new TarFormatError('a header checksum does not match (not a tar file, or a damaged one)');
  const magic = buf.toString('latin1', 257, 263);
  if (magic !== 'ustar\0' && magic !== 'ustar ') throw new TarFormatError('a header has no ustar magic (only ustar archives are read)');
  const name = text(buf, 0, 100);
  const prefix = text(buf, 345, 155);
  const type = String.fromCharCode(buf[156]!);
  return {
    name: prefix && magic === 'ustar\0' ? `${prefix}/${name}` : name,
    type,
    typeName: typeNames[type] ?? `unknown type "${type}"`,
    size: numeric(buf, 124, 12, 'size'),
    mode: numeric(buf, 100, 8, 'mode'),
    linkName: text(buf, 157, 100),
  };
}

/**
 * Reads a tar stream entry by entry. Each entry's body must be read to its end
 * (or skipped with `for await (const _ of entry.body())`) before asking for the
 * next one; the generator does that itself when the caller did not.
 */
export async function* readTar(source: AsyncIterable<Buffer | Uint8Array | string>): AsyncGenerator<TarEntry> {
  const iterator = source[Symbol.asyncIterator]();
  let pending: Buffer = Buffer.alloc(0);
  let ended = false;
  const fill = async (wanted: number): Promise<boolean> => {
    while (pending.length < wanted && !ended) {
      const next = await iterator.next();
      if (next.done) ended = true;
      else pending = pending.length === 0 ? Buffer.from(next.value as Buffer) : Buffer.concat([pending, Buffer.from(next.value as Buffer)]);
    }
    return pending.length >= wanted;
  };
  try {
    for (;;) {
      if (!(await fill(block))) {
        if (pending.length === 0) throw new TarFormatError('the archive ends without its end-of-archive blocks (truncated)');
        throw new TarFormatError('the archive ends inside a header (truncated)');
      }
      const headerBytes = pending.subarray(0, block);
      pending = pending.subarray(block);
      if (headerBytes.every((b) => b === 0)) return;
      const header = parseHeader(Buffer.from(headerBytes));
      let remaining = header.size;
      let consumed = false;
      const padding = (block - (header.size % block)) % block;
      const body = async function* (): AsyncGenerator<Buffer> {
        if (consumed) throw new TarFormatError(`the body of "${header.name}" was read twice`);
        consumed = true;
        while (remaining > 0) {
          if (pending.length === 0 && !(await fill(1))) throw new TarFormatError(`the archive ends inside "${header.name}" (truncated)`);
          const take = Math.min(remaining, pending.length);
          const chunk = pending.subarray(0, take);
          pending = pending.subarray(take);
          remaining -= take;
          yield chunk;
        }
        if (!(await fill(padding))) throw new TarFormatError(`the archive ends inside "${header.name}" (truncated)`);
        pending = pending.subarray(padding);
      };
      yield { header, body };
      if (!consumed) for await (const _ of body()) void _;
    }
  } finally {
    await iterator.return?.();
  }
}

// ---------------------------------------------------------------- writer

function writeOctal(buf: Buffer, at: number, length: number, value: number): void {
  if (value < 8 ** (length - 1)) {
    buf.write(value.toString(8).padStart(length - 1, '0') + '\0', at, length, 'latin1');
    return;
  }
  // GNU base-256: larger than the octal field holds (files over 8 GiB).
  let v = BigInt(value);
  for (let i = length - 1; i > 0; i--) {
    buf[at + i] = Number(v & 0xffn);
    v >>= 8n;
  }
  buf[at] = 0x80;
}

/**
 * A ustar header; long names are split into prefix/name at a "/". The writer
 * only makes types "0" and "5"; tests make the others (links, devices) to
 * check that the reader's callers refuse them.
 */
export function tarHeader(entry: { name: string; size: number; type: string; mode?: number; mtime?: number; linkName?: string }): Buffer {
  const buf = Buffer.alloc(block);
  let name = entry.name;
  let prefix = '';
  if (Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf('/', 155);
    if (cut <= 0 || Buffer.byteLength(name.slice(cut + 1)) > 100 || Buffer.byteLength(name.slice(0, cut)) > 155) throw errors.invalid(`Tar entry name "${name}" is too long for ustar`);
    prefix = name.slice(0, cut);
    name = name.slice(cut + 1);
  }
  buf.write(name, 0, 100, 'utf8');
  writeOctal(buf, 100, 8, entry.mode ?? (entry.type === '5' ? 0o755 : 0o644));
  writeOctal(buf, 108, 8, 0);
  writeOctal(buf, 116, 8, 0);
  writeOctal(buf, 124, 12, entry.size);
  writeOctal(buf, 136, 12, entry.mtime ?? 0);
  buf.fill(0x20, 148, 156);
  buf.write(entry.type, 156, 1, 'latin1');
  if (entry.linkName) buf.write(entry.linkName, 157, 100, 'utf8');
  buf.write('ustar\0', 257, 6, 'latin1');
  buf.write('00', 263, 2, 'latin1');
  buf.write('root', 265, 32, 'latin1');
  buf.write('root', 297, 32, 'latin1');
  buf.write(prefix, 345, 155, 'utf8');
  let sum = 0;
  for (let i = 0; i < block; i++) sum += buf[i]!;
  buf.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  return buf;
}

/** Writes a ustar archive to `out`, honouring back-pressure. */
export class TarWriter {
  constructor(private readonly out: Writable) {}

  private async write(chunk: Buffer): Promise<void> {
    if (!this.out.write(chunk)) await once(this.out, 'drain');
  }

  async directory(name: string): Promise<void> {
    await this.write(tarHeader({ name: name.endsWith('/') ? name : `${name}/`, size: 0, type: '5' }));
  }

  /** A regular file of exactly `size` bytes from `body` (a buffer or a stream). */
  async file(name: string, size: number, body: Buffer | Readable): Promise<void> {
    await this.write(tarHeader({ name, size, type: '0' }));
    let written = 0;
    if (Buffer.isBuffer(body)) {
      await this.write(body);
      written = body.length;
    } else {
      for await (const chunk of body) {
        written += (chunk as Buffer).length;
        if (written > size) throw errors.internal(`Tar entry "${name}" grew beyond its ${size} bytes while it was written`);
        await this.write(chunk as Buffer);
      }
    }
    if (written !== size) throw errors.internal(`Tar entry "${name}" has ${written} bytes, ${size} were announced`);
    const padding = (block - (size % block)) % block;
    if (padding) await this.write(Buffer.alloc(padding));
  }

  /** The two zero blocks that end an archive; then ends `out`. */
  async finish(): Promise<void> {
    await this.write(Buffer.alloc(block * 2));
    this.out.end();
    await once(this.out, 'finish');
  }
}

import { execFileSync } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir } from '@drover/agent/testing';
import { readTar, tarHeader, TarWriter } from './tar.js';

// Our ustar reader and writer against GNU tar, both ways.

const dir = tempDir('tar');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function entries(data: Buffer, chunk = 7919): Promise<Array<{ name: string; type: string; size: number; body: Buffer }>> {
  const out = [];
  // Odd chunk sizes: headers and bodies straddle chunks.
  const chunks = (function* () {
    for (let at = 0; at < data.length; at += chunk) yield data.subarray(at, at + chunk);
  })();
  for await (const entry of readTar(Readable.from(chunks))) {
    const parts: Buffer[] = [];
    for await (const part of entry.body()) parts.push(part);
    out.push({ name: entry.header.name, type: entry.header.type, size: entry.header.size, body: Buffer.concat(parts) });
  }
  return out;
}

describe('tar', () => {
  it('writes archives GNU tar lists and extracts, with long names in the ustar prefix', async () => {
    const file = path.join(dir, 'out.tar');
    const long = `disks/${'d'.repeat(90)}/${'x'.repeat(85)}.qcow2`;
    const big = Buffer.alloc(100_001, 7);
    const tar = new TarWriter(createWriteStream(file));
    await tar.file('manifest.json', 2, Buffer.from('{}'));
    await tar.directory('disks');
    await tar.file(long, big.length, Readable.from([big.subarray(0, 50_000), big.subarray(50_000)]));
    await tar.file('empty', 0, Buffer.alloc(0));
    await tar.finish();
    expect(execFileSync('tar', ['-tf', file], { encoding: 'utf8' }).trim().split('\n')).toEqual(['manifest.json', 'disks/', long, 'empty']);
    const out = path.join(dir, 'x');
    mkdirSync(out);
    execFileSync('tar', ['-xf', file, '-C', out]);
    expect(readFileSync(path.join(out, long)).equals(big)).toBe(true);
    const read = await entries(readFileSync(file));
    expect(read.map((e) => [e.name, e.type, e.size])).toEqual([['manifest.json', '0', 2], ['disks/', '5', 0], [long, '0', big.length], ['empty', '0', 0]]);
    expect(read[2]!.body.equals(big)).toBe(true);
  });

  it('reads what GNU tar writes in ustar format, links and all', async () => {
    const src = path.join(dir, 'src');
    mkdirSync(src);
    writeFileSync(path.join(src, 'a.txt'), 'hello\n');
    execFileSync('ln', ['-s', '/etc/passwd', path.join(src, 'link')]);
    const file = path.join(dir, 'gnu.tar');
    execFileSync('tar', ['--format=ustar', '-cf', file, '-C', src, 'a.txt', 'link']);
    const read = await entries(readFileSync(file), 100);
    expect(read.map((e) => [e.name, e.type])).toEqual([['a.txt', '0'], ['link', '2']]);
    expect(read[0]!.body.toString()).toBe('hello\n');
  });

  it('keeps sizes over 8 GiB in base-256 and refuses damaged or truncated archives', async () => {
    const header = tarHeader({ name: 'huge', size: 2 ** 40, type: '0' });
    const [first] = await (async () => {
      const out = [];
      for await (const entry of readTar(Readable.from([header]))) {
        out.push(entry.header);
        break;
      }
      return out;
    })();
    expect(first!.size).toBe(2 ** 40);
    const damaged = Buffer.from(header);
    damaged[0] = 0x41;
    await expect(entries(Buffer.concat([damaged, Buffer.alloc(1024)]))).rejects.toThrow(/header checksum does not match/);
    const ok = tarHeader({ name: 'f', size: 1000, type: '0' });
    await expect(entries(Buffer.concat([ok, Buffer.alloc(100)]))).rejects.toThrow(/ends inside "f" \(truncated\)/);
    await expect(entries(tarHeader({ name: 'g', size: 0, type: '0' }))).rejects.toThrow(/without its end-of-archive blocks/);
  });
});

import { describe, expect, it } from 'vitest';
import { rejectionOf } from '@drover/core';
import { importFormat, sniffBytes, sniffImageFormat } from './image-format.js';

function header(write: (b: Buffer) => void): Buffer {
  const b = Buffer.alloc(sniffBytes);
  write(b);
  return b;
}

const qcow2 = header((b) => b.writeUInt32BE(0x514649fb, 0));
const iso = header((b) => b.write('CD001', 0x8001, 'latin1'));
const hybrid = header((b) => {
  b.write('CD001', 0x8001, 'latin1');
  b[510] = 0x55;
  b[511] = 0xaa;
});
const mbr = header((b) => {
  b[510] = 0x55;
  b[511] = 0xaa;
});
const text = Buffer.from('hello, this is not a disk\n');

describe('sniffImageFormat', () => {
  it('tells formats apart by their magic numbers', () => {
    expect(sniffImageFormat(qcow2)).toBe('qcow2');
    expect(sniffImageFormat(iso)).toBe('iso');
    expect(sniffImageFormat(hybrid)).toBe('iso');
    expect(sniffImageFormat(mbr)).toBe('raw');
    expect(sniffImageFormat(header((b) => b.write('KDMV', 0, 'latin1')))).toBe('vmdk');
    expect(sniffImageFormat(header((b) => b.write('# Disk DescriptorFile', 0, 'latin1')))).toBe('vmdk');
    expect(sniffImageFormat(header((b) => b.write('vhdxfile', 0, 'latin1')))).toBe('vhdx');
    expect(sniffImageFormat(header((b) => b.write('conectix', 0, 'latin1')))).toBe('vhd');
    expect(sniffImageFormat(header((b) => b.writeUInt32LE(0xbeda107f, 0x40)))).toBe('vdi');
    expect(sniffImageFormat(header((b) => b.write('QED\0', 0, 'latin1')))).toBe('qed');
    expect(sniffImageFormat(text)).toBeUndefined();
    expect(sniffImageFormat(Buffer.alloc(0))).toBeUndefined();
  });
});

describe('importFormat', () => {
  it('takes the recognised format, or the declared one when the content agrees', () => {
    expect(importFormat('x:1', undefined, 'qcow2', 1 << 20)).toBe('qcow2');
    expect(importFormat('x:1', undefined, 'iso', 2048 * 10)).toBe('iso');
    expect(importFormat('x:1', 'raw', 'iso', 512 * 64)).toBe('raw'); // a hybrid ISO is a disk too
    expect(importFormat('x:1', 'raw', undefined, 512 * 64)).toBe('raw'); // an unpartitioned raw disk, declared
  });

  it('refuses mismatches, other formats, unknown content and odd sizes with the reason', async () => {
    const cases: Array<[Parameters<typeof importFormat>, RegExp]> = [
      [['x:1', undefined, undefined, 4096], /cannot be recognised/],
      [['x:1', 'qcow2', 'raw', 4096], /not a qcow2 image/],
      [['x:1', 'iso', 'raw', 4096], /not an ISO 9660 image/],
      [['x:1', 'raw', 'qcow2', 4096], /qcow2 image, not raw/],
      [['x:1', undefined, 'vmdk', 4096], /VMDK image; only qcow2, raw and iso/],
      [['x:1', 'raw', 'vdi', 4096], /VDI image/],
      [['x:1', 'raw', undefined, 1000], /512-byte sectors; it has 1000 bytes/],
      [['x:1', undefined, 'iso', 4096 + 512], /2048-byte sectors/],
      [['x:1', 'qcow2', 'qcow2', 0], /empty/],
    ];
    for (const [args, message] of cases) {
      const error = await rejectionOf((async () => importFormat(...args))());
      expect(error).toMatchObject({ code: 'invalid' });
      expect((error as Error).message).toMatch(/^Image "x:1" was refused: /);
      expect((error as Error).message).toMatch(message);
    }
  });
});

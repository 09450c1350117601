import { errors } from '@drover/core';

/** Formats a file's first bytes can tell apart; only qcow2, raw and iso are accepted. */
export type SniffedFormat = 'qcow2' | 'iso' | 'raw' | 'vmdk' | 'vdi' | 'vhd' | 'vhdx' | 'qed';
export type ImportFormat = 'qcow2' | 'raw' | 'iso';

/** How many leading bytes `sniffImageFormat` needs: an ISO's volume descriptor is at 32 KiB + 1. */
export const sniffBytes = 0x8800;

/**
 * Recognises an image by its magic numbers, read by us: qemu-img is never
 * asked to probe a format. "raw" means a disk with a partition table (an MBR
 * or GPT boot signature); an unpartitioned raw image cannot be told from any
 * other file and is `undefined`, like a text file.
 * @example sniffImageFormat(readFirstBytes('debian.qcow2')) === 'qcow2'
 */
export function sniffImageFormat(header: Buffer): SniffedFormat | undefined {
  const text = (at: number, length: number) => (header.length >= at + length ? header.toString('latin1', at, at + length) : '');
  if (header.length >= 4 && header.readUInt32BE(0) === 0x514649fb) return 'qcow2';
  if (text(0, 4) === 'QED\0') return 'qed';
  if (text(0, 4) === 'KDMV' || text(0, 21) === '# Disk DescriptorFile') return 'vmdk';
  if (text(0, 8) === 'vhdxfile') return 'vhdx';
  if (text(0, 8) === 'conectix') return 'vhd';
  if (header.length >= 0x44 && header.readUInt32LE(0x40) === 0xbeda107f) return 'vdi';
  // ISO 9660: the first volume descriptor (sector 16) carries "CD001". Checked before the
  // boot signature: a hybrid ISO has both, and is an ISO first.
  if (text(0x8001, 5) === 'CD001') return 'iso';
  if (header.length >= 512 && header[510] === 0x55 && header[511] === 0xaa) return 'raw';
  return undefined;
}

/**
 * The format an import is treated as: the declared one if the content agrees,
 * else the recognised one. Refuses (invalid, with the reasons) a mismatch, a
 * format Drover does not take, and content it cannot tell without a declared
 * format.
 */
export function importFormat(label: string, declared: ImportFormat | undefined, sniffed: SniffedFormat | undefined, sizeBytes: number): ImportFormat {
  const refuse = (reason: string) => errors.invalid(`Image "${label}" was refused: ${reason}`, { reasons: [reason], ...(declared ? { format: declared } : {}) });
  if (sizeBytes === 0) throw refuse('it is empty');
  if (sniffed !== undefined && !['qcow2', 'iso', 'raw'].includes(sniffed)) {
    throw refuse(`it is a ${sniffed.toUpperCase()} image; only qcow2, raw and iso are accepted (convert it to qcow2 first)`);
  }
  let format: ImportFormat;
  if (declared === undefined) {
    if (sniffed === undefined) {
      throw refuse('its format cannot be recognised: it is not qcow2, not an ISO 9660 image and not a disk with a partition table (give format "raw" if it is a raw disk image)');
    }
    format = sniffed as ImportFormat;
  } else {
    format = declared;
    if (declared === 'qcow2' && sniffed !== 'qcow2') throw refuse('it is not a qcow2 image (no qcow2 header)');
    if (declared === 'iso' && sniffed !== 'iso') throw refuse('it is not an ISO 9660 image (no CD001 volume descriptor)');
    if (declared === 'raw' && sniffed === 'qcow2') throw refuse('it is a qcow2 image, not raw');
  }
  if (format === 'raw' && sizeBytes % 512 !== 0) throw refuse(`a raw disk image is a whole number of 512-byte sectors; it has ${sizeBytes} bytes`);
  if (format === 'iso' && sizeBytes % 2048 !== 0) throw refuse(`an ISO 9660 image is a whole number of 2048-byte sectors; it has ${sizeBytes} bytes`);
  return format;
}

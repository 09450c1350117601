import { describe, expect, it } from 'vitest';
import { DroverError } from './errors.js';
import { formatSize, parseSize } from './sizes.js';

describe('parseSize', () => {
  it('reads binary units', () => {
    expect(parseSize('256M')).toBe(256 * 1024 * 1024);
    expect(parseSize('1GiB')).toBe(1024 ** 3);
    expect(parseSize('4096')).toBe(4096);
    expect(parseSize('1.5k')).toBe(1536);
  });
  it('refuses garbage with the value in the message', () => {
    expect(() => parseSize('12 parsecs')).toThrow(DroverError);
    expect(() => parseSize('-1M')).toThrow(/"-1M"/);
  });
  it('formats', () => {
    expect(formatSize(1536)).toBe('1.5 KiB');
    expect(formatSize(256 * 1024 ** 2)).toBe('256 MiB');
  });
});

import { errors } from './errors.js';

const units: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
};

/**
 * Parses a size like `256M`, `1GiB` or `4096` (bytes) into bytes. Units are binary.
 * @example parseSize('1G') === 1073741824
 */
export function parseSize(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = match?.[2]?.toLowerCase() ?? '';
  const factor = units[unit];
  if (!match || factor === undefined) {
    throw errors.invalid(`Cannot parse size "${text}": expected a number with an optional unit (K, M, G, T)`);
  }
  const bytes = Math.round(Number(match[1]) * factor);
  if (!Number.isSafeInteger(bytes)) throw errors.invalid(`Size "${text}" is too large`);
  return bytes;
}

export function formatSize(bytes: number): string {
  const steps = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let step = 0;
  while (Math.abs(value) >= 1024 && step < steps.length - 1) {
    value /= 1024;
    step += 1;
  }
  return `${Number.isInteger(value) ? value : value.toFixed(1)} ${steps[step]}`;
}

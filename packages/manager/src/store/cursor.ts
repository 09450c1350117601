import { errors } from '@drover/core';

/**
 * List cursors: the sort key of the last item of a page, as an opaque base64url
 * string. Keyset pagination, so a page never repeats or skips an item when rows
 * are inserted or deleted between two pages.
 */
export function encodeCursor(key: readonly string[]): string {
  return Buffer.from(JSON.stringify(key), 'utf8').toString('base64url');
}

/** The sort key in `cursor`, which must have `length` parts; `invalid` otherwise. */
export function decodeCursor(cursor: string, length: number): string[] {
  const refuse = () => errors.invalid(`Invalid cursor "${cursor}"`, { cursor });
  if (!/^[A-Za-z0-9_-]+$/.test(cursor)) throw refuse();
  let key: unknown;
  try {
    key = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw refuse();
  }
  if (!Array.isArray(key) || key.length !== length || !key.every((part) => typeof part === 'string')) throw refuse();
  return key as string[];
}

import { describe, expect, it } from 'vitest';
import { rejectionOf } from '@drover/core';
import { decodeCursor, encodeCursor } from './cursor.js';

describe('list cursors', () => {
  it('round-trips a sort key as base64url', () => {
    const cursor = encodeCursor(['web-1', 'a8d2c3f0-0000-4000-8000-000000000001']);
    expect(cursor).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(decodeCursor(cursor, 2)).toEqual(['web-1', 'a8d2c3f0-0000-4000-8000-000000000001']);
  });

  it('keeps any text, including quotes and non-ASCII names', () => {
    const key = ['vm "quoted" ✓/+=', 'x'];
    expect(decodeCursor(encodeCursor(key), 2)).toEqual(key);
  });

  it.each([
    ['not base64url', 'abc$%'],
    ['not JSON', Buffer.from('hello').toString('base64url')],
    ['not an array', Buffer.from('{"a":1}').toString('base64url')],
    ['the wrong length', encodeCursor(['only-one'])],
    ['non-string parts', Buffer.from('[1,2]').toString('base64url')],
    ['empty', ''],
  ])('refuses a cursor that is %s', async (_what, cursor) => {
    const error = await rejectionOf(Promise.resolve().then(() => decodeCursor(cursor, 2)));
    expect(error.code).toBe('invalid');
    expect(error.message).toContain('Invalid cursor');
  });
});

import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { generateJoinToken, hashToken, tokenMatchesHash } from './join-tokens.js';

describe('join tokens', () => {
  it('are 32 random bytes in base64url, stored as sha256 hex', () => {
    const { token, hash } = generateJoinToken();
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(token, 'base64url')).toHaveLength(32);
    expect(hash).toBe(createHash('sha256').update(token).digest('hex'));
    expect(hashToken(token)).toBe(hash);
    expect(generateJoinToken().token).not.toBe(token);
  });

  it('match only their own hash', () => {
    const { token, hash } = generateJoinToken();
    expect(tokenMatchesHash(token, hash)).toBe(true);
    expect(tokenMatchesHash(`${token}x`, hash)).toBe(false);
    expect(tokenMatchesHash(token, 'abcd')).toBe(false);
  });
});

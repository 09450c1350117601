import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { JOIN_TOKEN_PREFIX, generateJoinToken, hashToken, tokenMatchesHash } from './join-tokens.js';

describe('join tokens', () => {
  it('are "drvj_" and 32 random bytes in base64url, stored as sha256 hex', () => {
    const { token, hash } = generateJoinToken();
    expect(token).toMatch(/^drvj_[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(token.slice(JOIN_TOKEN_PREFIX.length), 'base64url')).toHaveLength(32);
    expect(hash).toBe(createHash('sha256').update(token).digest('hex'));
    expect(hashToken(token)).toBe(hash);
    expect(generateJoinToken().token).not.toBe(token);
  });

  it('never start with a dash, so a command line cannot read one as an option', () => {
    for (let i = 0; i < 2000; i++) expect(generateJoinToken().token.startsWith('-')).toBe(false);
  });

  it('match only their own hash', () => {
    const { token, hash } = generateJoinToken();
    expect(tokenMatchesHash(token, hash)).toBe(true);
    expect(tokenMatchesHash(`${token}x`, hash)).toBe(false);
    expect(tokenMatchesHash(token, 'abcd')).toBe(false);
  });
});

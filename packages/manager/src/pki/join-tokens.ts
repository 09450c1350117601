import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export interface JoinToken {
  /** Shown once to the operator, handed to `drover-agent join`; never stored. */
  token: string;
  /** What the store keeps: sha256 of the token, hex. */
  hash: string;
}

/** What every join token starts with: names it in logs and keeps it from starting with "-". */
export const JOIN_TOKEN_PREFIX = 'drvj_';

/**
 * A one-time host join token: "drvj_" + 32 random bytes, base64url (48 characters).
 * Plain base64url may start with "-", which a command line reads as an option
 * (`--join-token -abc…` fails to parse); the prefix rules that out.
 */
export function generateJoinToken(): JoinToken {
  const token = JOIN_TOKEN_PREFIX + randomBytes(32).toString('base64url');
  return { token, hash: hashToken(token) };
}

/**
 * A plain sha256 is enough (no salt, no slow hash): the token carries 256 random
 * bits, so the hash cannot be reversed by guessing, and a fast hash lets the store
 * look a token up by its hash.
 */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** Constant-time comparison of a presented token with a stored hash. */
export function tokenMatchesHash(token: string, hash: string): boolean {
  const presented = Buffer.from(hashToken(token), 'hex');
  const stored = Buffer.from(hash, 'hex');
  return stored.length === presented.length && timingSafeEqual(presented, stored);
}

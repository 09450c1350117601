import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** The cookie a signed-in browser carries. */
export const sessionCookie = 'drover_session';

/** What a verified session or ticket says about its bearer. */
export interface BrowserIdentity {
  actor: string;
  expiresAt: string;
  sessionId: string;
}

export interface BrowserAuthOptions {
  /** Secret that signs session cookies (kept in `<dataDir>/session-key`). */
  key: string;
  sessionTtlMs?: number;
  ticketTtlMs?: number;
  now?: () => number;
}

function b64url(buffer: Buffer): string {
  return buffer.toString('base64url');
}

/**
 * Authentication for browsers, which cannot put a bearer token on an
 * EventSource or a WebSocket:
 *
 * - **Sessions**: a signed cookie `<id>.<actor>.<expiry>.<mac>` (HMAC-SHA256 with
 *   the manager's session key). It is stateless, so it survives a manager
 *   restart and works on every manager that shares the key; signing out adds
 *   the session's id to a deny list kept until the session would have expired.
 * - **Tickets**: a random, single-use string valid for 60 s, for a client that
 *   has a token but no cookie (the CLI opening a console, a script): it is
 *   passed as `?ticket=` on the stream's URL and works for that one request.
 */
export class BrowserAuth {
  private readonly key: Buffer;
  private readonly sessionTtlMs: number;
  private readonly ticketTtlMs: number;
  private readonly now: () => number;
  private readonly tickets = new Map<string, { actor: string; expires: number }>();
  private readonly signedOut = new Map<string, number>();

  constructor(o: BrowserAuthOptions) {
    this.key = Buffer.from(o.key, 'utf8');
    this.sessionTtlMs = o.sessionTtlMs ?? 12 * 3600_000;
    this.ticketTtlMs = o.ticketTtlMs ?? 60_000;
    this.now = o.now ?? Date.now;
  }

  private mac(payload: string): string {
    return b64url(createHmac('sha256', this.key).update(payload).digest());
  }

  /** A new session for `actor`: the cookie's value and when it expires. */
  issueSession(actor: string): { value: string; identity: BrowserIdentity; maxAgeSeconds: number } {
    const id = b64url(randomBytes(12));
    const expires = this.now() + this.sessionTtlMs;
    const payload = `${id}.${b64url(Buffer.from(actor, 'utf8'))}.${expires}`;
    return {
      value: `${payload}.${this.mac(payload)}`,
      identity: { actor, expiresAt: new Date(expires).toISOString(), sessionId: id },
      maxAgeSeconds: Math.floor(this.sessionTtlMs / 1000),
    };
  }

  /** The session a cookie value proves, or undefined (forged, expired, signed out, malformed). */
  verifySession(value: string | undefined): BrowserIdentity | undefined {
    if (!value || value.length > 512) return undefined;
    const parts = value.split('.');
    if (parts.length !== 4) return undefined;
    const [id, actor64, expiresText, mac] = parts as [string, string, string, string];
    const expected = Buffer.from(this.mac(`${id}.${actor64}.${expiresText}`));
    const given = Buffer.from(mac);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
    const expires = Number(expiresText);
    if (!Number.isSafeInteger(expires) || expires <= this.now()) return undefined;
    if (this.signedOut.has(id)) return undefined;
    return { actor: Buffer.from(actor64, 'base64url').toString('utf8'), expiresAt: new Date(expires).toISOString(), sessionId: id };
  }

  /** Signs a session out: its cookie is refused from now on. */
  endSession(identity: BrowserIdentity): void {
    this.prune();
    this.signedOut.set(identity.sessionId, Date.parse(identity.expiresAt));
  }

  /** A single-use ticket for one stream request. */
  issueTicket(actor: string): { ticket: string; expiresAt: string } {
    this.prune();
    const ticket = b64url(randomBytes(24));
    const expires = this.now() + this.ticketTtlMs;
    this.tickets.set(ticket, { actor, expires });
    return { ticket, expiresAt: new Date(expires).toISOString() };
  }

  /** The actor of a valid ticket, which is used up by this call. */
  redeemTicket(ticket: string | undefined): string | undefined {
    if (!ticket) return undefined;
    const entry = this.tickets.get(ticket);
    if (!entry) return undefined;
    this.tickets.delete(ticket);
    return entry.expires > this.now() ? entry.actor : undefined;
  }

  private prune(): void {
    const now = this.now();
    for (const [ticket, entry] of this.tickets) if (entry.expires <= now) this.tickets.delete(ticket);
    for (const [id, expires] of this.signedOut) if (expires <= now) this.signedOut.delete(id);
  }
}

/** The value of one cookie in a Cookie header. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const at = part.indexOf('=');
    if (at > 0 && part.slice(0, at).trim() === name) return part.slice(at + 1).trim();
  }
  return undefined;
}

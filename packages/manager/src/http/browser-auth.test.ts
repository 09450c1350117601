import { describe, expect, it } from 'vitest';
import { BrowserAuth, cookieValue } from './browser-auth.js';

describe('BrowserAuth', () => {
  const clock = { now: 1_800_000_000_000 };
  const auth = new BrowserAuth({ key: 'k'.repeat(32), sessionTtlMs: 60_000, ticketTtlMs: 1000, now: () => clock.now });

  it('verifies its own sessions until they expire, and no other key', () => {
    const session = auth.issueSession('alice');
    expect(auth.verifySession(session.value)).toMatchObject({ actor: 'alice' });
    expect(new BrowserAuth({ key: 'x'.repeat(32) }).verifySession(session.value)).toBeUndefined();
    clock.now += 60_001;
    expect(auth.verifySession(session.value)).toBeUndefined();
  });

  it('refuses malformed values and tampered parts', () => {
    const { value } = auth.issueSession('bob');
    for (const bad of [undefined, '', 'a.b.c', `${value}.x`, value.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A')), 'x'.repeat(600)]) {
      expect(auth.verifySession(bad)).toBeUndefined();
    }
    const [id, , expires, mac] = value.split('.');
    expect(auth.verifySession([id, Buffer.from('root').toString('base64url'), expires, mac].join('.'))).toBeUndefined();
    expect(auth.verifySession([id, Buffer.from('bob').toString('base64url'), String(Number(expires) + 1e9), mac].join('.'))).toBeUndefined();
  });

  it('ends a session on sign-out', () => {
    const session = auth.issueSession('carol');
    auth.endSession(session.identity);
    expect(auth.verifySession(session.value)).toBeUndefined();
  });

  it('redeems a ticket once, and not after it expired', () => {
    const a = auth.issueTicket('dave');
    expect(auth.redeemTicket(a.ticket)).toBe('dave');
    expect(auth.redeemTicket(a.ticket)).toBeUndefined();
    const b = auth.issueTicket('dave');
    clock.now += 1001;
    expect(auth.redeemTicket(b.ticket)).toBeUndefined();
    expect(auth.redeemTicket(undefined)).toBeUndefined();
  });

  it('reads one cookie out of a Cookie header', () => {
    expect(cookieValue('a=1; drover_session=xyz; b=2', 'drover_session')).toBe('xyz');
    expect(cookieValue('a=1', 'drover_session')).toBeUndefined();
    expect(cookieValue(undefined, 'drover_session')).toBeUndefined();
  });
});

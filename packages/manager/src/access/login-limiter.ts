/**
 * Counts failed sign-ins per client address and per address+user name; past
 * `maxFailures` within `windowMs` further attempts are refused (429) until the
 * oldest failure leaves the window. A success clears the address+user count.
 */
export class LoginLimiter {
  private readonly failures = new Map<string, number[]>();

  constructor(
    private readonly maxFailures = 5,
    private readonly windowMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  private recent(key: string): number[] {
    const cutoff = this.now() - this.windowMs;
    const kept = (this.failures.get(key) ?? []).filter((t) => t > cutoff);
    if (kept.length === 0) this.failures.delete(key);
    else this.failures.set(key, kept);
    return kept;
  }

  /** Seconds until another attempt is allowed, or 0 now. The address alone gets four times the user limit. */
  retryAfter(address: string, user: string): number {
    let wait = 0;
    for (const [key, limit] of [[`${address}|${user}`, this.maxFailures], [address, this.maxFailures * 4]] as const) {
      const times = this.recent(key);
      if (times.length >= limit) wait = Math.max(wait, Math.ceil((times[times.length - limit]! + this.windowMs - this.now()) / 1000));
    }
    return wait;
  }

  fail(address: string, user: string): void {
    for (const key of [`${address}|${user}`, address]) this.failures.set(key, [...this.recent(key), this.now()]);
  }

  succeed(address: string, user: string): void {
    this.failures.delete(`${address}|${user}`);
  }
}

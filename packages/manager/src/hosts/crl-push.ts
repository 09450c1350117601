import type { Logger } from 'pino';
import type { ClusterCa, CurrentCrl } from '../pki/index.js';
import type { HostRecord } from '../store/types.js';
import type { AgentLink } from './agent-link.js';

type HostTarget = Pick<HostRecord, 'id' | 'name' | 'address'>;

export interface CrlPushOptions {
  ca: Pick<ClusterCa, 'crl'>;
  link: Pick<AgentLink, 'call'>;
  logger: Logger;
  /** Time limit of one push to one agent (default 10 s). */
  pushTimeoutMs?: number;
  /** Wait before retrying a failed push, doubled per failure in a row up to `retryMaxMs` (default 1 s … 60 s). */
  retryMinMs?: number;
  retryMaxMs?: number;
}

interface HostCrlState {
  host: HostTarget;
  /** Its last heartbeat was answered: pushed to at once when the CRL changes. */
  online: boolean;
  /** The CRL number the host is known to hold; unknown after a manager restart (it is pushed again). */
  has?: number;
  failures: number;
  retryAt: number;
  running?: Promise<void>;
}

/**
 * Keeps every agent's CRL current. An agent's TLS layer checks each client against
 * the CRL it holds; once that CRL passes its nextUpdate, OpenSSL refuses every
 * client, the manager included. So:
 *
 * - `refresh()` (each heartbeat round) asks the CA for its CRL, which re-signs it
 *   when less than half of its validity is left; a CRL with a higher number goes to
 *   every host seen online at once;
 * - `revoked()` (after a host removal or a certificate rotation) does the same
 *   without waiting for the next round;
 * - `seen(host)` (each answered heartbeat) pushes to a host that does not hold the
 *   current number: one that was unreachable, one whose push failed, or every host
 *   after a manager restart (the numbers are kept in memory only).
 *
 * Pushes run in the background, one at a time per host, each with a time limit; none
 * of these calls waits for an agent. A failed push is logged and retried at a later
 * heartbeat, with a growing delay.
 */
export class CrlPush {
  readonly #hosts = new Map<string, HostCrlState>();
  readonly #pushTimeoutMs: number;
  readonly #retryMinMs: number;
  readonly #retryMaxMs: number;
  #current: CurrentCrl | undefined;
  #refreshing: Promise<CurrentCrl | undefined> | undefined;
  #closed = false;

  constructor(private readonly o: CrlPushOptions) {
    this.#pushTimeoutMs = o.pushTimeoutMs ?? 10_000;
    this.#retryMinMs = o.retryMinMs ?? 1_000;
    this.#retryMaxMs = o.retryMaxMs ?? 60_000;
  }

  /** The newest CRL this manager knows of (undefined before the first `refresh`). */
  get current(): CurrentCrl | undefined {
    return this.#current;
  }

  /** The CRL number a host is known to hold. */
  hostCrlNumber(hostId: string): number | undefined {
    return this.#hosts.get(hostId)?.has;
  }

  /**
   * Reads the CA's current CRL (the CA re-signs a stale one); when its number grew,
   * pushes it to every host seen online. Never rejects: a failure is logged and the
   * previous CRL is returned.
   */
  refresh(): Promise<CurrentCrl | undefined> {
    this.#refreshing ??= (async () => {
      try {
        const crl = await this.o.ca.crl();
        if (this.#current === undefined || crl.crlNumber > this.#current.crlNumber) {
          this.#current = crl;
          for (const state of this.#hosts.values()) if (state.online) this.#sync(state);
        }
      } catch (error) {
        this.o.logger.error({ err: error }, 'cannot read or re-sign the CRL');
      } finally {
        this.#refreshing = undefined;
      }
      return this.#current;
    })();
    return this.#refreshing;
  }

  /**
   * After a revocation (`ClusterCa.revoke` has returned): the new CRL goes to every
   * host seen online now. Resolves once the pushes have started.
   */
  async revoked(): Promise<void> {
    // A refresh in flight may have read the CRL before the revocation: wait for it, then read again.
    await this.#refreshing;
    await this.refresh();
  }

  /** A host answered its heartbeat: push the current CRL to it unless it holds it already. Returns at once. */
  seen(host: HostTarget): void {
    const state = this.#state(host);
    state.online = true;
    if (this.#current === undefined) {
      // The first refresh pushes to every host online.
      void this.refresh();
      return;
    }
    this.#sync(state);
  }

  /** A host missed its heartbeat: it gets the CRL when it answers again, not on revocations meanwhile. */
  lost(hostId: string): void {
    const state = this.#hosts.get(hostId);
    if (state) state.online = false;
  }

  /** A removed host. */
  forget(hostId: string): void {
    this.#hosts.delete(hostId);
  }

  /** Stops pushing (the manager is closing); pushes in flight end with the connections. */
  close(): void {
    this.#closed = true;
  }

  #state(host: HostTarget): HostCrlState {
    let state = this.#hosts.get(host.id);
    if (!state) {
      state = { host, online: false, failures: 0, retryAt: 0 };
      this.#hosts.set(host.id, state);
    }
    state.host = host;
    return state;
  }

  /** Pushes until the host holds the newest CRL; one loop per host at a time. */
  #sync(state: HostCrlState): void {
    if (this.#closed || state.running || Date.now() < state.retryAt) return;
    if (!this.#behind(state)) return;
    state.running = (async () => {
      let crl: CurrentCrl | undefined;
      try {
        // The CRL may change during a push (a revocation): then the loop pushes again.
        while (!this.#closed && this.#hosts.get(state.host.id) === state && this.#behind(state)) {
          crl = this.#current as CurrentCrl;
          await this.#push(state, crl);
        }
      } catch (error) {
        if (this.#closed) return;
        state.failures += 1;
        const delay = Math.min(this.#retryMinMs * 2 ** (state.failures - 1), this.#retryMaxMs);
        state.retryAt = Date.now() + delay;
        this.o.logger.warn({ host: state.host.name, crlNumber: crl?.crlNumber, failures: state.failures, retryInMs: delay, err: error }, 'CRL push failed; it is retried at a later heartbeat');
      } finally {
        state.running = undefined;
      }
    })();
  }

  #behind(state: HostCrlState): boolean {
    return this.#current !== undefined && (state.has === undefined || state.has < this.#current.crlNumber);
  }

  async #push(state: HostCrlState, crl: CurrentCrl): Promise<void> {
    const answer = await this.o.link.call<{ crlNumber: string; changed: boolean }>(state.host, 'PUT', '/v1/identity/crl', { crlPem: crl.crlPem }, this.#pushTimeoutMs);
    state.has = crl.crlNumber;
    state.failures = 0;
    state.retryAt = 0;
    if (answer.changed) {
      this.o.logger.info({ host: state.host.name, crlNumber: crl.crlNumber, nextUpdate: crl.nextUpdate.toISOString() }, 'CRL pushed');
    }
  }
}

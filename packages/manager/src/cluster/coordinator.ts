import os from 'node:os';
import type { Logger } from 'pino';
import pg from 'pg';
import type { ClusterManagers } from '@drover/api';
import type { EventHub } from '../http/event-hub.js';
import type { OperationRunner } from '../operations/operation-runner.js';
import type { Store } from '../store/index.js';
import { eventChannel } from '../store/postgres-store.js';

/** Advisory lock class of Drover's session locks ("DROV"); object 0 is the leader lock. */
const lockClass = 1146244950;
const leaderObject = 0;
/** Prefix of the application_name of each manager's session connection: how managers see which of them live. */
const sessionPrefix = 'drover-manager:';

export interface ClusterCoordinatorOptions {
  store: Store;
  hub: EventHub;
  runner: OperationRunner;
  logger: Logger;
  managerId: string;
  version: string;
  /** The PostgreSQL URL (the store's): the coordinator keeps its own session connection there. Absent on SQLite. */
  connectionString?: string;
  /** How often it refreshes its row, tries for the lead, checks its session and adopts orphaned operations (default 1 s). */
  intervalMs?: number;
  /** Becoming the leader: start the background loops (called after the orphaned operations were adopted). */
  onLead: () => void;
  /** No longer the leader (its session connection broke): stop them at once. */
  onFollow: () => void;
}

/**
 * Makes one manager of those sharing a store the leader, which alone runs the
 * background work (heartbeats and the host monitor, HA, the power policy, feed
 * polling, the automatic rebalance, recovery of operations whose manager died).
 *
 * PostgreSQL: each manager keeps one dedicated session connection (not in the
 * pool), named `drover-manager:<id>` (application_name). The leader holds the
 * session advisory lock (1146244950, 0) on it: when the leader dies, its
 * connection closes, the server frees the lock, and the next manager to try
 * (every second) becomes the leader. A manager is alive while its session
 * connection is (pg_stat_activity), so the leader adopts the operations claimed
 * by a manager that is gone at once. The same connection LISTENs for new
 * events (every manager's event stream shows every manager's events). A leader
 * whose session breaks steps down before anything else.
 *
 * SQLite: one manager per store; it leads from the start.
 */
export class ClusterCoordinator {
  #leader = false;
  #client: pg.Client | undefined;
  #connecting: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #ticking: Promise<void> | undefined;
  #closed = false;
  #rounds = 0;
  #url = '';
  readonly #startedAt = new Date().toISOString();
  readonly name = `${os.hostname()}/${process.pid}`;

  constructor(private readonly o: ClusterCoordinatorOptions) {
    o.runner.setOwner(o.managerId);
  }

  get managerId(): string {
    return this.o.managerId;
  }

  get isLeader(): boolean {
    return this.#leader;
  }

  /** Registers this manager, follows other managers' events, and takes the lead if nobody holds it (before it returns). */
  async start(url: string): Promise<void> {
    this.#url = url;
    if (this.o.connectionString) {
      this.o.hub.followStore((after) => this.o.store.events.since(after, 1000), await this.o.store.events.lastSeq(), (error) => this.o.logger.warn({ err: error }, 'reading new events failed'));
    }
    await this.tick();
    this.#timer = setInterval(() => void this.tick(), this.o.intervalMs ?? 1000);
    this.#timer.unref();
  }

  /** One round: refresh the row, keep or take the lead, adopt orphaned operations. Rounds never overlap. */
  tick(): Promise<void> {
    if (this.#ticking) return this.#ticking;
    this.#ticking = this.#round()
      .catch((error: unknown) => this.o.logger.warn({ err: error }, 'cluster round failed'))
      .finally(() => {
        this.#ticking = undefined;
      });
    return this.#ticking;
  }

  async #round(): Promise<void> {
    if (this.#closed) return;
    this.#rounds += 1;
    // SQLite (one manager): the row only tells `admin restore` a manager runs; every 5th round is enough (one fsync each).
    if (this.o.connectionString || this.#rounds % 5 === 1) {
      await this.o.store.cluster.heartbeat({ id: this.o.managerId, name: this.name, url: this.#url, version: this.o.version, pid: process.pid, startedAt: this.#startedAt });
    }
    if (!this.o.connectionString) {
      // The one manager leads from its first round and adopts what its predecessor left; nobody else can leave more.
      if (!this.#leader) await this.#lead();
      if (this.#rounds % 5 === 1) await this.o.store.cluster.removeManagersSeenBefore(new Date(Date.now() - 60_000).toISOString());
      return;
    }
    await this.#postgresRound();
    if (this.#leader) {
      const adopted = await this.o.runner.recoverOrphans(await this.alive());
      if (adopted > 0) this.o.logger.info({ adopted }, 'recovering operations of managers that are gone');
      // Rows of managers gone for a minute are forgotten.
      await this.o.store.cluster.removeManagersSeenBefore(new Date(Date.now() - 60_000).toISOString());
    }
  }

  async #postgresRound(): Promise<void> {
    const client = await this.#session().catch((error: unknown) => {
      this.o.logger.warn({ err: error }, 'cannot open the cluster session connection');
      return undefined;
    });
    if (!client) return;
    if (this.#leader) {
      // Still holding it as long as the session answers.
      await client.query('select 1');
      return;
    }
    const { rows } = await client.query<{ locked: boolean }>('select pg_try_advisory_lock($1, $2) as locked', [lockClass, leaderObject]);
    if (rows[0]?.locked) await this.#lead();
    // Whatever was missed while the session was down.
    await this.o.hub.pump();
  }

  async #lead(): Promise<void> {
    const record = await this.o.store.cluster.becomeLeader(this.o.managerId);
    this.#leader = true;
    this.o.logger.info({ term: record.term }, 'this manager leads the cluster now');
    // Interrupted operations first (as a restarted single manager does), then the loops.
    const adopted = await this.o.runner.recoverOrphans(await this.alive());
    if (adopted > 0) this.o.logger.info({ adopted }, 'recovering unfinished operations');
    if (this.#leader && !this.#closed) this.o.onLead();
  }

  #stepDown(reason: string): void {
    if (!this.#leader) return;
    this.#leader = false;
    if (reason === 'shutting down') this.o.logger.info('this manager stops leading the cluster: shutting down');
    else this.o.logger.warn({ reason }, 'this manager no longer leads the cluster');
    this.o.onFollow();
  }

  /** The session connection, (re)opened when needed, listening for events. */
  async #session(): Promise<pg.Client> {
    if (this.#client) return this.#client;
    if (!this.#connecting) {
      this.#connecting = (async () => {
        const client = new pg.Client({
          connectionString: this.o.connectionString,
          application_name: `${sessionPrefix}${this.o.managerId}`,
          keepAlive: true,
          connectionTimeoutMillis: 5000,
        });
        const lost = (why: string) => {
          if (this.#client === client) this.#client = undefined;
          client.removeAllListeners('notification');
          client.end().catch(() => undefined);
          this.#stepDown(why);
        };
        client.on('error', (error) => lost(`session connection error: ${error.message}`));
        client.on('end', () => lost('session connection closed'));
        client.on('notification', () => void this.o.hub.pump());
        await client.connect();
        await client.query(`listen ${eventChannel}`);
        this.#client = client;
      })().finally(() => {
        this.#connecting = undefined;
      });
    }
    await this.#connecting;
    if (!this.#client) throw new Error('session connection lost while opening');
    return this.#client;
  }

  /** The ids of the managers running now. */
  async alive(): Promise<string[]> {
    // SQLite: one manager per store, so whatever another manager left is its predecessor's.
    if (!this.o.connectionString) return [this.o.managerId];
    const client = await this.#session();
    const { rows } = await client.query<{ name: string }>(
      'select distinct application_name as name from pg_stat_activity where application_name like $1',
      [`${sessionPrefix}%`],
    );
    return rows.map((row) => row.name.slice(sessionPrefix.length));
  }

  /** The managers and the leader, for `GET /api/v1/cluster/managers`. */
  async status(): Promise<ClusterManagers> {
    const [managers, leader, alive] = await Promise.all([
      this.o.store.cluster.managers(),
      this.o.store.cluster.leader(),
      this.alive().catch(() => [this.o.managerId]),
    ]);
    const live = new Set(alive);
    const leaderAlive = leader !== undefined && live.has(leader.managerId);
    return {
      backend: this.o.store.backend,
      self: this.o.managerId,
      leader: leader ?? null,
      managers: managers.map((m) => ({ ...m, alive: live.has(m.id), leader: leaderAlive && leader.managerId === m.id })),
    };
  }

  /** Stops: steps down (frees the lead at once), forgets its row, closes the session. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    await this.#ticking;
    this.#stepDown('shutting down');
    const client = this.#client;
    this.#client = undefined;
    if (client) {
      client.removeAllListeners('end');
      client.removeAllListeners('error');
      client.on('error', () => undefined);
      await client.end().catch(() => undefined);
    }
    await this.o.store.cluster.removeManager(this.o.managerId).catch(() => undefined);
  }
}

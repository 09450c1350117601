import type { Logger } from 'pino';
import type { Operation } from '@drover/api';
import { DroverError, errors, isDroverError } from '@drover/core';
import type { Store } from '../store/index.js';
import type { NewEvent, OperationRecord } from '../store/types.js';
import type { EventHub } from '../http/event-hub.js';
import { takeRequestAudit } from '../access/request-audit.js';

/** What an operation handler may do while it runs. */
export interface OperationContext {
  op: OperationRecord;
  /**
   * Records a journaled phase and its progress (persisted before the handler goes on). `also`'s
   * store writes and events commit in the same transaction as the journal entry (one commit: a
   * phase that starts with a write, e.g. a migration's owner flip, needs no second one).
   */
  phase(name: string, progress: number, note?: string, also?: JoinedWrites): Promise<void>;
  /**
   * Enters a phase that needs no commit of its own: one that a recovery would not act on
   * differently (it asks the host either way) and that matters only to this manager, e.g. a
   * start's `boot`, after which a cancel is refused. The operation is in it at once for
   * `cancellable` and `signal`; its journal entry is written with the operation's next write.
   */
  mark(name: string, progress: number, note?: string): void;
  /** Reports progress within a phase (not journaled): the percentage, and live figures shown as the running operation's `result`. */
  progress(progress: number, detail?: Record<string, unknown>): Promise<void>;
  /**
   * The handler's last phase, when nothing a recovery would do differently is left: the
   * operation is in phase `name` at once (as `mark`: the API shows it), and `also`'s store
   * writes and the phase's journal entry commit with the operation's end (`done`), in one
   * transaction, once the handler returns. A recovery finds the phase before it, and does
   * what is left again (a start's `confirm` reads the host; a migration's tears the source down).
   */
  lastPhase(name: string, also: JoinedWrites, progress?: number): void;
  /** Aborted when a user cancels the operation; `phase` then throws (while the kind is still cancellable), and long steps may pass it on. */
  signal: AbortSignal;
  logger: Logger;
}

export interface OperationHandler {
  /** Runs the operation from the start. */
  run(ctx: OperationContext): Promise<unknown>;
  /**
   * Called instead of `run` for an operation found pending or running after a
   * manager restart: look at reality (the agent) and finish or compensate.
   */
  recover(ctx: OperationContext): Promise<unknown>;
  /**
   * Whether the operation may be cancelled as it is now (its phase). Cancelling
   * aborts `ctx.signal`: the handler stops at its next phase (or sooner, where a
   * step listens to the signal), `compensate` undoes what it did, and the
   * operation ends `cancelled`. Kinds without it cannot be cancelled.
   */
  cancellable?(op: OperationRecord): boolean;
  /** Undoes what a failed run left behind (reservations, half-made volumes). */
  compensate?(ctx: OperationContext, error: DroverError): Promise<void>;
}

/**
 * Store writes that commit together with an operation's own write, in its
 * transaction (`lastPhase`). They return the events to append, not appended yet:
 * every event of the transaction is appended last (on PostgreSQL appends take a
 * lock that must come after the row locks).
 */
export type JoinedWrites = (tx: Store) => Promise<NewEvent[]>;

/** An operation's first phase, journaled with its creation (`submit`'s `before`). */
export interface FirstPhase {
  name: string;
  progress: number;
  note?: string;
}

export interface SubmitRequest {
  kind: string;
  targetKind: string;
  targetId: string;
  params?: Record<string, unknown>;
  actor: string;
  idempotencyKey?: string | null;
}

const active = ['pending', 'running'] as const;

function asDroverError(error: unknown): DroverError {
  if (isDroverError(error)) return error;
  return errors.internal((error as Error)?.message ?? String(error), error);
}

/**
 * Every change is an operation: persisted (pending) before anything acts, then
 * run in the background with journaled phases and progress, ending done,
 * failed or rolled back. After a restart, or when their manager died, the
 * leader's `recoverOrphans` hands unfinished ones to
 * their handler's `recover`.
 */
export class OperationRunner {
  private readonly handlers = new Map<string, OperationHandler>();
  private readonly running = new Map<string, Promise<void>>();
  private readonly cancels = new Map<string, AbortController>();
  /** The operations running here as their handlers see them (a phase entered by `mark` is not in the store yet). */
  private readonly live = new Map<string, () => OperationRecord>();
  /** This manager's id in the cluster (cluster/): every operation it creates or adopts is claimed under it. */
  private owner: string | undefined;

  constructor(
    private readonly store: Store,
    private readonly hub: EventHub,
    private readonly logger: Logger,
  ) {}

  /** Claims every operation this runner creates or adopts for `managerId` (see `recoverOrphans`). */
  setOwner(managerId: string): void {
    this.owner = managerId;
  }

  register(kind: string, handler: OperationHandler): void {
    this.handlers.set(kind, handler);
  }

  /** Refuses (409) a second operation on a target that has one in flight. */
  async busyWith(targetId: string): Promise<OperationRecord | undefined> {
    const page = await this.store.operations.list({ limit: 1, filter: { targetId, state: [...active] } });
    return page.items[0];
  }

  /**
   * Persists a new operation (pending) and starts running it. `before` runs
   * first in the same transaction (a start's placement and reservation): its
   * writes commit with the operation or not at all, and the params it returns
   * join the operation's. When it also names the operation's first `phase`
   * (what the handler does first, right away), the operation is created
   * running in that phase, its journal entry included: one commit fewer than
   * pending, then running, then the phase (each commit is an fsync on SQLite).
   */
  async submit(
    request: SubmitRequest,
    label: string,
    before?: (tx: Store) => Promise<{ params?: Record<string, unknown>; events?: NewEvent[]; phase?: FirstPhase }>,
  ): Promise<OperationRecord> {
    const handler = this.handlers.get(request.kind);
    if (!handler) throw errors.internal(`No handler for operation kind "${request.kind}"`);
    const busy = await this.busyWith(request.targetId);
    if (busy) {
      throw errors.conflict(`${label} is busy with operation ${busy.id} (${busy.kind}, ${busy.phase})`, { operationId: busy.id });
    }
    let first: NewEvent[] = [];
    let audited = () => undefined as void;
    const op = await this.recorded(async (tx) => {
      // Checked again under a lock on the target: another manager may be submitting on it right now.
      await tx.cluster.lockTarget(request.targetId);
      const racing = (await tx.operations.list({ limit: 1, filter: { targetId: request.targetId, state: [...active] } })).items[0];
      if (racing) throw errors.conflict(`${label} is busy with operation ${racing.id} (${racing.kind}, ${racing.phase})`, { operationId: racing.id });
      const prepared = await before?.(tx);
      first = prepared?.events ?? [];
      const phase = prepared?.phase;
      const at = new Date().toISOString();
      const created = await tx.operations.create({
        kind: request.kind,
        targetKind: request.targetKind,
        targetId: request.targetId,
        params: { ...(request.params ?? {}), ...(prepared?.params ?? {}) },
        actor: request.actor,
        idempotencyKey: request.idempotencyKey ?? null,
        ...(phase
          ? {
              state: 'running',
              startedAt: at,
              phase: phase.name,
              progress: Math.max(0, Math.min(100, Math.round(phase.progress))),
              journal: [{ phase: phase.name, at, ...(phase.note ? { note: phase.note } : {}) }],
            }
          : {}),
      });
      if (this.owner) await tx.cluster.claim(created.id, this.owner);
      // The request's audit record commits with its operation (access/request-audit.ts).
      audited = await takeRequestAudit(tx);
      return created;
    }, () => first);
    audited();
    this.start(op, handler, 'run');
    return op;
  }

  private start(op: OperationRecord, handler: OperationHandler, mode: 'run' | 'recover'): void {
    const controller = new AbortController();
    this.cancels.set(op.id, controller);
    const done = this.execute(op, handler, mode, controller.signal).finally(() => {
      this.running.delete(op.id);
      this.cancels.delete(op.id);
    });
    this.running.set(op.id, done);
  }

  /**
   * Writes an operation and appends its `operation.updated` event in one
   * transaction (one commit, so one fsync on SQLite, instead of two per step),
   * then hands the events to live subscribers. `write` may write more and
   * return, through `eventsFirst`, events to append before the operation's:
   * every event is appended last in the transaction, in that order.
   */
  private async recorded(write: (tx: Store) => Promise<OperationRecord>, eventsFirst?: () => NewEvent[]): Promise<OperationRecord> {
    const { op, events } = await this.store.transaction(async (tx) => {
      const op = await write(tx);
      const own: NewEvent = { type: 'operation.updated', objectKind: 'operation', objectId: op.id, data: publicOperation(op) as unknown as Record<string, unknown> };
      const events = [];
      for (const event of [...(eventsFirst?.() ?? []), own]) events.push(await tx.events.append(event));
      return { op, events };
    });
    for (const event of events) this.hub.publish(event);
    return op;
  }

  private async update(op: OperationRecord, patch: Parameters<Store['operations']['update']>[1]): Promise<OperationRecord> {
    return this.recorded((tx) => tx.operations.update(op.id, patch));
  }

  private async execute(initial: OperationRecord, handler: OperationHandler, mode: 'run' | 'recover', signal: AbortSignal): Promise<void> {
    let op = initial;
    const logger = this.logger.child({ op: op.id, kind: op.kind });
    let last: { name: string; at: string; also: JoinedWrites } | undefined;
    // A phase entered by `mark` and not written yet: every write of the operation carries it.
    let marked = false;
    const save = async (patch: Parameters<Store['operations']['update']>[1]) => {
      const unsaved = marked ? { phase: op.phase, progress: op.progress, journal: op.journal } : {};
      marked = false;
      op = await this.update(op, { ...unsaved, ...patch });
    };
    const enter = (name: string, progress: number, note?: string) => {
      // A cancel stops the next phase, unless the operation is already past the point where it could be cancelled.
      if (signal.aborted && handler.cancellable?.(op) !== false) signal.throwIfAborted();
      return {
        phase: name,
        progress: Math.max(0, Math.min(100, Math.round(progress))),
        journal: [...op.journal, { phase: name, at: new Date().toISOString(), ...(note ? { note } : {}) }],
      };
    };
    this.live.set(op.id, () => op);
    const ctx: OperationContext = {
      get op() {
        return op;
      },
      logger,
      signal,
      phase: async (name, progress, note, also) => {
        const patch = enter(name, progress, note);
        marked = false;
        if (!also) {
          op = await this.update(op, patch);
          return;
        }
        let joined: NewEvent[] = [];
        op = await this.recorded(
          async (tx) => {
            joined = await also(tx);
            return tx.operations.update(op.id, patch);
          },
          () => joined,
        );
      },
      mark: (name, progress, note) => {
        op = { ...op, ...enter(name, progress, note) };
        marked = true;
      },
      progress: async (progress, detail) => {
        await save({ progress: Math.max(0, Math.min(100, Math.round(progress))), ...(detail ? { result: detail } : {}) });
      },
      lastPhase: (name, also, progress) => {
        last = { name, at: new Date().toISOString(), also };
        op = { ...op, phase: name, ...(progress !== undefined ? { progress: Math.max(0, Math.min(100, Math.round(progress))) } : {}) };
      },
    };
    try {
      if (op.state === 'pending') await save({ state: 'running', startedAt: new Date().toISOString() });
      const result = mode === 'run' ? await handler.run(ctx) : await handler.recover(ctx);
      const finished = { state: 'done', progress: 100, phase: 'done', result: result ?? null, finishedAt: new Date().toISOString() } as const;
      if (last === undefined) await save(finished);
      else {
        // The last phase's writes first, so its events (the VM's new state) come before the operation's end.
        const { name, at, also } = last;
        let first: NewEvent[] = [];
        const current = op;
        op = await this.recorded(
          async (tx) => {
            first = await also(tx);
            return tx.operations.update(current.id, { ...finished, journal: [...current.journal, { phase: name, at }] });
          },
          () => first,
        );
      }
    } catch (cause) {
      const error = signal.aborted ? asDroverError(signal.reason) : asDroverError(cause);
      if (error.code === 'internal') logger.error({ err: cause }, 'operation failed unexpectedly');
      let state: 'failed' | 'rolled_back' | 'cancelled' = 'failed';
      if (handler.compensate) {
        try {
          await handler.compensate(ctx, error);
          state = 'rolled_back';
        } catch (compensation) {
          logger.error({ err: compensation }, 'compensation failed');
        }
      }
      // Cancelled means stopped and undone; a cancel whose undo failed is a failure.
      if (signal.aborted && (state === 'rolled_back' || !handler.compensate)) state = 'cancelled';
      await save({
        state,
        error: { code: error.code, message: error.message, details: error.details },
        finishedAt: new Date().toISOString(),
      });
    } finally {
      this.live.delete(op.id);
    }
  }

  /**
   * Adopts the unfinished operations of managers that are gone (their claimant
   * is not in `alive`, or nobody claimed them: a manager of an older version, or
   * this store's previous manager) and hands each to its handler's `recover`.
   * The claim is atomic (`FOR UPDATE SKIP LOCKED`, then the claim rewritten in
   * the same transaction), so of two managers adopting at once each operation
   * goes to one. Only the leader calls it. Returns how many it adopted.
   */
  async recoverOrphans(alive: string[]): Promise<number> {
    const owner = this.owner;
    if (!owner) throw errors.internal('recoverOrphans needs the manager id (setOwner)');
    let count = 0;
    for (;;) {
      const ids = await this.store.transaction(async (tx) => {
        const found = await tx.cluster.orphans([...new Set([...alive, owner])]);
        for (const id of found) await tx.cluster.claim(id, owner);
        return found;
      });
      for (const id of ids) {
        if (this.running.has(id)) continue;
        const op = await this.store.operations.get(id);
        if (!active.includes(op.state as (typeof active)[number])) continue;
        const handler = this.handlers.get(op.kind);
        if (!handler) {
          await this.update(op, { state: 'failed', error: { code: 'internal', message: `No handler for "${op.kind}" after restart` }, finishedAt: new Date().toISOString() });
          continue;
        }
        this.logger.info({ op: op.id, kind: op.kind, phase: op.phase }, 'recovering operation');
        this.start(op, handler, 'recover');
        count += 1;
      }
      if (ids.length < 100) return count;
    }
  }

  /**
   * Cancels an operation in a phase its handler can stop cleanly (a start
   * while it prepares disks, an image import while it downloads): the handler
   * stops, undoes its work, and the operation ends `cancelled`. Elsewhere (QEMU
   * is being started, a save is writing) the answer is 409 saying why; wait
   * for the end, then undo it with the opposite action.
   */
  async cancel(id: string, actor: string): Promise<OperationRecord> {
    const op = await this.get(id);
    if (!active.includes(op.state as (typeof active)[number])) {
      throw errors.conflict(`Operation ${id} has already ended (${op.state})`, { state: op.state });
    }
    const handler = this.handlers.get(op.kind);
    const controller = this.cancels.get(id);
    if (!controller) {
      throw errors.conflict(`Operation ${id} is run by another manager; cancel it there`, { kind: op.kind, phase: op.phase });
    }
    if (!handler?.cancellable?.(op)) {
      throw errors.conflict(`Operation ${id} (${op.kind}) cannot be cancelled in phase "${op.phase}"; wait for it to end, then undo it`, { kind: op.kind, phase: op.phase });
    }
    controller.abort(errors.cancelled(`Cancelled by ${actor} in phase "${op.phase}"`, { actor, phase: op.phase }));
    return this.wait(id, 60_000);
  }

  /** The operation as it is now: as its handler sees it when it runs here (with a phase entered by `mark`), else as stored. */
  async get(id: string): Promise<OperationRecord> {
    return this.live.get(id)?.() ?? this.store.operations.get(id);
  }

  /** Resolves with the operation once it has ended (or as it is at the timeout). */
  async wait(id: string, timeoutMs: number): Promise<OperationRecord> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const op = await this.store.operations.get(id);
      if (!active.includes(op.state as (typeof active)[number]) || Date.now() > deadline) return op;
      // Run here: its end is awaited (no polling); run by another manager: polled every 50 ms.
      const inFlight = this.running.get(id);
      let timer: NodeJS.Timeout | undefined;
      const poll = new Promise((r) => (timer = setTimeout(r, inFlight ? Math.max(0, deadline - Date.now()) + 1 : 50)));
      await Promise.race([inFlight ?? poll, poll]);
      clearTimeout(timer);
    }
  }

  /** Waits for every operation this manager runs (shutdown, tests). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.running.values()]);
  }
}

export function publicOperation(op: OperationRecord): Operation {
  return {
    id: op.id,
    kind: op.kind,
    targetKind: op.targetKind,
    targetId: op.targetId,
    state: op.state,
    phase: op.phase,
    progress: op.progress,
    error: op.error ? { code: op.error.code, message: op.error.message, details: op.error.details ?? {} } : null,
    result: op.result ?? null,
    actor: op.actor,
    createdAt: op.createdAt,
    updatedAt: op.updatedAt,
    startedAt: op.startedAt,
    finishedAt: op.finishedAt,
  };
}

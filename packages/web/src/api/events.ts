import { eventTypes, type DroverEvent } from './types.js';

export type StreamStatus = 'connecting' | 'live' | 'reconnecting' | 'closed';

type Listener = (event: DroverEvent) => void;

/** The parts of EventSource the stream uses (a fake one in unit tests). */
export interface EventSourceLike {
  readonly readyState: number;
  onopen: ((this: EventSourceLike, ev: Event) => unknown) | null;
  onerror: ((this: EventSourceLike, ev: Event) => unknown) | null;
  addEventListener(type: string, listener: (event: MessageEvent) => void): void;
  close(): void;
}

export interface EventStreamOptions {
  url?: string;
  create?: (url: string) => EventSourceLike;
  /** Asked when the browser gave up on the stream (it does after a non-200 answer): false means the session ended. */
  checkSession?: () => Promise<boolean>;
  onSessionEnded?: () => void;
  retryMs?: (attempt: number) => number;
}

const CLOSED = 2;

/**
 * The manager's change feed, `GET /api/v1/events` (server-sent events; the
 * session cookie authenticates it). The browser reconnects by itself and sends
 * Last-Event-ID, so the manager replays what was missed. When it gives up (an
 * error answer) the stream checks the session and opens a new EventSource; the
 * pages then reload what they show ("resync"), since a new stream cannot resume.
 */
export class EventStream {
  private source: EventSourceLike | undefined;
  private readonly listeners = new Set<Listener>();
  private readonly resyncListeners = new Set<() => void>();
  private readonly statusListeners = new Set<(status: StreamStatus) => void>();
  private statusValue: StreamStatus = 'closed';
  private hadError = false;
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private stopped = true;
  lastSeq = 0;

  constructor(private readonly options: EventStreamOptions = {}) {}

  get status(): StreamStatus {
    return this.statusValue;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.open();
  }

  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.source?.close();
    this.source = undefined;
    this.setStatus('closed');
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Called after the stream came back from an interruption: reload what you show. */
  onResync(listener: () => void): () => void {
    this.resyncListeners.add(listener);
    return () => this.resyncListeners.delete(listener);
  }

  onStatus(listener: (status: StreamStatus) => void): () => void {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }

  /** Hands an event to the listeners (also used by tests). */
  dispatch(event: DroverEvent): void {
    if (event.seq > this.lastSeq) this.lastSeq = event.seq;
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch (error) {
        console.error('event listener failed', error);
      }
    }
  }

  private setStatus(status: StreamStatus): void {
    if (status === this.statusValue) return;
    this.statusValue = status;
    for (const listener of [...this.statusListeners]) listener(status);
  }

  private open(): void {
    const create = this.options.create ?? ((url: string) => new EventSource(url, { withCredentials: true }) as unknown as EventSourceLike);
    const source = create(this.options.url ?? '/api/v1/events');
    this.source = source;
    this.setStatus(this.hadError ? 'reconnecting' : 'connecting');
    source.onopen = () => {
      this.attempt = 0;
      this.setStatus('live');
      if (this.hadError) {
        this.hadError = false;
        for (const listener of [...this.resyncListeners]) listener();
      }
    };
    source.onerror = () => {
      if (this.source !== source) return;
      this.hadError = true;
      if (source.readyState !== CLOSED) {
        this.setStatus('reconnecting');
        return;
      }
      source.close();
      this.source = undefined;
      this.setStatus('reconnecting');
      void this.retry();
    };
    for (const type of eventTypes) {
      source.addEventListener(type, (message: MessageEvent) => {
        let data: unknown;
        try {
          data = JSON.parse(String(message.data));
        } catch {
          return;
        }
        this.dispatch({ seq: Number(message.lastEventId) || 0, type, data } as DroverEvent);
      });
    }
  }

  private async retry(): Promise<void> {
    if (this.stopped) return;
    const ok = this.options.checkSession ? await this.options.checkSession().catch(() => true) : true;
    if (this.stopped) return;
    if (!ok) {
      this.stop();
      this.options.onSessionEnded?.();
      return;
    }
    const delay = (this.options.retryMs ?? ((n) => Math.min(30_000, 500 * 2 ** n)))(this.attempt++);
    this.retryTimer = setTimeout(() => {
      if (!this.stopped) this.open();
    }, delay);
  }
}

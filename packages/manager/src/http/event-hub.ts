import { EventEmitter } from 'node:events';

import type { EventRecord } from '../store/types.js';

/** A change event as stored and as streamed. */
export type DroverEvent = EventRecord;

/**
 * Fans change events out to live subscribers (SSE and WebSocket clients). The
 * store's append-only events table is the durable copy, so a client that
 * reconnects with Last-Event-ID gets what it missed.
 */
export class EventHub {
  private readonly emitter = new EventEmitter();
  /** Set when several managers share the store: events are emitted from the store's feed, in seq order. */
  private feed: { read: (after: number) => Promise<DroverEvent[]>; last: number; pumping?: Promise<void>; again: boolean; onError: (error: unknown) => void } | undefined;

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  publish(event: DroverEvent): void {
    if (this.feed) {
      this.pump();
      return;
    }
    this.emitter.emit('event', event);
  }

  /**
   * Several managers on one store (cluster/event-relay.ts): from now on every
   * event reaches subscribers by reading the store's feed after `lastSeq`, in
   * seq order and once, whichever manager appended it. `publish` and a
   * notification from another manager (`pump`) both just read what is new.
   */
  followStore(read: (after: number) => Promise<DroverEvent[]>, lastSeq: number, onError: (error: unknown) => void): void {
    this.feed = { read, last: lastSeq, again: false, onError };
  }

  /** Reads and emits the events committed since the last one emitted (coalesces calls while it reads). */
  pump(): Promise<void> {
    const feed = this.feed;
    if (!feed) return Promise.resolve();
    if (feed.pumping) {
      feed.again = true;
      return feed.pumping;
    }
    const run = async () => {
      do {
        feed.again = false;
        for (;;) {
          const batch = await feed.read(feed.last);
          for (const event of batch) {
            if (event.seq <= feed.last) continue;
            feed.last = event.seq;
            this.emitter.emit('event', event);
          }
          if (batch.length < 1000) break;
        }
      } while (feed.again);
    };
    feed.pumping = run()
      .catch((error: unknown) => feed.onError(error))
      .finally(() => {
        feed.pumping = undefined;
      });
    return feed.pumping;
  }

  subscribe(listener: (event: DroverEvent) => void): () => void {
    this.emitter.on('event', listener);
    return () => this.emitter.off('event', listener);
  }
}

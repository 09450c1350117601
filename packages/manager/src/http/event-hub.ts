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

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  publish(event: DroverEvent): void {
    this.emitter.emit('event', event);
  }

  subscribe(listener: (event: DroverEvent) => void): () => void {
    this.emitter.on('event', listener);
    return () => this.emitter.off('event', listener);
  }
}

import { EventEmitter } from 'node:events';

export interface DroverEvent {
  seq: number;
  type: string;
  objectKind: string;
  objectId: string;
  data: Record<string, unknown>;
  createdAt: string;
}

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

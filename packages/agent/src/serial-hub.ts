import net from 'node:net';
import { EventEmitter } from 'node:events';

/**
 * Keeps the agent's single connection to a VM's serial chardev (QEMU accepts
 * one client per socket) and fans it out to any number of viewers. Input from
 * any viewer goes to the guest. QEMU logs the port to a file by itself, so the
 * hub keeps no history.
 */
export class SerialHub extends EventEmitter {
  private socket: net.Socket | undefined;
  private closed = false;
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(private readonly socketPath: string) {
    super();
    this.setMaxListeners(0);
  }

  start(): void {
    this.connect();
  }

  private connect(): void {
    if (this.closed) return;
    const socket = net.connect(this.socketPath);
    socket.on('connect', () => {
      this.socket = socket;
    });
    socket.on('data', (chunk: Buffer) => this.emit('data', chunk));
    socket.on('error', () => {
      /* reconnect on close */
    });
    socket.on('close', () => {
      if (this.socket === socket) this.socket = undefined;
      // The chardev may not exist yet (QEMU still starting) or QEMU may have
      // dropped us; retry until the hub is closed with the VM.
      if (!this.closed) this.retryTimer = setTimeout(() => this.connect(), 200);
    });
  }

  write(data: Buffer | string): void {
    this.socket?.write(data);
  }

  close(): void {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.socket?.destroy();
    this.socket = undefined;
    this.emit('end');
    this.removeAllListeners('data');
  }
}

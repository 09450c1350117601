import { createSocket } from 'node:dgram';
import { errors } from '@drover/core';
import { defaultPowerTimeoutMs, macBytes, unsupported, type PowerAction, type PowerDriver, type PowerState, type WolPowerConfig } from './power-driver.js';

/** The magic packet: six 0xFF bytes, then the MAC sixteen times (102 bytes). */
export function magicPacket(mac: string): Buffer {
  const bytes = macBytes(mac);
  return Buffer.concat([Buffer.alloc(6, 0xff), ...Array.from({ length: 16 }, () => bytes)]);
}

/**
 * Wake-on-LAN: `on` only. The packet goes as a directed UDP datagram to the
 * configured address (a subnet's directed broadcast, so routers can forward
 * it), port 9 unless told. Whether the host woke is seen by its agent
 * answering, not here: status is `unknown`.
 */
export class WolDriver implements PowerDriver {
  readonly kind = 'wol' as const;
  readonly supports: ReadonlySet<PowerAction> = new Set(['on']);

  constructor(private readonly config: WolPowerConfig) {}

  async status(): Promise<PowerState> {
    return 'unknown';
  }

  async on(): Promise<void> {
    const packet = magicPacket(this.config.mac);
    const timeoutMs = this.config.timeoutMs ?? defaultPowerTimeoutMs;
    const port = this.config.port ?? 9;
    const socket = createSocket('udp4');
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(errors.timeout(`Wake-on-LAN packet to ${this.config.address}:${port} was not sent within ${timeoutMs} ms`)), timeoutMs);
        socket.once('error', (error) => {
          clearTimeout(timer);
          reject(errors.unavailable(`Wake-on-LAN packet to ${this.config.address}:${port} could not be sent: ${error.message}`));
        });
        socket.bind(0, () => {
          socket.setBroadcast(true);
          socket.send(packet, port, this.config.address, (error) => {
            clearTimeout(timer);
            if (error) reject(errors.unavailable(`Wake-on-LAN packet to ${this.config.address}:${port} could not be sent: ${error.message}`));
            else resolve();
          });
        });
      });
    } finally {
      socket.close();
    }
  }

  async off(): Promise<void> {
    unsupported('wol', 'off');
  }

  async cycle(): Promise<void> {
    unsupported('wol', 'cycle');
  }
}

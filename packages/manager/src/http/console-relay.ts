import { Type } from 'typebox';
import type WebSocket from 'ws';
import { errors } from '@drover/core';
import { IdOrName } from '@drover/api';
import type { Store } from '../store/index.js';
import type { AgentLink } from '../hosts/agent-link.js';
import type { HostRecord, VmRecord } from '../store/types.js';
import type { ManagerApp } from './app-type.js';


/** `?ticket=`: how a client without the session cookie authenticates a stream (see BrowserAuth). */
export const StreamQuery = Type.Object({ ticket: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })) }, { additionalProperties: false });

const Ref = Type.Object({ id: IdOrName }, { additionalProperties: false });

/** Above this much unsent data to the viewer, reading from the host pauses. */
const highWater = 4 * 1024 * 1024;

/**
 * Pipes two WebSockets into each other, message by message, keeping binary
 * frames binary; when either side closes, so does the other. A slow viewer
 * pauses the host's side instead of growing the manager's memory.
 */
export function relay(client: WebSocket, upstream: WebSocket): void {
  const early: Array<{ data: WebSocket.RawData; binary: boolean }> = [];
  client.on('message', (data, binary) => {
    if (upstream.readyState === upstream.OPEN) upstream.send(data, { binary });
    else if (early.length < 64) early.push({ data, binary });
  });
  upstream.on('open', () => {
    for (const m of early.splice(0)) upstream.send(m.data, { binary: m.binary });
  });
  upstream.on('message', (data, binary) => {
    if (client.readyState !== client.OPEN) return;
    client.send(data, { binary }, () => {
      if (upstream.isPaused && client.bufferedAmount < highWater / 4) upstream.resume();
    });
    if (client.bufferedAmount > highWater) upstream.pause();
  });
  const closeCode = (code: number) => (code === 1000 || (code >= 3000 && code < 5000) ? code : 1011);
  upstream.on('close', (code, reason) => {
    if (client.readyState === client.OPEN || client.readyState === client.CONNECTING) client.close(closeCode(code), reason.toString('utf8').slice(0, 120));
  });
  upstream.on('error', (error) => {
    if (client.readyState === client.OPEN) client.close(1011, `Host stream failed: ${error.message}`.slice(0, 120));
  });
  client.on('close', () => {
    if (upstream.readyState === upstream.OPEN) upstream.close(1000, 'viewer left');
    else upstream.terminate();
  });
}

/**
 * The VM's screen (RFB, for noVNC) and serial console (raw bytes both ways) as
 * WebSockets on the manager, relayed to the agent of the VM's host over mutual
 * TLS. The VM is looked up before the upgrade, so an unknown VM or one that
 * never ran is an HTTP 404/409 in the API's error shape, not a dropped socket.
 */
export async function registerConsoleRoutes(app: ManagerApp, o: { store: Store; link: AgentLink }): Promise<void> {
  const targets = new WeakMap<object, { vm: VmRecord; host: HostRecord }>();
  for (const kind of ['vnc', 'serial'] as const) {
    app.get(
      `/api/v1/vms/:id/console/${kind}`,
      {
        config: { permission: 'vm.console' },
        websocket: true,
        schema: {
          tags: ['vms'],
          summary:
            kind === 'vnc'
              ? "The VM's screen as a WebSocket of RFB (VNC) bytes, for noVNC; one viewer per connection"
              : "The VM's serial console as a WebSocket: what the guest prints, and keystrokes sent to it",
          params: Ref,
          querystring: StreamQuery,
        },
        preHandler: async (request) => {
          const vm = await o.store.vms.find((request.params as { id: string }).id);
          if (!vm.hostId) throw errors.conflict(`VM "${vm.name}" has never run, so it has no console`);
          if (kind === 'vnc' && vm.state !== 'running' && vm.state !== 'paused') throw errors.conflict(`VM "${vm.name}" is ${vm.state}; its screen exists only while it runs`);
          targets.set(request, { vm, host: await o.store.hosts.get(vm.hostId) });
        },
      },
      (socket, request) => {
        const target = targets.get(request);
        if (!target) {
          socket.close(1011, 'VM lookup failed');
          return;
        }
        let upstream: WebSocket;
        try {
          upstream = o.link.webSocket(target.host, `/v1/vms/${target.vm.id}/console/${kind}`);
        } catch (error) {
          socket.close(1011, (error as Error).message.slice(0, 120));
          return;
        }
        relay(socket as unknown as WebSocket, upstream);
      },
    );
  }
}

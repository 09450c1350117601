import WebSocket from 'ws';
import { errorFromResponse, seg } from '../client.js';
import type { Session } from '../cli.js';

/** Ctrl-] — the byte that detaches, as in telnet and `virsh console`. */
export const DETACH = 0x1d;

/**
 * Attaches the terminal to a VM's serial console through the manager's
 * WebSocket relay: what the guest prints goes to stdout, what is typed goes to
 * the guest (raw mode on a terminal). Ctrl-] or the end of stdin detaches;
 * resolves when the console closes. Authenticates the stream with a
 * single-use ticket, so the token never appears in a URL.
 */
export async function attachConsole(session: Session, name: string): Promise<void> {
  const client = await session.client();
  const { ticket } = await client.post<{ ticket: string }>('/tickets', {});
  const url = new URL(`${client.baseUrl}/api/v1/vms/${seg(name)}/console/serial`);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('ticket', ticket);
  const where = `console of ${name}`;
  const ws = new WebSocket(url, { handshakeTimeout: 30_000 });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_request, response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => reject(errorFromResponse(response.statusCode ?? 0, response.statusMessage ?? '', response.headers['content-type'] ?? null, Buffer.concat(chunks).toString('utf8'), where)));
    });
    ws.once('error', (error) => reject(errorFromResponse(503, '', 'text/plain', error.message, where)));
  });
  session.note(`Connected to the serial console of ${name}. Ctrl-] detaches.\r\n`);
  session.ctx.setRawMode?.(true);
  const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
  ws.on('message', (data: Buffer) => session.out(data));
  const detach = () => {
    if (ws.readyState === ws.OPEN) ws.close(1000, 'detached');
  };
  session.signal?.addEventListener('abort', detach, { once: true });
  const typing = (async () => {
    if (!session.ctx.stdin) return;
    for await (const chunk of session.ctx.stdin) {
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      const at = bytes.indexOf(DETACH);
      if (at >= 0) {
        if (at > 0 && ws.readyState === ws.OPEN) ws.send(bytes.subarray(0, at));
        break;
      }
      if (ws.readyState !== ws.OPEN) break;
      ws.send(bytes);
    }
    detach();
  })();
  try {
    await Promise.race([closed, typing.then(() => closed)]);
  } finally {
    session.ctx.setRawMode?.(false);
    session.signal?.removeEventListener('abort', detach);
  }
  session.note('\r\nDetached.\n');
}

import { createReadStream, createWriteStream } from 'node:fs';
import { chown, rm, open } from 'node:fs/promises';
import net from 'node:net';
import { pipeline } from 'node:stream/promises';
import { errors } from '@drover/core';

/**
 * QEMU runs under a strict seccomp filter that forbids spawning, so `exec:`
 * migration URIs are out, and Node cannot pass file descriptors over QMP
 * (no SCM_RIGHTS). Instead the agent relays the migration stream between a
 * unix socket and the state file: QEMU connects to us to save, and listens
 * for us to restore.
 */
export async function receiveStateToFile(
  socketPath: string,
  file: string,
  owner: { uid: number; gid: number },
): Promise<{ ready: Promise<void>; done: Promise<number>; abort: () => void }> {
  await rm(socketPath, { force: true });
  const server = net.createServer();
  let accepted = false;
  const done = new Promise<number>((resolve, reject) => {
    server.on('connection', (socket) => {
      if (accepted) {
        socket.destroy();
        return;
      }
      accepted = true;
      server.close();
      const out = createWriteStream(file, { mode: 0o600 });
      pipeline(socket, out)
        .then(async () => {
          // The file must be durable before QEMU is told to quit.
          const handle = await open(file, 'r');
          try {
            await handle.sync();
            resolve((await handle.stat()).size);
          } finally {
            await handle.close();
          }
        })
        .catch(reject);
    });
    server.on('error', reject);
  });
  const ready = new Promise<void>((resolve, reject) => {
    server.listen(socketPath, () => resolve());
    server.once('error', reject);
  });
  await ready;
  // QEMU connects as the unprivileged account.
  await chown(socketPath, owner.uid, owner.gid);
  return {
    ready,
    done,
    abort: () => {
      server.close();
    },
  };
}

/** Connects to QEMU's incoming-migration socket and streams the state file into it. */
export async function sendFileToState(socketPath: string, file: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let socket: net.Socket | undefined;
  while (!socket) {
    try {
      socket = await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect(socketPath);
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      });
    } catch (cause) {
      if (Date.now() > deadline) throw errors.timeout(`QEMU did not open its restore socket "${socketPath}" in time`, { cause: String(cause) });
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  await pipeline(createReadStream(file), socket);
}

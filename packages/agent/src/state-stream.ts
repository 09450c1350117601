import { spawn } from 'node:child_process';
import { chmod, lchown, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { errors } from '@drover/core';

/**
 * QEMU runs under a strict seccomp filter that forbids spawning, so `exec:`
 * migration URIs are out, and Node cannot pass file descriptors over QMP
 * (no SCM_RIGHTS). Instead QEMU streams its state over a unix socket and the
 * agent hands the socket itself to `dd`, which moves the bytes between socket
 * and file: no copy through JavaScript, and `conv=fdatasync` makes a save
 * durable before QEMU is told to quit.
 */
function runDd(args: string[], stdio: ['ignore' | net.Socket, 'ignore' | net.Socket], what: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('dd', [...args, 'bs=4M', 'status=none'], { stdio: [stdio[0], stdio[1], 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(errors.timeout(`${what} did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(errors.unavailable(`${what} failed: ${error.message}`));
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(errors.unavailable(`${what} failed (${signal ?? `exit ${code}`}): ${stderr.trim()}`));
    });
  });
}

export interface StateReceiver {
  /** Resolves with the file's size once every byte is on disk. */
  done: Promise<number>;
  abort(): void;
}

/**
 * Listens on `socketPath` (group: the QEMU account's) for one save stream and
 * writes it to `file` (0600); with `durable` the data is on disk before `done` resolves.
 */
export async function receiveStateToFile(
  socketPath: string,
  file: string,
  options: { owner: { uid: number; gid: number }; timeoutMs: number; durable: boolean },
): Promise<StateReceiver> {
  const { owner, timeoutMs } = options;
  await rm(socketPath, { force: true });
  // Created 0600 before dd opens it (dd keeps an existing file's mode): no one else reads a VM's memory.
  await writeFile(file, '', { mode: 0o600 });
  const server = net.createServer({ pauseOnConnect: true });
  const done = new Promise<number>((resolve, reject) => {
    server.once('connection', (socket) => {
      server.close();
      const copy = runDd([`of=${file}`, ...(options.durable ? ['conv=fdatasync'] : [])], [socket, 'ignore'], `Writing the saved state to "${file}"`, timeoutMs);
      // dd holds its own copy of the descriptor; ours must not read a byte.
      socket.destroy();
      // Every failure rejects `done` (the file may be gone already: a failed save removes it).
      copy
        .then(async () => {
          await chmod(file, 0o600);
          return (await stat(file)).size;
        })
        .then(resolve, reject);
    });
    server.once('error', reject);
  });
  await new Promise<void>((resolve, reject) => {
    server.listen(socketPath, () => resolve());
    server.once('error', reject);
  });
  // QEMU connects through its group; lchown never follows a link.
  await lchown(socketPath, 0, owner.gid);
  await chmod(socketPath, 0o660);
  return { done, abort: () => server.close() };
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
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  socket.pause();
  const copy = runDd([`if=${file}`], ['ignore', socket], `Reading the saved state from "${file}"`, timeoutMs);
  socket.destroy();
  await copy;
}

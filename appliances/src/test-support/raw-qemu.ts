/**
 * Test support: boots appliances with a raw `qemu-system-x86_64` (TCG) command
 * line, independent of @drover/qemu, so the appliances are shown to work on
 * their own. Only loopback traffic; every QEMU is tracked by PID and killed by
 * `killAllRawVms()` (call it in afterAll).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { runTool } from '../run.js';

export { dbRequest } from './db-client.js';

export interface RawDisk {
  path: string;
  format: 'qcow2' | 'raw';
}

export interface RawVmOptions {
  /** Used for file names in workDir; unique per start. */
  name: string;
  workDir: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  disks?: RawDisk[];
  memoryMiB?: number;
  /** User-mode network with these loopback forwards; `false` for no NIC. */
  net?: { hostForwards: Array<{ hostPort: number; guestPort: number }> } | false;
}

const running = new Set<RawVm>();

export class RawVm {
  readonly serialLog: string;
  readonly qmpSocket: string;
  readonly startedAt = Date.now();
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private stderr = '';
  private qmpConn: QmpConnection | undefined;

  private constructor(
    readonly options: RawVmOptions,
    private readonly child: ChildProcess,
    paths: { serialLog: string; qmpSocket: string },
  ) {
    this.serialLog = paths.serialLog;
    this.qmpSocket = paths.qmpSocket;
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        running.delete(this);
        this.qmpConn?.close();
        resolve({ code, signal });
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get hasExited(): boolean {
    return this.exitInfo !== undefined;
  }

  static start(options: RawVmOptions): RawVm {
    const serialLog = join(options.workDir, `${options.name}.serial.log`);
    const qmpSocket = join(options.workDir, `${options.name}.qmp.sock`);
    const args = [
      '-accel', 'tcg',
      '-m', String(options.memoryMiB ?? 128),
      '-smp', '1',
      '-nodefaults', '-no-user-config', '-display', 'none',
      // A guest panic (panic=-1 reboots) or `reboot` ends the process instead of looping.
      '-no-reboot',
      '-kernel', options.kernel,
      '-initrd', options.initrd,
      '-append', options.cmdline,
      '-serial', `file:${serialLog}`,
      '-qmp', `unix:${qmpSocket},server=on,wait=off`,
    ];
    (options.disks ?? []).forEach((disk, i) => {
      args.push(
        '-blockdev', `driver=file,filename=${disk.path},node-name=f${i}`,
        '-blockdev', `driver=${disk.format},file=f${i},node-name=d${i}`,
        '-device', `virtio-blk-pci,drive=d${i}`,
      );
    });
    if (options.net !== false) {
      const fwd = (options.net?.hostForwards ?? [])
        .map((f) => `,hostfwd=tcp:127.0.0.1:${f.hostPort}-:${f.guestPort}`)
        .join('');
      args.push('-netdev', `user,id=n0${fwd}`, '-device', 'virtio-net-pci,netdev=n0,romfile=');
    }
    const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const vm = new RawVm(options, child, { serialLog, qmpSocket });
    running.add(vm);
    return vm;
  }

  serial(): string {
    try {
      return readFileSync(this.serialLog, 'utf8');
    } catch {
      return '';
    }
  }

  /** Serial lines (CR stripped), complete or not. */
  serialLines(): string[] {
    return this.serial().replace(/\r/g, '').split('\n');
  }

  /** Waits until the serial log matches; fails early if QEMU exits. */
  async waitForSerial(pattern: RegExp, timeoutMs = 120_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const match = this.serial().match(pattern);
      if (match) return match;
      if (this.hasExited) throw new Error(`${this.describe()} exited before printing ${pattern}\n${this.diagnostics()}`);
      if (Date.now() > deadline) throw new Error(`${this.describe()}: no ${pattern} within ${timeoutMs} ms\n${this.diagnostics()}`);
      await sleep(100);
    }
  }

  async qmp(execute: string, args?: Record<string, unknown>): Promise<unknown> {
    if (!this.qmpConn) this.qmpConn = await QmpConnection.open(this.qmpSocket);
    return this.qmpConn.execute(execute, args);
  }

  /** Resolves with the exit status, or rejects after timeoutMs. */
  async waitForExit(timeoutMs = 60_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${this.describe()} did not exit within ${timeoutMs} ms\n${this.diagnostics()}`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  kill(): void {
    if (!this.hasExited && this.child.pid !== undefined) {
      try {
        process.kill(this.child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }

  describe(): string {
    return `QEMU ${this.options.name} (pid ${this.pid})`;
  }

  diagnostics(): string {
    const tail = this.serial().split('\n').slice(-40).join('\n');
    return `--- serial (last lines) ---\n${tail}\n--- qemu stderr ---\n${this.stderr.slice(-2000)}`;
  }
}

/** Kills every QEMU this process started that is still running, and waits for them. */
export async function killAllRawVms(): Promise<void> {
  const vms = [...running];
  for (const vm of vms) vm.kill();
  await Promise.all(vms.map((vm) => vm.waitForExit(10_000).catch(() => undefined)));
}

/** A minimal QMP client: one command at a time, events ignored. */
class QmpConnection {
  private buffer = '';
  private waiting: Array<(msg: Record<string, unknown>) => void> = [];
  private closed = false;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.buffer += d;
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, nl).trim();
        this.buffer = this.buffer.slice(nl + 1);
        if (line.length === 0) continue;
        const msg = JSON.parse(line) as Record<string, unknown>;
        if ('event' in msg) continue;
        this.waiting.shift()?.(msg);
      }
    });
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.waiting.splice(0)) w({ error: { class: 'Closed', desc: 'QMP connection closed' } });
    });
    socket.on('error', () => undefined);
  }

  static async open(path: string, timeoutMs = 10_000): Promise<QmpConnection> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = createConnection(path, () => resolve(s));
          s.once('error', reject);
        });
        const conn = new QmpConnection(socket);
        await conn.next(); // greeting
        await conn.execute('qmp_capabilities');
        return conn;
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await sleep(100);
      }
    }
  }

  private next(): Promise<Record<string, unknown>> {
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  async execute(execute: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.closed) throw new Error(`QMP ${execute}: connection closed`);
    const reply = this.next();
    this.socket.write(`${JSON.stringify(args ? { execute, arguments: args } : { execute })}\n`);
    const msg = await reply;
    if ('error' in msg) throw new Error(`QMP ${execute} failed: ${JSON.stringify(msg.error)}`);
    return msg.return;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** A free TCP port on 127.0.0.1 (bind port 0, read it, release it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === 'object') resolve(address.port);
        else reject(new Error('no port'));
      });
    });
  });
}

/** A thin qcow2 clone, so the cached image is never written. */
export async function cloneDisk(backing: string, path: string): Promise<string> {
  await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', backing, path]);
  return path;
}

/** GET http://127.0.0.1:port/path with a timeout. */
export async function httpGet(port: number, path: string, timeoutMs = 10_000): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, body: await res.text() };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

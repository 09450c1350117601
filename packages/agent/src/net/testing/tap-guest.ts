import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { buildAppliance, defaultApplianceCacheDir, type ApplianceArtifacts } from '@drover/appliances';

const run = promisify(execFile);

let web: Promise<ApplianceArtifacts> | undefined;
export function webAppliance(): Promise<ApplianceArtifacts> {
  web ??= buildAppliance('web', { cacheDir: defaultApplianceCacheDir() });
  return web;
}

export interface TapGuestOptions {
  name: string;
  namespace: string;
  workDir: string;
  tap: string;
  mac: string;
  memoryMiB?: number;
  /** Extra kernel command line (`drover.*` keys); without `drover.ip` the guest asks DHCP. */
  cmdline?: string;
  /** Start as a live-migration destination listening on this `tcp:ADDR:PORT`. */
  incoming?: string;
  /** File names in workDir (default `name`): a migration destination needs its own sockets. */
  fileTag?: string;
  /** Reuse this overlay (a migration destination opens the source's disk). */
  disk?: string;
}

/**
 * A `web` appliance guest under TCG inside a host namespace, its NIC a tap on
 * a Drover bridge, with a command channel: the console's root shell over a
 * unix socket. Tests kill it by PID (`kill()`), also from afterAll.
 */
export class TapGuest {
  private output = '';
  /** QEMU's own messages. */
  stderr = '';
  private seq = 0;
  private socket: Socket | undefined;

  private constructor(
    readonly options: TapGuestOptions,
    readonly child: ChildProcess,
    readonly disk: string,
    readonly qmpSocket: string,
  ) {}

  get pid(): number | undefined {
    return this.child.pid;
  }

  static async start(options: TapGuestOptions): Promise<TapGuest> {
    const artifacts = await webAppliance();
    const tag = options.fileTag ?? options.name;
    const disk = options.disk ?? path.join(options.workDir, `${tag}.qcow2`);
    if (options.disk === undefined) {
      await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', artifacts.rootDisk, disk], { timeout: 20_000 });
    }
    const serial = path.join(options.workDir, `${tag}.serial`);
    const qmpSocket = path.join(options.workDir, `${tag}.qmp`);
    const args = [
      'netns', 'exec', options.namespace, 'qemu-system-x86_64',
      '-accel', 'tcg', '-m', String(options.memoryMiB ?? 128), '-smp', '1',
      '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
      '-kernel', artifacts.kernel, '-initrd', artifacts.initrd,
      '-append', `${artifacts.cmdline} no_timer_check drover.name=${options.name} ${options.cmdline ?? ''}`.trim(),
      '-blockdev', `driver=file,filename=${disk},node-name=f0`,
      '-blockdev', 'driver=qcow2,file=f0,node-name=disk0',
      '-device', 'virtio-blk-pci,drive=disk0,id=vda',
      '-netdev', `tap,id=n0,ifname=${options.tap},script=no,downscript=no`,
      '-device', `virtio-net-pci,netdev=n0,id=nic0,mac=${options.mac},romfile=`,
      '-chardev', `socket,id=ser0,path=${serial},server=on,wait=off`,
      '-serial', 'chardev:ser0',
      '-qmp', `unix:${qmpSocket},server=on,wait=off`,
      ...(options.incoming ? ['-incoming', options.incoming] : []),
    ];
    const child = spawn('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const guest = new TapGuest(options, child, disk, qmpSocket);
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (guest.stderr += d));
    for (const deadline = Date.now() + 20_000; !existsSync(serial); ) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`QEMU of ${options.name} did not start: ${guest.stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    // The socket file appears at bind(), a moment before QEMU listens: retry refused connections.
    for (let attempt = 0; ; attempt++) {
      try {
        guest.socket = await new Promise<Socket>((resolve, reject) => {
          const socket = createConnection(serial);
          socket.once('connect', () => resolve(socket));
          socket.once('error', reject);
        });
        break;
      } catch (error) {
        if (attempt > 100 || child.exitCode !== null) throw new Error(`Cannot open the console of ${options.name}: ${String(error)} ${guest.stderr}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    guest.socket.setEncoding('utf8').on('data', (d: string) => (guest.output += d));
    guest.socket.on('error', () => undefined);
    return guest;
  }

  /** Waits until the console shows `pattern` (READY, or a line of a command). */
  async waitFor(pattern: RegExp, timeoutMs = 180_000): Promise<RegExpMatchArray> {
    for (const deadline = Date.now() + timeoutMs; ; ) {
      const match = this.output.replace(/\r/g, '').match(pattern);
      if (match) return match;
      if (this.child.exitCode !== null) throw new Error(`${this.options.name} exited:\n${this.output.slice(-3000)}`);
      if (Date.now() > deadline) throw new Error(`${this.options.name}: no ${pattern} within ${timeoutMs} ms:\n${this.output.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Waits for READY and opens the console shell. */
  async ready(): Promise<string> {
    const [line] = await this.waitFor(/DROVER-READY[^\n]*/);
    await this.shell();
    return line;
  }

  /** Opens the shell (after READY on a fresh boot; after a migration the shell is already open). */
  async shell(): Promise<void> {
    this.socket!.write('\n');
    await this.sh('stty -echo 2>/dev/null; true');
  }

  /** Runs a shell command in the guest; resolves with its output and status. */
  async sh(command: string, timeoutMs = 60_000): Promise<{ status: number; out: string }> {
    const id = ++this.seq;
    const start = this.output.length;
    this.socket!.write(`${command}; echo "@@"${id}"@@$?@@"\n`);
    const pattern = new RegExp(`@@${id}@@(\\d+)@@`);
    for (const deadline = Date.now() + timeoutMs; ; ) {
      const text = this.output.slice(start).replace(/\r/g, '');
      const match = pattern.exec(text);
      if (match) {
        // The previous command's prompt ("[root@NAME ~]# ") may arrive after its marker, i.e. in this output: drop it.
        // It may also be cut in two where this output starts ("[" before, "root@NAME ~]# " after): its first
        // part joins this output's first line, so the whole prompt is dropped.
        const before = this.output.slice(0, start).replace(/\r/g, '');
        const cut = before.slice(before.lastIndexOf('\n') + 1);
        const body = ((/^\[[^\]\n]*(\]([#$] ?)?)?$/.test(cut) ? cut : '') + text.slice(0, match.index))
          .split('\n')
          .filter((l) => !l.includes(`"@@"${id}"@@`))
          .map((l) => l.replace(/^(\[[^\]\n]*@[^\]\n]*\][#$] )+/, ''))
          .join('\n');
        return { status: Number(match[1]), out: body };
      }
      if (this.child.exitCode !== null) throw new Error(`${this.options.name} exited during "${command}"`);
      if (Date.now() > deadline) throw new Error(`${this.options.name}: "${command}" did not finish:\n${text.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** `wget` from the guest (busybox `wget -T` crashes: the shell's `timeout` bounds it). */
  async fetch(url: string, seconds = 4): Promise<{ ok: boolean; body: string }> {
    const { status, out } = await this.sh(`timeout ${seconds} wget -q -O - '${url}'`, (seconds + 30) * 1000);
    return { ok: status === 0, body: out.trim() };
  }

  console(): string {
    return this.output;
  }

  kill(): void {
    this.socket?.destroy();
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}

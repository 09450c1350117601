import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * Network namespaces for network tests, each named `drvnet<id>…` and removed by
 * name in `destroy()` (call it in afterAll): a namespace takes its links,
 * bridges, taps and nft tables with it. Processes started in them are killed
 * by PID first.
 */
export class ScratchNamespaces {
  readonly id = randomBytes(3).toString('hex');
  private readonly names: string[] = [];
  private readonly pids: number[] = [];
  private readonly rootLinks: string[] = [];

  async create(suffix: string): Promise<string> {
    const name = `drvnet${this.id}${suffix}`;
    await run('ip', ['netns', 'add', name], { timeout: 10_000 });
    this.names.push(name);
    await exec(name, 'ip', 'link', 'set', 'lo', 'up');
    return name;
  }

  /** A veth pair between two namespaces, with addresses (CIDR) on each end. */
  async link(a: string, aName: string, aAddress: string | undefined, b: string, bName: string, bAddress: string | undefined): Promise<void> {
    const tmpA = `dv${this.id}${randomBytes(2).toString('hex')}`;
    const tmpB = `dv${this.id}${randomBytes(2).toString('hex')}`;
    await run('ip', ['link', 'add', tmpA, 'type', 'veth', 'peer', 'name', tmpB], { timeout: 10_000 });
    this.rootLinks.push(tmpA, tmpB);
    await run('ip', ['link', 'set', tmpA, 'netns', a, 'name', aName]);
    await run('ip', ['link', 'set', tmpB, 'netns', b, 'name', bName]);
    for (const [ns, dev, address] of [[a, aName, aAddress], [b, bName, bAddress]] as const) {
      if (address !== undefined) await exec(ns, 'ip', 'addr', 'add', address, 'dev', dev);
      await exec(ns, 'ip', 'link', 'set', dev, 'up');
    }
  }

  track(pid: number | undefined): void {
    if (pid !== undefined) this.pids.push(pid);
  }

  async destroy(): Promise<void> {
    for (const pid of this.pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    for (const name of this.names) await run('ip', ['netns', 'delete', name]).catch(() => undefined);
    // A veth whose move failed would still be in the root namespace.
    for (const link of this.rootLinks) await run('ip', ['link', 'delete', link]).catch(() => undefined);
  }
}

/** Runs a command inside a namespace and returns its stdout. */
export async function exec(namespace: string, file: string, ...args: string[]): Promise<string> {
  const { stdout } = await run('ip', ['netns', 'exec', namespace, file, ...args], { timeout: 30_000 });
  return stdout;
}

/** Like `exec` but resolves with the exit status instead of throwing. */
export async function tryExec(namespace: string, file: string, ...args: string[]): Promise<{ ok: boolean; stdout: string }> {
  try {
    return { ok: true, stdout: await exec(namespace, file, ...args) };
  } catch (error) {
    return { ok: false, stdout: (error as { stdout?: string }).stdout ?? '' };
  }
}

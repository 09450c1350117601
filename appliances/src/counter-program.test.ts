/**
 * guest/counter.c run on the host (it is plain Linux C): absolute-time ticks,
 * catch-up after the process was stopped, persistence across SIGTERM.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GUEST_DIR } from './guest.js';
import { runTool } from './run.js';
import { sleep } from './test-support/raw-qemu.js';
import { makeTestWorkspace, type TestWorkspace } from './test-support/workspace.js';

interface Running {
  child: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}

function ticks(text: string): Array<{ gen: number; t: number }> {
  return [...text.matchAll(/^DROVER-COUNTER gen=(\d+) t=(\d+\.\d{3})$/gm)].map((m) => ({ gen: Number(m[1]), t: Number(m[2]) }));
}

describe('drover-counter program', () => {
  let ws: TestWorkspace;
  let binary: string;
  const children: ChildProcess[] = [];

  const start = (args: string[]): Running => {
    const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    return { child, out: () => out, exited };
  };

  const waitFor = async (r: Running, re: RegExp) => {
    for (let i = 0; i < 200 && !re.test(r.out()); i++) await sleep(50);
    expect(r.out()).toMatch(re);
  };

  beforeAll(async () => {
    ws = await makeTestWorkspace('counter-program');
    binary = join(ws.dir, 'drover-counter');
    await runTool('gcc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', binary, join(GUEST_DIR, 'counter.c')]);
  });
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await ws?.cleanup();
  });

  it('catches up every missed tick after a stop, then persists and resumes across SIGTERM', async () => {
    const state = join(ws.dir, 'counter.state');
    const first = start(['--state', state, '--dirty-mib', '2']);
    await waitFor(first, /gen=5 /);
    first.child.kill('SIGSTOP');
    await sleep(1000);
    const resumedAt = Date.now() / 1000;
    first.child.kill('SIGCONT');
    await waitFor(first, /gen=30 /);
    first.child.kill('SIGTERM');
    expect(await first.exited).toBe(0);

    const run1 = ticks(first.out());
    expect(run1.map((x) => x.gen)).toEqual(run1.map((_, i) => i + 1));
    // A one-second stop misses about ten ticks: they all come out at once on resume.
    const burst = run1.filter((x) => x.t >= resumedAt - 0.05 && x.t < resumedAt + 0.5);
    expect(burst.length).toBeGreaterThanOrEqual(8);
    const last = run1[run1.length - 1]!.gen;
    expect(first.out()).toContain(`DROVER-COUNTER-STOPPED gen=${last}`);
    expect(Number((await readFile(state, 'utf8')).trim())).toBe(last);

    const second = start(['--state', state]);
    await waitFor(second, new RegExp(`gen=${last + 3} `));
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
    const run2 = ticks(second.out());
    expect(run2.map((x) => x.gen)).toEqual(run2.map((_, i) => last + 1 + i));
  });

  it('refuses bad arguments', async () => {
    const r = start(['--state', join(ws.dir, 'x'), '--dirty-mib', 'lots']);
    expect(await r.exited).toBe(2);
    expect(r.out()).toMatch(/^usage: /m);
  });
});

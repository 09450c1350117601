import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'main.js');
const dataDir = mkdtempSync(path.join(os.tmpdir(), 'drover-up-'));
const pids: number[] = [];

function gone(pid: number): boolean {
  const file = `/proc/${pid}/stat`;
  return !existsSync(file) || / Z /.test(readFileSync(file, 'utf8'));
}

function qemuProcessesUnder(dir: string): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(dir) && readFileSync(`/proc/${p}/comm`, 'utf8').startsWith('qemu');
      } catch {
        return false;
      }
    })
    .map(Number);
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

afterAll(() => {
  for (const pid of [...pids, ...qemuProcessesUnder(dataDir)]) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  rmSync(dataDir, { recursive: true, force: true });
});

describe('drover up, tried as a new user would', () => {
  it('up → create a web VM → start → fetch its page → stop → delete → down, leaving nothing behind', async () => {
    const { stdout } = await run(process.execPath, [cli, 'up', '--data-dir', dataDir, '--port', '0', '--detach', '--json'], { timeout: 300_000 });
    const info = JSON.parse(stdout) as { url: string; token: string; dataDir: string; pid: number; agentPid: number; appliances: string[] };
    pids.push(info.pid, info.agentPid);
    expect(info.dataDir).toBe(dataDir);
    expect(info.appliances.map((a) => a.split('-')[0])).toEqual(expect.arrayContaining(['web', 'db', 'counter']));

    const env = { ...process.env, DROVER_URL: info.url, DROVER_TOKEN: info.token };
    const drover = (...args: string[]) => run(process.execPath, [cli, ...args], { env, timeout: 180_000 });
    const port = await freePort();
    await drover('vm', 'create', 'web-1', '--image', 'web', '--memory', '128M', '--forward', `${port}:80`);
    await drover('vm', 'start', 'web-1');
    const shown = JSON.parse((await drover('vm', 'show', 'web-1', '--json')).stdout) as { state: string; hostName: string };
    expect(shown).toMatchObject({ state: 'running', hostName: 'local' });
    let page = '';
    for (const deadline = Date.now() + 90_000; Date.now() < deadline && !page.includes('web-1'); ) {
      page = await fetch(`http://127.0.0.1:${port}/`).then((r) => r.text()).catch(() => '');
      if (!page.includes('web-1')) await new Promise((r) => setTimeout(r, 250));
    }
    expect(page).toContain('web-1');
    await drover('vm', 'stop', 'web-1');
    await drover('vm', 'delete', 'web-1');
    const list = JSON.parse((await drover('vm', 'list', '--json')).stdout) as { items?: unknown[] } | unknown[];
    expect(Array.isArray(list) ? list : (list.items ?? [])).toEqual([]);

    // A second `up` on the same data directory is refused with a clear message.
    const again = await run(process.execPath, [cli, 'up', '--data-dir', dataDir, '--port', '0', '--detach']).catch((e: { code: number; stderr: string }) => e);
    expect((again as { code: number }).code).toBe(4);
    expect((again as { stderr: string }).stderr).toMatch(/already up/);

    await run(process.execPath, [cli, 'down', '--data-dir', dataDir, '--json'], { timeout: 120_000 });
    expect(gone(info.pid)).toBe(true);
    expect(gone(info.agentPid)).toBe(true);
    expect(qemuProcessesUnder(dataDir)).toEqual([]);
    expect(existsSync(path.join(dataDir, 'drover-up.json'))).toBe(false);
  });

  it('in the foreground, stays up until Ctrl-C and then stops everything it started', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'drover-upfg-'));
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, [cli, 'up', '--data-dir', dir, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      for (const deadline = Date.now() + 180_000; !out.includes('Press Ctrl-C'); ) {
        if (child.exitCode !== null) throw new Error(`drover up exited early (${child.exitCode}): ${out}`);
        if (Date.now() > deadline) throw new Error('drover up did not come up');
        await new Promise((r) => setTimeout(r, 100));
      }
      const info = JSON.parse(readFileSync(path.join(dir, 'drover-up.json'), 'utf8')) as { pid: number; agentPid: number };
      pids.push(info.pid, info.agentPid);
      // Still there a moment later: nothing but the wait keeps the CLI alive.
      await new Promise((r) => setTimeout(r, 1_000));
      expect(child.exitCode).toBeNull();
      child.kill('SIGINT');
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
      expect(code).toBe(0);
      expect(gone(info.pid)).toBe(true);
      expect(gone(info.agentPid)).toBe(true);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('prints help', async () => {
    const { stdout } = await run(process.execPath, [cli, '--help']);
    expect(stdout).toMatch(/up \[options\]\s+Start Drover/);
  });
});

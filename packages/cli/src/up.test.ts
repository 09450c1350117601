import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'main.js');
const dataDir = mkdtempSync(path.join(os.tmpdir(), 'drover-up-'));
let agentPid: number | undefined;

afterAll(() => {
  if (agentPid) {
    try {
      process.kill(agentPid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  rmSync(dataDir, { recursive: true, force: true });
});

describe('drover up / down', () => {
  it('starts a host with the demo appliances, answers with the printed token, and stops cleanly', async () => {
    const { stdout } = await run(process.execPath, [cli, 'up', '--data-dir', dataDir, '--port', '0', '--detach', '--json'], {
      env: { ...process.env },
      timeout: 300_000,
    });
    const info = JSON.parse(stdout) as { url: string; token: string; dataDir: string; pid: number; appliances: string[] };
    agentPid = info.pid;
    expect(info.dataDir).toBe(dataDir);
    expect(info.appliances.map((a) => a.split('-')[0])).toEqual(expect.arrayContaining(['web', 'db', 'counter']));

    const host = await fetch(`${info.url}/v1/host`, { headers: { authorization: `Bearer ${info.token}` } });
    expect(host.status).toBe(200);
    const volumes = (await (await fetch(`${info.url}/v1/pools/default/volumes`, { headers: { authorization: `Bearer ${info.token}` } })).json()) as Array<{ name: string }>;
    expect(volumes.some((v) => /^web-.*\.root\.qcow2$/.test(v.name))).toBe(true);

    // A second `up` on the same data directory is refused with a clear message.
    const again = await run(process.execPath, [cli, 'up', '--data-dir', dataDir, '--port', '0', '--detach'], { timeout: 60_000 }).catch((e: { code: number; stderr: string }) => e);
    expect((again as { code: number }).code).toBe(4);
    expect((again as { stderr: string }).stderr).toMatch(/already up/);

    const down = await run(process.execPath, [cli, 'down', '--data-dir', dataDir, '--json'], { timeout: 60_000 });
    expect(JSON.parse(down.stdout)).toMatchObject({ dataDir });
    const stat = existsSync(`/proc/${info.pid}/stat`) ? readFileSync(`/proc/${info.pid}/stat`, 'utf8') : '';
    expect(stat === '' || / Z /.test(stat)).toBe(true);
    agentPid = undefined;
    // Everything it made lives inside the data directory.
    expect(existsSync(path.join(dataDir, 'drover-up.json'))).toBe(false);
    expect(readdirSync(dataDir)).toEqual(expect.arrayContaining(['agent', 'agent.log']));
  });

  it('prints help', async () => {
    const { stdout } = await run(process.execPath, [cli, '--help']);
    expect(stdout).toMatch(/up \[options\]\s+Start Drover/);
  });
});

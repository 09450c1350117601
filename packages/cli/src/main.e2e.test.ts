import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { closedPort, FakeManager } from './fake-manager.js';

/**
 * The built `drover` binary as a subprocess, the way scripts run it: exit codes,
 * one JSON document on stdout, one line on stderr. Built by `npx tsc -b packages/cli`.
 */

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'main.js');
const home = mkdtempSync(path.join(os.tmpdir(), 'drover-cli-e2e-'));
let manager: FakeManager;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

function drover(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const started = Date.now();
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [cli, ...argv],
      { env: { PATH: process.env.PATH, HOME: home, XDG_CONFIG_HOME: path.join(home, 'xdg'), DROVER_URL: manager.url, DROVER_TOKEN: manager.token, ...env }, timeout: 30_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
        resolve({ code, stdout, stderr, ms: Date.now() - started });
      },
    );
  });
}

beforeAll(async () => {
  if (!existsSync(cli)) throw new Error(`${cli} is missing: build it first with "npx tsc -b packages/cli"`);
  manager = await new FakeManager().start();
});
afterAll(async () => {
  await manager.close();
  rmSync(home, { recursive: true, force: true });
});
beforeEach(() => {
  manager.vms.clear();
  manager.clearOverrides();
  manager.nextScript = [
    { state: 'running', phase: 'booting', progress: 50 },
    { state: 'done', phase: 'finished', progress: 100 },
  ];
});

describe('drover (subprocess)', () => {
  it('lists VMs as one JSON document and exits 0 promptly', async () => {
    manager.addVm('web1', { state: 'running', hostName: 'h1' });
    const result = await drover(['vm', 'list', '--json']);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect((JSON.parse(result.stdout) as { items: Array<{ name: string }> }).items.map((vm) => vm.name)).toEqual(['web1']);
    expect(result.ms).toBeLessThan(10_000);
  });

  it('exits 3, 5 and 6 with one line on stderr', async () => {
    expect(await drover(['vm', 'show', 'nope'])).toMatchObject({ code: 3, stdout: '', stderr: 'drover: VM "nope" does not exist\n' });
    expect(await drover(['vm', 'list'], { DROVER_TOKEN: 'wrong' })).toMatchObject({ code: 5, stderr: 'drover: Missing or invalid API token\n' });
    const down = await drover(['vm', 'list', '--json'], { DROVER_URL: `http://127.0.0.1:${await closedPort()}` });
    expect(down.code).toBe(6);
    expect(down.stdout).toBe('');
    expect(JSON.parse(down.stderr).error).toMatchObject({ code: 'unavailable', message: expect.stringContaining('Cannot reach the manager') });
  });

  it('waits for an action and exits with the code of its failure', async () => {
    manager.addVm('web1');
    const ok = await drover(['vm', 'start', 'web1']);
    expect(ok).toMatchObject({ code: 0, stdout: 'Started VM web1.\n' });
    expect(ok.stderr).toContain('start web1: running, booting (50%)');

    manager.nextScript = [{ state: 'failed', phase: 'placing', progress: 0, error: { code: 'conflict', message: 'No host has 64 GiB free', details: {} } }];
    const failed = await drover(['vm', 'start', 'web1', '--json']);
    expect(failed.code).toBe(4);
    expect(failed.stdout).toBe('');
    expect(JSON.parse(failed.stderr).error).toMatchObject({ code: 'conflict', message: 'No host has 64 GiB free' });
  });

  it('prints the operation at once with --no-wait', async () => {
    manager.addVm('web1');
    const result = await drover(['vm', 'stop', 'web1', '--force', '--no-wait', '--json']);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ kind: 'vm.force-off', state: 'pending' });
  });

  it('resolves the URL and token: flag > environment > config file', async () => {
    manager.addVm('web1');
    const xdg = path.join(home, 'xdg-precedence');
    const env = { XDG_CONFIG_HOME: xdg, DROVER_URL: '', DROVER_TOKEN: '' };
    expect((await drover(['config', 'set', 'url', manager.url], env)).code).toBe(0);
    expect((await drover(['config', 'set', 'token', manager.token], env)).code).toBe(0);
    expect((await drover(['vm', 'list'], env)).code).toBe(0);
    const deadUrl = `http://127.0.0.1:${await closedPort()}`;
    expect((await drover(['vm', 'list'], { ...env, DROVER_URL: deadUrl })).code).toBe(6);
    expect((await drover(['vm', 'list', '--url', manager.url], { ...env, DROVER_URL: deadUrl })).code).toBe(0);
    expect((await drover(['vm', 'list'], { ...env, DROVER_TOKEN: 'wrong' })).code).toBe(5);
    expect((await drover(['--token', manager.token, 'vm', 'list'], { ...env, DROVER_TOKEN: 'wrong' })).code).toBe(0);
  });

  it('keeps "up" and "down" and documents every noun in --help', async () => {
    const help = await drover(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/up \[options\]\s+Start Drover/);
    expect(help.stdout).toMatch(/down \[options\]\s+Stop the VMs/);
    for (const noun of ['vm', 'host', 'image', 'op', 'config', 'completion']) expect(help.stdout).toMatch(new RegExp(`\\n  ${noun}\\b`));
    expect((await drover(['--version'])).stdout).toBe('0.1.0\n');
    expect((await drover(['bogus'])).code).toBe(2);
  });

  it('completes VM names in bash through the manager', async () => {
    manager.addVm('alpha');
    manager.addVm('beta');
    const script = (await drover(['completion', 'bash'])).stdout;
    const program = `${script}
drover() { "${process.execPath}" "${cli}" "$@"; }
COMP_WORDS=(drover vm start '')
COMP_CWORD=3
_drover
printf '%s\\n' "\${COMPREPLY[@]}"`;
    const result = await new Promise<string>((resolve, reject) =>
      execFile('bash', ['--norc', '--noprofile', '-c', program], { env: { PATH: process.env.PATH, HOME: home, DROVER_URL: manager.url, DROVER_TOKEN: manager.token } }, (error, stdout) =>
        error ? reject(error) : resolve(stdout),
      ),
    );
    expect(result.split('\n').filter(Boolean)).toEqual(['alpha', 'beta']);
  });
});

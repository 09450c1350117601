import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './cli.js';
import { makeTestWorkspace, type TestWorkspace } from './test-support/workspace.js';

async function run(argv: string[]) {
  let out = '';
  let err = '';
  const code = await runCli(argv, { out: (t) => (out += t), err: (t) => (err += t) });
  return { code, out, err };
}

describe('drover-appliances CLI', () => {
  let ws: TestWorkspace;
  beforeAll(async () => {
    ws = await makeTestWorkspace('cli');
  });
  afterAll(async () => {
    await ws?.cleanup();
  });

  it('prints its usage with --help', async () => {
    const r = await run(['--help']);
    expect(r.code).toBe(0);
    expect(r.out).toContain('Usage: drover-appliances build [--cache-dir DIR] [--json] [NAME...]');
  });

  it('rejects unknown commands, options and names with exit code 2 and one line', async () => {
    for (const argv of [['frob'], ['build', '--fast'], ['build', 'mail'], ['build', '--cache-dir']]) {
      const r = await run(argv);
      expect(r.code).toBe(2);
      expect(r.err.trim().split('\n')).toHaveLength(1);
      expect(r.out).toBe('');
    }
  });

  it('builds the named appliances and prints their paths as JSON or text', async () => {
    const json = await run(['build', '--cache-dir', ws.cacheDir, '--json', 'web', 'probe']);
    expect(json.code).toBe(0);
    const parsed = JSON.parse(json.out) as {
      cacheDir: string;
      appliances: Record<string, { rootDisk: string; version: string }>;
      probe: { expect: string };
    };
    expect(parsed.cacheDir).toBe(ws.cacheDir);
    expect(Object.keys(parsed.appliances)).toEqual(['web']);
    expect(parsed.appliances.web!.rootDisk.startsWith(ws.cacheDir)).toBe(true);
    expect(parsed.probe.expect).toBe('DROVER-PROBE-OK');

    const text = await run(['build', `--cache-dir=${ws.cacheDir}`, 'web']);
    expect(text.code).toBe(0);
    expect(text.out).toContain('web 1.0.0');
    expect(text.out).toContain(`rootDisk     ${parsed.appliances.web!.rootDisk}`);
  });
});

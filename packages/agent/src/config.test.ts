import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadAgentConfig } from './config.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'drover-cfg-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('loadAgentConfig', () => {
  it('layers defaults, file and environment', () => {
    const file = path.join(dir, 'agent.yaml');
    writeFileSync(file, 'listen: 127.0.0.1:9000\ncapacity: { cpus: 3, memoryMiB: 2048 }\n');
    const config = loadAgentConfig({ file, env: { DROVER_AGENT_LISTEN: '127.0.0.1:9100', DROVER_AGENT_STATE_DIR: '/srv/a' } });
    expect(config.listen).toBe('127.0.0.1:9100');
    expect(config.capacity).toEqual({ cpus: 3, memoryMiB: 2048 });
    expect(config.stateDir).toBe('/srv/a');
    expect(config.pools[0]?.path).toBe('/srv/a/pools/default');
  });
  it('names the bad key', () => {
    const file = path.join(dir, 'bad.yaml');
    writeFileSync(file, 'capacity: { cpus: -2, memoryMiB: 2048 }\n');
    expect(() => loadAgentConfig({ file, env: {} })).toThrow(/"capacity.cpus"/);
    writeFileSync(file, 'colour: blue\n');
    expect(() => loadAgentConfig({ file, env: {} })).toThrow(/"colour"/);
  });
});

describe('loadOrCreateSecret', () => {
  it('makes a 0600 secret once and reads the same one afterwards', async () => {
    const { loadOrCreateSecret } = await import('./layered-config.js');
    const { statSync } = await import('node:fs');
    const file = path.join(dir, 'secret');
    const first = await loadOrCreateSecret(file);
    expect(first.length).toBeGreaterThanOrEqual(32);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(await loadOrCreateSecret(file)).toBe(first);
    expect(await loadOrCreateSecret(file, 'configured-secret-value')).toBe('configured-secret-value');
  });
  it('names a file that is not YAML', () => {
    const file = path.join(dir, 'broken.yaml');
    writeFileSync(file, 'listen: [unclosed\n');
    expect(() => loadAgentConfig({ file, env: {} })).toThrow(/not valid YAML/);
  });
});

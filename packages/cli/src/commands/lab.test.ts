import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { rejectionOf } from '@drover/core';
import { deployBody, labTable } from './lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'drover-cli-lab-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('drover lab', () => {
  it('deploys exactly one of --package, --example and --file', async () => {
    expect(await deployBody('class1', { example: 'web-db', wait: true })).toEqual({ name: 'class1', example: 'web-db' });
    expect(await deployBody('class1', { package: 'p1', project: 'red', healthTimeout: '60', wait: true })).toEqual({ name: 'class1', package: 'p1', project: 'red', healthTimeoutSeconds: 60 });
    expect((await rejectionOf(deployBody('class1', { wait: true }))).message).toMatch(/exactly one of/);
    expect((await rejectionOf(deployBody('class1', { example: 'a', package: 'b', wait: true }))).message).toMatch(/exactly one of/);
    expect((await rejectionOf(deployBody('class1', { example: 'a', healthTimeout: 'soon', wait: true }))).message).toMatch(/--health-timeout/);
  });

  it('reads a manifest file as JSON or YAML, and refuses what is neither', async () => {
    writeFileSync(path.join(dir, 'lab.json'), JSON.stringify({ name: 'm', networks: [], vms: [{ name: 'a', image: 'web' }] }));
    writeFileSync(path.join(dir, 'lab.yaml'), 'name: m\nnetworks: []\nvms:\n  - name: a\n    image: web\n');
    writeFileSync(path.join(dir, 'bad.yaml'), 'name: [unclosed\n');
    const expected = { name: 'class1', manifest: { name: 'm', networks: [], vms: [{ name: 'a', image: 'web' }] } };
    expect(await deployBody('class1', { file: 'lab.json', wait: true }, dir)).toEqual(expected);
    expect(await deployBody('class1', { file: 'lab.yaml', wait: true }, dir)).toEqual(expected);
    expect((await rejectionOf(deployBody('class1', { file: 'bad.yaml', wait: true }, dir))).message).toMatch(/neither JSON nor YAML/);
    expect((await rejectionOf(deployBody('class1', { file: 'missing.json', wait: true }, dir))).message).toMatch(/Cannot read the lab manifest "missing.json"/);
  });

  it('lists labs with their state and VMs', () => {
    const table = labTable([
      { id: 'x', name: 'class1', state: 'running', source: { kind: 'example', ref: 'web-db' }, manifestName: 'web-db', manifestVersion: '1.0.0', networkMode: 'networks', networks: [{ name: 'lan', network: 'class1-lan', kind: 'isolated', subnet: '10.213.0.0/24' }], securityGroups: [], vms: [{ name: 'db-1', vmId: null, vm: 'class1-db-1', state: 'running', order: 0, addresses: [], endpoints: [] }], labels: {}, updatePolicy: 'pinned', owner: 'admin', lastError: null, rev: 1, createdAt: '', updatedAt: '' },
    ]);
    expect(table).toMatch(/class1\s+running\s+example web-db\s+1\/1 running\s+class1-lan 10\.213\.0\.0\/24\s+networks/);
  });
});

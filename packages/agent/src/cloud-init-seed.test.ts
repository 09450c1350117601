import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VmInfo, VmSpec } from '@drover/api';
import { seedDigest, seedFiles, writeSeedIso } from './cloud-init-seed.js';
import { importAppliance, startTestAgent, tempDir, type ImportedAppliance, type TestAgent } from './testing/harness.js';

/** A file of an ISO 9660 image, read with isoinfo through its Rock Ridge name. */
function isoFile(iso: string, name: string): string {
  return execFileSync('isoinfo', ['-R', '-i', iso, '-x', `/${name}`]).toString('utf8');
}

function volumeLabel(iso: string): string {
  // The primary volume descriptor (sector 16) holds the volume identifier at offset 40, 32 bytes.
  return readFileSync(iso).toString('latin1', 0x8000 + 40, 0x8000 + 72).trim();
}

describe('NoCloud seed files', () => {
  const dir = tempDir('seed');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('defaults meta-data to the VM id and name, and keeps given files as they are', () => {
    expect(seedFiles({ userData: '#!/bin/sh\n' }, { id: 'id-1', name: 'web-1' })).toEqual({ 'user-data': '#!/bin/sh\n', 'meta-data': 'instance-id: id-1\nlocal-hostname: web-1\n' });
    const given = seedFiles({ userData: 'u', metaData: 'm', networkConfig: 'n' }, { id: 'x', name: 'y' });
    expect(given).toEqual({ 'user-data': 'u', 'meta-data': 'm', 'network-config': 'n' });
    expect(seedDigest(given)).toBe(seedDigest({ 'network-config': 'n', 'meta-data': 'm', 'user-data': 'u' }));
    expect(seedDigest(given)).not.toBe(seedDigest({ ...given, 'user-data': 'v' }));
  });

  it('writes an ISO labelled cidata with the files, group-readable only, and leaves nothing else', async () => {
    const iso = path.join(dir, 'cidata.iso');
    await writeSeedIso(iso, { 'user-data': '#!/bin/sh\necho hi\n', 'meta-data': 'instance-id: a\n', 'network-config': 'version: 2\n' }, 0);
    expect(volumeLabel(iso)).toBe('cidata');
    expect(isoFile(iso, 'user-data')).toBe('#!/bin/sh\necho hi\n');
    expect(isoFile(iso, 'meta-data')).toBe('instance-id: a\n');
    expect(isoFile(iso, 'network-config')).toBe('version: 2\n');
    expect(statSync(iso).mode & 0o777).toBe(0o640);
    expect(readdirSync(dir)).toEqual(['cidata.iso']);
    // Rewritten whole: the new content replaces the old one.
    await writeSeedIso(iso, { 'user-data': 'second', 'meta-data': 'instance-id: b\n' }, 0);
    expect(isoFile(iso, 'user-data')).toBe('second');
    expect(readdirSync(dir)).toEqual(['cidata.iso']);
  });
});

describe('a VM with cloud-init on the agent', () => {
  let t: TestAgent;
  let appliance: ImportedAppliance;
  beforeAll(async () => {
    t = await startTestAgent();
    appliance = await importAppliance(t.client, 'counter');
  });
  afterAll(async () => t?.dispose());

  it('builds the seed at define, rebuilds it when the cloud-init or the name changes, removes it with the cloud-init', async () => {
    await t.client.createVolume('default', { name: 'ci.root.qcow2', cloneOf: appliance.root });
    const spec: VmSpec = {
      name: 'ci',
      cpus: 1,
      memoryMiB: 128,
      disks: [{ pool: 'default', volume: 'ci.root.qcow2' }],
      boot: { kind: 'kernel', kernel: { pool: 'default', volume: appliance.kernel }, initrd: { pool: 'default', volume: appliance.initrd }, cmdline: appliance.artifacts.cmdline },
      cloudInit: { userData: '#!/bin/sh\necho one\n' },
    };
    const vm = await t.client.ok<VmInfo>('POST', '/v1/vms', spec);
    const seed = path.join(t.stateDir, 'vms', vm.id, 'cidata.iso');
    expect(isoFile(seed, 'user-data')).toBe('#!/bin/sh\necho one\n');
    expect(isoFile(seed, 'meta-data')).toBe(`instance-id: ${vm.id}\nlocal-hostname: ci\n`);
    expect(statSync(seed).gid).toBe(statSync(path.dirname(seed)).gid);

    await t.client.ok('PUT', `/v1/vms/${vm.id}`, { ...spec, name: 'ci-renamed', cloudInit: { userData: 'two' } });
    expect(isoFile(seed, 'user-data')).toBe('two');
    expect(isoFile(seed, 'meta-data')).toContain('local-hostname: ci-renamed');

    await t.client.ok('PUT', `/v1/vms/${vm.id}`, { ...spec, name: 'ci-renamed', cloudInit: undefined });
    expect(existsSync(seed)).toBe(false);

    // Too large a user-data is refused by the schema, and changes nothing.
    const refused = await t.client.request('PUT', `/v1/vms/${vm.id}`, { ...spec, cloudInit: { userData: 'x'.repeat(65537) } });
    expect(refused.status).toBe(400);
    expect(existsSync(seed)).toBe(false);
    await t.client.ok('DELETE', `/v1/vms/${vm.id}`);
  });
});

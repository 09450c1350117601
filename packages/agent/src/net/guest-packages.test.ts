import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { GuestPackageStore } from './guest-packages.js';
import type { NicBinding } from './firewall-model.js';

const dir = mkdtempSync(path.join(tmpdir(), 'drover-guest-pkgs-'));
const store = new GuestPackageStore(dir);
const archive = Buffer.from('not really a tar.gz, the agent only checks the hash');
const sha256 = createHash('sha256').update(archive).digest('hex');
const nic: NicBinding = { vm: 'web-1', nic: 'eth0', network: 'pk', tap: 'dtweb1', mac: '52:54:00:00:00:01', ip: '10.0.0.10', groups: [] };

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the guest package store of a host', () => {
  it('refuses an archive whose bytes are not the named sha256, and keeps nothing of it', async () => {
    await expect(store.putArchive('0'.repeat(64), Readable.from([archive]))).rejects.toMatchObject({ code: 'invalid', message: expect.stringMatching(/sha256 is [0-9a-f]{64}, not 0{64}/) });
    expect(readdirSync(path.join(dir, 'cache'))).toEqual([]);
    await expect(store.putArchive('../../etc', Readable.from([archive]))).rejects.toMatchObject({ code: 'invalid' });
    expect(await store.putArchive(sha256, Readable.from([archive]))).toEqual({ sha256, sizeBytes: archive.length });
    expect(store.hasArchive(sha256, archive.length)).toBe(true);
  });

  it('takes an offer only for archives it has, and finds it for a NIC by VM id, VM name or the resolver', async () => {
    const missing = { vmName: 'web-1', packages: [{ name: 'other', version: '1', sha256: 'a'.repeat(64), sizeBytes: 3 }] };
    await expect(store.putOffer('vm-id-1', missing)).rejects.toMatchObject({ code: 'conflict' });
    expect(store.offer('vm-id-1')).toBeUndefined();
    const offer = { vmName: 'web-1', packages: [{ name: 'motd', version: '1.0', sha256, sizeBytes: archive.length }] };
    await store.putOffer('vm-id-1', offer);
    expect(store.offerForNic(nic)).toEqual({ vm: 'vm-id-1', offer });
    expect(store.offerForNic({ ...nic, vm: 'vm-id-1' })).toEqual({ vm: 'vm-id-1', offer });
    expect(store.offerForNic({ ...nic, vm: 'web-2' })).toBeUndefined();
    expect(store.offerForNic({ ...nic, vm: 'web-2' }, () => 'vm-id-1')).toEqual({ vm: 'vm-id-1', offer });
    expect(store.archiveFor(offer, sha256)?.size).toBe(archive.length);
    expect(store.archiveFor({ vmName: 'x', packages: [] }, sha256)).toBeUndefined();
  });

  it('records a report of NAME VERSION lines and refuses anything else whole', async () => {
    await expect(store.report('vm-id-1', 'motd 1.0\nrm -rf /\n')).rejects.toMatchObject({ code: 'invalid' });
    expect(store.state('vm-id-1')).toMatchObject({ installed: [], reportedAt: null });
    await store.report('vm-id-1', 'motd 1.0\n');
    expect(store.state('vm-id-1')).toMatchObject({ offer: { vmName: 'web-1' }, installed: [{ name: 'motd', version: '1.0' }], reportedAt: expect.any(String) });
    await store.deleteOffer('vm-id-1');
    expect(store.state('vm-id-1').offer).toBeNull();
  });
});

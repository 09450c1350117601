import { rejectionOf } from '@drover/core';
import { describe, expect, it } from 'vitest';
import { parseFeed, renderFeed } from './feed.js';
import { canonicalManifest, keyIdOf, newPublisherKey, signBytes, verifyBytes, type ReleaseManifest } from './manifest.js';
import { compareVersions, inWindow } from './vmcast.service.js';

const manifest: ReleaseManifest = {
  channel: 'web',
  name: 'webapp',
  version: '2.0',
  architecture: 'x86_64',
  format: 'qcow2',
  bootMethod: 'appliance-kernel',
  sha256: 'a'.repeat(64),
  sizeBytes: 1234,
  minMemoryMiB: 96,
  minCpus: 1,
  labels: { app: 'web & <co>' },
};

describe('vmcast manifests and feeds', () => {
  it('signs the canonical manifest: key order does not matter, any change does', () => {
    const key = newPublisherKey();
    expect(key.keyId).toBe(keyIdOf(key.publicKey));
    const reordered = Object.fromEntries(Object.entries(manifest).reverse()) as unknown as ReleaseManifest;
    expect(canonicalManifest(reordered).equals(canonicalManifest(manifest))).toBe(true);
    const signature = signBytes(canonicalManifest(manifest), key.privateKey);
    expect(verifyBytes(canonicalManifest(reordered), signature, key.publicKey)).toBe(true);
    expect(verifyBytes(canonicalManifest({ ...manifest, sizeBytes: 1235 }), signature, key.publicKey)).toBe(false);
    expect(verifyBytes(canonicalManifest(manifest), signature, newPublisherKey().publicKey)).toBe(false);
    expect(verifyBytes(canonicalManifest(manifest), 'not base64 at all', key.publicKey)).toBe(false);
  });

  it('renders RSS 2.0 with an enclosure and reads it back, escaping text', () => {
    const xml = renderFeed({ name: 'web', title: 'Web & co', description: 'd', link: 'http://x/' }, [{ keyId: 'b'.repeat(64), state: 'revoked' }], [
      { manifest, url: 'http://pub/img?a=1&b=2', length: 1234, keyId: 'c'.repeat(64), signature: 'c2ln' },
    ]);
    expect(xml).toContain('<enclosure url="http://pub/img?a=1&amp;b=2" length="1234" type="application/x-qemu-disk"/>');
    const feed = parseFeed(xml);
    expect(feed.title).toBe('Web & co');
    expect(feed.keys).toEqual([{ keyId: 'b'.repeat(64), state: 'revoked' }]);
    expect(feed.malformed).toEqual([]);
    expect(feed.items).toEqual([{ manifest, url: 'http://pub/img?a=1&b=2', length: 1234, keyId: 'c'.repeat(64), signature: 'c2ln' }]);
  });

  it('reports items missing a field, refuses DOCTYPEs and non-RSS documents', async () => {
    const xml = renderFeed({ name: 'web', title: 't', description: 'd', link: 'l' }, [], [{ manifest, url: 'http://pub/i', length: 1234, keyId: 'c'.repeat(64), signature: 's' }]).replace(/<vmcast:sha256>.*<\/vmcast:sha256>/, '');
    expect(parseFeed(xml).malformed).toEqual([{ title: 'webapp 2.0', reason: 'it has no <vmcast:sha256>' }]);
    expect((await rejectionOf((async () => parseFeed('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><rss/>'))())).message).toMatch(/DOCTYPE or entities/);
    expect((await rejectionOf((async () => parseFeed('<html><body/></html>'))())).message).toMatch(/not an RSS 2.0 document/);
  });

  it('compares versions and maintenance windows', () => {
    expect(compareVersions('2.10', '2.9')).toBeGreaterThan(0);
    expect(compareVersions('1.0', '1')).toBe(0);
    expect(inWindow(undefined)).toBe(true);
    expect(inWindow('02:00-04:00', new Date('2026-01-01T03:00:00Z'))).toBe(true);
    expect(inWindow('02:00-04:00', new Date('2026-01-01T05:00:00Z'))).toBe(false);
    expect(inWindow('22:00-02:00', new Date('2026-01-01T01:00:00Z'))).toBe(true);
  });
});

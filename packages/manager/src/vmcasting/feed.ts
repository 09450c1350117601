import { XMLParser } from 'fast-xml-parser';
import { errors } from '@drover/core';
import type { EvaReleaseManifest, PackageManifest, ReleaseManifest, SignedFileManifest } from './manifest.js';

/** The namespace of Drover's RSS extension. */
export const vmcastNamespace = 'https://drover.dev/ns/vmcast/1';
/** The enclosure type of a qcow2 appliance image. */
export const enclosureType = 'application/x-qemu-disk';
/** The enclosure type of a package (tar.gz). */
export const packageEnclosureType = 'application/gzip';
/** The enclosure type of an appliance package (an `.eva` file; `evaMediaType` of @drover/api). */
export const evaEnclosureType = 'application/vnd.drover.eva+tar';

/** An appliance package item: `<vmcast:kind>eva</vmcast:kind>`. */
export interface EvaFeedItem {
  manifest: EvaReleaseManifest;
  url: string;
  length: number;
  keyId: string;
  signature: string;
  pubDate?: string;
}

/** A package item: `<vmcast:kind>package</vmcast:kind>` tells it from a release. */
export interface PackageFeedItem {
  manifest: PackageManifest;
  url: string;
  length: number;
  keyId: string;
  signature: string;
  pubDate?: string;
}

export interface FeedItem {
  manifest: ReleaseManifest;
  url: string;
  /** The enclosure's `length` attribute, as given. */
  length: number;
  keyId: string;
  signature: string;
  pubDate?: string;
}

/** A publisher key the feed announces: a new key endorsed by an older one, or a revoked one. */
export interface FeedKey {
  keyId: string;
  publicKey?: string;
  state: 'active' | 'retired' | 'revoked';
  endorsedBy?: string;
  endorsement?: string;
}

export interface ParsedFeed {
  title: string;
  keys: FeedKey[];
  items: FeedItem[];
  packages: PackageFeedItem[];
  /** Appliance packages (`.eva`). */
  evas: EvaFeedItem[];
  /** Items that could not be read at all, with the reason (a missing field, ...). */
  malformed: Array<{ title: string; reason: string }>;
}

const escape = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** An RSS 2.0 feed of a channel: one item per release, newest first, with an `<enclosure>` old readers understand. */
export function renderFeed(channel: { name: string; title: string; description: string; link: string }, keys: FeedKey[], items: FeedItem[], packages: PackageFeedItem[] = [], evas: EvaFeedItem[] = []): string {
  const lines = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<rss version="2.0" xmlns:vmcast="${vmcastNamespace}">`,
    '<channel>',
    `<title>${escape(channel.title)}</title>`,
    `<link>${escape(channel.link)}</link>`,
    `<description>${escape(channel.description)}</description>`,
    `<vmcast:channel>${escape(channel.name)}</vmcast:channel>`,
  ];
  for (const key of keys) {
    const attrs = [`keyId="${key.keyId}"`, `state="${key.state}"`, ...(key.endorsedBy ? [`endorsedBy="${key.endorsedBy}"`, `endorsement="${escape(key.endorsement ?? '')}"`] : [])];
    lines.push(`<vmcast:key ${attrs.join(' ')}>${key.publicKey ? escape(key.publicKey) : ''}</vmcast:key>`);
  }
  for (const item of items) {
    const m = item.manifest;
    lines.push(
      '<item>',
      `<title>${escape(`${m.name} ${m.version}`)}</title>`,
      `<guid isPermaLink="false">sha256:${m.sha256}</guid>`,
      ...(item.pubDate ? [`<pubDate>${new Date(item.pubDate).toUTCString()}</pubDate>`] : []),
      `<enclosure url="${escape(item.url)}" length="${item.length}" type="${enclosureType}"/>`,
      `<vmcast:name>${escape(m.name)}</vmcast:name>`,
      `<vmcast:version>${escape(m.version)}</vmcast:version>`,
      `<vmcast:architecture>${escape(m.architecture)}</vmcast:architecture>`,
      `<vmcast:format>${m.format}</vmcast:format>`,
      `<vmcast:bootMethod>${m.bootMethod}</vmcast:bootMethod>`,
      `<vmcast:sha256>${m.sha256}</vmcast:sha256>`,
      `<vmcast:size>${m.sizeBytes}</vmcast:size>`,
      `<vmcast:minMemoryMiB>${m.minMemoryMiB}</vmcast:minMemoryMiB>`,
      `<vmcast:minCpus>${m.minCpus}</vmcast:minCpus>`,
      `<vmcast:labels>${escape(JSON.stringify(m.labels))}</vmcast:labels>`,
      `<vmcast:signature keyId="${item.keyId}" algorithm="ed25519">${item.signature}</vmcast:signature>`,
      '</item>',
    );
  }
  for (const item of packages) {
    const m = item.manifest;
    lines.push(
      '<item>',
      `<title>${escape(`${m.name} ${m.version} (package)`)}</title>`,
      `<guid isPermaLink="false">package:sha256:${m.sha256}</guid>`,
      ...(item.pubDate ? [`<pubDate>${new Date(item.pubDate).toUTCString()}</pubDate>`] : []),
      `<enclosure url="${escape(item.url)}" length="${item.length}" type="${packageEnclosureType}"/>`,
      '<vmcast:kind>package</vmcast:kind>',
      `<vmcast:name>${escape(m.name)}</vmcast:name>`,
      `<vmcast:version>${escape(m.version)}</vmcast:version>`,
      `<vmcast:description>${escape(m.description)}</vmcast:description>`,
      `<vmcast:sha256>${m.sha256}</vmcast:sha256>`,
      `<vmcast:size>${m.sizeBytes}</vmcast:size>`,
      `<vmcast:signature keyId="${item.keyId}" algorithm="ed25519">${item.signature}</vmcast:signature>`,
      '</item>',
    );
  }
  for (const item of evas) {
    const m = item.manifest;
    lines.push(
      '<item>',
      `<title>${escape(`${m.name} ${m.version} (appliance package)`)}</title>`,
      `<guid isPermaLink="false">eva:sha256:${m.sha256}</guid>`,
      ...(item.pubDate ? [`<pubDate>${new Date(item.pubDate).toUTCString()}</pubDate>`] : []),
      `<enclosure url="${escape(item.url)}" length="${item.length}" type="${evaEnclosureType}"/>`,
      '<vmcast:kind>eva</vmcast:kind>',
      `<vmcast:name>${escape(m.name)}</vmcast:name>`,
      `<vmcast:version>${escape(m.version)}</vmcast:version>`,
      `<vmcast:description>${escape(m.description)}</vmcast:description>`,
      `<vmcast:sha256>${m.sha256}</vmcast:sha256>`,
      `<vmcast:size>${m.sizeBytes}</vmcast:size>`,
      `<vmcast:signature keyId="${item.keyId}" algorithm="ed25519">${item.signature}</vmcast:signature>`,
      '</item>',
    );
  }
  lines.push('</channel>', '</rss>');
  return lines.join('\n') + '\n';
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  // Entities are never expanded, so an entity bomb or an external entity has nothing to work with;
  // documents declaring any are refused before this parser sees them (parseFeed).
  processEntities: false,
  htmlEntities: false,
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: true,
  isArray: (name) => name === 'item' || name === 'vmcast:key',
});

const unescape = (text: string) => text.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&');

function textOf(value: unknown): string | undefined {
  if (typeof value === 'string') return unescape(value);
  if (typeof value === 'number') return String(value);
  if (value && typeof value === 'object' && '#text' in value) return textOf((value as Record<string, unknown>)['#text']);
  return undefined;
}

function attrOf(value: unknown, name: string): string | undefined {
  if (value && typeof value === 'object') {
    const v = (value as Record<string, unknown>)[`@_${name}`];
    return typeof v === 'string' ? unescape(v) : undefined;
  }
  return undefined;
}

/**
 * Reads a feed as untrusted input: a document with a DOCTYPE (entity
 * declarations, external entities) is refused whole; items missing a field are
 * reported, not guessed. The caller bounds the size before this is called.
 */
export function parseFeed(xml: string): ParsedFeed {
  if (/<!DOCTYPE/i.test(xml) || /<!ENTITY/i.test(xml)) {
    throw errors.invalid('The feed was refused: it declares a DOCTYPE or entities (entity expansion and external entities are not allowed)', { reasons: ['doctype'] });
  }
  let doc: Record<string, unknown>;
  try {
    doc = parser.parse(xml, true) as Record<string, unknown>;
  } catch (cause) {
    throw errors.invalid(`The feed was refused: it is not well-formed XML (${(cause as Error).message.split('\n')[0]})`, { reasons: ['malformed'] });
  }
  const channel = (doc['rss'] as Record<string, unknown> | undefined)?.['channel'] as Record<string, unknown> | undefined;
  if (!channel || typeof channel !== 'object') throw errors.invalid('The feed was refused: it is not an RSS 2.0 document (no <rss><channel>)', { reasons: ['not-rss'] });
  const keys: FeedKey[] = [];
  for (const k of (channel['vmcast:key'] as unknown[] | undefined) ?? []) {
    const keyId = attrOf(k, 'keyId');
    const state = attrOf(k, 'state');
    if (!keyId || !['active', 'retired', 'revoked'].includes(state ?? '')) continue;
    const pem = textOf(k);
    const endorsedBy = attrOf(k, 'endorsedBy');
    const endorsement = attrOf(k, 'endorsement');
    keys.push({ keyId, state: state as FeedKey['state'], ...(pem ? { publicKey: pem } : {}), ...(endorsedBy ? { endorsedBy } : {}), ...(endorsement ? { endorsement } : {}) });
  }
  const items: FeedItem[] = [];
  const packages: PackageFeedItem[] = [];
  const evas: EvaFeedItem[] = [];
  const malformed: ParsedFeed['malformed'] = [];
  for (const raw of (channel['item'] as Array<Record<string, unknown>> | undefined) ?? []) {
    const title = textOf(raw['title']) ?? '(untitled)';
    try {
      const kind = textOf(raw['vmcast:kind']) ?? 'release';
      if (kind !== 'release' && kind !== 'package' && kind !== 'eva') throw new Error(`its kind "${kind.slice(0, 40)}" is unknown`);
      const need = (field: string) => {
        const v = textOf(raw[`vmcast:${field}`]);
        if (v === undefined || v === '') throw new Error(`it has no <vmcast:${field}>`);
        return v;
      };
      const int = (field: string) => {
        const v = need(field);
        if (!/^\d{1,15}$/.test(v)) throw new Error(`<vmcast:${field}> is not a whole number: "${v.slice(0, 40)}"`);
        return Number(v);
      };
      const enclosure = raw['enclosure'];
      const url = attrOf(enclosure, 'url');
      const length = attrOf(enclosure, 'length');
      if (!url) throw new Error('it has no <enclosure url>');
      const enclosureLength = length !== undefined && /^\d{1,15}$/.test(length) ? Number(length) : -1;
      /** A package or appliance package item: its sha256, signature and manifest, read (and refused) in this order. */
      const signedFileItem = <K extends 'eva' | 'package'>(itemKind: K) => {
        const sha256 = need('sha256');
        if (!/^[0-9a-f]{64}$/.test(sha256)) throw new Error('<vmcast:sha256> is not 64 hex digits');
        const signature = textOf(raw['vmcast:signature']);
        const keyId = attrOf(raw['vmcast:signature'], 'keyId');
        if (!signature || !keyId) throw new Error('it has no <vmcast:signature keyId>');
        const manifest: SignedFileManifest & { kind: K } = {
          kind: itemKind,
          channel: textOf(channel['vmcast:channel']) ?? '',
          name: need('name'),
          version: need('version'),
          description: textOf(raw['vmcast:description']) ?? '',
          sha256,
          sizeBytes: int('size'),
        };
        const pubDate = textOf(raw['pubDate']);
        return { manifest, url, length: enclosureLength, keyId, signature, ...(pubDate ? { pubDate } : {}) };
      };
      if (kind === 'eva') {
        const type = attrOf(enclosure, 'type');
        if (type !== evaEnclosureType) throw new Error(`its enclosure type "${(type ?? '').slice(0, 60)}" is not ${evaEnclosureType}`);
        evas.push(signedFileItem('eva'));
        continue;
      }
      if (kind === 'package') {
        packages.push(signedFileItem('package'));
        continue;
      }
      const format = need('format');
      if (format !== 'qcow2') throw new Error(`its format "${format}" is not qcow2`);
      const bootMethod = need('bootMethod');
      if (bootMethod !== 'disk' && bootMethod !== 'appliance-kernel') throw new Error(`its boot method "${bootMethod}" is unknown`);
      const sha256 = need('sha256');
      if (!/^[0-9a-f]{64}$/.test(sha256)) throw new Error('<vmcast:sha256> is not 64 hex digits');
      let labels: Record<string, string> = {};
      const labelText = textOf(raw['vmcast:labels']);
      if (labelText) {
        const parsed = JSON.parse(labelText) as unknown;
        if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed) || Object.values(parsed).some((v) => typeof v !== 'string')) throw new Error('<vmcast:labels> is not an object of strings');
        labels = parsed as Record<string, string>;
      }
      const signature = textOf(raw['vmcast:signature']);
      const keyId = attrOf(raw['vmcast:signature'], 'keyId');
      if (!signature || !keyId) throw new Error('it has no <vmcast:signature keyId>');
      const manifest: ReleaseManifest = {
        channel: textOf(channel['vmcast:channel']) ?? '',
        name: need('name'),
        version: need('version'),
        architecture: need('architecture'),
        format: 'qcow2',
        bootMethod,
        sha256,
        sizeBytes: int('size'),
        minMemoryMiB: int('minMemoryMiB'),
        minCpus: int('minCpus'),
        labels,
      };
      const pubDate = textOf(raw['pubDate']);
      items.push({ manifest, url, length: length !== undefined && /^\d{1,15}$/.test(length) ? Number(length) : -1, keyId, signature, ...(pubDate ? { pubDate } : {}) });
    } catch (cause) {
      malformed.push({ title, reason: (cause as Error).message });
    }
  }
  return { title: textOf(channel['title']) ?? '', keys, items, packages, evas, malformed };
}

import { XMLParser } from 'fast-xml-parser';
import type { ExtractPolicy } from './eva-format.js';
import { PackageRefused, unsafeNameReason } from './eva-format.js';

/**
 * OVF 1.x/2.x descriptors (DMTF DSP0243) read as untrusted input: the same
 * parser settings as VMcasting feeds (no entity expansion; a DOCTYPE or an
 * ENTITY declaration refuses the document), size bounded by the caller.
 */

export interface OvfDisk {
  diskId: string;
  /** The file's name in the OVA. */
  href: string;
  /** From the Disk's format URL (or the file's name): vmdk, qcow2 or raw. */
  format: 'vmdk' | 'qcow2' | 'raw';
  capacityBytes: number | undefined;
}

export interface OvfSystem {
  id: string;
  cpus: number;
  memoryMiB: number;
  disks: OvfDisk[];
  networks: string[];
}

export interface OvfDescriptor {
  name: string;
  description?: string;
  networks: string[];
  /** In start order. */
  systems: OvfSystem[];
  /** StartupSection: order and startDelay per system id; systems of one order start together. */
  startup: Map<string, { order: number; startDelay: number; waitingForGuest: boolean }>;
  /** Every file the descriptor references. */
  files: string[];
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  removeNSPrefix: true,
  // Entities are never expanded (see vmcasting/feed.ts); DOCTYPEs are refused before parsing.
  processEntities: false,
  htmlEntities: false,
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: true,
  isArray: (name) => ['File', 'Disk', 'Network', 'Item', 'VirtualSystem', 'Section'].includes(name),
});

const list = <T>(value: T | T[] | undefined): T[] => (value === undefined ? [] : Array.isArray(value) ? value : [value]);
const str = (value: unknown): string | undefined => (typeof value === 'string' ? value : value && typeof value === 'object' && '#text' in value ? String((value as Record<string, unknown>)['#text']) : undefined);
type Node = Record<string, unknown>;

/** Bytes of "byte * 2^20"-style units (DSP0004 programmatic units) and the common spellings. */
export function unitBytes(units: string | undefined, fallback: number): number {
  if (!units) return fallback;
  const u = units.replace(/\s+/g, '').toLowerCase();
  const pow = /^byte\*2\^(\d+)$/.exec(u);
  if (pow) return 2 ** Number(pow[1]);
  const named: Record<string, number> = { byte: 1, bytes: 1, kilobytes: 1024, kb: 1024, megabytes: 1024 ** 2, mb: 1024 ** 2, gigabytes: 1024 ** 3, gb: 1024 ** 3 };
  if (u in named) return named[u]!;
  throw new PackageRefused(`the OVF uses allocation units "${units}", which are not understood`);
}

/** A name usable for VMs and networks: letters, digits, "_.-", at most 63, starting with a letter or digit. */
export function safeName(raw: string, what: string): string {
  const name = raw.replace(/[^A-Za-z0-9_.-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 63);
  if (!name) throw new PackageRefused(`the OVF's ${what} "${raw.slice(0, 60)}" gives no usable name`);
  return name;
}

export function parseOvf(xml: string): OvfDescriptor {
  if (/<!DOCTYPE/i.test(xml) || /<!ENTITY/i.test(xml)) throw new PackageRefused('the OVF declares a DOCTYPE or entities (entity expansion and external entities are not allowed)');
  let doc: Node;
  try {
    doc = parser.parse(xml) as Node;
  } catch (cause) {
    throw new PackageRefused(`the OVF is not well-formed XML (${(cause as Error).message.split('\n')[0]})`);
  }
  const envelope = doc.Envelope as Node | undefined;
  if (!envelope) throw new PackageRefused('the OVF has no Envelope element');
  const files = new Map<string, string>();
  for (const f of list((envelope.References as Node | undefined)?.File as Node[] | undefined)) {
    const id = str(f['@_id']);
    const href = str(f['@_href']);
    if (!id || !href) throw new PackageRefused('a References/File has no id or href');
    if (/^[a-z][a-z0-9+.-]*:/i.test(href)) throw new PackageRefused(`file "${href.slice(0, 80)}" is a URL; only files inside the OVA are read`);
    const problem = unsafeNameReason(href);
    if (problem || href.includes('/')) throw new PackageRefused(`file reference "${href.slice(0, 80)}" was refused: ${problem ?? 'it is not a plain file name'}`);
    files.set(id, href);
  }
  const disks = new Map<string, OvfDisk>();
  for (const d of list((envelope.DiskSection as Node | undefined)?.Disk as Node[] | undefined)) {
    const diskId = str(d['@_diskId']);
    const fileRef = str(d['@_fileRef']);
    if (!diskId || !fileRef) throw new PackageRefused('a DiskSection/Disk has no diskId or fileRef (empty disks are not supported)');
    const href = files.get(fileRef);
    if (!href) throw new PackageRefused(`disk "${diskId}" refers to unknown file "${fileRef}"`);
    const formatUrl = (str(d['@_format']) ?? '').toLowerCase();
    const format = formatUrl.includes('vmdk') || href.toLowerCase().endsWith('.vmdk') ? 'vmdk' : formatUrl.includes('qcow') || href.toLowerCase().endsWith('.qcow2') ? 'qcow2' : 'raw';
    const capacity = str(d['@_capacity']);
    disks.set(diskId, { diskId, href, format, capacityBytes: capacity && /^\d+$/.test(capacity) ? Number(capacity) * unitBytes(str(d['@_capacityAllocationUnits']), 1) : undefined });
  }
  const networks = list((envelope.NetworkSection as Node | undefined)?.Network as Node[] | undefined).map((n) => str(n['@_name']) ?? '').filter(Boolean);

  const systemOf = (vs: Node): OvfSystem => {
    const id = str(vs['@_id']);
    if (!id) throw new PackageRefused('a VirtualSystem has no id');
    const hardware = list(vs.VirtualHardwareSection as Node | Node[] | undefined)[0];
    if (!hardware) throw new PackageRefused(`VirtualSystem "${id}" has no VirtualHardwareSection`);
    let cpus = 1;
    let memoryMiB = 0;
    const systemDisks: OvfDisk[] = [];
    const systemNets: string[] = [];
    for (const item of list(hardware.Item as Node[] | undefined)) {
      const type = Number(str(item.ResourceType));
      const quantity = Number(str(item.VirtualQuantity) ?? '0');
      if (type === 3) cpus = quantity;
      else if (type === 4) memoryMiB = Math.round((quantity * unitBytes(str(item.AllocationUnits), 1024 ** 2)) / 1024 ** 2);
      else if (type === 17) {
        const resource = str(list(item.HostResource as unknown[] | undefined)[0]) ?? '';
        const m = /^ovf:\/(disk|file)\/(.+)$/.exec(resource);
        if (!m) throw new PackageRefused(`VirtualSystem "${id}" has a disk with host resource "${resource.slice(0, 80)}", which is not ovf:/disk/<id>`);
        const disk = m[1] === 'disk' ? disks.get(m[2]!) : [...disks.values()].find((d) => d.href === files.get(m[2]!));
        if (!disk) throw new PackageRefused(`VirtualSystem "${id}" refers to unknown disk "${m[2]}"`);
        systemDisks.push(disk);
      } else if (type === 10) {
        const connection = str(list(item.Connection as unknown[] | undefined)[0]);
        if (connection) systemNets.push(connection);
      }
    }
    if (!Number.isInteger(cpus) || cpus < 1 || cpus > 64) throw new PackageRefused(`VirtualSystem "${id}" asks for ${cpus} CPUs (1–64)`);
    if (!Number.isInteger(memoryMiB) || memoryMiB < 64) throw new PackageRefused(`VirtualSystem "${id}" has no usable memory size (at least 64 MiB)`);
    if (systemDisks.length === 0) throw new PackageRefused(`VirtualSystem "${id}" has no disk`);
    for (const n of systemNets) if (!networks.includes(n)) throw new PackageRefused(`VirtualSystem "${id}" connects to network "${n}", which the NetworkSection does not declare`);
    return { id, cpus, memoryMiB, disks: systemDisks, networks: systemNets };
  };

  let name: string;
  let description: string | undefined;
  const systems: OvfSystem[] = [];
  const startup = new Map<string, { order: number; startDelay: number; waitingForGuest: boolean }>();
  const collection = envelope.VirtualSystemCollection as Node | undefined;
  const single = list(envelope.VirtualSystem as Node[] | undefined);
  if (collection) {
    name = str(collection['@_id']) ?? 'ova';
    description = str((collection.AnnotationSection as Node | undefined)?.Annotation) ?? str(collection.Info);
    for (const vs of list(collection.VirtualSystem as Node[] | undefined)) systems.push(systemOf(vs));
    if (list(collection.VirtualSystemCollection as Node[] | undefined).length > 0) throw new PackageRefused('nested VirtualSystemCollections are not supported');
    for (const item of list((collection.StartupSection as Node | undefined)?.Item as Node[] | undefined)) {
      const id = str(item['@_id']);
      if (!id || !systems.some((s) => s.id === id)) throw new PackageRefused(`the StartupSection names unknown system "${id ?? ''}"`);
      startup.set(id, { order: Number(str(item['@_order']) ?? '0'), startDelay: Number(str(item['@_startDelay']) ?? '0'), waitingForGuest: str(item['@_waitingForGuest']) === 'true' });
    }
  } else if (single.length === 1) {
    name = str(single[0]!['@_id']) ?? 'ova';
    systems.push(systemOf(single[0]!));
  } else {
    throw new PackageRefused(single.length > 1 ? 'the OVF has several top-level VirtualSystems without a VirtualSystemCollection' : 'the OVF has no VirtualSystem');
  }
  if (systems.length === 0) throw new PackageRefused('the VirtualSystemCollection holds no VirtualSystem');
  // Start order: by StartupSection order (0 or absent: after the ordered ones, as DSP0243 says "0 = not specified").
  const orderOf = (id: string) => {
    const o = startup.get(id)?.order ?? 0;
    return o > 0 ? o : Number.MAX_SAFE_INTEGER;
  };
  const sorted = systems.map((s, i) => ({ s, i })).sort((x, y) => orderOf(x.s.id) - orderOf(y.s.id) || x.i - y.i).map((x) => x.s);
  return { name, ...(description ? { description } : {}), networks, systems: sorted, startup, files: [...new Set([...files.values()])] };
}

/** The OVA policy: the .ovf first, then exactly its files (and an optional .mf/.cert). */
export function ovaPolicy(onDescriptor: (d: OvfDescriptor, ovfName: string) => void, maxOvfBytes: number): ExtractPolicy {
  let ovfName = '';
  return {
    first: (h) => {
      if (!/^[^/]+\.ovf$/i.test(h.name)) return `the first entry is "${h.name.slice(0, 120)}", not the .ovf descriptor (it must come first in an OVA)`;
      if (h.size > maxOvfBytes) return `the .ovf descriptor has ${h.size} bytes, over the limit of ${maxOvfBytes}`;
      ovfName = h.name;
      return undefined;
    },
    afterFirst: (bytes) => {
      const descriptor = parseOvf(bytes.toString('utf8'));
      onDescriptor(descriptor, ovfName);
      const base = ovfName.replace(/\.ovf$/i, '');
      return { files: new Set(descriptor.files), directories: new Set(), optional: new Set([`${base}.mf`, `${base}.cert`]) };
    },
  };
}

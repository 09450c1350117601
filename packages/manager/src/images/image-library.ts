import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { buildAllAppliances, type ApplianceArtifacts } from '@drover/appliances';
import { errors } from '@drover/core';
import type { Store } from '../store/index.js';
import type { ImageRecord } from '../store/types.js';

/** What an agent needs to run an appliance image: its files and boot settings. */
export type ApplianceManifest = Pick<ApplianceArtifacts, 'name' | 'version' | 'kernel' | 'initrd' | 'rootDisk' | 'dataDisk' | 'cmdline' | 'minMemoryMiB'>;

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * The image library. Two kinds of images live in it:
 * - the demo appliances (format `appliance`), built (or found in the
 *   content-hash cache) at manager start; each one's `source` is a manifest
 *   file naming its artifacts, which agents on this machine (or seeing the same
 *   paths) import into their pools;
 * - images imported through the API (format `qcow2` or `iso`, see
 *   image-import.ts), whose one file is `<libraryDir>/<name>-<version>.<format>`
 *   and whose `source` is where they came from; hosts get them streamed over
 *   the agent link (vm-media.ts).
 * VMcasting feeds add more later.
 */
export class ImageLibrary {
  constructor(
    private readonly store: Store,
    private readonly dir: string,
    /** Where imported images are kept: `<dataDir>/library` beside `<dataDir>/images`. */
    readonly libraryDir: string = path.join(path.dirname(dir), 'library'),
  ) {}

  async registerAppliances(cacheDir: string): Promise<ImageRecord[]> {
    await mkdir(this.dir, { recursive: true });
    const built = await buildAllAppliances({ cacheDir });
    const records: ImageRecord[] = [];
    for (const artifacts of Object.values(built)) records.push(await this.register(artifacts));
    return records;
  }

  private async register(a: ApplianceArtifacts): Promise<ImageRecord> {
    const existing = await this.store.images.list({ limit: 1000, filter: { exactName: a.name } });
    const same = existing.items.find((i) => i.version === a.version);
    if (same) return same;
    const manifest: ApplianceManifest = {
      name: a.name,
      version: a.version,
      kernel: a.kernel,
      initrd: a.initrd,
      rootDisk: a.rootDisk,
      ...(a.dataDisk ? { dataDisk: a.dataDisk } : {}),
      cmdline: a.cmdline,
      minMemoryMiB: a.minMemoryMiB,
    };
    const file = path.join(this.dir, `${a.name}-${a.version}.json`);
    // Whole or not at all: a half-written manifest would break every start of this image.
    await writeFile(`${file}.tmp`, JSON.stringify(manifest, null, 2));
    await rename(`${file}.tmp`, file);
    return this.store.images.create({
      name: a.name,
      version: a.version,
      format: 'appliance',
      sizeBytes: (await stat(a.rootDisk)).size,
      sha256: await sha256File(a.rootDisk),
      source: file,
    });
  }

  /** Finds an image by "name" (newest release) or "name:version"; `field` names the request field in the error. */
  async resolve(reference: string, field = 'image'): Promise<ImageRecord> {
    const [name, version] = reference.split(':', 2) as [string, string | undefined];
    const page = await this.store.images.list({ limit: 1000, filter: { exactName: name } });
    const candidates = version ? page.items.filter((i) => i.version === version) : page.items;
    if (candidates.length === 0) throw errors.invalid(`Image "${reference}" is not in the library`, { field });
    return candidates.sort((a, b) => compareVersions(b.version, a.version))[0]!;
  }

  async manifest(image: ImageRecord): Promise<ApplianceManifest> {
    if (image.format !== 'appliance') throw errors.internal(`Image "${image.name}:${image.version}" is not an appliance; it has no manifest`);
    return JSON.parse(await readFile(image.source, 'utf8')) as ApplianceManifest;
  }

  /**
   * The appliance kernel and initramfs (shared by every built-in appliance),
   * which boot VMcasting releases whose boot method is "appliance-kernel".
   */
  async applianceKernel(): Promise<{ prefix: string; kernel: string; initrd: string; cmdline: string }> {
    const page = await this.store.images.list({ limit: 1000, filter: { format: 'appliance' } });
    const image = page.items[0];
    if (!image) throw errors.conflict('No built-in appliance is registered: its kernel is needed to boot an "appliance-kernel" release');
    const manifest = await this.manifest(image);
    return { prefix: `${image.name}-${image.version}`, kernel: manifest.kernel, initrd: manifest.initrd, cmdline: manifest.cmdline };
  }

  /** Whether a disk image boots with the appliance kernel (a VMcasting release or package VM made for it) rather than from its own disk. */
  async bootsApplianceKernel(image: Pick<ImageRecord, 'id'>): Promise<boolean> {
    return (await this.store.vmcast.metadata.byImage(image.id))?.bootMethod === 'appliance-kernel';
  }

  /** Whether a VM of this image boots a kernel, and so takes kernel settings: an appliance, or a disk image booted by the appliance kernel. */
  async bootsKernel(image: Pick<ImageRecord, 'id' | 'format'>): Promise<boolean> {
    return image.format === 'appliance' || (await this.bootsApplianceKernel(image));
  }

  /** The file of an imported image (qcow2 or iso) in the library directory. */
  fileOf(image: Pick<ImageRecord, 'name' | 'version' | 'format'>): string {
    if (image.format !== 'qcow2' && image.format !== 'iso') throw errors.internal(`Image "${image.name}:${image.version}" (${image.format}) has no file of its own in the library`);
    return path.join(this.libraryDir, `${image.name}-${image.version}.${image.format}`);
  }
}

function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

import { createHash } from 'node:crypto';
import { constants, createReadStream, createWriteStream } from 'node:fs';
import { chmod, link, mkdir, mkdtemp, open, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { errors, isDroverError } from '@drover/core';
import { EvaManifest as EvaManifestSchema, type EvaManifest, type Package, type PackageTrustedKey } from '@drover/api';
import { QemuImg, runQemuImg } from '@drover/qemu';
import type { EventHub } from '../http/event-hub.js';
import { shownUrl } from '../images/image.service.js';
import type { ImageLibrary } from '../images/image-library.js';
import { vmsUsingImages } from '../images/vm-media.js';
import type { OperationContext, OperationRunner } from '../operations/operation-runner.js';
import type { OperationRecord, PackageRecord, PackageTrustedKeyRecord, Store } from '../store/index.js';
import { keyIdOf } from '../vmcasting/manifest.js';
import type { AgentLink } from '../hosts/agent-link.js';
import { PackageExporter, type ExportRequest } from './package-export.js';
import { checkReferences, defaultExtractLimits, evaPolicy, extractSafely, PackageRefused, verifyEva, writeEva, type ExtractedFile, type ExtractLimits } from './eva-format.js';
import { ovaPolicy, safeName, type OvfDescriptor } from './ovf.js';

export interface PackageServiceOptions {
  store: Store;
  runner: OperationRunner;
  hub: EventHub;
  link: AgentLink;
  library: ImageLibrary;
  logger: Logger;
  /** `<dataDir>/packages`: .eva files, uploads and staging directories. */
  dir: string;
  limits?: Partial<ExtractLimits>;
  maxVirtualBytes: number;
  downloadTimeoutMs: number;
}

interface ImportParams {
  /** An upload spooled to `<dir>/.uploads/<id>.eva`, or a URL. */
  upload?: string;
  url?: string;
  kind: 'eva' | 'ova';
  trustKeys: string[];
  /** OVA only: the package's name and version (default: the OVF's, and "1"). */
  name?: string;
  version?: string;
}

const convertOptions = { timeoutMs: 3_600_000, limits: { cpuSeconds: 3_600 } };

export function publicPackage(p: PackageRecord): Package {
  return {
    id: p.id,
    name: p.name,
    version: p.version,
    description: p.description,
    formatVersion: p.formatVersion,
    manifest: p.manifest as unknown as EvaManifest,
    images: p.images,
    signerKeyId: p.signerKeyId,
    source: p.source as Package['source'],
    origin: p.origin,
    fileSizeBytes: p.fileSizeBytes,
    fileSha256: p.fileSha256,
    owner: p.owner,
    createdAt: p.createdAt,
  };
}

export function publicTrustedKey(k: PackageTrustedKeyRecord): PackageTrustedKey {
  return { keyId: k.keyId, name: k.name, publicKey: k.publicKey, createdAt: k.createdAt };
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function byteLimit(maxBytes: number, what: string): Transform {
  let size = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      size += chunk.length;
      if (size > maxBytes) done(errors.tooLarge(`${what} is larger than ${maxBytes} bytes, the limit of a package`, { limit: maxBytes }));
      else done(null, chunk);
    },
  });
}

/** The name a package file gets in the image library: "<package>.<file>", shortened with a hash when too long. */
export function imageNameFor(packageName: string, file: string): string {
  const base = path.basename(file).replace(/\.qcow2$/, '');
  const name = `${packageName}.${base}`;
  if (name.length <= 63 && /^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) return name;
  return `${packageName.slice(0, 40)}.${createHash('sha256').update(file).digest('hex').slice(0, 16)}`;
}

/**
 * Appliance packages (docs/eva-packages.md). Import: the .eva arrives (an
 * upload spooled to disk, or a download), is extracted into a fresh staging
 * directory with the tar checks of `extractSafely`, its checksums and
 * signature are verified with a trusted key, its disks are inspected as
 * untrusted qcow2; only then do its disks and boot files enter the image
 * library and the package record get stored. Any refusal removes the staging
 * directory and stores nothing.
 */
export class PackageService {
  private readonly limits: ExtractLimits;
  private readonly exporter: PackageExporter;

  constructor(private readonly o: PackageServiceOptions) {
    this.limits = { ...defaultExtractLimits, ...o.limits };
    this.exporter = new PackageExporter({ store: o.store, link: o.link, library: o.library });
    o.runner.register('package.export', {
      run: (ctx) => this.runExport(ctx),
      // Work files are private to the operation: removed, and the export asked again.
      recover: async (ctx) => {
        await rm(this.exportDir(ctx.op.id), { recursive: true, force: true });
        throw errors.unavailable(`The export of package "${String(ctx.op.params.name)}" was interrupted by a manager restart in phase "${ctx.op.phase}"; nothing was kept, export it again`);
      },
      cancellable: (op) => op.phase === 'pending' || op.phase === 'disks',
    });
    o.runner.register('package.import', {
      run: (ctx) => this.runImport(ctx),
      recover: (ctx) => this.recoverImport(ctx),
      cancellable: (op) => op.phase === 'pending' || op.phase === 'fetch' || op.phase === 'extract',
    });
  }

  get dir(): string {
    return this.o.dir;
  }

  private uploadPath(id: string): string {
    return path.join(this.o.dir, '.uploads', `${id}.eva`);
  }

  /** Where a package's .eva file is kept. */
  filePath(id: string): string {
    return path.join(this.o.dir, 'files', `${id}.eva`);
  }

  private stagingRoot(): string {
    return path.join(this.o.dir, '.staging');
  }

  // ------------------------------------------------------------ reads

  async list(): Promise<PackageRecord[]> {
    return this.o.store.packages.all();
  }

  /** A package by id, "name:version", or a name with one version. */
  async find(ref: string): Promise<PackageRecord> {
    if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(ref)) {
      const byId = await this.o.store.packages.tryGet(ref);
      if (byId) return byId;
    }
    const [name, version] = ref.split(':', 2) as [string, string | undefined];
    if (version !== undefined) {
      const found = await this.o.store.packages.tryRelease(name, version);
      if (!found) throw errors.notFound('Package', ref);
      return found;
    }
    const page = await this.o.store.packages.list({ limit: 1000, filter: { exactName: name } });
    if (page.items.length === 0) throw errors.notFound('Package', ref);
    if (page.items.length > 1) throw errors.invalid(`Package "${ref}" has several versions (${page.items.map((p) => p.version).join(', ')}); say "name:version" or the id`);
    return page.items[0]!;
  }

  async file(ref: string): Promise<{ file: string; size: number; name: string }> {
    const p = await this.find(ref);
    if (p.fileSizeBytes === null) throw errors.notFound('Package file', `${p.name}:${p.version}`);
    return { file: this.filePath(p.id), size: p.fileSizeBytes, name: `${p.name}-${p.version}.eva` };
  }

  // ------------------------------------------------------------ trust

  async listTrustedKeys(): Promise<PackageTrustedKeyRecord[]> {
    return this.o.store.packageKeys.all();
  }

  async addTrustedKey(name: string, publicKey: string): Promise<PackageTrustedKeyRecord> {
    const keyId = keyIdOf(publicKey);
    if (!/^-----BEGIN PUBLIC KEY-----/.test(publicKey.trim())) throw errors.invalid('The publisher key must be a PEM public key (SPKI)', { field: 'publicKey' });
    const { createPublicKey } = await import('node:crypto');
    if (createPublicKey(publicKey).asymmetricKeyType !== 'ed25519') throw errors.invalid('The publisher key must be an Ed25519 key', { field: 'publicKey' });
    const existing = await this.o.store.packageKeys.tryFind(keyId);
    if (existing) throw errors.conflict(`Key ${keyId.slice(0, 16)}… is already trusted as "${existing.name}"`);
    return this.o.store.packageKeys.create({ keyId, name, publicKey });
  }

  async removeTrustedKey(ref: string): Promise<void> {
    const key = await this.o.store.packageKeys.tryFind(ref);
    if (!key) throw errors.notFound('Trusted package key', ref);
    await this.o.store.packageKeys.delete(key.id);
  }

  /**
   * The keys a package signature may come from: this manager's own VMcasting
   * keys (not revoked), its subscriptions' pinned keys (not revoked), the
   * keys trusted for packages, and those given with the import.
   */
  private async trustedKeys(extra: string[]): Promise<Map<string, string>> {
    const keys = new Map<string, string>();
    for (const k of (await this.o.store.vmcast.keys.list({ limit: 1000 })).items) if (k.state !== 'revoked') keys.set(keyIdOf(k.publicKey), k.publicKey);
    for (const s of (await this.o.store.vmcast.subscriptions.list({ limit: 1000 })).items) for (const p of s.pinnedKeys) if (!p.revoked) keys.set(p.keyId, p.publicKey);
    for (const k of await this.o.store.packageKeys.all()) keys.set(k.keyId, k.publicKey);
    for (const pem of extra) keys.set(keyIdOf(pem), pem);
    return keys;
  }

  // ------------------------------------------------------------ import

  /** Spools an uploaded body to disk (never whole in memory), then submits its import. */
  async submitUpload(body: Readable, actor: string, idempotencyKey?: string, options: { kind?: 'eva' | 'ova'; name?: string; version?: string } = {}): Promise<OperationRecord> {
    const { randomUUID } = await import('node:crypto');
    const id = randomUUID();
    const target = this.uploadPath(id);
    await mkdir(path.dirname(target), { recursive: true, mode: 0o700 });
    const handle = await open(target, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      await pipeline(body, byteLimit(this.limits.maxTotalBytes + 1024 * 1024, 'The upload'), createWriteStream('', { fd: handle }));
    } catch (error) {
      await rm(target, { force: true });
      throw error;
    }
    const params: ImportParams = { upload: id, kind: options.kind ?? 'eva', trustKeys: [], ...(options.name ? { name: options.name } : {}), ...(options.version ? { version: options.version } : {}) };
    try {
      return await this.o.runner.submit(
        { kind: 'package.import', targetKind: 'package', targetId: `upload:${id}`, params: params as unknown as Record<string, unknown>, actor, idempotencyKey: idempotencyKey ?? null },
        'Package upload',
      );
    } catch (error) {
      await rm(target, { force: true });
      throw error;
    }
  }

  async submitUrl(request: { url: string; kind?: 'eva' | 'ova'; trustKeys?: string[] }, actor: string, idempotencyKey?: string): Promise<OperationRecord> {
    try {
      const u = new URL(request.url);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme');
    } catch {
      throw errors.invalid(`"${request.url.slice(0, 200)}" is not a valid http(s) URL`, { field: 'url' });
    }
    for (const pem of request.trustKeys ?? []) keyIdOf(pem);
    const params: ImportParams = { url: request.url, kind: request.kind ?? 'eva', trustKeys: request.trustKeys ?? [] };
    return this.o.runner.submit(
      { kind: 'package.import', targetKind: 'package', targetId: `url:${shownUrl(request.url)}`, params: params as unknown as Record<string, unknown>, actor, idempotencyKey: idempotencyKey ?? null },
      `Package ${shownUrl(request.url)}`,
    );
  }

  /** Imports an .eva file already on this machine (uploads, downloads, VMcasting, export): the same checks for all. */
  async importFile(
    file: string,
    options: { actor: string; source: 'import' | 'export' | 'vmcast'; origin: string; trustKeys?: string[]; signal?: AbortSignal; phase?: (name: string, progress: number) => Promise<void> },
  ): Promise<PackageRecord> {
    const phase = options.phase ?? (async () => undefined);
    await mkdir(this.stagingRoot(), { recursive: true, mode: 0o700 });
    const staging = await mkdtemp(path.join(this.stagingRoot(), 'import-'));
    let label = options.origin;
    try {
      await phase('extract', 20);
      let manifest: EvaManifest | undefined;
      const extracted = await extractSafely(createReadStream(file), staging, this.limits, evaPolicy((m) => {
        manifest = m;
        label = `${m.name}:${m.version}`;
      }));
      const m = manifest!;
      if (await this.o.store.packages.tryRelease(m.name, m.version)) throw errors.conflict(`Package "${label}" is already imported; delete it first or import another version`);
      await phase('verify', 45);
      const trusted = await this.trustedKeys(options.trustKeys ?? []);
      const { keyId } = verifyEva(extracted, m, (id) => trusted.get(id));
      options.signal?.throwIfAborted();
      await phase('inspect', 60);
      await this.inspectDisks(m, extracted.files);
      await phase('library', 80);
      return await this.enter(m, extracted.files, { label, keyId, source: options.source, origin: options.origin, actor: options.actor, evaFile: file });
    } catch (error) {
      if (error instanceof PackageRefused) {
        this.o.logger.warn({ package: label, reason: error.message }, 'package refused');
        throw errors.invalid(`Package "${label}" was refused: ${error.message}`, { reasons: [error.message] });
      }
      throw error;
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  }

  /**
   * Imports an OVA (DMTF DSP0243): the .ovf first, then its files, extracted
   * like any package; an .mf's checksums are checked when present; each disk
   * is inspected with its format forced (a VMDK must be a monolithic sparse
   * or streamOptimized file: a text descriptor could name any host file) and
   * converted into a fresh standalone qcow2; the manifest says what the OVF
   * said (networks become isolated networks, StartupSection the start order).
   * OVAs are not signed: the package records no signer.
   */
  async importOva(file: string, options: { actor: string; origin: string; name?: string; version?: string; phase?: (name: string, progress: number) => Promise<void> }): Promise<PackageRecord> {
    const phase = options.phase ?? (async () => undefined);
    await mkdir(this.stagingRoot(), { recursive: true, mode: 0o700 });
    const staging = await mkdtemp(path.join(this.stagingRoot(), 'ova-'));
    let label = options.origin;
    try {
      await phase('extract', 20);
      let descriptor: OvfDescriptor | undefined;
      let ovfName = '';
      const extracted = await extractSafely(createReadStream(file), staging, this.limits, ovaPolicy((d, n) => {
        descriptor = d;
        ovfName = n;
        label = n;
      }, this.limits.maxFirstBytes));
      const d = descriptor!;
      await phase('verify', 40);
      const mf = extracted.files.get(ovfName.replace(/\.ovf$/i, '.mf'));
      if (mf) await this.checkOvaManifest(mf.file, ovfName, extracted);
      const name = options.name ?? safeName(d.name, 'name');
      const version = options.version ?? '1';
      label = `${name}:${version}`;
      if (await this.o.store.packages.tryRelease(name, version)) throw errors.conflict(`Package "${label}" is already imported; delete it first or import another version`);
      await phase('convert', 50);
      await mkdir(path.join(staging, 'disks'), { mode: 0o700 });
      const files = new Map<string, ExtractedFile>();
      const networkNames = new Map(d.networks.map((n) => [n, safeName(n, 'network name')]));
      const vmNames = new Map<string, string>();
      for (const system of d.systems) {
        const vmName = safeName(system.id, 'VirtualSystem id');
        if ([...vmNames.values()].includes(vmName)) throw new PackageRefused(`two VirtualSystems give the VM name "${vmName}"`);
        vmNames.set(system.id, vmName);
      }
      const vms: EvaManifest['vms'] = [];
      let previousGroup: string[] = [];
      let currentGroup: string[] = [];
      let currentOrder: number | undefined;
      for (const system of d.systems) {
        const vmName = vmNames.get(system.id)!;
        const disks: EvaManifest['vms'][number]['disks'] = [];
        for (const [n, disk] of system.disks.entries()) {
          const source = extracted.files.get(disk.href);
          if (!source) throw new PackageRefused(`disk file "${disk.href}" is missing`);
          const out = path.join(staging, 'disks', `${vmName}-${n}.qcow2`);
          await this.convertOvaDisk(source.file, disk.format, disk.href, out);
          const info = await QemuImg.info(out, 'qcow2');
          const entry: ExtractedFile = { path: `disks/${vmName}-${n}.qcow2`, file: out, size: (await stat(out)).size, sha256: await sha256File(out) };
          files.set(entry.path, entry);
          disks.push({ file: entry.path, format: 'qcow2', role: n === 0 ? 'root' : 'data', sha256: entry.sha256, sizeBytes: entry.size, virtualSizeBytes: info.virtualSize });
        }
        // StartupSection: a system starts after every system of the previous (lower) order.
        const startup = d.startup.get(system.id);
        const order = startup && startup.order > 0 ? startup.order : Number.MAX_SAFE_INTEGER;
        if (currentOrder !== undefined && order !== currentOrder) {
          previousGroup = currentGroup;
          currentGroup = [];
        }
        currentOrder = order;
        currentGroup.push(vmName);
        vms.push({
          name: vmName,
          cpus: system.cpus,
          memoryMiB: system.memoryMiB,
          boot: { method: 'disk' },
          disks,
          nics: system.networks.map((n) => ({ network: networkNames.get(n)! })),
          labels: { 'ovf.id': [...system.id.slice(0, 255)].map((c) => (c.charCodeAt(0) < 32 ? ' ' : c)).join('') },
          ...(previousGroup.length ? { dependsOn: [...previousGroup] } : {}),
          ...(startup && startup.startDelay > 0 ? { startDelaySeconds: Math.min(startup.startDelay, 3600) } : {}),
        });
      }
      const manifest: EvaManifest = {
        format: 'drover-eva',
        formatVersion: 1,
        name,
        version,
        ...(d.description ? { description: d.description.slice(0, 2000) } : {}),
        networks: [...networkNames.values()].map((n, i) => ({ name: n, kind: 'isolated' as const, subnet: `10.${200 + (i % 50)}.${Math.floor(i / 50)}.0/24` })),
        securityGroups: [],
        vms,
        updatePolicy: { policy: 'pinned' },
      };
      const check = (await import('typebox/compile')).Compile(EvaManifestSchema);
      if (!check.Check(manifest)) throw new PackageRefused(`the OVF gives an invalid package: ${check.Errors(manifest)[0]?.instancePath ?? ''} ${check.Errors(manifest)[0]?.message ?? ''}`);
      checkReferences(manifest);
      await phase('inspect', 70);
      await this.inspectDisks(manifest, files);
      await phase('library', 80);
      return await this.enter(manifest, files, { label, keyId: null, source: 'ova', origin: options.origin, actor: options.actor });
    } catch (error) {
      if (error instanceof PackageRefused) {
        this.o.logger.warn({ package: label, reason: error.message }, 'OVA refused');
        throw errors.invalid(`OVA "${label}" was refused: ${error.message}`, { reasons: [error.message] });
      }
      throw error;
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  }

  /** An OVA's .mf: "SHA256(file)= hex" (or SHA1) lines; every listed file must be there and match. */
  private async checkOvaManifest(mf: string, ovfName: string, extracted: { first: Buffer; files: Map<string, ExtractedFile> }): Promise<void> {
    const { readFile } = await import('node:fs/promises');
    const text = await readFile(mf, 'utf8');
    for (const line of text.split(/\r?\n/)) {
      if (!line.trim()) continue;
      const m = /^(SHA1|SHA256|SHA512)\((.+)\)\s*=\s*([0-9a-fA-F]+)$/.exec(line.trim());
      if (!m) throw new PackageRefused(`the .mf has a malformed line "${line.slice(0, 80)}"`);
      const [, algorithm, name, want] = m as unknown as [string, string, string, string];
      const hash = createHash(algorithm.toLowerCase());
      if (name === ovfName) hash.update(extracted.first);
      else {
        const f = extracted.files.get(name);
        if (!f) throw new PackageRefused(`the .mf lists "${name}", which is not in the OVA`);
        for await (const chunk of createReadStream(f.file)) hash.update(chunk as Buffer);
      }
      const got = hash.digest('hex');
      if (got !== want.toLowerCase()) throw new PackageRefused(`the ${algorithm} of "${name}" is wrong: ${got} where the .mf says ${want.toLowerCase()}`);
    }
  }

  /** One OVA disk into a fresh qcow2: its format forced, checked as untrusted first. */
  private async convertOvaDisk(file: string, format: 'vmdk' | 'qcow2' | 'raw', href: string, out: string): Promise<void> {
    const refuse = (reasons: string[]) => new PackageRefused(`disk "${href}" was refused as ${format}: ${reasons.join('; ')}`);
    if (format === 'vmdk') {
      const handle = await open(file, 'r');
      const head = Buffer.alloc(64);
      try {
        await handle.read(head, 0, 64, 0);
      } finally {
        await handle.close();
      }
      // Only sparse VMDKs with their descriptor inside: a text descriptor names extent files, which may be any host path.
      if (head.toString('latin1', 0, 4) !== 'KDMV') throw refuse(['it is not a monolithic sparse or streamOptimized VMDK (a descriptor file with separate extents is not accepted)']);
      let info: Record<string, unknown>;
      try {
        const { stdout } = await runQemuImg(['info', '-f', 'vmdk', '--output=json', file], {}, { op: 'info', path: file });
        info = JSON.parse(stdout) as Record<string, unknown>;
      } catch (cause) {
        throw refuse([`qemu-img cannot read it as vmdk (${(cause as Error).message.slice(0, 200)})`]);
      }
      const problems: string[] = [];
      if (info.format !== 'vmdk') problems.push(`it opened as "${String(info.format)}"`);
      if (info['backing-filename'] !== undefined || info['full-backing-filename'] !== undefined) problems.push(`it has a backing file ("${String(info['backing-filename'] ?? info['full-backing-filename'])}")`);
      const extents = (info['format-specific'] as { data?: { extents?: Array<{ filename?: string }> } } | undefined)?.data?.extents ?? [];
      if (extents.length > 1) problems.push(`it has ${extents.length} extents`);
      if (extents.some((e) => e.filename && path.resolve(e.filename) !== path.resolve(file))) problems.push('it names an extent in another file');
      const virtualSize = Number(info['virtual-size']);
      if (!(virtualSize > 0)) problems.push('it has no virtual size');
      if (virtualSize > this.o.maxVirtualBytes) problems.push(`its virtual size ${virtualSize} is above the limit of ${this.o.maxVirtualBytes} bytes`);
      if (problems.length > 0) throw refuse(problems);
      await runQemuImg(['convert', '-q', '-f', 'vmdk', '-O', 'qcow2', file, out], convertOptions, { op: 'convert', path: file });
      return;
    }
    try {
      await QemuImg.inspectUntrusted(file, format, { maxVirtualSizeBytes: this.o.maxVirtualBytes });
    } catch (cause) {
      const reasons = isDroverError(cause) ? (cause.details as { reasons?: string[] }).reasons : undefined;
      if (reasons) throw refuse(reasons);
      throw cause;
    }
    await QemuImg.convert(file, format, out, 'qcow2', convertOptions);
  }

  /** Each disk as untrusted qcow2 (forced format, no backing or data file, size limit, qemu-img check), matching the manifest. */
  private async inspectDisks(m: EvaManifest, files: Map<string, ExtractedFile>): Promise<void> {
    for (const vm of m.vms) {
      for (const disk of vm.disks) {
        const f = files.get(disk.file)!;
        let info;
        try {
          info = await QemuImg.inspectUntrusted(f.file, 'qcow2', { maxVirtualSizeBytes: this.o.maxVirtualBytes });
          const check = await QemuImg.check(f.file, 'qcow2');
          if (check.corruptions > 0 || check.checkErrors > 0) throw new PackageRefused(`disk "${disk.file}": qemu-img check found ${check.corruptions} corruptions and ${check.checkErrors} errors`);
        } catch (cause) {
          if (cause instanceof PackageRefused) throw cause;
          const reasons = isDroverError(cause) ? (cause.details as { reasons?: string[] }).reasons : undefined;
          if (reasons) throw new PackageRefused(`disk "${disk.file}" was refused as qcow2: ${reasons.join('; ')}`);
          throw cause;
        }
        if (info.virtualSize !== disk.virtualSizeBytes) throw new PackageRefused(`disk "${disk.file}" has virtual size ${info.virtualSize} where the manifest says ${disk.virtualSizeBytes}`);
      }
    }
  }

  /**
   * Enters checked files into the image library and stores the package
   * record: all or nothing (what entered is removed again if a step fails).
   */
  private async enter(m: EvaManifest, files: Map<string, ExtractedFile>, meta: { label: string; keyId: string | null; source: PackageRecord['source']; origin: string; actor: string; evaFile?: string }): Promise<PackageRecord> {
    // One at a time: two imports of one release must not both pass the checks and overwrite each other's files.
    const previous = this.entering;
    let release!: () => void;
    this.entering = new Promise<void>((resolve) => (release = resolve));
    await previous;
    try {
      return await this.enterNow(m, files, meta);
    } finally {
      release();
    }
  }

  private entering: Promise<void> = Promise.resolve();

  private async enterNow(m: EvaManifest, files: Map<string, ExtractedFile>, meta: { label: string; keyId: string | null; source: PackageRecord['source']; origin: string; actor: string; evaFile?: string }): Promise<PackageRecord> {
    const label = meta.label;
    const storedFiles: string[] = [];
    const createdImages: string[] = [];
    if (await this.o.store.packages.tryRelease(m.name, m.version)) throw errors.conflict(`Package "${label}" is already imported; delete it first or import another version`);
    try {
      const images: Record<string, string> = {};
      const bootMethodOf = new Map<string, EvaManifest['vms'][number]>();
      for (const vm of m.vms) bootMethodOf.set(vm.disks[0]!.file, vm);
      for (const f of files.values()) {
        const name = imageNameFor(m.name, f.path);
        if (await this.o.store.images.getRelease(name, m.version).catch(() => undefined)) throw errors.conflict(`Package "${label}" needs image "${name}:${m.version}", which is already in the library`);
        const isDisk = f.path.startsWith('disks/');
        const target = isDisk ? this.o.library.fileOf({ name, version: m.version, format: 'qcow2' }) : path.join(this.o.library.libraryDir, 'boot', `${name}-${m.version}`);
        await mkdir(path.dirname(target), { recursive: true, mode: 0o700 });
        if (await stat(target).then(() => true, () => false)) throw errors.conflict(`Package "${label}" needs the library file of image "${name}:${m.version}", which exists already`);
        await chmod(f.file, 0o600);
        await rename(f.file, target);
        storedFiles.push(target);
        const image = await this.o.store.images.create({ name, version: m.version, format: isDisk ? 'qcow2' : 'boot', sizeBytes: f.size, sha256: f.sha256, source: isDisk ? `package:${label}` : target });
        createdImages.push(image.id);
        images[f.path] = image.id;
        // An appliance's root disk boots with Drover's appliance kernel (see docs/eva-packages.md).
        const vm = bootMethodOf.get(f.path);
        if (vm) {
          await this.o.store.vmcast.metadata.create({
            imageId: image.id,
            architecture: 'x86_64',
            bootMethod: vm.boot.method === 'appliance' ? 'appliance-kernel' : 'disk',
            minMemoryMiB: vm.memoryMiB,
            minCpus: vm.cpus,
            labels: vm.labels ?? {},
          });
        }
      }
      const fileSha256 = meta.evaFile ? await sha256File(meta.evaFile) : null;
      const fileSize = meta.evaFile ? (await stat(meta.evaFile)).size : null;
      const record = await this.o.store.packages.create({
        name: m.name,
        version: m.version,
        description: m.description ?? null,
        formatVersion: m.formatVersion,
        manifest: m as unknown as Record<string, unknown>,
        images,
        signerKeyId: meta.keyId,
        source: meta.source,
        origin: meta.origin,
        fileSizeBytes: fileSize,
        fileSha256,
        owner: meta.actor,
      });
      // The verified .eva itself is kept: GET .../file hands out the very bytes that were signed.
      const evaFile = meta.evaFile;
      if (evaFile) {
        const kept = this.filePath(record.id);
        await mkdir(path.dirname(kept), { recursive: true, mode: 0o700 });
        await link(evaFile, kept).catch(async () => {
          await pipeline(createReadStream(evaFile), createWriteStream(`${kept}.partial`, { mode: 0o600 }));
          await rename(`${kept}.partial`, kept);
        });
      }
      storedFiles.length = 0;
      createdImages.length = 0;
      await this.event('package.imported', record.id, { name: m.name, version: m.version, source: meta.source });
      return record;
    } catch (error) {
      for (const id of createdImages.reverse()) await this.o.store.images.delete(id).catch(() => undefined);
      for (const f of storedFiles) await rm(f, { force: true });
      throw error;
    }
  }

  private async event(type: string, id: string, data: Record<string, unknown>): Promise<void> {
    const event = await this.o.store.events.append({ type, objectKind: 'package', objectId: id, data });
    this.o.hub.publish({ ...event, data });
  }

  private async runImport(ctx: OperationContext): Promise<unknown> {
    const p = ctx.op.params as unknown as ImportParams;
    let file: string;
    let origin: string;
    let download: string | undefined;
    if (p.upload) {
      file = this.uploadPath(p.upload);
      origin = 'upload';
    } else {
      await ctx.phase('fetch', 5, shownUrl(p.url!));
      download = path.join(this.o.dir, '.uploads', `${ctx.op.id}.download.eva`);
      await mkdir(path.dirname(download), { recursive: true, mode: 0o700 });
      await rm(download, { force: true });
      await this.download(p.url!, download, ctx.signal);
      file = download;
      origin = shownUrl(p.url!);
    }
    try {
      const phase = (name: string, progress: number) => ctx.phase(name, progress);
      const record =
        p.kind === 'ova'
          ? await this.importOva(file, { actor: ctx.op.actor, origin, ...(p.name ? { name: p.name } : {}), ...(p.version ? { version: p.version } : {}), phase })
          : await this.importFile(file, { actor: ctx.op.actor, source: 'import', origin, trustKeys: p.trustKeys, signal: ctx.signal, phase });
      return { package: publicPackage(record) };
    } finally {
      await rm(file, { force: true });
    }
  }

  /** Streams a URL to `target` within the size and time limits. */
  private async download(url: string, target: string, cancel: AbortSignal): Promise<void> {
    const shown = shownUrl(url);
    const signal = AbortSignal.any([cancel, AbortSignal.timeout(this.o.downloadTimeoutMs)]);
    let response: Response;
    try {
      response = await fetch(url, { signal, redirect: 'follow' });
    } catch (cause) {
      throw errors.unavailable(`The download of ${shown} failed: ${(cause as { cause?: Error }).cause?.message ?? (cause as Error).message}`, { url: shown });
    }
    if (!response.ok || !response.body) {
      await response.body?.cancel().catch(() => undefined);
      throw errors.unavailable(`The download of ${shown} was answered ${response.status}`, { url: shown, status: response.status });
    }
    const handle = await open(target, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    await pipeline(Readable.fromWeb(response.body as import('node:stream/web').ReadableStream), byteLimit(this.limits.maxTotalBytes + 1024 * 1024, `The download of ${shown}`), createWriteStream('', { fd: handle }), { signal });
  }

  /** A manager died during an import: nothing half-done is kept (the record is the commit point). */
  private async recoverImport(ctx: OperationContext): Promise<unknown> {
    const p = ctx.op.params as unknown as ImportParams;
    if (p.upload) await rm(this.uploadPath(p.upload), { force: true });
    await rm(path.join(this.o.dir, '.uploads', `${ctx.op.id}.download.eva`), { force: true });
    await rm(this.stagingRoot(), { recursive: true, force: true });
    throw errors.unavailable(`The package import was interrupted by a manager restart in phase "${ctx.op.phase}"; nothing was kept, import it again`);
  }

  // ------------------------------------------------------------ export

  private exportDir(opId: string): string {
    return path.join(this.o.dir, '.export', opId);
  }

  /** The signing key: a VMcasting key of this manager by name or key id, or the active one. */
  private async signingKey(ref: string | undefined) {
    const keys = (await this.o.store.vmcast.keys.list({ limit: 1000 })).items;
    if (ref === undefined) {
      const active = keys.find((k) => k.state === 'active');
      if (!active) throw errors.conflict('This manager has no active publisher key to sign the package; create one (POST /api/v1/vmcast/keys)');
      return active;
    }
    const key = keys.find((k) => k.name === ref || keyIdOf(k.publicKey) === ref);
    if (!key) throw errors.notFound('Publisher key', ref);
    if (key.state === 'revoked') throw errors.conflict(`Publisher key "${key.name}" is revoked; it signs nothing`);
    return key;
  }

  /** Checks what can be checked now (the release is free, the VMs are stopped, the key exists), then submits the export. */
  async submitExport(request: ExportRequest & { vms?: string[]; lab?: string; signWith?: string }, actor: string, idempotencyKey?: string): Promise<OperationRecord> {
    if ((request.vms === undefined) === (request.lab === undefined)) throw errors.invalid('Give exactly one of "vms" or "lab" to export', { field: 'vms' });
    if (await this.o.store.packages.tryRelease(request.name, request.version)) throw errors.conflict(`Package "${request.name}:${request.version}" already exists; export another version`);
    let refs = request.vms ?? [];
    let labId: string | undefined;
    if (request.lab !== undefined) {
      const lab = await this.o.store.labs.find(request.lab);
      if (lab.vms.some((v) => !v.vmId)) throw errors.conflict(`Lab "${lab.name}" is missing VMs (it is ${lab.state}); only a deployed lab can be exported`, { lab: lab.name });
      refs = lab.vms.map((v) => v.vmId!);
      labId = lab.id;
    }
    const vms = await this.exporter.checkVms(refs);
    const key = await this.signingKey(request.signWith);
    const params = { ...request, vms: vms.map((v) => v.id), ...(labId ? { lab: labId } : {}), signWith: key.id };
    return this.o.runner.submit(
      { kind: 'package.export', targetKind: 'package', targetId: `${request.name}:${request.version}`, params: params as unknown as Record<string, unknown>, actor, idempotencyKey: idempotencyKey ?? null },
      `Package "${request.name}:${request.version}"`,
    );
  }

  private async runExport(ctx: OperationContext): Promise<unknown> {
    const p = ctx.op.params as unknown as ExportRequest & { vms: string[]; lab?: string; signWith: string };
    const work = this.exportDir(ctx.op.id);
    await rm(work, { recursive: true, force: true });
    await mkdir(work, { recursive: true, mode: 0o700 });
    try {
      await ctx.phase('disks', 5);
      const vms = await this.exporter.checkVms(p.vms);
      const lab = p.lab ? await this.o.store.labs.get(p.lab) : undefined;
      const { manifest, files } = await this.exporter.build(vms, p, work, (done, total) => ctx.progress(5 + Math.floor((done / total) * 55), { disks: done, of: total }), lab);
      await ctx.phase('write', 60);
      const key = await this.o.store.vmcast.keys.get(p.signWith);
      const file = path.join(work, 'package.eva');
      await writeEva(file, manifest, files, key);
      // Its own output goes through the same checks as any import: what is kept is what another manager will accept.
      const record = await this.importFile(file, { actor: ctx.op.actor, source: 'export', origin: lab ? `lab ${lab.name}` : `VM ${vms.map((v) => v.name).join(', ')}`, phase: (name, progress) => ctx.phase(name, 60 + Math.floor(progress * 0.4)) });
      return { package: publicPackage(record) };
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }

  // ------------------------------------------------------------ delete

  /** Removes a package, its .eva file and its images; refused while a VM uses one of them. */
  async remove(ref: string): Promise<void> {
    const p = await this.find(ref);
    const ids = Object.values(p.images);
    const users = await vmsUsingImages(this.o.store, ids);
    if (users.length > 0) throw errors.conflict(`Package "${p.name}:${p.version}" is used by VM ${users.join(', ')}; delete those VMs first`, { usedBy: users });
    await this.o.store.packages.delete(p.id);
    for (const id of ids) {
      const image = await this.o.store.images.tryGet(id);
      if (!image) continue;
      await this.o.store.images.delete(id).catch(() => undefined);
      await rm(image.format === 'qcow2' ? this.o.library.fileOf(image) : image.source, { force: true });
    }
    await rm(this.filePath(p.id), { force: true });
    await this.event('package.deleted', p.id, { name: p.name, version: p.version });
  }

  /** The packages whose images include `imageId` (an image a package holds is deleted with the package). */
  async packagesUsing(imageId: string): Promise<string[]> {
    return (await this.list()).filter((p) => Object.values(p.images).includes(imageId)).map((p) => `${p.name}:${p.version}`);
  }
}

import { createHash } from 'node:crypto';
import { constants, createReadStream, createWriteStream } from 'node:fs';
import { chmod, mkdir, open, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { DroverError, errors, isDroverError } from '@drover/core';
import type { Image, ImageImport } from '@drover/api';
import { resolveImportSource } from '@drover/agent';
import { QemuImg } from '@drover/qemu';
import type { AgentLink } from '../hosts/agent-link.js';
import type { EventHub } from '../http/event-hub.js';
import type { OperationContext, OperationRunner } from '../operations/operation-runner.js';
import type { Store } from '../store/index.js';
import type { ImageRecord, OperationRecord } from '../store/types.js';
import { importFormat, sniffBytes, sniffImageFormat, type ImportFormat } from './image-format.js';
import type { ImageLibrary } from './image-library.js';
import { imageVolumeName, vmPool, vmsUsingImages } from './vm-media.js';

export interface ImageServiceOptions {
  store: Store;
  runner: OperationRunner;
  link: AgentLink;
  hub: EventHub;
  library: ImageLibrary;
  logger: Logger;
  /** Directories `source.path` may name (real paths). */
  importDirs: string[];
  /** The largest file downloaded or copied. */
  maxBytes: number;
  /** The largest virtual disk an image may have. */
  maxVirtualBytes: number;
  downloadTimeoutMs: number;
}

interface ImportParams {
  name: string;
  version: string;
  source: { url: string } | { path: string };
  format?: ImportFormat;
}

/** Converting a large image takes longer than qemu-img's default limits allow. */
const convertOptions = { timeoutMs: 3_600_000, limits: { cpuSeconds: 3_600 } };

export function publicImage(image: ImageRecord): Image {
  return { id: image.id, name: image.name, version: image.version, format: image.format, sizeBytes: image.sizeBytes, sha256: image.sha256, source: image.source, createdAt: image.createdAt };
}

/** A URL as it may be shown: without credentials or query (they may carry secrets). */
export function shownUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '(an invalid URL)';
  }
}

function originOf(source: ImportParams['source']): string {
  return 'url' in source ? shownUrl(source.url) : source.path;
}

/** Counts bytes through a pipeline and fails it past `maxBytes`. */
function byteLimit(maxBytes: number, what: string): Transform {
  let size = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      size += chunk.length;
      if (size > maxBytes) done(errors.tooLarge(`${what} is larger than ${maxBytes} bytes, the limit of an image import`, { limit: maxBytes }));
      else done(null, chunk);
    },
  });
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * Imported images: `POST /api/v1/images` downloads (http/https) or copies (a
 * path under `imageImportDirs`) a file into a private work directory, inspects
 * it as untrusted, stores it in the library (disks converted to a fresh qcow2,
 * ISOs kept as they are) and registers it; `DELETE` removes an unused one from
 * the library and from every host. Both are operations.
 */
export class ImageService {
  constructor(private readonly o: ImageServiceOptions) {
    o.runner.register('image.import', {
      run: (ctx) => this.runImport(ctx),
      recover: (ctx) => this.recoverImport(ctx),
      // Only while bytes arrive: the rest is short, and a conversion cannot be interrupted.
      cancellable: (op) => op.phase === 'pending' || op.phase === 'fetch',
    });
    o.runner.register('image.delete', {
      run: (ctx) => this.runDelete(ctx),
      // Every step is safe to repeat.
      recover: (ctx) => this.runDelete(ctx),
    });
  }

  // ------------------------------------------------------------ reads

  /** An image by id, "name:version", or a name that has one version only. */
  async find(ref: string): Promise<ImageRecord> {
    if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(ref)) {
      const byId = await this.o.store.images.tryGet(ref);
      if (byId) return byId;
    }
    const [name, version] = ref.split(':', 2) as [string, string | undefined];
    if (version !== undefined) return this.o.store.images.getRelease(name, version);
    const page = await this.o.store.images.list({ limit: 1000, filter: { exactName: name } });
    if (page.items.length === 0) throw errors.notFound('Image', ref);
    if (page.items.length > 1) {
      throw errors.invalid(`Image "${ref}" has several versions (${page.items.map((i) => i.version).join(', ')}); say "name:version" or the id`, { versions: page.items.map((i) => i.version) });
    }
    return page.items[0]!;
  }

  /** The names of the VMs that boot or attach `imageId`. */
  usedBy(imageId: string): Promise<string[]> {
    return vmsUsingImages(this.o.store, [imageId]);
  }

  private async publish(type: string, id: string, data: Record<string, unknown>): Promise<void> {
    const event = await this.o.store.events.append({ type, objectKind: 'image', objectId: id, data });
    this.o.hub.publish({ ...event, data });
  }

  // ------------------------------------------------------------ import

  /**
   * Checks what can be checked at once (the name is free, the path is allowed
   * and a regular file) so a bad request is a 4xx that changes nothing, then
   * submits the import. The operation's target is "name:version", so two
   * imports of one release cannot run together.
   */
  async submitImport(request: ImageImport, actor: string, idempotencyKey?: string): Promise<OperationRecord> {
    const version = request.version ?? '1';
    const label = `${request.name}:${version}`;
    const existing = await this.o.store.images.getRelease(request.name, version).catch((error: unknown) => {
      if (isDroverError(error) && error.code === 'not_found') return undefined;
      throw error;
    });
    if (existing) throw errors.conflict(`Image "${label}" is already in the library; import it under another version, or delete it first`, { id: existing.id });
    if ('path' in request.source) {
      const real = await resolveImportSource(request.source.path, this.o.importDirs);
      const info = await stat(real);
      if (!info.isFile()) throw errors.invalid(`Import source "${request.source.path}" is not a regular file`, { field: 'source' });
      if (info.size > this.o.maxBytes) throw errors.tooLarge(`Import source "${request.source.path}" has ${info.size} bytes; the limit of an image import is ${this.o.maxBytes}`, { limit: this.o.maxBytes });
    } else {
      try {
        new URL(request.source.url);
      } catch {
        throw errors.invalid(`"${request.source.url.slice(0, 200)}" is not a valid URL`, { field: 'source' });
      }
    }
    const params: ImportParams = { name: request.name, version, source: request.source, ...(request.format ? { format: request.format } : {}) };
    return this.o.runner.submit(
      { kind: 'image.import', targetKind: 'image', targetId: label, params: params as unknown as Record<string, unknown>, actor, idempotencyKey: idempotencyKey ?? null },
      `Image "${label}"`,
    );
  }

  private workDir(op: OperationRecord): string {
    return path.join(this.o.library.libraryDir, '.tmp', op.id);
  }

  private async runImport(ctx: OperationContext): Promise<unknown> {
    const p = ctx.op.params as unknown as ImportParams;
    const label = `${p.name}:${p.version}`;
    const origin = originOf(p.source);
    const work = this.workDir(ctx.op);
    await mkdir(this.o.library.libraryDir, { recursive: true, mode: 0o700 });
    await rm(work, { recursive: true, force: true });
    await mkdir(work, { recursive: true, mode: 0o700 });
    const fetched = path.join(work, 'source');
    let stored: string | undefined;
    try {
      await ctx.phase('fetch', 5, origin);
      if ('url' in p.source) await this.download(p.source.url, fetched, ctx.signal);
      else await this.copyIn(p.source.path, fetched, ctx.signal);

      await ctx.phase('inspect', 50);
      const format = await this.inspect(fetched, label, p.format);

      await ctx.phase('store', 70, format === 'iso' ? 'kept as it is' : `converted from ${format} to qcow2`);
      const target = this.o.library.fileOf({ name: p.name, version: p.version, format: format === 'iso' ? 'iso' : 'qcow2' });
      const partial = `${target}.partial`;
      await rm(partial, { force: true });
      // A fresh qcow2 written by qemu-img: whatever the source carried beyond the guest's data is left behind.
      if (format === 'iso') await rename(fetched, partial);
      else await QemuImg.convert(fetched, format, partial, 'qcow2', convertOptions);
      await chmod(partial, 0o600);
      await rename(partial, target);
      stored = target;

      await ctx.phase('register', 90);
      const image = await this.o.store.images.create({
        name: p.name,
        version: p.version,
        format: format === 'iso' ? 'iso' : 'qcow2',
        sizeBytes: (await stat(target)).size,
        sha256: await sha256File(target),
        source: origin,
      });
      stored = undefined;
      await this.publish('image.created', image.id, publicImage(image) as unknown as Record<string, unknown>);
      return { image: publicImage(image) };
    } finally {
      await rm(work, { recursive: true, force: true });
      if (stored) await rm(stored, { force: true });
    }
  }

  /** Streams a URL into `target` (never held in memory), within the size and time limits. */
  private async download(url: string, target: string, cancel: AbortSignal): Promise<void> {
    const shown = shownUrl(url);
    const timeout = AbortSignal.timeout(this.o.downloadTimeoutMs);
    const signal = AbortSignal.any([cancel, timeout]);
    const failure = (cause: unknown): unknown => {
      if (cancel.aborted) return cancel.reason;
      if (timeout.aborted) return errors.timeout(`The download of ${shown} did not finish within ${this.o.downloadTimeoutMs} ms`, { timeoutMs: this.o.downloadTimeoutMs });
      if (isDroverError(cause)) return cause;
      const reason = (cause as { cause?: { message?: string } })?.cause?.message ?? (cause as Error)?.message ?? String(cause);
      return errors.unavailable(`The download of ${shown} failed: ${reason}`, { url: shown });
    };
    let response: Response;
    try {
      response = await fetch(url, { signal, redirect: 'follow' });
    } catch (cause) {
      throw failure(cause);
    }
    if (!response.ok || !response.body) {
      await response.body?.cancel().catch(() => undefined);
      const message = `The download of ${shown} was answered ${response.status} ${response.statusText}`.trim();
      throw response.status === 404 || response.status === 410 ? errors.notFound('Download', shown) : errors.unavailable(message, { url: shown, status: response.status });
    }
    const declared = Number(response.headers.get('content-length') ?? Number.NaN);
    if (declared > this.o.maxBytes) {
      await response.body.cancel().catch(() => undefined);
      throw errors.tooLarge(`The download of ${shown} has ${declared} bytes; the limit of an image import is ${this.o.maxBytes}`, { limit: this.o.maxBytes });
    }
    const handle = await open(target, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      await pipeline(Readable.fromWeb(response.body as import('node:stream/web').ReadableStream), byteLimit(this.o.maxBytes, `The download of ${shown}`), createWriteStream('', { fd: handle }), { signal });
    } catch (cause) {
      throw failure(cause);
    }
  }

  /** Copies an allowed file into `target` (judged again: the file may have changed since the request). */
  private async copyIn(requested: string, target: string, signal: AbortSignal): Promise<void> {
    const source = await resolveImportSource(requested, this.o.importDirs);
    let input;
    try {
      input = await open(source, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (cause) {
      throw errors.unavailable(`Cannot open "${requested}": ${(cause as Error).message}`);
    }
    try {
      if (!(await input.stat()).isFile()) throw errors.invalid(`Import source "${requested}" is not a regular file`);
      const output = await open(target, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
      await pipeline(input.createReadStream({ autoClose: false }), byteLimit(this.o.maxBytes, `"${requested}"`), createWriteStream('', { fd: output }), { signal });
    } catch (cause) {
      throw signal.aborted ? signal.reason : cause;
    } finally {
      await input.close().catch(() => undefined);
    }
  }

  /**
   * The untrusted-image checks: the format from the content (never probed by
   * qemu-img) and matching the declared one; then qemu-img with that format
   * forced, refusing backing files, data files, extra extents, encryption,
   * corruption and a virtual size over the limit.
   */
  private async inspect(file: string, label: string, declared: ImportFormat | undefined): Promise<ImportFormat> {
    const handle = await open(file, 'r');
    const header = Buffer.alloc(sniffBytes);
    let size: number;
    try {
      const { bytesRead } = await handle.read(header, 0, header.length, 0);
      size = (await handle.stat()).size;
      header.fill(0, bytesRead);
    } finally {
      await handle.close();
    }
    const format = importFormat(label, declared, sniffImageFormat(header), size);
    const asQemu = format === 'iso' ? 'raw' : format;
    try {
      await QemuImg.inspectUntrusted(file, asQemu, { maxVirtualSizeBytes: this.o.maxVirtualBytes });
      if (asQemu === 'qcow2') {
        const check = await QemuImg.check(file, 'qcow2');
        if (check.corruptions > 0 || check.checkErrors > 0) {
          throw errors.invalid('refused', { reasons: [`qemu-img check found ${check.corruptions} corruptions and ${check.checkErrors} errors`] });
        }
      }
    } catch (cause) {
      // Said with the image's name: the work file's path is not the caller's business.
      const reasons = isDroverError(cause) ? (cause.details as { reasons?: string[] }).reasons : undefined;
      if (reasons) throw errors.invalid(`Image "${label}" was refused as ${format}: ${reasons.join('; ')}`, { format, reasons });
      throw cause;
    }
    return format;
  }

  /**
   * A manager died during an import: nothing half-done is kept. If the image
   * got registered, the import is done; otherwise its files are removed and it
   * fails, to be asked again (downloads are not resumed behind the caller's back).
   */
  private async recoverImport(ctx: OperationContext): Promise<unknown> {
    const p = ctx.op.params as unknown as ImportParams;
    const label = `${p.name}:${p.version}`;
    const image = await this.o.store.images.getRelease(p.name, p.version).catch(() => undefined);
    await rm(this.workDir(ctx.op), { recursive: true, force: true });
    if (image && image.source === originOf(p.source)) return { image: publicImage(image) };
    for (const format of ['qcow2', 'iso'] as const) {
      const file = this.o.library.fileOf({ name: p.name, version: p.version, format });
      await rm(`${file}.partial`, { force: true });
      if (!image) await rm(file, { force: true });
    }
    throw errors.unavailable(`The import of image "${label}" was interrupted by a manager restart in phase "${ctx.op.phase}"; nothing was kept, import it again`);
  }

  // ------------------------------------------------------------ delete

  /** Refuses (409) an appliance or an image a VM uses, then submits the deletion. */
  async submitDelete(ref: string, actor: string, idempotencyKey?: string): Promise<OperationRecord> {
    const image = await this.find(ref);
    const label = `${image.name}:${image.version}`;
    if (image.format === 'appliance') throw errors.conflict(`Image "${label}" is a built-in appliance; the manager registers it again at every start`);
    const users = await this.usedBy(image.id);
    if (users.length > 0) throw errors.conflict(`Image "${label}" is used by VM ${users.join(', ')}; delete those VMs first`, { usedBy: users });
    // A package's disks and boot files go with the package (DELETE /api/v1/packages/:id).
    const packages = (await this.o.store.packages.all()).filter((p) => Object.values(p.images).includes(image.id)).map((p) => `${p.name}:${p.version}`);
    if (packages.length > 0) throw errors.conflict(`Image "${label}" belongs to package ${packages.join(', ')}; delete the package instead`, { packages });
    return this.o.runner.submit(
      { kind: 'image.delete', targetKind: 'image', targetId: image.id, params: { name: image.name, version: image.version, format: image.format }, actor, idempotencyKey: idempotencyKey ?? null },
      `Image "${label}"`,
    );
  }

  /**
   * Removes the image's volume from every online host (a host that is away, or
   * still holds a clone based on it, keeps its copy: it is reported), then the
   * record and the library file.
   */
  private async runDelete(ctx: OperationContext): Promise<unknown> {
    const p = ctx.op.params as { name: string; version: string; format: string };
    const image = { id: ctx.op.targetId, ...p };
    await ctx.phase('check', 10);
    const users = await this.usedBy(image.id);
    if (users.length > 0) throw errors.conflict(`Image "${p.name}:${p.version}" is used by VM ${users.join(', ')}; delete those VMs first`, { usedBy: users });
    await ctx.phase('hosts', 30);
    const cleaned: string[] = [];
    const kept: Array<{ host: string; reason: string }> = [];
    const hosts = await this.o.store.hosts.list({ limit: 1000 });
    for (const host of hosts.items) {
      if (host.state !== 'online') {
        kept.push({ host: host.name, reason: `host is ${host.state}` });
        continue;
      }
      try {
        await this.o.link.deleteVolume(host, vmPool, imageVolumeName(image));
        cleaned.push(host.name);
      } catch (error) {
        const reason = error instanceof DroverError ? error.message : String(error);
        this.o.logger.warn({ host: host.name, image: image.id, err: error }, 'image volume kept on host');
        kept.push({ host: host.name, reason });
      }
    }
    await ctx.phase('library', 80);
    await this.o.store.images.delete(image.id).catch((error: unknown) => {
      if (!(isDroverError(error) && error.code === 'not_found')) throw error;
    });
    await rm(this.o.library.fileOf(image), { force: true });
    await this.publish('image.deleted', image.id, { id: image.id, name: p.name, version: p.version });
    return { deleted: true, hosts: cleaned, kept };
  }
}

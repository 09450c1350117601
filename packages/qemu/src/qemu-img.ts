import { spawn } from 'node:child_process';
import { lstat, open, unlink } from 'node:fs/promises';
import { dirname, isAbsolute, relative } from 'node:path';
import { DroverError, errors } from '@drover/core';
import { escapeOptionValue } from './argv.js';
import { moduleLogger } from './log.js';

const log = moduleLogger('drover:qemu:qemu-img');

export type ImageFormat = 'qcow2' | 'raw';

/** Resource limits applied to every qemu-img run through prlimit(1). */
export interface QemuImgLimits {
  /** RLIMIT_CPU, seconds of CPU time (60). */
  cpuSeconds: number;
  /** RLIMIT_AS, bytes of address space (1 GiB). */
  addressSpaceBytes: number;
}

export interface QemuImgOptions {
  limits?: Partial<QemuImgLimits>;
  /** Wall-clock limit; qemu-img is killed when it is reached (120 s). */
  timeoutMs?: number;
  /** `qemu-img` by default, looked up in PATH. */
  binary?: string;
  /** `prlimit` (util-linux) by default. */
  prlimitBinary?: string;
}

export const defaultQemuImgLimits: QemuImgLimits = { cpuSeconds: 60, addressSpaceBytes: 1024 ** 3 };
const defaultTimeoutMs = 120_000;
const maxStdoutBytes = 16 * 1024 * 1024;
const maxStderrBytes = 64 * 1024;

export interface ImageSnapshot {
  id: string;
  name: string;
  vmStateSize: number;
  date: Date;
  /** Guest clock at the snapshot, in nanoseconds. */
  vmClockNs: number;
}

/** `qemu-img info --output=json`, with the fields Drover uses lifted out; `raw` keeps all. */
export interface ImageInfo {
  filename: string;
  format: string;
  virtualSize: number;
  actualSize: number | undefined;
  clusterSize: number | undefined;
  dirty: boolean;
  backingFilename: string | undefined;
  fullBackingFilename: string | undefined;
  backingFormat: string | undefined;
  /** qcow2 external data file, when the image has one. */
  dataFile: string | undefined;
  dataFileRaw: boolean | undefined;
  corrupt: boolean | undefined;
  /** qcow2 compatibility level (`0.10` or `1.1`). */
  compat: string | undefined;
  snapshots: ImageSnapshot[];
  raw: Record<string, unknown>;
}

export interface ImageCheckResult {
  /** False for formats qemu-img cannot check (raw): nothing was checked. */
  supported: boolean;
  ok: boolean;
  corruptions: number;
  leaks: number;
  checkErrors: number;
  raw: Record<string, unknown>;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

export interface RunContext {
  op: string;
  path: string;
}

function limitsOf(options: QemuImgOptions): QemuImgLimits {
  return { ...defaultQemuImgLimits, ...options.limits };
}

/**
 * The exact command line a qemu-img call runs: qemu-img under prlimit, so a hostile image
 * cannot make it eat the host's CPU or memory.
 * @example qemuImgArgv(['info', '-f', 'raw', '/x']) // ['prlimit', '--cpu=60', '--as=1073741824', '--', 'qemu-img', 'info', ...]
 */
export function qemuImgArgv(args: readonly string[], options: QemuImgOptions = {}): string[] {
  const limits = limitsOf(options);
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isInteger(value) || value < 1) throw errors.invalid(`Invalid qemu-img limit ${name}: ${value}`);
  }
  return [
    options.prlimitBinary ?? 'prlimit',
    `--cpu=${limits.cpuSeconds}`,
    `--as=${limits.addressSpaceBytes}`,
    '--',
    options.binary ?? 'qemu-img',
    ...args,
  ];
}

function lastLine(text: string, tool: string): string {
  const lines = text.trim().split('\n');
  return (lines.at(-1) ?? '').replace(new RegExp(`^${tool.replace(/[^A-Za-z0-9]/g, '\\$&')}: `), '');
}

/**
 * Runs qemu-img (under prlimit, with a wall-clock timeout) and returns its output; a
 * failure becomes a DroverError that names the operation and the image.
 */
export function runQemuImg(
  args: readonly string[],
  options: QemuImgOptions = {},
  context: RunContext = { op: String(args[0]), path: String(args.at(-1)) },
): Promise<RunResult> {
  return runLimitedTool('qemu-img', args, options, context);
}

/**
 * Runs another image tool that reads untrusted or caller-given input the same way as
 * qemu-img: never through a shell, under prlimit, with a wall-clock timeout and
 * bounded output; `tool` is the binary (looked up in PATH) and names it in errors.
 * @example await runLimitedTool('genisoimage', ['-quiet', '-o', out, '-V', 'cidata', dir], {}, { op: 'seed', path: out })
 */
export function runLimitedTool(tool: string, args: readonly string[], options: QemuImgOptions, context: RunContext): Promise<RunResult> {
  const argv = qemuImgArgv(args, { ...options, binary: options.binary ?? tool });
  const timeoutMs = options.timeoutMs ?? defaultTimeoutMs;
  const limits = limitsOf(options);
  log.debug({ argv }, 'qemu-img');
  return new Promise<RunResult>((resolve, reject) => {
    // LC_ALL=C keeps messages stable; nothing else of the agent's environment leaks in.
    // MALLOC_ARENA_MAX=2: glibc reserves an arena per thread, and qemu-img's thread pool
    // could reserve past the address-space limit under load (SIGABRT in qemu_thread_create).
    const child = spawn(argv[0] as string, argv.slice(1), {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C', MALLOC_ARENA_MAX: '2' },
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let stdoutBytes = 0;
    let stderrBytes = 0;
    let timedOut = false;
    let overflow = false;
    child.stdout.on('data', (chunk: Buffer) => {
      stdoutBytes += chunk.length;
      if (stdoutBytes > maxStdoutBytes) {
        overflow = true;
        child.kill('SIGKILL');
      } else {
        stdout.push(chunk);
      }
    });
    child.stderr.on('data', (chunk: Buffer) => {
      if (stderrBytes < maxStderrBytes) stderr.push(chunk);
      stderrBytes += chunk.length;
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(errors.unavailable(`Cannot run "${argv[0]}": ${error.message}`, { argv }, error));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const out = Buffer.concat(stdout).toString('utf8');
      const err = Buffer.concat(stderr).toString('utf8');
      const details = { op: context.op, path: context.path, exitCode: code, signal, stderr: err, limits };
      if (timedOut) {
        reject(
          errors.timeout(`${tool} ${context.op} of "${context.path}" did not finish within ${timeoutMs} ms; it was killed`, {
            ...details,
            timeoutMs,
          }),
        );
      } else if (overflow) {
        reject(errors.tooLarge(`${tool} ${context.op} of "${context.path}" printed more than ${maxStdoutBytes} bytes`, details));
      } else if (signal !== null) {
        // A signal here is almost always a limit: SIGXCPU/SIGKILL for CPU time, SIGABRT or
        // SIGSEGV when an allocation fails under the address-space limit.
        reject(
          new DroverError(
            'unprocessable',
            `${tool} ${context.op} of "${context.path}" was killed by ${signal} (limits: ${limits.cpuSeconds} s CPU, ` +
              `${limits.addressSpaceBytes} bytes of address space)${err.trim() === '' ? '' : `: ${lastLine(err, tool)}`}`,
            { details },
          ),
        );
      } else if (code !== 0) {
        const message = `${tool} ${context.op} failed for "${context.path}": ${lastLine(err, tool) || `exit code ${code}`}`;
        const notFound = /No such file or directory/.test(err);
        // Some commands report through stdout even when they fail (check: exit 2 and 3).
        const withOutput = { ...details, stdout: out.slice(0, maxStderrBytes) };
        reject(new DroverError(notFound ? 'not_found' : 'unprocessable', message, { details: withOutput }));
      } else {
        resolve({ stdout: out, stderr: err });
      }
    });
  });
}

function checkPath(path: string, what = 'image path'): void {
  if (/[\n\r\0]/.test(path)) {
    throw errors.invalid(`Invalid ${what} ${JSON.stringify(path)}: it must not contain a newline or NUL`);
  }
  if (!isAbsolute(path)) throw errors.invalid(`Invalid ${what} "${path}": it must be an absolute path`);
}

function checkFormat(format: string): asserts format is ImageFormat {
  if (format !== 'qcow2' && format !== 'raw') {
    throw errors.invalid(`Unsupported image format "${format}": expected "qcow2" or "raw"`, { format });
  }
}

function checkSize(sizeBytes: number): void {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 1) {
    throw errors.invalid(`Invalid image size ${sizeBytes}: expected a positive number of bytes`);
  }
}

function checkTag(tag: string): void {
  if (tag.length === 0 || /[\n\r\0]/.test(tag)) throw errors.invalid(`Invalid snapshot name ${JSON.stringify(tag)}`);
}

/**
 * Creates `path` exclusively, then lets qemu-img fill it: qemu-img itself would silently
 * truncate an existing image, and an `exists` check before it would race.
 */
async function withNewFile(path: string, run: () => Promise<unknown>): Promise<void> {
  try {
    await (await open(path, 'wx', 0o600)).close();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
      throw errors.conflict(`Cannot create image "${path}": the file already exists`, { path });
    }
    throw error;
  }
  try {
    await run();
  } catch (error) {
    await unlink(path).catch(() => {});
    throw error;
  }
}

function numberOr(value: unknown): number | undefined {
  return typeof value === 'number' ? value : undefined;
}

function stringOr(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

export function parseImageInfo(json: string): ImageInfo {
  const raw = JSON.parse(json) as Record<string, unknown>;
  const specific = (raw['format-specific'] as { data?: Record<string, unknown> } | undefined)?.data ?? {};
  const snapshots = Array.isArray(raw.snapshots) ? (raw.snapshots as Array<Record<string, unknown>>) : [];
  return {
    filename: String(raw.filename),
    format: String(raw.format),
    virtualSize: Number(raw['virtual-size']),
    actualSize: numberOr(raw['actual-size']),
    clusterSize: numberOr(raw['cluster-size']),
    dirty: raw['dirty-flag'] === true,
    backingFilename: stringOr(raw['backing-filename']),
    fullBackingFilename: stringOr(raw['full-backing-filename']),
    backingFormat: stringOr(raw['backing-filename-format']),
    dataFile: stringOr(specific['data-file']),
    dataFileRaw: typeof specific['data-file-raw'] === 'boolean' ? specific['data-file-raw'] : undefined,
    corrupt: typeof specific.corrupt === 'boolean' ? specific.corrupt : undefined,
    compat: stringOr(specific.compat),
    snapshots: snapshots.map((s) => ({
      id: String(s.id),
      name: String(s.name),
      vmStateSize: Number(s['vm-state-size'] ?? 0),
      date: new Date(Number(s['date-sec'] ?? 0) * 1000 + Math.floor(Number(s['date-nsec'] ?? 0) / 1e6)),
      vmClockNs: Number(s['vm-clock-sec'] ?? 0) * 1e9 + Number(s['vm-clock-nsec'] ?? 0),
    })),
    raw,
  };
}

/** Why an image must not be used as untrusted input; empty when it is acceptable. */
export function untrustedImageProblems(info: ImageInfo, declaredFormat: ImageFormat): string[] {
  const problems: string[] = [];
  if (info.format !== declaredFormat) problems.push(`it opened as "${info.format}", not "${declaredFormat}"`);
  if (info.backingFilename !== undefined || info.fullBackingFilename !== undefined) {
    problems.push(`it has a backing file ("${info.backingFilename ?? info.fullBackingFilename}")`);
  }
  if (info.dataFile !== undefined) problems.push(`it has an external data file ("${info.dataFile}")`);
  const specific = (info.raw['format-specific'] as { data?: Record<string, unknown> } | undefined)?.data ?? {};
  if (Array.isArray(specific.extents) && specific.extents.length > 1) {
    problems.push(`it has ${specific.extents.length} extents`);
  }
  if (Array.isArray(info.raw.children) && info.raw.children.length > 1) {
    problems.push(`it has ${info.raw.children.length} child nodes`);
  }
  if (info.corrupt === true) problems.push('it is marked corrupt');
  return problems;
}

const qcow2Magic = 0x514649fb;
const qcow2IncompatibleDataFile = 1n << 2n;
const qcow2ExtensionDataFile = 0x44415441;

/**
 * Reads the qcow2 header ourselves before qemu-img opens anything: qemu-img info would
 * already open an external data file, which may be any path on the host.
 */
async function qcow2HeaderProblems(path: string): Promise<string[]> {
  const handle = await open(path, 'r');
  let header: Buffer;
  try {
    const buffer = Buffer.alloc(65536);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    header = buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
  if (header.length < 72 || header.readUInt32BE(0) !== qcow2Magic) return ['it is not a qcow2 image (no qcow2 header)'];
  const version = header.readUInt32BE(4);
  if (version !== 2 && version !== 3) return [`it has an unsupported qcow2 version ${version}`];
  const problems: string[] = [];
  if (header.readBigUInt64BE(8) !== 0n || header.readUInt32BE(16) !== 0) problems.push('it has a backing file');
  if (header.readUInt32BE(32) !== 0) problems.push('it is encrypted');
  let extensionsAt = 72;
  if (version === 3) {
    if (header.length < 104) return ['its qcow2 header is truncated'];
    if ((header.readBigUInt64BE(72) & qcow2IncompatibleDataFile) !== 0n) problems.push('it has an external data file');
    extensionsAt = header.readUInt32BE(100);
  }
  // Header extensions: (type, length, data padded to 8 bytes) until type 0.
  for (let at = extensionsAt; at + 8 <= header.length; ) {
    const type = header.readUInt32BE(at);
    const length = header.readUInt32BE(at + 4);
    if (type === 0) break;
    if (type === qcow2ExtensionDataFile && !problems.includes('it has an external data file')) {
      problems.push('it has an external data file');
    }
    at += 8 + Math.ceil(length / 8) * 8;
  }
  return problems;
}

export interface InspectOptions extends QemuImgOptions {
  /** Refuse images whose virtual size is larger. */
  maxVirtualSizeBytes?: number;
}

export interface QemuImgApi {
  /** Creates a new image; refuses (conflict) when `path` exists. */
  create(path: string, format: ImageFormat, sizeBytes: number, options?: QemuImgOptions): Promise<void>;
  /** A qcow2 overlay whose backing file is `basePath` with its format recorded (`-F`). */
  createThinClone(
    basePath: string,
    baseFormat: ImageFormat,
    clonePath: string,
    options?: QemuImgOptions & { sizeBytes?: number; relativeBacking?: boolean },
  ): Promise<void>;
  /** Grows an image; shrinking must be asked for with `shrink`. */
  resize(path: string, format: ImageFormat, sizeBytes: number, options?: QemuImgOptions & { shrink?: boolean }): Promise<void>;
  /** `forceShare` (-U) reads an image a running QEMU holds locked. */
  info(path: string, format: ImageFormat, options?: QemuImgOptions & { forceShare?: boolean }): Promise<ImageInfo>;
  /** Copies `src` into a new image `dst` (flattening any backing chain); refuses an existing `dst`. */
  convert(src: string, srcFormat: ImageFormat, dst: string, dstFormat: ImageFormat, options?: QemuImgOptions): Promise<void>;
  check(path: string, format: ImageFormat, options?: QemuImgOptions): Promise<ImageCheckResult>;
  /** Internal snapshots of a qcow2 image; safe on an image in use (read with -U). */
  snapshotList(path: string, options?: QemuImgOptions): Promise<ImageSnapshot[]>;
  /** Offline internal snapshots (the VM must not run; QEMU's lock refuses otherwise). */
  snapshotCreate(path: string, tag: string, options?: QemuImgOptions): Promise<void>;
  snapshotApply(path: string, tag: string, options?: QemuImgOptions): Promise<void>;
  snapshotDelete(path: string, tag: string, options?: QemuImgOptions): Promise<void>;
  /**
   * Checks an image from an untrusted source before anything uses it. Only raw and qcow2;
   * the format is forced (never probed). Refuses (invalid) anything that is not a regular
   * file, has a backing file, an external data file, several extents or children, is
   * encrypted or corrupt, or is larger than `maxVirtualSizeBytes`.
   */
  inspectUntrusted(path: string, declaredFormat: string, options?: InspectOptions): Promise<ImageInfo>;
}

/** A QemuImg whose calls use `defaults` unless a call overrides them. */
export function createQemuImg(defaults: QemuImgOptions = {}): QemuImgApi {
  const merge = (options: QemuImgOptions = {}): QemuImgOptions => ({
    ...defaults,
    ...options,
    limits: { ...defaults.limits, ...options.limits },
  });
  /** `qemu-img snapshot` has no -f in 7.2: the format is forced through --image-opts. */
  const offlineSnapshot = async (flag: '-c' | '-a' | '-d', op: string, path: string, tag: string, options?: QemuImgOptions): Promise<void> => {
    checkPath(path);
    checkTag(tag);
    await runQemuImg(['snapshot', '-q', '--image-opts', flag, tag, qcow2ImageOpts(path)], merge(options), { op, path });
  };

  // qemu-img snapshot has no -f: --image-opts is how its format gets forced.
  const qcow2ImageOpts = (path: string): string =>
    `driver=qcow2,file.driver=file,file.filename=${escapeOptionValue(path)}`;

  const api: QemuImgApi = {
    async create(path, format, sizeBytes, options) {
      checkPath(path);
      checkFormat(format);
      checkSize(sizeBytes);
      await withNewFile(path, () =>
        runQemuImg(['create', '-q', '-f', format, path, String(sizeBytes)], merge(options), { op: 'create', path }),
      );
    },

    async createThinClone(basePath, baseFormat, clonePath, options = {}) {
      checkPath(basePath, 'base image path');
      checkPath(clonePath, 'clone path');
      checkFormat(baseFormat);
      if (options.sizeBytes !== undefined) checkSize(options.sizeBytes);
      // A relative backing path keeps the pair valid wherever their directory is mounted.
      const backing = options.relativeBacking ? relative(dirname(clonePath), basePath) : basePath;
      const args = ['create', '-q', '-f', 'qcow2', '-b', backing, '-F', baseFormat, clonePath];
      if (options.sizeBytes !== undefined) args.push(String(options.sizeBytes));
      await withNewFile(clonePath, () => runQemuImg(args, merge(options), { op: 'create', path: clonePath }));
    },

    async resize(path, format, sizeBytes, options = {}) {
      checkPath(path);
      checkFormat(format);
      checkSize(sizeBytes);
      if (options.shrink !== true) {
        const { virtualSize } = await api.info(path, format, options);
        if (sizeBytes < virtualSize) {
          throw errors.invalid(
            `Cannot shrink image "${path}" from ${virtualSize} to ${sizeBytes} bytes without the shrink option`,
            { path, virtualSize, sizeBytes },
          );
        }
      }
      const args = ['resize', '-q', '-f', format];
      if (options.shrink === true) args.push('--shrink');
      args.push(path, String(sizeBytes));
      await runQemuImg(args, merge(options), { op: 'resize', path });
    },

    async info(path, format, options = {}) {
      checkPath(path);
      checkFormat(format);
      const args = ['info', '-f', format, '--output=json'];
      if (options.forceShare === true) args.push('-U');
      args.push(path);
      const { stdout } = await runQemuImg(args, merge(options), { op: 'info', path });
      return parseImageInfo(stdout);
    },

    async convert(src, srcFormat, dst, dstFormat, options) {
      checkPath(src, 'source image path');
      checkPath(dst, 'target image path');
      checkFormat(srcFormat);
      checkFormat(dstFormat);
      await withNewFile(dst, () =>
        runQemuImg(['convert', '-q', '-f', srcFormat, '-O', dstFormat, src, dst], merge(options), {
          op: 'convert',
          path: src,
        }),
      );
    },

    async check(path, format, options) {
      checkPath(path);
      checkFormat(format);
      let stdout: string;
      try {
        ({ stdout } = await runQemuImg(['check', '-f', format, '--output=json', path], merge(options), { op: 'check', path }));
      } catch (error) {
        const details = error instanceof DroverError ? error.details : {};
        // Exit 2 (corruptions) and 3 (leaks) still print the JSON report; 63 means "no checks for this format".
        if (details.exitCode === 63) {
          return { supported: false, ok: true, corruptions: 0, leaks: 0, checkErrors: 0, raw: {} };
        }
        if ((details.exitCode === 2 || details.exitCode === 3) && typeof details.stdout === 'string') {
          stdout = details.stdout;
        } else {
          throw error;
        }
      }
      const raw = JSON.parse(stdout) as Record<string, unknown>;
      const corruptions = Number(raw.corruptions ?? 0);
      const leaks = Number(raw.leaks ?? 0);
      const checkErrors = Number(raw['check-errors'] ?? 0);
      return { supported: true, ok: corruptions === 0 && leaks === 0 && checkErrors === 0, corruptions, leaks, checkErrors, raw };
    },

    async snapshotList(path, options) {
      // JSON from `info` rather than the table of `snapshot -l`, which is meant for people.
      return (await api.info(path, 'qcow2', { ...options, forceShare: true })).snapshots;
    },

    snapshotCreate: (path, tag, options) => offlineSnapshot('-c', 'snapshot create', path, tag, options),
    snapshotApply: (path, tag, options) => offlineSnapshot('-a', 'snapshot apply', path, tag, options),
    snapshotDelete: (path, tag, options) => offlineSnapshot('-d', 'snapshot delete', path, tag, options),

    async inspectUntrusted(path, declaredFormat, options = {}) {
      checkPath(path);
      if (declaredFormat !== 'qcow2' && declaredFormat !== 'raw') {
        throw errors.invalid(`Image "${path}" was refused: format "${declaredFormat}" is not accepted (only raw and qcow2)`, {
          path,
          format: declaredFormat,
        });
      }
      const refuse = (reasons: string[]): DroverError =>
        errors.invalid(`Image "${path}" was refused: ${reasons.join('; ')}`, { path, format: declaredFormat, reasons });
      let stats;
      try {
        stats = await lstat(path);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw errors.notFound('image', path);
        throw error;
      }
      if (!stats.isFile()) throw refuse(['it is not a regular file']);
      if (declaredFormat === 'qcow2') {
        const problems = await qcow2HeaderProblems(path);
        if (problems.length > 0) throw refuse(problems);
      }
      let info: ImageInfo;
      try {
        info = await api.info(path, declaredFormat, options);
      } catch (error) {
        if (error instanceof DroverError && error.code === 'unprocessable') {
          throw refuse([`qemu-img cannot read it as ${declaredFormat} (${error.message})`]);
        }
        throw error;
      }
      const problems = untrustedImageProblems(info, declaredFormat);
      if (options.maxVirtualSizeBytes !== undefined && info.virtualSize > options.maxVirtualSizeBytes) {
        problems.push(`its virtual size ${info.virtualSize} is above the limit of ${options.maxVirtualSizeBytes} bytes`);
      }
      if (problems.length > 0) throw refuse(problems);
      return info;
    },
  };
  return api;
}

/**
 * qemu-img with a forced format on every call, under prlimit (60 s CPU, 1 GiB address
 * space by default) and a wall-clock timeout.
 * @example await QemuImg.createThinClone('/images/base.qcow2', 'qcow2', '/vms/web-1/disk0.qcow2')
 */
export const QemuImg: QemuImgApi = createQemuImg();

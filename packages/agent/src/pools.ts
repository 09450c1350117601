import { constants, createWriteStream } from 'node:fs';
import { chmod, chown, mkdir, open, readdir, readFile, rename, rm, stat, statfs, writeFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DroverError, errors, isDroverError } from '@drover/core';
import type { PoolInfo, PoolSpec, VolumeCreate, VolumeEnsure, VolumeInfo } from '@drover/api';
import { QemuImg, runQemuImg, type IscsiLun } from '@drover/qemu';
import type { Account } from './account.js';
import { resolveImportSource } from './import-source.js';

export type VolumeFormat = 'raw' | 'qcow2';

export interface Pool {
  name: string;
  /** The directory; for an iSCSI pool `iscsi://PORTAL/TARGET` (what "the same pool" means to migration). */
  path: string;
  shared: boolean;
  /** Pools from the configuration file cannot be removed through the API. */
  fromConfig: boolean;
  /** An iSCSI target whose LUNs are the volumes (`lun<N>`, raw), opened by QEMU's own initiator. */
  iscsi?: IscsiTarget;
}

export interface IscsiTarget {
  /** HOST:PORT of the target's portal. */
  portal: string;
  /** The target's IQN. */
  target: string;
}

/** What QEMU opens for a volume: a file, or an iSCSI LUN (`path` is then its URL, for messages). */
export interface VolumeSource {
  path: string;
  iscsi?: IscsiLun;
}

const iscsiPortalPattern = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/;
const iscsiTargetPattern = /^iqn\.\d{4}-\d{2}\.[A-Za-z0-9.:_-]{1,200}$/;
const lunNamePattern = /^lun(\d{1,3})$/;
/** LUNs 0–31 are looked for on an iSCSI target (LUN 0 is often the target's controller: no disk, size 0). */
const iscsiLunsProbed = 32;
/** How long a discovery of an iSCSI target's LUNs is reused. */
const iscsiDiscoveryTtlMs = 30_000;

export function iscsiPoolUrl(target: IscsiTarget): string {
  return `iscsi://${target.portal}/${target.target}`;
}

/** A clear 400 for an iSCSI target that cannot be one. */
export function checkIscsiTarget(target: IscsiTarget): void {
  const [, port] = /:(\d+)$/.exec(target.portal) ?? [];
  if (!iscsiPortalPattern.test(target.portal) || !(Number(port) >= 1 && Number(port) <= 65535)) {
    throw errors.invalid(`iSCSI portal "${target.portal.slice(0, 80)}" is not HOST:PORT`, { field: 'iscsi.portal' });
  }
  if (!iscsiTargetPattern.test(target.target)) {
    throw errors.invalid(`iSCSI target "${target.target.slice(0, 80)}" is not an IQN (iqn.YYYY-MM.reversed.domain[:name])`, { field: 'iscsi.target' });
  }
}

/** The extension decides the format, so a volume's format never depends on sniffing its content. */
export function volumeFormat(volume: string): VolumeFormat {
  return volume.endsWith('.qcow2') ? 'qcow2' : 'raw';
}

const volumeNamePattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
/** Marks a directory as a Drover pool (starts with a dot, so it can never be a volume name). */
const poolMarker = '.drover-pool';

/**
 * The virtual size and backing file name in a qcow2 header (versions 2 and 3:
 * magic "QFI\xfb", backing file offset and length at 8 and 16, size at 24), or
 * undefined when the file does not start like one. Only for files qemu-img
 * wrote here, never for untrusted images: those go through `qemu-img info`.
 */
export async function readQcow2Header(file: string): Promise<{ virtualBytes: number; backing?: string } | undefined> {
  const handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const head = Buffer.alloc(32);
    if ((await handle.read(head, 0, 32, 0)).bytesRead < 32) return undefined;
    const version = head.readUInt32BE(4);
    if (head.readUInt32BE(0) !== 0x514649fb || (version !== 2 && version !== 3)) return undefined;
    const virtualBytes = Number(head.readBigUInt64BE(24));
    const backingOffset = Number(head.readBigUInt64BE(8));
    const backingLength = head.readUInt32BE(16);
    if (backingOffset === 0) return { virtualBytes };
    if (backingLength === 0 || backingLength > 1023) return undefined;
    const name = Buffer.alloc(backingLength);
    if ((await handle.read(name, 0, backingLength, backingOffset)).bytesRead < backingLength) return undefined;
    return { virtualBytes, backing: name.toString('utf8') };
  } finally {
    await handle.close();
  }
}

/**
 * Storage pools: directories holding volumes. A pool marked shared is the same
 * directory (or LUN) on several hosts; that matters to migration, not here.
 */
export class PoolRegistry {
  private readonly pools = new Map<string, Pool>();
  private readonly file: string;

  constructor(
    private readonly stateDir: string,
    private readonly configPools: Array<{ name: string; path?: string; shared?: boolean; iscsi?: IscsiTarget }>,
    private readonly account: Account,
    private readonly usedBy: (pool: string, volume: string) => Array<{ name: string; running: boolean }>,
    /** Directories `importFrom` may read (the agent runs as root: it must not import /etc/shadow). */
    private readonly importDirs: string[] = [],
    /** This host's name, in the iSCSI initiator names QEMU logs in with. */
    private readonly hostName = 'host',
  ) {
    this.file = path.join(stateDir, 'pools.json');
  }

  async init(): Promise<void> {
    for (const p of this.configPools) {
      if ((p.path === undefined) === (p.iscsi === undefined)) throw errors.invalid(`Pool "${p.name}" in the configuration needs either a path or an iscsi target, not both`);
      if (p.iscsi) {
        checkIscsiTarget(p.iscsi);
        this.pools.set(p.name, { name: p.name, path: iscsiPoolUrl(p.iscsi), shared: p.shared ?? true, fromConfig: true, iscsi: { portal: p.iscsi.portal, target: p.iscsi.target } });
      } else {
        this.pools.set(p.name, { name: p.name, path: path.resolve(p.path!), shared: p.shared ?? false, fromConfig: true });
      }
    }
    let saved: Pool[] = [];
    try {
      saved = JSON.parse(await readFile(this.file, 'utf8')) as Pool[];
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code !== 'ENOENT') throw cause;
    }
    for (const p of saved) if (!this.pools.has(p.name)) this.pools.set(p.name, { ...p, fromConfig: false });
    for (const pool of this.pools.values()) if (!pool.iscsi) await this.prepareDirectory(pool.path);
  }

  /** root:<qemu group> 0750: QEMU may traverse and read what the agent gives it, nobody else may look. */
  private async prepareDirectory(dir: string): Promise<void> {
    await mkdir(dir, { recursive: true });
    await chown(dir, 0, this.account.gid);
    await chmod(dir, 0o750);
  }

  private async persist(): Promise<void> {
    const own = [...this.pools.values()].filter((p) => !p.fromConfig);
    const tmp = `${this.file}.tmp`;
    await writeFile(tmp, JSON.stringify(own, null, 2));
    await rename(tmp, this.file);
  }

  get(name: string): Pool {
    const pool = this.pools.get(name);
    if (!pool) throw errors.notFound('Pool', name);
    return pool;
  }

  names(): string[] {
    return [...this.pools.keys()];
  }

  async define(spec: PoolSpec): Promise<PoolInfo> {
    if (this.pools.has(spec.name)) throw errors.conflict(`Pool "${spec.name}" already exists`);
    if ('iscsi' in spec) return this.defineIscsi(spec.name, spec.iscsi, spec.shared ?? true);
    const resolved = path.resolve(spec.path);
    for (const other of this.pools.values()) {
      if (resolved === other.path || resolved.startsWith(other.path + path.sep) || other.path.startsWith(resolved + path.sep)) {
        throw errors.conflict(`Pool path "${spec.path}" overlaps pool "${other.name}" at "${other.path}"`);
      }
    }
    const pool: Pool = { name: spec.name, path: resolved, shared: spec.shared ?? false, fromConfig: false };
    // Never take over an existing directory (its owner and mode would change): new, empty, or a Drover pool already.
    const entries = await readdir(resolved).catch((cause: NodeJS.ErrnoException) => {
      if (cause.code === 'ENOENT') return [] as string[];
      throw errors.invalid(`Pool path "${spec.path}" cannot be used: ${cause.message}`);
    });
    if (entries.length > 0 && !entries.includes(poolMarker)) {
      throw errors.conflict(`Pool path "${spec.path}" is a directory that is not empty and not a Drover pool; use a new or empty directory`);
    }
    await this.prepareDirectory(pool.path);
    await writeFile(path.join(pool.path, poolMarker), `${spec.name}\n`);
    this.pools.set(pool.name, pool);
    await this.persist();
    return this.describe(pool.name);
  }

  /**
   * An iSCSI pool: nothing is made here (the LUNs are provisioned on the
   * target); the target is reached once so a wrong portal or IQN is a clear
   * 400 now rather than a failed start later.
   */
  private async defineIscsi(name: string, target: IscsiTarget, shared: boolean): Promise<PoolInfo> {
    checkIscsiTarget(target);
    const url = iscsiPoolUrl(target);
    const same = [...this.pools.values()].find((p) => p.path === url);
    if (same) throw errors.conflict(`iSCSI target ${url} is pool "${same.name}" already`);
    const pool: Pool = { name, path: url, shared, fromConfig: false, iscsi: { portal: target.portal, target: target.target } };
    const luns = await this.discoverLuns(pool, true);
    if (luns.size === 0) throw errors.invalid(`iSCSI target ${url} cannot be used from this host: ${this.lastIscsiError.get(url) ?? 'it has no LUN with a disk'}`, { field: 'iscsi' });
    this.pools.set(name, pool);
    await this.persist();
    return this.describe(name);
  }

  private readonly lunCache = new Map<string, { at: number; luns: Promise<Map<number, number>> }>();
  private readonly lastIscsiError = new Map<string, string>();

  /**
   * The LUNs of an iSCSI pool's target that hold a disk (number → bytes), as
   * QEMU's own initiator sees them (`qemu-img info` on each LUN URL). LUN 0
   * first (every SCSI target has one): when it does not answer the target is
   * unreachable and nothing more is asked; then LUNs 1–31, four at a time.
   * Kept for 30 s: host facts read it at every heartbeat, and an expired
   * answer is served while a new one is sought (an unreachable target never
   * holds the facts up).
   */
  private discoverLuns(pool: Pool, fresh = false): Promise<Map<number, number>> {
    const url = pool.path;
    const cached = this.lunCache.get(url);
    if (!fresh && cached && Date.now() - cached.at < iscsiDiscoveryTtlMs) return cached.luns;
    const probe = async (lun: number): Promise<number | undefined> => {
      const { stdout } = await runQemuImg(['info', '-f', 'raw', '--output=json', `${url}/${lun}`], { timeoutMs: 15_000 }, { op: 'info', path: `${url}/${lun}` });
      return Number((JSON.parse(stdout) as { 'virtual-size'?: number })['virtual-size'] ?? 0);
    };
    const luns = (async () => {
      const found = new Map<number, number>();
      try {
        const size = await probe(0);
        if (size) found.set(0, size);
      } catch (cause) {
        this.lastIscsiError.set(url, ((cause as { details?: { stderr?: string } }).details?.stderr ?? (cause as Error).message).trim().slice(0, 300));
        return found;
      }
      for (let first = 1; first < iscsiLunsProbed; first += 4) {
        await Promise.all(
          [0, 1, 2, 3].map(async (k) => {
            const lun = first + k;
            if (lun >= iscsiLunsProbed) return;
            const size = await probe(lun).catch(() => undefined);
            if (size) found.set(lun, size);
          }),
        );
      }
      return found;
    })();
    const entry = { at: Date.now(), luns };
    if (!cached || fresh) {
      this.lunCache.set(url, entry);
      return luns;
    }
    // Stale: answer with the last discovery; the new one replaces it once it is done.
    void luns.then(() => this.lunCache.set(url, entry), () => undefined);
    cached.at = Date.now();
    return cached.luns;
  }

  /** The LUN number of a volume name of an iSCSI pool (`lun<N>`), or a clear 400. */
  private lunOf(pool: Pool, volume: string): number {
    const m = lunNamePattern.exec(volume);
    if (!m) throw errors.invalid(`Volume "${volume.slice(0, 80)}" is not a LUN of iSCSI pool "${pool.name}": its volumes are named lun<N> (e.g. lun1)`);
    return Number(m[1]);
  }

  private refuseOnIscsi(poolName: string, what: string): void {
    const pool = this.get(poolName);
    if (pool.iscsi) throw errors.conflict(`Cannot ${what} in iSCSI pool "${poolName}": its volumes are the target's LUNs, provisioned on the target (${pool.path}), not by Drover`, { reason: 'iscsi' });
  }

  /**
   * What QEMU opens for a volume: the file, or the LUN through its own
   * initiator. Each QEMU logs in under its own initiator name (host and VM):
   * during a migration both hosts' QEMUs hold a session to the same LUN, and
   * two logins under one name would take each other's session over.
   */
  async volumeSource(poolName: string, volume: string, vmId?: string): Promise<VolumeSource> {
    const pool = this.get(poolName);
    const file = await this.requireVolume(poolName, volume);
    if (!pool.iscsi) return { path: file };
    const host = this.hostName.toLowerCase().replace(/[^a-z0-9.-]/g, '-').slice(0, 63);
    const initiatorName = `iqn.2026-11.org.drover:${host}${vmId ? `.${vmId}` : ''}`;
    return { path: file, iscsi: { portal: pool.iscsi.portal, target: pool.iscsi.target, lun: this.lunOf(pool, volume), initiatorName } };
  }

  async remove(name: string): Promise<void> {
    const pool = this.get(name);
    if (pool.fromConfig) throw errors.conflict(`Pool "${name}" comes from the agent configuration and cannot be removed through the API`);
    if (pool.iscsi) {
      // The LUNs stay on the target: the pool only goes once no VM here uses one.
      const used = (await this.volumeNames(name)).filter((v) => this.usedBy(name, v).length > 0);
      if (used.length > 0) throw errors.conflict(`Pool "${name}" has LUNs attached to VMs (${used.join(', ')})`, { volumes: used });
      this.pools.delete(name);
      this.lunCache.delete(pool.path);
      await this.persist();
      return;
    }
    const volumes = await this.volumeNames(name);
    if (volumes.length > 0) throw errors.conflict(`Pool "${name}" still holds ${volumes.length} volume(s)`, { volumes });
    this.pools.delete(name);
    await this.persist();
  }

  async describe(name: string): Promise<PoolInfo> {
    const pool = this.get(name);
    if (pool.iscsi) {
      const luns = await this.discoverLuns(pool);
      const bytes = [...luns.values()].reduce((a, b) => a + b, 0);
      return { name: pool.name, path: pool.path, shared: pool.shared, kind: 'iscsi', capacityBytes: bytes, availableBytes: 0, allocatedBytes: bytes, volumes: luns.size };
    }
    const fs = await statfs(pool.path);
    const volumes = await this.volumeNames(name);
    let allocated = 0;
    let count = 0;
    for (const v of volumes) {
      // A shared pool's volume may be deleted by another host between the listing and the stat: not counted.
      const info = await stat(path.join(pool.path, v)).catch((error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOENT') return undefined;
        throw error;
      });
      if (!info) continue;
      allocated += info.blocks * 512;
      count++;
    }
    return {
      name: pool.name,
      path: pool.path,
      shared: pool.shared,
      capacityBytes: fs.blocks * fs.bsize,
      availableBytes: fs.bavail * fs.bsize,
      allocatedBytes: allocated,
      volumes: count,
    };
  }

  async list(): Promise<PoolInfo[]> {
    return Promise.all(this.names().map((n) => this.describe(n)));
  }

  /**
   * The path of a volume, refusing anything that would leave the pool
   * directory (`..`, separators, absolute names).
   */
  volumePath(poolName: string, volume: string): string {
    const pool = this.get(poolName);
    if (pool.iscsi) return `${pool.path}/${this.lunOf(pool, volume)}`;
    if (!volumeNamePattern.test(volume)) {
      throw errors.invalid(`Volume name "${volume.slice(0, 80)}" is not allowed: use letters, digits, ".", "_" and "-" and start with a letter or digit`);
    }
    const full = path.resolve(pool.path, volume);
    if (path.dirname(full) !== pool.path) throw errors.invalid(`Volume "${volume}" is outside pool "${poolName}"`);
    return full;
  }

  async exists(poolName: string, volume: string): Promise<boolean> {
    const pool = this.get(poolName);
    if (pool.iscsi) {
      const lun = this.lunOf(pool, volume);
      return (await this.discoverLuns(pool)).has(lun) || (await this.discoverLuns(pool, true)).has(lun);
    }
    try {
      return (await stat(this.volumePath(poolName, volume))).isFile();
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw cause;
    }
  }

  async requireVolume(poolName: string, volume: string): Promise<string> {
    const file = this.volumePath(poolName, volume);
    if (!(await this.exists(poolName, volume))) throw errors.notFound('Volume', `${poolName}/${volume}`);
    return file;
  }

  private async volumeNames(poolName: string): Promise<string[]> {
    const pool = this.get(poolName);
    if (pool.iscsi) return [...(await this.discoverLuns(pool)).keys()].sort((a, b) => a - b).map((lun) => `lun${lun}`);
    const entries = await readdir(pool.path, { withFileTypes: true });
    return entries.filter((e) => e.isFile() && volumeNamePattern.test(e.name) && !e.name.endsWith('.partial')).map((e) => e.name).sort();
  }

  async listVolumes(poolName: string): Promise<VolumeInfo[]> {
    const names = await this.volumeNames(poolName);
    return Promise.all(names.map((n) => this.describeVolume(poolName, n)));
  }

  async describeVolume(poolName: string, volume: string): Promise<VolumeInfo> {
    const pool = this.get(poolName);
    if (pool.iscsi) {
      await this.requireVolume(poolName, volume);
      const bytes = (await this.discoverLuns(pool)).get(this.lunOf(pool, volume)) ?? 0;
      return { pool: poolName, name: volume, format: 'raw', virtualBytes: bytes, allocatedBytes: bytes, usedBy: this.usedBy(poolName, volume).map((u) => u.name) };
    }
    const file = await this.requireVolume(poolName, volume);
    const format = volumeFormat(volume);
    // -U: a running VM holds its volumes locked; reading metadata must not need the lock.
    const info = await QemuImg.info(file, format, { forceShare: true });
    return {
      pool: poolName,
      name: volume,
      format,
      virtualBytes: info.virtualSize,
      allocatedBytes: (await stat(file)).blocks * 512,
      ...(info.backingFilename ? { backing: info.backingFilename } : {}),
      usedBy: this.usedBy(poolName, volume).map((u) => u.name),
    };
  }

  /** QEMU runs as the unprivileged account and must open its volumes; nobody else may. */
  private async handToQemu(file: string): Promise<void> {
    await chown(file, this.account.uid, this.account.gid);
    await chmod(file, 0o600);
  }

  private readonly creating = new Map<string, Promise<unknown>>();

  /** Runs `make` for a new volume, after any earlier creation of the same name has ended (no race on its temporary file). */
  /**
   * The volumes a start needs (`StartRequest.ensure`): those that exist are left as they
   * are; missing thin clones and empty disks are made. A missing import, or a clone whose
   * base is missing, is returned (nothing is made then): a start does not wait for imports.
   */
  async ensureForStart(poolName: string, volumes: VolumeCreate[]): Promise<{ missing: string[] }> {
    const present = new Map(await Promise.all(volumes.map(async (v) => [v.name, await this.exists(poolName, v.name)] as const)));
    const has = async (name: string) => present.get(name) ?? (await this.exists(poolName, name));
    const wanted = volumes.filter((v) => !present.get(v.name));
    const missing: string[] = [];
    for (const volume of wanted) {
      if ('importFrom' in volume) missing.push(volume.name);
      else if ('cloneOf' in volume && !(await has(volume.cloneOf))) missing.push(volume.cloneOf);
    }
    if (missing.length > 0) return { missing: [...new Set(missing)] };
    await Promise.all(
      wanted.map(async (volume) => {
        try {
          await this.createVolume(poolName, volume);
        } catch (cause) {
          // Made meanwhile by another request: it is there, which is what the start needs (any
          // other refusal, e.g. an iSCSI pool's, is the start's).
          if (!(isDroverError(cause) && cause.code === 'conflict' && (await this.exists(poolName, volume.name)))) throw cause;
        }
      }),
    );
    return { missing: [] };
  }

  /**
   * `ensureForStart` for a request that needs the volumes (a start, an incoming migration of
   * `vmRef`): a missing import refuses it with not_found and `details.missingVolumes`, nothing made.
   */
  async requireVolumes(ensure: VolumeEnsure, vmRef: string): Promise<void> {
    const { missing } = await this.ensureForStart(ensure.pool, ensure.volumes);
    if (missing.length === 0) return;
    const message = `Pool "${ensure.pool}" lacks ${missing.map((v) => `"${v}"`).join(', ')}, which VM "${vmRef}" needs; import ${missing.length === 1 ? 'it' : 'them'} first`;
    throw new DroverError('not_found', message, { details: { pool: ensure.pool, missingVolumes: missing } });
  }

  /** The import running on this host, which the next one waits for. */
  private importing: Promise<unknown> = Promise.resolve();

  /**
   * Imports run one at a time on a host, whoever asks (each is a qemu-img convert
   * under its own memory limit): a manager may ask for all of a VM's volumes at once.
   */
  private async oneImportAtATime(run: () => Promise<void>): Promise<void> {
    const turn = this.importing.then(run);
    this.importing = turn.catch(() => undefined);
    await turn;
  }

  private async oneAtATime<T>(poolName: string, volume: string, make: () => Promise<T>): Promise<T> {
    const key = `${poolName}/${volume}`;
    const earlier = this.creating.get(key);
    if (earlier) await earlier.catch(() => undefined);
    const attempt = make();
    this.creating.set(key, attempt);
    try {
      return await attempt;
    } finally {
      if (this.creating.get(key) === attempt) this.creating.delete(key);
    }
  }

  /**
   * Creates a volume. Two requests for the same name never race on its
   * temporary file: the second waits for the first, then finds it exists (409).
   */
  async createVolume(poolName: string, request: VolumeCreate): Promise<VolumeInfo> {
    this.refuseOnIscsi(poolName, 'create a volume');
    return this.oneAtATime(poolName, request.name, () => this.createVolumeNow(poolName, request));
  }

  /**
   * Opens a volume to be read as it is (raw bytes, or the qcow2 file itself),
   * never through a symbolic link. Refused while a running VM writes to it: the
   * copy would be inconsistent.
   */
  async openVolumeForRead(poolName: string, volume: string): Promise<{ handle: FileHandle; size: number; format: VolumeFormat }> {
    this.refuseOnIscsi(poolName, 'download a volume');
    const file = await this.requireVolume(poolName, volume);
    const running = this.usedBy(poolName, volume).filter((u) => u.running).map((u) => u.name);
    if (running.length > 0) throw errors.conflict(`Volume "${poolName}/${volume}" is in use by running VM ${running.join(', ')}; stop it first`, { usedBy: running });
    let handle: FileHandle;
    try {
      handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code === 'ELOOP') throw errors.conflict(`Volume "${poolName}/${volume}" is a symbolic link and is not read`);
      throw cause;
    }
    const info = await handle.stat();
    if (!info.isFile()) {
      await handle.close();
      throw errors.conflict(`Volume "${poolName}/${volume}" is not a regular file`);
    }
    return { handle, size: info.size, format: volumeFormat(volume) };
  }

  /**
   * Makes a NEW volume from uploaded bytes (the format follows the name's
   * extension). The bytes are untrusted: they are written to `<name>.partial`,
   * inspected (a qcow2 with a backing file or an external data file, or bytes
   * that do not open in the declared format, are refused with 400), handed to
   * the QEMU account, then renamed into place. Nothing is left behind on failure.
   */
  async uploadVolume(poolName: string, volume: string, body: Readable, maxBytes: number): Promise<VolumeInfo> {
    this.refuseOnIscsi(poolName, 'upload a volume');
    const file = this.volumePath(poolName, volume);
    return this.oneAtATime(poolName, volume, async () => {
      if (await this.exists(poolName, volume)) throw errors.conflict(`Volume "${poolName}/${volume}" already exists`);
      const format = volumeFormat(volume);
      const partial = `${file}.partial`;
      await rm(partial, { force: true });
      try {
        let size = 0;
        const counter = new Transform({
          transform(chunk: Buffer, _encoding, done) {
            size += chunk.length;
            if (size > maxBytes) done(errors.tooLarge(`The upload is larger than ${maxBytes} bytes`, { limit: maxBytes }));
            else done(null, chunk);
          },
        });
        const handle = await open(partial, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
        await pipeline(body, counter, createWriteStream('', { fd: handle }));
        if (size === 0) throw errors.invalid(`The upload for volume "${poolName}/${volume}" is empty`);
        try {
          await QemuImg.inspectUntrusted(partial, format);
        } catch (cause) {
          // Said with the volume's name: the path of the temporary file is not the caller's business.
          const reasons = isDroverError(cause) ? (cause.details as { reasons?: string[] }).reasons : undefined;
          if (reasons) throw errors.invalid(`The upload for volume "${poolName}/${volume}" was refused as ${format}: ${reasons.join('; ')}`, { format, reasons });
          throw cause;
        }
        await this.handToQemu(partial);
        await rename(partial, file);
      } catch (cause) {
        await rm(partial, { force: true });
        throw cause;
      }
      return this.describeVolume(poolName, volume);
    });
  }

  /** What qemu-img wrote for a thin clone, by what decides those bytes (see `createThinClone`); the oldest dropped past 32. */
  private readonly cloneTemplates = new Map<string, Promise<Buffer>>();

  /**
   * Makes `partial` a thin clone of `base`, as `qemu-img create -b` does. qemu-img
   * writes the same bytes for every clone of one base file in one pool (the
   * header names the base by the same relative path; a qcow2 header holds no id
   * and no time), so the first clone of a base is made by qemu-img and its bytes
   * kept, and later ones are written from them: a VM's first start then waits
   * for a file write instead of a qemu-img run (20–50 ms on the benchmark
   * machines). The key is everything that decides those bytes: the base file
   * (device, inode, size, modification and change times), its format, the
   * backing path written and the size asked.
   */
  private async createThinClone(base: string, baseFormat: VolumeFormat, partial: string, sizeBytes: number | undefined): Promise<void> {
    const info = await stat(base);
    const backing = path.relative(path.dirname(partial), base);
    const key = JSON.stringify([info.dev, info.ino, info.size, info.mtimeMs, info.ctimeMs, baseFormat, backing, sizeBytes ?? null]);
    const kept = this.cloneTemplates.get(key);
    if (kept !== undefined) {
      const bytes = await kept.catch(() => undefined);
      if (bytes !== undefined) {
        await writeFile(partial, bytes, { flag: 'wx', mode: 0o600 });
        return;
      }
    }
    const made = QemuImg.createThinClone(base, baseFormat, partial, { relativeBacking: true, ...(sizeBytes === undefined ? {} : { sizeBytes }) }).then(() => readFile(partial));
    this.cloneTemplates.set(key, made);
    if (this.cloneTemplates.size > 32) this.cloneTemplates.delete(this.cloneTemplates.keys().next().value!);
    try {
      await made;
    } catch (cause) {
      if (this.cloneTemplates.get(key) === made) this.cloneTemplates.delete(key);
      throw cause;
    }
  }

  private async createVolumeNow(poolName: string, request: VolumeCreate): Promise<VolumeInfo> {
    const file = this.volumePath(poolName, request.name);
    if (await this.exists(poolName, request.name)) throw errors.conflict(`Volume "${poolName}/${request.name}" already exists`);
    const format = volumeFormat(request.name);
    // Build under a temporary name so a failure never leaves a half volume behind.
    const partial = `${file}.partial`;
    await rm(partial, { force: true });
    try {
      if ('cloneOf' in request) {
        if (format !== 'qcow2') throw errors.invalid(`A thin clone must be a qcow2 volume; "${request.name}" does not end in .qcow2`);
        const base = await this.requireVolume(poolName, request.cloneOf);
        await this.createThinClone(base, volumeFormat(request.cloneOf), partial, request.sizeBytes);
      } else if ('importFrom' in request) {
        const source = await resolveImportSource(request.importFrom, this.importDirs);
        await this.oneImportAtATime(async () => {
          await QemuImg.inspectUntrusted(source, request.format);
          await QemuImg.convert(source, request.format, partial, format);
        });
      } else {
        await QemuImg.create(partial, format, request.sizeBytes);
      }
      await this.handToQemu(partial);
      await rename(partial, file);
    } catch (cause) {
      await rm(partial, { force: true });
      throw cause;
    }
    if ('cloneOf' in request) {
      // A VM's start waits for its clone: describe it from the header qemu-img just wrote, without a second qemu-img run.
      const header = await readQcow2Header(file);
      if (header) {
        return {
          pool: poolName,
          name: request.name,
          format: 'qcow2',
          virtualBytes: header.virtualBytes,
          allocatedBytes: (await stat(file)).blocks * 512,
          ...(header.backing ? { backing: header.backing } : {}),
          usedBy: this.usedBy(poolName, request.name).map((u) => u.name),
        };
      }
    }
    return this.describeVolume(poolName, request.name);
  }

  async resizeVolume(poolName: string, volume: string, sizeBytes: number): Promise<VolumeInfo> {
    this.refuseOnIscsi(poolName, 'resize a volume');
    const file = await this.requireVolume(poolName, volume);
    const running = this.usedBy(poolName, volume).filter((u) => u.running).map((u) => u.name);
    if (running.length > 0) throw errors.conflict(`Volume "${poolName}/${volume}" is in use by running VM ${running.join(', ')}; stop it first`, { usedBy: running });
    const info = await QemuImg.info(file, volumeFormat(volume));
    if (sizeBytes < info.virtualSize) {
      throw errors.invalid(`Refusing to shrink volume "${poolName}/${volume}" from ${info.virtualSize} to ${sizeBytes} bytes: data would be lost`);
    }
    await QemuImg.resize(file, volumeFormat(volume), sizeBytes);
    return this.describeVolume(poolName, volume);
  }

  async deleteVolume(poolName: string, volume: string): Promise<void> {
    this.refuseOnIscsi(poolName, 'delete a volume');
    const file = await this.requireVolume(poolName, volume);
    const users = this.usedBy(poolName, volume).map((u) => u.name);
    if (users.length > 0) throw errors.conflict(`Volume "${poolName}/${volume}" is attached to VM ${users.join(', ')}; detach it or delete the VM first`, { usedBy: users });
    const clone = await this.firstCloneOf(poolName, volume);
    if (clone) throw errors.conflict(`Volume "${poolName}/${volume}" is the base of thin clone "${clone}"`, { clone });
    await rm(file);
  }

  /** A qcow2 volume of the pool whose backing file is this volume, if any (the volume is then a base: writing to it would corrupt the clone). */
  async firstCloneOf(poolName: string, volume: string): Promise<string | undefined> {
    const pool = this.get(poolName);
    if (pool.iscsi) return undefined; // raw LUNs: no qcow2 clone can sit on one
    const file = this.volumePath(poolName, volume);
    for (const other of await this.volumeNames(poolName)) {
      if (other === volume || volumeFormat(other) !== 'qcow2') continue;
      const info = await QemuImg.info(path.join(pool.path, other), 'qcow2', { forceShare: true });
      if (info.backingFilename && path.resolve(pool.path, info.backingFilename) === file) return other;
    }
    return undefined;
  }
}

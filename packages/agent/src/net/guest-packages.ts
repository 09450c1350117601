import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync } from 'node:fs';
import { rm, writeFile, rename } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { GuestPackageOffer, GuestPackageState } from '@drover/api';
import { errors } from '@drover/core';
import type { NicBinding } from './firewall-model.js';

/** The largest package archive a host caches. */
export const maxGuestPackageBytes = 8 * 1024 * 1024;
/** The largest report a guest may post (`name version` lines). */
export const maxGuestReportBytes = 16 * 1024;

const sha256Pattern = /^[0-9a-f]{64}$/;
const vmKeyPattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const namePattern = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
const versionPattern = /^[A-Za-z0-9_.+-]{1,64}$/;

export interface InstalledPackage {
  name: string;
  version: string;
}

/**
 * The packages a host's guests may install, kept on disk under `dir` so that a
 * metadata service in another process (a host namespace in tests,
 * `drover-metadata --packages DIR`) serves the same state the agent's routes
 * write: `offers/<vm>.json` (what the manager pushed for a VM: its name and
 * packages), `cache/<sha256>.tar.gz` (archives, checked against their sha256 as
 * they arrive), `reports/<vm>.json` (what the guest said it installed).
 * Every file is written to a temporary name and renamed.
 */
export class GuestPackageStore {
  constructor(readonly dir: string) {
    for (const sub of ['offers', 'cache', 'reports']) mkdirSync(path.join(dir, sub), { recursive: true, mode: 0o700 });
  }

  private checkVm(vm: string): string {
    if (!vmKeyPattern.test(vm)) throw errors.invalid(`Invalid VM id "${vm.slice(0, 80)}"`, { field: 'vm' });
    return vm;
  }

  private async writeJson(file: string, value: unknown): Promise<void> {
    const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
    await writeFile(tmp, JSON.stringify(value), { mode: 0o600 });
    await rename(tmp, file);
  }

  private readJson<T>(file: string): T | undefined {
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as T;
    } catch {
      return undefined;
    }
  }

  /** Replaces a VM's offer; every archive it names must be in the cache already. */
  async putOffer(vm: string, offer: GuestPackageOffer): Promise<GuestPackageOffer> {
    this.checkVm(vm);
    const missing = offer.packages.filter((p) => !this.hasArchive(p.sha256, p.sizeBytes));
    if (missing.length > 0) {
      throw errors.conflict(`The offer names archives this host does not have: ${missing.map((p) => `${p.name} ${p.version} (${p.sha256.slice(0, 12)}…)`).join(', ')}; upload them first (PUT /v1/package-cache/{sha256})`, { missing: missing.map((p) => p.sha256) });
    }
    const names = new Set<string>();
    for (const p of offer.packages) {
      if (names.has(p.name)) throw errors.invalid(`The offer names package "${p.name}" twice`, { field: 'packages' });
      names.add(p.name);
    }
    await this.writeJson(path.join(this.dir, 'offers', `${vm}.json`), offer);
    return offer;
  }

  async deleteOffer(vm: string): Promise<void> {
    await rm(path.join(this.dir, 'offers', `${this.checkVm(vm)}.json`), { force: true });
  }

  offer(vm: string): GuestPackageOffer | undefined {
    return this.readJson<GuestPackageOffer>(path.join(this.dir, 'offers', `${this.checkVm(vm)}.json`));
  }

  /** What the agent knows of a VM: the offer and the guest's last report. */
  state(vm: string): GuestPackageState {
    const report = this.readJson<{ installed: InstalledPackage[]; reportedAt: string }>(path.join(this.dir, 'reports', `${this.checkVm(vm)}.json`));
    return { offer: this.offer(vm) ?? null, installed: report?.installed ?? [], reportedAt: report?.reportedAt ?? null };
  }

  archivePath(sha256: string): string {
    if (!sha256Pattern.test(sha256)) throw errors.invalid(`Invalid sha256 "${sha256.slice(0, 80)}"`, { field: 'sha256' });
    return path.join(this.dir, 'cache', `${sha256}.tar.gz`);
  }

  hasArchive(sha256: string, sizeBytes?: number): boolean {
    try {
      const s = statSync(this.archivePath(sha256));
      return sizeBytes === undefined || s.size === sizeBytes;
    } catch {
      return false;
    }
  }

  /** Stores an archive as it arrives; bytes whose sha256 is not the named one are refused and dropped. */
  async putArchive(sha256: string, body: Readable): Promise<{ sha256: string; sizeBytes: number }> {
    const file = this.archivePath(sha256);
    const part = `${file}.${randomBytes(4).toString('hex')}.part`;
    const hash = createHash('sha256');
    let size = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        size += chunk.length;
        if (size > maxGuestPackageBytes) return done(errors.tooLarge(`The package archive is larger than ${maxGuestPackageBytes} bytes`, { limit: maxGuestPackageBytes }));
        hash.update(chunk);
        done(null, chunk);
      },
    });
    try {
      await pipeline(body, counter, createWriteStream(part, { mode: 0o600 }));
      const got = hash.digest('hex');
      if (got !== sha256) throw errors.invalid(`The package archive's sha256 is ${got}, not ${sha256}: refused`, { field: 'sha256' });
      renameSync(part, file);
      return { sha256, sizeBytes: size };
    } finally {
      await rm(part, { force: true });
    }
  }

  /**
   * The offer a metadata caller gets: the VM its NIC binding names, by VM id
   * or by VM name, or the VM `resolve` finds for the NIC (the agent's own VMs,
   * by tap and MAC).
   */
  offerForNic(nic: NicBinding, resolve?: (nic: NicBinding) => string | undefined): { vm: string; offer: GuestPackageOffer } | undefined {
    const candidates = [nic.vm, resolve?.(nic)].filter((v): v is string => v !== undefined && vmKeyPattern.test(v));
    for (const vm of candidates) {
      const offer = this.offer(vm);
      if (offer) return { vm, offer };
    }
    for (const file of readdirSync(path.join(this.dir, 'offers')).filter((f) => f.endsWith('.json'))) {
      const offer = this.readJson<GuestPackageOffer>(path.join(this.dir, 'offers', file));
      if (offer?.vmName === nic.vm) return { vm: file.slice(0, -'.json'.length), offer };
    }
    return undefined;
  }

  /** Records a guest's report: `name version` lines; anything else in it is refused whole. */
  async report(vm: string, text: string): Promise<InstalledPackage[]> {
    this.checkVm(vm);
    const installed: InstalledPackage[] = [];
    for (const line of text.split('\n').map((l) => l.trim()).filter((l) => l.length > 0)) {
      const [name, version, ...rest] = line.split(/\s+/);
      if (!name || !version || rest.length > 0 || !namePattern.test(name) || !versionPattern.test(version)) {
        throw errors.invalid(`Invalid report line "${line.slice(0, 80)}": expected "NAME VERSION"`, { field: 'body' });
      }
      installed.push({ name, version });
    }
    if (installed.length > 256) throw errors.invalid('A report names at most 256 packages', { field: 'body' });
    await this.writeJson(path.join(this.dir, 'reports', `${vm}.json`), { installed, reportedAt: new Date().toISOString() });
    return installed;
  }

  /** A cached archive as a stream, if this VM's offer names it. */
  archiveFor(offer: GuestPackageOffer, sha256: string): { stream: Readable; size: number } | undefined {
    const entry = offer.packages.find((p) => p.sha256 === sha256);
    if (!entry) return undefined;
    const file = this.archivePath(sha256);
    if (!existsSync(file)) return undefined;
    return { stream: createReadStream(file), size: statSync(file).size };
  }
}

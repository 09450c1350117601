import { createHash } from 'node:crypto';
import { constants, createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, stat } from 'node:fs/promises';
import path from 'node:path';
import { Compile } from 'typebox/compile';
import { errors } from '@drover/core';
import { EvaManifest, evaFormatVersion } from '@drover/api';
import { keyIdOf, signBytes, verifyBytes } from '../vmcasting/manifest.js';
import { readTar, TarFormatError, TarWriter, type TarHeader } from './tar.js';

/**
 * The .eva package format (docs/eva-packages.md): one ustar tar holding
 * `manifest.json` first, then `files/...` and `disks/...`, then `SHA256SUMS`
 * (every file before it, manifest.json included) and `SHA256SUMS.sig` (a
 * detached Ed25519 signature over SHA256SUMS).
 */

export const manifestName = 'manifest.json';
export const sumsName = 'SHA256SUMS';
export const signatureName = 'SHA256SUMS.sig';

/** The signature file: JSON, so a future algorithm is one more value. */
export interface EvaSignature {
  algorithm: 'ed25519';
  keyId: string;
  signature: string;
}

export interface ExtractLimits {
  /** The largest single entry. */
  maxEntryBytes: number;
  /** All entries together. */
  maxTotalBytes: number;
  /** The most entries. */
  maxEntries: number;
  /** The largest first entry (the manifest or the .ovf, read into memory). */
  maxFirstBytes: number;
}

export const defaultExtractLimits: ExtractLimits = { maxEntryBytes: 64 * 1024 ** 3, maxTotalBytes: 256 * 1024 ** 3, maxEntries: 512, maxFirstBytes: 1024 * 1024 };

/** Why a package was refused; the service turns it into `invalid` with the package's label. */
export class PackageRefused extends Error {}

const checkManifest = Compile(EvaManifest);

/** Reads and checks a manifest: the format and version first (so a newer one says so), then the schema and the references. */
export function parseManifest(bytes: Buffer): EvaManifest {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch (cause) {
    throw new PackageRefused(`manifest.json is not valid JSON (${(cause as Error).message})`);
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw new PackageRefused('manifest.json is not a JSON object');
  const head = value as { format?: unknown; formatVersion?: unknown };
  if (head.format !== 'drover-eva') throw new PackageRefused(`manifest.json has format "${String(head.format)}", not "drover-eva"`);
  if (typeof head.formatVersion !== 'number' || !Number.isInteger(head.formatVersion) || head.formatVersion < 1) {
    throw new PackageRefused(`manifest.json has no valid formatVersion ("${String(head.formatVersion)}")`);
  }
  if (head.formatVersion > evaFormatVersion) {
    throw new PackageRefused(`the package has format version ${head.formatVersion}, newer than this manager reads (${evaFormatVersion}); upgrade Drover to import it`);
  }
  if (!checkManifest.Check(value)) {
    const first = checkManifest.Errors(value)[0];
    const where = first?.instancePath ? first.instancePath : '(root)';
    const extra = (first?.params as { additionalProperties?: string[] } | undefined)?.additionalProperties;
    throw new PackageRefused(`manifest.json is invalid at ${where}: ${first?.message ?? 'does not match the schema'}${extra ? ` (${extra.join(', ')})` : ''}`);
  }
  const manifest = value as EvaManifest;
  checkReferences(manifest);
  return manifest;
}

/** Names are unique and every reference points at something the manifest declares. */
export function checkReferences(m: EvaManifest): void {
  const unique = (what: string, names: string[]) => {
    const seen = new Set<string>();
    for (const n of names) {
      if (seen.has(n)) throw new PackageRefused(`manifest.json declares ${what} "${n}" twice`);
      seen.add(n);
    }
  };
  unique('network', m.networks.map((n) => n.name));
  unique('security group', m.securityGroups.map((g) => g.name));
  unique('VM', m.vms.map((v) => v.name));
  const files: string[] = [];
  const networks = new Set(m.networks.map((n) => n.name));
  const groups = new Set(m.securityGroups.map((g) => g.name));
  const vms = new Set(m.vms.map((v) => v.name));
  for (const g of m.securityGroups) for (const r of g.rules) if (r.group !== undefined && !groups.has(r.group)) throw new PackageRefused(`security group "${g.name}" refers to unknown group "${r.group}"`);
  for (const vm of m.vms) {
    if (vm.boot.method === 'appliance') files.push(vm.boot.kernel, vm.boot.initrd);
    for (const d of vm.disks) files.push(d.file);
    if (vm.disks[0]?.role !== 'root') throw new PackageRefused(`VM "${vm.name}": its first disk must have role "root"`);
    for (const nic of vm.nics) {
      if (!networks.has(nic.network)) throw new PackageRefused(`VM "${vm.name}" has a NIC on unknown network "${nic.network}"`);
      for (const g of nic.securityGroups ?? []) if (!groups.has(g)) throw new PackageRefused(`VM "${vm.name}" uses unknown security group "${g}"`);
    }
    for (const dep of vm.dependsOn ?? []) {
      if (!vms.has(dep)) throw new PackageRefused(`VM "${vm.name}" depends on unknown VM "${dep}"`);
      if (dep === vm.name) throw new PackageRefused(`VM "${vm.name}" depends on itself`);
    }
  }
  // Disks belong to one VM each; boot files may be shared.
  unique('disk file', m.vms.flatMap((v) => v.disks.map((d) => d.file)));
  // Start order must exist: no dependency cycle.
  const state = new Map<string, 'visiting' | 'done'>();
  const byName = new Map(m.vms.map((v) => [v.name, v]));
  const visit = (name: string, trail: string[]) => {
    if (state.get(name) === 'done') return;
    if (state.get(name) === 'visiting') throw new PackageRefused(`the VMs' dependencies form a cycle (${[...trail, name].join(' → ')})`);
    state.set(name, 'visiting');
    for (const dep of byName.get(name)?.dependsOn ?? []) visit(dep, [...trail, name]);
    state.set(name, 'done');
  };
  for (const vm of m.vms) visit(vm.name, []);
}

/** Every file the manifest names (boot files once), in archive order: files/ then disks/. */
export function manifestFiles(m: EvaManifest): string[] {
  const boot = new Set<string>();
  const disks: string[] = [];
  for (const vm of m.vms) {
    if (vm.boot.method === 'appliance') boot.add(vm.boot.kernel).add(vm.boot.initrd);
    for (const d of vm.disks) disks.push(d.file);
  }
  return [...[...boot].sort(), ...disks];
}

// ---------------------------------------------------------------- writing

export function sha256Sums(entries: Array<{ path: string; sha256: string }>): Buffer {
  return Buffer.from(entries.map((e) => `${e.sha256}  ${e.path}\n`).join(''), 'utf8');
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * Writes a signed .eva file: `files` maps every path of the manifest to a
 * file on disk (its sha256 is computed here; the disks' must already be in
 * the manifest). Streams everything; nothing is held whole in memory.
 */
export async function writeEva(target: string, manifest: EvaManifest, files: Map<string, string>, key: { publicKey: string; privateKey: string }): Promise<{ sizeBytes: number; sha256: string; keyId: string }> {
  checkReferences(manifest);
  const manifestBytes = Buffer.from(JSON.stringify(manifest, null, 2) + '\n', 'utf8');
  const sums: Array<{ path: string; sha256: string }> = [{ path: manifestName, sha256: createHash('sha256').update(manifestBytes).digest('hex') }];
  const order = manifestFiles(manifest);
  for (const name of order) {
    const file = files.get(name);
    if (!file) throw errors.internal(`writeEva: no file for "${name}"`);
    sums.push({ path: name, sha256: await sha256File(file) });
  }
  const sumsBytes = sha256Sums(sums);
  const keyId = keyIdOf(key.publicKey);
  const signature: EvaSignature = { algorithm: 'ed25519', keyId, signature: signBytes(sumsBytes, key.privateKey) };
  const sigBytes = Buffer.from(JSON.stringify(signature) + '\n', 'utf8');
  const handle = await open(target, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  const out = createWriteStream('', { fd: handle });
  const tar = new TarWriter(out);
  try {
    await tar.file(manifestName, manifestBytes.length, manifestBytes);
    if (order.some((n) => n.startsWith('files/'))) await tar.directory('files');
    if (order.some((n) => n.startsWith('disks/'))) await tar.directory('disks');
    for (const name of order) {
      const file = files.get(name)!;
      await tar.file(name, (await stat(file)).size, createReadStream(file));
    }
    await tar.file(sumsName, sumsBytes.length, sumsBytes);
    await tar.file(signatureName, sigBytes.length, sigBytes);
    await tar.finish();
  } catch (error) {
    out.destroy();
    throw error;
  }
  return { sizeBytes: (await stat(target)).size, sha256: await sha256File(target), keyId };
}

// ---------------------------------------------------------------- safe extraction

/**
 * Why an entry name is not acceptable: absolute, `..`/`.`/empty components,
 * control characters or backslashes, too deep. Undefined when it is fine.
 */
export function unsafeNameReason(name: string): string | undefined {
  if (name.length === 0) return 'it has an empty name';
  if (name.startsWith('/')) return 'it has an absolute path';
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f\\]/.test(name)) return 'its name has control characters or a backslash';
  const parts = name.replace(/\/$/, '').split('/');
  if (parts.includes('..')) return 'its path climbs out with ".."';
  if (parts.some((p) => p === '' || p === '.')) return 'its path has empty or "." components';
  if (parts.length > 2) return 'its path is deeper than one directory';
  return undefined;
}

export interface ExtractedFile {
  path: string;
  file: string;
  size: number;
  sha256: string;
}

export interface ExtractPolicy {
  /** What the first entry must be (refusal reason otherwise); its bytes are kept in memory and returned. */
  first: (header: TarHeader) => string | undefined;
  /** Called with the first entry's bytes; returns the files that must follow, those that may (optional), the directories allowed and the trailer. */
  afterFirst: (bytes: Buffer) => { files: Set<string>; directories: Set<string>; trailer?: string[]; optional?: Set<string> };
}

export interface Extracted {
  first: Buffer;
  files: Map<string, ExtractedFile>;
  /** The trailer entries (SHA256SUMS, SHA256SUMS.sig), in memory. */
  trailer: Map<string, Buffer>;
}

const refuse = (name: string, reason: string) => new PackageRefused(`entry "${name.slice(0, 120)}" ${reason}`);

/**
 * Extracts an untrusted tar into `staging` (which must exist and be empty):
 * only regular files and directories, no absolute paths or `..`, no links,
 * devices or FIFOs, no duplicates, size quotas checked from each header
 * before a byte is written, the first entry as the policy says, and nothing
 * the policy does not expect. Files are created with O_EXCL|O_NOFOLLOW inside
 * directories this code made, hashed as they are written. Throws
 * PackageRefused with the reason; the caller removes `staging`.
 */
export async function extractSafely(source: AsyncIterable<Buffer | Uint8Array | string>, staging: string, limits: ExtractLimits, policy: ExtractPolicy): Promise<Extracted> {
  const seen = new Set<string>();
  const files = new Map<string, ExtractedFile>();
  const trailer = new Map<string, Buffer>();
  let expected: ReturnType<ExtractPolicy['afterFirst']> | undefined;
  let first: Buffer | undefined;
  let total = 0;
  let count = 0;
  try {
    for await (const entry of readTar(source)) {
      const h = entry.header;
      count += 1;
      if (count > limits.maxEntries) throw new PackageRefused(`it has more than ${limits.maxEntries} entries`);
      if (h.type !== '0' && h.type !== '\0' && h.type !== '5') throw refuse(h.name, `is a ${h.typeName}; only regular files and directories are allowed`);
      const nameProblem = unsafeNameReason(h.name);
      if (nameProblem) throw refuse(h.name, `was refused: ${nameProblem}`);
      const name = h.name.replace(/\/$/, '');
      if (seen.has(name)) throw refuse(name, 'appears twice (duplicate names are refused)');
      seen.add(name);
      if (h.size > limits.maxEntryBytes) throw refuse(name, `announces ${h.size} bytes, over the limit of ${limits.maxEntryBytes} per entry`);
      total += h.size;
      if (total > limits.maxTotalBytes) throw refuse(name, `brings the package over its total limit of ${limits.maxTotalBytes} bytes`);
      if (first === undefined) {
        const reason = policy.first(h);
        if (reason) throw new PackageRefused(reason);
        if (h.size > limits.maxFirstBytes) throw refuse(name, `has ${h.size} bytes, over the limit of ${limits.maxFirstBytes} for it`);
        const chunks: Buffer[] = [];
        for await (const chunk of entry.body()) chunks.push(chunk);
        first = Buffer.concat(chunks);
        expected = policy.afterFirst(first);
        continue;
      }
      if (h.type === '5') {
        if (h.size !== 0) throw refuse(name, 'is a directory with a size');
        if (!expected!.directories.has(name)) throw refuse(name, 'is a directory the package does not use');
        await mkdir(path.join(staging, name), { mode: 0o700 });
        continue;
      }
      const trailerIndex = expected!.trailer?.indexOf(name) ?? -1;
      if (trailerIndex >= 0) {
        // The trailer comes after every file, in its own order.
        const missing = [...expected!.files].filter((f) => !files.has(f));
        if (missing.length > 0) throw refuse(name, `comes before "${missing[0]}" (the checksums and signature come last)`);
        const before = expected!.trailer!.slice(0, trailerIndex).filter((t) => !trailer.has(t));
        if (before.length > 0) throw refuse(name, `comes before "${before[0]}"`);
        if (h.size > limits.maxFirstBytes) throw refuse(name, `has ${h.size} bytes, over the limit of ${limits.maxFirstBytes} for it`);
        const chunks: Buffer[] = [];
        for await (const chunk of entry.body()) chunks.push(chunk);
        trailer.set(name, Buffer.concat(chunks));
        continue;
      }
      if (trailer.size > 0) throw refuse(name, `comes after "${[...trailer.keys()][0]}" (nothing may follow the checksums)`);
      if (!expected!.files.has(name) && !expected!.optional?.has(name)) throw refuse(name, 'is not a file the manifest names');
      const target = path.join(staging, name);
      // Belt and braces: the name checks above already keep it inside.
      if (path.relative(staging, target).startsWith('..')) throw refuse(name, 'resolves outside the staging directory');
      await mkdir(path.dirname(target), { recursive: true, mode: 0o700 });
      let handle;
      try {
        handle = await open(target, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
      } catch (cause) {
        throw refuse(name, `cannot be written in the staging directory (${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message})`);
      }
      const hash = createHash('sha256');
      try {
        for await (const chunk of entry.body()) {
          hash.update(chunk);
          await handle.write(chunk);
        }
      } finally {
        await handle.close();
      }
      files.set(name, { path: name, file: target, size: h.size, sha256: hash.digest('hex') });
    }
  } catch (error) {
    if (error instanceof TarFormatError) throw new PackageRefused(`it is not a valid tar archive: ${error.message}`);
    throw error;
  }
  if (first === undefined) throw new PackageRefused('it is empty');
  const missing = [...expected!.files].filter((f) => !files.has(f));
  if (missing.length > 0) throw new PackageRefused(`file "${missing[0]}" named by the manifest is missing`);
  for (const t of expected!.trailer ?? []) if (!trailer.has(t)) throw new PackageRefused(`"${t}" is missing`);
  return { first, files, trailer };
}

/** The EVA policy: manifest.json first, then exactly its files, then SHA256SUMS and SHA256SUMS.sig. */
export function evaPolicy(onManifest: (manifest: EvaManifest) => void): ExtractPolicy {
  return {
    first: (h) => (h.name === manifestName && (h.type === '0' || h.type === '\0') ? undefined : `the first entry is "${h.name.slice(0, 120)}", not manifest.json (the manifest must come first)`),
    afterFirst: (bytes) => {
      const manifest = parseManifest(bytes);
      onManifest(manifest);
      const files = new Set(manifestFiles(manifest));
      return { files, directories: new Set(['files', 'disks']), trailer: [sumsName, signatureName] };
    },
  };
}

/**
 * Checks SHA256SUMS against what was extracted (every file and the manifest,
 * nothing else) and its signature with a trusted key. `trusted(keyId)` gives
 * the PEM of a trusted key, or undefined.
 */
export function verifyEva(extracted: Extracted, manifest: EvaManifest, trusted: (keyId: string) => string | undefined): { keyId: string } {
  const sumsBytes = extracted.trailer.get(sumsName)!;
  const listed = new Map<string, string>();
  for (const line of sumsBytes.toString('utf8').split('\n')) {
    if (line === '') continue;
    const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(line);
    if (!m) throw new PackageRefused(`SHA256SUMS has a malformed line "${line.slice(0, 80)}"`);
    if (listed.has(m[2]!)) throw new PackageRefused(`SHA256SUMS lists "${m[2]}" twice`);
    listed.set(m[2]!, m[1]!);
  }
  // The signature first: nothing of an unsigned package is judged further.
  let sig: EvaSignature;
  try {
    sig = JSON.parse(extracted.trailer.get(signatureName)!.toString('utf8')) as EvaSignature;
  } catch {
    throw new PackageRefused('SHA256SUMS.sig is not valid JSON');
  }
  if (sig?.algorithm !== 'ed25519' || typeof sig.keyId !== 'string' || typeof sig.signature !== 'string') throw new PackageRefused('SHA256SUMS.sig is not an Ed25519 signature record');
  const pem = trusted(sig.keyId);
  if (!pem) throw new PackageRefused(`it is signed by key ${sig.keyId.slice(0, 16)}…, which this manager does not trust (add it with POST /api/v1/packages/trusted-keys)`);
  if (!verifyBytes(sumsBytes, sig.signature, pem)) throw new PackageRefused(`its signature does not verify with the trusted key ${sig.keyId.slice(0, 16)}… (SHA256SUMS was altered or signed by another key)`);
  const manifestSum = createHash('sha256').update(extracted.first).digest('hex');
  const actual = new Map<string, string>([[manifestName, manifestSum], ...[...extracted.files.values()].map((f) => [f.path, f.sha256] as [string, string])]);
  for (const [name, sum] of actual) {
    const want = listed.get(name);
    if (want === undefined) throw new PackageRefused(`SHA256SUMS does not list "${name}"`);
    if (want !== sum) throw new PackageRefused(`the checksum of "${name}" is wrong: ${sum} where SHA256SUMS says ${want}`);
  }
  for (const name of listed.keys()) if (!actual.has(name)) throw new PackageRefused(`SHA256SUMS lists "${name}", which is not in the package`);
  for (const vm of manifest.vms) {
    for (const d of vm.disks) {
      const f = extracted.files.get(d.file)!;
      if (f.sha256 !== d.sha256) throw new PackageRefused(`disk "${d.file}" has sha256 ${f.sha256} where the manifest says ${d.sha256}`);
      if (f.size !== d.sizeBytes) throw new PackageRefused(`disk "${d.file}" has ${f.size} bytes where the manifest says ${d.sizeBytes}`);
    }
  }
  return { keyId: sig.keyId };
}

import { chmod, copyFile, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { errors } from '@drover/core';
import { ensureArtifact, removeStaleTemporaries, sha256File } from './cache.js';
import {
  APPLIANCES,
  APPLIANCE_NAMES,
  BASE_CMDLINE,
  LIVE_ISO_EXPECT,
  LIVE_ISO_VERSION,
  PROBE_EXPECT,
  READY_PATTERN,
  isApplianceName,
  type ApplianceName,
  type ApplianceSpec,
} from './catalog.js';
import { GUEST_DIR, assertStaticElf, guestFilesDigest, listGuestFiles, type GuestFile } from './guest.js';
import { findTool, makeExt4Qcow2 } from './images.js';
import { writeInitramfs } from './initramfs.js';
import { APPLIANCE_MODULES, findCloudKernel, resolveModules, type KernelLocation, type ResolvedModule } from './kernel.js';
import { runTool } from './run.js';

/**
 * Bumped whenever this builder lays out artifacts differently, so that caches
 * made by an older builder are not reused. (Guest files are hashed directly.)
 */
const BUILDER_FORMAT = 'drover-appliances/1';
const BUSYBOX = '/bin/busybox';

export interface ApplianceArtifacts {
  name: ApplianceName;
  version: string;
  /** sha256 of every input of the appliance (kernel, initramfs and disks). */
  hash: string;
  /** Absolute path of the kernel (a copy in the cache). */
  kernel: string;
  /** Absolute path of the initramfs. */
  initrd: string;
  /** qcow2 root disk: callers boot a thin clone of it, never the file itself. */
  rootDisk: string;
  /** qcow2 template of an empty data disk (label drover-data), for appliances that keep data apart. */
  dataDisk?: string;
  /** Base kernel command line; callers append `drover.*` keys. */
  cmdline: string;
  minMemoryMiB: number;
  /** Printed on the serial console once the services are up. */
  readyPattern: string;
  ports: { http?: number; db?: number };
}

export interface ProbeImage {
  kernel: string;
  initrd: string;
  cmdline: string;
  /** Printed on the serial console when the guest ran; it powers off right after. */
  expect: string;
}

export interface LiveIso {
  /** A hybrid ISO 9660 image: isolinux boots it from a CD-ROM, and from a disk too. */
  iso: string;
  version: string;
  /** Printed on the serial console once it booted; a shell stays on the console after it. */
  expect: string;
}

export interface BuildOptions {
  cacheDir: string;
}

export function defaultApplianceCacheDir(): string {
  const fromEnv = process.env.DROVER_APPLIANCE_CACHE;
  return fromEnv !== undefined && fromEnv.length > 0 ? fromEnv : '/var/cache/drover/appliances';
}

/** The host files every image is made from, with their hashes. */
interface HostInputs {
  kernel: KernelLocation;
  kernelSha256: string;
  busyboxSha256: string;
  modules: Array<ResolvedModule & { sha256: string }>;
}

async function collectHostInputs(): Promise<HostInputs> {
  const kernel = await findCloudKernel();
  await assertStaticElf(BUSYBOX);
  const resolved = await resolveModules(kernel, APPLIANCE_MODULES);
  const [kernelSha256, busyboxSha256, moduleHashes] = await Promise.all([
    sha256File(kernel.image),
    sha256File(BUSYBOX),
    Promise.all(resolved.map((m) => sha256File(m.path))),
  ]);
  return {
    kernel,
    kernelSha256,
    busyboxSha256,
    modules: resolved.map((m, i) => ({ ...m, sha256: moduleHashes[i]! })),
  };
}

interface KernelManifest {
  kind: 'kernel';
  version: string;
  file: string;
}

async function ensureKernel(cacheDir: string, host: HostInputs) {
  const result = await ensureArtifact<KernelManifest>({
    cacheDir,
    inputs: { format: BUILDER_FORMAT, kind: 'kernel', version: host.kernel.version, sha256: host.kernelSha256 },
    build: async (tmp) => {
      // A copy, so the artifact outlives a kernel upgrade that removes /boot/vmlinuz-<old>.
      await copyFile(host.kernel.image, join(tmp, 'vmlinuz'));
      await chmod(join(tmp, 'vmlinuz'), 0o444);
      return { kind: 'kernel', version: host.kernel.version, file: 'vmlinuz' };
    },
  });
  return { ...result, path: join(result.dir, result.manifest.file) };
}

interface InitrdManifest {
  kind: 'initrd' | 'probe-initrd' | 'live-initrd';
  kernelVersion?: string;
  modules: string[];
  file: string;
}

async function ensureInitrd(cacheDir: string, host: HostInputs, kind: 'initrd' | 'probe-initrd' | 'live-initrd') {
  const initScript = join(GUEST_DIR, { initrd: 'initramfs/init', 'probe-initrd': 'probe/init', 'live-initrd': 'live/init' }[kind]);
  const modules = kind === 'initrd' ? host.modules : [];
  const result = await ensureArtifact<InitrdManifest>({
    cacheDir,
    inputs: {
      format: BUILDER_FORMAT,
      kind,
      busybox: host.busyboxSha256,
      init: await sha256File(initScript),
      // Modules only make sense with the kernel they were built for.
      kernelVersion: kind === 'initrd' ? host.kernel.version : undefined,
      modules: modules.map((m) => [m.name, m.sha256]),
    },
    build: async (tmp) => {
      await writeInitramfs(join(tmp, 'initrd.img'), { busybox: BUSYBOX, init: initScript, modules });
      await chmod(join(tmp, 'initrd.img'), 0o444);
      return {
        kind,
        kernelVersion: kind === 'initrd' ? host.kernel.version : undefined,
        modules: modules.map((m) => m.name),
        file: 'initrd.img',
      };
    },
  });
  return { ...result, path: join(result.dir, result.manifest.file) };
}

interface ApplianceManifest {
  kind: 'appliance';
  name: ApplianceName;
  version: string;
  rootDisk: string;
  dataDisk?: string;
  kernelArtifact: string;
  initrdArtifact: string;
}

async function compilerIdentity(): Promise<string> {
  const gcc = await findTool('gcc', ['/usr/bin/gcc']);
  const [version, machine] = await Promise.all([runTool(gcc, ['-dumpfullversion']), runTool(gcc, ['-dumpmachine'])]);
  return `gcc ${version.stdout.trim()} ${machine.stdout.trim()}`;
}

async function installGuestFiles(tree: string, files: readonly GuestFile[]): Promise<void> {
  for (const f of files) {
    const target = join(tree, f.rel);
    await mkdir(dirname(target), { recursive: true });
    await copyFile(f.abs, target);
    await chmod(target, f.executable ? 0o755 : 0o644);
  }
}

/** The root filesystem's tree: guest/rootfs, then guest/apps/<name>, busybox and the generated bits. */
async function assembleRootTree(
  tree: string,
  name: ApplianceName,
  spec: ApplianceSpec,
  files: { rootfs: GuestFile[]; app: GuestFile[] },
  counterBinary: string | undefined,
): Promise<void> {
  const dirs: Array<[string, number]> = [
    ['bin', 0o755],
    ['sbin', 0o755],
    ['usr/bin', 0o755],
    ['usr/sbin', 0o755],
    ['etc/drover', 0o755],
    ['dev', 0o755],
    ['proc', 0o555],
    ['sys', 0o555],
    ['run', 0o755],
    ['tmp', 0o1777],
    ['root', 0o700],
    ['data', 0o755],
    ['var/lib/drover', 0o755],
    ['var/log', 0o755],
  ];
  for (const [dir, mode] of dirs) {
    await mkdir(join(tree, dir), { recursive: true });
    await chmod(join(tree, dir), mode);
  }
  await chmod(tree, 0o755);
  await installGuestFiles(tree, files.rootfs);
  await installGuestFiles(tree, files.app);
  await copyFile(BUSYBOX, join(tree, 'bin/busybox'));
  await chmod(join(tree, 'bin/busybox'), 0o755);
  // Enough to run /sbin/init and rcS; rcS installs every other applet link (`busybox --install -s`).
  await symlink('busybox', join(tree, 'bin/sh'));
  await symlink('../bin/busybox', join(tree, 'sbin/init'));
  await symlink('/run/resolv.conf', join(tree, 'etc/resolv.conf'));
  await symlink('/run/hosts', join(tree, 'etc/hosts'));
  await writeFile(
    join(tree, 'etc/drover/appliance'),
    `DROVER_APPLIANCE='${name}'\nDROVER_VERSION='${spec.version}'\n`,
  );
  if (counterBinary !== undefined) {
    await copyFile(counterBinary, join(tree, 'usr/bin/drover-counter'));
    await chmod(join(tree, 'usr/bin/drover-counter'), 0o755);
  }
}

/** Builds (or finds in the cache) the kernel, initramfs and disks of one appliance. */
export async function buildAppliance(name: ApplianceName, opts: BuildOptions): Promise<ApplianceArtifacts> {
  if (!isApplianceName(name)) {
    throw errors.invalid(`Unknown appliance "${String(name)}": expected one of ${APPLIANCE_NAMES.join(', ')}`, { name });
  }
  const cacheDir = checkCacheDir(opts);
  await removeStaleTemporaries(cacheDir);
  const host = await collectHostInputs();
  return buildWithHost(name, cacheDir, host);
}

async function buildWithHost(name: ApplianceName, cacheDir: string, host: HostInputs): Promise<ApplianceArtifacts> {
  const spec = APPLIANCES[name];
  const [kernel, initrd] = await Promise.all([ensureKernel(cacheDir, host), ensureInitrd(cacheDir, host, 'initrd')]);
  const rootfs = await listGuestFiles('rootfs');
  const app = await listGuestFiles(`apps/${name}`);
  const counterSource = join(GUEST_DIR, 'counter.c');
  const counter = spec.counterBinary
    ? { source: await sha256File(counterSource), compiler: await compilerIdentity() }
    : undefined;

  const result = await ensureArtifact<ApplianceManifest>({
    cacheDir,
    inputs: {
      format: BUILDER_FORMAT,
      kind: 'appliance',
      name,
      version: spec.version,
      busybox: host.busyboxSha256,
      rootfs: guestFilesDigest(rootfs),
      app: guestFilesDigest(app),
      counter,
      rootDiskMiB: spec.rootDiskMiB,
      dataDiskMiB: spec.dataDiskMiB,
      kernel: kernel.hash,
      initrd: initrd.hash,
    },
    build: async (tmp) => {
      const work = join(tmp, 'work');
      const tree = join(work, 'tree');
      await mkdir(tree, { recursive: true });
      let counterBinary: string | undefined;
      if (counter !== undefined) {
        counterBinary = join(work, 'drover-counter');
        const gcc = await findTool('gcc', ['/usr/bin/gcc']);
        await runTool(gcc, ['-static', '-O2', '-s', '-Wall', '-o', counterBinary, counterSource]);
      }
      await assembleRootTree(tree, name, spec, { rootfs, app }, counterBinary);
      await makeExt4Qcow2({
        sourceDir: tree,
        label: 'drover-root',
        sizeMiB: spec.rootDiskMiB,
        rawPath: join(work, 'root.raw'),
        output: join(tmp, 'root.qcow2'),
      });
      await chmod(join(tmp, 'root.qcow2'), 0o444);
      if (spec.dataDiskMiB !== undefined) {
        await makeExt4Qcow2({
          label: 'drover-data',
          sizeMiB: spec.dataDiskMiB,
          rawPath: join(work, 'data.raw'),
          output: join(tmp, 'data.qcow2'),
        });
        await chmod(join(tmp, 'data.qcow2'), 0o444);
      }
      await rm(work, { recursive: true, force: true });
      return {
        kind: 'appliance',
        name,
        version: spec.version,
        rootDisk: 'root.qcow2',
        dataDisk: spec.dataDiskMiB !== undefined ? 'data.qcow2' : undefined,
        kernelArtifact: kernel.hash,
        initrdArtifact: initrd.hash,
      };
    },
  });

  const artifacts: ApplianceArtifacts = {
    name,
    version: spec.version,
    hash: result.hash,
    kernel: kernel.path,
    initrd: initrd.path,
    rootDisk: join(result.dir, result.manifest.rootDisk),
    cmdline: BASE_CMDLINE,
    minMemoryMiB: spec.minMemoryMiB,
    readyPattern: READY_PATTERN,
    ports: { ...spec.ports },
  };
  if (result.manifest.dataDisk !== undefined) artifacts.dataDisk = join(result.dir, result.manifest.dataDisk);
  return artifacts;
}

/** Builds every appliance (sharing the kernel and initramfs). */
export async function buildAllAppliances(opts: BuildOptions): Promise<Record<ApplianceName, ApplianceArtifacts>> {
  const cacheDir = checkCacheDir(opts);
  await removeStaleTemporaries(cacheDir);
  const host = await collectHostInputs();
  const built = await Promise.all(APPLIANCE_NAMES.map((n) => buildWithHost(n, cacheDir, host)));
  return Object.fromEntries(built.map((a) => [a.name, a])) as Record<ApplianceName, ApplianceArtifacts>;
}

/**
 * The acceleration probe: the appliance kernel and an initramfs whose /init
 * prints `DROVER-PROBE-OK` on the serial console and powers off. No disk, no modules.
 */
export async function buildProbeImage(opts: BuildOptions): Promise<ProbeImage> {
  const cacheDir = checkCacheDir(opts);
  await removeStaleTemporaries(cacheDir);
  const host = await collectHostInputs();
  const [kernel, initrd] = await Promise.all([ensureKernel(cacheDir, host), ensureInitrd(cacheDir, host, 'probe-initrd')]);
  return { kernel: kernel.path, initrd: initrd.path, cmdline: BASE_CMDLINE, expect: PROBE_EXPECT };
}

function checkCacheDir(opts: BuildOptions): string {
  const dir = opts?.cacheDir;
  if (typeof dir !== 'string' || !dir.startsWith('/')) {
    throw errors.invalid(`The appliance cache directory must be an absolute path, got "${String(dir)}"`, { cacheDir: dir });
  }
  return dir;
}

/** isolinux's files from Debian's isolinux and syslinux-common packages. */
const ISOLINUX_BIN = '/usr/lib/ISOLINUX/isolinux.bin';
const LDLINUX_C32 = '/usr/lib/syslinux/modules/bios/ldlinux.c32';
const LIVE_ISOLINUX_CFG = `SERIAL 0 115200
DEFAULT live
PROMPT 0
TIMEOUT 0
LABEL live
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND ${BASE_CMDLINE}
`;

interface LiveIsoManifest {
  kind: 'live-iso';
  version: string;
  file: string;
}

/**
 * A small bootable ISO for ISO-boot tests and demos: isolinux, the appliance
 * kernel and an initramfs that prints `DROVER-LIVE-OK` and keeps a shell on
 * the console. Made hybrid (`isohybrid`), so the same file also boots as a raw
 * disk. Needs genisoimage, isolinux, syslinux-common and syslinux-utils.
 */
export async function buildLiveIso(opts: BuildOptions): Promise<LiveIso> {
  const cacheDir = checkCacheDir(opts);
  await removeStaleTemporaries(cacheDir);
  const host = await collectHostInputs();
  const genisoimage = await findTool('genisoimage', ['/usr/bin/genisoimage']);
  const isohybrid = await findTool('isohybrid', ['/usr/bin/isohybrid']);
  const [isolinuxSha256, ldlinuxSha256] = await Promise.all(
    [ISOLINUX_BIN, LDLINUX_C32].map((file) =>
      sha256File(file).catch((cause: unknown) => {
        throw errors.unavailable(`Cannot read ${file}: install the isolinux and syslinux-common packages`, { file }, cause);
      }),
    ),
  );
  const [kernel, initrd] = await Promise.all([ensureKernel(cacheDir, host), ensureInitrd(cacheDir, host, 'live-initrd')]);
  const result = await ensureArtifact<LiveIsoManifest>({
    cacheDir,
    inputs: { format: BUILDER_FORMAT, kind: 'live-iso', version: LIVE_ISO_VERSION, kernel: kernel.hash, initrd: initrd.hash, isolinuxSha256, ldlinuxSha256, cfg: LIVE_ISOLINUX_CFG },
    build: async (tmp) => {
      const tree = join(tmp, 'tree');
      await mkdir(join(tree, 'isolinux'), { recursive: true });
      await copyFile(ISOLINUX_BIN, join(tree, 'isolinux/isolinux.bin'));
      await copyFile(LDLINUX_C32, join(tree, 'isolinux/ldlinux.c32'));
      await writeFile(join(tree, 'isolinux/isolinux.cfg'), LIVE_ISOLINUX_CFG);
      await copyFile(kernel.path, join(tree, 'vmlinuz'));
      await copyFile(initrd.path, join(tree, 'initrd.img'));
      const iso = join(tmp, 'live.iso');
      // El Torito no-emulation boot of isolinux; -boot-info-table patches the tree's copy of isolinux.bin.
      await runTool(genisoimage, [
        '-quiet', '-input-charset', 'utf-8', '-output', iso, '-volid', 'DROVER_LIVE', '-joliet', '-rock',
        '-b', 'isolinux/isolinux.bin', '-c', 'isolinux/boot.cat', '-no-emul-boot', '-boot-load-size', '4', '-boot-info-table',
        tree,
      ]);
      await runTool(isohybrid, [iso]);
      await rm(tree, { recursive: true, force: true });
      await chmod(iso, 0o444);
      return { kind: 'live-iso', version: LIVE_ISO_VERSION, file: 'live.iso' };
    },
  });
  return { iso: join(result.dir, result.manifest.file), version: LIVE_ISO_VERSION, expect: LIVE_ISO_EXPECT };
}

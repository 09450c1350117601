import { readdir, readFile, access } from 'node:fs/promises';
import { constants } from 'node:fs';
import { join } from 'node:path';
import { errors } from '@drover/core';

/**
 * Finding Debian's cloud kernel and the modules an appliance needs from it.
 * The cloud kernel has virtio, ACPI button and evdev as modules; ext4 is built in.
 */

export interface KernelLocation {
  version: string;
  /** /boot/vmlinuz-<version> */
  image: string;
  /** /lib/modules/<version> */
  modulesDir: string;
}

export interface KernelSearchOptions {
  bootDir?: string;
  modulesRoot?: string;
}

/**
 * The modules the appliance initramfs loads, in load order (virtio_ring before virtio,
 * failover before net_failover before virtio_net; cdrom before isofs, which mounts a
 * cloud-init NoCloud seed; button + evdev for acpid).
 */
export const APPLIANCE_MODULES = [
  'virtio_ring',
  'virtio',
  'virtio_pci_modern_dev',
  'virtio_pci_legacy_dev',
  'virtio_pci',
  'failover',
  'net_failover',
  'virtio_net',
  'virtio_blk',
  'cdrom',
  'isofs',
  'button',
  'evdev',
] as const;

/** Compares Debian kernel versions like `6.1.0-56-cloud-amd64` by their numeric parts. */
export function compareKernelVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/);
  const pb = b.split(/[.-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '';
    const y = pb[i] ?? '';
    const nx = /^\d+$/.test(x) ? Number(x) : NaN;
    const ny = /^\d+$/.test(y) ? Number(y) : NaN;
    if (!Number.isNaN(nx) && !Number.isNaN(ny)) {
      if (nx !== ny) return nx - ny;
    } else if (x !== y) {
      return x < y ? -1 : 1;
    }
  }
  return 0;
}

/** The newest `*-cloud-amd64` kernel that has both an image and a module tree. */
export async function findCloudKernel(options: KernelSearchOptions = {}): Promise<KernelLocation> {
  const bootDir = options.bootDir ?? '/boot';
  const modulesRoot = options.modulesRoot ?? '/lib/modules';
  let names: string[];
  try {
    names = await readdir(bootDir);
  } catch (cause) {
    throw errors.unavailable(`Cannot list ${bootDir} to find a kernel`, { bootDir }, cause);
  }
  const versions = names
    .map((n) => /^vmlinuz-(.+-cloud-amd64)$/.exec(n)?.[1])
    .filter((v): v is string => v !== undefined)
    .sort(compareKernelVersions)
    .reverse();
  for (const version of versions) {
    const image = join(bootDir, `vmlinuz-${version}`);
    const modulesDir = join(modulesRoot, version);
    if ((await readable(image)) && (await readable(join(modulesDir, 'modules.dep')))) {
      return { version, image, modulesDir };
    }
  }
  throw errors.unavailable(
    `No usable Debian cloud kernel: need ${bootDir}/vmlinuz-<version>-cloud-amd64 (readable) and ${modulesRoot}/<version>/modules.dep; install linux-image-cloud-amd64`,
    { bootDir, modulesRoot, found: versions },
  );
}

export interface ResolvedModule {
  name: string;
  /** Absolute path of the uncompressed .ko file. */
  path: string;
}

/**
 * Resolves module names to files through modules.dep, in a load order: each
 * module comes after the modules it depends on (dependencies missing from the
 * list are added), and modules built into this kernel are left out.
 */
export async function resolveModules(kernel: KernelLocation, wanted: readonly string[]): Promise<ResolvedModule[]> {
  const dep = await readFile(join(kernel.modulesDir, 'modules.dep'), 'utf8');
  const builtin = await readFile(join(kernel.modulesDir, 'modules.builtin'), 'utf8').catch(() => '');
  const canonical = (n: string) => n.replace(/-/g, '_');
  const moduleName = (relPath: string) => canonical(relPath.split('/').pop()!.replace(/\.ko(\.\w+)?$/, ''));

  const files = new Map<string, { path: string; deps: string[] }>();
  for (const line of dep.split('\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const path = line.slice(0, colon).trim();
    const deps = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .filter((d) => d.length > 0)
      .map(moduleName);
    files.set(moduleName(path), { path, deps });
  }
  const builtins = new Set(
    builtin
      .split('\n')
      .filter((l) => l.trim().length > 0)
      .map(moduleName),
  );

  const ordered: ResolvedModule[] = [];
  const placed = new Set<string>();
  const visit = (name: string, chain: string[]) => {
    const n = canonical(name);
    if (placed.has(n) || builtins.has(n)) return;
    if (chain.includes(n)) throw errors.invalid(`Module dependency cycle: ${[...chain, n].join(' -> ')}`);
    const entry = files.get(n);
    if (!entry) {
      throw errors.notFound(`kernel module (in ${kernel.modulesDir}/modules.dep)`, n);
    }
    if (!entry.path.endsWith('.ko')) {
      throw errors.invalid(
        `Module ${n} is compressed (${entry.path}); the appliance initramfs needs uncompressed .ko files`,
        { module: n, path: entry.path },
      );
    }
    for (const d of entry.deps) visit(d, [...chain, n]);
    placed.add(n);
    ordered.push({ name: n, path: join(kernel.modulesDir, entry.path) });
  };
  for (const name of wanted) visit(name, []);
  return ordered;
}

async function readable(path: string): Promise<boolean> {
  try {
    await access(path, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

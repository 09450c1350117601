import { createHash } from 'node:crypto';
import { chmod, chown, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { DroverError, errors } from '@drover/core';
import type { CloudInit } from '@drover/api';
import { runLimitedTool } from '@drover/qemu';

/** The files of a NoCloud seed, by their name on the ISO. */
export interface SeedFiles {
  'user-data': string;
  'meta-data': string;
  'network-config'?: string;
}

/**
 * What goes on a VM's seed: the caller's files, and without meta-data the
 * defaults cloud-init expects of a platform (instance-id = the VM's id,
 * local-hostname = its name).
 */
export function seedFiles(cloudInit: CloudInit, vm: { id: string; name: string }): SeedFiles {
  return {
    'user-data': cloudInit.userData,
    'meta-data': cloudInit.metaData ?? `instance-id: ${vm.id}\nlocal-hostname: ${vm.name}\n`,
    ...(cloudInit.networkConfig !== undefined ? { 'network-config': cloudInit.networkConfig } : {}),
  };
}

/** Identifies a seed's content: the ISO is rebuilt only when this changes. */
export function seedDigest(files: SeedFiles): string {
  return createHash('sha256').update(JSON.stringify(Object.entries(files).sort(([a], [b]) => a.localeCompare(b)))).digest('hex');
}

/** genisoimage reads only the agent's own small files, but still runs boxed like qemu-img. */
const limits = { cpuSeconds: 30, addressSpaceBytes: 512 * 1024 ** 2 };

/**
 * Writes a NoCloud seed: an ISO 9660 image with volume label `cidata` holding
 * user-data, meta-data and, if given, network-config (Joliet and Rock Ridge, so
 * every guest sees the lower-case names). The files are staged in a private
 * directory beside `target`; genisoimage runs under prlimit, never through a
 * shell. The image is built as `<target>.partial`, made `root:<gid> 0640` (QEMU
 * reads it through its group), then renamed over `target`, so a failure leaves
 * the previous seed in place.
 */
export async function writeSeedIso(target: string, files: SeedFiles, gid: number): Promise<void> {
  const dir = path.dirname(target);
  const staging = await mkdtemp(path.join(dir, '.cidata-'));
  const partial = `${target}.partial`;
  try {
    for (const [name, content] of Object.entries(files)) {
      await writeFile(path.join(staging, name), content, { mode: 0o600, flag: 'wx' });
    }
    await rm(partial, { force: true });
    await runLimitedTool(
      'genisoimage',
      ['-quiet', '-input-charset', 'utf-8', '-volid', 'cidata', '-joliet', '-rock', '-output', partial, staging],
      { limits, timeoutMs: 30_000 },
      { op: 'NoCloud seed', path: target },
    );
    await chown(partial, 0, gid);
    await chmod(partial, 0o640);
    await rename(partial, target);
  } catch (cause) {
    await rm(partial, { force: true });
    // prlimit reports a missing tool as "failed to execute": not a missing file of the caller's.
    if (cause instanceof DroverError && /failed to execute/.test(String(cause.details.stderr ?? ''))) {
      throw errors.unavailable('Cannot build the cloud-init seed: genisoimage is not installed on this host (Debian package genisoimage)');
    }
    throw cause;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

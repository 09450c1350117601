import { execFile } from 'node:child_process';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { buildProbeImage } from '@drover/appliances';
import { probeAccelerator, type Accelerator } from '@drover/qemu';

const run = promisify(execFile);

export async function bootId(): Promise<string> {
  return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
}

export async function qemuVersion(binary: string): Promise<string> {
  const { stdout } = await run(binary, ['--version'], { timeout: 10_000 });
  return /version (\S+)/.exec(stdout)?.[1] ?? stdout.split('\n')[0] ?? 'unknown';
}

/**
 * Decides KVM or TCG once per machine boot and QEMU version: KVM only when a
 * probe guest really boots under it (on some machines /dev/kvm opens but
 * guests hang). The verdict is cached so agent restarts stay fast.
 */
export async function chooseAccelerator(options: {
  mode: 'auto' | 'kvm' | 'tcg';
  cacheFile: string;
  applianceCacheDir: string;
  qemuBinary: string;
}): Promise<{ accel: Accelerator; reason: string }> {
  if (options.mode !== 'auto') return { accel: options.mode, reason: 'set in the agent configuration' };
  const key = { bootId: await bootId(), qemu: await qemuVersion(options.qemuBinary) };
  try {
    const cached = JSON.parse(await readFile(options.cacheFile, 'utf8')) as typeof key & { accel: Accelerator; reason: string };
    if (cached.bootId === key.bootId && cached.qemu === key.qemu) return { accel: cached.accel, reason: `${cached.reason} (cached)` };
  } catch {
    /* probe below */
  }
  const image = await buildProbeImage({ cacheDir: options.applianceCacheDir });
  const verdict = await probeAccelerator({ ...image, binary: options.qemuBinary });
  await mkdir(path.dirname(options.cacheFile), { recursive: true });
  const tmp = `${options.cacheFile}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify({ ...key, ...verdict }));
  await rename(tmp, options.cacheFile);
  return verdict;
}

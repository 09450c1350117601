import { readFile, writeFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { CpioWriter } from './cpio.js';
import type { ResolvedModule } from './kernel.js';

/**
 * The initramfs images: a busybox, an /init script and (for appliances) the
 * kernel modules, as a gzip'd newc cpio made by our own writer.
 */

export interface InitramfsContent {
  busybox: string;
  /** The /init script. */
  init: string;
  /** Copied flat to /lib/modules/<name>.ko; /etc/drover-modules lists them in load order. */
  modules?: readonly ResolvedModule[];
}

export async function writeInitramfs(output: string, content: InitramfsContent): Promise<void> {
  const cpio = new CpioWriter();
  for (const dir of ['bin', 'dev', 'etc', 'lib', 'lib/modules', 'newroot', 'proc', 'run', 'sbin', 'sys', 'tmp', 'usr', 'usr/bin', 'usr/sbin']) {
    cpio.addDirectory(dir, dir === 'tmp' ? 0o1777 : 0o755);
  }
  // The kernel opens /dev/console for init's stdio before anything mounts devtmpfs.
  cpio.addCharDevice('dev/console', 5, 1, 0o600);
  cpio.addFile('bin/busybox', await readFile(content.busybox), 0o755);
  cpio.addSymlink('bin/sh', 'busybox');
  cpio.addFile('init', await readFile(content.init), 0o755);
  const modules = content.modules ?? [];
  for (const m of modules) cpio.addFile(`lib/modules/${m.name}.ko`, await readFile(m.path), 0o644);
  cpio.addFile('etc/drover-modules', modules.map((m) => `${m.name}\n`).join(''), 0o644);
  await writeFile(output, gzipSync(cpio.toBuffer(), { level: 9 }));
}

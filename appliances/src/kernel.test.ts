import { describe, expect, it } from 'vitest';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { APPLIANCE_MODULES, compareKernelVersions, findCloudKernel, resolveModules } from './kernel.js';

describe('compareKernelVersions', () => {
  it('orders Debian kernel versions numerically', () => {
    const sorted = ['6.1.0-9-cloud-amd64', '6.1.0-56-cloud-amd64', '6.10.0-1-cloud-amd64', '5.10.0-30-cloud-amd64'].sort(
      compareKernelVersions,
    );
    expect(sorted).toEqual(['5.10.0-30-cloud-amd64', '6.1.0-9-cloud-amd64', '6.1.0-56-cloud-amd64', '6.10.0-1-cloud-amd64']);
  });
});

describe('findCloudKernel and resolveModules', () => {
  it('picks the newest cloud kernel that has a module tree', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'drover-kernel-'));
    try {
      await mkdir(join(dir, 'boot'));
      await mkdir(join(dir, 'modules', '6.1.0-9-cloud-amd64'), { recursive: true });
      await mkdir(join(dir, 'modules', '6.1.0-60-cloud-amd64'), { recursive: true });
      for (const v of ['6.1.0-9-cloud-amd64', '6.1.0-60-cloud-amd64', '6.1.0-70-cloud-amd64', '6.1.0-99-amd64']) {
        await writeFile(join(dir, 'boot', `vmlinuz-${v}`), 'kernel');
      }
      await writeFile(join(dir, 'modules', '6.1.0-9-cloud-amd64', 'modules.dep'), '');
      await writeFile(join(dir, 'modules', '6.1.0-60-cloud-amd64', 'modules.dep'), '');
      // 6.1.0-70 has no modules and 6.1.0-99 is not a cloud kernel.
      const k = await findCloudKernel({ bootDir: join(dir, 'boot'), modulesRoot: join(dir, 'modules') });
      expect(k.version).toBe('6.1.0-60-cloud-amd64');
      expect(k.image).toBe(join(dir, 'boot', 'vmlinuz-6.1.0-60-cloud-amd64'));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('orders modules after their dependencies, adds missing ones and skips built-ins', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'drover-kernel-'));
    try {
      const modulesDir = join(dir, '1.0-cloud-amd64');
      await mkdir(modulesDir);
      await writeFile(
        join(modulesDir, 'modules.dep'),
        [
          'kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko',
          'kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko',
          'kernel/net/core/failover.ko:',
          'kernel/drivers/virtio/virtio.ko:',
          'kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko',
          '',
        ].join('\n'),
      );
      await writeFile(join(modulesDir, 'modules.builtin'), 'kernel/drivers/virtio/virtio_ring.ko\n');
      const kernel = { version: '1.0-cloud-amd64', image: '/dev/null', modulesDir };
      const mods = await resolveModules(kernel, ['virtio_ring', 'virtio_net']);
      const names = mods.map((m) => m.name);
      expect(names.indexOf('failover')).toBeLessThan(names.indexOf('net_failover'));
      expect(names.indexOf('net_failover')).toBeLessThan(names.indexOf('virtio_net'));
      expect(names.indexOf('virtio')).toBeLessThan(names.indexOf('virtio_net'));
      expect(names).not.toContain('virtio_ring');
      expect(new Set(names)).toEqual(new Set(['failover', 'net_failover', 'virtio', 'virtio_net']));
      expect(mods.find((m) => m.name === 'virtio_net')?.path).toBe(join(modulesDir, 'kernel/drivers/net/virtio_net.ko'));
      await expect(resolveModules(kernel, ['virtio_blk'])).rejects.toMatchObject({ code: 'invalid' });
      await expect(resolveModules(kernel, ['nope'])).rejects.toMatchObject({ code: 'not_found' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('resolves the appliance modules of this machine in the documented order', async () => {
    const kernel = await findCloudKernel();
    const mods = await resolveModules(kernel, APPLIANCE_MODULES);
    expect(mods.map((m) => m.name)).toEqual([...APPLIANCE_MODULES]);
  });
});

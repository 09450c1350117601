import { errors } from '@drover/core';
import type { EvaManifest, LabManifest } from '@drover/api';
import type { Store } from '../store/index.js';
import type { PackageService } from '../packages/package.service.js';
import type { LabPackages } from './lab.service.js';

/**
 * Packages deployed as labs: an imported package's manifest mapped onto a lab
 * manifest. Each VM boots its root disk, which the import put in the library as
 * a qcow2 image (an appliance's with the appliance kernel, packages/); the
 * appliance's own kernel settings come first, then the VM's guest settings.
 * Data disks of a package are not attached yet (docs/labs.md).
 */
export function labPackages(packages: PackageService, store: Store): LabPackages {
  return {
    async manifestOf(ref) {
      const record = await packages.find(ref).catch(() => {
        throw errors.invalid(`There is no package "${ref}" to deploy`, { field: 'package', value: ref });
      });
      const m = record.manifest as unknown as EvaManifest;
      const vms: LabManifest['vms'] = [];
      for (const vm of m.vms) {
        const imageId = record.images[vm.disks[0]!.file];
        const image = imageId ? await store.images.tryGet(imageId) : undefined;
        if (!image) throw errors.conflict(`Package "${record.name}:${record.version}" lost the image of disk "${vm.disks[0]!.file}"`, { package: record.id });
        const cmdline = [vm.boot.method === 'appliance' ? vm.boot.cmdline.split(/\s+/).filter((t) => t.startsWith('drover.')).join(' ') : '', vm.guest?.cmdline ?? ''].join(' ').trim();
        vms.push({
          name: vm.name.toLowerCase(),
          image: `${image.name}:${image.version}`,
          cpus: vm.cpus,
          memoryMiB: vm.memoryMiB,
          nics: vm.nics,
          ...(vm.securityLabel ? { securityLabel: vm.securityLabel } : {}),
          ...(vm.labels ? { labels: vm.labels } : {}),
          ...(cmdline ? { guest: { cmdline } } : {}),
          ...(vm.dependsOn ? { dependsOn: vm.dependsOn.map((d) => d.toLowerCase()) } : {}),
          ...(vm.healthCheck ? { healthCheck: vm.healthCheck } : {}),
          ...(vm.startDelaySeconds !== undefined ? { startDelaySeconds: vm.startDelaySeconds } : {}),
        });
      }
      return {
        format: 'drover-eva',
        formatVersion: 1,
        name: m.name,
        version: m.version,
        ...(m.description ? { description: m.description } : {}),
        networks: m.networks,
        securityGroups: m.securityGroups,
        vms,
        ...(m.updatePolicy ? { updatePolicy: m.updatePolicy } : {}),
      };
    },
  };
}

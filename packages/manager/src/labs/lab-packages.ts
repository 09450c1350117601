import { errors } from '@drover/core';
import type { EvaManifest, LabManifest } from '@drover/api';
import type { Store } from '../store/index.js';
import type { PackageService } from '../packages/package.service.js';
import type { LabPackages } from './lab.service.js';

/** Lab names of networks, groups and VMs are lower-case (they become `<lab>-<name>`); a package's may not be (an OVA's "App-Net"). */
const lower = (name: string) => name.toLowerCase();

/**
 * Packages deployed as labs: an imported package's manifest mapped onto a lab
 * manifest. Each VM boots its root disk, which the import put in the library as
 * a qcow2 image (an appliance's with the appliance kernel, packages/); the
 * appliance's own kernel settings come first, then the VM's guest settings.
 * Its other disks (data disks) are library images too, cloned as the VM's data
 * disks in their order (`dataImages`). Names of VMs, networks and groups are
 * taken in lower case (two that differ only in case are refused by the plan).
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
        // Every disk is an image of the library: the first boots, the others are cloned as data disks.
        const images: string[] = [];
        for (const disk of vm.disks) {
          const imageId = record.images[disk.file];
          const image = imageId ? await store.images.tryGet(imageId) : undefined;
          if (!image) throw errors.conflict(`Package "${record.name}:${record.version}" lost the image of disk "${disk.file}"`, { package: record.id });
          images.push(`${image.name}:${image.version}`);
        }
        const cmdline = [vm.boot.method === 'appliance' ? vm.boot.cmdline.split(/\s+/).filter((t) => t.startsWith('drover.')).join(' ') : '', vm.guest?.cmdline ?? ''].join(' ').trim();
        vms.push({
          name: vm.name.toLowerCase(),
          image: images[0]!,
          ...(images.length > 1 ? { dataImages: images.slice(1) } : {}),
          cpus: vm.cpus,
          memoryMiB: vm.memoryMiB,
          nics: vm.nics.map((nic) => ({ ...nic, network: lower(nic.network), ...(nic.securityGroups ? { securityGroups: nic.securityGroups.map(lower) } : {}) })),
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
        networks: m.networks.map((n) => ({ ...n, name: lower(n.name) })),
        securityGroups: m.securityGroups.map((g) => ({ ...g, name: lower(g.name), rules: g.rules.map((r) => (r.group ? { ...r, group: lower(r.group) } : r)) })),
        vms,
        ...(m.updatePolicy ? { updatePolicy: m.updatePolicy } : {}),
      };
    },
  };
}

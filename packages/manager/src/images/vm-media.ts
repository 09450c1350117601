import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { DroverError, errors } from '@drover/core';
import type { CloudInit, VmCreate, VmSpec } from '@drover/api';
import { QemuImg } from '@drover/qemu';
import type { AgentLink } from '../hosts/agent-link.js';
import type { Store } from '../store/index.js';
import { listEvery } from '../store/paging.js';
import type { HostRecord } from '../store/types.js';
import type { ImageLibrary } from './image-library.js';

/**
 * What a VM boots and carries, as the manager keeps it in the VM's spec: an
 * image (an appliance, or an imported disk image), an ISO, an empty disk, a
 * cloud-init seed. VMs made before imports existed have only image/imageId.
 */
export interface VmMedia {
  /** "name:version", or "" for a VM that boots its ISO only. */
  image: string;
  imageId: string;
  /** "qcow2" for an imported disk image; absent for an appliance. */
  imageFormat?: 'qcow2';
  iso?: { image: string; imageId: string } | { pool: string; volume: string };
  /** An appliance booted from this existing volume of any pool (e.g. an iSCSI LUN) instead of a thin clone in `default`. */
  bootVolume?: { pool: string; volume: string };
  diskSizeBytes?: number;
  cloudInit?: CloudInit;
  /** The VM's root disk volume when it is not `<vmId>.root.qcow2` (a VMcasting update switched it). */
  rootVolume?: string;
  /** Data disks after the root disk, each a thin clone of a qcow2 image of the library (volumes: dataVolumeName). */
  dataImages?: Array<{ image: string; imageId: string }>;
}

/** The pool every VM's volumes live in on its host. */
export const vmPool = 'default';

/** The volume an imported image becomes on a host: named by id, so a deleted and re-imported name never meets a stale copy. */
export function imageVolumeName(image: { id: string; format: string }): string {
  return `image-${image.id}.${image.format === 'iso' ? 'iso' : 'qcow2'}`;
}

/**
 * The volume of a VM's data disk `index` (0 for the first): `<vmId>.data.qcow2`
 * (the name an appliance's data disk has), then `<vmId>.data2.qcow2`, ….
 */
export function dataVolumeName(vmId: string, index: number): string {
  return index === 0 ? `${vmId}.data.qcow2` : `${vmId}.data${index + 1}.qcow2`;
}

/** The library images a VM's spec boots or attaches: its image, its ISO, its data images. */
function imageIdsOf(media: Partial<Pick<VmMedia, 'imageId' | 'iso' | 'dataImages'>>): string[] {
  return [media.imageId, media.iso && 'imageId' in media.iso ? media.iso.imageId : undefined, ...(media.dataImages ?? []).map((d) => d.imageId)].filter((id): id is string => id !== undefined);
}

/** The names of the VMs that boot or attach one of `imageIds` (an image, or a package's images, cannot go while they do). */
export async function vmsUsingImages(store: Store, imageIds: readonly string[]): Promise<string[]> {
  const vms = await listEvery((query) => store.vms.list(query));
  return vms.filter((vm) => imageIdsOf(vm.spec as Partial<VmMedia>).some((id) => imageIds.includes(id))).map((vm) => vm.name);
}

/** The VM's ISO as the API shows it: "name:version" or "pool/volume". */
export function isoLabel(iso: VmMedia['iso']): string | undefined {
  if (!iso) return undefined;
  return 'imageId' in iso ? iso.image : `${iso.pool}/${iso.volume}`;
}

/** The VM's cloud-init as the API shows it: sizes only, the content may hold secrets. */
export function cloudInitSummary(cloudInit: CloudInit | undefined) {
  if (!cloudInit) return undefined;
  return {
    userDataBytes: Buffer.byteLength(cloudInit.userData),
    ...(cloudInit.metaData !== undefined ? { metaDataBytes: Buffer.byteLength(cloudInit.metaData) } : {}),
    ...(cloudInit.networkConfig !== undefined ? { networkConfigBytes: Buffer.byteLength(cloudInit.networkConfig) } : {}),
  };
}

/**
 * Checks what a VmCreate asks to boot and resolves it against the library.
 * Every refusal is `invalid`, naming the field, before anything is stored.
 */
export async function resolveVmMedia(request: VmCreate, library: ImageLibrary): Promise<{ media: VmMedia; minMemoryMiB: number; defaultMemoryMiB: number }> {
  if (request.image === undefined && request.iso === undefined) {
    throw errors.invalid(`VM "${request.name}" needs an image or an iso to boot from`, { field: 'image' });
  }
  const media: VmMedia = { image: '', imageId: '' };
  let minMemoryMiB = 64;
  let defaultMemoryMiB = 256;
  let appliance = false;
  // A disk image booted by the appliance kernel (a VMcasting release, a package's appliance VM) takes drover.* settings too.
  let kernelBoot = false;
  if (request.image !== undefined) {
    const image = await library.resolve(request.image);
    if (image.format === 'iso') throw errors.invalid(`Image "${request.image}" is an ISO: give it as "iso", not as "image"`, { field: 'image' });
    media.image = `${image.name}:${image.version}`;
    media.imageId = image.id;
    if (image.format === 'appliance') {
      appliance = true;
      const manifest = await library.manifest(image);
      minMemoryMiB = manifest.minMemoryMiB;
      defaultMemoryMiB = Math.max(manifest.minMemoryMiB, 128);
      if (request.diskSizeBytes !== undefined) {
        throw errors.invalid(`diskSizeBytes does not apply to appliance image "${media.image}": appliances bring their own disks`, { field: 'diskSizeBytes' });
      }
    } else {
      media.imageFormat = 'qcow2';
      kernelBoot = await library.bootsApplianceKernel(image);
      if (request.diskSizeBytes !== undefined) {
        const { virtualSize } = await QemuImg.info(library.fileOf(image), 'qcow2');
        if (request.diskSizeBytes < virtualSize) {
          throw errors.invalid(`diskSizeBytes ${request.diskSizeBytes} is smaller than image "${media.image}" (${virtualSize} bytes); disks are never shrunk`, { field: 'diskSizeBytes' });
        }
      }
    }
  }
  if (request.bootVolume !== undefined) {
    if (!appliance) throw errors.invalid('bootVolume applies to appliance images only (they boot a kernel with the root file system on their first disk)', { field: 'bootVolume' });
    media.bootVolume = { pool: request.bootVolume.pool, volume: request.bootVolume.volume };
  }
  if (!appliance && !kernelBoot && request.cmdline) {
    throw errors.invalid('cmdline applies to appliance images only (they boot a kernel); this VM boots from a disk or an ISO', { field: 'cmdline' });
  }
  if (request.dataImages?.length) {
    if (appliance) throw errors.invalid(`dataImages do not apply to appliance image "${media.image}": appliances bring their own disks`, { field: 'dataImages' });
    if (request.image === undefined) throw errors.invalid('dataImages need an image to boot from: they are the disks after its root disk', { field: 'dataImages' });
    media.dataImages = [];
    for (const ref of request.dataImages) {
      const data = await library.resolve(ref, 'dataImages');
      if (data.format !== 'qcow2') throw errors.invalid(`Data image "${ref}" is not a qcow2 disk image (its format is ${data.format})`, { field: 'dataImages', value: ref });
      media.dataImages.push({ image: `${data.name}:${data.version}`, imageId: data.id });
    }
  }
  if (typeof request.iso === 'string') {
    const iso = await library.resolve(request.iso, 'iso');
    if (iso.format !== 'iso') throw errors.invalid(`Image "${request.iso}" is not an ISO (its format is ${iso.format})`, { field: 'iso' });
    media.iso = { image: `${iso.name}:${iso.version}`, imageId: iso.id };
  } else if (request.iso !== undefined) {
    media.iso = { pool: request.iso.pool, volume: request.iso.volume };
  }
  if (request.diskSizeBytes !== undefined) media.diskSizeBytes = request.diskSizeBytes;
  if (request.cloudInit !== undefined) media.cloudInit = request.cloudInit;
  return { media, minMemoryMiB, defaultMemoryMiB };
}

export interface MediaDeps {
  store: Store;
  link: AgentLink;
  images: ImageLibrary;
}

/** Creates a volume on the host unless it is there (a 409); throws anything else. */
export type EnsureVolume = (body: Record<string, unknown>) => Promise<void>;

/**
 * Puts a library image on a host: the manager streams its file to the agent
 * (mutual TLS, `PUT .../content`), which inspects it as untrusted again and
 * keeps it as a volume for every later VM there. Images imported through the
 * API travel this way, not by path: the agent's import allow-list does not
 * (and should not) cover the manager's data directory.
 */
async function uploadImage(deps: MediaDeps, host: HostRecord, image: { id: string; name: string; version: string; format: string }, signal?: AbortSignal): Promise<string> {
  const volume = imageVolumeName(image);
  const path = `/v1/pools/${vmPool}/volumes/${volume}`;
  try {
    await deps.link.call(host, 'GET', path);
    return volume;
  } catch (error) {
    if (!(error instanceof DroverError && error.code === 'not_found')) throw error;
  }
  signal?.throwIfAborted();
  const file = deps.images.fileOf(image);
  const size = (await stat(file)).size;
  try {
    const answer = await deps.link.stream(host, 'PUT', `${path}/content`, {
      body: createReadStream(file),
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
    });
    answer.resume();
    await new Promise((resolve, reject) => answer.once('end', resolve).once('error', reject));
  } catch (error) {
    // Another start uploaded it meanwhile: the agent serializes uploads of one name.
    if (!(error instanceof DroverError && error.code === 'conflict')) throw error;
  }
  return volume;
}

/** Waits for every promise, then throws the first failure, if any (nothing is left running behind an error). */
async function allSettled(work: Array<Promise<unknown>>): Promise<void> {
  const failed = (await Promise.allSettled(work)).find((outcome) => outcome.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

/**
 * Makes sure a VM's volumes exist on its host and says how it boots there:
 * - an appliance: its kernel, initramfs and disks imported by path (once per
 *   host), thin clones `<vmId>.root.qcow2` (and `.data.qcow2`), kernel boot;
 * - an imported disk image: uploaded once per host, a thin clone
 *   `<vmId>.root.qcow2` (grown to diskSizeBytes), disk boot (or the appliance
 *   kernel, for a release or package VM made for it); its data images likewise,
 *   thin clones `<vmId>.data.qcow2`, `<vmId>.data2.qcow2`, …;
 * - no image: an empty `<vmId>.root.qcow2` of diskSizeBytes, if asked;
 * - an ISO: a read-only CD-ROM, booted first (then the disk), except on an
 *   appliance, which boots its kernel and only sees the CD-ROM.
 */
export async function prepareVmMedia(
  deps: MediaDeps,
  host: HostRecord,
  vm: { id: string; name: string },
  media: VmMedia & { cmdline?: string },
  ensure: EnsureVolume,
  signal?: AbortSignal,
): Promise<{ disks: VmSpec['disks']; boot: VmSpec['boot'] }> {
  const pool = vmPool;
  const root = media.rootVolume ?? `${vm.id}.root.qcow2`;
  const disks: VmSpec['disks'] = [];
  let boot: VmSpec['boot'];
  const image = media.imageId ? await deps.store.images.get(media.imageId) : undefined;
  if (image && image.format === 'appliance') {
    const manifest = await deps.images.manifest(image);
    const prefix = `${image.name}-${image.version}`;
    const data = `${vm.id}.data.qcow2`;
    // All asked for at once: on a host that has the image the imports are quick 409s and the
    // clones all there is to do (the agent runs its imports one at a time, each a qemu-img
    // convert under its own memory limit). Only a clone whose base is missing (404) waits for
    // the base's import.
    const cloneOf = async (base: Record<string, unknown> & { name: string }, clone: string) => {
      try {
        await ensure({ name: clone, cloneOf: base.name });
      } catch (error) {
        if (!(error instanceof DroverError && error.code === 'not_found')) throw error;
        await ensure(base);
        await ensure({ name: clone, cloneOf: base.name });
      }
    };
    const rootBase = { name: `${prefix}.root.qcow2`, importFrom: manifest.rootDisk, format: 'qcow2' };
    const dataBase = manifest.dataDisk ? { name: `${prefix}.data.qcow2`, importFrom: manifest.dataDisk, format: 'qcow2' } : undefined;
    // A start waits for the slowest of these, not for their sum.
    await allSettled([
      ensure({ name: `${prefix}.kernel`, importFrom: manifest.kernel, format: 'raw' }),
      ensure({ name: `${prefix}.initrd`, importFrom: manifest.initrd, format: 'raw' }),
      ...(media.bootVolume ? [] : [cloneOf(rootBase, root)]),
      ...(dataBase ? [cloneOf(dataBase, data)] : []),
    ]);
    disks.push(media.bootVolume ? { pool: media.bootVolume.pool, volume: media.bootVolume.volume } : { pool, volume: root }, ...(manifest.dataDisk ? [{ pool, volume: data }] : []));
    boot = {
      kind: 'kernel',
      kernel: { pool, volume: `${prefix}.kernel` },
      initrd: { pool, volume: `${prefix}.initrd` },
      cmdline: `${manifest.cmdline} drover.name=${vm.name} drover.net=user ${media.cmdline ?? ''}`.trim(),
    };
  } else if (image) {
    const base = await uploadImage(deps, host, image, signal);
    await ensure({ name: root, cloneOf: base, ...(media.diskSizeBytes !== undefined ? { sizeBytes: media.diskSizeBytes } : {}) });
    disks.push({ pool, volume: root });
    // Data disks: each image uploaded once per host, a thin clone per VM (one after the other: uploads are large).
    for (const [index, data] of (media.dataImages ?? []).entries()) {
      const dataBase = await uploadImage(deps, host, await deps.store.images.get(data.imageId), signal);
      await ensure({ name: dataVolumeName(vm.id, index), cloneOf: dataBase });
      disks.push({ pool, volume: dataVolumeName(vm.id, index) });
    }
    boot = { kind: media.iso ? 'cdrom' : 'disk' };
    // A VMcasting appliance release is a root disk booted by Drover's appliance kernel and initramfs.
    if (await deps.images.bootsApplianceKernel(image)) {
      const kernel = await deps.images.applianceKernel();
      await allSettled([
        ensure({ name: `${kernel.prefix}.kernel`, importFrom: kernel.kernel, format: 'raw' }),
        ensure({ name: `${kernel.prefix}.initrd`, importFrom: kernel.initrd, format: 'raw' }),
      ]);
      boot = {
        kind: 'kernel',
        kernel: { pool, volume: `${kernel.prefix}.kernel` },
        initrd: { pool, volume: `${kernel.prefix}.initrd` },
        cmdline: `${kernel.cmdline} drover.name=${vm.name} drover.net=user ${media.cmdline ?? ''}`.trim(),
      };
    }
  } else {
    if (media.diskSizeBytes !== undefined) {
      await ensure({ name: root, sizeBytes: media.diskSizeBytes });
      disks.push({ pool, volume: root });
    }
    boot = { kind: 'cdrom' };
  }
  if (media.iso && 'imageId' in media.iso) {
    const iso = await deps.store.images.get(media.iso.imageId);
    disks.push({ pool, volume: await uploadImage(deps, host, iso, signal), media: 'cdrom', readOnly: true });
  } else if (media.iso) {
    disks.push({ pool: media.iso.pool, volume: media.iso.volume, media: 'cdrom', readOnly: true });
  }
  return { disks, boot };
}

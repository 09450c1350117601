import { createHash } from 'node:crypto';
import { constants, createReadStream, createWriteStream } from 'node:fs';
import { copyFile, mkdir, open, stat } from 'node:fs/promises';
import path from 'node:path';
import type { IncomingMessage } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { errors, SECURITY_LABEL_KEY } from '@drover/core';
import type { EvaManifest, EvaVm, LabManifest, LabVm, VolumeInfo } from '@drover/api';
import { QemuImg, runQemuImg } from '@drover/qemu';
import type { AgentLink } from '../hosts/agent-link.js';
import type { ImageLibrary } from '../images/image-library.js';
import { dataVolumeName, type VmMedia } from '../images/vm-media.js';
import type { HostRecord, LabRecord, Store, VmRecord } from '../store/index.js';

/** Converting a large disk takes longer than qemu-img's default limits allow. */
const convertOptions = { timeoutMs: 3_600_000, limits: { cpuSeconds: 3_600 } };

export interface ExportRequest {
  name: string;
  version: string;
  description?: string;
  updatePolicy?: EvaManifest['updatePolicy'];
}

interface VmDiskSource {
  pool: string;
  volume: string;
  role: 'root' | 'data';
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * Builds the manifest and the standalone disks of stopped VMs: each disk's
 * chain (the VM's thin clone and its bases) is downloaded from the VM's host
 * over the agent link, rebased onto the local copies and converted by
 * qemu-img into one qcow2 without a backing file; resources, NICs (networks,
 * security groups), labels and guest settings come from the VMs' records.
 */
export class PackageExporter {
  constructor(private readonly o: { store: Store; link: AgentLink; library: ImageLibrary }) {}

  /** The VMs, checked: they exist, are stopped (or defined after a run) and sit on an online host. */
  async checkVms(refs: string[]): Promise<VmRecord[]> {
    const vms: VmRecord[] = [];
    for (const ref of refs) {
      const vm = await this.o.store.vms.find(ref);
      if (vm.state !== 'stopped') throw errors.conflict(`VM "${vm.name}" is ${vm.state}; only stopped VMs can be exported (stop it first)`, { vm: vm.name, state: vm.state });
      if (!vm.hostId) throw errors.conflict(`VM "${vm.name}" has no host holding its disks`, { vm: vm.name });
      const host = await this.o.store.hosts.get(vm.hostId);
      if (host.state !== 'online') throw errors.unavailable(`VM "${vm.name}" has its disks on host "${host.name}", which is ${host.state}`);
      if (vms.some((v) => v.id === vm.id)) throw errors.invalid(`VM "${vm.name}" is named twice`);
      vms.push(vm);
    }
    return vms;
  }

  /** The VM's writable disks: root (or its boot volume), an appliance's data disk or the clones of its data images, disks added through the API. */
  private async disksOf(vm: VmRecord): Promise<VmDiskSource[]> {
    const spec = vm.spec as unknown as VmMedia & { addedDisks?: Array<{ pool: string; volume: string; readOnly?: boolean }> };
    const disks: VmDiskSource[] = [];
    if (spec.bootVolume) disks.push({ pool: spec.bootVolume.pool, volume: spec.bootVolume.volume, role: 'root' });
    else if (spec.imageId || spec.diskSizeBytes) disks.push({ pool: 'default', volume: spec.rootVolume ?? `${vm.id}.root.qcow2`, role: 'root' });
    const image = spec.imageId ? await this.o.store.images.tryGet(spec.imageId) : undefined;
    if (image?.format === 'appliance' && (await this.o.library.manifest(image)).dataDisk) disks.push({ pool: 'default', volume: `${vm.id}.data.qcow2`, role: 'data' });
    for (const index of (spec.dataImages ?? []).keys()) disks.push({ pool: 'default', volume: dataVolumeName(vm.id, index), role: 'data' });
    return [...disks, ...(spec.addedDisks ?? []).filter((d) => !d.readOnly).map((d) => ({ pool: d.pool, volume: d.volume, role: 'data' as const }))];
  }

  private async download(host: HostRecord, pool: string, volume: string, target: string): Promise<VolumeInfo> {
    const info = await this.o.link.call<VolumeInfo>(host, 'GET', `/v1/pools/${encodeURIComponent(pool)}/volumes/${encodeURIComponent(volume)}`);
    const answer: IncomingMessage = await this.o.link.stream(host, 'GET', `/v1/pools/${encodeURIComponent(pool)}/volumes/${encodeURIComponent(volume)}/content`);
    const handle = await open(target, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    await pipeline(answer, createWriteStream('', { fd: handle }));
    return info;
  }

  /** One standalone qcow2 of a VM disk: its chain downloaded, rebased onto the copies, converted. */
  private async standaloneDisk(host: HostRecord, source: VmDiskSource, work: string, out: string): Promise<void> {
    let volume = source.volume;
    const chain: Array<{ file: string; format: 'qcow2' | 'raw' }> = [];
    for (let depth = 0; ; depth++) {
      if (depth > 8) throw errors.invalid(`Disk "${source.pool}/${source.volume}" has a backing chain deeper than 8`);
      const file = path.join(work, `chain-${depth}`);
      const info = await this.download(host, source.pool, volume, file);
      chain.push({ file, format: info.format });
      if (!info.backing) break;
      // Bases sit in the same pool, named relative to the clone.
      volume = path.basename(info.backing);
    }
    // The copies point at host paths: each is rebased (metadata only, -u) onto the next copy.
    for (let i = 0; i < chain.length - 1; i++) {
      await runQemuImg(['rebase', '-q', '-u', '-f', 'qcow2', '-b', chain[i + 1]!.file, '-F', chain[i + 1]!.format, chain[i]!.file], {}, { op: 'rebase', path: chain[i]!.file });
    }
    await QemuImg.convert(chain[0]!.file, chain[0]!.format, out, 'qcow2', convertOptions);
  }

  /**
   * Writes the VMs' standalone disks and boot files under `work` and returns
   * the manifest and the file of each path it names.
   */
  async build(vms: VmRecord[], request: ExportRequest, work: string, progress: (done: number, total: number) => Promise<void>, lab?: LabRecord): Promise<{ manifest: EvaManifest; files: Map<string, string> }> {
    // A lab's VMs are described by its manifest (names, networks, groups, NICs, guest settings, order, checks):
    // what was deployed, not what the deploy made of it (lab names and addresses), so the package deploys anywhere.
    const labManifest = lab ? (lab.manifest as unknown as LabManifest) : undefined;
    const labVmOf = (vm: VmRecord): LabVm | undefined => {
      const name = lab?.vms.find((v) => v.vmId === vm.id)?.name;
      return labManifest?.vms.find((v) => v.name === name);
    };
    await mkdir(path.join(work, 'disks'), { recursive: true, mode: 0o700 });
    await mkdir(path.join(work, 'files'), { recursive: true, mode: 0o700 });
    const files = new Map<string, string>();
    const networks = new Map<string, EvaManifest['networks'][number]>();
    const groups = new Map<string, EvaManifest['securityGroups'][number]>();
    const evaVms: EvaVm[] = [];
    const sourcesOf = new Map<string, VmDiskSource[]>();
    for (const vm of vms) sourcesOf.set(vm.id, await this.disksOf(vm));
    const total = [...sourcesOf.values()].reduce((n, d) => n + d.length, 0);
    let done = 0;
    for (const vm of vms) {
      const spec = vm.spec as unknown as VmMedia & { cpus: number; memoryMiB: number; cmdline?: string };
      const host = await this.o.store.hosts.get(vm.hostId!);
      const sources = sourcesOf.get(vm.id)!;
      if (sources.length === 0) throw errors.invalid(`VM "${vm.name}" has no disk to export (it boots an ISO only)`);
      // How it boots: an appliance image (or a VMcasting release booted by the appliance kernel) boots a kernel.
      let boot: EvaVm['boot'] = { method: 'disk' };
      const image = spec.imageId ? await this.o.store.images.tryGet(spec.imageId) : undefined;
      let kernel: { kernel: string; initrd: string; cmdline: string } | undefined;
      if (image?.format === 'appliance') kernel = await this.o.library.manifest(image);
      else if (image && (await this.o.library.bootsApplianceKernel(image))) kernel = await this.o.library.applianceKernel();
      if (kernel) {
        const kernelName = `files/kernel-${(await sha256File(kernel.kernel)).slice(0, 12)}`;
        const initrdName = `files/initrd-${(await sha256File(kernel.initrd)).slice(0, 12)}`;
        for (const [name, from] of [[kernelName, kernel.kernel], [initrdName, kernel.initrd]] as const) {
          if (files.has(name)) continue;
          const copy = path.join(work, name);
          await copyFile(from, copy, constants.COPYFILE_EXCL);
          files.set(name, copy);
        }
        boot = { method: 'appliance', kernel: kernelName, initrd: initrdName, cmdline: kernel.cmdline };
      }
      const disks: EvaVm['disks'] = [];
      for (const [n, source] of sources.entries()) {
        const name = `disks/${vm.name}-${n}.qcow2`;
        const out = path.join(work, name);
        const chainDir = path.join(work, `chain-${vm.id}-${n}`);
        await mkdir(chainDir, { mode: 0o700 });
        await this.standaloneDisk(host, source, chainDir, out);
        const info = await QemuImg.info(out, 'qcow2');
        disks.push({ file: name, format: 'qcow2', role: source.role, sha256: await sha256File(out), sizeBytes: (await stat(out)).size, virtualSizeBytes: info.virtualSize });
        files.set(name, out);
        done += 1;
        await progress(done, total);
      }
      // NICs on Drover networks: their networks (isolated in the package unless NAT) and security groups.
      const fromLab = labVmOf(vm);
      if (fromLab) {
        evaVms.push({
          name: fromLab.name,
          cpus: spec.cpus,
          memoryMiB: spec.memoryMiB,
          boot,
          disks,
          nics: fromLab.nics ?? [],
          ...(fromLab.securityLabel ? { securityLabel: fromLab.securityLabel } : {}),
          ...(fromLab.labels && Object.keys(fromLab.labels).length ? { labels: fromLab.labels } : {}),
          ...(fromLab.guest?.cmdline ? { guest: { cmdline: fromLab.guest.cmdline } } : {}),
          ...(fromLab.dependsOn ? { dependsOn: fromLab.dependsOn } : {}),
          ...(fromLab.healthCheck ? { healthCheck: fromLab.healthCheck } : {}),
          ...(fromLab.startDelaySeconds !== undefined ? { startDelaySeconds: fromLab.startDelaySeconds } : {}),
        });
        continue;
      }
      const nics: EvaVm['nics'] = [];
      for (const nic of (await this.o.store.net.nics.ofVm(vm.id)).sort((x, y) => x.nicIndex - y.nicIndex)) {
        const network = await this.o.store.net.networks.get(nic.networkId);
        if (!networks.has(network.name)) {
          networks.set(network.name, { name: network.name, kind: network.kind === 'nat' ? 'nat' : 'isolated', subnet: network.subnet, ...(Object.keys(network.labels).length ? { labels: network.labels } : {}) });
        }
        for (const g of nic.groups) {
          if (groups.has(g)) continue;
          const group = await this.o.store.net.groups.find(g);
          groups.set(g, { name: group.name, rules: group.rules.map(({ description: _d, ...rule }) => rule) });
        }
        nics.push({ network: network.name, ...(nic.groups.length ? { securityGroups: nic.groups } : {}), ip: nic.ip });
      }
      const { [SECURITY_LABEL_KEY]: securityLabel, ...labels } = vm.labels;
      evaVms.push({
        name: vm.name,
        cpus: spec.cpus,
        memoryMiB: spec.memoryMiB,
        boot,
        disks,
        nics,
        ...(securityLabel ? { securityLabel } : {}),
        ...(Object.keys(labels).length ? { labels } : {}),
        ...(spec.cmdline || spec.cloudInit ? { guest: { ...(spec.cmdline ? { cmdline: spec.cmdline } : {}), ...(spec.cloudInit ? { userData: spec.cloudInit.userData } : {}) } } : {}),
      });
    }
    // Groups may refer to groups: those come along too.
    for (const group of [...groups.values()]) {
      for (const rule of group.rules) {
        if (rule.group && !groups.has(rule.group)) {
          const other = await this.o.store.net.groups.find(rule.group);
          groups.set(other.name, { name: other.name, rules: other.rules.map(({ description: _d, ...r }) => r) });
        }
      }
    }
    const manifest: EvaManifest = {
      format: 'drover-eva',
      formatVersion: 1,
      name: request.name,
      version: request.version,
      ...(request.description ? { description: request.description } : {}),
      networks: labManifest ? labManifest.networks : [...networks.values()],
      securityGroups: labManifest ? (labManifest.securityGroups ?? []) : [...groups.values()],
      vms: evaVms,
      updatePolicy: request.updatePolicy ?? { policy: 'pinned' },
    };
    return { manifest, files };
  }
}

import { randomUUID } from 'node:crypto';
import { createServer, Socket } from 'node:net';
import type { Logger } from 'pino';
import { DroverError, errors } from '@drover/core';
import type { Lab, LabClone, LabCreate, LabExample, LabManifest, LabVm, VmCreate } from '@drover/api';
import type { Store } from '../store/index.js';
import type { LabNetworkEntry, LabRecord, LabVmEntry, OperationRecord, VmRecord } from '../store/index.js';
import { listEvery } from '../store/paging.js';
import type { EventHub } from '../http/event-hub.js';
import type { AgentLink } from '../hosts/agent-link.js';
import type { ImageLibrary } from '../images/image-library.js';
import type { OperationContext, OperationRunner } from '../operations/operation-runner.js';
import type { VmService } from '../vms/vm.service.js';
import {
  addressOwners,
  allocateBlocks,
  defaultLabAddressPool,
  guestCmdline,
  labNetworkName,
  labVmName,
  parseCidr,
  planLab,
  referencedPorts,
  startLevels,
  subnetInBlock,
  translateAddress,
} from './lab-plan.js';
import { labExamples } from './examples.js';

/**
 * What labs need of the manager's networks (networks/): isolated networks and
 * security groups owned by a lab. Absent (no network service on this manager),
 * a lab runs in "user" mode: each VM on QEMU user networking, the lab's
 * addresses replaced by loopback forwards (docs/labs.md).
 */
export interface LabNetworking {
  createNetwork(input: { name: string; kind: 'isolated' | 'nat'; subnet: string; labels: Record<string, string>; lab: string; owner: string }): Promise<void>;
  deleteNetwork(name: string): Promise<void>;
  createGroup(input: { name: string; lab: string; owner: string }): Promise<void>;
  setGroupRules(name: string, rules: Array<Record<string, unknown>>): Promise<void>;
  deleteGroup(name: string): Promise<void>;
  /** Subnets of networks that are not a lab's (the lab pool skips them). */
  usedSubnets(): Promise<string[]>;
}

/** Imported packages (packages/), mapped onto a lab manifest. */
export interface LabPackages {
  manifestOf(packageId: string): Promise<LabManifest>;
}

/** How a lab's VM is created: through the VM service, with the caller's access checks and project quotas. */
export type LabVmCreator = (request: VmCreate) => Promise<VmRecord>;

export interface LabServiceOptions {
  store: Store;
  runner: OperationRunner;
  vms: VmService;
  link: AgentLink;
  images: ImageLibrary;
  hub: EventHub;
  logger: Logger;
  networking?: LabNetworking;
  packages?: LabPackages;
  addressPool?: string;
  /** Per VM, how long a health check may take (default 300 s; a deploy may say otherwise). */
  healthTimeoutMs?: number;
}

/** The snapshot every lab VM gets once the lab is deployed and healthy: what `reset` goes back to. */
export const initialSnapshot = 'lab-initial';

const vmOpTimeoutMs = 600_000;

/** Runs `fn` over `items` at once; fails with the first error once all have ended (so nothing is left running behind a failure). */
async function allOf<T>(items: readonly T[], fn: (item: T) => Promise<void>): Promise<void> {
  const results = await Promise.allSettled(items.map(fn));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** A free TCP port on the loopback interface (for a forward). */
async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Whether a TCP service answers on `port`: the connection opens and stays open (a QEMU user-network forward accepts first and closes when the guest refuses). */
async function tcpAnswers(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    let settled = false;
    const finish = (ok: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), 5_000);
    socket.once('error', () => finish(false));
    socket.once('close', () => finish(false));
    socket.once('end', () => finish(false));
    socket.connect(port, host, () => {
      clearTimeout(timer);
      setTimeout(() => finish(true), 700);
    });
  });
}

/**
 * Labs: a package or a lab manifest deployed as a unit, with its own networks,
 * security groups, labels and VMs. Every action on a lab is one operation
 * (kind `lab.<action>`, target the lab) that drives the normal VM operations in
 * the manifest's start order, waiting for each VM's health check.
 */
export class LabService {
  /** How each running deploy creates its VMs (the request's access and project); in memory only: a deploy interrupted by a restart is undone. */
  private readonly creators = new Map<string, LabVmCreator>();

  constructor(private readonly o: LabServiceOptions) {
    const compensateToPartial = async (ctx: OperationContext, error: DroverError) => {
      const lab = await o.store.labs.tryGet(ctx.op.targetId);
      if (lab) await this.save(lab.id, { state: await this.settledState(lab), lastError: error.message });
    };
    const interrupted = (ctx: OperationContext): Promise<unknown> => {
      throw errors.unavailable(`Operation ${ctx.op.kind} on lab ${ctx.op.targetId} was interrupted by a manager restart in phase "${ctx.op.phase}"`);
    };
    for (const kind of ['lab.deploy', 'lab.clone']) {
      o.runner.register(kind, {
        run: (ctx) => this.runDeploy(ctx),
        recover: interrupted,
        // What a failed deploy made is removed: VMs, disks, networks, groups, the lab.
        compensate: async (ctx, error) => {
          this.creators.delete(ctx.op.targetId);
          const lab = await o.store.labs.tryGet(ctx.op.targetId);
          if (!lab) return;
          await this.save(lab.id, { lastError: error.message });
          await this.teardown(ctx, lab);
        },
      });
    }
    o.runner.register('lab.start', { run: (ctx) => this.runStart(ctx), recover: interrupted, compensate: compensateToPartial });
    o.runner.register('lab.stop', { run: (ctx) => this.runStop(ctx), recover: interrupted, compensate: compensateToPartial });
    o.runner.register('lab.snapshot', { run: (ctx) => this.runSnapshot(ctx), recover: interrupted, compensate: compensateToPartial });
    o.runner.register('lab.reset', { run: (ctx) => this.runReset(ctx), recover: interrupted, compensate: compensateToPartial });
    o.runner.register('lab.destroy', {
      run: async (ctx) => {
        await this.teardown(ctx, await o.store.labs.get(ctx.op.targetId));
        return { destroyed: true };
      },
      recover: async (ctx) => {
        const lab = await o.store.labs.tryGet(ctx.op.targetId);
        if (lab) await this.teardown(ctx, lab);
        return { destroyed: true };
      },
      compensate: compensateToPartial,
    });
  }

  get networkMode(): 'networks' | 'user' {
    return this.o.networking ? 'networks' : 'user';
  }

  // ------------------------------------------------------------ reads

  async find(ref: string): Promise<LabRecord> {
    return this.o.store.labs.find(ref);
  }

  async list(): Promise<LabRecord[]> {
    return listEvery((query) => this.o.store.labs.list(query));
  }

  examples(): LabExample[] {
    return labExamples();
  }

  async toPublic(lab: LabRecord): Promise<Lab> {
    const vms = new Map((await this.o.store.vms.getMany(lab.vms.flatMap((v) => (v.vmId ? [v.vmId] : [])))).map((vm) => [vm.id, vm]));
    const manifest = lab.manifest as unknown as LabManifest;
    return {
      id: lab.id,
      name: lab.name,
      state: lab.state as Lab['state'],
      source: { kind: lab.source.kind as Lab['source']['kind'], ref: lab.source.ref },
      manifestName: manifest.name,
      manifestVersion: manifest.version ?? null,
      networkMode: lab.networkMode as Lab['networkMode'],
      networks: lab.networks.map((n) => ({ name: n.name, network: n.network, kind: n.kind, subnet: n.subnet })),
      securityGroups: lab.groups.map((g) => ({ name: g.name, group: g.group })),
      vms: lab.vms.map((v) => ({
        name: v.name,
        vmId: v.vmId,
        vm: v.vm,
        state: (v.vmId ? vms.get(v.vmId)?.state : undefined) ?? 'absent',
        order: v.order,
        addresses: v.addresses,
        endpoints: v.endpoints,
      })),
      labels: lab.labels,
      updatePolicy: lab.updatePolicy as Lab['updatePolicy'],
      owner: lab.owner,
      lastError: lab.lastError,
      rev: lab.rev,
      createdAt: lab.createdAt,
      updatedAt: lab.updatedAt,
    };
  }

  // ------------------------------------------------------------ requests

  /**
   * Deploys a lab: checks everything it can before anything is made (the
   * manifest, the images, free names), writes the lab with its addresses from
   * the pool together with its deploy operation, and returns the operation.
   */
  async deploy(request: LabCreate, actor: string, create?: LabVmCreator, idempotencyKey?: string): Promise<OperationRecord> {
    const given = [request.package, request.example, request.manifest].filter((x) => x !== undefined).length;
    if (given !== 1) throw errors.invalid('Give exactly one of "package", "example" or "manifest" to deploy a lab', { field: 'package' });
    let manifest: LabManifest;
    let source: LabRecord['source'];
    if (request.example !== undefined) {
      const example = labExamples().find((e) => e.name === request.example);
      if (!example) throw errors.invalid(`There is no lab example "${request.example}"; examples: ${labExamples().map((e) => e.name).join(', ')}`, { field: 'example', value: request.example });
      manifest = example.manifest;
      source = { kind: 'example', ref: example.name };
    } else if (request.package !== undefined) {
      if (!this.o.packages) throw errors.unavailable('This manager cannot deploy packages: it has no package library', { field: 'package' });
      manifest = await this.o.packages.manifestOf(request.package);
      source = { kind: 'package', ref: request.package };
    } else {
      manifest = request.manifest!;
      source = { kind: 'manifest', ref: null };
    }
    return this.submitDeploy('lab.deploy', { name: request.name, manifest, source, labels: request.labels ?? {}, project: request.project ?? null, ...(request.healthTimeoutSeconds ? { healthTimeoutMs: request.healthTimeoutSeconds * 1000 } : {}) }, actor, create, idempotencyKey);
  }

  /** A second copy of a lab, from its manifest, with its own networks and addresses; its deploy operation. */
  async clone(ref: string, request: LabClone, actor: string, create?: LabVmCreator, idempotencyKey?: string): Promise<OperationRecord> {
    const lab = await this.find(ref);
    return this.submitDeploy('lab.clone', { name: request.name, manifest: lab.manifest as unknown as LabManifest, source: { kind: 'clone', ref: lab.name }, labels: { ...lab.labels, ...(request.labels ?? {}) }, project: lab.project }, actor, create, idempotencyKey);
  }

  private async submitDeploy(
    kind: 'lab.deploy' | 'lab.clone',
    d: { name: string; manifest: LabManifest; source: LabRecord['source']; labels: Record<string, string>; project: string | null; healthTimeoutMs?: number },
    actor: string,
    create: LabVmCreator | undefined,
    idempotencyKey: string | undefined,
  ): Promise<OperationRecord> {
    const { name, manifest } = d;
    const plan = planLab(name, manifest);
    for (const vm of manifest.vms) {
      const image = await this.o.images.resolve(vm.image).catch(() => undefined);
      if (!image) throw errors.invalid(`VM "${vm.name}" of lab "${name}" boots image "${vm.image}", which is not in the library`, { field: 'vms.image', value: vm.image });
      if (vm.guest?.cmdline?.trim() && !(await this.o.images.bootsKernel(image))) {
        throw errors.invalid(`VM "${vm.name}" of lab "${name}" boots its own disk (image "${vm.image}"): its guest.cmdline would reach nothing; only appliance-kernel VMs take kernel settings`, { field: 'vms.guest.cmdline' });
      }
      for (const data of vm.dataImages ?? []) {
        const image = await this.o.images.resolve(data).catch(() => undefined);
        if (image?.format !== 'qcow2') throw errors.invalid(`VM "${vm.name}" of lab "${name}" has data image "${data}", which is not a qcow2 disk image of the library`, { field: 'vms.dataImages', value: data });
      }
    }
    if (await this.o.store.labs.tryFind(name)) throw errors.conflict(`A lab named "${name}" exists already`, { name });
    for (const vm of manifest.vms) {
      const vmName = labVmName(name, vm.name);
      if (await this.o.store.vms.tryFind(vmName)) throw errors.conflict(`Cannot deploy lab "${name}": a VM named "${vmName}" exists already`, { vm: vmName });
    }
    const mode = this.networkMode;
    const otherSubnets = (await this.o.networking?.usedSubnets()) ?? [];
    // Forwards (user mode): every port a health check or another VM's settings reach, on a free loopback port.
    const ports = new Map<string, Set<number>>();
    if (mode === 'user') {
      const want = (vm: string, port: number) => (ports.get(vm) ?? ports.set(vm, new Set()).get(vm)!).add(port);
      for (const vm of manifest.vms) if (vm.healthCheck && vm.healthCheck.kind !== 'serial') want(vm.name, vm.healthCheck.port);
      for (const ref of referencedPorts(manifest)) want(ref.vm, ref.port);
    }
    const endpoints = new Map<string, LabVmEntry['endpoints']>();
    for (const [vm, set] of ports) endpoints.set(vm, await Promise.all([...set].sort((a, b) => a - b).map(async (guestPort) => ({ guestPort, host: '127.0.0.1', hostPort: await freeLoopbackPort() }))));
    const labId = randomUUID();
    const op = await this.o.runner.submit(
      { kind, targetKind: 'lab', targetId: labId, params: { name, ...(d.healthTimeoutMs ? { healthTimeoutMs: d.healthTimeoutMs } : {}) }, actor, idempotencyKey: idempotencyKey ?? null },
      `Lab "${name}"`,
      async (tx) => {
        // The addresses and the lab commit with the operation: two deploys never get the same block.
        const labs = await listEvery((query) => tx.labs.list(query));
        const used = [...otherSubnets, ...labs.flatMap((lab) => lab.networks.map((n) => n.subnet))];
        const blocks = allocateBlocks(this.o.addressPool ?? defaultLabAddressPool, used, manifest.networks.length);
        const networks: LabNetworkEntry[] = manifest.networks.map((n, i) => ({ name: n.name, network: labNetworkName(name, n.name), kind: n.kind, subnet: subnetInBlock(n.subnet, blocks[i]!), manifestSubnet: n.subnet, made: false }));
        const subnetOf = new Map(networks.map((n) => [n.name, n.subnet]));
        const vms: LabVmEntry[] = manifest.vms.map((vm) => {
          const addresses = (vm.nics ?? []).flatMap((nic) => (nic.ip ? [translateAddress(nic.ip, subnetOf.get(nic.network)!)] : []));
          // On Drover networks a TCP/HTTP health check goes to the VM's lab address (from the host side of the bridge).
          const probe = mode === 'networks' && vm.healthCheck && vm.healthCheck.kind !== 'serial' && addresses[0] ? [{ guestPort: vm.healthCheck.port, host: addresses[0], hostPort: vm.healthCheck.port }] : [];
          return { name: vm.name, vm: labVmName(name, vm.name), vmId: null, order: plan.levelOf.get(vm.name)!, addresses, endpoints: endpoints.get(vm.name) ?? probe };
        });
        await tx.labs.create(
          {
            name,
            state: 'deploying',
            source: d.source,
            manifest: manifest as unknown as Record<string, unknown>,
            networkMode: mode,
            networks,
            groups: (manifest.securityGroups ?? []).map((g) => ({ name: g.name, group: labNetworkName(name, g.name), made: false })),
            vms,
            labels: d.labels,
            updatePolicy: manifest.updatePolicy?.policy ?? 'pinned',
            owner: actor,
            project: d.project,
            lastError: null,
          },
          labId,
        );
        return { phase: { name: 'prepare', progress: 2, note: `${manifest.vms.length} VMs in ${plan.levels.length} start levels` } };
      },
    );
    if (create) this.creators.set(labId, create);
    return op;
  }

  /** Starts, stops, snapshots or resets a whole lab: one operation. */
  async action(ref: string, action: 'start' | 'stop' | 'snapshot' | 'reset', params: Record<string, unknown>, actor: string, idempotencyKey?: string): Promise<OperationRecord> {
    const lab = await this.find(ref);
    if (lab.state === 'deploying' || lab.state === 'destroying') throw errors.conflict(`Cannot ${action} lab "${lab.name}": it is ${lab.state}`, { state: lab.state });
    if (action === 'snapshot' && params.name === initialSnapshot) throw errors.invalid(`Snapshot name "${initialSnapshot}" is the lab's own (reset goes back to it); choose another`, { field: 'name' });
    return this.o.runner.submit({ kind: `lab.${action}`, targetKind: 'lab', targetId: lab.id, params, actor, idempotencyKey: idempotencyKey ?? null }, `Lab "${lab.name}"`);
  }

  /** Destroys a lab: its VMs (stopped first), their disks, its networks and groups, the lab. */
  async destroy(ref: string, actor: string, idempotencyKey?: string): Promise<OperationRecord> {
    const lab = await this.find(ref);
    return this.o.runner.submit({ kind: 'lab.destroy', targetKind: 'lab', targetId: lab.id, actor, idempotencyKey: idempotencyKey ?? null }, `Lab "${lab.name}"`);
  }

  // ------------------------------------------------------------ operation bodies

  private async runDeploy(ctx: OperationContext): Promise<unknown> {
    let lab = await this.o.store.labs.get(ctx.op.targetId);
    const manifest = lab.manifest as unknown as LabManifest;
    const create = this.creators.get(lab.id) ?? ((request: VmCreate) => this.o.vms.create(request, ctx.op.actor));
    const journal = this.journal(ctx);
    if (lab.networkMode === 'networks') {
      const networking = this.networking();
      await journal('networks', 5, lab.networks.map((n) => `${n.network} ${n.subnet}`).join(', '));
      for (const entry of lab.networks) {
        const spec = manifest.networks.find((n) => n.name === entry.name)!;
        await networking.createNetwork({ name: entry.network, kind: spec.kind, subnet: entry.subnet, labels: { ...(spec.labels ?? {}), lab: lab.name }, lab: lab.name, owner: lab.owner });
        lab = await this.save(lab.id, { networks: lab.networks.map((n) => (n.name === entry.name ? { ...n, made: true } : n)) });
      }
      const pendingRules: Array<{ group: string; rules: Array<Record<string, unknown>> }> = [];
      for (const entry of lab.groups) {
        const spec = (manifest.securityGroups ?? []).find((g) => g.name === entry.name)!;
        const rules = spec.rules.map((rule) => {
          const { group, ...rest } = rule;
          return { ...rest, ...(group ? { group: labNetworkName(lab.name, group) } : {}), ...(rest.cidr ? { cidr: this.translateCidr(lab, rest.cidr) } : {}) };
        });
        await networking.createGroup({ name: entry.group, lab: lab.name, owner: lab.owner });
        lab = await this.save(lab.id, { groups: lab.groups.map((g) => (g.name === entry.name ? { ...g, made: true } : g)) });
        pendingRules.push({ group: entry.group, rules });
      }
      // Rules once every group exists: a rule may name a group made after its own.
      for (const { group, rules } of pendingRules) await networking.setGroupRules(group, rules);
    }
    await journal('vms', 10, `${manifest.vms.length} VMs`);
    for (const vm of manifest.vms) {
      const record = await create(await this.vmCreate(lab, vm));
      lab = await this.save(lab.id, { vms: lab.vms.map((v) => (v.name === vm.name ? { ...v, vmId: record.id } : v)) });
    }
    this.creators.delete(lab.id);
    await this.startInOrder(ctx, lab, journal, 15, 85);
    await journal('initial-snapshot', 90, `"${initialSnapshot}" of every disk`);
    await allOf(lab.vms, async (v) => {
      await this.vmOp(v, 'snapshot.create', { name: initialSnapshot, withMemory: false }, ctx.op.actor);
    });
    await this.save(lab.id, { state: 'running', lastError: null });
    return { lab: lab.name, vms: lab.vms.map((v) => v.vm), networks: lab.networks.map((n) => n.network) };
  }

  private async runStart(ctx: OperationContext): Promise<unknown> {
    const lab = await this.save(ctx.op.targetId, { state: 'busy' });
    await this.startInOrder(ctx, lab, this.journal(ctx), 5, 95);
    await this.save(lab.id, { state: 'running', lastError: null });
    return { lab: lab.name };
  }

  private async runStop(ctx: OperationContext): Promise<unknown> {
    const lab = await this.save(ctx.op.targetId, { state: 'busy' });
    await this.stopInOrder(ctx, lab, this.journal(ctx), 'stop', 5, 95);
    await this.save(lab.id, { state: 'stopped', lastError: null });
    return { lab: lab.name };
  }

  private async runSnapshot(ctx: OperationContext): Promise<unknown> {
    const lab = await this.o.store.labs.get(ctx.op.targetId);
    const name = String(ctx.op.params.name);
    const journal = this.journal(ctx);
    await journal('snapshot', 10, `"${name}" of ${lab.vms.length} VMs`);
    let done = 0;
    await allOf(lab.vms, async (v) => {
      await this.vmOp(v, 'snapshot.create', { name }, ctx.op.actor);
      await journal('snapshot', 10 + (80 * ++done) / lab.vms.length, v.name);
    });
    return { lab: lab.name, snapshot: name };
  }

  /** Back to the state at deploy: every VM off, its disks reverted to the initial snapshot, started again in order. */
  private async runReset(ctx: OperationContext): Promise<unknown> {
    const lab = await this.save(ctx.op.targetId, { state: 'busy' });
    const journal = this.journal(ctx);
    await this.stopInOrder(ctx, lab, journal, 'force-off', 5, 30);
    await journal('revert', 35, `disks back to "${initialSnapshot}"`);
    await allOf(lab.vms, async (v) => {
      await this.vmOp(v, 'snapshot.revert', { name: initialSnapshot }, ctx.op.actor);
    });
    await this.startInOrder(ctx, lab, journal, 40, 95);
    await this.save(lab.id, { state: 'running', lastError: null });
    return { lab: lab.name };
  }

  /** Removes what a lab has: VMs (forced off), their disks, groups, networks, then the lab. Used by destroy and by a failed deploy. */
  private async teardown(ctx: OperationContext, initial: LabRecord): Promise<void> {
    let lab = await this.save(initial.id, { state: 'destroying' });
    const journal = this.journal(ctx);
    await this.stopInOrder(ctx, lab, journal, 'force-off', 10, 40);
    await journal('delete-vms', 45);
    // One VM after the other: an agent deleting volumes of one pool at once can miss one (each delete reads
    // every other volume of the pool to find clones; a volume vanishing meanwhile reads as "not found").
    for (const v of lab.vms) {
      if (!v.vmId || !(await this.o.store.vms.tryGet(v.vmId))) continue;
      const op = await this.o.vms.remove(v.vmId, ctx.op.actor);
      await this.waitVmOp(op, v, 'delete');
    }
    lab = await this.save(lab.id, { vms: lab.vms.map((v) => ({ ...v, vmId: null })) });
    await journal('delete-networks', 80);
    if (lab.groups.some((g) => g.made) || lab.networks.some((n) => n.made)) {
      const networking = this.networking();
      // Rules first: a group cannot go while another's rule names it.
      for (const g of lab.groups.filter((g) => g.made)) await networking.setGroupRules(g.group, []);
      for (const g of lab.groups.filter((g) => g.made)) await networking.deleteGroup(g.group);
      for (const n of lab.networks.filter((n) => n.made)) await networking.deleteNetwork(n.network);
    }
    await this.o.store.labs.delete(lab.id);
    await this.event('lab.deleted', lab.id, { id: lab.id, name: lab.name });
  }

  // ------------------------------------------------------------ steps

  /** Starts the lab's VMs level by level (the VMs of one level at once), each followed by its health check. */
  private async startInOrder(ctx: OperationContext, lab: LabRecord, journal: Journal, from: number, to: number): Promise<void> {
    const manifest = lab.manifest as unknown as LabManifest;
    const levels = startLevels(manifest.vms).levels;
    const timeoutMs = Number(ctx.op.params.healthTimeoutMs ?? this.o.healthTimeoutMs ?? 300_000);
    let done = 0;
    const step = (to - from) / Math.max(1, lab.vms.length * 2);
    for (const level of levels) {
      await allOf(level, async (name) => {
        const entry = lab.vms.find((v) => v.name === name)!;
        const spec = manifest.vms.find((v) => v.name === name)!;
        const vm = await this.o.store.vms.get(entry.vmId!);
        const offset = await this.serialOffset(vm);
        if (!['running', 'paused'].includes(vm.state)) {
          await journal('start', from + step * done++, name);
          await this.vmOp(entry, 'start', {}, ctx.op.actor);
        } else done++;
        if (spec.startDelaySeconds) await new Promise((r) => setTimeout(r, spec.startDelaySeconds! * 1000));
        const passed = await this.healthCheck(entry, spec, offset, timeoutMs);
        await journal('healthy', from + step * done++, `${name}: ${passed}`);
      });
    }
  }

  /** Stops (or forces off) the lab's running VMs in the reverse start order. */
  private async stopInOrder(ctx: OperationContext, lab: LabRecord, journal: Journal, action: 'stop' | 'force-off', from: number, to: number): Promise<void> {
    const levels = [...startLevels((lab.manifest as unknown as LabManifest).vms).levels].reverse();
    let done = 0;
    const step = (to - from) / Math.max(1, lab.vms.length);
    for (const level of levels) {
      await allOf(level, async (name) => {
        const entry = lab.vms.find((v) => v.name === name)!;
        const vm = entry.vmId ? await this.o.store.vms.tryGet(entry.vmId) : undefined;
        if (vm && ['running', 'paused', 'starting', 'stopping'].includes(vm.state)) {
          await journal(action, from + step * done, name);
          await this.vmOp(entry, action, action === 'stop' ? { timeoutMs: 30_000 } : {}, ctx.op.actor);
        }
        done++;
      });
    }
  }

  /** Runs one VM operation through the VM service and waits for its end; its failure is the lab operation's, naming the VM. */
  private async vmOp(entry: LabVmEntry, action: string, params: Record<string, unknown>, actor: string): Promise<void> {
    if (!entry.vmId) throw errors.conflict(`VM "${entry.vm}" of the lab was never made`);
    const op = await this.o.vms.action(entry.vmId, action, params, actor);
    await this.waitVmOp(op, entry, action);
  }

  private async waitVmOp(op: OperationRecord, entry: LabVmEntry, action: string): Promise<void> {
    const ended = await this.o.runner.wait(op.id, vmOpTimeoutMs);
    if (ended.state !== 'done') {
      throw new DroverError((ended.error?.code as DroverError['code']) ?? 'unavailable', `Cannot ${action} VM "${entry.vm}": ${ended.error?.message ?? `operation ${op.id} is ${ended.state}`}`, { details: { vm: entry.vm, operationId: op.id } });
    }
  }

  /** Where the VM's serial log ends now (its health check reads what comes after). */
  private async serialOffset(vm: VmRecord): Promise<number> {
    if (!vm.hostId) return 0;
    try {
      return (await this.o.link.serialLog(await this.o.store.hosts.get(vm.hostId), vm.id, 0)).next;
    } catch {
      return 0;
    }
  }

  /** Waits until the VM passes its health check (a pattern on its serial console, a TCP port, an HTTP path); returns what passed. */
  private async healthCheck(entry: LabVmEntry, spec: LabVm, offset: number, timeoutMs: number): Promise<string> {
    const check = spec.healthCheck;
    if (!check) return 'started (no health check)';
    const deadline = Date.now() + timeoutMs;
    const what = check.kind === 'serial' ? `serial /${check.pattern}/` : check.kind === 'tcp' ? `tcp port ${check.port}` : `http ${check.port}${check.path}`;
    let log = '';
    let at = offset;
    const pattern = check.kind === 'serial' ? new RegExp(check.pattern, 'm') : undefined;
    while (Date.now() < deadline) {
      const vm = await this.o.store.vms.get(entry.vmId!);
      if (!['running', 'starting'].includes(vm.state)) throw errors.unavailable(`VM "${entry.vm}" failed its health check (${what}): it is ${vm.state}`, { vm: entry.vm });
      if (check.kind === 'serial' && vm.hostId) {
        const part = await this.o.link.serialLog(await this.o.store.hosts.get(vm.hostId), vm.id, at).catch(() => undefined);
        if (part) {
          log = (log + part.text).slice(-65536);
          at = part.next;
          if (pattern!.test(log)) return what;
        }
      } else if (check.kind !== 'serial') {
        const endpoint = entry.endpoints.find((e) => e.guestPort === check.port);
        if (!endpoint) throw errors.unavailable(`VM "${entry.vm}" cannot be health-checked on port ${check.port}: the manager has no way to reach it`, { vm: entry.vm });
        if (check.kind === 'tcp' && (await tcpAnswers(endpoint.host, endpoint.hostPort))) return what;
        if (check.kind === 'http') {
          try {
            const answer = await fetch(`http://${endpoint.host}:${endpoint.hostPort}${check.path}`, { signal: AbortSignal.timeout(3_000) });
            const body = await answer.text();
            if (answer.ok && (check.expect === undefined || body.includes(check.expect))) return what;
          } catch {
            // not yet
          }
        }
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    throw errors.timeout(`VM "${entry.vm}" did not pass its health check (${what}) within ${Math.round(timeoutMs / 1000)} s`, { vm: entry.vm });
  }

  /**
   * The VM a lab VM becomes: named <lab>-<vm>, labelled with its lab, on the lab's networks (or user networking with forwards).
   * Kernel settings go only to a VM that boots a kernel (an appliance, or a disk image booted by the appliance kernel);
   * one that boots its own disk (an OVA's) has no command line to take them.
   */
  private async vmCreate(lab: LabRecord, vm: LabVm): Promise<VmCreate> {
    const bootsKernel = await this.o.images.bootsKernel(await this.o.images.resolve(vm.image));
    const manifest = lab.manifest as unknown as LabManifest;
    const entry = lab.vms.find((v) => v.name === vm.name)!;
    const owners = addressOwners(manifest);
    const subnetOf = new Map(lab.networks.map((n) => [n.name, n.subnet]));
    const translate = (ip: string) => {
      for (const n of manifest.networks) {
        const s = parseCidr(n.subnet);
        const x = ip.split('.').map(Number);
        const net = (((x[0]! << 24) | (x[1]! << 16) | (x[2]! << 8)) >>> 0) === ((s.network & 0xffffff00) >>> 0);
        if (net) return translateAddress(ip, subnetOf.get(n.name)!);
      }
      return undefined;
    };
    const forwardOf = (ip: string, port: number) => {
      const target = owners.get(ip);
      return lab.vms.find((v) => v.name === target)?.endpoints.find((e) => e.guestPort === port)?.hostPort;
    };
    const firstNic = vm.nics?.find((n) => n.ip);
    const ownAddress = firstNic ? `${translateAddress(firstNic.ip!, subnetOf.get(firstNic.network)!)}/${parseCidr(subnetOf.get(firstNic.network)!).prefix}` : undefined;
    const cmdline = guestCmdline(vm.guest?.cmdline, { vmName: entry.vm, mode: lab.networkMode as 'networks' | 'user', translate, forwardOf, ...(ownAddress ? { ownAddress } : {}) });
    return {
      name: entry.vm,
      image: vm.image,
      ...(vm.dataImages?.length ? { dataImages: vm.dataImages } : {}),
      ...(vm.cpus ? { cpus: vm.cpus } : {}),
      ...(vm.memoryMiB ? { memoryMiB: vm.memoryMiB } : {}),
      labels: { ...lab.labels, ...(vm.labels ?? {}), lab: lab.name, 'lab-vm': vm.name },
      ...(vm.securityLabel ? { securityLabel: vm.securityLabel } : {}),
      ...(bootsKernel ? { cmdline } : {}),
      ...(lab.networkMode === 'user'
        ? { forwards: entry.endpoints.map((e) => ({ hostPort: e.hostPort, guestPort: e.guestPort })) }
        : {
            networks: (vm.nics ?? []).map((nic) => ({
              network: labNetworkName(lab.name, nic.network),
              ...(nic.securityGroups?.length ? { securityGroups: nic.securityGroups.map((g) => labNetworkName(lab.name, g)) } : {}),
              ...(nic.ip ? { ip: translateAddress(nic.ip, subnetOf.get(nic.network)!) } : {}),
            })),
          }),
      ...(lab.project ? { project: lab.project } : {}),
    } as VmCreate;
  }

  /** A rule's CIDR inside one of the manifest's subnets moves with it; any other stays. */
  private translateCidr(lab: LabRecord, cidr: string): string {
    const manifest = lab.manifest as unknown as LabManifest;
    const network = manifest.networks.find((n) => n.subnet === cidr);
    return network ? lab.networks.find((n) => n.name === network.name)!.subnet : cidr;
  }

  private networking(): LabNetworking {
    if (!this.o.networking) throw errors.unavailable('This manager has no network service: the lab cannot have Drover networks');
    return this.o.networking;
  }

  /** The lab's state from its VMs': running, stopped, or partial. */
  private async settledState(lab: LabRecord): Promise<string> {
    const states = (await this.o.store.vms.getMany(lab.vms.flatMap((v) => (v.vmId ? [v.vmId] : [])))).map((vm) => vm.state);
    if (states.length === lab.vms.length && states.every((s) => s === 'running')) return 'running';
    if (states.every((s) => ['stopped', 'defined'].includes(s))) return 'stopped';
    return 'partial';
  }

  /** Journal entries from steps running at once, one after the other (each entry is written from the one before). */
  private journal(ctx: OperationContext): Journal {
    let chain: Promise<void> = Promise.resolve();
    return (phase, progress, note) => {
      const next = chain.then(() => ctx.phase(phase, progress, note));
      chain = next.catch(() => undefined);
      return next;
    };
  }

  private async save(id: string, patch: Parameters<Store['labs']['update']>[1]): Promise<LabRecord> {
    const lab = await this.o.store.labs.update(id, patch);
    await this.event('lab.updated', lab.id, { id: lab.id, name: lab.name, state: lab.state });
    return lab;
  }

  private async event(type: string, id: string, data: Record<string, unknown>): Promise<void> {
    const event = await this.o.store.events.append({ type, objectKind: 'lab', objectId: id, data });
    this.o.hub.publish(event);
  }
}

type Journal = (phase: string, progress: number, note?: string) => Promise<void>;

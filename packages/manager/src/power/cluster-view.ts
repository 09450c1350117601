import type { HostCandidate, PlannerVm } from '@drover/core';
import { errors } from '@drover/core';
import type { EvacuationPolicy } from '@drover/api';
import type { Store } from '../store/index.js';
import { listEvery } from '../store/paging.js';
import type { OperationRecord, VmRecord } from '../store/types.js';
import type { OperationRunner } from '../operations/operation-runner.js';
import { placementSpec, type ManagedVmSpec, type VmService } from '../vms/vm.service.js';

export function specOf(vm: VmRecord): ManagedVmSpec {
  return vm.spec as unknown as ManagedVmSpec;
}

export function evacuationPolicyOf(vm: VmRecord): EvacuationPolicy {
  return specOf(vm).evacuationPolicy ?? 'live-migrate';
}

/** Every VM of the store, or those on one host. */
export async function listVms(store: Store, hostId?: string): Promise<VmRecord[]> {
  return listEvery((query) => store.vms.list(query), hostId ? { hostId } : undefined);
}

/** The planner's view of a VM where it runs now. */
export function plannerVm(vm: VmRecord, pinned = false): PlannerVm {
  const spec = specOf(vm);
  return {
    vmId: vm.id,
    name: vm.name,
    ...placementSpec(spec),
    labels: vm.labels,
    hostId: vm.hostId!,
    ...(pinned ? { pinned } : {}),
  };
}

/** The hosts as the scheduler sees them, and the running or paused VMs (the ones a live migration can move). */
export async function clusterView(store: Store, vms: VmService): Promise<{ hosts: HostCandidate[]; movable: VmRecord[] }> {
  const hosts = await vms.hostCandidates();
  const all = await listVms(store);
  return { hosts, movable: all.filter((vm) => vm.hostId !== null && (vm.state === 'running' || vm.state === 'paused')) };
}

/** Runs `fn` over `items`, at most `limit` at a time; resolves with every outcome. */
export async function runLimited<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<Array<PromiseSettledResult<R>>> {
  const results: Array<PromiseSettledResult<R>> = new Array(items.length);
  let next = 0;
  const worker = async () => {
    for (;;) {
      const index = next++;
      if (index >= items.length) return;
      try {
        results[index] = { status: 'fulfilled', value: await fn(items[index]!, index) };
      } catch (reason) {
        results[index] = { status: 'rejected', reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return results;
}

/** Waits for a child operation; throws its error when it did not end `done`. */
export async function awaitOperation(runner: OperationRunner, op: OperationRecord, what: string, timeoutMs = 900_000): Promise<OperationRecord> {
  const ended = await runner.wait(op.id, timeoutMs);
  if (ended.state === 'done') return ended;
  if (ended.state === 'pending' || ended.state === 'running') throw errors.timeout(`${what} (operation ${op.id}) did not end within ${timeoutMs} ms`, { operationId: op.id });
  throw errors.unavailable(`${what} failed (operation ${op.id}, ${ended.state}): ${ended.error?.message ?? 'no reason given'}`, { operationId: op.id });
}

/** Waits until the VM is in one of `states` (a child operation's last writes), or throws after `timeoutMs`. */
export async function vmReaches(store: Store, vmId: string, states: string[], timeoutMs = 30_000): Promise<VmRecord> {
  for (const deadline = Date.now() + timeoutMs; ; ) {
    const vm = await store.vms.get(vmId);
    if (states.includes(vm.state)) return vm;
    if (Date.now() > deadline) throw errors.timeout(`VM "${vm.name}" is ${vm.state}, not ${states.join(' or ')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

import { errors } from '../errors.js';
import type { HostCandidate, PlacementOptions, PlacementRequest, ResourceAmounts } from './types.js';

const hostStates = new Set(['online', 'unreachable', 'maintenance', 'powered_off', 'joining']);

function isPositiveInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value > 0;
}

function isAmount(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0;
}

function isStringList(value: unknown): value is readonly string[] {
  return Array.isArray(value) && value.every((item) => typeof item === 'string' && item.length > 0);
}

function isStringRecord(value: unknown): value is Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  // A loop rather than Object.values: hosts are validated on every placement, 1,000 at a time.
  for (const key in value) if (typeof (value as Record<string, unknown>)[key] !== 'string') return false;
  return true;
}

/** Rejects a request the scheduler cannot reason about, naming the field and its value. */
export function validatePlacementRequest(request: PlacementRequest): void {
  const vm = typeof request.name === 'string' && request.name !== '' ? request.name : request.vmId;
  const bad = (field: string, value: unknown, expected: string) =>
    errors.invalid(`Placement request for VM "${vm}": ${field} is ${JSON.stringify(value) ?? String(value)}, expected ${expected}`, {
      field,
      vmId: request.vmId,
    });
  if (typeof request.vmId !== 'string' || request.vmId === '') throw bad('vmId', request.vmId, 'a non-empty string');
  if (typeof request.name !== 'string') throw bad('name', request.name, 'a string');
  if (!isPositiveInteger(request.cpus)) throw bad('cpus', request.cpus, 'a positive integer');
  if (!isPositiveInteger(request.memoryMiB)) throw bad('memoryMiB', request.memoryMiB, 'a positive integer (MiB)');
  if (request.cpuModel !== undefined && (typeof request.cpuModel !== 'string' || request.cpuModel === '')) {
    throw bad('cpuModel', request.cpuModel, 'a CPU model name');
  }
  for (const field of ['antiAffinityGroups', 'hostInclude', 'hostExclude'] as const) {
    const value = request[field];
    if (value !== undefined && !isStringList(value)) throw bad(field, value, 'a list of non-empty strings');
  }
  for (const field of ['labels', 'requiredHostLabels'] as const) {
    const value = request[field];
    if (value !== undefined && !isStringRecord(value)) throw bad(field, value, 'an object of string values');
  }
}

function checkAmounts(host: HostCandidate, field: string, amounts: ResourceAmounts | undefined): void {
  if (typeof amounts !== 'object' || amounts === null || !isAmount(amounts.cpus) || !isAmount(amounts.memoryMiB)) {
    throw errors.invalid(
      `Host "${host.name}": ${field} is ${JSON.stringify(amounts) ?? String(amounts)}, expected { cpus, memoryMiB } of non-negative numbers`,
      { hostId: host.id, field },
    );
  }
}

/** Rejects host records that would make capacity arithmetic meaningless (they come from the store: a bug, loudly). */
export function validateHostCandidates(hosts: readonly HostCandidate[]): void {
  const ids = new Set<string>();
  for (const host of hosts) {
    if (typeof host.id !== 'string' || host.id === '') {
      throw errors.invalid(`Host "${String(host.name)}": id is ${JSON.stringify(host.id)}, expected a non-empty string`, { field: 'id' });
    }
    if (ids.has(host.id)) throw errors.invalid(`Host id "${host.id}" appears twice in the candidate list`, { hostId: host.id });
    ids.add(host.id);
    const bad = (field: string, value: unknown, expected: string) =>
      errors.invalid(`Host "${host.name}": ${field} is ${JSON.stringify(value) ?? String(value)}, expected ${expected}`, {
        hostId: host.id,
        field,
      });
    if (typeof host.name !== 'string' || host.name === '') throw bad('name', host.name, 'a non-empty string');
    if (!hostStates.has(host.state)) throw bad('state', host.state, [...hostStates].join(' | '));
    checkAmounts(host, 'capacity', host.capacity);
    checkAmounts(host, 'used', host.used);
    checkAmounts(host, 'reserved', host.reserved);
    const ratio = host.cpuAllocationRatio;
    if (ratio !== undefined && !(typeof ratio === 'number' && Number.isFinite(ratio) && ratio > 0)) {
      throw bad('cpuAllocationRatio', ratio, 'a positive number');
    }
    if (!Array.isArray(host.cpuModels)) throw bad('cpuModels', host.cpuModels, 'a list of CPU model names');
    if (!isStringRecord(host.labels)) throw bad('labels', host.labels, 'an object of string values');
    if (!Array.isArray(host.vms)) throw bad('vms', host.vms, 'a list of VMs');
  }
}

export function validatePlacementOptions(options: PlacementOptions): void {
  if (options.mode !== undefined && options.mode !== 'spread' && options.mode !== 'pack') {
    throw errors.invalid(`Placement mode is ${JSON.stringify(options.mode)}, expected "spread" or "pack"`, { field: 'mode' });
  }
  for (const weigher of options.weighers ?? []) {
    if (!(typeof weigher.weight === 'number' && Number.isFinite(weigher.weight) && weigher.weight >= 0)) {
      throw errors.invalid(`Weigher "${weigher.name}" has weight ${String(weigher.weight)}, expected a non-negative number`, {
        field: 'weighers',
      });
    }
  }
}

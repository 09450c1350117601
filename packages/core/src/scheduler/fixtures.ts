import type { HostCandidate, PlacementRequest } from './types.js';

/** Test builders: a healthy 8-CPU, 8 GiB online host and a 1-vCPU, 128 MiB VM, with overrides. */
export function testHost(id: string, overrides: Partial<HostCandidate> = {}): HostCandidate {
  return {
    id,
    name: id,
    state: 'online',
    capacity: { cpus: 8, memoryMiB: 8192 },
    used: { cpus: 0, memoryMiB: 0 },
    reserved: { cpus: 0, memoryMiB: 0 },
    cpuModels: ['qemu64', 'max'],
    labels: {},
    vms: [],
    ...overrides,
  };
}

export function testRequest(overrides: Partial<PlacementRequest> = {}): PlacementRequest {
  return { vmId: 'vm-1', name: 'web-3', cpus: 1, memoryMiB: 128, ...overrides };
}

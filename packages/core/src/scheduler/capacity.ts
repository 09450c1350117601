import type { HostCandidate } from './types.js';

export const DEFAULT_CPU_ALLOCATION_RATIO = 4;

/** vCPUs the host may hand out: physical CPUs × allocation ratio, rounded down (as the agent enforces it). */
export function vcpuCapacityOf(host: HostCandidate): number {
  return Math.floor(host.capacity.cpus * (host.cpuAllocationRatio ?? DEFAULT_CPU_ALLOCATION_RATIO));
}

/** Memory not used by running VMs nor reserved by starts in flight; negative if already overcommitted. */
export function freeMemoryMiBOf(host: HostCandidate): number {
  return host.capacity.memoryMiB - host.used.memoryMiB - host.reserved.memoryMiB;
}

/** vCPUs not used by running VMs nor reserved by starts in flight; negative if already overcommitted. */
export function freeVcpusOf(host: HostCandidate): number {
  return vcpuCapacityOf(host) - host.used.cpus - host.reserved.cpus;
}

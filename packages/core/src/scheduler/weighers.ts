import { freeMemoryMiBOf, freeVcpusOf, vcpuCapacityOf } from './capacity.js';
import type { HostCandidate, PlacementContext, PlacementRequest, PlacementWeigher } from './types.js';

/**
 * Makes a weigher: `score` returns a value in [0, 1], 1 being the most desirable
 * host. Like `defineFilter`, it names (and weights) the function itself, so pass
 * a fresh function.
 */
export function defineWeigher(
  name: string,
  weight: number,
  score: (request: PlacementRequest, host: HostCandidate, context: PlacementContext) => number,
): PlacementWeigher {
  Object.defineProperty(score, 'name', { value: name });
  return Object.assign(score, { weight });
}

/** The same weigher with another weight (0 switches it off); the original keeps its own. */
export function withWeight(weigher: PlacementWeigher, weight: number): PlacementWeigher {
  return defineWeigher(weigher.name, weight, (request, host, context) => weigher(request, host, context));
}

function fraction(part: number, whole: number): number {
  if (!(whole > 0)) return 0;
  return Math.min(1, Math.max(0, part / whole));
}

/**
 * Share of the host's memory still free once the VM is placed. `spread` prefers
 * the emptiest host (room for bursts, smaller blast radius); `pack` the fullest
 * (so consolidation empties hosts it can power off). Shares rather than MiB, so
 * a small empty host is not ranked below a big busy one.
 */
export const freeMemoryWeigher = defineWeigher('freeMemory', 1, (request, host, context) => {
  const free = fraction(freeMemoryMiBOf(host) - request.memoryMiB, host.capacity.memoryMiB);
  return context.mode === 'pack' ? 1 - free : free;
});

/** Share of the host's vCPU capacity still free once the VM is placed; same direction as memory. */
export const freeVcpusWeigher = defineWeigher('freeVcpus', 0.5, (request, host, context) => {
  const free = fraction(freeVcpusOf(host) - request.cpus, vcpuCapacityOf(host));
  return context.mode === 'pack' ? 1 - free : free;
});

/**
 * Memory first (it is the resource never overcommitted), vCPUs second. Equal
 * totals are broken by host name, then id, in the scheduler itself rather than by
 * a weigher, so the tie-break can never outweigh a real difference.
 */
export const defaultWeighers: readonly PlacementWeigher[] = Object.freeze([freeMemoryWeigher, freeVcpusWeigher]);

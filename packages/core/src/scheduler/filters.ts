import { freeMemoryMiBOf, freeVcpusOf, vcpuCapacityOf, DEFAULT_CPU_ALLOCATION_RATIO } from './capacity.js';
import { antiAffinityIndexOf } from './host-index.js';
import type { FilterVerdict, HostCandidate, PlacementContext, PlacementFilter, PlacementRequest } from './types.js';

/**
 * Gives a filter the name that explanations and error details show for it. The
 * function itself is renamed (no wrapper: filters run hosts × filters times per
 * placement), so pass a fresh function.
 */
export function defineFilter(
  name: string,
  check: (request: PlacementRequest, host: HostCandidate, context: PlacementContext) => FilterVerdict,
): PlacementFilter {
  Object.defineProperty(check, 'name', { value: name });
  return check;
}

const PASS: FilterVerdict = { pass: true };

function fail(host: HostCandidate, what: string, short: string): FilterVerdict {
  return { pass: false, reason: `host "${host.name}" ${what}`, short };
}

export function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

const stateWording: Record<string, { what: string; short: string }> = {
  unreachable: { what: 'is unreachable', short: 'unreachable' },
  maintenance: { what: 'is in maintenance', short: 'in maintenance' },
  powered_off: { what: 'is powered off', short: 'powered off' },
  joining: { what: 'is still joining the cluster', short: 'joining' },
};

/** Only online hosts take VMs. */
export const stateFilter = defineFilter('state', (_request, host) => {
  if (host.state === 'online') return PASS;
  const wording = stateWording[host.state] ?? { what: `is in state "${host.state}"`, short: host.state };
  return fail(host, wording.what, wording.short);
});

function selects(list: readonly string[], host: HostCandidate): boolean {
  return list.includes(host.id) || list.includes(host.name);
}

/** When the VM names hosts to run on (ids or names), only those. */
export const hostIncludeFilter = defineFilter('hostInclude', (request, host) => {
  const include = request.hostInclude;
  if (include === undefined || include.length === 0 || selects(include, host)) return PASS;
  return fail(host, `is not in the VM's host include list (${include.join(', ')})`, 'not in include list');
});

/** Hosts the VM must never run on (ids or names). */
export const hostExcludeFilter = defineFilter('hostExclude', (request, host) => {
  const exclude = request.hostExclude;
  if (exclude === undefined || !selects(exclude, host)) return PASS;
  return fail(host, "is in the VM's host exclude list", 'excluded');
});

/** Every required label must be set on the host to exactly the required value. */
export const hostLabelsFilter = defineFilter('requiredHostLabels', (request, host) => {
  const required = request.requiredHostLabels;
  if (required === undefined) return PASS;
  const missing: string[] = [];
  const detail: string[] = [];
  for (const [key, value] of Object.entries(required)) {
    const has = Object.hasOwn(host.labels, key) ? host.labels[key] : undefined;
    if (has === value) continue;
    missing.push(`${key}=${value}`);
    detail.push(`${key}=${value} (${has === undefined ? 'not set' : `has ${key}=${has}`})`);
  }
  if (missing.length === 0) return PASS;
  return fail(host, `lacks required label${missing.length === 1 ? '' : 's'} ${detail.join(', ')}`, `lacks ${missing.join(', ')}`);
});

/** A VM asking for a CPU model runs only where QEMU offers it (keeps it migratable between such hosts). */
export const cpuModelFilter = defineFilter('cpuModel', (request, host) => {
  const model = request.cpuModel;
  if (model === undefined || host.cpuModels.includes(model)) return PASS;
  const offered = host.cpuModels.length === 0 ? 'none' : host.cpuModels.join(', ');
  return fail(host, `does not offer CPU model "${model}" (offers ${offered})`, `no CPU model "${model}"`);
});

/** Memory is never overcommitted: capacity − used − reserved must hold the VM. */
export const memoryFilter = defineFilter('memory', (request, host) => {
  const free = freeMemoryMiBOf(host);
  if (free >= request.memoryMiB) return PASS;
  const inFlight = host.reserved.memoryMiB > 0 ? ` (${host.reserved.memoryMiB} MiB reserved by starts in flight)` : '';
  return fail(host, `has ${free} MiB free, VM needs ${request.memoryMiB} MiB${inFlight}`, `${free} MiB free`);
});

/** vCPUs are overcommitted up to the host's allocation ratio, never beyond. */
export const vcpuFilter = defineFilter('vcpus', (request, host) => {
  const free = freeVcpusOf(host);
  if (free >= request.cpus) return PASS;
  const ratio = host.cpuAllocationRatio ?? DEFAULT_CPU_ALLOCATION_RATIO;
  const inFlight = host.reserved.cpus > 0 ? `, ${host.reserved.cpus} reserved by starts in flight` : '';
  return fail(
    host,
    `has ${plural(free, 'vCPU')} free, VM needs ${request.cpus} ` +
      `(capacity ${vcpuCapacityOf(host)} = ${plural(host.capacity.cpus, 'CPU')} × ratio ${ratio}${inFlight})`,
    `${plural(free, 'vCPU')} free`,
  );
});

/** No two VMs of one anti-affinity group on a host (the VM itself, if already listed there, does not count). */
export const antiAffinityFilter = defineFilter('antiAffinity', (request, host) => {
  const groups = request.antiAffinityGroups;
  if (groups === undefined || groups.length === 0 || host.vms.length === 0) return PASS;
  const index = antiAffinityIndexOf(host);
  if (index.size === 0) return PASS;
  for (const group of groups) {
    const members = index.get(group);
    const other = members?.find((id) => id !== request.vmId);
    if (other !== undefined) {
      return fail(host, `already runs VM "${other}" of anti-affinity group "${group}"`, `anti-affinity group "${group}" (VM "${other}")`);
    }
  }
  return PASS;
});

/**
 * The default chain, cheapest and most telling first: the first failing filter is
 * the reason a host is reported as unfit. It is data: pass
 * `[...defaultFilters, myFilter]` as `filters` to add a rule.
 */
export const defaultFilters: readonly PlacementFilter[] = Object.freeze([
  stateFilter,
  hostIncludeFilter,
  hostExcludeFilter,
  hostLabelsFilter,
  cpuModelFilter,
  memoryFilter,
  vcpuFilter,
  antiAffinityFilter,
]);

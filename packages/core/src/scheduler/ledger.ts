import { errors } from '../errors.js';
import { chooseHost, resolveChain } from './place.js';
import { validateHostCandidates, validatePlacementRequest } from './validate.js';
import type { HostCandidate, HostVm, PlacementOptions, PlacementRequest, PlacementResult } from './types.js';

export interface Reservation {
  readonly vmId: string;
  readonly vmName: string;
  readonly hostId: string;
  readonly hostName: string;
  readonly cpus: number;
  readonly memoryMiB: number;
}

/**
 * A simulated cluster for placing many VMs in sequence (planners, dry runs,
 * tests): each `place` reserves the VM's memory and vCPUs on the chosen host and
 * lists the VM among the host's VMs, so later placements see it (capacity,
 * anti-affinity, policy filters). The hosts given are never modified: the
 * ledger keeps copies and replaces a host's copy on each change.
 */
export class ReservationLedger {
  readonly #hosts: HostCandidate[];
  readonly #indexById = new Map<string, number>();
  readonly #reservations = new Map<string, Reservation>();
  readonly #chain: ReturnType<typeof resolveChain>;

  constructor(hosts: readonly HostCandidate[], options: PlacementOptions = {}) {
    validateHostCandidates(hosts);
    this.#chain = resolveChain(options);
    this.#hosts = [...hosts];
    this.#hosts.forEach((host, i) => this.#indexById.set(host.id, i));
  }

  /** A snapshot of the hosts with the current reservations, in the order given (later changes do not show in it). */
  get hosts(): readonly HostCandidate[] {
    return [...this.#hosts];
  }

  host(id: string): HostCandidate | undefined {
    const i = this.#indexById.get(id);
    return i === undefined ? undefined : this.#hosts[i];
  }

  get reservations(): readonly Reservation[] {
    return [...this.#reservations.values()];
  }

  reservationOf(vmId: string): Reservation | undefined {
    return this.#reservations.get(vmId);
  }

  /**
   * Places the VM as `placeVm` would on the current state, then reserves it there.
   * @throws DroverError `conflict` if no host fits or the VM already holds a reservation.
   */
  place(request: PlacementRequest): PlacementResult {
    validatePlacementRequest(request);
    const held = this.#reservations.get(request.vmId);
    if (held) {
      throw errors.conflict(`VM "${request.name || request.vmId}" already has a reservation on host "${held.hostName}"`, {
        vmId: request.vmId,
        hostId: held.hostId,
      });
    }
    const result = chooseHost(request, this.#hosts, this.#chain);
    const i = this.#indexById.get(result.hostId)!;
    const host = this.#hosts[i]!;
    const vm: HostVm = {
      id: request.vmId,
      antiAffinityGroups: request.antiAffinityGroups ?? [],
      labels: request.labels ?? {},
    };
    this.#hosts[i] = {
      ...host,
      reserved: { cpus: host.reserved.cpus + request.cpus, memoryMiB: host.reserved.memoryMiB + request.memoryMiB },
      vms: [...host.vms, vm],
    };
    this.#reservations.set(request.vmId, {
      vmId: request.vmId,
      vmName: request.name,
      hostId: host.id,
      hostName: host.name,
      cpus: request.cpus,
      memoryMiB: request.memoryMiB,
    });
    return result;
  }

  /** Gives back what `place` reserved for the VM. Returns false if it held nothing (idempotent). */
  release(vmId: string): boolean {
    const held = this.#reservations.get(vmId);
    if (!held) return false;
    this.#reservations.delete(vmId);
    const i = this.#indexById.get(held.hostId)!;
    const host = this.#hosts[i]!;
    // The ledger appended its own entry last-in; drop that one, not an original VM sharing the id.
    const at = host.vms.findLastIndex((vm) => vm.id === vmId);
    this.#hosts[i] = {
      ...host,
      reserved: { cpus: host.reserved.cpus - held.cpus, memoryMiB: host.reserved.memoryMiB - held.memoryMiB },
      vms: at < 0 ? host.vms : [...host.vms.slice(0, at), ...host.vms.slice(at + 1)],
    };
    return true;
  }
}

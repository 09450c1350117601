import { errors } from '../errors.js';
import { Cluster, RESTRICTED, sequenceMoves, type Sim } from './cluster.js';
import type { ConsolidationInput, ConsolidationPlan, FirstFitPlan, PlanMove, Unplaceable } from './types.js';

/**
 * The fewest online hosts whose capacity (with headroom) covers the total demand,
 * memory and vCPUs each on its own: the largest hosts first, so for equal hosts it
 * is ceil(total demand / host size). No plan can use fewer hosts.
 */
export function lowerBoundOf(c: Cluster): number {
  const online = c.hosts.filter((h) => h.online);
  let mem = 0;
  let cpu = 0;
  for (const h of online) {
    mem += h.baseMem;
    cpu += h.baseCpu;
  }
  for (const v of c.vms) {
    if (!c.hosts[v.home]!.online) continue;
    mem += v.mem;
    cpu += v.cpu;
  }
  const needed = (demand: number, caps: number[]): number => {
    if (demand <= 0) return 0;
    caps.sort((a, b) => b - a);
    let sum = 0;
    for (let i = 0; i < caps.length; i++) {
      sum += caps[i]!;
      if (sum >= demand) return i + 1;
    }
    return caps.length;
  };
  return Math.max(
    needed(
      mem,
      online.map((h) => h.memCap),
    ),
    needed(
      cpu,
      online.map((h) => h.cpuCap),
    ),
  );
}

/** How much a host's room left that differs in shape from what is still to place counts against it (tuned on the benchmark). */
const SHAPE_WEIGHT = 16;

/** VMs the planner may move: on an online host and not pinned. */
function movable(c: Cluster): boolean[] {
  return c.vms.map((v) => !v.pinned && c.hosts[v.home]!.online);
}

/**
 * First-fit decreasing from scratch, the baseline: every movable VM is taken off,
 * then placed largest first on the first host (in the order given) that passes
 * every filter. When some VMs fit nowhere, they are left where they are and the
 * packing starts over around them, so the result is always a valid placement.
 */
export function firstFitDecreasing(c: Cluster): Sim {
  const canMove = movable(c);
  for (;;) {
    const stuck: number[] = [];
    const sim = packFirstFit(c, canMove, stuck);
    if (stuck.length === 0) return sim;
    for (const v of stuck) canMove[v] = false;
  }
}

function packFirstFit(c: Cluster, canMove: readonly boolean[], stuck: number[]): Sim {
  const sim = c.cleared((v) => !canMove[v.index]);
  const order = c.bySizeDesc((v) => canMove[v]!);
  const online = c.hosts.filter((h) => h.online).map((h) => h.index);
  const { memCaps, cpuCaps, vmMem, vmCpu } = c;
  const minMem = new Float64Array(order.length + 1).fill(Infinity);
  const minCpu = new Float64Array(order.length + 1).fill(Infinity);
  for (let i = order.length - 1; i >= 0; i--) {
    minMem[i] = Math.min(minMem[i + 1]!, vmMem[order[i]!]!);
    minCpu[i] = Math.min(minCpu[i + 1]!, vmCpu[order[i]!]!);
  }
  // Hosts before `first` cannot take even the smallest VM left: the scan starts after them.
  let first = 0;
  for (let n = 0; n < order.length; n++) {
    const v = order[n]!;
    while (first < online.length) {
      const h = online[first]!;
      if (memCaps[h]! - sim.mem[h]! >= minMem[n]! && cpuCaps[h]! - sim.cpu[h]! >= minCpu[n]!) break;
      first += 1;
    }
    let placed = false;
    for (let i = first; i < online.length; i++) {
      const h = online[i]!;
      if (sim.mem[h]! + vmMem[v]! > memCaps[h]! || sim.cpu[h]! + vmCpu[v]! > cpuCaps[h]!) continue;
      if (sim.passesFilters(v, h)) {
        sim.put(v, h);
        placed = true;
        break;
      }
    }
    if (!placed) stuck.push(v);
  }
  return sim;
}

/**
 * Keep the first `k` hosts of `order` with their VMs where they are, and place the
 * VMs of every other host on them, largest first, each on the kept host it fills
 * best. Kept hosts only receive and emptied hosts only send, so any order of the
 * moves is executable.
 *
 * Without `grow`, returns null when some VM fits on no kept host. With `grow`, it
 * keeps the next host of `order` instead and goes on: that host's VMs stay (those
 * already placed elsewhere go back), so one pass finds about the smallest k that
 * works instead of one pass per k tried.
 */
function keepAndFill(c: Cluster, start: Sim, order: readonly number[], k: number, canMove: readonly boolean[], grow = false): Sim | null {
  const sim = start.clone();
  const keptSet = new Set(order.slice(0, k));
  const isMoving = new Uint8Array(c.vms.length);
  for (const v of c.vms) {
    if (keptSet.has(v.home) || !c.hosts[v.home]!.online) continue;
    if (!canMove[v.index]) return null;
    isMoving[v.index] = 1;
  }
  const { vmMem, vmCpu } = c;
  const memScale = 1 / c.memScale;
  const cpuScale = 1 / c.cpuScale;
  const ordered = c.bySizeDesc((v) => isMoving[v] === 1);
  // The smallest VM still to come, memory and vCPUs each: a host with less room than that is done.
  const minMem = new Float64Array(ordered.length + 1).fill(Infinity);
  const minCpu = new Float64Array(ordered.length + 1).fill(Infinity);
  for (let i = ordered.length - 1; i >= 0; i--) {
    minMem[i] = Math.min(minMem[i + 1]!, vmMem[ordered[i]!]!);
    minCpu[i] = Math.min(minCpu[i + 1]!, vmCpu[ordered[i]!]!);
  }
  // Open hosts in a dense list with their free room, so the scan below is flat arithmetic.
  let open = 0;
  const hostOf = new Int32Array(order.length);
  const freeMem = new Float64Array(order.length);
  const freeCpu = new Float64Array(order.length);
  const posOf = new Int32Array(c.hosts.length).fill(-1);
  const openHost = (h: number) => {
    if (posOf[h]! < 0) {
      posOf[h] = open;
      hostOf[open] = h;
      open += 1;
    }
    freeMem[posOf[h]!] = c.memCaps[h]! - sim.mem[h]!;
    freeCpu[posOf[h]!] = c.cpuCaps[h]! - sim.cpu[h]!;
  };
  for (const h of order.slice(0, k)) openHost(h);
  let next = k;
  // What is still to place, normalized: the direction every host's room left should keep.
  let leftMem = 0;
  let leftCpu = 0;
  for (const v of ordered) {
    leftMem += vmMem[v]! * memScale;
    leftCpu += vmCpu[v]! * cpuScale;
  }
  const refused: number[] = [];
  for (let n = 0; n < ordered.length; n++) {
    const v = ordered[n]!;
    if (isMoving[v] === 0) continue; // its host became a kept one: it stays
    const needMem = vmMem[v]!;
    const needCpu = vmCpu[v]!;
    leftMem -= needMem * memScale;
    leftCpu -= needCpu * cpuScale;
    const norm = Math.hypot(leftMem, leftCpu) || 1;
    const dm = leftMem / norm;
    const dc = leftCpu / norm;
    // Drop hosts that cannot take even the smallest VM left (when that changes, or now and then).
    // `open` is read into a local: it is shared with openHost, and a shared variable is slow in a hot loop.
    let count = open;
    if (n % 32 === 0 || minMem[n] !== minMem[n - 1] || minCpu[n] !== minCpu[n - 1]) {
      const floorMem = minMem[n]!;
      const floorCpu = minCpu[n]!;
      for (let i = 0; i < count; ) {
        if (freeMem[i]! < floorMem || freeCpu[i]! < floorCpu) {
          count -= 1;
          posOf[hostOf[i]!] = -1;
          if (i < count) {
            hostOf[i] = hostOf[count]!;
            freeMem[i] = freeMem[count]!;
            freeCpu[i] = freeCpu[count]!;
            posOf[hostOf[i]!] = i;
          }
        } else {
          i += 1;
        }
      }
      open = count;
    }
    let chosen = -1;
    // Best fit by the room a host has left (memory and vCPUs, normalized, L2), penalizing room whose
    // shape differs from what is still to place: a host left with memory but no vCPUs strands it.
    // Further candidates only when a filter refuses the best one (rare).
    for (;;) {
      let best = -1;
      let bestScore = Infinity;
      const noneRefused = refused.length === 0;
      for (let i = 0; i < count; i++) {
        const m = freeMem[i]! - needMem;
        const p = freeCpu[i]! - needCpu;
        if (m < 0 || p < 0) continue;
        const rm = m * memScale;
        const rc = p * cpuScale;
        const along = rm * dm + rc * dc;
        const perpM = rm - along * dm;
        const perpC = rc - along * dc;
        const score = rm * rm + rc * rc + SHAPE_WEIGHT * (perpM * perpM + perpC * perpC);
        if (score < bestScore && (noneRefused || !refused.includes(i))) {
          bestScore = score;
          best = i;
        }
      }
      if (best < 0) break;
      if (sim.passesFilters(v, hostOf[best]!)) {
        chosen = best;
        break;
      }
      refused.push(best);
    }
    refused.length = 0;
    if (chosen >= 0) {
      sim.put(v, hostOf[chosen]!);
      freeMem[chosen] = freeMem[chosen]! - needMem;
      freeCpu[chosen] = freeCpu[chosen]! - needCpu;
      continue;
    }
    if (!grow || next >= order.length) return null;
    // Keep one more host: its VMs stay home, those already placed come back, and v tries again.
    const added = order[next++]!;
    for (const u of start.members[added]!) {
      if (isMoving[u] === 0) continue;
      isMoving[u] = 0;
      const at = sim.at[u]!;
      if (at !== added) {
        sim.put(u, added);
        if (posOf[at]! >= 0 || keptSet.has(at)) openHost(at);
      } else if (ordered.indexOf(u) > n) {
        leftMem -= vmMem[u]! * memScale;
        leftCpu -= vmCpu[u]! * cpuScale;
      }
    }
    keptSet.add(added);
    openHost(added);
    if (isMoving[v] === 1) {
      leftMem += needMem * memScale;
      leftCpu += needCpu * cpuScale;
      n -= 1;
    }
  }
  return sim;
}

function movesOf(start: Sim, end: Sim): number {
  let n = 0;
  for (let v = 0; v < start.at.length; v++) if (start.at[v] !== end.at[v]) n += 1;
  return n;
}

function nonNegativeInteger(value: unknown, field: string): number {
  if (value === undefined) return 0;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw errors.invalid(`${field} is ${JSON.stringify(value)}, expected a non-negative integer`, { field });
  }
  return value;
}

/**
 * Plans migrations that (1) empty as many online hosts as possible, then (2) move as
 * few VMs as possible, under every rule the filters enforce (capacity with headroom
 * on destinations, anti-affinity, CPU models, labels, policy filters) and never
 * moving pinned VMs. The first-fit-decreasing baseline and the lower bound are
 * computed beside it; the plan never uses more hosts than the baseline when the
 * baseline's placement can be reached by valid moves.
 *
 * @example planConsolidation({ hosts, vms, headroom: 0.1, keepSpareHosts: 1 })
 * @throws DroverError `invalid` for malformed hosts, VMs or options.
 */
export function planConsolidation(input: ConsolidationInput): ConsolidationPlan {
  const c = new Cluster(input, { headroom: input.headroom, pinned: input.pinned });
  const keepSpare = nonNegativeInteger(input.keepSpareHosts, 'keepSpareHosts');
  const start = c.initial();
  const canMove = movable(c);
  const lowerBound = lowerBoundOf(c);
  const unplaceable: Unplaceable[] = c.vms
    .filter((v) => !c.hosts[v.home]!.online)
    .map((v) => ({ vmId: v.vm.vmId, reason: `its host "${c.hosts[v.home]!.host.name}" is ${c.hosts[v.home]!.host.state}, not online: left where it is` }));

  const ffd = firstFitDecreasing(c);
  const ffdFigures = { hostsUsed: ffd.hostsUsed(), moves: movesOf(start, ffd) };

  // Hosts that must stay (pinned VMs, VMs that cannot move, usage outside the plan) come first, then the
  // hosts with the most VMs (the fewest moves to keep them), then the fuller ones.
  const online = c.hosts.filter((h) => h.online && start.occupied(h.index)).map((h) => h.index);
  const forced = new Set<number>();
  for (const h of online) {
    const slot = c.hosts[h]!;
    if (slot.fixedVms.length > 0 || slot.baseMem > 0 || slot.baseCpu > 0) forced.add(h);
  }
  for (const v of c.vms) if (!canMove[v.index] && c.hosts[v.home]!.online) forced.add(v.home);
  const fill = (h: number) => start.mem[h]! / c.memScale + start.cpu[h]! / c.cpuScale;
  const order = [...online].sort(
    (a, b) =>
      Number(forced.has(b)) - Number(forced.has(a)) ||
      start.members[b]!.length - start.members[a]!.length ||
      fill(b) - fill(a) ||
      (c.hostId(a) < c.hostId(b) ? -1 : 1),
  );

  // About the smallest k that works, in one growing pass from the lower bound.
  const first = Math.max(lowerBound, forced.size);
  let best: Sim = first < order.length ? (keepAndFill(c, start, order, first, canMove, true) ?? start) : start;
  // The growing pass placed the first VMs with fewer hosts than it ends with: a fresh pass with one
  // host fewer often fits.
  for (let k = best.hostsUsed() - 1; k >= first && best !== start; k--) {
    const attempt = keepAndFill(c, start, order, k, canMove);
    if (!attempt) break;
    best = attempt;
  }

  // A second opinion one host lower: hosts whose VMs only some hosts take (CPU model, labels) kept
  // first, as they are the hardest to empty.
  {
    const restrictedOn = new Float64Array(c.hosts.length);
    for (const v of c.vms) if (v.size >= RESTRICTED) restrictedOn[v.home] = restrictedOn[v.home]! + 1;
    const restrictedOrder = [...order].sort((a, b) => Number(forced.has(b)) - Number(forced.has(a)) || restrictedOn[b]! - restrictedOn[a]!);
    for (let k = best.hostsUsed() - 1; k >= Math.max(lowerBound, forced.size, 1); k--) {
      const attempt = keepAndFill(c, start, restrictedOrder, k, canMove);
      if (!attempt) break;
      best = attempt;
    }
  }

  // Kept hosts only receive, so this order always exists unless a filter depends on VMs leaving.
  let moves: PlanMove[] = [];
  let end = start;
  const consider = (candidate: Sim | null) => {
    if (candidate === null || candidate === start) return;
    const hosts = candidate.hostsUsed();
    const endHosts = end.hostsUsed();
    if (hosts > endHosts || (hosts === endHosts && movesOf(start, candidate) >= moves.length)) return;
    const sequenced = sequenceMoves(start, candidate.at);
    if (sequenced === null) return;
    const reached = sequenced.end.hostsUsed();
    if (reached > endHosts || (reached === endHosts && sequenced.moves.length >= moves.length)) return;
    moves = sequenced.moves;
    end = sequenced.end;
  };
  consider(best);

  // When the baseline packs tighter, keep the hosts it uses and fill them; failing that, take its
  // placement itself if valid moves reach it.
  if (ffdFigures.hostsUsed < end.hostsUsed()) {
    const ffdSet = new Set(online.filter((h) => ffd.occupied(h)));
    const ffdOrder = [...order].sort((a, b) => Number(ffdSet.has(b)) - Number(ffdSet.has(a)));
    consider(keepAndFill(c, start, ffdOrder, ffdSet.size, canMove));
  }
  if (ffdFigures.hostsUsed < end.hostsUsed() || (ffdFigures.hostsUsed === end.hostsUsed() && ffdFigures.moves < moves.length)) consider(ffd);

  const empty = c.hosts.filter((h) => h.online && !end.occupied(h.index));
  const spares = [...empty]
    .sort((a, b) => Number(start.occupied(a.index)) - Number(start.occupied(b.index)) || b.memCap - a.memCap || (a.host.id < b.host.id ? -1 : 1))
    .slice(0, keepSpare)
    .map((h) => h.host.id);
  const spareSet = new Set(spares);
  return {
    moves,
    emptiedHosts: empty.map((h) => h.host.id).filter((id) => !spareSet.has(id)),
    spareHosts: spares,
    hostsUsed: end.hostsUsed(),
    hostsUsedBefore: start.hostsUsed(),
    lowerBound,
    ffd: ffdFigures,
    unplaceable,
  };
}

/**
 * The baseline alone: first-fit decreasing from scratch under the same rules as
 * `planConsolidation` (pinned VMs and usage outside the plan stay; hosts tried in
 * the order given). `placement` maps each VM id to its host id afterwards; `moves`
 * counts the VMs whose host changed.
 */
export function planFirstFitDecreasing(input: ConsolidationInput): FirstFitPlan {
  const c = new Cluster(input, { headroom: input.headroom, pinned: input.pinned });
  const start = c.initial();
  const ffd = firstFitDecreasing(c);
  const placement: Record<string, string> = {};
  for (const v of c.vms) placement[v.vm.vmId] = c.hostId(ffd.at[v.index]!);
  return { hostsUsed: ffd.hostsUsed(), moves: movesOf(start, ffd), placement };
}

import { errors } from '../errors.js';
import { defaultFilters, plural } from './filters.js';
import { validateHostCandidates, validatePlacementOptions, validatePlacementRequest } from './validate.js';
import { defaultWeighers } from './weighers.js';
import type {
  FilterOutcome,
  HostCandidate,
  HostExplanation,
  PlacementContext,
  PlacementExplanation,
  PlacementFilter,
  PlacementOptions,
  PlacementRequest,
  PlacementResult,
  PlacementWeigher,
} from './types.js';

interface Chain {
  readonly context: PlacementContext;
  readonly filters: readonly PlacementFilter[];
  readonly weighers: readonly PlacementWeigher[];
}

export function resolveChain(options: PlacementOptions): Chain {
  validatePlacementOptions(options);
  return {
    context: { mode: options.mode ?? 'spread' },
    filters: options.filters ?? defaultFilters,
    weighers: options.weighers ?? defaultWeighers,
  };
}

/** Host ordering once scored: higher total first, then name, then id, so equal hosts are chosen the same way every time. */
function better(aScore: number, a: HostCandidate, bScore: number, b: HostCandidate): boolean {
  if (aScore !== bScore) return aScore > bScore;
  if (a.name !== b.name) return a.name < b.name;
  return a.id < b.id;
}

function weigherScore(weigher: PlacementWeigher, request: PlacementRequest, host: HostCandidate, context: PlacementContext): number {
  const score = weigher(request, host, context);
  if (!(score >= 0 && score <= 1)) {
    throw errors.internal(`Weigher "${weigher.name}" scored host "${host.name}" ${String(score)}, outside [0, 1]`);
  }
  return score;
}

function total(chain: Chain, request: PlacementRequest, host: HostCandidate): number {
  let sum = 0;
  for (const weigher of chain.weighers) {
    if (weigher.weight !== 0) sum += weigher.weight * weigherScore(weigher, request, host, chain.context);
  }
  return sum;
}

function scoresOf(chain: Chain, request: PlacementRequest, host: HostCandidate): Record<string, number> {
  const scores: Record<string, number> = {};
  for (const weigher of chain.weighers) scores[weigher.name] = weigherScore(weigher, request, host, chain.context);
  return scores;
}

export interface Rejection {
  readonly host: string;
  readonly hostId: string;
  readonly filter: string;
  readonly reason: string;
  readonly short: string;
}

const MESSAGE_GROUPS = 6;
const MESSAGE_NAMES_PER_GROUP = 3;

/** `h1: 96 MiB free; h2, h3: in maintenance`, bounded so a 1,000-host refusal stays one readable line. */
function summarize(rejections: readonly Rejection[]): string {
  if (rejections.length === 0) return 'there are no hosts';
  const groups = new Map<string, string[]>();
  for (const r of rejections) {
    const names = groups.get(r.short);
    if (names) names.push(r.host);
    else groups.set(r.short, [r.host]);
  }
  const parts: string[] = [];
  let shown = 0;
  for (const [short, names] of [...groups].slice(0, MESSAGE_GROUPS)) {
    const listed = names.slice(0, MESSAGE_NAMES_PER_GROUP).join(', ');
    const more = names.length > MESSAGE_NAMES_PER_GROUP ? ` and ${names.length - MESSAGE_NAMES_PER_GROUP} more` : '';
    parts.push(`${listed}${more}: ${short}`);
    shown += names.length;
  }
  if (shown < rejections.length) parts.push(`${plural(rejections.length - shown, 'more host')} for other reasons (see details)`);
  return parts.join('; ');
}

function noHostFits(request: PlacementRequest, rejections: readonly Rejection[]) {
  const vm = request.name === '' ? request.vmId : request.name;
  return errors.conflict(
    `No host can run VM "${vm}" (${request.memoryMiB} MiB, ${plural(request.cpus, 'vCPU')}): ${summarize(rejections)}`,
    {
      vmId: request.vmId,
      vmName: request.name,
      cpus: request.cpus,
      memoryMiB: request.memoryMiB,
      hosts: rejections.map(({ host, hostId, filter, reason }) => ({ host, hostId, filter, reason })),
    },
  );
}

/**
 * The scheduler's core, for callers that validated their inputs (the ledger): one
 * pass, filters short-circuit per host, only passing hosts are weighed, and the
 * reasons are kept only while no host has passed.
 */
export function chooseHost(request: PlacementRequest, hosts: readonly HostCandidate[], chain: Chain): PlacementResult {
  let best: HostCandidate | undefined;
  let bestScore = 0;
  let candidates = 0;
  const rejections: Rejection[] = [];
  for (const host of hosts) {
    let rejected = false;
    for (const filter of chain.filters) {
      const verdict = filter(request, host, chain.context);
      if (verdict.pass) continue;
      rejected = true;
      if (candidates === 0) {
        rejections.push({
          host: host.name,
          hostId: host.id,
          filter: filter.name,
          reason: verdict.reason,
          short: verdict.short ?? verdict.reason,
        });
      }
      break;
    }
    if (rejected) continue;
    candidates += 1;
    const score = total(chain, request, host);
    if (best === undefined || better(score, host, bestScore, best)) {
      best = host;
      bestScore = score;
    }
  }
  if (best === undefined) throw noHostFits(request, rejections);
  return { hostId: best.id, hostName: best.name, score: bestScore, scores: scoresOf(chain, request, best), candidates };
}

/**
 * Chooses the host for a VM: every filter must pass, then the highest weighted
 * score wins (ties: host name, then id).
 * @throws DroverError `invalid` for a malformed request, host or option;
 *   `conflict` when no host passes, with `details.hosts` giving every host's reason.
 */
export function placeVm(request: PlacementRequest, hosts: readonly HostCandidate[], options: PlacementOptions = {}): PlacementResult {
  validatePlacementRequest(request);
  validateHostCandidates(hosts);
  return chooseHost(request, hosts, resolveChain(options));
}

/**
 * What `placeVm` would do and why, host by host: every filter's verdict (none is
 * skipped), and for hosts that pass, each weigher's score, the total and the rank.
 * Never throws `conflict`: `chosen` is null when no host fits.
 */
export function explainPlacement(
  request: PlacementRequest,
  hosts: readonly HostCandidate[],
  options: PlacementOptions = {},
): PlacementExplanation {
  validatePlacementRequest(request);
  validateHostCandidates(hosts);
  const chain = resolveChain(options);
  const explained = hosts.map((host) => {
    const filters: FilterOutcome[] = chain.filters.map((filter) => {
      const verdict = filter(request, host, chain.context);
      return verdict.pass ? { filter: filter.name, pass: true } : { filter: filter.name, pass: false, reason: verdict.reason };
    });
    const passed = filters.every((outcome) => outcome.pass);
    const scores = passed ? scoresOf(chain, request, host) : undefined;
    const score = passed ? chain.weighers.reduce((sum, w) => sum + w.weight * scores![w.name]!, 0) : undefined;
    return { host, filters, passed, scores, score };
  });
  const ranked = explained.filter((e) => e.passed).sort((a, b) => (better(a.score!, a.host, b.score!, b.host) ? -1 : 1));
  const rankOf = new Map(ranked.map((e, i) => [e.host, i + 1]));
  const weights: Record<string, number> = {};
  for (const weigher of chain.weighers) weights[weigher.name] = weigher.weight;
  const first = ranked[0];
  return {
    vmId: request.vmId,
    vmName: request.name,
    mode: chain.context.mode,
    weights,
    chosen: first ? { hostId: first.host.id, hostName: first.host.name } : null,
    hosts: explained.map(({ host, filters, passed, scores, score }): HostExplanation => {
      const base = { hostId: host.id, hostName: host.name, state: host.state, passed, filters };
      return passed ? { ...base, scores: scores!, score: score!, rank: rankOf.get(host)! } : base;
    }),
  };
}

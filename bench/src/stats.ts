/** Small helpers shared by the benchmarks: timing, medians and the report lines. */

export function now(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const start = now();
  const value = await fn();
  return { ms: now() - start, value };
}

export function median(values: number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/**
 * How far a median (`medianInterval`) or the ratio of two (`ratioInterval`: `figure` / `baseline`)
 * moves with the rounds drawn: its `confidence` interval over `resamples` bootstrap resamples (the
 * rounds drawn again with replacement). Seeded, so the same rounds give the same interval.
 */
export function ratioInterval(figure: number[], baseline: number[], options: BootstrapOptions = {}): [number, number] {
  return bootstrap([figure, baseline], ([f, b]) => median(f!) / median(b!), options);
}

export function medianInterval(values: number[], options: BootstrapOptions = {}): [number, number] {
  return bootstrap([values], ([v]) => median(v!), options);
}

export interface BootstrapOptions {
  confidence?: number;
  resamples?: number;
  seed?: number;
}

/** The `confidence` interval of any `statistic` of several samples, each drawn again with replacement (`ratioInterval`, `medianInterval`). */
export function bootstrapInterval(samples: number[][], statistic: (drawn: number[][]) => number, options: BootstrapOptions = {}): [number, number] {
  return bootstrap(samples, statistic, options);
}

function bootstrap(samples: number[][], statistic: (drawn: number[][]) => number, options: BootstrapOptions): [number, number] {
  const { confidence = 0.9, resamples = 2000 } = options;
  if (samples.some((values) => values.length === 0)) return [Number.NaN, Number.NaN];
  // mulberry32: a small seeded generator, enough to draw rounds.
  let state = (options.seed ?? 0x5eed) >>> 0;
  const random = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const values: number[] = [];
  for (let i = 0; i < resamples; i++) values.push(statistic(samples.map((sample) => sample.map(() => sample[Math.floor(random() * sample.length)]!))));
  values.sort((a, b) => a - b);
  const tail = (1 - confidence) / 2;
  const at = (q: number) => values[Math.min(values.length - 1, Math.max(0, Math.round(q * (values.length - 1))))]!;
  return [at(tail), at(1 - tail)];
}

export interface Comparison {
  name: string;
  figure: number;
  baseline: number;
  baselineName: string;
  unit: string;
  /** The target for figure/baseline; undefined when the figure is only reported. */
  maxRatio?: number;
  /** An absolute target on the figure itself (e.g. at least 2,000 req/s, at most 20 ms). */
  atLeast?: number;
  atMost?: number;
  /** The figure's 90% interval (`medianInterval`) and the ratio's (`ratioInterval`), printed after each (rounds spread widely on a small machine). */
  figureInterval?: [number, number];
  ratioInterval?: [number, number];
}

/** Prints one comparison line and returns whether its target is met. */
export function report(c: Comparison): boolean {
  const ratio = c.figure / c.baseline;
  const targets: Array<[string, boolean]> = [];
  if (c.maxRatio !== undefined) targets.push([`≤ ${c.maxRatio}×`, ratio <= c.maxRatio]);
  if (c.atLeast !== undefined) targets.push([`≥ ${c.atLeast} ${c.unit}`, c.figure >= c.atLeast]);
  if (c.atMost !== undefined) targets.push([`≤ ${c.atMost} ${c.unit}`, c.figure <= c.atMost]);
  const met = targets.every(([, ok]) => ok);
  const target = targets.length === 0 ? 'no target' : `target ${targets.map(([t]) => t).join(', ')} → ${met ? 'MET' : 'NOT MET'}`;
  const figureInterval = c.figureInterval ? ` (90%: ${c.figureInterval[0].toFixed(1)}–${c.figureInterval[1].toFixed(1)})` : '';
  const ratioInterval = c.ratioInterval ? ` (90%: ${c.ratioInterval[0].toFixed(2)}–${c.ratioInterval[1].toFixed(2)}×)` : '';
  process.stdout.write(
    `${c.name.padEnd(34)} ${c.figure.toFixed(1).padStart(9)} ${c.unit}${figureInterval}  vs ${c.baselineName} ${c.baseline.toFixed(1)} ${c.unit}  ratio ${ratio.toFixed(2)}×${ratioInterval}  ${target}\n`,
  );
  return met;
}

/** An operation as the API answers it, with the fields `journalPhases` reads. */
export interface JournaledOperation {
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  journal: Array<{ phase: string; at: string }>;
}

/**
 * Milliseconds of each part of an operation, from its journal: the request until the
 * operation exists, its queueing, each journaled phase until the next, the last one
 * until the operation ended, and the answer until the client had it (`sent` and
 * `answered` are the client's wall clock, Date.now()).
 */
export function journalPhases(op: JournaledOperation, sent: number, answered: number): Record<string, number> {
  const at = (iso: string | null): number => (iso ? Date.parse(iso) : Number.NaN);
  const phases: Record<string, number> = { request: at(op.createdAt) - sent, queued: at(op.startedAt) - at(op.createdAt) };
  op.journal.forEach((entry, index) => {
    const end = index + 1 < op.journal.length ? at(op.journal[index + 1]!.at) : at(op.finishedAt);
    phases[entry.phase] = (phases[entry.phase] ?? 0) + end - at(entry.at);
  });
  phases.answer = answered - at(op.finishedAt);
  return phases;
}

/** The median of each named part over several rounds, as `name ms, name ms…`. */
export function medianPhases(rounds: Array<Record<string, number>>): string {
  const names = [...new Set(rounds.flatMap((r) => Object.keys(r)))];
  return names.map((name) => `${name} ${median(rounds.map((r) => r[name] ?? 0)).toFixed(0)}`).join(', ');
}

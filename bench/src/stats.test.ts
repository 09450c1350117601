import { describe, expect, it } from 'vitest';
import { bootstrapInterval, median, medianInterval, ratioInterval } from './stats.js';

describe('bootstrap intervals of medians', () => {
  const base = [900, 950, 1000, 1050, 1100, 1200, 800, 1000, 980, 1020];

  it('holds the ratio of the medians, and is a point when neither side spreads', () => {
    const [low, high] = ratioInterval(base.map((v) => v * 1.1), base);
    expect(low).toBeLessThan(1.1);
    expect(high).toBeGreaterThan(1.1);
    const point = ratioInterval([1100, 1100, 1100], [1000, 1000]);
    expect(point[0]).toBeCloseTo(1.1, 10);
    expect(point[1]).toBeCloseTo(1.1, 10);
  });

  it('widens with the spread of the rounds and narrows with more of them', () => {
    const spread = [700, 1300, 850, 1150, 1000, 760, 1240, 990, 1010, 1000];
    const few = ratioInterval(spread, base);
    const many = ratioInterval([...spread, ...spread, ...spread, ...spread], [...base, ...base, ...base, ...base]);
    const ratio = median(spread) / median(base);
    expect(few[0]).toBeLessThan(ratio);
    expect(few[1]).toBeGreaterThan(ratio);
    expect(many[1] - many[0]).toBeLessThan(few[1] - few[0]);
  });

  it('is the same for the same rounds (seeded), and empty input gives no interval', () => {
    expect(ratioInterval(base, [...base].reverse())).toEqual(ratioInterval(base, [...base].reverse()));
    expect(ratioInterval([], base).every(Number.isNaN)).toBe(true);
  });

  it('a median alone: its interval holds it, within the rounds', () => {
    const [low, high] = medianInterval(base);
    expect(low).toBeLessThanOrEqual(median(base));
    expect(high).toBeGreaterThanOrEqual(median(base));
    expect(low).toBeGreaterThanOrEqual(Math.min(...base));
    expect(high).toBeLessThanOrEqual(Math.max(...base));
  });

  it('any statistic: rounds drawn as indices stay whole (paired figures move together)', () => {
    const totals = [1000, 1200, 900, 1100, 1300];
    const parts = totals.map((t) => t - 800);
    const indices = totals.map((_, i) => i);
    // total − part is 800 in every round: drawn whole, the difference never moves.
    const [low, high] = bootstrapInterval([indices], ([drawn]) => median(drawn!.map((i) => totals[i]!)) - median(drawn!.map((i) => parts[i]!)));
    expect(low).toBe(800);
    expect(high).toBe(800);
    // Drawn apart, it does.
    const apart = bootstrapInterval([totals, parts], ([t, p]) => median(t!) - median(p!));
    expect(apart[1] - apart[0]).toBeGreaterThan(0);
  });
});

import { describe, expect, it } from 'vitest';
import { downtimeLimitForPass, downtimeStartMs } from './migration.js';

describe('downtimeLimitForPass (the downtime steps of a live migration)', () => {
  it('starts short, keeps the start for the first copy and the first pass over what it dirtied, then doubles per pass up to the allowed pause', () => {
    expect(downtimeStartMs).toBe(30);
    const steps = [0, 1, 2, 3, 4, 5, 6, 7, 8].map((pass) => downtimeLimitForPass(300, pass));
    expect(steps).toEqual([30, 30, 30, 60, 120, 240, 300, 300, 300]);
  });

  it('never allows more than asked: an allowed pause below the start is the limit throughout', () => {
    expect([0, 2, 3, 10].map((pass) => downtimeLimitForPass(20, pass))).toEqual([20, 20, 20, 20]);
    expect(downtimeLimitForPass(1, 50)).toBe(1);
    expect(downtimeLimitForPass(5000, 1000)).toBe(5000);
    for (let pass = 0; pass < 64; pass++) expect(downtimeLimitForPass(45, pass)).toBeLessThanOrEqual(45);
  });
});

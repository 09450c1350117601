import { describe, expect, it } from 'vitest';
import { counterTicks, guestGapAroundSwitchover } from './migration.service.js';

const tick = (gen: number, t: number) => `DROVER-COUNTER gen=${gen} t=${t.toFixed(3)}\r\n`;

describe('guest-measured downtime from the counter ticks around the switchover', () => {
  it('is the largest gap between consecutive ticks from the source\'s last ones to the destination\'s first ones', () => {
    const source = tick(10, 1000.0) + tick(11, 1000.1) + tick(12, 1000.2);
    // Paused ~0.45 s: the missed ticks are caught up at once on the destination.
    const dest = tick(13, 1000.65) + tick(14, 1000.651) + tick(15, 1000.8);
    expect(guestGapAroundSwitchover(source, dest)).toBe(450);
  });

  it('ignores destination lines at or before the source\'s last tick, and pairs that are not one generation apart', () => {
    const source = tick(20, 5.0) + tick(21, 5.1);
    const dest = tick(21, 5.1) + tick(23, 9.9) + tick(24, 10.0) + tick(25, 10.1);
    expect(guestGapAroundSwitchover(source, dest)).toBe(100);
  });

  it('gives no gap for a timestamp garbled by a doubled byte, and nothing without ticks on both sides', () => {
    const source = tick(30, 1764191234.5);
    const dest = 'DROVER-COUNTER gen=31 t=17641912234.600\r\n' + tick(32, 1764191234.7) + tick(33, 1764191234.8);
    expect(guestGapAroundSwitchover(source, dest)).toBe(100);
    expect(guestGapAroundSwitchover('', dest)).toBeUndefined();
    expect(guestGapAroundSwitchover(source, 'DROVER-READY\n')).toBeUndefined();
    expect(counterTicks('DROVERR-COUNTER gen=1 t=1.000\nDROVER-COUNTER gen=2 t=1.1000\n')).toEqual([]);
  });
});

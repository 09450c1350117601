import { describe, expect, it } from 'vitest';
import { checkTimeZone, inWindow, localMinutes, parseWindow } from './power-schedule.js';

describe('power schedule', () => {
  it('parses windows, also across midnight and with an en dash', () => {
    expect(parseWindow('22:00-06:00')).toEqual({ start: 22 * 60, end: 6 * 60 });
    expect(parseWindow('22:00–06:00')).toEqual({ start: 22 * 60, end: 6 * 60 });
    expect(parseWindow(' 1:30 to 4:45 ')).toEqual({ start: 90, end: 285 });
  });

  it('refuses what does not parse, quoting it', () => {
    for (const bad of ['22-06', '25:00-06:00', '22:00', 'nightly', '22:00-22:00', '22:60-01:00']) {
      expect(() => parseWindow(bad), bad).toThrow(new RegExp(`"${bad}"`));
    }
    expect(() => checkTimeZone('Mars/Olympus')).toThrow('Unknown time zone "Mars/Olympus"');
    expect(() => checkTimeZone('Europe/Berlin')).not.toThrow();
  });

  it('reads the window in the configured time zone', () => {
    const window = parseWindow('22:00-06:00');
    // 21:30 UTC is 22:30 in Berlin in winter (UTC+1) and 16:30 in New York.
    const at = new Date('2026-01-15T21:30:00Z');
    expect(localMinutes(at, 'Europe/Berlin')).toBe(22 * 60 + 30);
    expect(inWindow(window, 'Europe/Berlin', at)).toBe(true);
    expect(inWindow(window, 'UTC', at)).toBe(false);
    expect(inWindow(window, 'America/New_York', at)).toBe(false);
    expect(inWindow(window, 'UTC', new Date('2026-01-15T05:59:00Z'))).toBe(true);
    expect(inWindow(window, 'UTC', new Date('2026-01-15T06:00:00Z'))).toBe(false);
    expect(inWindow(parseWindow('01:00-03:00'), 'UTC', new Date('2026-01-15T02:00:00Z'))).toBe(true);
    expect(inWindow(parseWindow('01:00-03:00'), 'UTC', new Date('2026-01-15T04:00:00Z'))).toBe(false);
  });
});

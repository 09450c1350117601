import { errors } from '@drover/core';

/** A daily window in minutes after local midnight; `end < start` crosses midnight. */
export interface DailyWindow {
  start: number;
  end: number;
}

const timePart = '([01]?\\d|2[0-3]):([0-5]\\d)';
const windowPattern = new RegExp(`^\\s*${timePart}\\s*(?:-|–|—|to)\\s*${timePart}\\s*$`);

/**
 * Parses "22:00-06:00" (also with an en dash or "to"); a window may cross
 * midnight. Anything else is `invalid` quoting the text.
 *
 * @example parseWindow('22:00–06:00') // { start: 1320, end: 360 }
 */
export function parseWindow(text: string): DailyWindow {
  const match = windowPattern.exec(text);
  if (!match) throw errors.invalid(`Power schedule window "${text}" does not parse: expected "HH:MM-HH:MM", e.g. "22:00-06:00"`, { field: 'window' });
  const start = Number(match[1]) * 60 + Number(match[2]);
  const end = Number(match[3]) * 60 + Number(match[4]);
  if (start === end) throw errors.invalid(`Power schedule window "${text}" is empty: it starts when it ends`, { field: 'window' });
  return { start, end };
}

/** Checks an IANA time zone name; `invalid` otherwise. */
export function checkTimeZone(timeZone: string): void {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone }).format(0);
  } catch {
    throw errors.invalid(`Unknown time zone "${timeZone}": use an IANA name such as "Europe/Berlin" or "UTC"`, { field: 'timeZone' });
  }
}

/** Minutes after local midnight in `timeZone` at `at`. */
export function localMinutes(at: Date, timeZone: string): number {
  const parts = new Intl.DateTimeFormat('en-GB', { timeZone, hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).formatToParts(at);
  const hour = Number(parts.find((p) => p.type === 'hour')?.value ?? 0);
  const minute = Number(parts.find((p) => p.type === 'minute')?.value ?? 0);
  return hour * 60 + minute;
}

/** Whether `at` falls inside the window, read in `timeZone`. */
export function inWindow(window: DailyWindow, timeZone: string, at: Date): boolean {
  const now = localMinutes(at, timeZone);
  return window.start < window.end ? now >= window.start && now < window.end : now >= window.start || now < window.end;
}

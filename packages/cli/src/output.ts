import { formatSize } from '@drover/core';

/**
 * Printing for people (aligned tables, "Key: value" blocks) and for scripts
 * (exactly one JSON document). Text that comes from the server is made inert
 * before it reaches a terminal: a label or an error message must not be able
 * to move the cursor or retitle the window.
 */

/** The part of a stream the CLI writes to; process.stdout fits, and so does a test buffer. */
export interface Output {
  write(chunk: string | Uint8Array): unknown;
  isTTY?: boolean | undefined;
  columns?: number | undefined;
}

// eslint-disable-next-line no-control-regex
const controlChars = /[\u0000-\u001f\u007f-\u009f]/g;

/** One line of terminal-safe text: control characters (newlines included) become visible. */
export function clean(text: string): string {
  return text.replace(controlChars, (c) => (c === '\n' || c === '\t' || c === '\r' ? ' ' : '\uFFFD'));
}

export function formatTable(headers: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const cells = [headers.map(clean), ...rows.map((row) => row.map((cell) => clean(cell)))];
  const widths = headers.map((_, column) => Math.max(...cells.map((row) => (row[column] ?? '').length)));
  return cells
    .map((row) =>
      row
        .map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]!)))
        .join('  ')
        .trimEnd(),
    )
    .map((line) => `${line}\n`)
    .join('');
}

/** "Key:   value" lines, keys aligned. */
export function formatFields(fields: ReadonlyArray<readonly [string, string]>): string {
  const width = Math.max(...fields.map(([key]) => key.length)) + 1;
  return fields.map(([key, value]) => `${`${key}:`.padEnd(width)}  ${clean(value)}\n`).join('');
}

export function formatJson(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

export function formatMiB(mib: number): string {
  return formatSize(mib * 1024 * 1024);
}

export function formatLabels(labels: Record<string, string> | undefined): string {
  const entries = Object.entries(labels ?? {});
  return entries.length === 0 ? '-' : entries.map(([key, value]) => `${key}=${value}`).join(',');
}

export function orDash(value: string | null | undefined): string {
  return value === null || value === undefined || value === '' ? '-' : value;
}

/** Coarse age for tables: 42s, 5m, 3h, 2d. */
export function formatAge(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return '-';
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return iso;
  const seconds = Math.max(0, Math.round((now - then) / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 2 * 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 2 * 86400) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

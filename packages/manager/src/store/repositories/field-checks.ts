import { errors } from '@drover/core';

/**
 * Checks shared by the repositories' `validate` hooks. The database keeps no
 * CHECK constraints for these: changing one in SQLite means rebuilding the
 * table, and the store is the only writer anyway.
 */
export function checkOneOf(kind: string, name: string, value: unknown, allowed: readonly string[]): void {
  if (value !== undefined && !allowed.includes(value as string)) {
    throw errors.invalid(`Invalid ${kind} ${name} "${String(value)}": expected one of ${allowed.join(', ')}`, {
      field: name,
      value: String(value),
      allowed: [...allowed],
    });
  }
}

export function checkRange(kind: string, name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (value === undefined || value === null) return;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `at least ${min}` : `between ${min} and ${max}`;
    throw errors.invalid(`Invalid ${kind} ${name} "${String(value)}": expected an integer ${range}`, { field: name, value: String(value) });
  }
}

export function checkNotEmpty(kind: string, name: string, value: unknown): void {
  if (value !== undefined && (typeof value !== 'string' || value.trim() === '')) {
    throw errors.invalid(`Invalid ${kind} ${name}: it must not be empty`, { field: name });
  }
}

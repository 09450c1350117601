/**
 * The one error family of Drover. Codes are stable: clients (CLI, web, scripts)
 * branch on them, so never rename one. They are mapped to HTTP statuses and CLI
 * exit codes only at the edges (see `httpStatusOf`).
 */
export const errorCodes = [
  'invalid',
  'not_found',
  'conflict',
  'forbidden',
  'unauthenticated',
  'unavailable',
  'timeout',
  'policy_denied',
  'precondition_failed',
  'too_large',
  'rate_limited',
  'unprocessable',
  'cancelled',
  'internal',
] as const;

export type ErrorCode = (typeof errorCodes)[number];

export interface DroverErrorOptions {
  details?: Record<string, unknown>;
  cause?: unknown;
}

export class DroverError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: DroverErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DroverError';
    this.code = code;
    this.details = options.details ?? {};
  }

  toJSON(): { code: ErrorCode; message: string; details: Record<string, unknown> } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

/** Factories, so call sites read like the failure they report. */
export const errors = {
  invalid: (message: string, details?: Record<string, unknown>) =>
    new DroverError('invalid', message, { details }),
  notFound: (kind: string, id: string) =>
    new DroverError('not_found', `${kind} "${id}" does not exist`, { details: { kind, id } }),
  conflict: (message: string, details?: Record<string, unknown>) =>
    new DroverError('conflict', message, { details }),
  unavailable: (message: string, details?: Record<string, unknown>, cause?: unknown) =>
    new DroverError('unavailable', message, { details, cause }),
  timeout: (message: string, details?: Record<string, unknown>) =>
    new DroverError('timeout', message, { details }),
  forbidden: (message: string, details?: Record<string, unknown>) =>
    new DroverError('forbidden', message, { details }),
  unauthenticated: (message = 'Authentication required') => new DroverError('unauthenticated', message),
  tooLarge: (message: string, details?: Record<string, unknown>) =>
    new DroverError('too_large', message, { details }),
  cancelled: (message: string, details?: Record<string, unknown>) =>
    new DroverError('cancelled', message, { details }),
  internal: (message: string, cause?: unknown) => new DroverError('internal', message, { cause }),
};

const statusByCode: Record<ErrorCode, number> = {
  invalid: 400,
  unauthenticated: 401,
  forbidden: 403,
  policy_denied: 403,
  not_found: 404,
  conflict: 409,
  precondition_failed: 412,
  too_large: 413,
  unprocessable: 422,
  rate_limited: 429,
  cancelled: 409,
  internal: 500,
  unavailable: 503,
  timeout: 504,
};

export function httpStatusOf(code: ErrorCode): number {
  return statusByCode[code];
}

/** CLI exit codes by error class: 1 is reserved for unexpected failures. */
const exitByCode: Record<ErrorCode, number> = {
  invalid: 2,
  unprocessable: 2,
  too_large: 2,
  not_found: 3,
  conflict: 4,
  precondition_failed: 4,
  unauthenticated: 5,
  forbidden: 5,
  policy_denied: 5,
  unavailable: 6,
  timeout: 7,
  rate_limited: 8,
  cancelled: 9,
  internal: 1,
};

export function exitCodeOf(code: ErrorCode): number {
  return exitByCode[code];
}

export function isDroverError(value: unknown): value is DroverError {
  return value instanceof DroverError;
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && (errorCodes as readonly string[]).includes(value);
}

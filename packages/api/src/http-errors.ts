import { httpStatusOf, isDroverError } from '@drover/core';

/**
 * The one place where errors become HTTP answers, shared by the agent and the
 * manager (structural types only, so this package does not depend on Fastify).
 */
interface ValidationIssue {
  instancePath?: string;
  schemaPath?: string;
  message?: string;
  keyword?: string;
  params?: Record<string, unknown>;
}

interface FrameworkError {
  message: string;
  statusCode?: number;
  validation?: unknown[];
  validationContext?: string;
}

export interface HttpErrorAnswer {
  status: number;
  body: { error: { code: string; message: string; details: Record<string, unknown> } };
  /** Unexpected: the caller should log it as an error. */
  unexpected: boolean;
}

const generic = new Set(['boolean', 'additionalProperties', 'anyOf', 'oneOf', 'required']);

/** One readable sentence from schema validation issues. */
export function validationMessage(error: FrameworkError): string {
  const issues = [...((error.validation ?? []) as ValidationIssue[])];
  const depth = (i: ValidationIssue) => (i.instancePath ?? '').split('/').length;
  // Union schemas report every branch: the deepest, most specific complaint is the useful one.
  issues.sort((a, b) => depth(b) - depth(a) || Number(generic.has(a.keyword ?? '')) - Number(generic.has(b.keyword ?? '')));
  const first = issues[0];
  const where = `${error.validationContext ?? 'request'}${first?.instancePath ? first.instancePath.replaceAll('/', '.') : ''}`;
  if (first?.keyword === 'boolean' && (first.schemaPath ?? '').endsWith('additionalProperties')) {
    return `Invalid ${where}: unknown field "${(first.instancePath ?? '').split('/').at(-1) ?? ''}"`;
  }
  if (first?.keyword === 'additionalProperties') {
    return `Invalid ${where}: unknown field "${String((first.params?.additionalProperties as string[] | undefined)?.[0] ?? '')}"`;
  }
  return `Invalid ${where}: ${first?.message ?? error.message}`;
}

export function errorAnswer(error: unknown, bodyLimit: number): HttpErrorAnswer {
  if (isDroverError(error)) {
    return { status: httpStatusOf(error.code), body: { error: error.toJSON() }, unexpected: error.code === 'internal' };
  }
  const e = error as FrameworkError;
  if (e.validation) {
    return { status: 400, body: { error: { code: 'invalid', message: validationMessage(e), details: { errors: e.validation } } }, unexpected: false };
  }
  if (e.statusCode === 413) {
    return { status: 413, body: { error: { code: 'too_large', message: `Request body is larger than ${bodyLimit} bytes`, details: {} } }, unexpected: false };
  }
  if (e.statusCode === 415) {
    return { status: 415, body: { error: { code: 'invalid', message: e.message, details: {} } }, unexpected: false };
  }
  if (e.statusCode && e.statusCode < 500) {
    const code = e.statusCode === 404 ? 'not_found' : e.statusCode === 429 ? 'rate_limited' : 'invalid';
    return { status: e.statusCode, body: { error: { code, message: e.message, details: {} } }, unexpected: false };
  }
  return { status: 500, body: { error: { code: 'internal', message: 'Internal error; see the server log', details: {} } }, unexpected: true };
}

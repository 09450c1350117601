import { DroverError } from './errors.js';

/**
 * For tests: the DroverError a promise rejects with (anything else is rethrown,
 * and a promise that resolves is a failure).
 */
export async function rejectionOf(promise: Promise<unknown>): Promise<DroverError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof DroverError) return error;
    throw error;
  }
  throw new Error('expected a rejection');
}

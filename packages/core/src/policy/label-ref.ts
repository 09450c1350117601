import { errors } from '../errors.js';

/** Labels are referred to as `ACM:<policy>:<label>` (Xen's form). */
export const LABEL_PREFIX = 'ACM';

/** `formatLabelRef('example.client_v1', 'dom_Fun')` → `ACM:example.client_v1:dom_Fun`. */
export function formatLabelRef(policy: string, label: string): string {
  return `${LABEL_PREFIX}:${policy}:${label}`;
}

/**
 * Splits `ACM:<policy>:<label>`. The policy name holds no colon (validation
 * refuses one); the label is everything after the second colon.
 */
export function parseLabelRef(ref: string): { policy: string; label: string } {
  const first = ref.indexOf(':');
  const second = first < 0 ? -1 : ref.indexOf(':', first + 1);
  if (first < 0 || second < 0 || ref.slice(0, first) !== LABEL_PREFIX || second === first + 1 || second === ref.length - 1) {
    throw errors.invalid(`Security label "${ref}" is not of the form ACM:<policy>:<label>`, { label: ref });
  }
  return { policy: ref.slice(first + 1, second), label: ref.slice(second + 1) };
}

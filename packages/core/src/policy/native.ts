import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { errors } from '../errors.js';
import { checkPolicySize, importAcmXml } from './acm-xml.js';
import type { SecurityPolicy } from './types.js';
import { validatePolicy } from './validate.js';

export type PolicyFormat = 'xml' | 'yaml' | 'json';

/**
 * Reads the native form (YAML, or JSON, which YAML reads too). YAML anchors and
 * aliases are refused (`maxAliasCount: 0`), so no alias bomb expands, and so
 * are custom tags; the document is then validated.
 */
export function parseNativePolicy(text: string, format: 'yaml' | 'json' = 'yaml'): SecurityPolicy {
  checkPolicySize(text, format === 'json' ? 'JSON' : 'YAML');
  let doc: unknown;
  try {
    doc = format === 'json' ? JSON.parse(text) : parseYaml(text, { maxAliasCount: 0, customTags: [], uniqueKeys: true, prettyErrors: true, schema: 'core' });
  } catch (error) {
    throw errors.invalid(`The ${format === 'json' ? 'JSON' : 'YAML'} policy cannot be read: ${(error as Error).message.split('\n')[0]}`);
  }
  return validatePolicy(doc);
}

/** Guesses the format from the text: XML starts with `<`, JSON with `{`, anything else is YAML. */
export function detectPolicyFormat(text: string): PolicyFormat {
  const start = text.trimStart();
  if (start.startsWith('<')) return 'xml';
  if (start.startsWith('{')) return 'json';
  return 'yaml';
}

/** Any of the three forms, by `format` or guessed. */
export function parsePolicy(text: string, format: PolicyFormat = detectPolicyFormat(text)): SecurityPolicy {
  return format === 'xml' ? importAcmXml(text) : parseNativePolicy(text, format);
}

export function exportNativePolicy(policy: SecurityPolicy, format: 'yaml' | 'json' = 'yaml'): string {
  const plain = JSON.parse(JSON.stringify(policy)) as unknown;
  return format === 'json' ? `${JSON.stringify(plain, null, 2)}\n` : stringifyYaml(plain);
}

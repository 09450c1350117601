import { errors } from '../errors.js';
import type { ConflictSet, PolicyProblem, ResourceLabel, SecurityPolicy, VmLabel } from './types.js';

/** Limits that keep a policy document (and every check against it) small. */
export const POLICY_LIMITS = Object.freeze({
  types: 1024,
  conflictSets: 1024,
  labels: 4096,
  typesPerEntry: 1024,
  nameLength: 200,
});

const namePattern = /^[A-Za-z0-9_.()\-/+@#]+$/;

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  return typeof value === 'string' ? `"${value}"` : typeof value;
}

/**
 * Checks a policy document (the native form, or what the XML importer read)
 * and returns it normalized. Every problem is collected, each with its path,
 * and thrown together as one `invalid` error whose `details.problems` lists
 * them: unknown types, duplicates, a conflict set naming an unknown type, a
 * label whose types conflict with each other, a bootstrap label that does not
 * exist, unknown fields.
 */
export function validatePolicy(raw: unknown): SecurityPolicy {
  const problems: PolicyProblem[] = [];
  const add = (path: string, message: string) => {
    if (problems.length < 100) problems.push({ path, message });
  };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw errors.invalid(`A security policy must be an object; got ${describe(raw)}`, { problems: [{ path: '', message: 'not an object' }] });
  }
  const doc = raw as Record<string, unknown>;
  const known = ['name', 'url', 'date', 'version', 'steTypes', 'cwTypes', 'conflictSets', 'vmLabels', 'resourceLabels', 'bootstrapLabel'];
  for (const key of Object.keys(doc)) if (!known.includes(key)) add(key, `unknown field "${key}" (known: ${known.join(', ')})`);

  const name = (path: string, value: unknown): string | undefined => {
    if (typeof value !== 'string' || value.length === 0) {
      add(path, `must be a non-empty string; got ${describe(value)}`);
      return undefined;
    }
    if (value.length > POLICY_LIMITS.nameLength) {
      add(path, `is longer than ${POLICY_LIMITS.nameLength} characters`);
      return undefined;
    }
    if (!namePattern.test(value)) {
      add(path, `"${value}" may hold only letters, digits and _ . ( ) - / + @ #`);
      return undefined;
    }
    return value;
  };
  const optionalText = (key: string): string | undefined => {
    const value = doc[key];
    if (value === undefined) return undefined;
    if (typeof value !== 'string' || value.length > 1000) {
      add(key, `must be a string of at most 1000 characters; got ${describe(value)}`);
      return undefined;
    }
    return value;
  };
  const list = (path: string, value: unknown, limit: number): unknown[] => {
    if (value === undefined) return [];
    if (!Array.isArray(value)) {
      add(path, `must be a list; got ${describe(value)}`);
      return [];
    }
    if (value.length > limit) {
      add(path, `has ${value.length} entries; at most ${limit} allowed`);
      return [];
    }
    return value;
  };
  const typeList = (path: string, value: unknown, universe: ReadonlySet<string>, kind: string): string[] => {
    const out: string[] = [];
    list(path, value, POLICY_LIMITS.typesPerEntry).forEach((entry, i) => {
      const type = name(`${path}[${i}]`, entry);
      if (type === undefined) return;
      if (!universe.has(type)) add(`${path}[${i}]`, `unknown ${kind} type "${type}"`);
      else if (out.includes(type)) add(`${path}[${i}]`, `${kind} type "${type}" is listed twice`);
      else out.push(type);
    });
    return out;
  };
  const declare = (path: string, kind: string): string[] => {
    const out: string[] = [];
    list(path, doc[path], POLICY_LIMITS.types).forEach((entry, i) => {
      const type = name(`${path}[${i}]`, entry);
      if (type === undefined) return;
      if (out.includes(type)) add(`${path}[${i}]`, `duplicate ${kind} type "${type}"`);
      else out.push(type);
    });
    return out;
  };
  const entries = (path: string, limit: number, fields: string[]): Array<[Record<string, unknown>, string]> => {
    const out: Array<[Record<string, unknown>, string]> = [];
    list(path, doc[path], limit).forEach((entry, i) => {
      const at = `${path}[${i}]`;
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
        add(at, `must be an object; got ${describe(entry)}`);
        return;
      }
      for (const key of Object.keys(entry)) if (!fields.includes(key)) add(`${at}.${key}`, `unknown field "${key}"`);
      out.push([entry as Record<string, unknown>, at]);
    });
    return out;
  };

  const policyName = name('name', doc.name);
  if (policyName?.includes(':')) add('name', `policy name "${policyName}" may not contain ":"`);
  const steTypes = declare('steTypes', 'STE');
  const cwTypes = declare('cwTypes', 'Chinese Wall');
  const steSet = new Set(steTypes);
  const cwSet = new Set(cwTypes);

  const conflictSets: ConflictSet[] = [];
  const setNames = new Set<string>();
  for (const [entry, at] of entries('conflictSets', POLICY_LIMITS.conflictSets, ['name', 'types'])) {
    const setName = name(`${at}.name`, entry.name);
    if (setName !== undefined) {
      if (setNames.has(setName)) add(`${at}.name`, `duplicate conflict set "${setName}"`);
      setNames.add(setName);
    }
    const types = typeList(`${at}.types`, entry.types, cwSet, 'Chinese Wall');
    if (Array.isArray(entry.types) && entry.types.length < 2) add(`${at}.types`, 'a conflict set needs at least two types');
    if (setName !== undefined) conflictSets.push({ name: setName, types });
  }

  const labelNames = new Set<string>();
  const labelName = (at: string, value: unknown): string | undefined => {
    const label = name(`${at}.name`, value);
    if (label === undefined) return undefined;
    if (labelNames.has(label)) {
      add(`${at}.name`, `duplicate label "${label}"`);
      return undefined;
    }
    labelNames.add(label);
    return label;
  };
  const vmLabels: VmLabel[] = [];
  for (const [entry, at] of entries('vmLabels', POLICY_LIMITS.labels, ['name', 'steTypes', 'cwTypes'])) {
    const label = labelName(at, entry.name);
    const ste = typeList(`${at}.steTypes`, entry.steTypes, steSet, 'STE');
    const cw = typeList(`${at}.cwTypes`, entry.cwTypes, cwSet, 'Chinese Wall');
    // A label holding two types of one conflict set could never run anywhere (Xen refuses it too).
    for (const set of conflictSets) {
      const inSet = cw.filter((type) => set.types.includes(type));
      if (inSet.length > 1) add(`${at}.cwTypes`, `types ${inSet.map((t) => `"${t}"`).join(' and ')} are in one conflict set ("${set.name}")`);
    }
    if (label !== undefined) vmLabels.push({ name: label, steTypes: ste, cwTypes: cw });
  }
  const resourceLabels: ResourceLabel[] = [];
  for (const [entry, at] of entries('resourceLabels', POLICY_LIMITS.labels, ['name', 'steTypes'])) {
    const label = labelName(at, entry.name);
    const ste = typeList(`${at}.steTypes`, entry.steTypes, steSet, 'STE');
    if (label !== undefined) resourceLabels.push({ name: label, steTypes: ste });
  }
  let bootstrapLabel: string | undefined;
  if (doc.bootstrapLabel !== undefined) {
    bootstrapLabel = name('bootstrapLabel', doc.bootstrapLabel);
    if (bootstrapLabel !== undefined && !vmLabels.some((label) => label.name === bootstrapLabel)) {
      add('bootstrapLabel', `bootstrap label "${bootstrapLabel}" is not a VM label of the policy`);
    }
  }

  const texts: Record<string, string> = {};
  for (const key of ['url', 'date', 'version']) {
    const value = optionalText(key);
    if (value !== undefined) texts[key] = value;
  }

  if (problems.length > 0) {
    const first = problems[0]!;
    const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length === 2 ? '' : 's'})` : '';
    throw errors.invalid(`Invalid security policy${policyName ? ` "${policyName}"` : ''}: ${first.path ? `${first.path}: ` : ''}${first.message}${more}`, { problems });
  }
  return {
    name: policyName!,
    ...texts,
    steTypes,
    cwTypes,
    conflictSets,
    vmLabels,
    resourceLabels,
    ...(bootstrapLabel !== undefined ? { bootstrapLabel } : {}),
  };
}

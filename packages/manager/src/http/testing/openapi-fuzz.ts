import { randomUUID } from 'node:crypto';

/**
 * Test-only: turns an OpenAPI 3 document into bad requests. Every route of the
 * document (path × method) gets a valid baseline request (built from its
 * schemas, plus a few seeds for what a schema cannot say, like the name of an
 * image that exists) and a list of mutations of that baseline, each wrong in
 * exactly one way, with the statuses a correct server may answer.
 *
 * Nothing here knows the manager's routes: a route added later is covered as
 * soon as it appears in the document.
 */

export interface JsonSchema {
  $ref?: string;
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: boolean | JsonSchema;
  items?: JsonSchema;
  minItems?: number;
  maxItems?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  format?: string;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number | boolean;
  exclusiveMaximum?: number | boolean;
  enum?: unknown[];
  const?: unknown;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  allOf?: JsonSchema[];
  nullable?: boolean;
  description?: string;
}

interface RawParameter {
  $ref?: string;
  in?: string;
  name?: string;
  required?: boolean;
  schema?: JsonSchema;
}

interface RawOperation {
  summary?: string;
  description?: string;
  parameters?: RawParameter[];
  requestBody?: { $ref?: string; required?: boolean; content?: Record<string, { schema?: JsonSchema }> };
  responses?: Record<string, { $ref?: string; content?: Record<string, { schema?: JsonSchema }> }>;
  security?: Array<Record<string, string[]>>;
}

export interface OpenApiDocument {
  openapi: string;
  paths: Record<string, Record<string, unknown>>;
  components?: Record<string, Record<string, unknown>>;
  security?: Array<Record<string, string[]>>;
}

export interface RouteParameter {
  name: string;
  required: boolean;
  schema: JsonSchema;
}

export interface Route {
  /** Upper case: GET, POST ... */
  method: string;
  /** The path template of the document, e.g. /api/v1/vms/{id}. */
  path: string;
  summary: string;
  pathParams: RouteParameter[];
  queryParams: RouteParameter[];
  body?: { schema: JsonSchema; required: boolean; mediaType: string };
  /** The 200 answer's schema, when declared. */
  okSchema?: JsonSchema;
  /** The operation declares `security: []` (callable without a token). */
  declaredPublic: boolean;
}

/** What a correct server may answer: these statuses, or (lenient) anything below 500. */
export type Expectation = number[] | 'below-500';

export interface BodyCase {
  label: string;
  /** The raw request body. */
  text: string;
  contentType: string;
  expect: Expectation;
}

export interface QueryCase {
  label: string;
  /** The raw query string, without "?". */
  query: string;
  expect: Expectation;
}

const methods = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

// ------------------------------------------------------------ document

function pointer(doc: OpenApiDocument, ref: string): unknown {
  if (!ref.startsWith('#/')) throw new Error(`Only local $refs are supported, got "${ref}"`);
  let at: unknown = doc;
  for (const part of ref.slice(2).split('/')) {
    const key = part.replaceAll('~1', '/').replaceAll('~0', '~');
    at = (at as Record<string, unknown> | undefined)?.[key];
  }
  if (at === undefined) throw new Error(`Unresolvable $ref "${ref}"`);
  return at;
}

function deref<T extends { $ref?: string }>(doc: OpenApiDocument, value: T): T {
  let at = value;
  for (let i = 0; at.$ref !== undefined; i++) {
    if (i > 32) throw new Error(`$ref cycle at "${value.$ref}"`);
    at = pointer(doc, at.$ref) as T;
  }
  return at;
}

/** The schema with every $ref replaced by its target and allOf merged (recursion cut at a depth of 24). */
export function inline(doc: OpenApiDocument, schema: JsonSchema, depth = 0): JsonSchema {
  if (depth > 24) return {};
  const s = deref(doc, schema);
  const out: JsonSchema = { ...s };
  if (s.allOf) {
    delete out.allOf;
    for (const part of s.allOf.map((p) => inline(doc, p, depth + 1))) {
      for (const [key, value] of Object.entries(part) as Array<[keyof JsonSchema, unknown]>) {
        if (key === 'properties') out.properties = { ...out.properties, ...(value as Record<string, JsonSchema>) };
        else if (key === 'required') out.required = [...(out.required ?? []), ...(value as string[])];
        else if (out[key] === undefined) (out as Record<string, unknown>)[key] = value;
      }
    }
  }
  if (out.properties) out.properties = Object.fromEntries(Object.entries(out.properties).map(([k, v]) => [k, inline(doc, v, depth + 1)]));
  if (out.items) out.items = inline(doc, out.items, depth + 1);
  if (typeof out.additionalProperties === 'object') out.additionalProperties = inline(doc, out.additionalProperties, depth + 1);
  if (out.anyOf) out.anyOf = out.anyOf.map((p) => inline(doc, p, depth + 1));
  if (out.oneOf) out.oneOf = out.oneOf.map((p) => inline(doc, p, depth + 1));
  return out;
}

/** Every path × method of the document, its parameters and body resolved. */
export function routesOf(doc: OpenApiDocument): Route[] {
  const routes: Route[] = [];
  for (const [path, item] of Object.entries(doc.paths)) {
    const shared = ((item.parameters ?? []) as RawParameter[]).map((p) => deref(doc, p));
    for (const method of methods) {
      const operation = item[method] as RawOperation | undefined;
      if (!operation) continue;
      const own = (operation.parameters ?? []).map((p) => deref(doc, p));
      const byKey = new Map<string, RawParameter>();
      for (const p of [...shared, ...own]) byKey.set(`${p.in}:${p.name}`, p);
      const params = [...byKey.values()].map((p) => ({ in: p.in ?? '', name: p.name ?? '', required: p.required === true, schema: inline(doc, p.schema ?? {}) }));
      const requestBody = operation.requestBody ? deref(doc, operation.requestBody) : undefined;
      const media = requestBody?.content ? (Object.keys(requestBody.content).find((m) => m.includes('json')) ?? Object.keys(requestBody.content)[0]) : undefined;
      const ok = operation.responses?.['200'] ? deref(doc, operation.responses['200']) : undefined;
      const okSchema = ok?.content?.['application/json']?.schema;
      routes.push({
        method: method.toUpperCase(),
        path,
        summary: `${operation.summary ?? ''} ${operation.description ?? ''}`.trim(),
        pathParams: params.filter((p) => p.in === 'path').map(({ name, schema }) => ({ name, required: true, schema })),
        queryParams: params.filter((p) => p.in === 'query').map(({ name, required, schema }) => ({ name, required, schema })),
        ...(requestBody && media ? { body: { schema: inline(doc, requestBody.content![media]!.schema ?? {}), required: requestBody.required === true, mediaType: media } } : {}),
        ...(okSchema ? { okSchema: inline(doc, okSchema) } : {}),
        declaredPublic: Array.isArray(operation.security) && operation.security.length === 0,
      });
    }
  }
  return routes;
}

/** GET routes without path parameters that answer a page `{ items: [...] }`: the lists to snapshot. */
export function listRoutes(routes: Route[]): Route[] {
  return routes.filter((r) => r.method === 'GET' && r.pathParams.length === 0 && typeOf(r.okSchema ?? {}) === 'object' && typeOf(r.okSchema?.properties?.items ?? {}) === 'array');
}

/** The concrete path: each {param} replaced by its (already encoded) value. */
export function fillPath(template: string, values: Record<string, string>): string {
  return template.replace(/\{([^}]+)\}/g, (_, name: string) => {
    const value = values[name];
    if (value === undefined) throw new Error(`No value for path parameter "${name}" of ${template}`);
    return value;
  });
}

// ------------------------------------------------------------ valid values

/** Values no schema can produce (an image that exists, a join token that works), by property or parameter name. */
export type Seeds = Record<string, unknown>;

export function typeOf(schema: JsonSchema): string | undefined {
  const t = Array.isArray(schema.type) ? schema.type.find((x) => x !== 'null') : schema.type;
  if (t) return t;
  if (schema.properties || schema.additionalProperties !== undefined) return 'object';
  if (schema.items) return 'array';
  if (schema.enum && schema.enum.length > 0) return typeof schema.enum[0];
  return undefined;
}

function nullable(schema: JsonSchema): boolean {
  return schema.nullable === true || (Array.isArray(schema.type) && schema.type.includes('null')) || (schema.enum ?? []).includes(null) || [...(schema.anyOf ?? []), ...(schema.oneOf ?? [])].some((s) => typeOf(s) === 'null' || s.type === 'null');
}

const stringCandidates = ['fuzz', 'fuzz-value', 'https://fuzz.invalid', 'key=value', 'a', '0', '00000000-0000-4000-8000-000000000000', '1970-01-01T00:00:00.000Z', 'ACM:fuzz:label'];

function regexOf(schema: JsonSchema): RegExp | undefined {
  return schema.pattern === undefined ? undefined : new RegExp(schema.pattern, 'u');
}

function fitsString(schema: JsonSchema, value: string): boolean {
  const length = [...value].length;
  return length >= (schema.minLength ?? 0) && length <= (schema.maxLength ?? Infinity) && (regexOf(schema)?.test(value) ?? true);
}

function validString(schema: JsonSchema, where: string): string {
  if (schema.enum) return String(schema.enum[0]);
  for (const candidate of stringCandidates) {
    let value = candidate.padEnd(schema.minLength ?? 0, 'a');
    if (schema.maxLength !== undefined) value = value.slice(0, schema.maxLength);
    if (fitsString(schema, value)) return value;
  }
  throw new Error(`Cannot make a valid string for ${where} (${JSON.stringify(schema)}): add a seed or a candidate`);
}

function lowest(schema: JsonSchema, integer: boolean): number | undefined {
  if (typeof schema.exclusiveMinimum === 'number') return schema.exclusiveMinimum + (integer ? 1 : 0.5);
  if (schema.minimum !== undefined) return schema.exclusiveMinimum === true ? schema.minimum + (integer ? 1 : 0.5) : schema.minimum;
  return undefined;
}

function highest(schema: JsonSchema, integer: boolean): number | undefined {
  if (typeof schema.exclusiveMaximum === 'number') return schema.exclusiveMaximum - (integer ? 1 : 0.5);
  if (schema.maximum !== undefined) return schema.exclusiveMaximum === true ? schema.maximum - (integer ? 1 : 0.5) : schema.maximum;
  return undefined;
}

/**
 * A small valid value: objects get their required properties only. `name` is
 * the property or parameter name, looked up in `seeds` first.
 */
export function validValue(schema: JsonSchema, name: string, seeds: Seeds): unknown {
  if (name in seeds) return seeds[name];
  if (schema.const !== undefined) return schema.const;
  if (schema.enum && schema.enum.length > 0) return schema.enum[0];
  const branch = [...(schema.anyOf ?? []), ...(schema.oneOf ?? [])].find((s) => typeOf(s) !== 'null' && s.type !== 'null');
  if (branch) return validValue(branch, name, seeds);
  switch (typeOf(schema)) {
    case 'string':
      return validString(schema, name);
    case 'integer':
    case 'number': {
      const integer = typeOf(schema) === 'integer';
      const low = lowest(schema, integer);
      const high = highest(schema, integer);
      return low ?? (high !== undefined ? Math.min(1, high) : 1);
    }
    case 'boolean':
      return false;
    case 'array':
      return Array.from({ length: schema.minItems ?? 0 }, () => validValue(schema.items ?? {}, `${name}[]`, seeds));
    case 'object': {
      const out: Record<string, unknown> = {};
      for (const key of schema.required ?? []) out[key] = validValue(schema.properties?.[key] ?? {}, key, seeds);
      return out;
    }
    case 'null':
      return null;
    default:
      return 'fuzz';
  }
}

// ------------------------------------------------------------ body mutations

type Step = string | number;
const remove = Symbol('remove');

function setAt(root: unknown, path: Step[], value: unknown): unknown {
  if (path.length === 0) return value;
  const copy = structuredClone(root) as Record<string | number, unknown>;
  let at = copy;
  for (const step of path.slice(0, -1)) at = at[step] as Record<string | number, unknown>;
  const last = path.at(-1)!;
  if (value === remove) delete at[last];
  else at[last] = value;
  return copy;
}

function getAt(root: unknown, path: Step[]): unknown {
  let at = root;
  for (const step of path) at = (at as Record<string | number, unknown> | undefined)?.[step];
  return at;
}

function where(path: Step[]): string {
  return path.length === 0 ? 'body' : `body${path.map((s) => (typeof s === 'number' ? `[${s}]` : `.${s}`)).join('')}`;
}

export const KiB = 1024;
export const MiB = 1024 * KiB;

/** Values of another JSON type than the schema's. */
function wrongTypes(schema: JsonSchema): Array<[string, unknown]> {
  const t = typeOf(schema);
  const out: Array<[string, unknown]> = [];
  if (t === 'string') out.push(['number instead of string', 12345], ['object instead of string', { value: 'x' }]);
  if (t === 'integer') out.push(['string instead of integer', 'x'], ['numeric string instead of integer', '5'], ['fraction instead of integer', 1.5]);
  if (t === 'number') out.push(['string instead of number', 'x']);
  if (t === 'boolean') out.push(['string instead of boolean', 'yes'], ['number instead of boolean', 1]);
  if (t === 'array') out.push(['object instead of array', {}], ['string instead of array', 'x']);
  if (t === 'object') out.push(['array instead of object', []], ['string instead of object', 'x']);
  if (!nullable(schema) && t !== undefined && t !== 'null') out.push(['null', null]);
  return out;
}

/** A valid string made one character longer than maxLength, still on the pattern: only the length is wrong. */
function longer(schema: JsonSchema, valid: string): string {
  const length = (schema.maxLength ?? 0) + 1;
  const re = regexOf(schema);
  return ['0', 'a', '-', '.'].map((pad) => valid.padEnd(length, pad)).find((value) => re?.test(value) ?? true) ?? valid.padEnd(length, '0');
}

/** A string the schema refuses for its pattern, within its length limits; undefined when none of the tries works. */
function patternViolation(schema: JsonSchema): string | undefined {
  const re = regexOf(schema);
  if (!re) return undefined;
  for (const candidate of ['!fuzz value!', 'fuzz value', '-fuzz', '.fuzz', '=', ' ', '\u0000', 'é']) {
    const value = candidate.padEnd(schema.minLength ?? 0, '!');
    if (!re.test(value) && value.length <= (schema.maxLength ?? Infinity)) return value;
  }
  return undefined;
}

interface ValueMutation {
  label: string;
  body: unknown;
  expect: number[];
}

/**
 * Mutations of the value at `path` of `base` (which holds a valid value there),
 * then of what it contains: wrong types, null, strings too long / too short /
 * off-pattern / 100 KiB, numbers out of range, arrays too long, missing
 * required and unknown properties, map entries of the wrong type.
 */
function valueMutations(schema: JsonSchema, path: Step[], base: unknown, seeds: Seeds): ValueMutation[] {
  const out: ValueMutation[] = [];
  const at = where(path);
  const push = (label: string, value: unknown, expect = [400]) => out.push({ label: `${at}: ${label}`, body: setAt(base, path, value), expect });
  for (const [label, value] of wrongTypes(schema)) push(label, value);
  const t = typeOf(schema);
  if (t === 'string' && !schema.enum) {
    push('100 KiB string', 'a'.repeat(100 * KiB), [400, 413]);
    if ((schema.minLength ?? 0) > 0) push(`shorter than minLength ${schema.minLength}`, 'a'.repeat(schema.minLength! - 1));
    if (schema.maxLength !== undefined) push(`longer than maxLength ${schema.maxLength}`, longer(schema, String(getAt(base, path) ?? '')));
    const off = patternViolation(schema);
    if (off !== undefined) push(`off-pattern ${JSON.stringify(off)}`, off);
  }
  if (t === 'string' && schema.enum) push('not one of the enum', 'fuzz-not-in-enum');
  if (t === 'integer' || t === 'number') {
    const integer = t === 'integer';
    const low = lowest(schema, integer);
    const high = highest(schema, integer);
    if (low !== undefined) push(`below minimum (${low - 1})`, low - 1);
    if (high !== undefined) push(`above maximum (${high + 1})`, high + 1);
    if (integer) push('beyond the safe integers', Number.MAX_SAFE_INTEGER * 4);
  }
  if (t === 'array') {
    const item = validValue(schema.items ?? {}, String(path.at(-1) ?? 'item'), seeds);
    if (schema.maxItems !== undefined) push(`more than maxItems ${schema.maxItems}`, Array.from({ length: schema.maxItems + 1 }, () => item));
    if ((schema.minItems ?? 0) > 0) push(`fewer than minItems ${schema.minItems}`, Array.from({ length: schema.minItems! - 1 }, () => item));
    if (schema.items) {
      const current = getAt(base, path) as unknown[];
      const withItem = setAt(base, path, current.length > 0 ? current : [item]);
      out.push(...valueMutations(schema.items, [...path, 0], withItem, seeds));
    }
  }
  if (t === 'object') {
    const current = (getAt(base, path) ?? {}) as Record<string, unknown>;
    push('unknown property', { ...current, fuzzUnknownField: 1 });
    for (const key of schema.required ?? []) push(`required "${key}" missing`, Object.fromEntries(Object.entries(current).filter(([k]) => k !== key)));
    for (const [key, property] of Object.entries(schema.properties ?? {})) {
      const withProperty = key in current ? base : setAt(base, [...path, key], validValue(property, key, seeds));
      out.push(...valueMutations(property, [...path, key], withProperty, seeds));
    }
    // A map ({ [key]: value }): its values are checked whatever the key, and keys are strings like any other.
    if (typeof schema.additionalProperties === 'object') {
      const valueSchema = schema.additionalProperties;
      const entry = validValue(valueSchema, 'fuzz', seeds);
      out.push(...valueMutations(valueSchema, [...path, 'fuzz'], setAt(base, [...path, 'fuzz'], entry), seeds));
      for (const [label, value] of wrongTypes(valueSchema)) push(`entry with an odd key and a ${label}`, { ...current, 'fuzz odd key!': value });
      push('entry with a 100 KiB key', { ...current, ['k'.repeat(100 * KiB)]: entry }, [400, 413]);
    }
  }
  return out;
}

/** Every mutation of a JSON request body: the document's syntax and type, then each property. */
export function bodyCases(schema: JsonSchema, mediaType: string, seeds: Seeds): { baseline: unknown; cases: BodyCase[] } {
  const baseline = validValue(schema, '(body)', seeds);
  const json = JSON.stringify(baseline);
  const cases: BodyCase[] = [];
  const raw = (label: string, text: string, expect: Expectation = [400], contentType = mediaType) => cases.push({ label, text, contentType, expect });
  raw('bad JSON: cut short', json.slice(0, -1));
  raw('bad JSON: trailing comma', json === '{}' ? '{"fuzz":1,}' : `${json.slice(0, -1)},}`);
  raw("bad JSON: single quotes", "{'fuzz': 1}");
  raw('bad JSON: bare word', 'fuzz');
  raw('bad JSON: two documents', `${json} ${json}`);
  raw('empty body', '');
  raw('JSON null', 'null');
  raw('JSON array', '[]');
  raw('JSON array of the valid body', `[${json}]`);
  raw('JSON string', '"fuzz"');
  raw('JSON number', '42');
  raw('JSON boolean', 'true');
  raw('__proto__ key', json === '{}' ? '{"__proto__":{"fuzz":1}}' : `${json.slice(0, -1)},"__proto__":{"fuzz":1}}`);
  raw('constructor.prototype key', json === '{}' ? '{"constructor":{"prototype":{"fuzz":1}}}' : `${json.slice(0, -1)},"constructor":{"prototype":{"fuzz":1}}}`);
  raw('JSON nested 20 000 deep', `{"fuzz":${'['.repeat(20_000)}${']'.repeat(20_000)}}`, [400, 413]);
  raw('2 MiB body', JSON.stringify({ ...(baseline as object), fuzzPadding: 'x'.repeat(2 * MiB) }), [413]);
  raw('valid body sent as text/plain', json, [400, 415], 'text/plain');
  raw('valid body sent as XML', '<fuzz/>', [400, 415], 'application/xml');
  raw('valid body sent form-encoded', 'fuzz=1', [400, 415], 'application/x-www-form-urlencoded');
  raw('valid body sent as multipart', '--b\r\n\r\nfuzz\r\n--b--', [400, 415], 'multipart/form-data; boundary=b');
  for (const m of valueMutations(schema, [], baseline, seeds)) raw(m.label, JSON.stringify(m.body), m.expect);
  return { baseline, cases };
}

// ------------------------------------------------------------ query mutations

const q = (name: string, value: string) => `${encodeURIComponent(name)}=${encodeURIComponent(value)}`;

/**
 * Bad query strings: an unknown parameter, a huge one, and for each declared
 * parameter wrong types, out-of-range numbers, strings too long or off-pattern,
 * the parameter repeated. With `lenient`, also values the schema accepts but
 * that mean nothing (a garbage cursor, SQL, a bad percent-escape): any answer
 * below 500 will do. Only lenient on reads: a lenient value on a write may act.
 */
export function queryCases(params: RouteParameter[], lenient: boolean): QueryCase[] {
  const cases: QueryCase[] = [];
  const add = (label: string, query: string, expect: Expectation = [400]) => cases.push({ label, query, expect });
  add('unknown parameter', q('fuzzUnknown', '1'));
  add('unknown parameter, empty', 'fuzzUnknown');
  add('unknown parameter named like a prototype key', q('__proto__', '1'));
  add('8 KiB unknown parameter', q('fuzzHuge', 'a'.repeat(8 * KiB)));
  add('100 KiB query string', q('fuzzHuge', 'a'.repeat(100 * KiB)), [400, 414, 431]);
  for (const { name, schema } of params) {
    const t = typeOf(schema);
    const valid = String(validValue(schema, name, {}));
    add(`${name} repeated`, `${q(name, valid)}&${q(name, valid)}`);
    if (t === 'integer' || t === 'number') {
      const integer = t === 'integer';
      for (const bad of ['abc', 'NaN', 'Infinity', '[1]', '1,2']) add(`${name}=${bad}`, q(name, bad));
      // The query is converted before it is checked (TypeBox Value.Convert): these become numbers; any answer but a 5xx.
      for (const odd of ['1.5', '0x10', ' 2 ', '1e2']) add(`${name}=${JSON.stringify(odd)} (converted)`, q(name, odd), 'below-500');
      const low = lowest(schema, integer);
      const high = highest(schema, integer);
      if (low !== undefined) add(`${name} below minimum`, q(name, String(low - 1)));
      if (low === undefined || low > -1) add(`${name}=-1`, q(name, '-1'));
      if (high !== undefined) add(`${name} above maximum`, q(name, String(high + 1)));
      if (high !== undefined && high < 100_000) add(`${name}=100000`, q(name, '100000'));
      if (high !== undefined) add(`${name}=1e400`, q(name, '9'.repeat(400)));
    }
    if (t === 'boolean') for (const bad of ['yes', 'maybe', '2', 'TRUE!']) add(`${name}=${bad}`, q(name, bad));
    if (t === 'string') {
      if (schema.maxLength !== undefined) add(`${name} longer than maxLength ${schema.maxLength}`, q(name, longer(schema, valid)));
      if (schema.maxLength === undefined || schema.maxLength < 8 * KiB) add(`${name} 8 KiB`, q(name, 'a'.repeat(8 * KiB)), schema.maxLength === undefined ? 'below-500' : [400]);
      const off = patternViolation(schema);
      if (off !== undefined) add(`${name} off-pattern ${JSON.stringify(off)}`, q(name, off));
      if ((schema.minLength ?? 0) > 0) add(`${name} empty`, `${encodeURIComponent(name)}=`);
      if (schema.enum) add(`${name} not one of the enum`, q(name, 'fuzz-not-in-enum'));
    }
    if (lenient) {
      for (const [label, value] of [
        ['garbage', 'fuzz-garbage'],
        ['a base64url JSON array', Buffer.from('["fuzz","x"]').toString('base64url')],
        ['a base64url JSON object', Buffer.from('{"fuzz":1}').toString('base64url')],
        ['SQL', "' OR 1=1 --"],
        ['a NUL byte', 'a\u0000b'],
        ['a uuid of nothing', '00000000-0000-4000-8000-000000000000'],
        ['key=value', 'fuzz=value'],
        ['empty', ''],
      ] as const) {
        add(`${name} = ${label}`, q(name, value), 'below-500');
      }
      add(`${name} with a bad percent-escape`, `${encodeURIComponent(name)}=%E0%A4%A`, 'below-500');
    }
  }
  return cases;
}

// ------------------------------------------------------------ path mutations

export interface PathValueCase {
  label: string;
  /** Encoded, ready to put in the path. */
  value: string;
  /** Whether the value is well-formed for the parameter (it just names nothing). */
  wellFormed: boolean;
}

/** Values of a path parameter that name nothing, well-formed or not. */
export function pathValueCases(schema: JsonSchema): PathValueCase[] {
  const max = schema.maxLength ?? 63;
  const cases: PathValueCase[] = [
    { label: 'a name of nothing', value: 'fuzz-nothing-here', wellFormed: true },
    { label: 'a uuid of nothing', value: '00000000-0000-4000-8000-000000000000', wellFormed: true },
    { label: 'a random uuid', value: randomUUID(), wellFormed: true },
    { label: 'an upper-case uuid of nothing', value: 'ABCDEF00-0000-4000-8000-000000000000', wellFormed: true },
    { label: `the longest (${max}) name`, value: 'a'.repeat(max), wellFormed: true },
  ];
  const bad: Array<[string, string]> = [
    ['a space', 'fuzz id'],
    ['an exclamation mark', 'fuzz!'],
    ['a leading dash', '-fuzz'],
    ['a leading dot', '.fuzz'],
    ['an encoded slash', 'fuzz/../x'],
    ['an encoded backslash', 'fuzz\\x'],
    ['a NUL byte', 'fuzz\u0000'],
    ['a newline', 'fuzz\nx'],
    ['quotes and SQL', "x' OR '1'='1"],
    ['non-ASCII', 'fuzzé'],
    ['an emoji', 'fuzz\u{1F600}'],
    ['a percent sign', 'fuzz%'],
    [`${max + 1} characters`, 'a'.repeat(max + 1)],
    ['101 characters (past the router limit)', 'a'.repeat(101)],
    ['4000 characters', 'a'.repeat(4000)],
  ];
  for (const [label, raw] of bad) cases.push({ label, value: encodeURIComponent(raw), wellFormed: false });
  cases.push({ label: 'a bad percent-escape', value: 'fuzz%E0%A4%A', wellFormed: false });
  cases.push({ label: 'an overlong UTF-8 escape', value: '%C0%AE%C0%AE', wellFormed: false });
  // A value the schema accepts is well-formed even when it looks odd.
  const re = regexOf(schema);
  return cases.map((c) => {
    if (c.wellFormed) return c;
    let decoded: string | undefined;
    try {
      decoded = decodeURIComponent(c.value);
    } catch {
      decoded = undefined;
    }
    const accepted = decoded !== undefined && decoded.length >= (schema.minLength ?? 0) && decoded.length <= (schema.maxLength ?? Infinity) && (re?.test(decoded) ?? true);
    return accepted ? { ...c, wellFormed: true } : c;
  });
}

/** Bad values of a header a route reads (named in its summary): what it must refuse with 400. */
export const knownHeaderMutations: Record<string, string[]> = {
  'If-Match': ['abc', '"abc"', '0', '-1', '1.5', 'W/"1"', '*x', '9'.repeat(400), ''],
  'Last-Event-ID': ['-1', 'abc', '1.5', '9007199254740993', '9'.repeat(400)],
};

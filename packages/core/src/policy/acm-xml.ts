import { XMLBuilder, XMLParser, XMLValidator } from 'fast-xml-parser';
import { errors } from '../errors.js';
import type { SecurityPolicy } from './types.js';
import { validatePolicy } from './validate.js';

/** Larger policy documents are refused before parsing. */
export const MAX_POLICY_BYTES = 1024 * 1024;

const predefined: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

/** Only XML's five predefined entities and numeric references; never a declared entity (none can be declared: DTDs are refused). */
function decode(text: string): string {
  return text.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[A-Za-z]+);/g, (whole, name: string) => {
    if (name.startsWith('#x')) return String.fromCodePoint(Number.parseInt(name.slice(2), 16));
    if (name.startsWith('#')) return String.fromCodePoint(Number.parseInt(name.slice(1), 10));
    const value = predefined[name];
    if (value === undefined) throw errors.invalid(`The ACM policy uses the undeclared entity "&${name};"`, { entity: name });
    return value;
  });
}

/** UTF-8 length without TextEncoder (core has no DOM or Node types). */
function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    // A surrogate pair (4 bytes) is two units of 2.
    bytes += unit < 0x80 ? 1 : unit < 0x800 || (unit >= 0xd800 && unit <= 0xdfff) ? 2 : 3;
  }
  return bytes;
}

export function checkPolicySize(text: string, format: string): void {
  // More UTF-16 units than the limit is more bytes too; only shorter texts need counting.
  const bytes = text.length > MAX_POLICY_BYTES ? text.length : utf8Length(text);
  if (bytes > MAX_POLICY_BYTES) {
    throw errors.tooLarge(`The ${format} policy is ${bytes} bytes; at most ${MAX_POLICY_BYTES} bytes are accepted`, { bytes, limit: MAX_POLICY_BYTES });
  }
}

const listTags = new Set(['Type', 'Conflict', 'VirtualMachineLabel', 'ResourceLabel']);

function asList(value: unknown): unknown[] {
  if (value === undefined || value === null || value === '') return [];
  return Array.isArray(value) ? value : [value];
}

function obj(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

function text(value: unknown): unknown {
  if (typeof value === 'string') return decode(value.trim());
  if (typeof value === 'number') return String(value);
  return value;
}

function types(container: unknown): unknown[] {
  return asList(obj(container).Type).map(text);
}

/**
 * Reads Xen's ACM security policy XML (`SecurityPolicyDefinition`, as in
 * Xen's `example.client_v1`). Refused, with a clear `invalid` error and
 * before anything is parsed: documents over 1 MiB, any DOCTYPE (so no
 * external entities, XXE, and no entity expansion, billion laughs), and
 * malformed XML (with its line). The result is validated like the native form.
 */
export function importAcmXml(xml: string): SecurityPolicy {
  checkPolicySize(xml, 'ACM XML');
  if (/<!DOCTYPE/i.test(xml) || /<!ENTITY/i.test(xml)) {
    throw errors.invalid('The ACM policy contains a DOCTYPE or entity declaration; DTDs and entities are refused (no external entities, no entity expansion)', { reason: 'dtd' });
  }
  const valid = XMLValidator.validate(xml);
  if (valid !== true) {
    throw errors.invalid(`The ACM policy is not well-formed XML: ${valid.err.msg} (line ${valid.err.line}, column ${valid.err.col})`, { line: valid.err.line, column: valid.err.col });
  }
  const parser = new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: '@',
    removeNSPrefix: true,
    processEntities: false,
    htmlEntities: false,
    parseTagValue: false,
    parseAttributeValue: false,
    ignoreDeclaration: true,
    ignorePiTags: true,
    isArray: (name) => listTags.has(name),
  });
  const root = obj((parser.parse(xml) as Record<string, unknown>).SecurityPolicyDefinition);
  if (Object.keys(root).length === 0) throw errors.invalid('The document is not an ACM policy: its root element must be <SecurityPolicyDefinition>');
  const header = obj(root.PolicyHeader);
  const ste = obj(root.SimpleTypeEnforcement);
  const cw = obj(root.ChineseWall);
  const template = obj(root.SecurityLabelTemplate);
  const subjects = obj(template.SubjectLabels);
  const objects = obj(template.ObjectLabels);
  const optional = (key: string, value: unknown) => (value === undefined ? {} : { [key]: text(value) });
  const doc: Record<string, unknown> = {
    name: text(header.PolicyName),
    ...optional('url', header.PolicyUrl),
    ...optional('date', header.Date),
    ...optional('version', header.Version),
    steTypes: types(ste.SimpleTypeEnforcementTypes),
    cwTypes: types(cw.ChineseWallTypes),
    conflictSets: asList(obj(cw.ConflictSets).Conflict).map((c) => ({ name: text(obj(c)['@name']), types: types(c) })),
    vmLabels: asList(subjects.VirtualMachineLabel).map((l) => ({
      name: text(obj(l).Name),
      steTypes: types(obj(l).SimpleTypeEnforcementTypes),
      cwTypes: types(obj(l).ChineseWallTypes),
    })),
    resourceLabels: asList(objects.ResourceLabel).map((l) => ({ name: text(obj(l).Name), steTypes: types(obj(l).SimpleTypeEnforcementTypes) })),
    ...optional('bootstrapLabel', subjects['@bootstrap']),
  };
  return validatePolicy(doc);
}

/** Writes a policy as Xen ACM XML; `importAcmXml(exportAcmXml(p))` gives `p` back. */
export function exportAcmXml(policy: SecurityPolicy): string {
  const typeList = (list: readonly string[]) => ({ Type: [...list] });
  const doc = {
    '?xml': { '@version': '1.0', '@encoding': 'UTF-8' },
    SecurityPolicyDefinition: {
      '@xmlns': 'http://www.ibm.com',
      PolicyHeader: {
        PolicyName: policy.name,
        ...(policy.url !== undefined ? { PolicyUrl: policy.url } : {}),
        ...(policy.date !== undefined ? { Date: policy.date } : {}),
        ...(policy.version !== undefined ? { Version: policy.version } : {}),
      },
      SimpleTypeEnforcement: { SimpleTypeEnforcementTypes: typeList(policy.steTypes) },
      ChineseWall: {
        '@priority': 'PrimaryPolicyComponent',
        ChineseWallTypes: typeList(policy.cwTypes),
        ConflictSets: { Conflict: policy.conflictSets.map((set) => ({ '@name': set.name, Type: [...set.types] })) },
      },
      SecurityLabelTemplate: {
        SubjectLabels: {
          ...(policy.bootstrapLabel !== undefined ? { '@bootstrap': policy.bootstrapLabel } : {}),
          VirtualMachineLabel: policy.vmLabels.map((l) => ({
            Name: l.name,
            SimpleTypeEnforcementTypes: typeList(l.steTypes),
            ChineseWallTypes: typeList(l.cwTypes),
          })),
        },
        ObjectLabels: { ResourceLabel: policy.resourceLabels.map((l) => ({ Name: l.name, SimpleTypeEnforcementTypes: typeList(l.steTypes) })) },
      },
    },
  };
  const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@', format: true, indentBy: '\t', suppressEmptyNode: true, processEntities: true });
  return builder.build(doc) as string;
}

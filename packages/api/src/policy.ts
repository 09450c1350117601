import { Type, type Static } from 'typebox';
import { StringEnum } from './common.js';

/**
 * Mandatory access control (sHype-style policies, Xen's ACM): the active
 * policy, security labels, and why a placement is allowed or not.
 */

/** `ACM:<policy>:<label>`. */
export const SecurityLabelRef = Type.String({
  minLength: 5,
  maxLength: 255,
  pattern: '^ACM:[^:\\s]+:[^\\s]+$',
  description: 'A security label of the active policy: ACM:<policy>:<label>',
});

export const policyFormats = ['xml', 'yaml', 'json'] as const;
export const PolicyFormat = StringEnum(policyFormats, { description: "xml: Xen's ACM security policy XML; yaml/json: Drover's native form" });
export type PolicyFormatName = (typeof policyFormats)[number];

export const PolicyLoad = Type.Object(
  {
    // Under the API's 1 MiB body limit with the JSON around it, so an over-long document is the schema's 400, not the body limit's 413.
    document: Type.String({ minLength: 1, maxLength: 1_000_000, description: 'The policy text: Xen ACM XML or the native YAML/JSON form (at most 1,000,000 characters and 1 MiB; DTDs, entities and YAML aliases refused)' }),
    format: Type.Optional(PolicyFormat),
  },
  { additionalProperties: false },
);
export type PolicyLoad = Static<typeof PolicyLoad>;

const TypeName = Type.String({ minLength: 1, maxLength: 200 });

/** The native form (YAML/JSON), also what the API shows. */
export const SecurityPolicyDocument = Type.Object(
  {
    name: TypeName,
    url: Type.Optional(Type.String()),
    date: Type.Optional(Type.String()),
    version: Type.Optional(Type.String()),
    steTypes: Type.Array(TypeName),
    cwTypes: Type.Array(TypeName),
    conflictSets: Type.Array(Type.Object({ name: TypeName, types: Type.Array(TypeName) })),
    vmLabels: Type.Array(Type.Object({ name: TypeName, steTypes: Type.Array(TypeName), cwTypes: Type.Array(TypeName) })),
    resourceLabels: Type.Array(Type.Object({ name: TypeName, steTypes: Type.Array(TypeName) })),
    bootstrapLabel: Type.Optional(TypeName),
  },
  { description: 'A security policy in the native form' },
);
export type SecurityPolicyDocument = Static<typeof SecurityPolicyDocument>;

export const PolicyInfo = Type.Object({
  name: Type.String(),
  sourceFormat: Type.String(),
  loadedBy: Type.String(),
  loadedAt: Type.String(),
  policy: SecurityPolicyDocument,
});
export type PolicyInfo = Static<typeof PolicyInfo>;

export const PolicyViolationInfo = Type.Object({
  kind: StringEnum(['unknown_label', 'chinese_wall', 'host_coverage'] as const),
  vm: Type.String(),
  host: Type.String(),
  otherVm: Type.Optional(Type.String()),
  message: Type.String(),
});
export type PolicyViolationInfo = Static<typeof PolicyViolationInfo>;

export const PolicyValidation = Type.Object({
  valid: Type.Boolean({ description: 'The document is a valid policy and what runs now obeys it (it could be loaded)' }),
  name: Type.Optional(Type.String()),
  problems: Type.Array(Type.Object({ path: Type.String(), message: Type.String() }), { description: 'What is wrong with the document itself' }),
  violations: Type.Array(PolicyViolationInfo, { description: 'What running VMs would violate' }),
  summary: Type.Optional(Type.Object({ steTypes: Type.Integer(), cwTypes: Type.Integer(), conflictSets: Type.Integer(), vmLabels: Type.Integer(), resourceLabels: Type.Integer() })),
});
export type PolicyValidation = Static<typeof PolicyValidation>;

export const labelledKinds = ['host', 'volume', 'image', 'network'] as const;
export const LabelledKind = StringEnum(labelledKinds);

export const SecurityLabelInfo = Type.Object({
  kind: LabelledKind,
  objectId: Type.String({ description: 'Host, image or network id; a volume is <hostId>/<pool>/<volume>' }),
  objectName: Type.Optional(Type.String()),
  label: Type.String(),
  updatedAt: Type.String(),
});
export type SecurityLabelInfo = Static<typeof SecurityLabelInfo>;

export const SecurityLabelSet = Type.Object({ label: Type.Union([SecurityLabelRef, Type.Null()], { description: 'The label, or null to remove it' }) }, { additionalProperties: false });
export type SecurityLabelSet = Static<typeof SecurityLabelSet>;

export const PolicyExplainQuery = Type.Object(
  { vm: Type.String({ minLength: 1, maxLength: 255 }), host: Type.String({ minLength: 1, maxLength: 255 }) },
  { additionalProperties: false },
);

export const PolicyExplanation = Type.Object({
  vm: Type.String(),
  host: Type.String(),
  allowed: Type.Boolean({ description: 'The policy lets the VM start on, migrate to or be restored on the host' }),
  policy: Type.Union([Type.String(), Type.Null()]),
  vmLabel: Type.Union([Type.String(), Type.Null()]),
  hostLabel: Type.Union([Type.String(), Type.Null()], { description: "The host's label, or the policy's bootstrap label" }),
  reasons: Type.Array(Type.String(), { description: 'Each rule that refuses it, or why it is allowed' }),
  conflicts: Type.Array(Type.Object({ vm: Type.String(), vmLabel: Type.String(), type: Type.String(), otherType: Type.String(), set: Type.String() })),
  missingSteTypes: Type.Array(Type.String()),
  filters: Type.Array(Type.Object({ filter: Type.String(), pass: Type.Boolean(), reason: Type.Optional(Type.String()) }), { description: "Every scheduler filter's verdict for the host (capacity included)" }),
});
export type PolicyExplanation = Static<typeof PolicyExplanation>;

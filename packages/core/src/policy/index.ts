export type { ConflictSet, PolicyProblem, ResolvedLabel, ResourceLabel, SecurityPolicy, VmLabel } from './types.js';
export { formatLabelRef, LABEL_PREFIX, parseLabelRef } from './label-ref.js';
export { POLICY_LIMITS, validatePolicy } from './validate.js';
export { CompiledPolicy, compilePolicy, policyDenied, type LabelConflict } from './compiled.js';
export { canRun, ChineseWallState, type ChineseWallConflict, type ChineseWallVerdict } from './chinese-wall.js';
export { checkCountedVms, hostMissingTypes, steShares, type CountedVm, type PolicyViolation, type SteVerdict } from './checks.js';
export { exportAcmXml, importAcmXml, MAX_POLICY_BYTES } from './acm-xml.js';
export { detectPolicyFormat, exportNativePolicy, parseNativePolicy, parsePolicy, type PolicyFormat } from './native.js';
export { XEN_EXAMPLE_POLICY_XML } from './xen-example.js';

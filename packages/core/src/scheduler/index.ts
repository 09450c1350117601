export type {
  FilterOutcome,
  FilterVerdict,
  HostCandidate,
  HostExplanation,
  HostState,
  HostVm,
  PlacementContext,
  PlacementExplanation,
  PlacementFilter,
  PlacementMode,
  PlacementOptions,
  PlacementRequest,
  PlacementResult,
  PlacementWeigher,
  ResourceAmounts,
} from './types.js';
export { DEFAULT_CPU_ALLOCATION_RATIO, freeMemoryMiBOf, freeVcpusOf, vcpuCapacityOf } from './capacity.js';
export { antiAffinityIndexOf, memoizeOnHostVms } from './host-index.js';
export {
  antiAffinityFilter,
  cpuModelFilter,
  defaultFilters,
  defineFilter,
  hostExcludeFilter,
  hostIncludeFilter,
  hostLabelsFilter,
  memoryFilter,
  stateFilter,
  vcpuFilter,
} from './filters.js';
export { defaultWeighers, defineWeigher, freeMemoryWeigher, freeVcpusWeigher, withWeight } from './weighers.js';
export { explainPlacement, placeVm } from './place.js';
export { SECURITY_LABEL_KEY, securityPolicyFilters } from './policy-filters.js';
export { ReservationLedger, type Reservation } from './ledger.js';
export { validateHostCandidates, validatePlacementRequest } from './validate.js';

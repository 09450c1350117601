export type {
  ConsolidationInput,
  ConsolidationPlan,
  EvacuationInput,
  EvacuationPlan,
  FirstFitPlan,
  PlanMove,
  PlannerInput,
  PlannerVm,
  RebalanceInput,
  RebalancePlan,
  Unplaceable,
} from './types.js';
export { planConsolidation, planFirstFitDecreasing } from './consolidate.js';
export { planEvacuation } from './evacuate.js';
export { planRebalance } from './rebalance.js';

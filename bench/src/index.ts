export { runAgentBench } from './agent-bench.js';
export { benchState, flatRuleset, runFirewallBench } from './firewall-bench.js';
export { runManagerBench } from './manager-bench.js';
export { runMigrationBench } from './migration-bench.js';
export { conflictSetFilter, generateCluster, runPlannerBench } from './planner-bench.js';
export { median, percentile, report, timed, now, type Comparison } from './stats.js';
export { runVmcastBench } from './vmcast-bench.js';
export { runScaleBench } from './scale-bench.js';

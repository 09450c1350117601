export { runAgentBench } from './agent-bench.js';
export { runManagerBench } from './manager-bench.js';
export { runMigrationBench } from './migration-bench.js';
export { median, percentile, report, timed, now, type Comparison } from './stats.js';

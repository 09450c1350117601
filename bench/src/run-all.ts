#!/usr/bin/env node
import { runAgentBench } from './agent-bench.js';
import { runFirewallBench } from './firewall-bench.js';
import { runLabBench } from './lab-bench.js';
import { runManagerBench } from './manager-bench.js';
import { runMigrationBench } from './migration-bench.js';
import { runPlannerBench } from './planner-bench.js';
import { runPolicyBench } from './policy-bench.js';
import { runScaleBench } from './scale-bench.js';
import { runWebBench } from './web-bench.js';
import { runVmcastBench } from './vmcast-bench.js';

/**
 * Runs every benchmark and prints each figure next to its baseline.
 *   node bench/dist/run-all.js            full runs; targets reported, never fail the run
 *   node bench/dist/run-all.js --smoke    one round each: proves the benchmarks still run
 */
const smoke = process.argv.includes('--smoke');
const benches: Array<[string, (o: { smoke: boolean }) => Promise<boolean>]> = [
  ['agent', runAgentBench],
  ['firewall', runFirewallBench],
  ['manager', runManagerBench],
  ['migration', runMigrationBench],
  ['planner', runPlannerBench],
  ['policy', runPolicyBench],
  ['web', runWebBench],
  ['vmcast', runVmcastBench],
  ['lab', runLabBench],
  ['scale', runScaleBench],
];
const only = process.argv.slice(2).filter((a) => !a.startsWith('--'));

let failed = false;
for (const [name, run] of benches) {
  if (only.length && !only.includes(name)) continue;
  try {
    const met = await run({ smoke });
    if (!met && !smoke) process.stdout.write(`(${name}: a target was not met on this run)\n`);
  } catch (error) {
    failed = true;
    process.stderr.write(`benchmark ${name} failed: ${(error as Error).stack ?? String(error)}\n`);
  }
}
process.exit(failed ? 1 : 0);

// Runs the suites one after the other and sums them into the closing line
// CI reads: "N passed, N failed". Exit code is non-zero on any failure.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const work = path.join(root, '.drover', 'test-run');
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });

// Appliances and the acceleration probe are cached across runs: they depend
// only on their inputs (content-hashed) and on the machine's boot.
const env = {
  ...process.env,
  DROVER_APPLIANCE_CACHE: process.env.DROVER_APPLIANCE_CACHE ?? path.join(root, '.drover', 'cache', 'appliances'),
  DROVER_PROBE_CACHE: process.env.DROVER_PROBE_CACHE ?? path.join(root, '.drover', 'cache', 'accel-probe.json'),
};

const args = process.argv.slice(2);
const results = [];

function suite(name, command, commandArgs, count) {
  const started = Date.now();
  process.stdout.write(`\n=== ${name}\n`);
  const run = spawnSync(command, commandArgs, { cwd: root, env, stdio: 'inherit' });
  const counted = count(run.status ?? 1);
  results.push({ name, ...counted, seconds: Math.round((Date.now() - started) / 1000) });
}

// The multi-host tests (several agents in network namespaces, migrations, a manager killed
// on purpose) run after the rest, one file at a time: they measure a guest's continuity and
// must not share the two cores with other files' guests.
// Besides the files named here, every `*.multihost.test.ts` belongs to this group.
const serialFiles = [
  'packages/manager/src/migration.test.ts',
  // Runs its agent in the root namespace and loads Drover's nft tables and bridges there.
  'packages/manager/src/labs/labs-networks.test.ts',
  // Its third manager deploys an imported package on the same lab networks (10.213.x, root namespace).
  'packages/manager/src/labs/labs-export-import.test.ts',
  'packages/manager/src/cluster-capacity.test.ts',
  'packages/web/test/migrate.browser.test.ts',
  'packages/web/test/rebalance.browser.test.ts',
  ...findFiles(['packages', 'appliances', 'bench'], (name) => name.endsWith('.multihost.test.ts')),
];

function findFiles(dirs, wanted) {
  const found = [];
  const walk = (dir) => {
    let entries;
    try {
      entries = readdirSync(path.join(root, dir), { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      if (entry.name === 'node_modules' || entry.name === 'dist' || entry.name.startsWith('.')) continue;
      const relative = `${dir}/${entry.name}`;
      if (entry.isDirectory()) walk(relative);
      else if (wanted(entry.name)) found.push(relative);
    }
  };
  for (const dir of dirs) walk(dir);
  return found.sort();
}

function vitestSuite(name, vitestArgs) {
  const json = path.join(work, `${name.replace(/\W+/g, '-')}.json`);
  suite(name, 'npx', ['vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${json}`, ...vitestArgs], (status) => countVitest(json, status));
}

function countVitest(vitestJson, status) {
  try {
    const report = JSON.parse(readFileSync(vitestJson, 'utf8'));
    let failed = report.numFailedTests;
    // A file that fails to load has no tests but is a failure all the same.
    for (const file of report.testResults ?? []) if (file.status === 'failed' && (file.assertionResults ?? []).length === 0) failed += 1;
    if (status !== 0 && failed === 0) failed = 1;
    return { passed: report.numPassedTests, failed };
  } catch {
    return { passed: 0, failed: 1 };
  }
}

if (args.length === 0) {
  vitestSuite('vitest', serialFiles.flatMap((f) => ['--exclude', f]));
  vitestSuite('vitest multi-host (serial)', ['--no-file-parallelism', ...serialFiles]);
} else {
  vitestSuite('vitest', args);
}

if (args.length === 0) {
  suite('eslint', 'npx', ['eslint', '.'], (status) => (status === 0 ? { passed: 1, failed: 0 } : { passed: 0, failed: 1 }));
  suite('bench smoke', 'node', ['bench/dist/run-all.js', '--smoke'], (status) => (status === 0 ? { passed: 1, failed: 0 } : { passed: 0, failed: 1 }));
}

process.stdout.write('\n');
for (const r of results) process.stdout.write(`${r.name}: ${r.passed} passed, ${r.failed} failed (${r.seconds} s)\n`);
const passed = results.reduce((n, r) => n + r.passed, 0);
const failed = results.reduce((n, r) => n + r.failed, 0);
process.stdout.write(`${passed} passed, ${failed} failed\n`);
process.exit(failed === 0 ? 0 : 1);

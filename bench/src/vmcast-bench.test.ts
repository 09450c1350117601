import { expect, it } from 'vitest';
import { runVmcastBench } from './vmcast-bench.js';

// The benchmark's smoke mode (32 MiB): proves it still runs.
it('vmcast benchmark runs in smoke mode', async () => {
  expect(await runVmcastBench({ smoke: true })).toBe(true);
}, 180_000);

import { expect, it } from 'vitest';
import { runPolicyBench } from './policy-bench.js';

// The benchmark's smoke mode (a few decisions each): proves it still runs.
it('policy benchmark runs in smoke mode', async () => {
  expect(await runPolicyBench({ smoke: true })).toBe(true);
});

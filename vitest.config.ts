import { defineConfig } from 'vitest/config';
import { defaultServerConditions } from 'vite';

// `drover-source` makes workspace packages resolve to their TypeScript sources,
// so tests never run against a stale dist/.
const conditions = ['drover-source', ...defaultServerConditions];

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions } },
  test: {
    include: ['packages/*/src/**/*.test.ts', 'appliances/src/**/*.test.ts', 'test/**/*.test.ts', 'bench/src/**/*.test.ts', 'packages/web/test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    maxWorkers: 2,
  },
});

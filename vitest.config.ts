import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['**/*.test.ts'],
    exclude: ['**/node_modules/**'],
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 120_000,
    // Integration tests start real servers; bound the whole file too.
    teardownTimeout: 20_000,
  },
});

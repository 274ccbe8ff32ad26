import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/interop/**', 'node_modules/**', 'dist/**'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // issue 21 item 6: a test in which a DSN breaks RFC 3464 fails (test/support/dsnGrammar.ts)
    setupFiles: ['test/support/dsnCheck.setup.ts'],
  },
});

import { defineConfig } from 'vitest/config';

/**
 * The interop suite (test/interop): nsd + unbound under a private root, Postfix receivers and a
 * Postfix DANE relay, our relay as a real process. Needs root (port 53/25 on 127.x, mount
 * namespaces) and the Debian packages of the README's test command. One fork, one file at a time:
 * the world binds fixed loopback addresses.
 */
export default defineConfig({
  test: {
    include: ['test/interop/**/*.test.ts'],
    exclude: ['node_modules/**', 'dist/**'],
    // issue 21 item 6: every DSN our relay makes in this world is checked too (support/postfix.ts parseMessage)
    setupFiles: ['test/support/dsnCheck.setup.ts'],
    testTimeout: 180_000,
    hookTimeout: 240_000,
    pool: 'forks',
    fileParallelism: false,
    maxWorkers: 1,
  },
});

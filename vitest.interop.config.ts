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
    testTimeout: 180_000,
    hookTimeout: 240_000,
    pool: 'forks',
    fileParallelism: false,
    maxWorkers: 1,
  },
});

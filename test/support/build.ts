/** Tests that run the relay as a real process need the compiled CLI; build it once if it is stale. */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// test/support under vitest; dist/test/support when a compiled benchmark (npm run bench:cluster) imports it
const up = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const ROOT = basename(up) === 'dist' ? dirname(up) : up;
export const CLI = join(ROOT, 'bin', 'dane-relay.js');

/**
 * The node flags the launcher gives the relay when it runs as a program (bin/dane-relay.js, line 2:
 * `//bin/true; exec node FLAGS "$0" "$@"`, which /bin/sh runs and node reads as a comment). A test
 * that spawns `node bin/dane-relay.js serve` passes them, so the relay under test runs as `npm start` and the
 * systemd unit run it.
 */
export function launcherNodeFlags(file = CLI): string[] {
  const [first, second] = readFileSync(file, 'utf8').split('\n', 2);
  const m = /^\/\/bin\/true; exec node((?: +-[^ "]+)*) "\$0" "\$@"$/.exec(second ?? '');
  if (first !== '#!/bin/sh' || !m) throw new Error(`${file}: not "#!/bin/sh" then '//bin/true; exec node [flags] "$0" "$@"': ${first} / ${second}`);
  return m[1]!.split(' ').filter(Boolean);
}

function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

export function ensureBuilt(): void {
  const out = join(ROOT, 'dist', 'src', 'cli.js');
  if (existsSync(out) && statSync(out).mtimeMs >= newest(join(ROOT, 'src'))) return;
  try {
    execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json')], { stdio: 'pipe' });
  } catch (e) {
    // Type errors still emit JavaScript; only a missing output is fatal here.
    if (!existsSync(out)) throw e;
  }
}

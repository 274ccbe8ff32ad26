/**
 * A private tmpfs of a given size, for tests that need a disk that really fills up (ENOSPC) or a
 * spool whose fsyncs cost nothing. Needs root and CAP_SYS_ADMIN; without them `skip` says why, and
 * so does the run's output (`without`: what the test does instead), so no test is skipped silently.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Tmpfs {
  /** mount point (empty when skipped) */
  mnt: string;
  /** why no tmpfs could be mounted; '' when mounted */
  skip: string;
  /** unmounts and removes the mount point; safe to call twice */
  unmount(): void;
}

/** `size` as mount(8) takes it: "1m", "64m". */
export function mountTmpfs(size: string, prefix: string, without: string): Tmpfs {
  const mnt = mkdtempSync(join(tmpdir(), prefix));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', mnt], { stdio: 'pipe' });
  } catch (e) {
    rmdirSync(mnt);
    const skip = `cannot mount a tmpfs (needs root): ${
      String((e as { stderr?: unknown }).stderr ?? (e as Error).message)
        .trim()
        .split('\n')[0]
    }`;
    console.warn(`${prefix.replace(/-$/, '')}: ${skip}; ${without}`);
    return { mnt: '', skip, unmount: () => undefined };
  }
  let mounted = true;
  return {
    mnt,
    skip: '',
    unmount() {
      if (!mounted) return;
      mounted = false;
      // lazy: a relay process killed a moment ago may still hold a file open
      execFileSync('umount', ['-l', mnt], { stdio: 'pipe' });
      rmdirSync(mnt);
    },
  };
}

/**
 * Throwaway local users for the shared-host tests (issue 23): created with useradd when the tests
 * run as root, removed again by `remove()` (call it in afterAll). Not root: `skipReason` says why
 * the tests that need one are skipped, and the test file prints it.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export interface LocalUser {
  name: string;
  uid: number;
  gid: number;
}

const isRoot = process.getuid?.() === 0;

function hasUseradd(): boolean {
  try {
    execFileSync('sh', ['-c', 'command -v useradd && command -v userdel'], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

/** Why throwaway users cannot be made here, or undefined when they can. */
export const skipReason: string | undefined = !isRoot
  ? `not running as root (uid ${process.getuid?.()}): throwaway users cannot be created`
  : !hasUseradd()
    ? 'useradd/userdel not found'
    : undefined;

const made: LocalUser[] = [];

/** A new system user with its own group, no home, no login shell. */
export function throwawayUser(tag: string): LocalUser {
  if (skipReason) throw new Error(skipReason);
  const name = `dr23-${tag}-${randomBytes(3).toString('hex')}`.slice(0, 31);
  execFileSync('useradd', ['--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', name], {
    stdio: 'pipe',
  });
  const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }).trim());
  const u = { name, uid, gid };
  made.push(u);
  return u;
}

/** Removes every user this process made (and their groups). The tests stop their own processes first, by pid. */
export function removeThrowawayUsers(): void {
  for (const u of made.splice(0)) {
    try {
      execFileSync('userdel', [u.name], { stdio: 'pipe' });
    } catch {
      /* already gone */
    }
    try {
      execFileSync('groupdel', [u.name], { stdio: 'pipe' });
    } catch {
      /* removed with the user */
    }
  }
}

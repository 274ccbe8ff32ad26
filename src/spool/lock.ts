/**
 * Exclusive lock on a spool directory, so two relays (or a relay and the queue
 * CLI) never work on one spool. Node has no flock(), so the lock is the file
 * `<dir>/lock` holding "<pid> <boot id> <process start time>".
 *
 * - Taking it is atomic: the content is written to a private temp file first and
 *   then hard-linked to `lock`, which fails with EEXIST if anyone holds it. (An
 *   `open(lock, 'wx')` followed by a write would leave a window where the lock
 *   exists but is empty, and an empty lock can be neither trusted nor broken.)
 * - A lock is stale when its pid is not alive, or is alive but is a different
 *   process: another boot (pids restart) or another start time (pid reused).
 *   Without those checks a relay killed by a reboot could find its old pid
 *   reused and refuse to start.
 * - Breaking a stale lock renames it aside and checks that what was moved is the
 *   stale lock that was judged, so two starters racing to break it cannot both
 *   win: the loser finds a live lock in its hands and puts it back.
 */
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { SpoolError, errno } from './errors.js';
import { nodeSpoolFs, type SpoolFs } from './fs.js';

export interface SpoolLock {
  readonly path: string;
  /** removes the lock file if it is still ours */
  release(): Promise<void>;
}

export interface LockOwner {
  pid: number;
  boot?: string;
  start?: string;
}

function bootId(): string | undefined {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Start time of `pid` in clock ticks since boot (Linux), to tell a reused pid apart. */
function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) is in parentheses and may contain spaces: count fields after the last ')'
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19]; // field 22 overall
  } catch {
    return undefined;
  }
}

export function parseLock(content: string): LockOwner | undefined {
  const [pid, boot, start] = content.trim().split(/\s+/);
  const n = Number(pid);
  if (!Number.isSafeInteger(n) || n <= 0) return undefined;
  return { pid: n, boot: boot && boot !== '-' ? boot : undefined, start: start && start !== '-' ? start : undefined };
}

export function isOwnerAlive(owner: LockOwner): boolean {
  try {
    process.kill(owner.pid, 0);
  } catch (e) {
    // EPERM: it exists but belongs to someone else, which is alive all the same
    if (errno(e) !== 'EPERM') return false;
  }
  const boot = bootId();
  if (owner.boot && boot && owner.boot !== boot) return false;
  const start = startTime(owner.pid);
  if (owner.start && start && owner.start !== start) return false;
  return true;
}

function myContent(): string {
  return `${process.pid} ${bootId() ?? '-'} ${startTime(process.pid) ?? '-'}\n`;
}

async function readOrUndefined(fs: SpoolFs, path: string): Promise<string | undefined> {
  try {
    return (await fs.readFile(path)).toString('utf8');
  } catch (e) {
    if (errno(e) === 'ENOENT') return undefined;
    // The spool fs never follows links: a link at the lock path was planted, not made by a relay.
    if (errno(e) === 'ELOOP') throw new SpoolError(`${path} is a symbolic link, not a spool lock; remove it (and find out who put it there)`, 'ELOOP');
    throw e;
  }
}

async function writeFileDurably(fs: SpoolFs, path: string, data: Buffer): Promise<void> {
  const h = await fs.open(path, 'wx');
  try {
    for (let off = 0; off < data.length; ) off += await fs.write(h, data, off, data.length - off, off);
    await fs.fsync(h);
  } finally {
    await fs.close(h);
  }
}

/**
 * Takes the lock of spool directory `dir` (which must exist). Rejects with a
 * SpoolError with code 'ELOCKED' (and `pid`) if a live process holds it.
 */
export async function acquireSpoolLock(dir: string, opts: { fs?: SpoolFs; log?: { warn(obj: object, msg: string): void } } = {}): Promise<SpoolLock> {
  const fs = opts.fs ?? nodeSpoolFs;
  const path = join(dir, 'lock');
  const content = myContent();
  const mine = join(dir, `lock.${process.pid}.${randomBytes(4).toString('hex')}`);
  try {
    await writeFileDurably(fs, mine, Buffer.from(content));
  } catch (e) {
    throw SpoolError.from('lock', e);
  }
  try {
    for (let attempt = 0; attempt < 10; attempt++) {
      try {
        await fs.link(mine, path);
        await fs.fsyncDir(dir);
        return {
          path,
          async release() {
            // Only remove what is ours: if it was (wrongly) broken and retaken, leave the new owner alone.
            if ((await readOrUndefined(fs, path)) === content) await fs.unlink(path);
          },
        };
      } catch (e) {
        if (errno(e) !== 'EEXIST') throw e;
      }
      const held = await readOrUndefined(fs, path);
      if (held === undefined) continue; // released meanwhile: try again
      const owner = parseLock(held);
      if (owner && isOwnerAlive(owner)) {
        throw Object.assign(new SpoolError(`spool ${dir} is locked by running process ${owner.pid}`, 'ELOCKED'), { pid: owner.pid });
      }
      const aside = join(dir, `lock.stale.${process.pid}.${randomBytes(4).toString('hex')}`);
      try {
        await fs.rename(path, aside);
      } catch (e) {
        if (errno(e) === 'ENOENT') continue; // someone else broke it first
        throw e;
      }
      const moved = await readOrUndefined(fs, aside);
      if (moved !== held) {
        // We moved a lock that was taken after we judged the old one stale: put it back.
        await fs.link(aside, path).catch(() => undefined);
      } else {
        opts.log?.warn({ lock: path, stale_pid: owner?.pid ?? null }, 'taking over stale spool lock');
      }
      await fs.unlink(aside).catch(() => undefined);
    }
    throw new SpoolError(`could not take spool lock ${path}: too much contention`, 'ELOCKED');
  } catch (e) {
    throw SpoolError.from('lock', e);
  } finally {
    await fs.unlink(mine).catch(() => undefined);
  }
}

/**
 * Files and directories the relay creates: owner-only (directories 0700, files 0600), the mode
 * set explicitly after creation so the umask neither widens nor narrows it, and never through a
 * symbolic link — O_NOFOLLOW on every open, O_EXCL on every create (open(2): with O_CREAT|O_EXCL
 * "symbolic links are not followed"), and a directory the relay creates a path through must be a
 * real directory (lstat), not a link a local user planted to make the relay write elsewhere.
 *
 * Every writer of relay state uses these (spool via spool/fs.ts, TLSRPT store/plans/outbox/
 * pending, `tlsrpt send --out`, `dkim keygen --out`, the readiness probe). Reasons for a mode
 * other than 0700/0600 are written where it is chosen; there is none today.
 */
import { constants, promises as fsp } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';

export const DIR_MODE = 0o700;
export const FILE_MODE = 0o600;

const { O_WRONLY, O_RDONLY, O_RDWR, O_CREAT, O_EXCL, O_APPEND, O_NOFOLLOW, O_DIRECTORY } = constants;
/** create a new file, never an existing one, never through a link */
export const CREATE_NEW = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW;
/** read a file that is not a link */
export const READ = O_RDONLY | O_NOFOLLOW;
/** open a directory (for fsync) that is not a link */
export const READ_DIR = O_RDONLY | O_DIRECTORY | O_NOFOLLOW;

export class UnsafePathError extends Error {
  constructor(
    readonly path: string,
    why: string,
    readonly code = 'EUNSAFE',
  ) {
    super(`${path}: ${why}`);
    this.name = 'UnsafePathError';
  }
}

const errno = (e: unknown) => (e as NodeJS.ErrnoException)?.code;

/**
 * mkdir -p where every directory created gets exactly 0700. Below `root` (the state directory the
 * path belongs to, when given) every existing component must be a real directory: a symbolic link
 * there is refused, whoever planted it. The configured directory itself, and anything above `root`,
 * may be an operator's link (a spool moved to another disk) if it leads to a directory.
 * Returns the directories it created, outermost first.
 */
export async function ensurePrivateDir(path: string, root?: string): Promise<string[]> {
  const abs = resolve(path);
  const top = root === undefined ? undefined : resolve(root);
  const missing: string[] = [];
  let cur = abs;
  let st = await lstatOrUndefined(cur);
  while (!st) {
    missing.unshift(cur);
    const up = dirname(cur);
    if (up === cur) throw new UnsafePathError(abs, 'no existing ancestor directory');
    cur = up;
    st = await lstatOrUndefined(cur);
  }
  if (top !== undefined && isWithin(cur, top)) {
    // every existing component strictly below the root, down to `cur`
    for (let d = cur; d !== top && isWithin(d, top); d = dirname(d)) {
      const s = d === cur ? st : await fsp.lstat(d);
      if (s.isSymbolicLink()) throw new UnsafePathError(d, `is a symbolic link inside the relay's state directory ${top}; refusing to create files through it`);
      if (!s.isDirectory()) throw new UnsafePathError(d, 'exists and is not a directory');
    }
  }
  if (st.isSymbolicLink()) {
    if (!(await fsp.stat(cur)).isDirectory()) throw new UnsafePathError(cur, 'is a symbolic link to something that is not a directory');
  } else if (!st.isDirectory()) throw new UnsafePathError(cur, 'exists and is not a directory');
  const created: string[] = [];
  for (const d of missing) {
    try {
      await fsp.mkdir(d, { mode: DIR_MODE });
    } catch (e) {
      if (errno(e) !== 'EEXIST') throw e;
      // Created meanwhile (another relay process, the CLI): it must be a real directory.
      if (!(await fsp.lstat(d)).isDirectory()) throw new UnsafePathError(d, 'appeared meanwhile and is not a directory');
      continue;
    }
    await fsp.chmod(d, DIR_MODE); // exact: the umask may have taken bits away (it cannot add any)
    created.push(d);
  }
  return created;
}

async function lstatOrUndefined(p: string) {
  try {
    return await fsp.lstat(p);
  } catch (e) {
    if (errno(e) === 'ENOENT') return undefined;
    throw e;
  }
}

/** `join(root, ...sub)` made private, no link anywhere below `root`; returns the path. */
export async function ensurePrivateSubdir(root: string, ...sub: string[]): Promise<string> {
  const d = join(root, ...sub);
  await ensurePrivateDir(d, root);
  return d;
}

/** Opens a new file 0600 (EEXIST if anything, a dangling link included, is at `path`). */
export async function createPrivateFile(path: string): Promise<fsp.FileHandle> {
  const h = await fsp.open(path, CREATE_NEW, FILE_MODE);
  try {
    await h.chmod(FILE_MODE);
  } catch (e) {
    await h.close();
    throw e;
  }
  return h;
}

/** Opens for reading and appending, creating it 0600 when missing; a link at `path` is refused (ELOOP). */
export async function openPrivateAppend(path: string): Promise<{ handle: fsp.FileHandle; created: boolean }> {
  for (let attempt = 0; ; attempt++) {
    let h: fsp.FileHandle;
    let created = false;
    try {
      h = await fsp.open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_APPEND, FILE_MODE);
      created = true;
    } catch (e) {
      if (errno(e) !== 'EEXIST') throw e;
      try {
        h = await fsp.open(path, O_RDWR | O_APPEND | O_NOFOLLOW);
      } catch (e2) {
        if (errno(e2) === 'ENOENT' && attempt < 3) continue; // removed meanwhile (retention): create it
        throw e2;
      }
    }
    try {
      if (created) await h.chmod(FILE_MODE);
      else if (!(await h.stat()).isFile()) throw new UnsafePathError(path, 'is not a regular file');
    } catch (e) {
      await h.close();
      throw e;
    }
    return { handle: h, created };
  }
}

/** fsync a directory so names created, renamed or removed in it survive a crash. */
export async function syncDir(dir: string): Promise<void> {
  const h = await fsp.open(dir, READ_DIR);
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/** Atomic replace with a private file: new 0600 temp (never through a link) → fsync → rename → fsync(dir). */
export async function writePrivateFileAtomic(path: string, data: string | Buffer): Promise<void> {
  const dir = dirname(path) || '.';
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const h = await createPrivateFile(tmp);
  try {
    try {
      await h.writeFile(data);
      await h.sync();
    } finally {
      await h.close();
    }
    await fsp.rename(tmp, path);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
  await syncDir(dir);
}

/** Writes a new private file (never replacing anything, never through a link), fsynced. */
export async function writePrivateFileNew(path: string, data: string | Buffer): Promise<void> {
  const h = await createPrivateFile(path);
  try {
    await h.writeFile(data);
    await h.sync();
  } finally {
    await h.close();
  }
}

/** readFile that refuses a symbolic link (ELOOP) instead of reading where it points. */
export async function readFileNoFollow(path: string): Promise<Buffer>;
export async function readFileNoFollow(path: string, encoding: 'utf8'): Promise<string>;
export async function readFileNoFollow(path: string, encoding?: 'utf8'): Promise<Buffer | string> {
  const h = await fsp.open(path, READ);
  try {
    const buf = await h.readFile();
    return encoding ? buf.toString(encoding) : buf;
  } finally {
    await h.close();
  }
}

/** True when `child` is `parent` or inside it (both absolute). */
export function isWithin(child: string, parent: string): boolean {
  const c = resolve(child);
  const p = resolve(parent);
  return c === p || c.startsWith(p.endsWith(sep) ? p : p + sep);
}

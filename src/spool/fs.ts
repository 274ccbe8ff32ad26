/**
 * The file-system seam. Every file-system call the spool makes goes through
 * `SpoolFs`, so tests can count fsyncs (group commit) and inject ENOSPC/EIO at
 * any single step without mocking the spool itself. The default implementation
 * works on plain file descriptors with the `node:fs` API: a `FileHandle` per
 * message costs measurably more (GC-tracked object, extra promise layers), and
 * the enqueue path and a 100,000-message recovery open a file per message.
 *
 * Which calls run on the thread pool and which on the event loop is measured, not
 * taken on faith (issue 17, BENCHMARKS.md "vs Postfix 3.7"). A pool call costs a
 * hand-off to a pool thread and a completion back: on a busy 2-core host that is two
 * context switches, more than the call itself when the call only touches the page
 * cache or one directory entry. So `write` (into the page cache), `close` and
 * `rename`, and the open/close around a directory fsync, are made synchronously:
 * tens of microseconds each (rename averaged 26 µs under the Postfix bench load), and
 * together 15-20 % of the relay's CPU per message at 2 KB. What can wait on the
 * device or the journal stays in the pool: `fsync`, `unlink` (frees the file's
 * blocks; 0.66 ms on average when tried synchronously under the same load), creating
 * `open` (no measurable gain synchronously), reads, readdir and link. The promise
 * interface is unchanged: a synchronous failure is a rejection with the same errno.
 */
import * as fs from 'node:fs';
import { CREATE_NEW, FILE_MODE, READ, READ_DIR, ensurePrivateDir } from '../files/private.js';

/** An open file. */
export interface SpoolHandle {
  readonly fd: number;
}

export interface SpoolFs {
  /** mkdir -p, 0700; below `root` no component may be a symbolic link (files/private.ts) */
  mkdir(path: string, root?: string): Promise<void>;
  /** 'wx': create, fail with EEXIST if anything is there (a link too), exactly 0600 once fsync or close returned; 'r': read only, ELOOP for a link */
  open(path: string, flags: 'wx' | 'r'): Promise<SpoolHandle>;
  /** one write(2) at `position`; may write fewer bytes than asked (callers loop) */
  write(h: SpoolHandle, buf: Buffer, offset: number, length: number, position: number): Promise<number>;
  /** one read(2) at `position`; returns bytes read, 0 at EOF */
  read(h: SpoolHandle, buf: Buffer, offset: number, length: number, position: number): Promise<number>;
  /** current file size (fstat) */
  size(h: SpoolHandle): Promise<number>;
  fsync(h: SpoolHandle): Promise<void>;
  close(h: SpoolHandle): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  /** hard link; fails with EEXIST if `to` exists (used where rename would overwrite); never follows `from` */
  link(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  readdir(path: string): Promise<string[]>;
  /** the whole file; ELOOP for a symbolic link */
  readFile(path: string): Promise<Buffer>;
  /** fsync of a directory, making the names created/removed/renamed in it durable */
  fsyncDir(path: string): Promise<void>;
}

/** Adapts a node-style callback call to a promise; errors keep their errno `code`. */
function call<T>(fn: (cb: (err: NodeJS.ErrnoException | null, value: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    fn((err, value) => (err ? reject(err) : resolve(value)));
  });
}

const handle = (fd: number): SpoolHandle => ({ fd });

/** Runs a synchronous call, its failure as a rejection (callers see the same errors as from `call`). */
function now<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (e) {
    return Promise.reject(e);
  }
}

/** A handle of ours: a created file's fchmod may still be running (see nodeSpoolFs). */
interface NodeHandle extends SpoolHandle {
  /** settles when the fchmod that makes the file exactly 0600 is done; rejects if it failed */
  readonly mode?: Promise<void>;
}

/** Waits for a created file's fchmod and returns its failure, if any (close must not race it on the fd). */
function modeFailure(mode: Promise<void>): Promise<unknown> {
  return mode.then(
    () => undefined,
    (e: unknown) => e,
  );
}

/** The process umask in the text of /proc/<pid>/status (`Umask:\t0022`, Linux 4.7 and later), or undefined. */
export function umaskOfStatus(status: string): number | undefined {
  const m = /^Umask:\s*([0-7]{1,4})\s*$/m.exec(status);
  return m ? Number.parseInt(m[1]!, 8) : undefined;
}

/**
 * Whether a file the spool creates needs the fchmod: true unless the umask is known to take no bit of
 * FILE_MODE (022, 027, 077: then O_CREAT's 0600 is already exact). Read once, at the first file created,
 * from /proc/self/status: `process.umask()` without an argument sets the umask to 0 and back
 * (DEP0139), a window in which a file another thread creates would be made wider. Where it cannot be
 * read, the fchmod stays. The relay never gives itself a umask that takes owner bits later (the control
 * socket's temporary 0177 around bind() takes none of 0600).
 */
let fchmodNeeded: boolean | undefined;
export function createNeedsFchmod(): boolean {
  if (fchmodNeeded === undefined) {
    let umask: number | undefined;
    try {
      umask = umaskOfStatus(fs.readFileSync('/proc/self/status', 'latin1'));
    } catch {
      umask = undefined;
    }
    fchmodNeeded = umask === undefined || (umask & FILE_MODE) !== 0;
  }
  return fchmodNeeded;
}

/**
 * Every file the spool creates is 0600 whatever the umask (fchmod after O_CREAT|O_EXCL), and no
 * open follows a symbolic link: a link planted in tmp/, msg/ or state/ (or at `lock`) makes the
 * operation fail instead of writing or reading elsewhere.
 *
 * Under the usual umasks (022, 027, 077) O_CREAT's 0600 is exact and no fchmod is made
 * (createNeedsFchmod). Under one that takes owner bits (0277), the fchmod runs while the caller writes
 * (for a message: while its body streams in) instead of one more thread-pool round trip before the
 * first write; fsync and close wait for it, so every file is exactly 0600, and durably so, before the
 * spool publishes it (each caller fsyncs and closes before its rename or link), and its failure fails
 * the fsync (or close). Until then the file is 0600 & ~umask: never wider than 0600, since O_CREAT's
 * mode only loses bits to the umask.
 */
export const nodeSpoolFs: SpoolFs = {
  async mkdir(path, root) {
    await ensurePrivateDir(path, root);
  },
  async open(path, flags) {
    if (flags === 'r') return handle(await call<number>((cb) => fs.open(path, READ, cb)));
    const fd = await call<number>((cb) => fs.open(path, CREATE_NEW, FILE_MODE, cb));
    if (!createNeedsFchmod()) return handle(fd);
    const mode = call<void>((cb) => fs.fchmod(fd, FILE_MODE, cb));
    mode.catch(() => undefined); // reported by fsync/close, which every caller reaches
    const h: NodeHandle = { fd, mode };
    return h;
  },
  write(h, buf, offset, length, position) {
    return now(() => fs.writeSync(h.fd, buf, offset, length, position));
  },
  read(h, buf, offset, length, position) {
    return call<number>((cb) => fs.read(h.fd, buf, offset, length, position, cb));
  },
  async size(h) {
    return (await call<fs.Stats>((cb) => fs.fstat(h.fd, cb))).size;
  },
  fsync(h) {
    const mode = (h as NodeHandle).mode;
    const sync = () => call<void>((cb) => fs.fsync(h.fd, cb));
    return mode === undefined ? sync() : mode.then(sync);
  },
  close(h) {
    const mode = (h as NodeHandle).mode;
    const close = () => now(() => fs.closeSync(h.fd));
    if (mode === undefined) return close();
    // never close the fd under a running fchmod (the number could be reused by then)
    return modeFailure(mode).then(async (failed) => {
      await close();
      if (failed) throw failed;
    });
  },
  rename: (from, to) => now(() => fs.renameSync(from, to)),
  // link(2) does not follow a link at `from` on Linux (it links the link itself)
  link: (from, to) => call<void>((cb) => fs.link(from, to, cb)),
  unlink: (path) => call<void>((cb) => fs.unlink(path, cb)),
  readdir: (path) => call<string[]>((cb) => fs.readdir(path, cb)),
  async readFile(path) {
    const fd = await call<number>((cb) => fs.open(path, READ, cb));
    try {
      return await call<Buffer>((cb) => fs.readFile(fd, cb));
    } finally {
      await call<void>((cb) => fs.close(fd, cb));
    }
  },
  async fsyncDir(path) {
    const fd = fs.openSync(path, READ_DIR);
    try {
      await call<void>((cb) => fs.fsync(fd, cb));
    } finally {
      fs.closeSync(fd);
    }
  },
};

/**
 * Start-up checks of what the relay trusts on disk (issue 23 §3), the way OpenSMTPD checks its
 * queue (it refuses) and Postfix its files (it warns):
 *
 * - State directories (queue_dir and everything under it, tlsrpt.dir, the control socket's
 *   directory): each directory must be owned by the relay's user and not writable by group or
 *   others, and nothing in the tree may be a symbolic link, FIFO or device — otherwise another
 *   local user could have planted messages (which the relay would deliver) or links (which would
 *   make it write elsewhere). The relay refuses to start and says how to fix it. A directory of
 *   ours that others can merely read, or could write but that is empty, is tightened to 0700
 *   (nothing can have been planted).
 * - Secrets (ingress.tls.key, ingress.users_file, tlsrpt.dkim.key_file): writable by group or
 *   others, or owned by another user than root or the relay's → refuse (whoever can write them
 *   can impersonate the relay or log in); readable by others → warning.
 * - The config, policy files, trust anchors, the TLS certificate: writable by others → warning.
 *
 * Files inside the state directories are not stat'ed one by one (a spool can hold 100,000): the
 * directories admit nobody else, and every open there refuses links (files/private.ts).
 */
import { promises as fsp, type Dirent, type Stats } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { userInfo } from 'node:os';
import { DIR_MODE, isWithin } from './private.js';

export interface FileProblem {
  /** refuse: the relay does not start; warn: logged at every start; fixed: changed, logged */
  level: 'refuse' | 'warn' | 'fixed';
  path: string;
  message: string;
}

/** The user the relay runs as (after any privilege drop). */
export interface Identity {
  uid: number;
  name: string;
}

export function currentIdentity(): Identity {
  const uid = process.geteuid?.() ?? 0;
  let name = String(uid);
  try {
    name = userInfo().username;
  } catch {
    /* no passwd entry (a container's random uid) */
  }
  return { uid, name };
}

const mode = (st: Stats) => `0${(st.mode & 0o7777).toString(8)}`;
const owner = (uid: number, me: Identity) => (uid === me.uid ? `${me.name} (uid ${uid})` : `uid ${uid}`);

/** Entries that carry nothing (the repository keeps an empty queue/ with this file). */
const INERT = new Set(['.gitkeep']);

/**
 * `fix`: true tightens our own directories (serve); false reports what it finds; 'dry-run' (`config
 * check`) reports what serve would find, a directory serve would tighten as `fixed`, changing nothing.
 */
export type FixMode = boolean | 'dry-run';

async function dirProblems(path: string, st: Stats, me: Identity, fix: FixMode): Promise<FileProblem[]> {
  if (st.uid !== me.uid) {
    return [
      {
        level: 'refuse',
        path,
        message: `${path} is owned by ${owner(st.uid, me)}, not by the relay's user ${me.name} (uid ${me.uid}): another user could change the relay's state. Fix: chown -R ${me.name} ${path} (or set \`user:\` to its owner)`,
      },
    ];
  }
  if (st.mode & 0o022) {
    const refusal: FileProblem = {
      level: 'refuse',
      path,
      message: `${path} is writable by ${st.mode & 0o002 ? 'all users' : 'its group'} (mode ${mode(st)}): another local user could plant or replace files the relay trusts. Fix: chmod 700 ${path} (and check what is inside)`,
    };
    if (!fix) return [refusal];
    if (fix === 'dry-run') {
      const empty = (await fsp.readdir(path).catch(() => ['?'])).every((n) => INERT.has(n));
      return [
        empty ? { level: 'fixed', path, message: `${path} is writable by others (mode ${mode(st)}) and empty: the relay sets it to 0700 at start` } : refusal,
      ];
    }
    // Closed first, then looked into: once it is 0700 nobody else can add anything, so an empty
    // directory (a fresh clone's queue/ under umask 002 or 000) holds nothing planted and can be used.
    await fsp.chmod(path, DIR_MODE);
    if ((await fsp.readdir(path)).every((n) => INERT.has(n)))
      return [{ level: 'fixed', path, message: `${path} was writable by others (mode ${mode(st)}) and empty; set to 0700` }];
    // Not empty: its mode goes back, so that the next start refuses too until someone has looked inside.
    await fsp.chmod(path, st.mode & 0o7777);
    return [refusal];
  }
  if (st.mode & 0o055 && fix) {
    if (fix === 'dry-run')
      return [{ level: 'fixed', path, message: `${path} is readable by other users (mode ${mode(st)}): the relay sets it to 0700 at start` }];
    await fsp.chmod(path, DIR_MODE);
    return [{ level: 'fixed', path, message: `${path} was readable by other users (mode ${mode(st)}); set to 0700` }];
  }
  return [];
}

/**
 * Checks the tree of an existing state directory. A missing root is fine (the relay creates it);
 * the root itself may be an operator's symbolic link (to another disk) when the link is owned by
 * root or the relay's user; below it, no link. `fix`: tighten our own directories that others can read.
 */
export async function checkStateTree(root: string, me: Identity, opts: { fix?: FixMode } = {}): Promise<FileProblem[]> {
  const fix = opts.fix ?? true;
  const top = resolve(root);
  let st: Stats;
  try {
    st = await fsp.lstat(top);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    return [{ level: 'refuse', path: top, message: `${top}: ${(e as Error).message}` }];
  }
  const out: FileProblem[] = [];
  if (st.isSymbolicLink()) {
    if (st.uid !== 0 && st.uid !== me.uid) {
      return [
        {
          level: 'refuse',
          path: top,
          message: `${top} is a symbolic link owned by uid ${st.uid}, who can point the relay's state anywhere. Fix: replace it with a directory or a link owned by root or ${me.name}`,
        },
      ];
    }
    st = await fsp.stat(top);
  }
  if (!st.isDirectory()) return [{ level: 'refuse', path: top, message: `${top} is not a directory` }];
  const walk = async (dir: string, dst: Stats): Promise<void> => {
    const problems = await dirProblems(dir, dst, me, fix);
    out.push(...problems);
    if (problems.some((p) => p.level === 'refuse')) return; // its contents cannot be trusted, nor need listing
    let entries: Dirent[];
    try {
      entries = await fsp.readdir(dir, { withFileTypes: true });
    } catch (e) {
      out.push({ level: 'refuse', path: dir, message: `${dir}: ${(e as Error).message}` });
      return;
    }
    for (const e of entries) {
      const p = join(dir, e.name);
      if (e.isSymbolicLink()) {
        out.push({
          level: 'refuse',
          path: p,
          message: `${p} is a symbolic link; the relay never writes or reads its state through links (did someone plant it?). Fix: remove it`,
        });
      } else if (e.isDirectory()) {
        await walk(p, await fsp.lstat(p));
      } else if (!e.isFile() && !e.isSocket()) {
        out.push({
          level: 'refuse',
          path: p,
          message: `${p} is not a regular file, directory or socket (a FIFO or device in the relay's state can block or redirect it). Fix: remove it`,
        });
      }
    }
  };
  await walk(top, st);
  return out;
}

/**
 * The directory of a socket or file the relay creates outside its state tree (control.socket):
 * owned by root or the relay's user, and not writable by others unless sticky (/tmp-like: nobody
 * can remove or rename another user's entry there).
 */
export async function checkParentDir(dir: string, me: Identity): Promise<FileProblem[]> {
  let st: Stats;
  try {
    st = await fsp.stat(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    return [{ level: 'refuse', path: dir, message: `${dir}: ${(e as Error).message}` }];
  }
  if (st.uid !== 0 && st.uid !== me.uid) {
    return [
      {
        level: 'refuse',
        path: dir,
        message: `${dir} is owned by uid ${st.uid}, who could replace what the relay creates there. Fix: use a directory owned by root or ${me.name}`,
      },
    ];
  }
  if (st.mode & 0o022 && !(st.mode & 0o1000)) {
    return [
      {
        level: 'refuse',
        path: dir,
        message: `${dir} is writable by others and not sticky (mode ${mode(st)}): another user could replace what the relay creates there. Fix: chmod go-w ${dir}`,
      },
    ];
  }
  return [];
}

export type FileRole = 'secret' | 'config';

const ROLE_WORDS: Record<FileRole, string> = {
  secret: 'whoever can write it can impersonate the relay or log in through it',
  config: 'whoever can write it can change what the relay does',
};

/**
 * A file the relay reads (followed through links: keys often live behind them). `secret`: private
 * keys and the users file — writable by others refuses, readable by others warns. `config`: the
 * config, policy files, trust anchors, certificates — writable by others warns.
 */
export async function checkReadFile(path: string, role: FileRole, me: Identity): Promise<FileProblem[]> {
  let st: Stats;
  try {
    st = await fsp.stat(path);
  } catch {
    return []; // missing or unreadable: the code that reads it reports that, with its own words
  }
  const level = role === 'secret' ? 'refuse' : 'warn';
  const fixHint = role === 'secret' ? `chown ${me.name} ${path} && chmod 600 ${path}` : `chmod go-w ${path}`;
  if (st.uid !== 0 && st.uid !== me.uid) {
    return [{ level, path, message: `${path} is owned by uid ${st.uid} (not root, not ${me.name}): ${ROLE_WORDS[role]}. Fix: ${fixHint}` }];
  }
  if (st.mode & 0o022) {
    return [
      {
        level,
        path,
        message: `${path} is writable by ${st.mode & 0o002 ? 'all users' : 'its group'} (mode ${mode(st)}): ${ROLE_WORDS[role]}. Fix: ${fixHint}`,
      },
    ];
  }
  if (role === 'secret' && st.mode & 0o044) {
    return [
      {
        level: 'warn',
        path,
        message: `${path} is readable by ${st.mode & 0o004 ? 'all users' : 'its group'} (mode ${mode(st)}); it holds a secret. Fix: chmod 600 ${path}`,
      },
    ];
  }
  return [];
}

export interface StartupPaths {
  queueDir: string;
  tlsrptDir?: string;
  controlSocket: string;
  configFile?: string;
  secrets: string[];
  configs: string[];
}

/** Every check above for one relay's configuration; the caller refuses, warns and logs. */
export async function startupFileProblems(p: StartupPaths, me: Identity, opts: { fix?: FixMode; stateTrees?: boolean } = {}): Promise<FileProblem[]> {
  const out: FileProblem[] = [];
  const trees = opts.stateTrees ?? true;
  if (trees) out.push(...(await checkStateTree(p.queueDir, me, { fix: opts.fix })));
  if (trees && p.tlsrptDir && !isWithin(p.tlsrptDir, p.queueDir)) out.push(...(await checkStateTree(p.tlsrptDir, me, { fix: opts.fix })));
  const sockDir = dirname(p.controlSocket);
  if (!isWithin(sockDir, p.queueDir)) out.push(...(await checkParentDir(sockDir, me)));
  for (const f of p.secrets) out.push(...(await checkReadFile(f, 'secret', me)));
  for (const f of [...(p.configFile ? [p.configFile] : []), ...p.configs]) out.push(...(await checkReadFile(f, 'config', me)));
  return out;
}

export class UnsafeStateError extends Error {
  constructor(readonly problems: FileProblem[]) {
    super(`refusing to start: files the relay trusts are not safe on a shared host\n${problems.map((p) => `  - ${p.message}`).join('\n')}`);
    this.name = 'UnsafeStateError';
  }
}

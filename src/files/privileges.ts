/**
 * Who the relay runs as (issue 23 §3). Started as root with `user:` in the config, the relay binds
 * its SMTP listeners (ports below 1024 need root), hands its state directories to that user, and
 * drops to it for good (initgroups, setgid, setuid; verified: setuid(0) must fail afterwards) before
 * it reads any message, opens the spool or talks to a peer — Postfix and OpenSMTPD do the same.
 * The `queue` and `tlsrpt` commands run as root drop to that user too, so whatever they create in
 * the spool stays the relay's.
 *
 * Without `user:` a root relay keeps starting (the README's first command runs as root on a fresh
 * machine, and existing root configs must keep working) but says loudly at every start why that is
 * risky; `allow_root: false` turns that into a refusal.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, promises as fsp } from 'node:fs';
import { dirname, join } from 'node:path';
import { ensurePrivateDir, isWithin, syncDir } from './private.js';

export interface RunAs {
  name: string;
  uid: number;
  gid: number;
}

export interface PrivilegePlan {
  /** root with `user:`: drop to this user after binding */
  drop?: RunAs;
  /** root without `user:`: what to say at start */
  rootWarning?: string;
}

export class PrivilegeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PrivilegeError';
  }
}

/** A passwd entry by name or number, through NSS (`getent`, so LDAP/SSSD users work), else /etc/passwd. */
export function lookupUser(user: string): RunAs | undefined {
  const parse = (line: string): RunAs | undefined => {
    const f = line.trim().split(':');
    if (f.length < 4 || !/^\d+$/.test(f[2]!) || !/^\d+$/.test(f[3]!)) return undefined;
    return { name: f[0]!, uid: Number(f[2]), gid: Number(f[3]) };
  };
  try {
    return parse(execFileSync('getent', ['passwd', user], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0]!);
  } catch (e) {
    if ((e as { status?: number }).status === 2) return undefined; // getent: no such key
  }
  try {
    for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const r = parse(line);
      if (r && (r.name === user || String(r.uid) === user)) return r;
    }
  } catch {
    /* no passwd file */
  }
  return undefined;
}

export const ROOT_WARNING =
  'RUNNING AS ROOT: the relay parses SMTP, TLS and DNS from the network and from local clients; a flaw in that code, ' +
  'or in a library it uses, would give an attacker the whole host. Set `user:` in the config to an unprivileged account ' +
  '(the relay binds its ports as root, then drops to it), or run it as that user (examples/dane-relay.service). ' +
  '`allow_root: false` makes the relay refuse to run as root.';

/** What to do about privileges, decided from the config before anything is bound or opened. */
export function privilegePlan(cfg: { user?: string | undefined; allow_root: boolean }, euid: number, lookup = lookupUser): PrivilegePlan {
  const want = cfg.user;
  if (euid === 0) {
    if (want === undefined) {
      if (!cfg.allow_root)
        throw new PrivilegeError(
          'refusing to run as root (allow_root: false): set `user:` to an unprivileged account the relay can drop to after binding, or start it as that user',
        );
      return { rootWarning: ROOT_WARNING };
    }
    const u = lookup(want);
    if (!u)
      throw new PrivilegeError(`user: ${want}: no such user (create it, e.g. useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin ${want})`);
    if (u.uid === 0) throw new PrivilegeError(`user: ${want} is uid 0; name an unprivileged account (or remove \`user:\` to run as root)`);
    return { drop: u };
  }
  if (want !== undefined) {
    const u = lookup(want);
    if (!u || u.uid !== euid)
      throw new PrivilegeError(
        `user: ${want} is set, but the relay runs as uid ${euid} and cannot switch users without root; start it as root (it drops to ${want}) or as ${want} itself`,
      );
  }
  return {};
}

/** A directory whose ownership follows `user:`; `known`: the only names the relay puts at its top. */
export interface StateDir {
  path: string;
  /** hand over what is inside too (the relay's own state); false: only create it when missing */
  walk: boolean;
  known?: readonly string[];
}

/** Names at the top of a spool and of a TLSRPT directory (anything else: the operator hands it over). */
export const SPOOL_NAMES = ['tmp', 'msg', 'state', 'corrupt', 'lock', 'control.sock', 'tlsrpt', 'mta-sts', '.gitkeep'] as const;
export const TLSRPT_NAMES = ['counts', 'plan', 'sent', 'pending', 'outbox'] as const;

/**
 * As root, before the drop: the state directories exist and belong to `u` — created 0700 for it
 * when missing (with any parents made on the way), and, when they exist and `walk`, everything in
 * them that root owns (left by an earlier root run) handed over. Links are never followed (lchown);
 * entries of a third user are left alone (the start-up checks refuse them with a clear message).
 * A directory holding names the relay never makes is not walked: a mistyped queue_dir (/var, /)
 * must not have root's files given away; the operator is told to chown it himself.
 */
export async function handOverState(dirs: StateDir[], u: RunAs): Promise<number> {
  let changed = 0;
  const give = async (p: string, uid: number) => {
    if (uid !== 0) return;
    await fsp.lchown(p, u.uid, u.gid);
    changed++;
  };
  const walk = async (dir: string): Promise<void> => {
    const st = await fsp.lstat(dir);
    if (!st.isDirectory()) return;
    await give(dir, st.uid);
    if (st.uid !== 0 && st.uid !== u.uid) return;
    for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else await give(p, (await fsp.lstat(p)).uid);
    }
  };
  for (const d of dirs) {
    const created = await ensurePrivateDir(d.path);
    for (const c of created) {
      await give(c, 0);
      await syncDir(dirname(c)); // durable now: the user may not be able to open the parent later
    }
    if (!d.walk) continue;
    const real = await fsp.realpath(d.path); // an operator's link to the spool: hand over its target
    const foreign = (await fsp.readdir(real)).filter((n) => d.known && !d.known.includes(n) && !/^lock\./.test(n));
    if (foreign.length) {
      throw new PrivilegeError(
        `${d.path} holds files the relay does not make (${foreign.slice(0, 5).join(', ')}${foreign.length > 5 ? ', …' : ''}); it will not hand such a directory to ${u.name}. Use a directory of its own, or: chown -R ${u.name}: ${d.path}`,
      );
    }
    await walk(real);
  }
  return changed;
}

/** The directories whose ownership follows `user:` (queue_dir, tlsrpt.dir, the control socket's directory). */
export function stateDirs(queueDir: string, tlsrptDir: string | undefined, controlSocket: string): StateDir[] {
  const out: StateDir[] = [{ path: queueDir, walk: true, known: SPOOL_NAMES }];
  if (tlsrptDir && !isWithin(tlsrptDir, queueDir)) out.push({ path: tlsrptDir, walk: true, known: TLSRPT_NAMES });
  const sock = dirname(controlSocket);
  // a shared directory (/run) is never walked: only created for the relay when missing
  if (!isWithin(sock, queueDir)) out.push({ path: sock, walk: false });
  return out;
}

/** Drops to `u` for good; throws unless the drop is complete and irreversible. */
export function dropPrivileges(u: RunAs): void {
  // initgroups(3): the user's supplementary groups, none of root's (missing from @types/node's Process)
  (process as unknown as { initgroups(user: string, extraGroup: number): void }).initgroups(u.name, u.gid);
  process.setgid!(u.gid);
  process.setuid!(u.uid);
  const ids = [process.getuid!(), process.geteuid!(), process.getgid!(), process.getegid!()];
  if (ids[0] !== u.uid || ids[1] !== u.uid || ids[2] !== u.gid || ids[3] !== u.gid) {
    throw new PrivilegeError(`privilege drop to ${u.name} incomplete: uid/euid/gid/egid are ${ids.join('/')}`);
  }
  let regained = false;
  try {
    process.setuid!(0);
    regained = true;
  } catch {
    /* EPERM: as it must be */
  }
  if (regained) throw new PrivilegeError(`privilege drop to ${u.name} is reversible (setuid(0) succeeded); refusing to run`);
}

/** For the CLI: as root with `user:` configured, become that user before touching the relay's files. */
export function dropForCli(cfg: { user?: string | undefined }): void {
  if ((process.geteuid?.() ?? -1) !== 0 || cfg.user === undefined) return;
  const u = lookupUser(cfg.user);
  if (!u || u.uid === 0) return; // serve reports the problem; the CLI just works as root then
  dropPrivileges(u);
}

/**
 * Where tests put files that a process of another user must reach: Postfix's daemons (the postfix
 * user), relays started as throwaway users. TMPDIR and the checkout may sit below a directory only
 * their owner can enter (a `mktemp -d` clone, /root, TMPDIR=$(mktemp -d): issue 20), so the suite
 * cannot take them for granted: `reachableTmpdir` picks a temp directory the others can traverse,
 * `publicRuntime` copies the built relay into one.
 */
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ROOT } from './build.js';

/** Who must get through: a user and group, or anyone (the "others" bits). */
export type Who = { uid: number; gid: number } | 'anyone';

/** Can `who` traverse `dir` and every directory above it, by the mode bits that apply to them? */
export function traversable(dir: string, who: Who): boolean {
  for (let d = dir; ; d = dirname(d)) {
    const st = statSync(d);
    const bit = who === 'anyone' ? 0o001 : st.uid === who.uid ? 0o100 : st.gid === who.gid ? 0o010 : 0o001;
    if (!(st.mode & bit)) return false;
    if (d === dirname(d)) return true;
  }
}

/**
 * TMPDIR when `who` can traverse it, else the system's /tmp (mode 1777); an error saying why when
 * neither will do. `plain`: the path must also be free of whitespace, commas and quotes (Postfix's
 * settings split on them).
 */
export function reachableTmpdir(who: Who, opts: { plain?: boolean } = {}): string {
  const tried: string[] = [];
  for (const d of [tmpdir(), '/tmp']) {
    if (opts.plain && /[\s,"'$]/.test(d)) {
      tried.push(`${d}: its characters cannot be written in the settings`);
      continue;
    }
    if (!traversable(d, who)) {
      tried.push(`${d}: ${who === 'anyone' ? 'other users' : `uid ${who.uid}`} cannot traverse it`);
      continue;
    }
    return d;
  }
  throw new Error(`no temp directory that ${who === 'anyone' ? 'other users' : `uid ${who.uid}`} can reach (${tried.join('; ')}): set TMPDIR to one`);
}

/** The packages the relay needs at run time (dependencies, optional ones that are installed), as installed directories. */
function runtimePackages(): string[] {
  const found = new Set<string>();
  const visit = (from: string, name: string, optional: boolean): void => {
    // Node's lookup: node_modules of the requiring package, then of each directory above it.
    for (let d = from; ; d = dirname(d)) {
      const p = join(d, 'node_modules', name);
      if (existsSync(join(p, 'package.json'))) {
        if (found.has(p)) return;
        found.add(p);
        const pkg = JSON.parse(readFileSync(join(p, 'package.json'), 'utf8')) as {
          dependencies?: Record<string, string>;
          optionalDependencies?: Record<string, string>;
        };
        for (const dep of Object.keys(pkg.dependencies ?? {})) visit(p, dep, false);
        for (const dep of Object.keys(pkg.optionalDependencies ?? {})) visit(p, dep, true);
        return;
      }
      if (d === ROOT || d === dirname(d)) break;
    }
    if (!optional) throw new Error(`runtime dependency ${name} (needed by ${from}) is not installed: npm ci`);
  };
  const root = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
  for (const dep of Object.keys(root.dependencies ?? {})) visit(ROOT, dep, false);
  return [...found];
}

/** Directories 0755, files 0644 (0755 where anyone may execute), below `dir`: readable by anyone, whatever the umask was. */
function openUp(dir: string): void {
  chmodSync(dir, 0o755);
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) openUp(p);
    else if (e.isFile()) chmodSync(p, statSync(p).mode & 0o111 ? 0o755 : 0o644);
  }
}

export interface PublicRuntime {
  /** bin/dane-relay.js of the copy */
  cli: string;
  /** removes the copy */
  remove(): void;
}

/**
 * The built relay (bin/, dist/, package.json and the installed runtime packages, no dev tools)
 * copied to a fresh directory any local user can read: a relay started as another user from the
 * checkout itself fails with "Cannot find module" when the checkout is private. `ensureBuilt()` first.
 */
export function publicRuntime(): PublicRuntime {
  const base = mkdtempSync(join(reachableTmpdir('anyone'), 'dane-relay-runtime-'));
  mkdirSync(join(base, 'dist'));
  for (const d of ['bin', join('dist', 'src')]) cpSync(join(ROOT, d), join(base, d), { recursive: true });
  cpSync(join(ROOT, 'package.json'), join(base, 'package.json'));
  const copied: string[] = [];
  for (const p of runtimePackages().sort((a, b) => a.length - b.length)) {
    if (copied.some((c) => p.startsWith(`${c}/node_modules/`))) continue; // came with its parent package
    copied.push(p);
    const rel = p.slice(ROOT.length + 1);
    mkdirSync(dirname(join(base, rel)), { recursive: true });
    cpSync(p, join(base, rel), { recursive: true });
  }
  openUp(base);
  return { cli: join(base, 'bin', 'dane-relay.js'), remove: () => rmSync(base, { recursive: true, force: true }) };
}

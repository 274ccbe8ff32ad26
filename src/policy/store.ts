/**
 * The policy files in force, and their reloading: on change (fs.watch on the file's
 * directory, so an editor's write-and-rename is seen), a periodic stat fallback (some
 * filesystems never report), and SIGHUP (via `reload()`). Each file is parsed whole;
 * a file with an error is rejected with its line numbers and the previous version
 * stays in force. The swap is one assignment: a lookup sees the old or the new tables,
 * never a mix.
 *
 * Half-written files: operators should replace a file by rename (write a temporary file,
 * fsync, rename over the old one), which is atomic. For editors and tools that write in
 * place, a change seen by fs.watch or the stat fallback is only read once two stats at least
 * `debounceMs` apart agree on inode, size and mtime; a file whose last non-empty line has no
 * trailing newline is rejected as incomplete (with its line number); a file that is also
 * changed while being read is not installed; and a file that had entries and now has none
 * is installed (that may be intended) but logged as an error.
 */
import { watch, readFileSync, statSync, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Logger } from 'pino';
import type { TlsLevel } from '../dane/levels.js';
import { parseDanefail, parseTlsPolicy, PolicyFileError, type ExceptionList, type PolicyTable } from './tables.js';
import { exceptionConflicts, mentionsDane, resolvePolicy, resolveTable, type ExceptionLevel, type PolicyInputs, type ResolvedPolicy } from './resolve.js';

export interface PolicyFile {
  /** absolute path */
  path: string;
  /** as written in the config (used in log lines and rule names) */
  label: string;
}

export interface PolicyStoreOptions {
  defaultLevel: TlsLevel;
  exceptionLevel: ExceptionLevel;
  tlsPolicy?: PolicyFile;
  danefail?: PolicyFile;
  log?: Logger;
  /** stat fallback period; 0 = none */
  statIntervalMs?: number;
  /** a changed file is read once two stats this far apart agree (default 100 ms) */
  debounceMs?: number;
  /**
   * Admission check for a candidate set of tables: the reason they cannot be in force, if any
   * (DANE-2: a DANE level under an untrusted trust-ad resolver). At start-up the store refuses to
   * load; on reload the file that brought the problem is rejected whole and the previous stays.
   */
  admit?: (candidate: PolicyInputs) => string | undefined;
}

export interface ReloadResult {
  /** files whose new version is now in force */
  loaded: string[];
  /** files rejected (previous version kept), with the error text */
  rejected: { file: string; error: string; problems?: { line: number; message: string }[] }[];
  /** files unchanged since the last load */
  unchanged: string[];
}

type Kind = 'tls_policy' | 'danefail';

export class PolicyStore {
  private inputs: PolicyInputs;
  private readonly texts = new Map<Kind, string>();
  private readonly stamps = new Map<Kind, string>();
  private watchers: FSWatcher[] = [];
  private timer?: NodeJS.Timeout;
  private debounce?: NodeJS.Timeout;
  private listeners: ((r: ReloadResult) => void)[] = [];
  private watching = false;
  /** the stats seen at the previous settle check */
  private settling?: string;

  /** Loads both files; throws PolicyFileError (or a read error) at start-up: there is no previous version. */
  constructor(private readonly opts: PolicyStoreOptions) {
    this.inputs = { defaultLevel: opts.defaultLevel, exceptionLevel: opts.exceptionLevel };
    for (const kind of this.kinds()) {
      const f = this.file(kind)!;
      const text = readFileSync(f.path, 'utf8');
      this.install(kind, text);
      this.stamps.set(kind, this.stamp(f.path));
    }
    const problem = opts.admit?.(this.inputs);
    if (problem) throw new Error(problem);
    this.warnConflicts('start');
  }

  private kinds(): Kind[] {
    return (['tls_policy', 'danefail'] as Kind[]).filter((k) => this.file(k));
  }

  private file(kind: Kind): PolicyFile | undefined {
    return kind === 'tls_policy' ? this.opts.tlsPolicy : this.opts.danefail;
  }

  /** Parse `text` as the new version of `kind`; throws (nothing installed) if it is incomplete, bad or not admitted. */
  private install(kind: Kind, text: string): void {
    const f = this.file(kind)!;
    requireFinalNewline(text, f.label);
    let next: PolicyInputs;
    if (kind === 'tls_policy') {
      const table: PolicyTable = parseTlsPolicy(text, f.label);
      next = { ...this.inputs, table };
    } else {
      const exceptions: ExceptionList = parseDanefail(text, f.label);
      next = { ...this.inputs, exceptions };
    }
    if (this.texts.has(kind)) {
      // Only on reload: at start-up the constructor checks the whole set once both files are read.
      const problem = this.opts.admit?.(next);
      if (problem) {
        const dane = [...(next.table?.entries.values() ?? [])].filter((e) => e.level === 'dane' || e.level === 'dane-only').map((e) => e.line);
        throw new PolicyFileError(f.label, [{ line: kind === 'tls_policy' && dane.length ? Math.min(...dane) : 1, message: `DANE entry refused: ${problem}` }]);
      }
    }
    const before = this.entriesOf(kind, this.inputs);
    const after = this.entriesOf(kind, next);
    if (this.texts.has(kind) && before > 0 && after === 0) {
      // Installed (an operator may empty a file on purpose) but said loudly: a truncated write looks the same.
      this.opts.log?.error(
        { file: f.label, had: before },
        `POLICY FILE EMPTIED: ${f.label} had ${before} entr${before === 1 ? 'y' : 'ies'} and now has none (if it was not meant, restore it; replace policy files by rename)`,
      );
    }
    this.inputs = next;
    this.texts.set(kind, text);
  }

  private entriesOf(kind: Kind, i: PolicyInputs): number {
    return kind === 'tls_policy' ? (i.table?.entries.size ?? 0) : (i.exceptions?.domains.size ?? 0);
  }

  /** An explicit dane-only entry beats a danefail listing (resolve.ts): say so once per load. */
  private warnConflicts(reason: string): void {
    for (const c of exceptionConflicts(this.inputs)) {
      this.opts.log?.warn(
        { domain: c.domain, danefail: c.exception, tls_policy: c.entry, reason },
        `policy conflict: ${c.domain} is on the exception list (${c.exception}) but ${c.entry} requires DANE; the explicit dane-only entry wins, the exception is not applied`,
      );
    }
  }

  private stamp(path: string): string {
    try {
      const s = statSync(path);
      return `${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch {
      return 'missing';
    }
  }

  /** The effective policy of a destination (see resolve.ts). */
  resolve(domain: string): ResolvedPolicy {
    return resolvePolicy(domain, this.inputs);
  }

  /** The policy a listed destination would have without its exception (what a probe must test). */
  resolveWithoutException(domain: string): ResolvedPolicy {
    return resolveTable(domain, this.inputs);
  }

  /** Destinations currently on the exception list whose level it actually lowers (an explicit dane-only entry wins). */
  exceptionDomains(): string[] {
    return [...(this.inputs.exceptions?.domains.keys() ?? [])].filter((d) => this.resolve(d).exception);
  }

  /** Some table entry asks for DANE (the DNSSEC self-test then matters even when the default does not). */
  mentionsDane(): boolean {
    return mentionsDane(this.inputs);
  }

  counts(): { tls_policy_entries: number; danefail_entries: number } {
    return { tls_policy_entries: this.inputs.table?.entries.size ?? 0, danefail_entries: this.inputs.exceptions?.domains.size ?? 0 };
  }

  /**
   * The configured levels changed on a config reload (issue 21): `delivery.tls_level`, `policy.exception_level`.
   * The caller has validated the new configuration (src/preflight.ts), resolver trust rules included. The reload
   * listeners run (a new DANE default starts the DNSSEC self-test).
   */
  setLevels(levels: { defaultLevel: TlsLevel; exceptionLevel: ExceptionLevel }): void {
    if (levels.defaultLevel === this.inputs.defaultLevel && levels.exceptionLevel === this.inputs.exceptionLevel) return;
    this.inputs = { ...this.inputs, ...levels };
    this.warnConflicts('config reload');
    for (const fn of this.listeners) fn({ loaded: [], rejected: [], unchanged: [] });
  }

  onReload(fn: (r: ReloadResult) => void): void {
    this.listeners.push(fn);
  }

  /** Re-read every file; install those that parse, keep the previous version of those that do not. */
  reload(reason = 'reload'): ReloadResult {
    const res: ReloadResult = { loaded: [], rejected: [], unchanged: [] };
    for (const kind of this.kinds()) {
      const f = this.file(kind)!;
      const before = this.stamp(f.path);
      this.stamps.set(kind, before);
      let text: string;
      try {
        text = readFileSync(f.path, 'utf8');
      } catch (e) {
        res.rejected.push({ file: f.label, error: `${f.label}: cannot read (${(e as Error).message}); previous version stays in force` });
        continue;
      }
      if (text === this.texts.get(kind)) {
        res.unchanged.push(f.label);
        continue;
      }
      if (this.stamp(f.path) !== before) {
        // Still being written: try again once it has settled (the stat fallback also sees it).
        res.rejected.push({
          file: f.label,
          error: `${f.label}: changed while being read (still being written?); previous version stays in force, will retry (replace policy files by rename)`,
        });
        this.stamps.set(kind, 'changing');
        if (this.watching) this.soon('changed while read');
        continue;
      }
      try {
        this.install(kind, text);
        res.loaded.push(f.label);
      } catch (e) {
        res.rejected.push(e instanceof PolicyFileError ? { file: f.label, error: e.message, problems: e.problems } : { file: f.label, error: String(e) });
      }
    }
    const log = this.opts.log;
    // issue 21 item 5: the problems as a structured field, the message one line
    for (const r of res.rejected)
      log?.error(
        { file: r.file, reason, ...(r.problems ? { problems: r.problems } : {}) },
        r.problems ? `${r.file}: rejected (previous version stays in force)` : r.error,
      );
    if (res.loaded.length) {
      log?.info({ files: res.loaded, reason, ...this.counts() }, 'policy reloaded');
      this.warnConflicts(reason);
    }
    for (const l of this.listeners) l(res);
    return res;
  }

  /** Start watching: fs.watch on each file's directory plus a stat fallback. */
  watch(): void {
    if (this.kinds().length === 0) return;
    this.watching = true;
    const dirs = new Map<string, Set<string>>();
    for (const kind of this.kinds()) {
      const p = this.file(kind)!.path;
      const set = dirs.get(dirname(p)) ?? new Set<string>();
      set.add(basename(p));
      dirs.set(dirname(p), set);
    }
    for (const [dir, names] of dirs) {
      try {
        const w = watch(dir, { persistent: false }, (_ev, name) => {
          if (name === null || names.has(String(name))) this.soon('fs.watch');
        });
        w.on('error', () => undefined); // the stat fallback still runs
        this.watchers.push(w);
      } catch (e) {
        this.opts.log?.warn({ dir, err: (e as Error).message }, 'policy: fs.watch unavailable, relying on periodic stat');
      }
    }
    const every = this.opts.statIntervalMs ?? 5000;
    if (every > 0) {
      this.timer = setInterval(() => {
        const changed = this.kinds().some((k) => this.stamp(this.file(k)!.path) !== this.stamps.get(k));
        // A settle already under way is not restarted (it would never finish with a short period).
        if (changed && !this.debounce) this.soon('stat');
      }, every);
      this.timer.unref();
    }
  }

  /**
   * Editors write in several steps: wait for the burst to end, then read only once two stats
   * `debounceMs` apart agree on every file's inode, size and mtime.
   */
  private soon(reason: string): void {
    this.settling = undefined;
    this.later(reason);
  }

  private later(reason: string): void {
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      const now = this.kinds()
        .map((k) => this.stamp(this.file(k)!.path))
        .join('|');
      if (now !== this.settling) {
        this.settling = now;
        this.later(reason);
        return;
      }
      this.settling = undefined;
      this.reload(reason);
    }, this.opts.debounceMs ?? 100);
    this.debounce.unref();
  }

  close(): void {
    this.watching = false;
    for (const w of this.watchers) w.close();
    this.watchers = [];
    if (this.timer) clearInterval(this.timer);
    if (this.debounce) clearTimeout(this.debounce);
    this.timer = undefined;
  }
}

/**
 * A file whose last non-empty line has no trailing newline is taken to be cut short (a write in
 * progress, or an interrupted copy): rejected whole, naming that line.
 */
export function requireFinalNewline(text: string, source: string): void {
  if (text === '' || text.endsWith('\n')) return;
  const lines = text.split('\n');
  const last = lines[lines.length - 1]!;
  if (last.trim() === '') return;
  throw new PolicyFileError(source, [
    {
      line: lines.length,
      message: `no newline at the end of the last line ("${last.length > 40 ? `${last.slice(0, 40)}…` : last}"): the file looks incomplete (still being written?); end every line with a newline and replace the file by rename`,
    },
  ]);
}

/**
 * The policy files in force, and their reloading: on change (fs.watch on the file's
 * directory, so an editor's write-and-rename is seen), a periodic stat fallback (some
 * filesystems never report), and SIGHUP (via `reload()`). Each file is parsed whole;
 * a file with an error is rejected with its line numbers and the previous version
 * stays in force. The swap is one assignment: a lookup sees the old or the new tables,
 * never a mix.
 */
import { watch, readFileSync, statSync, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Logger } from 'pino';
import type { TlsLevel } from '../config/schema.js';
import { parseDanefail, parseTlsPolicy, PolicyFileError, type ExceptionList, type PolicyTable } from './tables.js';
import { resolvePolicy, resolveTable, type PolicyInputs, type ResolvedPolicy } from './resolve.js';

export interface PolicyFile {
  /** absolute path */
  path: string;
  /** as written in the config (used in log lines and rule names) */
  label: string;
}

export interface PolicyStoreOptions {
  defaultLevel: TlsLevel;
  exceptionLevel: TlsLevel;
  tlsPolicy?: PolicyFile;
  danefail?: PolicyFile;
  log?: Logger;
  /** stat fallback period; 0 = none */
  statIntervalMs?: number;
}

export interface ReloadResult {
  /** files whose new version is now in force */
  loaded: string[];
  /** files rejected (previous version kept), with the error text */
  rejected: { file: string; error: string }[];
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

  /** Loads both files; throws PolicyFileError (or a read error) at start-up: there is no previous version. */
  constructor(private readonly opts: PolicyStoreOptions) {
    this.inputs = { defaultLevel: opts.defaultLevel, exceptionLevel: opts.exceptionLevel };
    for (const kind of this.kinds()) {
      const f = this.file(kind)!;
      const text = readFileSync(f.path, 'utf8');
      this.install(kind, text);
      this.stamps.set(kind, this.stamp(f.path));
    }
  }

  private kinds(): Kind[] {
    return (['tls_policy', 'danefail'] as Kind[]).filter((k) => this.file(k));
  }

  private file(kind: Kind): PolicyFile | undefined {
    return kind === 'tls_policy' ? this.opts.tlsPolicy : this.opts.danefail;
  }

  private install(kind: Kind, text: string): void {
    const f = this.file(kind)!;
    if (kind === 'tls_policy') {
      const table: PolicyTable = parseTlsPolicy(text, f.label);
      this.inputs = { ...this.inputs, table };
    } else {
      const exceptions: ExceptionList = parseDanefail(text, f.label);
      this.inputs = { ...this.inputs, exceptions };
    }
    this.texts.set(kind, text);
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

  /** Destinations currently on the exception list. */
  exceptionDomains(): string[] {
    return [...(this.inputs.exceptions?.domains.keys() ?? [])];
  }

  /** Some table entry asks for DANE (the DNSSEC self-test then matters even when the default does not). */
  mentionsDane(): boolean {
    return [...(this.inputs.table?.entries.values() ?? [])].some((e) => e.level === 'dane' || e.level === 'dane-only');
  }

  counts(): { tls_policy_entries: number; danefail_entries: number } {
    return { tls_policy_entries: this.inputs.table?.entries.size ?? 0, danefail_entries: this.inputs.exceptions?.domains.size ?? 0 };
  }

  onReload(fn: (r: ReloadResult) => void): void {
    this.listeners.push(fn);
  }

  /** Re-read every file; install those that parse, keep the previous version of those that do not. */
  reload(reason = 'reload'): ReloadResult {
    const res: ReloadResult = { loaded: [], rejected: [], unchanged: [] };
    for (const kind of this.kinds()) {
      const f = this.file(kind)!;
      this.stamps.set(kind, this.stamp(f.path));
      let text: string;
      try {
        text = readFileSync(f.path, 'utf8');
      } catch (e) {
        res.rejected.push({ file: f.label, error: `${f.label}: cannot read (${(e as Error).message}); previous version stays in force` });
        continue;
      }
      if (text === this.texts.get(kind)) { res.unchanged.push(f.label); continue; }
      try {
        this.install(kind, text);
        res.loaded.push(f.label);
      } catch (e) {
        res.rejected.push({ file: f.label, error: e instanceof PolicyFileError ? e.message : String(e) });
      }
    }
    const log = this.opts.log;
    for (const r of res.rejected) log?.error({ file: r.file, reason }, r.error);
    if (res.loaded.length) log?.info({ files: res.loaded, reason, ...this.counts() }, 'policy reloaded');
    for (const l of this.listeners) l(res);
    return res;
  }

  /** Start watching: fs.watch on each file's directory plus a stat fallback. */
  watch(): void {
    if (this.kinds().length === 0) return;
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
        if (changed) this.soon('stat');
      }, every);
      this.timer.unref();
    }
  }

  /** Editors write in several steps: wait for the burst to end before reading. */
  private soon(reason: string): void {
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      this.reload(reason);
    }, 100);
    this.debounce.unref();
  }

  close(): void {
    for (const w of this.watchers) w.close();
    this.watchers = [];
    if (this.timer) clearInterval(this.timer);
    if (this.debounce) clearTimeout(this.debounce);
    this.timer = undefined;
  }
}

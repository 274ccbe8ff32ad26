/**
 * Durable TLSRPT counters. Recording is an in-memory increment; at most once per second the
 * increments are appended as one JSON line per (day, report domain, policy) to
 * `<dir>/counts/<YYYY-MM-DD>.jsonl` and fsynced, so a crash loses at most the last second.
 * Files are append-only deltas: a torn last line (crash mid-write) is skipped on reading,
 * every complete line counts. Days older than the retention window are deleted.
 *
 * Readers (the CLI beside a running relay) only read the files: they see everything up to
 * the relay's last flush.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { ensurePrivateDir, ensurePrivateSubdir, openPrivateAppend, readFileNoFollow, syncDir } from '../../files/private.js';
import { detailFromKey, isDay, nextDay, policyFromKey, type PolicyCounts } from './report.js';

export interface StoreLog {
  warn(obj: object, msg: string): void;
}

interface Pending {
  day: string;
  domain: string;
  policy: string;
  s: number;
  f: number;
  x: Map<string, number>;
}

/** Counts being summed, keyed by (day, report domain, policy key); shared with the database store (pgStore.ts). */
export type PendingCounts = Map<string, Pending>;

/** Adds successes, failures and failure-detail counts to one (day, domain, policy) entry. */
export function addPending(m: PendingCounts, day: string, domain: string, policy: string, s: number, f: number, x: Iterable<[string, number]>): void {
  const k = `${day}\0${domain}\0${policy}`;
  let p = m.get(k);
  if (!p) m.set(k, (p = { day, domain, policy, s: 0, f: 0, x: new Map() }));
  p.s += s;
  p.f += f;
  for (const [d, n] of x) p.x.set(d, (p.x.get(d) ?? 0) + n);
}

/**
 * Summed counts → PolicyCounts per report domain (what report.ts builds from). An entry whose policy or
 * detail key does not parse (damage) is reported through `bad` and skipped.
 */
export function countsFromTotals(totals: PendingCounts, bad?: (err: string, domain: string) => void): Map<string, PolicyCounts[]> {
  const out = new Map<string, PolicyCounts[]>();
  for (const p of totals.values()) {
    let pc: PolicyCounts;
    try {
      pc = {
        policy: policyFromKey(p.policy),
        success: p.s,
        failure: p.f,
        details: [...p.x.entries()].map(([dk, n]) => ({ detail: detailFromKey(dk), count: n })),
      };
    } catch (e) {
      bad?.((e as Error).message, p.domain);
      continue;
    }
    out.set(p.domain, [...(out.get(p.domain) ?? []), pc]);
  }
  return out;
}

export const FLUSH_INTERVAL_MS = 1000;

/** What the recorder and the daily job need of a counts store: this file store, or the database's (pgStore.ts). */
export type CountStore = Pick<TlsrptStore, 'add' | 'flush' | 'days' | 'read' | 'prune' | 'close'>;

/** Atomic replace with a private file (0600, never through a link): files/private.ts. */
export { writePrivateFileAtomic as writeFileDurable } from '../../files/private.js';

/**
 * The counting half both stores share: `add` is an in-memory increment, a flush is armed for within a
 * second, flushes are serialised, and what a failed write did not store is kept for the next one (`keep`).
 */
export abstract class BufferedCounts {
  protected pending: PendingCounts = new Map();
  private timer?: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();
  protected closed = false;

  constructor(protected readonly log?: StoreLog) {}

  /** Hot path: one session outcome. No I/O; a flush is armed for within a second. */
  add(day: string, domain: string, policy: string, ok: boolean, detail?: string): void {
    addPending(this.pending, day, domain, policy, ok ? 1 : 0, ok ? 0 : 1, !ok && detail !== undefined ? [[detail, 1]] : []);
    if (this.closed) {
      // A session that ended after close() (a delivery finishing during shutdown): written now, not left in memory.
      this.flush().catch((e: unknown) => this.log?.warn({ err: (e as Error).message }, 'tlsrpt: could not write counts after close'));
      return;
    }
    this.arm();
  }

  private arm(): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush().catch(() => undefined);
    }, FLUSH_INTERVAL_MS);
    this.timer.unref?.();
  }

  /** Writes everything pending; concurrent calls are serialised. Never loses counts on error: they are retried. */
  flush(): Promise<void> {
    const next = this.flushing.then(() => this.flushNow());
    this.flushing = next.catch(() => undefined);
    return next;
  }

  private async flushNow(): Promise<void> {
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    try {
      await this.write(batch);
    } catch (e) {
      this.arm();
      throw e;
    }
  }

  /** Stores a batch; whatever it could not store it hands to `keep` before it throws. */
  protected abstract write(batch: PendingCounts): Promise<void>;

  protected keep(p: Pending): void {
    addPending(this.pending, p.day, p.domain, p.policy, p.s, p.f, p.x);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    await this.flush();
  }
}

export class TlsrptStore extends BufferedCounts {
  private readonly countsDir: string;

  private constructor(
    readonly dir: string,
    log?: StoreLog,
  ) {
    super(log);
    this.countsDir = join(dir, 'counts');
  }

  static async open(dir: string, opts: { log?: StoreLog; readOnly?: boolean } = {}): Promise<TlsrptStore> {
    const s = new TlsrptStore(dir, opts.log);
    if (!opts.readOnly) {
      // 0700, no link below the TLSRPT directory (files/private.ts): counts are the relay's state.
      await ensurePrivateDir(dir);
      await ensurePrivateSubdir(dir, 'counts');
    }
    return s;
  }

  /** Appends one JSON line per (domain, policy) to each day's file and fsyncs it. */
  protected async write(batch: PendingCounts): Promise<void> {
    const byDay = new Map<string, Pending[]>();
    for (const p of batch.values()) byDay.set(p.day, [...(byDay.get(p.day) ?? []), p]);
    let failure: unknown;
    for (const [day, list] of byDay) {
      const lines = list.map((p) => JSON.stringify({ d: p.domain, p: p.policy, s: p.s, f: p.f, x: Object.fromEntries(p.x) })).join('\n') + '\n';
      const file = join(this.countsDir, `${day}.jsonl`);
      try {
        const { handle: h, created } = await openPrivateAppend(file);
        try {
          // A previous torn write may have left a partial line: start ours on a fresh line.
          const st = await h.stat();
          const prefix = st.size > 0 && !(await endsWithNewline(h, st.size)) ? '\n' : '';
          await h.write(prefix + lines);
          await h.sync();
        } finally {
          await h.close();
        }
        if (created) await syncDir(this.countsDir);
      } catch (e) {
        // Keep the counts for the next flush: a full disk must not lose statistics silently.
        for (const p of list) this.keep(p);
        this.log?.warn({ err: (e as Error).message, file }, 'tlsrpt: could not write counts; will retry');
        failure = e;
      }
    }
    if (failure) throw failure;
  }

  /** Days that have counts on disk, oldest first. */
  async days(): Promise<string[]> {
    let names: string[];
    try {
      names = await fsp.readdir(this.countsDir);
    } catch {
      return [];
    }
    return names
      .map((n) => n.replace(/\.jsonl$/, ''))
      .filter(isDay)
      .sort();
  }

  /** A day's counts per report domain (plus what is still pending in this process). */
  async read(day: string): Promise<Map<string, PolicyCounts[]>> {
    if (!isDay(day)) throw new Error(`not a day (YYYY-MM-DD): ${day}`);
    const acc: PendingCounts = new Map();
    const addTo = (domain: string, policy: string, sc: number, f: number, x: Iterable<[string, number]>) => addPending(acc, day, domain, policy, sc, f, x);
    let text = '';
    try {
      text = await readFileNoFollow(join(this.countsDir, `${day}.jsonl`), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    let bad = 0;
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const j = JSON.parse(line) as { d: string; p: string; s: number; f: number; x: Record<string, number> };
        policyFromKey(j.p);
        for (const k of Object.keys(j.x)) detailFromKey(k);
        if (typeof j.d !== 'string' || ![j.s, j.f, ...Object.values(j.x)].every((n) => Number.isSafeInteger(n) && n >= 0)) throw new Error('bad counts');
        addTo(j.d, j.p, j.s, j.f, Object.entries(j.x));
      } catch {
        bad++; // a torn last line after a crash, or damage: skipped, everything else counts
      }
    }
    if (bad) this.log?.warn({ day, skipped_lines: bad }, 'tlsrpt: skipped unreadable count lines');
    for (const p of this.pending.values()) if (p.day === day) addTo(p.domain, p.policy, p.s, p.f, p.x);
    return countsFromTotals(acc);
  }

  /** Deletes count files of days before `today - retentionDays`. */
  async prune(today: string, retentionDays: number): Promise<string[]> {
    const oldest = nextDay(today, -retentionDays);
    const removed: string[] = [];
    for (const day of await this.days()) {
      if (day < oldest) {
        await fsp.rm(join(this.countsDir, `${day}.jsonl`), { force: true });
        removed.push(day);
      }
    }
    return removed;
  }
}

async function endsWithNewline(h: fsp.FileHandle, size: number): Promise<boolean> {
  const b = Buffer.alloc(1);
  await h.read(b, 0, 1, size - 1);
  return b[0] === 0x0a;
}

/**
 * MTA-STS policy state for delivery (RFC 8461 §3.3, §5.1, §10.2; digest STS-16, STS-30…34): which
 * policy applies to a Policy Domain now, fetching when the TXT id says the cached one is stale, never
 * letting a failure or a missing record replace a valid policy, backing off after a failed fetch, and
 * refreshing used policies before they expire.
 *
 * The durable copy (store.ts) is the truth; memory holds each entry with the mtime it was read at, and
 * every lookup stats the file, so `dane-relay mta-sts refresh|purge` beside a running relay takes
 * effect at its next delivery to that domain.
 */
import type { Resolver } from '../dns/types.js';
import { discoverSts, type Discovery } from './discover.js';
import type { FetchFailureType, FetchResult } from './fetch.js';
import { fileNameOf, type StsPolicyStore, type CachedPolicy } from './store.js';

export interface StsLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** STS-16: after a failed fetch, wait at least this long before fetching under the same id again. */
export const FETCH_BACKOFF_MS = 5 * 60_000;
/** STS-32: a used policy is refreshed about daily (or at half its max_age, if shorter), with ±10 % jitter. */
export const REFRESH_INTERVAL_MS = 24 * 3600_000;
/** STS-32 (derived): only domains a delivery looked at within this window are refreshed proactively. */
export const RECENTLY_USED_MS = 30 * 24 * 3600_000;
/** lastUsed is written back to disk at most this often per domain. */
export const LAST_USED_WRITE_MS = 3600_000;

export interface StsLookup {
  /** the policy in force (unexpired, or fetched by this very lookup); mode `none` included */
  applied?: CachedPolicy;
  discovery: Discovery;
  /**
   * `fetched`: a new policy was fetched and stored; `failed`: a fetch was made and failed (`failure`);
   * `backoff`: a fetch was due but a recent one under the same id failed (`failure` is that one);
   * `cached`: no fetch was needed.
   */
  fetch: 'fetched' | 'failed' | 'backoff' | 'cached';
  failure?: { resultType: FetchFailureType; reason: string };
}

export interface StsPoliciesOptions {
  store: StsPolicyStore;
  resolver: Resolver;
  fetch: (domain: string) => Promise<FetchResult>;
  now?: () => number;
  random?: () => number;
  log?: StsLog;
  /**
   * A proactive refresh by `maintain()` failed while `kept` stays in force (STS-32, STS-34): the relay counts
   * it in TLSRPT (TLSRPT-22, reporting/tlsrpt/results.ts `stsFetchFailure`). Deliveries report only the
   * fetches they make themselves (event `sts-fetch-failed`), so each failed fetch is counted once.
   */
  refreshFailed?: (r: { domain: string; resultType: FetchFailureType; reason: string; kept: CachedPolicy }) => void;
}

interface Mem {
  entry: CachedPolicy;
  mtimeMs: number;
  refreshAt: number;
  lastUsedWritten: number;
  /**
   * The entry could not be written (disk full, EACCES, a directory where the file goes): memory is ahead of
   * the disk and wins over it until a write succeeds (retried at every lookup and by `maintain`).
   */
  unsaved?: true;
}

/**
 * The local MTA-STS state (the cache file or its directory) could not be read, so which policy is in force
 * is unknown. Not RFC 8461 §5's "no policy" (that is a fetch that failed with nothing cached): delivery
 * defers (4.7.0) rather than going out as without MTA-STS, since an `enforce` policy may be in that file.
 */
export class StsStateError extends Error {
  override readonly name = 'StsStateError';
}

export class StsPolicies {
  private readonly mem = new Map<string, Mem>();
  private readonly backoff = new Map<string, { id: string; until: number; failure: { resultType: FetchFailureType; reason: string } }>();
  private readonly inflight = new Map<string, Promise<StsLookup>>();
  private readonly now: () => number;
  private readonly random: () => number;

  constructor(private readonly o: StsPoliciesOptions) {
    this.now = o.now ?? Date.now;
    this.random = o.random ?? Math.random;
  }

  /** Number of policies held in memory. */
  get size(): number {
    return this.mem.size;
  }

  /** Reads every stored policy (at start): the cache survives restarts (STS-30). */
  async load(): Promise<number> {
    for (const d of await this.storedDomains()) {
      // An unreadable file does not stop the start: its domain's deliveries defer until it is readable or replaced.
      await this.current(d).catch(() => undefined);
    }
    return this.mem.size;
  }

  /**
   * The policy for a delivery to `domain` (STS-31, STS-33): the TXT id is checked; a new id (or a
   * record with nothing cached) fetches, once at a time per domain; whatever fails, a cached
   * unexpired policy stays in force. Rejects (StsStateError, or any bug) when the local state cannot say
   * which policy is in force: the caller must not deliver as without a policy then.
   */
  lookup(domain: string): Promise<StsLookup> {
    const d = domain.toLowerCase().replace(/\.$/, '');
    const running = this.inflight.get(d);
    if (running !== undefined) return running;
    const p = this.doLookup(d).finally(() => this.inflight.delete(d));
    this.inflight.set(d, p);
    return p;
  }

  private async doLookup(d: string): Promise<StsLookup> {
    const discovery = await discoverSts(this.o.resolver, d);
    // A cache that cannot be read is no empty cache: only a policy fetched now can stand in for it.
    let mem: Mem | undefined;
    let unknown: StsStateError | undefined;
    try {
      mem = await this.current(d);
    } catch (e) {
      unknown = e instanceof StsStateError ? e : new StsStateError(`MTA-STS cache for ${d}: ${(e as Error)?.message ?? e}`);
    }
    const live = mem && this.inForce(mem.entry) ? mem.entry : undefined;
    if (mem) mem.entry.lastUsed = this.now();
    if (discovery.kind !== 'record') {
      if (unknown) throw unknown;
      // STS-5, STS-33: no live record (or DNS could not tell) never removes a cached policy.
      if (live && discovery.kind === 'none')
        this.o.log?.info({ domain: d, id: live.id, why: discovery.why }, 'mta-sts: no TXT record; the cached policy stays in force');
      return { applied: live, discovery, fetch: 'cached' };
    }
    if (live && live.id === discovery.id) return { applied: live, discovery, fetch: 'cached' };
    const b = this.backoff.get(d);
    if (b && b.id === discovery.id && b.until > this.now()) {
      if (unknown) throw unknown;
      return { applied: live, discovery, fetch: 'backoff', failure: b.failure };
    }
    const r = await this.fetchAndStore(d, discovery.id, mem?.entry);
    if (r.ok) return { applied: r.entry, discovery, fetch: 'fetched' };
    if (unknown) throw unknown;
    return { applied: live, discovery, fetch: 'failed', failure: r.failure };
  }

  /**
   * A fetch now, whatever the cache holds (`mta-sts refresh`, proactive refresh: STS-32). The id is the
   * TXT record's, else the cached one: §3.3 lets a sender refresh regardless of the TXT record.
   */
  async refresh(
    domain: string,
  ): Promise<{ ok: true; entry: CachedPolicy } | { ok: false; failure: { resultType: FetchFailureType; reason: string }; kept?: CachedPolicy }> {
    const d = domain.toLowerCase().replace(/\.$/, '');
    const discovery = await discoverSts(this.o.resolver, d);
    // An unreadable cache file is what a refresh replaces (the CLI's way out); current() has warned.
    const mem = await this.current(d).catch(() => undefined);
    const id = discovery.kind === 'record' ? discovery.id : (mem?.entry.id ?? '');
    const r = await this.fetchAndStore(d, id, mem?.entry);
    return r.ok ? r : { ...r, kept: mem && this.inForce(mem.entry) ? mem.entry : undefined };
  }

  /** `mta-sts purge`: the policy is forgotten, on disk and here. */
  async purge(domain: string): Promise<boolean> {
    const d = domain.toLowerCase().replace(/\.$/, '');
    this.mem.delete(d);
    this.backoff.delete(d);
    return this.o.store.remove(d);
  }

  /**
   * The periodic job (STS-32, STS-34): expired policies are dropped (an unused one is never refreshed,
   * so it goes at expiry); policies used recently are refreshed when due; lastUsed is written back.
   * Returns what it did, for logs and tests.
   */
  async maintain(): Promise<{ refreshed: string[]; failed: string[]; dropped: string[] }> {
    const out = { refreshed: [] as string[], failed: [] as string[], dropped: [] as string[] };
    const stored = await this.storedDomains();
    for (const d of new Set([...this.mem.keys(), ...stored])) {
      // One domain's unreadable file or failed write does not stop the others' maintenance.
      const mem = await this.current(d).catch(() => undefined);
      if (!mem) continue;
      const now = this.now();
      if (mem.entry.expiresAt <= now) {
        try {
          await this.o.store.remove(d);
        } catch (e) {
          this.o.log?.warn({ domain: d, err: (e as Error).message }, 'mta-sts: cannot remove an expired policy file');
          continue;
        }
        this.mem.delete(d);
        out.dropped.push(d);
        this.o.log?.info({ domain: d, id: mem.entry.id, lastUsed: new Date(mem.entry.lastUsed).toISOString() }, 'mta-sts: expired policy dropped');
        continue;
      }
      if (mem.refreshAt <= now && mem.entry.lastUsed > now - RECENTLY_USED_MS) {
        const r = await this.refresh(d);
        (r.ok ? out.refreshed : out.failed).push(d);
        if (!r.ok && r.kept) this.o.refreshFailed?.({ domain: d, ...r.failure, kept: r.kept });
        continue;
      }
      if (mem.entry.lastUsed > mem.lastUsedWritten + LAST_USED_WRITE_MS) await this.writeBack(d, mem);
    }
    return out;
  }

  /** The domains in the cache directory; an unlistable directory is logged and lists none (each lookup then finds its file unreadable). */
  private async storedDomains(): Promise<string[]> {
    try {
      return await this.o.store.domains();
    } catch (e) {
      this.o.log?.warn({ store: this.o.store.where, err: (e as Error).message }, 'mta-sts: cannot list the policy cache');
      return [];
    }
  }

  /**
   * The cached entry for `domain` as on disk now, read again when the file changed or went. An entry not
   * yet written (`unsaved`) is written again and wins. When the file exists (or its directory cannot be
   * looked at) but cannot be read, the copy in memory, if any, stands; with none, StsStateError: the
   * file may hold an `enforce` policy, so "nothing cached" would be a downgrade.
   */
  private async current(d: string): Promise<Mem | undefined> {
    const m = this.mem.get(d);
    // A name that cannot be a file name (store.ts fileNameOf; ingress hands on A-label LDH names only) has nothing on disk.
    if (fileNameOf(d) === undefined) return m;
    if (m?.unsaved) {
      await this.save(d, m);
      return m;
    }
    let mtime: number | undefined;
    try {
      mtime = await this.o.store.mtimeOf(d);
    } catch (e) {
      this.o.log?.warn({ domain: d, err: (e as Error).message, inMemory: !!m }, 'mta-sts: cannot read the cached policy');
      if (m) return m;
      throw new StsStateError(`MTA-STS policy cache for ${d} cannot be read: ${(e as Error).message}`);
    }
    if (mtime === undefined) {
      this.mem.delete(d);
      return undefined;
    }
    if (m && m.mtimeMs === mtime) return m;
    try {
      const r = await this.o.store.read(d);
      if (!r) {
        this.mem.delete(d);
        return undefined;
      }
      // While this read was under way a lookup may have fetched a policy it could not write (the start's background
      // load races the first deliveries): memory is ahead of the disk then, and an older file must not replace it.
      const meanwhile = this.mem.get(d);
      if (meanwhile?.unsaved) return meanwhile;
      const lastUsed = Math.max(r.entry.lastUsed, m?.entry.lastUsed ?? 0);
      const fresh: Mem = { entry: { ...r.entry, lastUsed }, mtimeMs: r.mtimeMs, refreshAt: this.refreshTime(r.entry), lastUsedWritten: r.entry.lastUsed };
      this.mem.set(d, fresh);
      return fresh;
    } catch (e) {
      this.o.log?.warn(
        { domain: d, err: (e as Error).message, inMemory: !!m },
        m
          ? 'mta-sts: unreadable cached policy; the copy in memory stays in force (a successful fetch replaces the file)'
          : 'mta-sts: unreadable cached policy; deliveries wait until it is readable or a fetch replaces it',
      );
      if (m) return m;
      throw new StsStateError(`MTA-STS policy cache for ${d} cannot be read: ${(e as Error).message}`);
    }
  }

  private inForce(e: CachedPolicy): boolean {
    return e.expiresAt > this.now(); // STS-34: an expired, unrefreshed policy stops applying
  }

  private refreshTime(e: CachedPolicy): number {
    const interval = Math.min(REFRESH_INTERVAL_MS, (e.policy.maxAge * 1000) / 2);
    return e.fetchedAt + interval * (0.9 + 0.2 * this.random());
  }

  private async fetchAndStore(
    d: string,
    id: string,
    old: CachedPolicy | undefined,
  ): Promise<{ ok: true; entry: CachedPolicy } | { ok: false; failure: { resultType: FetchFailureType; reason: string } }> {
    const r = await this.o.fetch(d);
    const now = this.now();
    if (!r.ok) {
      const failure = { resultType: r.resultType, reason: r.reason };
      this.backoff.set(d, { id, until: now + FETCH_BACKOFF_MS, failure });
      if (old && this.inForce(old)) {
        // STS-33: a failed refetch never replaces a valid policy. STS-34: say so (not for mode none).
        old.refreshFailure = { at: now, ...failure };
        const mem = this.mem.get(d);
        if (mem) await this.writeBack(d, mem); // never throws: a failed write leaves the note in memory
        const log = old.policy.mode === 'none' ? this.o.log?.info : this.o.log?.warn;
        log?.call(
          this.o.log,
          {
            domain: d,
            id,
            cachedId: old.id,
            mode: old.policy.mode,
            expires: new Date(old.expiresAt).toISOString(),
            resultType: r.resultType,
            reason: r.reason,
          },
          'mta-sts: policy fetch failed; keeping the cached policy',
        );
      } else {
        this.o.log?.warn(
          { domain: d, id, resultType: r.resultType, reason: r.reason, retryAfter: new Date(now + FETCH_BACKOFF_MS).toISOString() },
          'mta-sts: policy fetch failed; no cached policy, delivering as without MTA-STS',
        );
      }
      return { ok: false, failure };
    }
    this.backoff.delete(d);
    const entry: CachedPolicy = { domain: d, id, fetchedAt: now, expiresAt: now + r.policy.maxAge * 1000, policy: r.policy, lastUsed: old?.lastUsed ?? now };
    // The fetched policy applies from here on, also when the disk refuses it (then it is written again later).
    const mem: Mem = { entry, mtimeMs: Number.NaN, refreshAt: this.refreshTime(entry), lastUsedWritten: entry.lastUsed };
    this.mem.set(d, mem);
    await this.save(d, mem);
    for (const note of r.notes) this.o.log?.info({ domain: d, id, note }, 'mta-sts: policy note');
    this.o.log?.info({ domain: d, id, previousId: old?.id, mode: r.policy.mode, maxAge: r.policy.maxAge, mx: r.policy.mx }, 'mta-sts: policy fetched');
    return { ok: true, entry };
  }

  /**
   * Rewrites the entry unless the file changed under us (the CLI purged or refreshed it): then it is read
   * again. Never throws: a failed write leaves the entry in memory, marked unsaved.
   */
  private async writeBack(d: string, mem: Mem): Promise<void> {
    if (!mem.unsaved) {
      // cannot tell (the stat fails): write; save() says why if that fails too
      const onDisk = await this.o.store.mtimeOf(d).catch(() => mem.mtimeMs);
      if (onDisk !== mem.mtimeMs) {
        await this.current(d).catch(() => undefined);
        return;
      }
    }
    await this.save(d, mem);
  }

  /** Writes `mem` durably; on failure it stays in memory, marked unsaved, and the failure is logged (once per state change). */
  private async save(d: string, mem: Mem): Promise<void> {
    try {
      mem.mtimeMs = await this.o.store.write(mem.entry);
      mem.lastUsedWritten = mem.entry.lastUsed;
      if (mem.unsaved) this.o.log?.info({ domain: d, id: mem.entry.id }, 'mta-sts: policy written to the cache after earlier failures');
      delete mem.unsaved;
    } catch (e) {
      if (!mem.unsaved)
        this.o.log?.warn(
          { domain: d, id: mem.entry.id, mode: mem.entry.policy.mode, err: (e as Error).message },
          'mta-sts: cannot write the policy cache; the policy applies from memory and the write is retried',
        );
      mem.unsaved = true;
    }
  }
}

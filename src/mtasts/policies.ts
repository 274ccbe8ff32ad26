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
import type { StsPolicyStore, CachedPolicy } from './store.js';

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
}

interface Mem {
  entry: CachedPolicy;
  mtimeMs: number;
  refreshAt: number;
  lastUsedWritten: number;
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
    for (const d of await this.o.store.domains()) await this.current(d);
    return this.mem.size;
  }

  /**
   * The policy for a delivery to `domain` (STS-31, STS-33): the TXT id is checked; a new id (or a
   * record with nothing cached) fetches, once at a time per domain; whatever fails, a cached
   * unexpired policy stays in force.
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
    const mem = await this.current(d);
    const live = mem && this.inForce(mem.entry) ? mem.entry : undefined;
    if (mem) mem.entry.lastUsed = this.now();
    if (discovery.kind !== 'record') {
      // STS-5, STS-33: no live record (or DNS could not tell) never removes a cached policy.
      if (live && discovery.kind === 'none')
        this.o.log?.info({ domain: d, id: live.id, why: discovery.why }, 'mta-sts: no TXT record; the cached policy stays in force');
      return { applied: live, discovery, fetch: 'cached' };
    }
    if (live && live.id === discovery.id) return { applied: live, discovery, fetch: 'cached' };
    const b = this.backoff.get(d);
    if (b && b.id === discovery.id && b.until > this.now()) return { applied: live, discovery, fetch: 'backoff', failure: b.failure };
    const r = await this.fetchAndStore(d, discovery.id, mem?.entry);
    if (r.ok) return { applied: r.entry, discovery, fetch: 'fetched' };
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
    const mem = await this.current(d);
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
    for (const d of new Set([...this.mem.keys(), ...(await this.o.store.domains())])) {
      const mem = await this.current(d);
      if (!mem) continue;
      const now = this.now();
      if (mem.entry.expiresAt <= now) {
        await this.o.store.remove(d);
        this.mem.delete(d);
        out.dropped.push(d);
        this.o.log?.info({ domain: d, id: mem.entry.id, lastUsed: new Date(mem.entry.lastUsed).toISOString() }, 'mta-sts: expired policy dropped');
        continue;
      }
      if (mem.refreshAt <= now && mem.entry.lastUsed > now - RECENTLY_USED_MS) {
        const r = await this.refresh(d);
        (r.ok ? out.refreshed : out.failed).push(d);
        continue;
      }
      if (mem.entry.lastUsed > mem.lastUsedWritten + LAST_USED_WRITE_MS) await this.writeBack(d, mem);
    }
    return out;
  }

  /** The cached entry for `domain` as on disk now, read again when the file changed or went. */
  private async current(d: string): Promise<Mem | undefined> {
    let mtime: number | undefined;
    try {
      mtime = await this.o.store.mtimeOf(d);
    } catch (e) {
      this.o.log?.warn({ domain: d, err: (e as Error).message }, 'mta-sts: cannot read the cached policy');
      return this.mem.get(d);
    }
    const m = this.mem.get(d);
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
      const lastUsed = Math.max(r.entry.lastUsed, m?.entry.lastUsed ?? 0);
      const fresh: Mem = { entry: { ...r.entry, lastUsed }, mtimeMs: r.mtimeMs, refreshAt: this.refreshTime(r.entry), lastUsedWritten: r.entry.lastUsed };
      this.mem.set(d, fresh);
      return fresh;
    } catch (e) {
      this.o.log?.warn({ domain: d, err: (e as Error).message }, 'mta-sts: unreadable cached policy ignored (the next successful fetch replaces it)');
      return m;
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
        if (mem) await this.writeBack(d, mem);
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
    const mtimeMs = await this.o.store.write(entry);
    this.mem.set(d, { entry, mtimeMs, refreshAt: this.refreshTime(entry), lastUsedWritten: entry.lastUsed });
    for (const note of r.notes) this.o.log?.info({ domain: d, id, note }, 'mta-sts: policy note');
    this.o.log?.info({ domain: d, id, previousId: old?.id, mode: r.policy.mode, maxAge: r.policy.maxAge, mx: r.policy.mx }, 'mta-sts: policy fetched');
    return { ok: true, entry };
  }

  /** Rewrites the entry unless the file changed under us (the CLI purged or refreshed it): then it is read again. */
  private async writeBack(d: string, mem: Mem): Promise<void> {
    const onDisk = await this.o.store.mtimeOf(d);
    if (onDisk !== mem.mtimeMs) {
      await this.current(d);
      return;
    }
    mem.mtimeMs = await this.o.store.write(mem.entry);
    mem.lastUsedWritten = mem.entry.lastUsed;
  }
}

/**
 * The one caching front end every resolver mode shares: name normalisation, the answer cache,
 * single flight and answer copying, over an engine that does one fresh resolution — the trust-AD
 * stub (dns/stub.ts) or the in-process validator (dnssec/resolver.ts). Engines differ only in how
 * they reach a verdict; what happens around it is the same code.
 *
 * Cache rules (RFC 2308 §5, RFC 4035 §4.5): positive and negative answers for their TTL (capped),
 * transport failures never (the next attempt must ask again; the scheduler's retry interval already
 * limits the rate), bogus answers for BOGUS_TTL — Unbound's `val-bogus-ttl` — so a broken zone is not
 * re-validated per message, and no longer, so a zone that is fixed is believed within that time.
 */
import { TtlCache, approxBytes } from './cache.js';
import { normalizeName } from './name.js';
import { copyAnswer, failedAnswer, type DnsAnswer, type QueryType, type Resolver } from './types.js';

/** Cap for cached answers (seconds). */
export const MAX_CACHE_TTL = 86_400;
/** Bogus answers (and bogus zone keys, dnssec/chain.ts) are remembered this long: Unbound's val-bogus-ttl. */
export const BOGUS_TTL = 60;
/** Answers kept by default. */
export const DEFAULT_CACHE_ENTRIES = 10_000;
/**
 * Approximate bytes of answers kept, besides the entry count: a TXT or TLSA answer can be 64 KiB,
 * so 10,000 entries alone could hold 640 MiB.
 */
export const MAX_ANSWER_CACHE_BYTES = 64 * 1024 * 1024;

/** One fresh resolution of a normalised name. May throw; the front end turns that into a failure. */
export interface ResolverEngine {
  resolve<T extends QueryType>(qname: string, qtype: T): Promise<DnsAnswer<T>>;
  close(): void;
}

export interface FrontOptions {
  /** keep answers (default true); a one-shot command asks fresh */
  cache?: boolean;
  maxCacheEntries?: number;
  /** cache clock in ms; default Date.now */
  now?: () => number;
}

export class CachingResolver<E extends ResolverEngine = ResolverEngine> implements Resolver {
  private readonly cache: TtlCache<DnsAnswer>;
  private readonly inflight = new Map<string, Promise<DnsAnswer>>();
  private readonly cacheEnabled: boolean;
  protected readonly clock: () => number;
  private closed = false;

  constructor(
    protected readonly engine: E,
    opts: FrontOptions = {},
  ) {
    this.cacheEnabled = opts.cache ?? true;
    this.clock = opts.now ?? Date.now;
    this.cache = new TtlCache(Math.max(1, opts.maxCacheEntries ?? DEFAULT_CACHE_ENTRIES), MAX_ANSWER_CACHE_BYTES, (a) => approxBytes(a));
  }

  /** Answers held. */
  get answersCached(): number {
    return this.cache.size;
  }

  async lookup<T extends QueryType>(name: string, type: T): Promise<DnsAnswer<T>> {
    let qname: string;
    try {
      qname = normalizeName(name);
    } catch (e) {
      return failedAnswer(name, type, 'indeterminate', { kind: 'other', message: (e as Error).message });
    }
    if (this.closed) return failedAnswer(qname, type, 'indeterminate', { kind: 'other', message: 'resolver closed' });
    const key = `${qname}|${type}`;
    const hit = this.cache.get(key, this.clock());
    // The remaining lifetime is the TTL a cached answer reports; a failure's stays 0.
    if (hit) {
      const { work: _none, ...copy } = copyAnswer(hit.value);
      return { ...copy, ...(hit.value.error ? {} : { ttl: hit.ttl }) } as DnsAnswer<T>;
    }
    let p = this.inflight.get(key);
    if (!p) {
      p = this.engine
        .resolve(qname, type)
        .catch(
          (e: unknown): DnsAnswer =>
            failedAnswer(qname, type, 'indeterminate', { kind: 'other', message: `internal error: ${e instanceof Error ? e.message : String(e)}` }),
        )
        .then((a) => {
          this.remember(key, a);
          return a;
        })
        .finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    // Callers get their own copy: one caller mutating arrays must not affect others.
    return copyAnswer(await p) as DnsAnswer<T>;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.engine.close();
    this.cache.clear();
  }

  private remember(key: string, a: DnsAnswer): void {
    if (!this.cacheEnabled || this.closed) return;
    if (a.error) {
      if (a.status === 'bogus') this.cache.set(key, a, Math.min(BOGUS_TTL, a.retryAfter ?? BOGUS_TTL), this.clock());
      return;
    }
    this.cache.set(key, a, Math.min(a.ttl, MAX_CACHE_TTL), this.clock());
  }
}

/**
 * TLSRPT policy discovery (RFC 8460 §3, digest TLSRPT-1…6): TXT at `_smtp._tls.<domain>`
 * through the relay's own Resolver, parsed by the pure `parseTlsrptTxt`, cached per TTL.
 */
import type { Resolver } from '../../dns/types.js';
import { isAnswer } from '../../dns/types.js';
import { aLabel } from './report.js';
import { parseTxtFields, pickVersionedRecord } from '../../dns/txtFields.js';

export type Rua = { scheme: 'mailto'; uri: string; address: string } | { scheme: 'https'; uri: string; url: string };

export type TlsrptRecord = { ok: true; rua: Rua[] } | { ok: false; why: string };

const WSP = '[ \\t]*';
/** RFC 3986 URI, roughly: scheme ":" then no whitespace and none of the characters rua must percent-encode. */
const URI = /^[A-Za-z][A-Za-z0-9+.-]*:[^\s,;!]+$/;

/**
 * One record (TXT strings already joined without spaces, TLSRPT-2) → its rua list.
 * RFC 8460 §3 ABNF (TLSRPT-4): `v=TLSRPTv1` first (case-sensitive), fields separated by
 * `*WSP ";" *WSP`, optional trailing `;`, `rua` required, extensions ignored (dns/txtFields.ts).
 */
export function parseTlsrptRecord(record: string): TlsrptRecord {
  const parsed = parseTxtFields(record, 'v=TLSRPTv1', ['rua']);
  if (!parsed.ok) return parsed;
  const ruas = parsed.fields.filter((f) => f.name === 'rua');
  if (ruas.length > 1) return { ok: false, why: 'rua given twice' };
  if (ruas.length === 0) return { ok: false, why: 'no rua field' };
  const uris = ruas[0]!.value.split(new RegExp(`${WSP},${WSP}`));
  const out: Rua[] = [];
  for (const uri of uris) {
    if (!URI.test(uri)) return { ok: false, why: `rua: not a URI: ${JSON.stringify(uri)}` };
    const scheme = uri.slice(0, uri.indexOf(':')).toLowerCase();
    // TLSRPT-5: only mailto and https are used; other schemes are ignored.
    if (scheme === 'mailto') {
      let address: string;
      try {
        address = decodeURIComponent(uri.slice(7).split('?')[0]!);
      } catch {
        continue;
      }
      if (/^[^\s@<>(),;:"]+@[^\s@<>]+$/.test(address)) out.push({ scheme: 'mailto', uri, address });
    } else if (scheme === 'https') {
      try {
        out.push({ scheme: 'https', uri, url: new URL(uri).href });
      } catch {
        /* not usable */
      }
    }
  }
  if (out.length === 0) return { ok: false, why: 'rua has no usable mailto: or https: URI' };
  return { ok: true, rua: out };
}

/**
 * The TXT RRset at `_smtp._tls.<domain>` → the policy (TLSRPT-3): records not starting with the
 * literal `v=TLSRPTv1;` are dropped; exactly one must remain.
 * Reading of the digest's trap: `v=TLSRPTv1 ;` fits the ABNF but fails the literal prefix of §3,
 * so it is not a TLSRPT record at all (the prefix test comes first, as in the RFC's prose).
 */
export function parseTlsrptTxt(txts: string[]): TlsrptRecord {
  const one = pickVersionedRecord(txts, 'v=TLSRPTv1;');
  return one.ok ? parseTlsrptRecord(one.record) : one;
}

export type Discovery = { kind: 'ok'; rua: Rua[] } | { kind: 'none'; why: string } | { kind: 'tempfail'; why: string };

/** TTL bounds for the cache: short enough to follow changes, long enough to keep DNS off the hot path. */
const MIN_TTL = 60_000;
const MAX_TTL = 3_600_000;
const TEMPFAIL_TTL = 60_000;
/** Cache bound: a relay sending to very many domains keeps the most recently looked-up ones. */
export const MAX_CACHED_DOMAINS = 10_000;

export class TlsrptDiscovery {
  private readonly cache = new Map<string, { until: number; result: Discovery }>();
  private readonly inflight = new Map<string, Promise<Discovery>>();

  constructor(
    private readonly resolver: Resolver,
    private readonly now: () => number = Date.now,
    private readonly maxEntries = MAX_CACHED_DOMAINS,
  ) {}

  /** Number of cached domains (bounded by maxEntries). */
  get size(): number {
    return this.cache.size;
  }

  /** Cached answer, if fresh; undefined when a lookup is needed. Synchronous: the recorder's fast path. */
  cached(domain: string): Discovery | undefined {
    const c = this.cache.get(domain);
    return c && c.until > this.now() ? c.result : undefined;
  }

  /** TLSRPT-1: TXT at `_smtp._tls.<D>`; DNS trouble is a tempfail, never "none" (TLSRPT-6). */
  lookup(domain: string, opts: { fresh?: boolean } = {}): Promise<Discovery> {
    let d: string;
    try {
      d = aLabel(domain);
    } catch (e) {
      return Promise.resolve({ kind: 'none', why: (e as Error).message });
    }
    if (!opts.fresh) {
      const c = this.cached(d);
      if (c) return Promise.resolve(c);
    }
    const running = this.inflight.get(d);
    if (running !== undefined) return running;
    const p = this.resolve(d).finally(() => this.inflight.delete(d));
    this.inflight.set(d, p);
    return p;
  }

  private async resolve(d: string): Promise<Discovery> {
    const name = `_smtp._tls.${d}`;
    let result: Discovery;
    let ttl = TEMPFAIL_TTL;
    try {
      const ans = await this.resolver.lookup(name, 'TXT');
      if (!isAnswer(ans)) {
        result = { kind: 'tempfail', why: `TXT lookup for ${name}: ${ans.error?.message || ans.error?.kind || ans.status}` };
      } else {
        const rec = parseTlsrptTxt(ans.records);
        result = rec.ok ? { kind: 'ok', rua: rec.rua } : { kind: 'none', why: `${name}: ${rec.why}` };
        ttl = Math.min(MAX_TTL, Math.max(MIN_TTL, (ans.ttl || 0) * 1000));
      }
    } catch (e) {
      result = { kind: 'tempfail', why: `TXT lookup for ${name}: ${(e as Error).message}` };
    }
    // Map order is insertion order: re-inserting moves d to the end; the oldest entries go first.
    this.cache.delete(d);
    this.cache.set(d, { until: this.now() + ttl, result });
    while (this.cache.size > this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
    return result;
  }
}

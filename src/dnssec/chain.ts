/**
 * The chain of trust (RFC 4035 §5.1–5.2): from the closest trust anchor down
 * to a name, one label at a time, asking the upstream resolver for DS at each
 * label. A validated DS RRset leads to the child's DNSKEY RRset (secure zone
 * cut); a validated NSEC/NSEC3 proof of "NS but no DS" (or an opt-out span)
 * ends the chain as insecure; anything unprovable is bogus. Insecurity can
 * only come from a signed proof — never from missing or broken data.
 */
import { createHash } from 'node:crypto';
import { TYPE_CODES, type WireMessage } from '../dns/wire.js';
import { SUPPORTED_ALGORITHMS, SUPPORTED_DIGESTS, algorithmName } from './algorithms.js';
import { matchDs } from './dsmatch.js';
import { closestAnchor, type TrustAnchors, type ZoneAnchor } from './anchors.js';
import { BudgetExceeded, MAX_CHAIN_DEPTH, MAX_NSEC3_ITERATIONS, type Budget } from './budget.js';
import { TtlCache } from '../dns/cache.js';
import { BOGUS_TTL } from '../dns/front.js';
import { childToward, isAtOrBelow } from './names.js';
import { nsecCut, type CutProof, type OwnedNsec } from './nsec.js';
import { Nsec3Set, nsec3Cut, type OwnedNsec3 } from './nsec3.js';
import { parseDnskey, parseDs, parseNsec, parseNsec3, type Dnskey, type Ds } from './records.js';
import { groupRRsets, rrsetsOfType } from './rrsets.js';
import type { Trace } from './trace.js';
import type { InsecureReason } from '../dns/types.js';
import { verifyRRset, type RRset, type ZoneKeys } from './verify.js';

export type ZoneState =
  | { kind: 'secure'; zone: string; keys: Dnskey[]; ttl: number }
  /**
   * Below `zone` nothing can be secure, for `reason`: a checked proof of an unsigned delegation or an
   * opt-out span (NSEC3 over the iteration limit included: the proof is checked in full, RFC 9276 §3.2
   * only concerns the cost), only unsupported algorithms, or no trust anchor. Never missing data.
   */
  | { kind: 'insecure'; zone: string; detail: string; ttl: number; reason: Exclude<InsecureReason, 'nsec3-iterations' | 'resolver'> }
  | { kind: 'bogus'; detail: string }
  | { kind: 'indeterminate'; detail: string };

type Step = ({ kind: 'cut'; state: ZoneState } | { kind: 'not-a-cut' | 'nonexistent'; ttl: number }) & { detail?: string };

export interface LookupContext {
  budget: Budget;
  trace: Trace;
  /** seconds since the epoch (signature windows) */
  nowSec: number;
  /** wall-clock ms (Date.now) after which no further upstream question is asked */
  deadline?: number;
  /**
   * When the earliest remembered bad key set this lookup relied on is forgotten (validation clock, ms):
   * a bogus verdict resting on it is kept no longer (FailedAnswer.retryAfter), so a fixed zone is believed
   * within BOGUS_TTL of the failure that was remembered, never a second BOGUS_TTL later.
   */
  bogusUntil?: number;
}

export type QueryFn = (name: string, type: string, ctx: LookupContext) => Promise<{ ok: true; msg: WireMessage } | { ok: false; message: string }>;

const T = TYPE_CODES;
/** Approximate bytes of DNSKEYs held by each chain cache (zone keys, and secure cuts in the step cache). */
export const MAX_KEY_CACHE_BYTES = 16 * 1024 * 1024;

function stateBytes(s: ZoneState): number {
  return 128 + (s.kind === 'secure' ? s.keys.reduce((n, k) => n + 96 + k.rdata.length, 0) : 0);
}

/** Cache lifetime of results that were proven (seconds, before TTL capping by the data). */
const MAX_CHAIN_TTL = 86_400;

export class ChainWalker {
  private readonly zones: TtlCache<ZoneState>;
  private readonly steps: TtlCache<Step>;
  private readonly flights = new Map<string, Promise<unknown>>();
  /**
   * Key sets that failed (issue 22): (zone, the keys its DS set or anchor selected) → why, for BOGUS_TTL
   * (Unbound's val-bogus-ttl, BIND's bad cache). The next name below the zone costs no signature check of
   * the key set, whatever else the zone's DNSKEY replies vary (the selected keys are fixed by the
   * parent's signed DS). A zone fixed by new DS records has another key and is checked at once; one fixed
   * by re-signing is believed BOGUS_TTL after the failure at the latest. Only key-set failures are kept:
   * a failed step (a forged DS reply, say) is asked again by the next lookup.
   */
  private readonly badKeys: TtlCache<string>;

  constructor(
    private readonly anchors: TrustAnchors,
    private readonly query: QueryFn,
    private readonly nowMs: () => number,
    maxEntries: number,
  ) {
    // Zone keys are the large entries (a DNSKEY RRset may be tens of KiB): bounded by bytes too.
    this.zones = new TtlCache(Math.max(16, Math.ceil(maxEntries / 4)), MAX_KEY_CACHE_BYTES, stateBytes);
    this.steps = new TtlCache(Math.max(16, Math.ceil(maxEntries / 2)), MAX_KEY_CACHE_BYTES, (s) => (s.kind === 'cut' ? stateBytes(s.state) : 64));
    this.badKeys = new TtlCache(Math.max(16, Math.ceil(maxEntries / 4)), MAX_KEY_CACHE_BYTES, (why) => 128 + why.length * 2);
  }

  clear(): void {
    this.zones.clear();
    this.steps.clear();
    this.badKeys.clear();
  }

  get cacheSize(): number {
    return this.zones.size + this.steps.size;
  }

  /**
   * The security state of the deepest zone cut at or above `target` that the
   * chain reaches: secure (with its keys), insecure (below an unsigned
   * delegation or no anchor), or an error.
   */
  async walk(target: string, ctx: LookupContext): Promise<ZoneState> {
    const anchor = closestAnchor(this.anchors, target);
    if (!anchor) {
      ctx.trace.add('anchor', target, 'insecure', 'no trust anchor at or above this name');
      return { kind: 'insecure', zone: '.', detail: 'no trust anchor', ttl: MAX_CHAIN_TTL, reason: 'no-trust-anchor' };
    }
    let state = await this.anchorKeys(anchor, ctx);
    if (state.kind !== 'secure') return state;
    let pos = anchor.zone;
    for (let depth = 0; pos !== target; depth++) {
      if (depth >= MAX_CHAIN_DEPTH) throw new BudgetExceeded(`chain deeper than ${MAX_CHAIN_DEPTH} labels`);
      const next = childToward(target, pos);
      const step = await this.step(next, state, ctx);
      if (step.kind === 'cut') {
        if (step.state.kind !== 'secure') return step.state;
        state = step.state;
      } else if (step.kind === 'nonexistent') {
        return state; // nothing exists below: `target` can only be in `state.zone`
      }
      pos = next;
    }
    return state;
  }

  /** The trust anchor the chain to `name` starts from (the closest at or above it), if any. */
  anchorFor(name: string): string | undefined {
    return closestAnchor(this.anchors, name)?.zone;
  }

  /**
   * Concurrent lookups that need the same step share one computation. It runs
   * with the context of the lookup that started it: its queries and
   * verifications are charged to that lookup's budget and deadline, not to the
   * later callers', and if that lookup runs out of budget the later callers
   * get the same indeterminate result (never a verdict, so nothing is weakened;
   * the failed step is not cached and the next lookup computes it afresh).
   */
  private async shared<V>(key: string, f: () => Promise<V>): Promise<V> {
    const inflight = this.flights.get(key) as Promise<V> | undefined;
    if (inflight !== undefined) return inflight;
    const p = f().finally(() => this.flights.delete(key));
    this.flights.set(key, p);
    return p;
  }

  /** The anchor zone's DNSKEY RRset, validated by a key the anchor names (RFC 4035 §5; RFC 5011 not implemented). */
  private async anchorKeys(anchor: ZoneAnchor, ctx: LookupContext): Promise<ZoneState> {
    const cached = this.zones.get(`anchor|${anchor.zone}`, this.nowMs());
    if (cached) {
      ctx.trace.add('anchor', anchor.zone, cached.value.kind === 'secure' ? 'ok' : cached.value.kind, 'trust anchor keys (cached)');
      return cached.value;
    }
    const st = await this.shared(`anchor|${anchor.zone}`, async () => {
      const usable =
        anchor.ds.some((d) => SUPPORTED_ALGORITHMS.has(d.algorithm) && SUPPORTED_DIGESTS.has(d.digestType)) ||
        anchor.dnskeys.some((k) => SUPPORTED_ALGORITHMS.has(k.algorithm));
      if (!usable) {
        ctx.trace.add('anchor', anchor.zone, 'insecure', 'the trust anchor uses only unsupported algorithms/digests (RFC 4035 §5.2)');
        return {
          kind: 'insecure',
          zone: anchor.zone,
          detail: 'anchor algorithms unsupported',
          ttl: MAX_CHAIN_TTL,
          reason: 'unsupported-algorithm',
        } as ZoneState;
      }
      const res = await this.fetchDnskeys(anchor.zone, ctx);
      if ('error' in res) return res.error;
      const trusted: Dnskey[] = [];
      for (const k of res.keys) {
        if (anchor.dnskeys.some((a) => a.rdata.equals(k.rdata))) {
          trusted.push(k);
          ctx.trace.add('anchor', anchor.zone, 'ok', `DNSKEY ${k.keyTag}/${algorithmName(k.algorithm)} is a configured anchor key`);
        }
      }
      const viaDs = this.matchDs(anchor.zone, anchor.ds, res.keys, ctx, 'anchor');
      trusted.push(...viaDs.filter((k) => !trusted.includes(k)));
      return this.trustKeys(anchor.zone, res.rrset, trusted, ctx, 'anchor');
    });
    if (st.kind === 'secure' || st.kind === 'insecure') this.zones.set(`anchor|${anchor.zone}`, st, st.ttl, this.nowMs());
    return st;
  }

  private async fetchDnskeys(zone: string, ctx: LookupContext): Promise<{ keys: Dnskey[]; rrset: RRset } | { error: ZoneState }> {
    const r = await this.query(zone, 'DNSKEY', ctx);
    if (!r.ok) {
      ctx.trace.add('DNSKEY', zone, 'indeterminate', r.message);
      return { error: { kind: 'indeterminate', detail: `DNSKEY ${zone}: ${r.message}` } };
    }
    const rrset = groupRRsets(r.msg.answers).get(`${zone}|${T.DNSKEY}`);
    if (!rrset) {
      ctx.trace.add('DNSKEY', zone, 'bogus', 'no DNSKEY RRset in the reply');
      return { error: { kind: 'bogus', detail: `no DNSKEY RRset for ${zone}` } };
    }
    const keys = rrset.rrs.map((rr) => parseDnskey(rr.rdata)).filter((k): k is Dnskey => k !== undefined);
    return { keys, rrset };
  }

  /** DNSKEYs matched by the DS set, each step traced. */
  private matchDs(zone: string, dsSet: Ds[], keys: Dnskey[], ctx: LookupContext, label = 'DS'): Dnskey[] {
    const m = matchDs(zone, dsSet, keys);
    for (const n of m.notes) ctx.trace.add(label, zone, n.ok ? 'ok' : 'info', `${label === 'anchor' ? 'trust anchor ' : ''}${n.text}`);
    return m.keys;
  }

  /** Validate the DNSKEY RRset with one of the DS-matched keys: then all its keys are the zone's keys. */
  private async trustKeys(zone: string, rrset: RRset, trusted: Dnskey[], ctx: LookupContext, via: string): Promise<ZoneState> {
    if (trusted.length === 0) {
      ctx.trace.add('DNSKEY', zone, 'bogus', `no DNSKEY matches the ${via === 'anchor' ? 'trust anchor' : 'DS RRset'}`);
      return { kind: 'bogus', detail: `no DNSKEY of ${zone} matches its ${via === 'anchor' ? 'trust anchor' : 'DS'}` };
    }
    const digest = keySetDigest(zone, trusted);
    const known = this.badKeys.get(digest, this.nowMs());
    if (known) {
      ctx.bogusUntil = Math.min(ctx.bogusUntil ?? Infinity, this.nowMs() + known.ttl * 1000);
      ctx.trace.add(
        'DNSKEY',
        zone,
        'bogus',
        `DNSKEY RRset not signed by a trusted key (the same key set failed ${BOGUS_TTL - known.ttl} s ago): ${known.value}`,
      );
      return { kind: 'bogus', detail: `DNSKEY ${zone}: ${known.value}` };
    }
    const v = await verifyRRset(rrset, { zone, keys: trusted }, ctx.nowSec, ctx.budget);
    if (!v.ok) {
      this.badKeys.set(digest, v.reason, BOGUS_TTL, this.nowMs());
      ctx.trace.add('DNSKEY', zone, 'bogus', `DNSKEY RRset not signed by a trusted key: ${v.reason}`);
      return { kind: 'bogus', detail: `DNSKEY ${zone}: ${v.reason}` };
    }
    const keys = rrset.rrs.map((rr) => parseDnskey(rr.rdata)).filter((k): k is Dnskey => k !== undefined);
    ctx.trace.add('DNSKEY', zone, 'ok', `RRSIG by key ${v.key.keyTag}/${algorithmName(v.key.algorithm)} validates the DNSKEY RRset (${keys.length} keys)`);
    return { kind: 'secure', zone, keys, ttl: Math.min(v.ttl, MAX_CHAIN_TTL) };
  }

  /** One label below a secure zone: is `name` a secure cut, an insecure cut, not a cut, or nonexistent? */
  private async step(name: string, parent: Extract<ZoneState, { kind: 'secure' }>, ctx: LookupContext): Promise<Step> {
    const key = `${parent.zone}|${name}`;
    const cached = this.steps.get(key, this.nowMs());
    if (cached) {
      const s = cached.value;
      ctx.trace.add('DS', name, s.kind === 'cut' ? (s.state.kind === 'secure' ? 'ok' : s.state.kind) : 'info', `(cached) ${s.detail ?? s.kind}`);
      return s;
    }
    const step = await this.shared(`step|${key}`, () => this.computeStep(name, parent, ctx));
    // A failed step is not kept: the next lookup asks again, so one forged reply leaves nothing behind.
    // What makes a bad zone expensive — its key set's signature checks — is remembered by content instead
    // (`badKeys`, trustKeys).
    const ttl = step.kind === 'cut' ? (step.state.kind === 'secure' || step.state.kind === 'insecure' ? step.state.ttl : 0) : step.ttl;
    this.steps.set(key, step, ttl, this.nowMs());
    return step;
  }

  private async computeStep(name: string, parent: Extract<ZoneState, { kind: 'secure' }>, ctx: LookupContext): Promise<Step> {
    const bad = (kind: 'bogus' | 'indeterminate', detail: string): Step => {
      ctx.trace.add('DS', name, kind, detail);
      return { kind: 'cut', state: { kind, detail: `${name}: ${detail}` }, detail };
    };
    const r = await this.query(name, 'DS', ctx);
    if (!r.ok) return bad('indeterminate', r.message);
    const msg = r.msg;
    const answers = groupRRsets(msg.answers);
    const dsSet = answers.get(`${name}|${T.DS}`);
    const zk: ZoneKeys = { zone: parent.zone, keys: parent.keys };
    if (dsSet) {
      const v = await verifyRRset(dsSet, zk, ctx.nowSec, ctx.budget);
      if (!v.ok) return bad('bogus', `DS RRset does not validate with ${parent.zone}'s keys: ${v.reason}`);
      ctx.trace.add('DS', name, 'ok', `DS RRset signed by ${parent.zone} key ${v.key.keyTag}/${algorithmName(v.key.algorithm)}`);
      const ds = dsSet.rrs.map((rr) => parseDs(rr.rdata)).filter((d): d is Ds => d !== undefined);
      if (!ds.some((d) => SUPPORTED_ALGORITHMS.has(d.algorithm) && SUPPORTED_DIGESTS.has(d.digestType))) {
        // RFC 4035 §5.2, RFC 6840 §5.2: only unsupported algorithms/digests → treat the zone as unsigned.
        const detail = `DS only for unsupported algorithms/digests (${ds.map((d) => `${algorithmName(d.algorithm)}/${d.digestType}`).join(', ')}): insecure`;
        ctx.trace.add('DS', name, 'insecure', detail);
        return { kind: 'cut', state: { kind: 'insecure', zone: name, detail, ttl: v.ttl, reason: 'unsupported-algorithm' }, detail };
      }
      const res = await this.fetchDnskeys(name, ctx);
      if ('error' in res) return { kind: 'cut', state: res.error };
      const matched = this.matchDs(name, ds, res.keys, ctx);
      const st = await this.trustKeys(name, res.rrset, matched, ctx, 'ds');
      if (st.kind === 'secure') st.ttl = Math.min(st.ttl, v.ttl);
      return { kind: 'cut', state: st, detail: st.kind === 'secure' ? `secure zone cut, ${st.keys.length} DNSKEYs` : undefined };
    }
    // A recursive resolver follows a CNAME (or DNAME) for a DS question. It shows the name is no zone
    // cut only when the parent zone signed it; an unsigned or unverifiable one (anyone on the path can
    // add it) falls through to the NSEC/NSEC3 proof below, which it then needs.
    const cname = answers.get(`${name}|${T.CNAME}`);
    if (cname) {
      const v = await verifyRRset(cname, zk, ctx.nowSec, ctx.budget);
      if (v.ok && !v.wildcard) {
        const detail = `CNAME signed by ${parent.zone}: not a zone cut`;
        ctx.trace.add('DS', name, 'ok', detail);
        return { kind: 'not-a-cut', ttl: v.ttl, detail };
      }
      ctx.trace.add(
        'DS',
        name,
        'info',
        `CNAME at this name does not validate with ${parent.zone}'s keys${v.ok ? ' (wildcard)' : `: ${v.reason}`}; a signed denial is needed`,
      );
    }
    for (const d of answers.values()) {
      if (d.typeCode !== T.DNAME || d.name === name || !isAtOrBelow(name, d.name) || !isAtOrBelow(d.name, parent.zone)) continue;
      const v = await verifyRRset(d, zk, ctx.nowSec, ctx.budget);
      if (v.ok) {
        // RFC 6672 §2.3: nothing exists below a DNAME owner in its zone.
        const detail = `DNAME at ${d.name} signed by ${parent.zone}: ${name} does not exist in this zone`;
        ctx.trace.add('DS', name, 'ok', detail);
        return { kind: 'nonexistent', ttl: v.ttl, detail };
      }
    }
    // No DS: the denial must be signed by the parent zone.
    const proof = await this.cutProof(msg, name, zk, ctx);
    if (proof.kind === 'bogus') return bad('bogus', proof.detail);
    if (proof.kind === 'insecure') {
      ctx.trace.add('DS', name, 'insecure', proof.detail);
      const state: ZoneState = { kind: 'insecure', zone: name, detail: proof.detail, ttl: proof.ttl, reason: proof.reason };
      return { kind: 'cut', state, detail: proof.detail };
    }
    ctx.trace.add('DS', name, 'info', proof.detail);
    return { kind: proof.kind, ttl: proof.ttl, detail: proof.detail };
  }

  private async cutProof(msg: WireMessage, name: string, zk: ZoneKeys, ctx: LookupContext): Promise<CutProof & { ttl: number }> {
    const auth = groupRRsets(msg.authorities);
    const den = await validatedDenial(auth, zk, ctx);
    if ('error' in den) return { kind: 'bogus', detail: den.error, ttl: 0 };
    if (den.nsecs.length) return { ...nsecCut(den.nsecs, name, zk.zone), ttl: den.ttl };
    if (den.nsec3s.length) {
      const set = new Nsec3Set(den.nsec3s, zk.zone, ctx.budget);
      if (set.records.length === 0) return { kind: 'bogus', detail: 'no usable NSEC3 record', ttl: 0 };
      await set.prepare(name);
      // Over the iteration limit the proof is still checked in full (unlike Unbound's nsec3_prove_nods,
      // which answers insecure unchecked): any signed high-iteration NSEC3 of the zone, replayed as a
      // "no DS here", would otherwise make everything below `name` insecure (issue 13). What a checked
      // proof shows — an unsigned delegation, no cut, no such name — does not depend on the iteration count.
      const proof = nsec3Cut(set, name);
      const note = set.tooManyIterations ? ` (NSEC3 with ${set.iterations} iterations, over ${MAX_NSEC3_ITERATIONS}: proof checked in full)` : '';
      return { ...proof, detail: proof.detail + note, ttl: den.ttl };
    }
    return { kind: 'bogus', detail: `no signed NSEC/NSEC3 proves there is no DS for ${name}`, ttl: 0 };
  }
}

/** The bad-key cache's key: the zone and the keys its DS set (or trust anchor) selected. */
function keySetDigest(zone: string, trusted: Dnskey[]): string {
  const h = createHash('sha256').update(zone).update('\0');
  for (const b of trusted.map((k) => k.rdata.toString('hex')).sort()) h.update(b).update(',');
  return h.digest('hex');
}

export interface Denial {
  nsecs: OwnedNsec[];
  nsec3s: OwnedNsec3[];
  ttl: number;
}

/**
 * The NSEC and NSEC3 RRsets of an authority section that validate with the
 * zone's keys. RRsets signed by another signer are ignored (they cannot prove
 * anything about this zone); an RRset by this zone that fails is bogus.
 */
export async function validatedDenial(auth: Map<string, RRset>, zk: ZoneKeys, ctx: LookupContext): Promise<Denial | { error: string }> {
  const nsecs: OwnedNsec[] = [];
  const nsec3s: OwnedNsec3[] = [];
  let ttl = MAX_CHAIN_TTL;
  for (const set of [...rrsetsOfType(auth, T.NSEC), ...rrsetsOfType(auth, T.NSEC3)]) {
    if (!isAtOrBelow(set.name, zk.zone)) continue;
    if (!set.sigs.some((s) => s.signer === zk.zone)) continue;
    const v = await verifyRRset(set, zk, ctx.nowSec, ctx.budget);
    const kind = set.typeCode === T.NSEC ? 'NSEC' : 'NSEC3';
    if (!v.ok) {
      ctx.trace.add(kind, set.name, 'bogus', `does not validate: ${v.reason}`);
      return { error: `${kind} ${set.name} does not validate: ${v.reason}` };
    }
    ttl = Math.min(ttl, v.ttl);
    for (const rr of set.rrs) {
      if (set.typeCode === T.NSEC) {
        const n = parseNsec(rr.rdata);
        if (n) nsecs.push({ owner: set.name, nsec: n });
      } else {
        const n = parseNsec3(rr.rdata);
        if (n) nsec3s.push({ owner: set.name, nsec3: n });
      }
    }
  }
  return { nsecs, nsec3s, ttl };
}

/**
 * `dns.mode: validate` — a validating stub (RFC 4035 §4.9.3, §5): the
 * upstream recursive resolvers are only a cache and transport, asked with
 * RD=1, DO=1, CD=1 (RFC 4035 §3.2.2, §4.9.2) so they return the raw records
 * and signatures even when they would consider them bogus; the relay builds
 * and checks the chain of trust itself from its trust anchors. Because the
 * verdict does not depend on the resolver, it may be off-host (digest DANE-2
 * concerns only trust-ad).
 *
 * Aliases follow DANE-5 (RFC 7672 §2.1.3, §2.2.2): each hop has its own
 * status; `status` is secure only if every hop and the final answer are;
 * `firstStatus` is that of the first response (the first alias, or the
 * answer itself).
 */
import {
  combineInsecureReasons,
  failedAnswer,
  usableAnswer,
  type LookupWork,
  type CnameHop,
  type DnsAnswer,
  type DnssecStatus,
  type InsecureReason,
  type QueryType,
  type RecordData,
} from '../dns/types.js';
import { DnsTransport } from '../dns/transport.js';
import { CLASS_IN, TYPE_CODES, toRecordData, typeCode, typeName, type WireMessage, type WireRr } from '../dns/wire.js';
import { isAtOrBelow, normalizeName } from '../dns/name.js';
import { MAX_ALIAS_DEPTH, MAX_NEGATIVE_TTL, DEFAULT_NEGATIVE_TTL, dnameTarget } from '../dns/stub.js';
import { CachingResolver, DEFAULT_CACHE_ENTRIES, type ResolverEngine } from '../dns/front.js';
import { algorithmName } from './algorithms.js';
import { parseTrustAnchors, ROOT_TRUST_ANCHORS, type TrustAnchors } from './anchors.js';
import { Budget, BudgetExceeded, MAX_NSEC3_ITERATIONS } from './budget.js';
import { ChainWalker, validatedDenial, type LookupContext, type ZoneState } from './chain.js';
import { labelCount } from './names.js';
import { proveNodata, proveNxdomain, proveWildcardAnswer, type Proof } from './nsec.js';
import { Nsec3Set, nsec3ProveNodata, nsec3ProveNxdomain, nsec3ProveWildcardAnswer } from './nsec3.js';
import { readPlainName } from './records.js';
import { groupRRsets } from './rrsets.js';
import { Trace, type TraceStep } from './trace.js';
import { verifyRRset, type RRset, type VerifyResult } from './verify.js';

export { parseTrustAnchors, ROOT_TRUST_ANCHORS };

export interface ValidatingResolverOptions {
  servers: string[];
  timeoutMs: number;
  attempts: number;
  /** presentation-format DS/DNSKEY records; default: the built-in IANA root anchors */
  trustAnchors?: string;
  /** clock in ms (signature windows, cache); default Date.now */
  now?: () => number;
  /** validated answers kept (positive and negative); default 10,000 */
  maxCacheEntries?: number;
  /** the exchange layer (default: UDP/TCP to `servers`); the fault suite plugs in an in-process one, as with StubResolver */
  transport?: DnsTransport;
}

/**
 * One lookup (chain of trust, aliases, proofs: up to MAX_QUERIES upstream
 * questions) may take at most this many times what one upstream exchange may
 * take (timeoutMs × attempts). An honest lookup needs a few round trips, most
 * of them cached; an upstream that answers every question just before its
 * timeout would otherwise hold a delivery for MAX_QUERIES × timeout. Not a
 * config key: it scales with dns.timeout/attempts, and three slow exchanges in
 * a row are already a failing resolver. Past it the lookup is indeterminate.
 */
export const LOOKUP_DEADLINE_EXCHANGES = 3;

export { BOGUS_TTL, MAX_ANSWER_CACHE_BYTES } from '../dns/front.js';

/**
 * Distinct RRSIG signer names tried for one RRset or denial (each costs a chain walk). Honest data has
 * one; a second covers a signer-name change in progress; more is an attacker adding junk.
 */
export const MAX_SIGNER_CANDIDATES = 3;

type Verdict = { kind: 'secure'; ttl: number } | { kind: 'insecure'; ttl: number; why: InsecureReason } | { kind: 'bogus' | 'indeterminate'; reason: string };

type Step =
  | { kind: 'alias'; target: string; verdict: Verdict }
  | { kind: 'data'; rrs: WireRr[]; verdict: Verdict }
  | { kind: 'negative'; rcode: string; verdict: Verdict };

type ErrorKind = NonNullable<DnsAnswer['error']>['kind'];

class Failed extends Error {
  constructor(
    readonly kind: 'bogus' | 'indeterminate',
    message: string,
    readonly errorKind: ErrorKind = kind,
  ) {
    super(message);
  }
}

/** The validating resolver: the shared caching front end (dns/front.ts) over the validator engine. */
export class ValidatingResolver extends CachingResolver<ValidatorEngine> {
  constructor(opts: ValidatingResolverOptions) {
    const now = opts.now ?? Date.now;
    super(new ValidatorEngine(opts, now), { now, ...(opts.maxCacheEntries !== undefined ? { maxCacheEntries: opts.maxCacheEntries } : {}) });
  }

  /** Entries held by the answer cache and the chain caches. */
  get cacheSize(): number {
    return this.answersCached + this.engine.chainCacheSize;
  }

  /** A fresh validation (no answer cache) with the steps that led to the verdict, for `dns lookup`. */
  async lookupTrace<T extends QueryType>(name: string, type: T): Promise<{ answer: DnsAnswer<T>; trace: TraceStep[] }> {
    const trace = new Trace(true);
    let qname: string;
    try {
      qname = normalizeName(name);
    } catch (e) {
      return { answer: failure(name, type, 'indeterminate', (e as Error).message, []), trace: trace.steps };
    }
    const answer = await this.engine.run(qname, type, trace);
    return { answer, trace: trace.steps };
  }
}

/** One fresh validation: chain of trust, aliases, proofs, under one lookup's work budget. */
class ValidatorEngine implements ResolverEngine {
  private readonly transport: DnsTransport;
  private readonly anchors: TrustAnchors;
  private readonly walker: ChainWalker;
  private readonly deadlineMs: number;
  private closed = false;

  constructor(
    opts: ValidatingResolverOptions,
    private readonly now: () => number,
  ) {
    this.transport = opts.transport ?? new DnsTransport(opts);
    this.deadlineMs = LOOKUP_DEADLINE_EXCHANGES * opts.timeoutMs * opts.attempts;
    this.anchors = parseTrustAnchors(opts.trustAnchors ?? ROOT_TRUST_ANCHORS);
    const max = Math.max(1, opts.maxCacheEntries ?? DEFAULT_CACHE_ENTRIES);
    this.walker = new ChainWalker(this.anchors, (n, t, c) => this.query(n, t, c), this.now, max);
  }

  get chainCacheSize(): number {
    return this.walker.cacheSize;
  }

  resolve<T extends QueryType>(qname: string, qtype: T): Promise<DnsAnswer<T>> {
    return this.run(qname, qtype, new Trace(false));
  }

  close(): void {
    this.closed = true;
    this.transport.close();
    this.walker.clear();
  }

  private async query(name: string, type: string, ctx: LookupContext): Promise<{ ok: true; msg: WireMessage } | { ok: false; message: string }> {
    if (this.closed) return { ok: false, message: 'resolver closed' };
    if (ctx.deadline !== undefined && Date.now() >= ctx.deadline) return { ok: false, message: `lookup deadline of ${this.deadlineMs} ms passed` };
    ctx.budget.spendQuery();
    // CD=1: we validate; DO=1: we need the signatures (RFC 4035 §3.2.1–3.2.2).
    const ex = await this.transport.exchange(name, type, { rd: true, dnssecOk: true, cd: true });
    if (!ex.ok) return { ok: false, message: ex.message };
    return { ok: true, msg: ex.msg };
  }

  async run<T extends QueryType>(qname: string, qtype: T, trace: Trace): Promise<DnsAnswer<T>> {
    // The deadline is wall-clock time (Date.now), not the injectable validation clock `now`.
    const ctx: LookupContext = { budget: new Budget(), trace, nowSec: Math.floor(this.now() / 1000), deadline: Date.now() + this.deadlineMs };
    const chain: CnameHop[] = [];
    const spent = (): void =>
      trace.add(
        'budget',
        qname,
        'info',
        `${ctx.budget.verifications} signature verifications, ${ctx.budget.nsec3Hashes} NSEC3 hashes, ${ctx.budget.queries} upstream queries, ${ctx.budget.yields} yields`,
      );
    let timer: NodeJS.Timeout | undefined;
    const overdue = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(new Failed('indeterminate', `lookup took longer than ${this.deadlineMs} ms (${LOOKUP_DEADLINE_EXCHANGES} × timeout × attempts)`, 'timeout')),
        this.deadlineMs,
      );
      timer.unref();
    });
    const work = (): LookupWork => ({
      verifications: ctx.budget.verifications,
      nsec3Hashes: ctx.budget.nsec3Hashes,
      nsec3Rounds: ctx.budget.nsec3Rounds,
      queries: ctx.budget.queries,
      yields: ctx.budget.yields,
    });
    try {
      const a = await Promise.race([this.follow(qname, qtype, ctx, chain), overdue]);
      spent();
      return { ...a, work: work() };
    } catch (e) {
      spent();
      if (e instanceof Failed) {
        trace.add('answer', qname, e.kind, e.message);
        const f = failure(qname, qtype, e.kind, e.message, chain, e.errorKind);
        // A bogus verdict resting on a remembered bad key set is repeated only while that is remembered.
        const retryAfter = e.kind === 'bogus' && ctx.bogusUntil !== undefined ? Math.max(0, Math.ceil((ctx.bogusUntil - this.now()) / 1000)) : undefined;
        return { ...f, work: work(), ...(retryAfter !== undefined ? { retryAfter } : {}) } as DnsAnswer<T>;
      }
      const msg = e instanceof BudgetExceeded ? e.message : `internal error: ${e instanceof Error ? e.message : String(e)}`;
      trace.add('answer', qname, 'indeterminate', msg);
      return { ...failure(qname, qtype, 'indeterminate', msg, chain), work: work() };
    } finally {
      clearTimeout(timer);
    }
  }

  /** The answer to (qname, qtype), following aliases (DANE-5): each hop validated on its own. */
  private async follow<T extends QueryType>(qname: string, qtype: T, ctx: LookupContext, chain: CnameHop[]): Promise<DnsAnswer<T>> {
    const seen = new Set<string>([qname]);
    const statuses: DnssecStatus[] = [];
    const reasons: (InsecureReason | undefined)[] = [];
    let ttl = Infinity;
    let cur = qname;
    let msg: WireMessage | undefined;
    for (;;) {
      if (!msg) {
        const r = await this.query(cur, qtype, ctx);
        if (!r.ok) {
          ctx.trace.add('query', `${cur}/${qtype}`, 'indeterminate', r.message);
          throw new Failed('indeterminate', r.message);
        }
        msg = r.msg;
        ctx.trace.add('query', `${cur}/${qtype}`, 'info', `${msg.rcodeName}, ${msg.answers.length} answer / ${msg.authorities.length} authority records`);
      }
      const step = await this.interpret(msg, cur, qtype, ctx);
      const v = step.verdict;
      if (v.kind === 'bogus' || v.kind === 'indeterminate') throw new Failed(v.kind, v.reason);
      statuses.push(v.kind);
      const why = v.kind === 'insecure' ? v.why : undefined;
      reasons.push(why);
      ttl = Math.min(ttl, (v as Extract<Verdict, { ttl: number }>).ttl);
      if (step.kind === 'alias') {
        if (seen.has(step.target)) throw new Failed('indeterminate', `alias loop at ${step.target}`, 'loop');
        if (chain.length >= MAX_ALIAS_DEPTH) throw new Failed('indeterminate', `more than ${MAX_ALIAS_DEPTH} aliases`, 'depth');
        seen.add(step.target);
        chain.push({ owner: cur, target: step.target, status: v.kind, ...(why ? { insecureReason: why } : {}) });
        ctx.trace.add('alias', cur, v.kind === 'secure' ? 'ok' : v.kind, `-> ${step.target}`); // the hop's own status is in chain[]
        cur = step.target;
        // Reuse the reply if it carries the target's records; otherwise ask for the target.
        if (!mentions(msg, cur)) msg = undefined;
        continue;
      }
      const overall: DnssecStatus = statuses.every((s) => s === 'secure') ? 'secure' : 'insecure';
      const insecureReason = overall === 'insecure' ? combineInsecureReasons(reasons) : undefined;
      const records: RecordData[T][] = [];
      if (step.kind === 'data') {
        for (const rr of step.rrs) {
          const d = toRecordData(qtype, rr);
          if (d !== undefined) records.push(d);
        }
      }
      ctx.trace.add(
        'answer',
        qname,
        overall,
        `${step.kind === 'negative' ? step.rcode : 'NOERROR'}, ${records.length} record(s), ttl ${Number.isFinite(ttl) ? ttl : 0}${insecureReason ? ` (insecure: ${insecureReason})` : ''}`,
      );
      const rcode = step.kind === 'negative' ? step.rcode : 'NOERROR';
      if (rcode !== 'NOERROR' && rcode !== 'NXDOMAIN') throw new Failed('indeterminate', `${rcode} for ${cur}/${qtype}`); // validateDenial already refuses these
      const base = { qname, qtype, rcode, canonicalName: cur, chain, records, ttl: Number.isFinite(ttl) ? Math.max(0, ttl) : DEFAULT_NEGATIVE_TTL } as const;
      return usableAnswer(base, overall, statuses[0]!, insecureReason);
    }
  }

  /** What one reply says about (name, qtype): data, an alias, or a denial — each with its verdict. */
  private async interpret(msg: WireMessage, name: string, qtype: QueryType, ctx: LookupContext): Promise<Step> {
    const answers = groupRRsets(msg.answers);
    const qcode = typeCode(qtype);
    // DNAME at the closest proper ancestor (RFC 6672 §3.2) comes first: the CNAME next to it is only its
    // unsigned synthesis (RFC 6672 §3.4, RFC 4035 §3.2.3) and is ignored; we synthesise the target ourselves.
    let dname: RRset | undefined;
    for (const s of answers.values()) {
      if (s.typeCode !== TYPE_CODES.DNAME || s.name === name || !isAtOrBelow(name, s.name)) continue;
      if (!dname || labelCount(s.name) > labelCount(dname.name)) dname = s;
    }
    if (dname) {
      // The target comes from the RRset that is validated (IN class only, exactly one record), never from
      // whichever DNAME-typed record comes first in the section: a CH-class or unsigned one is ignored.
      const t = singleTarget(dname);
      if ('error' in t) return { kind: 'alias', target: '', verdict: { kind: 'bogus', reason: `DNAME at ${dname.name}: ${t.error}` } };
      const target = dnameTarget(name, dname.name, t.target);
      if (target === undefined) return { kind: 'alias', target: '', verdict: { kind: 'bogus', reason: `DNAME synthesis of ${name} is too long` } };
      const verdict = await this.validateRRset(dname, msg, ctx);
      if (qcode === TYPE_CODES.CNAME) {
        const synth: WireRr = { name, type: 'CNAME', typeCode: TYPE_CODES.CNAME, class: 1, ttl: dname.rrs[0]!.ttl, data: target };
        return { kind: 'data', rrs: [synth], verdict };
      }
      return { kind: 'alias', target, verdict };
    }
    const data = answers.get(`${name}|${qcode}`);
    if (data) {
      const verdict = await this.validateRRset(data, msg, ctx);
      const rrs = msg.answers.filter((rr) => rr.name === name && rr.typeCode === qcode && rr.class === CLASS_IN);
      return { kind: 'data', rrs, verdict };
    }
    if (qcode !== TYPE_CODES.CNAME) {
      const cname = answers.get(`${name}|${TYPE_CODES.CNAME}`);
      if (cname) {
        const t = singleTarget(cname);
        if ('error' in t) return { kind: 'alias', target: '', verdict: { kind: 'bogus', reason: `CNAME at ${name}: ${t.error}` } };
        const verdict = await this.validateRRset(cname, msg, ctx);
        return { kind: 'alias', target: t.target, verdict };
      }
    }
    const verdict = await this.validateDenial(msg, name, qcode, ctx);
    return { kind: 'negative', rcode: msg.rcodeName, verdict };
  }

  /**
   * Signer names that may count for data owned by `owner` (RFC 4035 §5.3.1): the owner itself or an
   * ancestor, and at or below the trust anchor chosen by the OWNER (the closest at or above it) — so a
   * signer field (attacker-supplied) above that anchor or beside the owner's ancestry is ignored, and
   * never picks the anchor. Deepest first, at most MAX_SIGNER_CANDIDATES distinct names.
   */
  private candidateSigners(owner: string, signers: string[]): string[] {
    const anchor = this.walker.anchorFor(owner);
    if (anchor === undefined) return [];
    return [...new Set(signers)]
      .filter((s) => isAtOrBelow(owner, s) && isAtOrBelow(s, anchor))
      .sort((a, b) => labelCount(b) - labelCount(a))
      .slice(0, MAX_SIGNER_CANDIDATES);
  }

  /**
   * The keys of `signer` if the chain of trust, walked from the anchor down to the SIGNER (as Unbound
   * does), ends in a secure zone whose apex is exactly `signer`. A forged signer deeper than the real
   * zone meets "no zone cut here" proofs on the way: the walk ends in the real zone, and that RRSIG
   * does not count. DS denials below the signer (names that are no zone cut) are never asked.
   */
  private async signerZone(signer: string, what: string, ctx: LookupContext): Promise<Extract<ZoneState, { kind: 'secure' }> | { why: string }> {
    const st = await this.walker.walk(signer, ctx);
    if (st.kind === 'secure' && st.zone === signer) return st;
    const why =
      st.kind === 'secure'
        ? `signer ${signer} is not a zone apex (the chain of trust ends in ${st.zone})`
        : st.kind === 'insecure'
          ? `signer ${signer} is at or below the insecure delegation ${st.zone}`
          : `signer ${signer}: ${st.detail}`;
    ctx.trace.add('RRSIG', what, 'info', `${why}: its signatures do not count`);
    return { why };
  }

  /**
   * RFC 4035 §5.3: an RRset is secure when an RRSIG by a signer that is a secure zone reached by the
   * chain of trust (and an ancestor-or-self of the owner) verifies with that zone's keys. The signer
   * field names the zone that holds the RRset (§5.3.1), so the chain is walked to the signer, not to the
   * owner: DS denials at names between the zone apex and the owner (no zone cuts) are irrelevant to it.
   * When no RRSIG counts, the owner's own zone decides: insecure only if the walk down to the owner
   * proves an unsigned delegation, bogus if the owner is in a secure zone.
   */
  private async validateRRset(set: RRset, msg: WireMessage, ctx: LookupContext): Promise<Verdict> {
    const what = `${set.name}/${typeName(set.typeCode)}`;
    const failures: string[] = [];
    let signedBySecureZone = false; // a secure signer zone was reached but its RRSIG did not verify
    for (const signer of this.candidateSigners(
      set.name,
      set.sigs.map((s) => s.signer),
    )) {
      const st = await this.signerZone(signer, what, ctx);
      if ('why' in st) {
        failures.push(st.why);
        continue;
      }
      const v = await verifyRRset(set, { zone: st.zone, keys: st.keys }, ctx.nowSec, ctx.budget);
      if (!v.ok) {
        signedBySecureZone = true;
        failures.push(v.reason);
        ctx.trace.add('RRSIG', what, 'info', `RRSIG by ${signer}: ${v.reason}`);
        continue;
      }
      return await this.securePositive(set, msg, ctx, st, v);
    }
    const ignored = set.sigs.map((s) => s.signer).filter((s, i, a) => a.indexOf(s) === i);
    const why = failures.length ? ` (${failures.slice(0, 3).join('; ')})` : ignored.length ? ` (signers: ${ignored.slice(0, 3).join(', ')})` : '';
    const own = await this.walker.walk(set.name, ctx);
    // A checked proof of an unsigned delegation (or opt-out span, or unsupported algorithms) between
    // the signer and the owner makes signatures from above it irrelevant: the owner's zone is unsigned.
    if (own.kind === 'insecure') {
      ctx.trace.add('RRSIG', what, 'insecure', `${set.name} is at or below the insecure delegation ${own.zone} (${own.reason})`);
      return { kind: 'insecure', ttl: Math.min(...set.rrs.map((r) => r.ttl)), why: own.reason };
    }
    if (own.kind === 'secure') {
      if (set.sigs.length === 0) return this.bogus(ctx, 'RRSIG', what, `no RRSIG, but ${own.zone} is a secure zone`);
      return this.bogus(ctx, 'RRSIG', what, `no RRSIG by ${own.zone}, the zone ${set.name} is in, validates${why}`);
    }
    if (signedBySecureZone) return this.bogus(ctx, 'RRSIG', what, `no RRSIG by a secure signer zone validates${why}`);
    return errorVerdict(own);
  }

  /** A verified RRset: secure, unless it is a wildcard expansion (RFC 4035 §5.3.4) whose proof fails or is opt-out. */
  private async securePositive(
    set: RRset,
    msg: WireMessage,
    ctx: LookupContext,
    st: Extract<ZoneState, { kind: 'secure' }>,
    v: Extract<VerifyResult, { ok: true }>,
  ): Promise<Verdict> {
    const what = `${set.name}/${typeName(set.typeCode)}`;
    let ttl = Math.min(v.ttl, st.ttl);
    if (!v.wildcard) {
      ctx.trace.add('RRSIG', what, 'ok', `RRSIG ${v.key.keyTag}/${algorithmName(v.key.algorithm)} by ${st.zone} validates`);
      return { kind: 'secure', ttl };
    }
    ctx.trace.add(
      'RRSIG',
      what,
      'ok',
      `RRSIG ${v.key.keyTag}/${algorithmName(v.key.algorithm)} by ${st.zone} validates (wildcard expansion, labels ${v.sig.labels})`,
    );
    // RFC 4035 §5.3.4 / RFC 5155 §8.8: the expansion needs a proof that no closer name exists.
    const den = await validatedDenial(groupRRsets(msg.authorities), { zone: st.zone, keys: st.keys }, ctx);
    if ('error' in den) return this.bogus(ctx, 'NSEC', what, den.error);
    let proof: Proof;
    let overLimit: number | undefined;
    if (den.nsecs.length) proof = proveWildcardAnswer(den.nsecs, set.name, st.zone, v.sig.labels);
    else if (den.nsec3s.length) {
      const s3 = new Nsec3Set(den.nsec3s, st.zone, ctx.budget);
      if (s3.records.length === 0) return this.bogus(ctx, 'NSEC3', what, 'no usable NSEC3 record');
      proof = nsec3ProveWildcardAnswer(s3, set.name, v.sig.labels);
      overLimit = s3.tooManyIterations ? s3.iterations : undefined;
    } else proof = { ok: false, reason: `wildcard answer for ${set.name} without NSEC/NSEC3 proof` };
    const kind = den.nsecs.length ? 'NSEC' : 'NSEC3';
    if (!proof.ok) return this.bogus(ctx, kind, what, proof.reason);
    ttl = Math.min(ttl, den.ttl);
    return this.provenVerdict(ctx, kind, what, proof, overLimit, ttl, 'there');
  }

  /**
   * The verdict of a proof that passed every check: secure, or insecure for an opt-out span (RFC 5155
   * §9.2: an unsigned delegation may exist there) or — after the same checks — for NSEC3 over the
   * iteration limit (RFC 9276 §3.2, reason `nsec3-iterations`, which DANE treats as a lookup failure).
   */
  private provenVerdict(
    ctx: LookupContext,
    kind: string,
    what: string,
    proof: Extract<Proof, { ok: true }>,
    overLimit: number | undefined,
    ttl: number,
    where: string,
  ): Verdict {
    if (proof.insecure) {
      ctx.trace.add(kind, what, 'insecure', `${proof.detail} (opt-out: an unsigned delegation may exist ${where})`);
      return { kind: 'insecure', ttl, why: 'opt-out' };
    }
    if (overLimit !== undefined) {
      ctx.trace.add(
        kind,
        what,
        'insecure',
        `${proof.detail}; but ${overLimit} NSEC3 iterations exceed ${MAX_NSEC3_ITERATIONS}: insecure (RFC 9276 §3.2, reason nsec3-iterations)`,
      );
      return { kind: 'insecure', ttl, why: 'nsec3-iterations' };
    }
    ctx.trace.add(kind, what, 'ok', proof.detail);
    return { kind: 'secure', ttl };
  }

  /**
   * RFC 4035 §5.4, RFC 5155 §8: NXDOMAIN and NODATA must be proven in a secure zone. As for RRsets,
   * the zone is the signer of the SOA/NSEC/NSEC3 records, reached by walking the chain to that signer
   * (a candidate only if it is an ancestor-or-self of the queried name below the name's anchor).
   */
  private async validateDenial(msg: WireMessage, name: string, qcode: number, ctx: LookupContext): Promise<Verdict> {
    const what = `${name}/${typeName(qcode)}`;
    const rcode = msg.rcodeName;
    if (rcode !== 'NOERROR' && rcode !== 'NXDOMAIN') return { kind: 'indeterminate', reason: `${rcode} for ${what}` };
    const auth = groupRRsets(msg.authorities);
    const signers = [...auth.values()]
      .filter((s) => s.typeCode === TYPE_CODES.NSEC || s.typeCode === TYPE_CODES.NSEC3 || s.typeCode === TYPE_CODES.SOA)
      .flatMap((s) => s.sigs.map((g) => g.signer));
    const failures: string[] = [];
    let signedBySecureZone = false;
    let insecure: Verdict | undefined;
    for (const signer of this.candidateSigners(name, signers)) {
      const st = await this.signerZone(signer, what, ctx);
      if ('why' in st) {
        failures.push(st.why);
        continue;
      }
      const r = await this.proveDenial(auth, rcode, name, qcode, st, what, ctx);
      if (r.kind === 'secure') return r;
      if (!('reason' in r)) insecure ??= r;
      else {
        signedBySecureZone = true;
        failures.push(r.reason);
        ctx.trace.add('denial', what, 'info', `by ${signer}: ${r.reason}`);
      }
    }
    // The zone's own signed proof said insecure (opt-out span, or its NSEC3 over the iteration limit).
    if (insecure) return insecure;
    const own = await this.walker.walk(name, ctx);
    if (own.kind === 'insecure') {
      const soa = [...auth.values()].find((s) => s.typeCode === TYPE_CODES.SOA && isAtOrBelow(name, s.name));
      const negTtl = soa ? Math.min(soa.rrs[0]!.ttl, soaMinimum(soa), MAX_NEGATIVE_TTL) : DEFAULT_NEGATIVE_TTL;
      ctx.trace.add('denial', what, 'insecure', `${rcode} in a zone below the insecure delegation ${own.zone} (${own.reason})`);
      return { kind: 'insecure', ttl: negTtl, why: own.reason };
    }
    if (signedBySecureZone) return this.bogus(ctx, 'denial', what, failures[0]!);
    if (own.kind === 'secure') {
      const why = failures.length ? ` (${failures.slice(0, 3).join('; ')})` : '';
      return this.bogus(ctx, 'denial', what, `${rcode} without NSEC/NSEC3 records signed by ${own.zone}, a secure zone${why}`);
    }
    return errorVerdict(own);
  }

  /** The denial proof by one secure signer zone `st` (its SOA, NSEC/NSEC3 records); failures are returned, not traced as the verdict. */
  private async proveDenial(
    auth: Map<string, RRset>,
    rcode: string,
    name: string,
    qcode: number,
    st: Extract<ZoneState, { kind: 'secure' }>,
    what: string,
    ctx: LookupContext,
  ): Promise<Verdict> {
    const fail = (reason: string): Verdict => ({ kind: 'bogus', reason });
    const zk = { zone: st.zone, keys: st.keys };
    const den = await validatedDenial(auth, zk, ctx);
    if ('error' in den) return fail(den.error);
    if (den.nsecs.length === 0 && den.nsec3s.length === 0) return fail(`${rcode} without NSEC/NSEC3 records signed by ${st.zone}, a secure zone`);
    // RFC 2308 §5 / RFC 4035 §5.4: the negative TTL is the smaller of the validated SOA's TTL and MINIMUM,
    // capped by the validated NSEC/NSEC3 TTLs; an SOA that does not validate only lowers it to the default.
    let ttl = Math.min(den.ttl, MAX_NEGATIVE_TTL);
    const soa = auth.get(`${st.zone}|${TYPE_CODES.SOA}`);
    const sv = soa && soa.rrs.length === 1 ? await verifyRRset(soa, zk, ctx.nowSec, ctx.budget) : undefined;
    if (soa && sv?.ok) ttl = Math.min(ttl, sv.ttl, soaMinimum(soa));
    else ttl = Math.min(ttl, DEFAULT_NEGATIVE_TTL);
    let proof: Proof;
    let kind = 'NSEC';
    let overLimit: number | undefined;
    if (den.nsecs.length) {
      proof = rcode === 'NXDOMAIN' ? proveNxdomain(den.nsecs, name, st.zone) : proveNodata(den.nsecs, name, qcode, st.zone);
    } else {
      kind = 'NSEC3';
      const s3 = new Nsec3Set(den.nsec3s, st.zone, ctx.budget);
      if (s3.records.length === 0) return fail('no usable NSEC3 record');
      await s3.prepare(name);
      // Over the iteration limit the proof is checked exactly like any other (issue 13): an on-path
      // attacker replaying genuine signed high-iteration NSEC3 records that do not cover the name gets
      // bogus, never insecure. Unbound answers insecure here without looking (ARCHITECTURE.md).
      proof = rcode === 'NXDOMAIN' ? nsec3ProveNxdomain(s3, name) : nsec3ProveNodata(s3, name, qcode);
      overLimit = s3.tooManyIterations ? s3.iterations : undefined;
    }
    if (!proof.ok) return fail(`${rcode} not proven: ${proof.reason}${overLimit !== undefined ? ` (NSEC3 with ${overLimit} iterations)` : ''}`);
    return this.provenVerdict(ctx, kind, what, proof, overLimit, ttl, 'here');
  }

  private bogus(ctx: LookupContext, kind: string, what: string, reason: string): Verdict {
    ctx.trace.add(kind, what, 'bogus', reason);
    return { kind: 'bogus', reason: `${what}: ${reason}` };
  }
}

function errorVerdict(st: ZoneState): Verdict {
  if (st.kind === 'bogus' || st.kind === 'indeterminate') return { kind: st.kind, reason: st.detail };
  return { kind: 'bogus', reason: 'unexpected chain state' };
}

function soaMinimum(soa: RRset): number {
  const r = soa.rrs[0]!.rdata;
  return r.length >= 4 ? r.readUInt32BE(r.length - 4) : DEFAULT_NEGATIVE_TTL;
}

/** Does the reply carry anything owned by `name` (or a DNAME above it)? Then it answers for it too. */
function mentions(msg: WireMessage, name: string): boolean {
  return msg.answers.some(
    (rr) => rr.class === CLASS_IN && (rr.name === name || (rr.typeCode === TYPE_CODES.DNAME && rr.name !== name && isAtOrBelow(name, rr.name))),
  );
}

/** The one target of a CNAME or DNAME RRset (RFC 2181 §10.1, RFC 6672 §2.4: a singleton RRset), from its RDATA. */
function singleTarget(set: RRset): { target: string } | { error: string } {
  const distinct = [...new Map(set.rrs.map((r) => [r.rdata.toString('hex'), r.rdata])).values()];
  if (distinct.length !== 1) return { error: `${distinct.length} records in a singleton RRset` };
  const n = readPlainName(distinct[0]!, 0);
  if (!n || n.end !== distinct[0]!.length) return { error: 'target name does not parse' };
  return { target: n.name };
}

function failure<T extends QueryType>(
  qname: string,
  qtype: T,
  kind: 'bogus' | 'indeterminate',
  message: string,
  chain: CnameHop[],
  errorKind: ErrorKind = kind,
): DnsAnswer<T> {
  // As in the stub: an error is never an answer, so no part of it reads as secure (the hops keep their own status in `chain`).
  return failedAnswer(
    qname,
    qtype,
    kind,
    { kind: errorKind, message },
    {
      rcode: kind === 'bogus' ? 'SERVFAIL' : '',
      chain,
      canonicalName: chain.length ? chain[chain.length - 1]!.target : qname,
    },
  );
}

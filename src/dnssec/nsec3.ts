/**
 * Denial of existence with NSEC3 (RFC 5155 §8; RFC 9276). Inputs are NSEC3
 * records already validated as signed by `zone`.
 */
import { createHash } from 'node:crypto';
import { TYPE_CODES } from '../dns/wire.js';
import { type Budget, MAX_NSEC3_ITERATIONS } from './budget.js';
import { canonicalWire, childToward, isAtOrBelow, labelCount, labelsOf, parentOf, suffix } from './names.js';
import { NSEC3_OPT_OUT, type Nsec3 } from './records.js';
import type { CutProof, Proof } from './nsec.js';

const T = TYPE_CODES;
const B32HEX = '0123456789abcdefghijklmnopqrstuv';

export function base32hexEncode(b: Buffer): string {
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of b) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += B32HEX[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += B32HEX[(value << (5 - bits)) & 31];
  return out;
}

export function base32hexDecode(s: string): Buffer | undefined {
  let bits = 0;
  let value = 0;
  const out: number[] = [];
  for (const ch of s.toLowerCase()) {
    const v = B32HEX.indexOf(ch);
    if (v < 0) return undefined;
    value = ((value << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** RFC 5155 §5: IH(salt, x, 0) = H(x | salt); IH(salt, x, k) = H(IH(salt, x, k-1) | salt). */
export function nsec3Hash(name: string, salt: Buffer, iterations: number): Buffer {
  let h = createHash('sha1').update(canonicalWire(name)).update(salt).digest();
  for (let i = 0; i < iterations; i++) h = createHash('sha1').update(h).update(salt).digest();
  return h;
}

export interface OwnedNsec3 {
  owner: string;
  nsec3: Nsec3;
}
interface N3 {
  hash: Buffer;
  rec: Nsec3;
  owner: string;
}

export type Nsec3Proof = Proof & { optOut?: boolean };

/**
 * The NSEC3 records of one zone with one parameter set, ready for proofs.
 * RFC 5155 §8.1–8.2: ignore records with an unknown hash algorithm or flags,
 * or owners that are not one base32hex label directly below the zone.
 */
export class Nsec3Set {
  readonly records: N3[] = [];
  readonly iterations: number = 0;
  private readonly salt: Buffer = Buffer.alloc(0);
  private readonly memo = new Map<string, Buffer>();

  constructor(
    input: OwnedNsec3[],
    readonly zone: string,
    private readonly budget: Budget,
  ) {
    // Records may carry different parameters (a parameter change in progress, or an old signed record
    // replayed next to the real proof). The parameter set is not taken from whichever record comes
    // first: sets within the iteration limit are preferred, then the set with the most records — so a
    // replayed high-iteration record cannot turn a provable answer into "insecure" (RFC 9276 §3.2).
    const groups = new Map<string, N3[]>();
    for (const { owner, nsec3 } of input) {
      if (nsec3.hashAlgorithm !== 1 || (nsec3.flags & ~NSEC3_OPT_OUT) !== 0) continue;
      if (parentOf(owner) !== zone) continue;
      const hash = base32hexDecode(labelsOf(owner)[0]!);
      if (hash?.length !== 20 || nsec3.nextHash.length !== 20) continue;
      const k = `${nsec3.iterations}|${nsec3.salt.toString('hex')}`;
      const g = groups.get(k) ?? [];
      g.push({ hash, rec: nsec3, owner });
      groups.set(k, g);
    }
    const ranked = [...groups.values()].sort((a, b) => {
      const la = a[0]!.rec.iterations <= MAX_NSEC3_ITERATIONS ? 0 : 1;
      const lb = b[0]!.rec.iterations <= MAX_NSEC3_ITERATIONS ? 0 : 1;
      return la - lb || b.length - a.length || a[0]!.rec.iterations - b[0]!.rec.iterations;
    });
    const chosen = ranked[0];
    if (chosen) {
      this.iterations = chosen[0]!.rec.iterations;
      this.salt = chosen[0]!.rec.salt;
      this.records.push(...chosen);
    }
  }

  /**
   * RFC 9276 §3.2: over MAX_NSEC3_ITERATIONS a proof that passes is only insecure (`nsec3-iterations`).
   * The proofs below are still checked in full (the work is bounded by Budget's hash rounds).
   */
  get tooManyIterations(): boolean {
    return this.iterations > MAX_NSEC3_ITERATIONS;
  }

  hash(name: string): Buffer {
    let h = this.memo.get(name);
    if (!h) {
      this.budget.spendNsec3Hash(this.iterations);
      h = nsec3Hash(name, this.salt, this.iterations);
      this.memo.set(name, h);
    }
    return h;
  }

  /**
   * Compute, in slices that yield to the event loop (`Budget.pace`), the hashes a proof about `qname`
   * needs most: its ancestors from the deepest up to the first that an NSEC3 record matches — the
   * closest-encloser search of RFC 5155 §8.3, where a long nonexistent name costs up to 127 hashes. The
   * proofs then find them memoised and compute at most the name itself and the wildcard synchronously.
   * Charges the same hashes the proof would (each name once).
   */
  async prepare(qname: string): Promise<void> {
    if (!isAtOrBelow(qname, this.zone)) return;
    for (let n = labelCount(qname) - 1; n >= labelCount(this.zone); n--) {
      const name = suffix(qname, n);
      if (!this.memo.has(name)) await this.budget.pace();
      const h = this.hash(name);
      if (this.records.some((r) => r.hash.equals(h))) return;
    }
  }

  match(name: string): N3 | undefined {
    const h = this.hash(name);
    return this.records.find((r) => r.hash.equals(h));
  }

  cover(name: string): N3 | undefined {
    const h = this.hash(name);
    return this.records.find((r) => {
      const last = Buffer.compare(r.rec.nextHash, r.hash) <= 0;
      if (Buffer.compare(r.hash, h) >= 0) return last && Buffer.compare(h, r.rec.nextHash) < 0;
      return last || Buffer.compare(h, r.rec.nextHash) < 0;
    });
  }

  /**
   * RFC 5155 §8.3 closest provable encloser of `qname`: the longest ancestor
   * with a matching NSEC3, and an NSEC3 covering the next closer name.
   */
  closestEncloser(qname: string): { ce: string; nc: string; ncCover: N3 } | { error: string } {
    if (!isAtOrBelow(qname, this.zone)) return { error: `${qname} is not in ${this.zone}` };
    for (let n = labelCount(qname) - 1; n >= labelCount(this.zone); n--) {
      const ce = suffix(qname, n);
      const m = this.match(ce);
      if (!m) continue;
      const t = m.rec.types;
      // A matching NSEC3 at a delegation (NS without SOA) or DNAME cannot prove names below it.
      if ((t.has(T.NS) && !t.has(T.SOA)) || t.has(T.DNAME)) return { error: `closest encloser ${ce} is a delegation or DNAME` };
      const nc = childToward(qname, ce);
      const ncCover = this.cover(nc);
      if (!ncCover) return { error: `no NSEC3 covers the next closer name ${nc}` };
      return { ce, nc, ncCover };
    }
    return { error: `no closest encloser for ${qname} in ${this.zone}` };
  }
}

function show(r: N3): string {
  return `NSEC3 ${r.owner.split('.')[0]}${r.rec.flags & NSEC3_OPT_OUT ? ' (opt-out)' : ''}`;
}

function denies(r: N3, qtype: number, name: string, zone: string): string | undefined {
  const t = r.rec.types;
  if (t.has(qtype)) return `${show(r)} lists the type`;
  if (t.has(T.CNAME)) return `${show(r)} has a CNAME`;
  if (qtype === T.DS) {
    if (t.has(T.SOA) && name !== '.') return `${show(r)} is the child zone's apex, it cannot deny DS`;
  } else if (t.has(T.NS) && !t.has(T.SOA) && name !== zone) {
    return `${show(r)} is from the parent side of a delegation`;
  }
  return undefined;
}

const wildcardOf = (ce: string): string => (ce === '.' ? '*' : `*.${ce}`);

/** RFC 5155 §8.4; an opt-out next-closer cover makes the NXDOMAIN insecure (an unsigned delegation may hide there). */
export function nsec3ProveNxdomain(s: Nsec3Set, qname: string): Nsec3Proof {
  const ce = s.closestEncloser(qname);
  if ('error' in ce) return { ok: false, reason: ce.error };
  const wc = wildcardOf(ce.ce);
  const wcover = s.cover(wc);
  if (!wcover) return { ok: false, reason: `no NSEC3 covers the wildcard ${wc}` };
  const optOut = (ce.ncCover.rec.flags & NSEC3_OPT_OUT) !== 0;
  return { ok: true, optOut, insecure: optOut, detail: `closest encloser ${ce.ce}; ${show(ce.ncCover)} covers ${ce.nc}; ${show(wcover)} covers ${wc}` };
}

/** RFC 5155 §8.5–8.7. */
export function nsec3ProveNodata(s: Nsec3Set, qname: string, qtype: number): Nsec3Proof {
  const m = s.match(qname);
  if (m) {
    const why = denies(m, qtype, qname, s.zone);
    if (why) return { ok: false, reason: why };
    return { ok: true, detail: `${show(m)} matches ${qname} and does not list the type` };
  }
  const ce = s.closestEncloser(qname);
  if ('error' in ce) return { ok: false, reason: `no NSEC3 matches ${qname}; ${ce.error}` };
  // §8.6: DS NODATA under an opt-out span — an unsigned delegation, insecure.
  if (qtype === T.DS && ce.ncCover.rec.flags & NSEC3_OPT_OUT) {
    return { ok: true, optOut: true, insecure: true, detail: `${show(ce.ncCover)} covers ${ce.nc}: opt-out span, insecure` };
  }
  // §8.7: wildcard NODATA.
  const wc = wildcardOf(ce.ce);
  const wm = s.match(wc);
  if (!wm) return { ok: false, reason: `no NSEC3 matches ${qname} or the wildcard ${wc}` };
  const why = denies(wm, qtype, wc, s.zone);
  if (why) return { ok: false, reason: why };
  // Next closer name in an opt-out span: an unsigned delegation may exist there, so the wildcard NODATA
  // is only insecure (RFC 5155 §12.2; Unbound's nsec3_do_prove_nodata does the same).
  const optOut = (ce.ncCover.rec.flags & NSEC3_OPT_OUT) !== 0;
  return {
    ok: true,
    optOut,
    insecure: optOut,
    detail: `closest encloser ${ce.ce}; ${show(ce.ncCover)} covers ${ce.nc}; ${show(wm)} at ${wc} does not list the type`,
  };
}

/** RFC 5155 §8.8: the next closer name of the wildcard's closest encloser must be covered. */
export function nsec3ProveWildcardAnswer(s: Nsec3Set, qname: string, sigLabels: number): Nsec3Proof {
  // The wildcard *.<suffix(qname, labels)> must be inside the zone, and qname must be longer than it.
  if (sigLabels < labelCount(s.zone)) return { ok: false, reason: `RRSIG labels ${sigLabels} put the wildcard above the zone ${s.zone}` };
  if (sigLabels >= labelCount(qname)) return { ok: false, reason: `RRSIG labels ${sigLabels} do not make ${qname} a wildcard expansion` };
  const nc = suffix(qname, sigLabels + 1);
  const c = s.cover(nc);
  if (!c) return { ok: false, reason: `wildcard answer for ${qname} without an NSEC3 covering ${nc}` };
  // Opt-out span: an unsigned delegation may exist at the next closer name, so the expansion is only
  // insecure (Unbound's nsec3_prove_wildcard does the same), never secure.
  const optOut = (c.rec.flags & NSEC3_OPT_OUT) !== 0;
  return { ok: true, optOut, insecure: optOut, detail: `${show(c)} covers ${nc}: wildcard expansion is legitimate` };
}

/** A DS query for `name` came back without DS: what the NSEC3 records prove (RFC 5155 §8.5–8.6). */
export function nsec3Cut(s: Nsec3Set, name: string): CutProof {
  const m = s.match(name);
  if (m) {
    const t = m.rec.types;
    if (t.has(T.DS)) return { kind: 'bogus', detail: `${show(m)} lists DS but no DS was given` };
    if (t.has(T.SOA)) return { kind: 'bogus', detail: `${show(m)} is the child's apex, it cannot deny DS` };
    if (t.has(T.NS)) return { kind: 'insecure', reason: 'unsigned-delegation', detail: `${show(m)} matches ${name}: delegation without DS` };
    return { kind: 'not-a-cut', detail: `${show(m)} matches ${name}: no NS, not a zone cut` };
  }
  const ce = s.closestEncloser(name);
  if ('error' in ce) return { kind: 'bogus', detail: ce.error };
  if (ce.ncCover.rec.flags & NSEC3_OPT_OUT)
    return { kind: 'insecure', reason: 'opt-out', detail: `${show(ce.ncCover)} covers ${ce.nc}: opt-out span, insecure delegation` };
  return { kind: 'nonexistent', detail: `${show(ce.ncCover)} covers ${ce.nc}: ${name} does not exist` };
}

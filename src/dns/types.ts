/**
 * DNS answers as every later stage sees them: records plus their DNSSEC status.
 *
 * RFC 7672 §2.1.1 / RFC 4035 §4.3: an answer is secure, insecure, bogus or
 * indeterminate. Only `secure` and `insecure` are answers; `bogus` and
 * `indeterminate` (and transport failures) are errors that must never be read
 * as "no records" (digest DANE-1).
 */

export type DnssecStatus = 'secure' | 'insecure' | 'bogus' | 'indeterminate';

/** A transport or server failure: no answer at all. Treated like bogus by callers. */
export type DnsErrorKind = 'servfail' | 'refused' | 'timeout' | 'malformed' | 'notimp' | 'formerr' | 'other';

export interface MxRecord {
  preference: number;
  exchange: string;
}
export interface TlsaRecord {
  usage: number;
  selector: number;
  matchingType: number;
  /** association data */
  data: Buffer;
}

/** Types this relay asks for, with the shape of their parsed data. */
export interface RecordData {
  MX: MxRecord;
  A: string;
  AAAA: string;
  TLSA: TlsaRecord;
  TXT: string; // the strings of one TXT RR joined without separator (RFC 8460 §3)
  CNAME: string;
  /** RFC 1035 §3.3.12: the name an address maps back to (ingress's Received line only) */
  PTR: string;
}
export type QueryType = keyof RecordData;

/**
 * Why an answer is insecure: which proof (or configuration) made it so. Every producer of an
 * `insecure` verdict names one (ARCHITECTURE.md "Where insecure comes from" lists them, and
 * test/dnssec/downgrade.test.ts checks that list against the source).
 *
 * - `unsigned-delegation`: a signed NSEC/NSEC3 proof of a delegation without DS (RFC 4035 §5.2)
 * - `opt-out`: an NSEC3 opt-out span covers the name (RFC 5155 §6, §9.2)
 * - `unsupported-algorithm`: the DS RRset or trust anchor lists only algorithms/digests we do not implement (RFC 4035 §5.2, RFC 6840 §5.2)
 * - `no-trust-anchor`: no configured trust anchor at or above the name
 * - `nsec3-iterations`: the denial (or wildcard proof) uses NSEC3 over the iteration limit (RFC 9276 §3.2).
 *   The proof itself was checked in full; only its iteration count keeps it from being secure. For DANE
 *   this is a lookup failure unless the destination opts in (`nsec3-iterations-insecure`, route/host.ts).
 * - `resolver`: trust-ad mode, the trusted resolver answered without AD (it does not say why)
 */
export type InsecureReason = 'unsigned-delegation' | 'opt-out' | 'unsupported-algorithm' | 'no-trust-anchor' | 'nsec3-iterations' | 'resolver';

/** One hop of alias expansion seen while answering (CNAME, or DNAME's synthesised CNAME). */
export interface CnameHop {
  owner: string;
  target: string;
  status: DnssecStatus;
  insecureReason?: InsecureReason;
}

/**
 * The reason an answer made of several insecure verdicts (alias hops, the answer) carries:
 * `nsec3-iterations` when any of them rests on the iteration limit — the DANE decision could differ
 * without the limit (e.g. an insecure first hop switches TLSA lookups off, DANE-21) — else the first.
 */
export function combineInsecureReasons(reasons: (InsecureReason | undefined)[]): InsecureReason | undefined {
  const known = reasons.filter((r): r is InsecureReason => r !== undefined);
  return known.includes('nsec3-iterations') ? 'nsec3-iterations' : known[0];
}

/**
 * The validation work one lookup did (dnssec/budget.ts counts it). A cached answer did none; the
 * trust-AD stub reports none (its resolver did the work). Per-plan budgets add these up (route/budget.ts).
 */
export interface LookupWork {
  verifications: number;
  nsec3Hashes: number;
  nsec3Rounds: number;
  queries: number;
  yields: number;
}

/** What every answer carries, whatever its verdict. */
interface AnswerBase<T extends QueryType> {
  qname: string;
  qtype: T;
  /** name the records are owned by, after expanding aliases (== qname when no alias) */
  canonicalName: string;
  chain: CnameHop[];
  /** resolver that answered, "ip:port" */
  server?: string;
  /** work done to answer (absent: none, e.g. from the cache) */
  work?: LookupWork;
}

/** NOERROR with empty `records` is NODATA; NXDOMAIN is a negative answer. */
export type AnswerRcode = 'NOERROR' | 'NXDOMAIN';

/**
 * A secure answer (RFC 4035 §4.3): every hop and the answer itself validated. Its first response
 * is then secure too.
 */
export interface SecureAnswer<T extends QueryType = QueryType> extends AnswerBase<T> {
  status: 'secure';
  firstStatus: 'secure';
  rcode: AnswerRcode;
  records: RecordData[T][];
  /** smallest TTL of the records (seconds), for caching */
  ttl: number;
  error?: undefined;
  insecureReason?: undefined;
}

/**
 * An insecure answer: usable, but some hop or the answer itself is provably unsigned — and the
 * proof (or configuration) that made it so is named (DANE-5: one insecure hop makes everything
 * after it insecure). `firstStatus` is that of the first response (DANE-21/22 need it); it is
 * `indeterminate` when the first alias could not be checked on its own (trust-ad).
 */
export interface InsecureAnswer<T extends QueryType = QueryType> extends AnswerBase<T> {
  status: 'insecure';
  firstStatus: DnssecStatus;
  rcode: AnswerRcode;
  records: RecordData[T][];
  ttl: number;
  error?: undefined;
  insecureReason: InsecureReason;
}

export type DnsErrorAnswerKind = DnsErrorKind | 'bogus' | 'indeterminate' | 'loop' | 'depth' | 'budget';

/**
 * No usable answer (DANE-1): bogus data, or no verdict at all (transport failure, alias loop, work
 * limit). Never "no records": it has none, a TTL of 0, and `firstStatus` equal to `status` so no
 * part of it reads as secure (the hops keep their own status in `chain`). `rcode` is the reply's
 * when one came (SERVFAIL, REFUSED, ...), else ''.
 */
export interface FailedAnswer<T extends QueryType = QueryType> extends AnswerBase<T> {
  status: 'bogus' | 'indeterminate';
  firstStatus: 'bogus' | 'indeterminate';
  rcode: string;
  records: never[];
  ttl: 0;
  error: { kind: DnsErrorAnswerKind; message: string };
  insecureReason?: undefined;
  /**
   * A bogus verdict the validator will repeat for at most this many seconds (it rests on a remembered
   * bad key set, forgotten then): the front end keeps it no longer. Absent: BOGUS_TTL.
   */
  retryAfter?: number;
}

/**
 * The result of one lookup (name, type) after following aliases: a secure or insecure answer, or a
 * failure. `status` decides which, so an answer with an error, or a failure with records, cannot be
 * built.
 */
export type DnsAnswer<T extends QueryType = QueryType> = SecureAnswer<T> | InsecureAnswer<T> | FailedAnswer<T>;

/** A failure for (qname, qtype): `status` bogus for data that does not validate, else indeterminate. */
export function failedAnswer<T extends QueryType>(
  qname: string,
  qtype: T,
  status: 'bogus' | 'indeterminate',
  error: FailedAnswer['error'],
  more: { rcode?: string; chain?: CnameHop[]; canonicalName?: string; server?: string } = {},
): FailedAnswer<T> {
  const chain = more.chain ?? [];
  return {
    qname,
    qtype,
    rcode: more.rcode ?? '',
    status,
    firstStatus: status,
    canonicalName: more.canonicalName ?? qname,
    chain,
    records: [],
    ttl: 0,
    error,
    ...(more.server !== undefined ? { server: more.server } : {}),
  };
}

/**
 * A usable answer with its verdict. `firstStatus` only matters when insecure (a secure answer's
 * first response is secure); an insecure verdict without a reason is a bug upstream and throws,
 * which the caching front end turns into an indeterminate failure, never a downgrade.
 */
export function usableAnswer<T extends QueryType>(
  a: AnswerBase<T> & { rcode: AnswerRcode; records: RecordData[T][]; ttl: number },
  status: 'secure' | 'insecure',
  firstStatus: DnssecStatus,
  insecureReason: InsecureReason | undefined,
): SecureAnswer<T> | InsecureAnswer<T> {
  if (status === 'secure') return { ...a, status, firstStatus: 'secure' };
  if (insecureReason === undefined) throw new Error(`insecure answer for ${a.qname}/${a.qtype} without a reason`);
  return { ...a, status, firstStatus, insecureReason };
}

/** True when the answer may be used as an answer (possibly empty). */
export function isAnswer<T extends QueryType>(a: DnsAnswer<T>): a is SecureAnswer<T> | InsecureAnswer<T> {
  return a.status === 'secure' || a.status === 'insecure';
}

/** A deep copy, so one caller mutating an answer cannot affect another (the caching front end hands out copies). */
export function copyAnswer<T extends QueryType>(a: DnsAnswer<T>): DnsAnswer<T> {
  const chain = a.chain.map((h) => ({ ...h }));
  if (!isAnswer(a)) return { ...a, chain, records: [], error: { ...a.error } };
  const records = a.records.map((r) =>
    r !== null && typeof r === 'object' ? { ...r, ...('data' in r ? { data: Buffer.from(r.data) } : {}) } : r,
  ) as RecordData[T][];
  return { ...a, chain, records };
}

/**
 * What every stage uses to ask DNS. Implementations: the trust-AD stub client
 * (dns.mode: trust-ad) and, later, the in-process validator (dns.mode: validate).
 */
export interface Resolver {
  lookup<T extends QueryType>(name: string, type: T): Promise<DnsAnswer<T>>;
  close(): Promise<void>;
}

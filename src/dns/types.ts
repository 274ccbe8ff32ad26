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

export interface MxRecord { preference: number; exchange: string }
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
export interface CnameHop { owner: string; target: string; status: DnssecStatus; insecureReason?: InsecureReason }

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
 * The result of one lookup (name, type) after following aliases.
 *
 * - `rcode` NOERROR with empty `records` is NODATA; NXDOMAIN is a negative answer.
 * - `status` is the status of the whole chain (DANE-5: one insecure hop makes
 *   everything after it insecure; any error makes the lookup an error).
 * - `firstStatus` is the status of the first response (the first alias, or the
 *   answer itself when there is no alias) — DANE-21/22 need it.
 * - `error` is set when there is no usable answer (`status` is then bogus or indeterminate).
 */
export interface DnsAnswer<T extends QueryType = QueryType> {
  qname: string;
  qtype: T;
  rcode: 'NOERROR' | 'NXDOMAIN' | string;
  status: DnssecStatus;
  firstStatus: DnssecStatus;
  /** name the records are owned by, after expanding aliases (== qname when no alias) */
  canonicalName: string;
  chain: CnameHop[];
  records: RecordData[T][];
  /** smallest TTL of the records (seconds), for caching */
  ttl: number;
  error?: { kind: DnsErrorKind | 'bogus' | 'indeterminate' | 'loop' | 'depth'; message: string };
  /** set when `status` (or any hop's) is insecure: why (see InsecureReason) */
  insecureReason?: InsecureReason;
  /** resolver that answered, "ip:port" */
  server?: string;
}

/** True when the answer may be used as an answer (possibly empty). */
export function isAnswer(a: DnsAnswer): boolean {
  return a.error === undefined && (a.status === 'secure' || a.status === 'insecure');
}

/**
 * What every stage uses to ask DNS. Implementations: the trust-AD stub client
 * (dns.mode: trust-ad) and, later, the in-process validator (dns.mode: validate).
 */
export interface Resolver {
  lookup<T extends QueryType>(name: string, type: T): Promise<DnsAnswer<T>>;
  close(): Promise<void>;
}

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

/** One hop of alias expansion seen while answering (CNAME, or DNAME's synthesised CNAME). */
export interface CnameHop { owner: string; target: string; status: DnssecStatus }

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

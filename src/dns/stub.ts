/**
 * `dns.mode: trust-ad` — a stub client of a validating recursive resolver.
 *
 * DNSSEC status comes from the resolver's AD bit (RFC 4035 §3.2.3, §4.9.3),
 * which is only meaningful from a resolver we can trust on the path: loopback
 * or a secured channel (digest DANE-2; `isLoopbackServer` lets the relay
 * enforce that at startup). Queries therefore set RD=1, DO=1 and CD=0 so the
 * resolver validates and tells us the result (RFC 4035 §4.9.1–4.9.2, RFC 6840
 * §5.7; digest DANE-3).
 */
import net from 'node:net';
import {
  failedAnswer,
  isAnswer,
  usableAnswer,
  type CnameHop,
  type DnsAnswer,
  type DnssecStatus,
  type FailedAnswer,
  type QueryType,
  type RecordData,
  type Resolver,
} from './types.js';
import { CachingResolver, type ResolverEngine } from './front.js';
import { CLASS_IN, nameToWire, rcodeName, toRecordData, typeCode, TYPE_CODES, type WireMessage, type WireRr } from './wire.js';
import { isAtOrBelow, splitName } from './name.js';
import { DnsTransport, parseServer, type ServerAddress } from './transport.js';

export { parseServer, type ServerAddress };

export interface StubResolverOptions {
  /** "ip", "ip:port" or "[v6]:port" (port defaults to 53) */
  servers: string[];
  /** per attempt, per server */
  timeoutMs: number;
  /** rounds over the server list */
  attempts: number;
  /** cache positive and negative answers for their TTL; default true */
  cache?: boolean;
  maxCacheEntries?: number;
  /** the exchange with the servers; default a UDP/TCP DnsTransport (tests plug in others) */
  transport?: DnsTransport;
}

/** RFC 7672 §2.1.3 leaves the limit to us; 8 alias hops is ample for real chains. */
export const MAX_ALIAS_DEPTH = 8;
/** RFC 2308 §5: negative TTL = min(SOA TTL, SOA MINIMUM); we cap it at one hour. */
export const MAX_NEGATIVE_TTL = 3600;
export const DEFAULT_NEGATIVE_TTL = 300;

// ---------------------------------------------------------------------------
// Pure helpers

/**
 * DNSSEC status of one response from a validating resolver (digest DANE-1,
 * DANE-3; RFC 4035 §3.2.3, §4.3): NOERROR/NXDOMAIN with AD are secure answers
 * (a secure NXDOMAIN is a proven denial, still an answer), without AD they are
 * insecure answers. Every other RCODE (SERVFAIL — what a validator returns for
 * bogus data — REFUSED, ...) is not an answer: 'indeterminate', which callers
 * treat exactly like bogus.
 */
export function statusFromFlags(rcode: string | number, ad: boolean): DnssecStatus {
  const name = typeof rcode === 'number' ? rcodeName(rcode) : rcode.toUpperCase();
  if (name === 'NOERROR' || name === 'NXDOMAIN') return ad ? 'secure' : 'insecure';
  return 'indeterminate';
}

const LOOPBACK = new net.BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/**
 * True for 127.0.0.0/8 and ::1 (also IPv4-mapped ::ffff:127.x). Digest DANE-2
 * (RFC 4035 §4.9.3, RFC 6698 §8.3): the AD bit is only trusted from such a
 * resolver unless the operator lists a secured channel.
 */
export function isLoopbackServer(s: string): boolean {
  let a: ServerAddress;
  try {
    a = parseServer(s);
  } catch {
    return false;
  }
  return LOOPBACK.check(a.host, a.family === 6 ? 'ipv6' : 'ipv4');
}

// ---------------------------------------------------------------------------
// Resolver

/** The trust-AD resolver: the shared caching front end over the stub engine. */
export class StubResolver extends CachingResolver<StubEngine> {
  readonly servers: ServerAddress[];

  constructor(opts: StubResolverOptions) {
    if (!opts.servers.length) throw new Error('StubResolver needs at least one server');
    const engine = new StubEngine(opts, (n, t) => this.lookup(n, t));
    super(engine, {
      ...(opts.cache !== undefined ? { cache: opts.cache } : {}),
      ...(opts.maxCacheEntries !== undefined ? { maxCacheEntries: opts.maxCacheEntries } : {}),
    });
    this.servers = engine.transport.servers;
  }
}

/** One fresh trust-AD resolution (the front end normalises, caches and shares it). */
class StubEngine implements ResolverEngine {
  readonly transport: DnsTransport;

  /** `lookup`: the front end, for the first alias's own status (cached like any lookup) */
  constructor(
    opts: StubResolverOptions,
    private readonly lookup: Resolver['lookup'],
  ) {
    this.transport = opts.transport ?? new DnsTransport(opts);
  }

  close(): void {
    this.transport.close();
  }

  // -- resolution ------------------------------------------------------------

  /**
   * One lookup, following aliases (RFC 7672 §2.1.3, digest DANE-5). The
   * resolver normally returns the whole chain in one response; if it stops
   * at a target with neither data nor a denial we ask for the target ourselves.
   */
  async resolve<T extends QueryType>(qname: string, qtype: T): Promise<DnsAnswer<T>> {
    const qcode = typeCode(qtype);
    const chain: CnameHop[] = [];
    const statuses: DnssecStatus[] = [];
    const seen = new Set<string>([qname]);
    let cur = qname;
    let ttl = Infinity;
    for (;;) {
      const ex = await this.transport.exchange(cur, qtype);
      if (!ex.ok) return errorAnswer(qname, qtype, ex.kind, ex.message, ex.rcode, chain, cur, ex.server);
      const msg = ex.msg;
      const status = statusFromFlags(msg.rcode, msg.header.ad);
      statuses.push(status);
      const answers = msg.answers.filter((rr) => rr.class === CLASS_IN);

      // Walk the aliases in this response from `cur`. Only records on the
      // path from the name we asked for are used; anything else in the
      // answer section (other owners, other types) is ignored.
      let end = cur;
      if (qtype !== 'CNAME') {
        for (;;) {
          const hop = findAlias(answers, end);
          if (!hop) break;
          if ('error' in hop) return errorAnswer(qname, qtype, 'malformed', hop.error, msg.rcodeName, chain, end, ex.server);
          if (seen.has(hop.target)) {
            return errorAnswer(qname, qtype, 'loop', `alias loop at ${hop.target}`, msg.rcodeName, chain, end, ex.server);
          }
          if (chain.length >= MAX_ALIAS_DEPTH) {
            return errorAnswer(qname, qtype, 'depth', `more than ${MAX_ALIAS_DEPTH} aliases`, msg.rcodeName, chain, end, ex.server);
          }
          seen.add(hop.target);
          chain.push({ owner: end, target: hop.target, status, ...(status === 'insecure' ? { insecureReason: 'resolver' as const } : {}) });
          ttl = Math.min(ttl, hop.ttl);
          end = hop.target;
        }
      }

      let rrs: WireRr[] = answers.filter((rr) => rr.name === end && rr.typeCode === qcode);
      if (qtype === 'CNAME' && rrs.length === 0) {
        // A CNAME-type query below a DNAME is answered by the synthesised CNAME (RFC 6672 §3.1).
        const hop = findAlias(answers, end);
        if (hop && !('error' in hop)) {
          rrs = [{ name: end, type: 'CNAME', typeCode: TYPE_CODES.CNAME, class: CLASS_IN, ttl: hop.ttl, data: hop.target }];
        }
      }
      const records: RecordData[T][] = [];
      for (const rr of rrs) {
        const d = toRecordData(qtype, rr);
        if (d !== undefined) records.push(d);
        ttl = Math.min(ttl, rr.ttl);
      }

      const negative = records.length === 0;
      if (negative && msg.rcodeName === 'NOERROR' && chain.length > 0 && end !== cur && !soaFor(msg, end)) {
        // Incomplete chain: no data and no denial for the target. Ask for it — unless the answer
        // section holds records off the chain: then the chain itself is suspect (a corrupted
        // target), and following it could end in a "secure" denial for the wrong name.
        const stray = strayRecord(answers, chain, end);
        if (stray)
          return errorAnswer(
            qname,
            qtype,
            'malformed',
            `alias chain of ${qname} ends at ${end}, but the answer section holds ${stray.type} for ${stray.name}`,
            msg.rcodeName,
            chain,
            end,
            ex.server,
          );
        cur = end;
        continue;
      }
      if (negative && status === 'secure') {
        const why = secureDenialProblem(msg, answers, chain, end);
        if (why) return errorAnswer(qname, qtype, 'malformed', why, msg.rcodeName, chain, end, ex.server);
      }
      if (negative) ttl = Math.min(ttl, negativeTtl(msg, end));

      const overall: DnssecStatus = statuses.every((s) => s === 'secure') ? 'secure' : 'insecure';
      let firstStatus: DnssecStatus = statuses[0]!;
      if (chain.length > 0 && overall !== 'secure' && statuses[0] !== 'secure') {
        // Digest DANE-5 / RFC 7672 §2.2.2: the first response's AD bit covers
        // the whole chain; the first alias on its own needs its own query.
        const cn = await this.lookup(qname, 'CNAME');
        firstStatus = isAnswer(cn) ? cn.status : 'indeterminate';
        chain[0]!.status = firstStatus;
        if (firstStatus === 'insecure') chain[0]!.insecureReason = 'resolver';
        else delete chain[0]!.insecureReason;
      }
      // trust-ad: the trusted resolver left AD clear; it does not say why (InsecureReason 'resolver').
      const rcode = msg.rcodeName === 'NXDOMAIN' ? 'NXDOMAIN' : 'NOERROR'; // statusFromFlags: only these two are answers
      const base = {
        qname,
        qtype,
        rcode,
        canonicalName: end,
        chain,
        records,
        ttl: Number.isFinite(ttl) ? ttl : DEFAULT_NEGATIVE_TTL,
        server: ex.server,
      } as const;
      return usableAnswer(base, overall, firstStatus, overall === 'insecure' ? 'resolver' : undefined);
    }
  }
}

// ---------------------------------------------------------------------------
// Alias and negative-answer helpers

type AliasHop = { target: string; ttl: number } | { error: string };

/**
 * The alias that redirects `owner` in this answer section, if any. A DNAME at
 * a proper ancestor (RFC 6672 §2.2–2.3) wins over a CNAME, since the CNAME
 * next to it is only its unsigned synthesis (RFC 6672 §3.4, RFC 4035 §3.2.3);
 * we synthesise the same target ourselves.
 */
function findAlias(answers: WireRr[], owner: string): AliasHop | undefined {
  let dname: { name: string; data: string; ttl: number } | undefined;
  for (const rr of answers) {
    if (rr.type !== 'DNAME' || rr.name === owner || !isAtOrBelow(owner, rr.name)) continue;
    if (!dname || rr.name.length > dname.name.length) dname = { name: rr.name, data: rr.data, ttl: rr.ttl };
  }
  if (dname) {
    const target = dnameTarget(owner, dname.name, dname.data);
    if (target === undefined) return { error: `DNAME synthesis of ${owner} is too long` };
    return { target, ttl: dname.ttl };
  }
  const cnames = answers.filter((rr): rr is WireRr & { type: 'CNAME'; data: string } => rr.type === 'CNAME' && rr.name === owner);
  if (cnames.length === 0) return undefined;
  const targets = new Set(cnames.map((rr) => rr.data));
  // RFC 2181 §10.1: at most one CNAME per owner.
  if (targets.size > 1) return { error: `several CNAME targets at ${owner}` };
  return { target: cnames[0]!.data, ttl: Math.min(...cnames.map((c) => c.ttl)) };
}

/**
 * RFC 6672 §2.2: the name a DNAME at `dnameOwner` (pointing at `dnameData`)
 * substitutes for `owner`; undefined when the result is too long (YXDOMAIN).
 * Shared with the validator.
 */
export function dnameTarget(owner: string, dnameOwner: string, dnameData: string): string | undefined {
  // Labels, not characters: an escaped dot inside a label (`a\.b`) is not a label boundary.
  const ownerLabels = splitName(owner);
  const keep = ownerLabels.length - splitName(dnameOwner).length;
  if (keep <= 0 || !isAtOrBelow(owner, dnameOwner)) return undefined;
  if (dnameOwner !== '.' && !owner.endsWith('.' + dnameOwner)) return undefined; // not canonical text: refuse rather than guess
  // Names here are canonical presentation strings, so the first `keep` labels are the text before
  // the owner's suffix "." + dnameOwner (isAtOrBelow has just checked that suffix label-wise).
  const prefix = dnameOwner === '.' ? owner : owner.slice(0, owner.length - dnameOwner.length - 1);
  const target = dnameData === '.' ? prefix : `${prefix}.${dnameData}`;
  try {
    nameToWire(target); // RFC 6672 §2.2: longer than 255 octets on the wire → YXDOMAIN
  } catch {
    return undefined;
  }
  return target;
}

/**
 * A secure denial (NXDOMAIN/NODATA with AD) is the one answer that switches DANE off for a name
 * (RFC 7672 §2.2.3: no TLSA → no DANE), so it is taken only when it looks like one: the zone's
 * SOA in the authority section (RFC 4035 §3.1.3.1–3.1.3.2, RFC 2308 §3) and nothing in the answer
 * section but the alias chain that led here and signatures. Anything else — an RRset under
 * another owner or of another type, a corrupted count that left the SOA out — denies nothing:
 * the reply is malformed, and a lookup error never downgrades (digest DANE-1, DANE-33).
 */
function secureDenialProblem(msg: WireMessage, answers: WireRr[], chain: CnameHop[], end: string): string | undefined {
  if (!soaFor(msg, end)) return `secure ${msg.rcodeName} for ${end} without the zone's SOA in the authority section`;
  const stray = strayRecord(answers, chain, end);
  if (stray) return `secure ${msg.rcodeName} for ${end} with an unrelated ${stray.type} record for ${stray.name} in the answer section`;
  return undefined;
}

/** A record in the answer section that is neither the alias chain to `end` nor a signature. */
function strayRecord(answers: WireRr[], chain: CnameHop[], end: string): WireRr | undefined {
  const owners = new Set([...chain.map((h) => h.owner), end]);
  const onPath = (rr: WireRr): boolean =>
    rr.typeCode === TYPE_CODES.RRSIG ||
    (rr.typeCode === TYPE_CODES.CNAME && owners.has(rr.name)) ||
    (rr.typeCode === TYPE_CODES.DNAME && [...owners].some((o) => o !== rr.name && isAtOrBelow(o, rr.name)));
  return answers.find((rr) => !onPath(rr));
}

function soaFor(msg: WireMessage, name: string): WireRr | undefined {
  return msg.authorities.find((rr) => rr.typeCode === TYPE_CODES.SOA && isAtOrBelow(name, rr.name));
}

/** RFC 2308 §5: min(SOA TTL, SOA MINIMUM), capped; 300 s when the server sent no SOA. */
function negativeTtl(msg: WireMessage, name: string): number {
  const soa = soaFor(msg, name) ?? msg.authorities.find((rr) => rr.typeCode === TYPE_CODES.SOA);
  if (!soa) return DEFAULT_NEGATIVE_TTL;
  const min = soa.type === 'SOA' ? soa.data.minimum : DEFAULT_NEGATIVE_TTL;
  return Math.min(soa.ttl, min, MAX_NEGATIVE_TTL);
}

function errorAnswer<T extends QueryType>(
  qname: string,
  qtype: T,
  kind: FailedAnswer['error']['kind'],
  message: string,
  rcode: string,
  chain: CnameHop[] = [],
  canonicalName?: string,
  server?: string,
): DnsAnswer<T> {
  return failedAnswer(
    qname,
    qtype,
    'indeterminate',
    { kind, message },
    { rcode, chain, ...(canonicalName !== undefined ? { canonicalName } : {}), ...(server !== undefined ? { server } : {}) },
  );
}

/**
 * Per-MX-host resolution: address records first, then TLSA (RFC 7672 §2.2.2–2.2.3),
 * then the TLS plan. Resolution happens lazily, host by host, in MX order, so a host
 * that is never reached is never looked up.
 */
import type { DnsAnswer, DnssecStatus, InsecureReason, Resolver, TlsaRecord } from '../dns/types.js';
import { isAnswer } from '../dns/types.js';
import type { TlsLevel } from '../dane/levels.js';
import { decideTls, referenceNames, tlsaCandidates, type TlsPlan, type TlsaOutcome } from '../dane/policy.js';
import { isUsable } from '../dane/tlsa.js';
import { MAX_NSEC3_ITERATIONS } from '../dnssec/budget.js';
import type { MxHost } from './mx.js';

export interface HostContext {
  resolver: Resolver;
  /** the next-hop (recipient) domain */
  nextHop: string;
  expandedNextHop?: string;
  mxStatus: DnssecStatus;
  implicit: boolean;
  level: TlsLevel;
  /** port actually connected to; also the TLSA owner's port label (DANE-30) */
  port: number;
  /** DANE-15 opt-in (per destination): use the MX host's TLSA after an insecure MX; the MX name is the only reference identifier and the plan is labelled `trusted` */
  trustInsecureMx?: boolean;
  /** why the MX answer is insecure, when it is */
  mxInsecureReason?: InsecureReason;
  /**
   * Per-destination opt-in (`nsec3-iterations-insecure` in tls_policy): an answer insecure only because
   * its NSEC3 uses more iterations than the limit (RFC 9276 §3.2) is taken as insecure, as Unbound does.
   * Without it such an answer is a lookup failure wherever it could switch DANE off (issue 13).
   */
  nsec3IterationsInsecure?: boolean;
}

/** What was learnt about a host on the way to its plan (or to skipping it). */
export interface HostFacts {
  host: string;
  preference: number;
  addresses: string[];
  mxStatus: DnssecStatus;
  addressStatus?: DnssecStatus;
  tlsaName?: string;
  tlsaStatus?: DnssecStatus;
  tlsaRecords?: TlsaRecord[];
  /** why an insecure address / TLSA answer is insecure (for `check` and the log) */
  addressInsecureReason?: InsecureReason;
  tlsaInsecureReason?: InsecureReason;
}

/**
 * Why a host is not contacted, as facts (the `reason` text is for logs and DSNs only; nothing
 * reads it back): a failed lookup (DANE-20/23/33), an answer insecure only by the NSEC3 iteration
 * limit (issue 13), no address at all, or a dane-only destination without usable DANE (DANE-45).
 */
export type SkipCause =
  | { kind: 'lookup-failed'; rrtype: 'A' | 'AAAA' | 'TLSA' /** error kind (servfail, timeout, …) or DNSSEC status (bogus, indeterminate) */; problem: string }
  | { kind: 'nsec3-iterations'; rrtype: 'MX' | 'A' | 'AAAA' | 'TLSA' }
  | { kind: 'no-address' }
  /** `tlsaInsecure`: the TLSA answer was insecure (a zone signed without DS below a secure MX, or a broken denial) */
  | { kind: 'dane-required'; tlsaInsecure?: boolean };

export interface HostSkip {
  reason: string;
  code: string;
  resultType?: 'dnssec-invalid' | 'dane-required';
  cause: SkipCause;
}

/** A host is either skipped (never contacted: DANE-20, 23, 33, 45) or has a TLS plan, never both or neither. */
export type HostPlan = HostFacts & ({ kind: 'skip'; skip: HostSkip } | { kind: 'plan'; plan: TlsPlan });

/** The lookup problem as one token: the error kind, or the DNSSEC status of a failed answer. */
export function lookupProblem(a: DnsAnswer): string {
  return a.error ? a.error.kind : a.status;
}

function describe(a: DnsAnswer): string {
  if (a.error) return a.error.kind === 'servfail' ? 'SERVFAIL' : `${a.error.kind}${a.error.message ? ` (${a.error.message})` : ''}`;
  return a.status;
}

/** An insecure answer whose insecurity rests on NSEC3 over the iteration limit (InsecureReason `nsec3-iterations`). */
function byIterationLimit(a: Pick<DnsAnswer, 'status' | 'firstStatus' | 'insecureReason'>): boolean {
  return (a.status === 'insecure' || a.firstStatus === 'insecure') && a.insecureReason === 'nsec3-iterations';
}

/**
 * Issue 13 / RFC 9276 §3.2: an answer that is insecure only because the zone's NSEC3 uses more
 * iterations than we check is no proof that DANE does not apply. Where such an answer would switch
 * DANE off (the MX RRset, the host's addresses — DANE-21 — or its TLSA RRset), it is a lookup failure:
 * the host is skipped and the message deferred with 4.7.5, unless the destination opts in.
 */
function iterationLimitSkip(what: string, rrtype: 'MX' | 'A' | 'AAAA' | 'TLSA'): HostSkip {
  return {
    cause: { kind: 'nsec3-iterations', rrtype },
    reason:
      `${what} is insecure only because its NSEC3 uses more than ${MAX_NSEC3_ITERATIONS} iterations (RFC 9276 §3.2): ` +
      'that does not prove DANE is absent, so the host is not used (per-destination opt-in: nsec3-iterations-insecure in tls_policy)',
    code: '4.7.5',
    resultType: 'dnssec-invalid',
  };
}

const worst = (a: DnssecStatus, b: DnssecStatus): DnssecStatus => {
  const rank: Record<DnssecStatus, number> = { secure: 0, insecure: 1, indeterminate: 2, bogus: 3 };
  return rank[a] >= rank[b] ? a : b;
};

export async function planHost(ctx: HostContext, mx: MxHost): Promise<HostPlan> {
  const base: HostFacts = { host: mx.host, preference: mx.preference, addresses: [], mxStatus: ctx.mxStatus };
  if (mx.literal) {
    // DANE-10: no DANE for an IP literal.
    if (ctx.level === 'dane-only')
      return {
        ...base,
        addresses: [mx.host],
        kind: 'skip',
        skip: {
          reason: `dane-only: ${mx.host} is an IP literal, DANE does not apply`,
          code: '4.7.5',
          resultType: 'dane-required',
          cause: { kind: 'dane-required' },
        },
      };
    const d = decideTls({
      level: ctx.level === 'dane' ? 'may' : ctx.level,
      host: mx.host,
      mxStatus: ctx.mxStatus,
      tlsa: { kind: 'none', why: 'IP literal' },
      references: [],
    });
    if ('skip' in d)
      return {
        ...base,
        addresses: [mx.host],
        kind: 'skip',
        skip: { reason: d.skip, code: '4.7.5', resultType: d.resultType, cause: { kind: 'dane-required' } },
      };
    return { ...base, addresses: [mx.host], kind: 'plan', plan: { ...d.plan, ...(d.plan.kind === 'may' ? { sni: undefined } : {}) } };
  }

  const daneLevel = ctx.level === 'dane' || ctx.level === 'dane-only';
  const limitFails = daneLevel && !ctx.nsec3IterationsInsecure;
  if (limitFails && !ctx.trustInsecureMx && ctx.mxStatus === 'insecure' && ctx.mxInsecureReason === 'nsec3-iterations') {
    return { ...base, kind: 'skip', skip: iterationLimitSkip(`the MX lookup for ${ctx.nextHop}`, 'MX') };
  }

  // DANE-20: addresses before TLSA.
  const [a, aaaa] = await Promise.all([ctx.resolver.lookup(mx.host, 'A'), ctx.resolver.lookup(mx.host, 'AAAA')]);
  const aOk = isAnswer(a);
  const aaaaOk = isAnswer(aaaa);
  if (!aOk || !aaaaOk) {
    // DANE-20/23: an address lookup error skips the host, even when the other family answered.
    const bad = !aOk ? a : aaaa;
    return {
      ...base,
      addressStatus: bad.status,
      kind: 'skip',
      skip: {
        reason: `${bad.qtype} lookup for ${mx.host}: ${describe(bad)}`,
        code: '4.4.3',
        resultType: 'dnssec-invalid',
        cause: { kind: 'lookup-failed', rrtype: bad.qtype, problem: lookupProblem(bad) },
      },
    };
  }
  const addresses = [...a.records, ...aaaa.records];
  const addressStatus = worst(a.status, aaaa.status);
  const limited = [a, aaaa].find(byIterationLimit);
  const addressInsecureReason = limited ? 'nsec3-iterations' : (a.status === 'insecure' ? a : aaaa).insecureReason;
  if (addresses.length === 0) {
    return { ...base, addressStatus, kind: 'skip', skip: { reason: `no A/AAAA records for ${mx.host}`, code: '4.4.4', cause: { kind: 'no-address' } } };
  }
  const withAddr: HostFacts = {
    ...base,
    addresses,
    addressStatus,
    ...(addressStatus === 'insecure' && addressInsecureReason ? { addressInsecureReason } : {}),
  };
  // The addresses decide whether TLSA is looked up at all (DANE-21), once DANE applies to this MX.
  if (limitFails && limited && (ctx.mxStatus === 'secure' || ctx.trustInsecureMx)) {
    return { ...withAddr, kind: 'skip', skip: iterationLimitSkip(`the ${limited.qtype} lookup for ${mx.host}`, limited.qtype) };
  }

  let tlsa: TlsaOutcome;
  let tlsaName: string | undefined;
  let tlsaStatus: DnssecStatus | undefined;
  let tlsaRecords: TlsaRecord[] | undefined;
  let tlsaInsecureReason: InsecureReason | undefined;
  let tlsaProblem: string | undefined;
  if (!daneLevel) {
    tlsa = { kind: 'none', why: `tls_level ${ctx.level}` };
  } else if (ctx.mxStatus !== 'secure' && !ctx.trustInsecureMx) {
    // DANE-15/16: insecure MX RRset → no DANE for its hosts.
    tlsa = { kind: 'none', why: `MX lookup for ${ctx.nextHop} is ${ctx.mxStatus}` };
  } else {
    // The first address response decides (DANE-21); take the family that answered with data.
    const primary = a.records.length > 0 || aaaa.records.length === 0 ? a : aaaa;
    const firstStatus = worst(a.firstStatus, aaaa.firstStatus);
    const candidates = tlsaCandidates(mx.host, { ...primary, firstStatus, status: addressStatus });
    tlsa = { kind: 'none', why: firstStatus !== 'secure' ? `address records of ${mx.host} are ${firstStatus}` : 'no TLSA records' };
    for (const cand of candidates) {
      const name = `_${ctx.port}._tcp.${cand}`;
      const ans = await ctx.resolver.lookup(name, 'TLSA');
      tlsaName = name;
      tlsaStatus = ans.status;
      if (!isAnswer(ans)) {
        tlsa = { kind: 'error', why: `TLSA lookup for ${name}: ${describe(ans)}` }; // DANE-33
        tlsaProblem = lookupProblem(ans);
        break;
      }
      if (byIterationLimit(ans)) {
        if (limitFails)
          return {
            ...withAddr,
            tlsaName,
            tlsaStatus,
            tlsaInsecureReason: 'nsec3-iterations',
            kind: 'skip',
            skip: iterationLimitSkip(`the TLSA lookup for ${name}`, 'TLSA'),
          };
        tlsaInsecureReason = 'nsec3-iterations';
      } else if (ans.status === 'insecure' && ans.insecureReason) tlsaInsecureReason = ans.insecureReason;
      if (ans.status === 'secure' && ans.records.length > 0) {
        // DANE-31: the candidate (not a CNAME target at the TLSA name) is the base domain.
        tlsaRecords = ans.records;
        tlsa = { kind: 'records', baseDomain: cand, records: ans.records, usable: ans.records.filter(isUsable).length };
        break;
      }
      tlsa = {
        kind: 'none',
        why:
          ans.status === 'secure'
            ? `no TLSA records at ${name} (secure denial)`
            : `TLSA lookup for ${name} is insecure${tlsaInsecureReason ? ` (${tlsaInsecureReason}${tlsaInsecureReason === 'nsec3-iterations' ? ', accepted by nsec3-iterations-insecure' : ''})` : ''}`,
      };
    }
  }
  const refs =
    tlsa.kind === 'records'
      ? referenceNames({
          baseDomain: tlsa.baseDomain,
          host: mx.host,
          nextHop: ctx.nextHop,
          expandedNextHop: ctx.expandedNextHop,
          mxStatus: ctx.mxStatus,
          implicit: ctx.implicit,
        })
      : [];
  const d = decideTls({ level: ctx.level, host: mx.host, mxStatus: ctx.mxStatus, tlsa, references: refs });
  const extra = { tlsaName, tlsaStatus, tlsaRecords, ...(tlsaInsecureReason && tlsaStatus === 'insecure' ? { tlsaInsecureReason } : {}) };
  if ('skip' in d) {
    const cause: SkipCause =
      d.resultType === 'dnssec-invalid'
        ? { kind: 'lookup-failed', rrtype: 'TLSA', problem: tlsaProblem ?? 'error' }
        : { kind: 'dane-required', ...(tlsaStatus && tlsaStatus !== 'secure' ? { tlsaInsecure: true } : {}) };
    return {
      ...withAddr,
      ...extra,
      kind: 'skip',
      skip: { reason: d.skip, code: d.resultType === 'dnssec-invalid' ? '4.4.3' : '4.7.5', resultType: d.resultType, cause },
    };
  }
  return { ...withAddr, ...extra, kind: 'plan', plan: d.plan };
}

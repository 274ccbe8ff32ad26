/**
 * Which TLS a connection to one MX host requires — pure rules of RFC 7672 §2.2,
 * applied to lookups that were already made (digest DANE-15, 21, 22, 32, 40–45).
 */
import type { DnsAnswer, DnssecStatus, TlsaRecord } from '../dns/types.js';
import type { TlsLevel } from './levels.js';

/**
 * An MTA-STS `testing` policy matching the host (RFC 8461 §5, STS-45, STS-62): the session goes on under
 * its ordinary plan whatever the certificate, but the chain is also validated against `roots` and the MX
 * name checked (mtasts/webpki.ts), and the verdict reported in TLSRPT under the `sts` policy.
 */
export interface StsTesting {
  policyDomain: string;
  roots: readonly (string | Buffer)[];
  policyLines: readonly string[];
  mxPatterns: readonly string[];
}

/** How a connection is to be protected; decided before connecting. */
export type TlsPlan =
  | { kind: 'none'; why: string }
  | { kind: 'may'; why: string; sni?: string; stsTesting?: StsTesting }
  | { kind: 'encrypt'; why: string; sni?: string; records?: TlsaRecord[]; baseDomain?: string; stsTesting?: StsTesting }
  | {
      kind: 'dane';
      why: string;
      sni: string;
      baseDomain: string;
      /** the whole secure TLSA RRset (verification applies usability and digest agility) */
      records: TlsaRecord[];
      referenceNames: string[];
      /** 'verified' after a secure MX, 'trusted' after an insecure MX with opt-in (DANE-15/71) */
      label: 'verified' | 'trusted';
    }
  /**
   * MTA-STS `enforce` for a host without usable TLSA (RFC 8461 §4, §5; STS-41…43): STARTTLS mandatory,
   * the chain valid under WebPKI (`roots`), the MX host name a SAN DNS-ID. Made by delivery from the
   * policy (mtasts/), never over a DANE plan (§2, STS-50…52).
   */
  | {
      kind: 'sts';
      why: string;
      sni: string;
      policyDomain: string;
      pattern: string;
      roots: readonly (string | Buffer)[];
      /** the policy as TLSRPT reports it (RFC 8460 §4.4, STS-61): its lines and its mx patterns */
      policyLines: readonly string[];
      mxPatterns: readonly string[];
    };

/** DANE-22: TLSA base-domain candidates from the host's address lookup; [] = no DANE (DANE-21). */
export function tlsaCandidates(host: string, addr: Pick<DnsAnswer, 'status' | 'firstStatus' | 'canonicalName' | 'chain'>): string[] {
  if (addr.firstStatus !== 'secure') return []; // DANE-21: insecure first response → no TLSA query
  if (addr.chain.length === 0) return [host];
  if (addr.status === 'secure' && addr.canonicalName !== host) return [addr.canonicalName, host];
  return [host]; // secure first CNAME, insecure end: only the original name
}

/**
 * DANE-55: reference identifiers for DANE-TA name checks. The base domain is always first.
 * Secure MX: add the next-hop domain and its CNAME expansion. Non-MX (implicit) host whose
 * base domain came from CNAME expansion: add the original next hop.
 */
export function referenceNames(opts: {
  baseDomain: string;
  host: string;
  nextHop: string;
  expandedNextHop?: string;
  mxStatus: DnssecStatus;
  implicit: boolean;
}): string[] {
  const names = [opts.baseDomain];
  if (opts.implicit) {
    if (opts.baseDomain !== opts.host) names.push(opts.host);
    if (opts.expandedNextHop) names.push(opts.expandedNextHop);
  } else if (opts.mxStatus === 'secure') {
    names.push(opts.nextHop);
    if (opts.expandedNextHop) names.push(opts.expandedNextHop);
  }
  return [...new Set(names.map((n) => n.toLowerCase()))];
}

export type TlsaOutcome =
  | { kind: 'none'; why: string } // no candidates, every candidate insecure or securely denied (DANE-32)
  | { kind: 'records'; baseDomain: string; records: TlsaRecord[]; usable: number }
  | { kind: 'error'; why: string }; // DANE-33

/**
 * The per-host decision. `level` is the destination's TLS level (Postfix names):
 * dane-only turns every non-DANE outcome into a refusal (DANE-45).
 */
export function decideTls(opts: {
  level: TlsLevel;
  host: string;
  mxStatus: DnssecStatus;
  tlsa: TlsaOutcome;
  references: string[];
  trustedInsecureMx?: boolean;
}): { plan: TlsPlan } | { skip: string; resultType: 'dnssec-invalid' | 'dane-required' } {
  const { level, host, tlsa } = opts;
  if (level === 'none') return { plan: { kind: 'none', why: 'tls_level none' } };
  if (level === 'may') return { plan: { kind: 'may', why: 'tls_level may', sni: host } };
  if (level === 'encrypt') return { plan: { kind: 'encrypt', why: 'tls_level encrypt', sni: host } };
  // dane / dane-only
  if (tlsa.kind === 'error') return { skip: tlsa.why, resultType: 'dnssec-invalid' };
  if (tlsa.kind === 'none') {
    if (level === 'dane-only') return { skip: `dane-only: ${tlsa.why}`, resultType: 'dane-required' };
    return { plan: { kind: 'may', why: tlsa.why, sni: host } };
  }
  if (tlsa.usable === 0) {
    // DANE-42: secure, non-empty RRset without a usable record → TLS required, no authentication.
    if (level === 'dane-only') return { skip: `dane-only: no usable TLSA record at ${tlsa.baseDomain}`, resultType: 'dane-required' };
    return {
      plan: {
        kind: 'encrypt',
        why: `TLSA RRset at ${tlsa.baseDomain} has no usable record`,
        sni: tlsa.baseDomain,
        records: tlsa.records,
        baseDomain: tlsa.baseDomain,
      },
    };
  }
  return {
    plan: {
      kind: 'dane',
      why: `${tlsa.usable} usable TLSA record(s) at ${tlsa.baseDomain}`,
      sni: tlsa.baseDomain, // DANE-60
      baseDomain: tlsa.baseDomain,
      records: tlsa.records,
      referenceNames: opts.references,
      label: opts.mxStatus === 'secure' ? 'verified' : 'trusted',
    },
  };
}

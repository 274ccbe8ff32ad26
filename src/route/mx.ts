/**
 * Next hop → ordered MX host list. Pure: takes the MX answer, returns a decision.
 *
 * RFC 5321 §5.1 (MX, implicit MX, NXDOMAIN), RFC 7505 (null MX), RFC 7672 §2.2.1
 * (security of the MX RRset decides DANE per host; MX order is never changed by
 * security, digest DANE-11…16).
 */
import type { DnsAnswer, DnssecStatus, InsecureReason, MxRecord } from '../dns/types.js';
import { isAnswer } from '../dns/types.js';
import { lowerName } from '../dns/name.js';

export interface MxHost {
  host: string;
  preference: number;
  /** an IP literal given as the MX target or as the next hop (DANE-10: no DANE) */
  literal?: boolean;
}

export type MxDecision =
  | {
      kind: 'hosts';
      hosts: MxHost[];
      status: DnssecStatus;
      implicit: boolean /** CNAME-expanded next hop (DANE-55) */;
      expandedDomain?: string;
      /** why the MX answer is insecure (route/host.ts: `nsec3-iterations` cannot switch DANE off) */
      insecureReason?: InsecureReason;
      /** MX hosts past `delivery.mx_host_limit`, in MX order: never planned nor tried (`capHosts`) */
      notTried?: string[];
    }
  | { kind: 'fail'; code: string; reason: string }
  /** `problem`: the lookup's error kind or DNSSEC status, as a token (TLSRPT failure-reason-code, metrics) */
  | { kind: 'defer'; code: string; reason: string; problem: string };

/** "[192.0.2.1]" or "[IPv6:2001:db8::1]" → the address, else undefined. RFC 5321 §4.1.3. */
export function addressLiteral(domain: string): string | undefined {
  const m = /^\[(?:ipv6:)?([0-9a-f.:]+)\]$/i.exec(domain);
  return m ? m[1]!.toLowerCase() : undefined;
}

/**
 * Default of `delivery.mx_host_limit`: MX hosts planned (resolved, validated) and tried per message.
 * Postfix's `smtp_mx_address_limit` (addresses) and Exim's `hosts_max_try` (hosts) are 5 too. Without a
 * cap, a domain anyone can register lists as many hosts as it likes, each costing a full set of
 * validated lookups (issue 22).
 */
export const DEFAULT_MX_HOST_LIMIT = 5;

/**
 * Keep the first `limit` hosts (0: all), after ordering — preference, then the random order within a
 * preference (`orderMx`), as Postfix truncates after its shuffle — so the hosts beyond the cap differ from
 * one run to the next when several share a preference, and a better-preference host is never dropped for
 * a worse one.
 */
export function capHosts(d: MxDecision, limit: number): MxDecision {
  if (d.kind !== 'hosts' || limit <= 0 || d.hosts.length <= limit) return d;
  return { ...d, hosts: d.hosts.slice(0, limit), notTried: d.hosts.slice(limit).map((h) => h.host) };
}

/** Fisher–Yates shuffle of runs of equal preference; `rand` injectable for tests. */
export function orderMx(records: MxRecord[], rand: () => number = Math.random): MxRecord[] {
  const byPref = new Map<number, MxRecord[]>();
  for (const r of records) {
    const list = byPref.get(r.preference) ?? [];
    list.push(r);
    byPref.set(r.preference, list);
  }
  const out: MxRecord[] = [];
  for (const pref of [...byPref.keys()].sort((a, b) => a - b)) {
    const group = byPref.get(pref)!;
    for (let i = group.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [group[i], group[j]] = [group[j]!, group[i]!];
    }
    out.push(...group);
  }
  return out;
}

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

const why = (a: DnsAnswer): { insecureReason?: InsecureReason } => (a.status === 'insecure' && a.insecureReason ? { insecureReason: a.insecureReason } : {});

/**
 * Decide the MX hosts of `domain` from its MX answer.
 * `selfNames`: this relay's own names; when listed, entries at its preference or worse are dropped (DANE-14, RFC 5321 §5.1).
 */
export function decideMx(domain: string, answer: DnsAnswer<'MX'>, selfNames: string[] = [], rand: () => number = Math.random): MxDecision {
  if (!isAnswer(answer)) {
    // DANE-11: a bogus or failed MX lookup defers; never falls back to A records.
    return { kind: 'defer', code: '4.4.3', reason: `MX lookup for ${domain}: ${answer.error?.message ?? answer.status}`, problem: answer.error.kind };
  }
  if (answer.rcode === 'NXDOMAIN') return { kind: 'fail', code: '5.1.2', reason: `domain ${domain} does not exist (NXDOMAIN)` };
  const expandedDomain = answer.canonicalName !== answer.qname ? answer.canonicalName : undefined;
  if (answer.records.length === 0) {
    // DANE-12: implicit MX — the (CNAME-expanded) domain itself, preference 0.
    return { kind: 'hosts', hosts: [{ host: domain, preference: 0 }], status: answer.status, implicit: true, expandedDomain, ...why(answer) };
  }
  // RFC 7505 §3: a single "0 ." is a null MX. A "." among real MX records is ignored (derived, DANE-13).
  const real = answer.records.filter((r) => r.exchange !== '' && r.exchange !== '.');
  if (real.length === 0) return { kind: 'fail', code: '5.1.10', reason: `domain ${domain} does not accept mail (null MX, RFC 7505)` };
  let ordered = orderMx(real, rand).map((r) => ({ host: lowerName(r.exchange), preference: r.preference }));
  const self = new Set(selfNames.map(lowerName));
  const mine = ordered.find((h) => self.has(h.host));
  if (mine) {
    ordered = ordered.filter((h) => h.preference < mine.preference);
    if (ordered.length === 0) return { kind: 'fail', code: '5.4.6', reason: `mail for ${domain} loops back to myself` };
  }
  const hosts: MxHost[] = ordered.map((h) => (IPV4.test(h.host) || h.host.includes(':') ? { ...h, literal: true } : h));
  return { kind: 'hosts', hosts, status: answer.status, implicit: false, expandedDomain, ...why(answer) };
}

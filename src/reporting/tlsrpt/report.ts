/**
 * The RFC 8460 §4.4 report document: pure functions that build it from aggregated counts,
 * name it (§5.1) and read it back (for our own intake and the tests, §5.6, §7).
 * Key names and order follow the digest's section E (TLSRPT-25, 30).
 */
import { domainToASCII } from 'node:url';
import { printable } from '../../text/printable.js';
import { canonicalIp } from '../../dns/name.js';

/** IANA "STARTTLS Validation Result Types" (RFC 8460 §6.6), exact strings (TLSRPT-C). */
export const RESULT_TYPES = [
  'starttls-not-supported',
  'certificate-host-mismatch',
  'certificate-expired',
  'certificate-not-trusted',
  'validation-failure',
  'tlsa-invalid',
  'dnssec-invalid',
  'dane-required',
  'sts-policy-fetch-error',
  'sts-policy-invalid',
  'sts-webpki-invalid',
] as const;
export type ResultType = (typeof RESULT_TYPES)[number];
export const isResultType = (s: string): s is ResultType => (RESULT_TYPES as readonly string[]).includes(s);

export type PolicyType = 'tlsa' | 'sts' | 'no-policy-found';

export interface Policy {
  type: PolicyType;
  /** tlsa: one "u s m HEX" per RR; sts: the policy lines; no-policy-found: [] (TLSRPT-12..14) */
  strings: string[];
  /** A-labels */
  domain: string;
  /** sts only: the mx patterns (an array, EID 6241) */
  mxHost?: string[];
}

export interface FailureDetail {
  resultType: ResultType;
  sendingIp?: string;
  receivingMx?: string;
  receivingHelo?: string;
  receivingIp?: string;
  additionalInformation?: string;
  reasonCode?: string;
}

export interface PolicyCounts {
  policy: Policy;
  success: number;
  failure: number;
  details: { detail: FailureDetail; count: number }[];
}

export interface ReportInput {
  organizationName: string;
  contactInfo: string;
  reportId: string;
  /** YYYY-MM-DD (UTC) */
  day: string;
  policies: PolicyCounts[];
}

/** The JSON shape (RFC 8460 §4.4). */
export interface ReportJson {
  'organization-name': string;
  'date-range': { 'start-datetime': string; 'end-datetime': string };
  'contact-info': string;
  'report-id': string;
  policies: {
    policy: { 'policy-type': PolicyType; 'policy-string': string[]; 'policy-domain': string; 'mx-host'?: string[] };
    summary: { 'total-successful-session-count': number; 'total-failure-session-count': number };
    'failure-details'?: Record<string, string | number>[];
  }[];
}

const DAY_RE = /^(\d{4})-(\d{2})-(\d{2})$/;

export function isDay(s: string): boolean {
  const m = DAY_RE.exec(s);
  if (!m) return false;
  const d = new Date(`${s}T00:00:00Z`);
  return !Number.isNaN(d.getTime()) && d.toISOString().slice(0, 10) === s;
}

let lastDay = { start: 0, end: 0, day: '' };

/** UTC day of an epoch-ms instant (TLSRPT-31). The current day is cached: it runs per session. */
export function dayOf(ms: number): string {
  if (ms >= lastDay.start && ms < lastDay.end) return lastDay.day;
  const day = new Date(ms).toISOString().slice(0, 10);
  const start = Date.parse(`${day}T00:00:00Z`);
  if (!Number.isNaN(start)) lastDay = { start, end: start + 86_400_000, day };
  return day;
}

/** [start, end] of a UTC day in Unix seconds: 00:00:00 … 23:59:59 (TLSRPT-31, §5.1 filename). */
export function dayRange(day: string): { begin: number; end: number } {
  if (!isDay(day)) throw new Error(`not a day (YYYY-MM-DD): ${day}`);
  const begin = Date.parse(`${day}T00:00:00Z`) / 1000;
  return { begin, end: begin + 86_399 };
}

export function nextDay(day: string, n = 1): string {
  return dayOf(Date.parse(`${day}T00:00:00Z`) + n * 86_400_000);
}

const aLabels = new Map<string, string>();

/** A-label form of a domain (TLSRPT-15); lower case, no trailing dot. Throws on a name that has none. Memoised: it runs per session. */
export function aLabel(domain: string): string {
  const hit = aLabels.get(domain);
  if (hit !== undefined) return hit;
  const d = domain.replace(/\.$/, '');
  const a = domainToASCII(d);
  if (!a) throw new Error(`not a domain name: ${JSON.stringify(domain)}`);
  if (aLabels.size >= 10_000) aLabels.clear();
  aLabels.set(domain, a.toLowerCase());
  return a.toLowerCase();
}

/** The merge key of a failure-details entry: every field except the count (TLSRPT-26). */
export function detailKey(d: FailureDetail): string {
  return JSON.stringify([
    d.resultType,
    d.sendingIp ?? null,
    d.receivingMx ?? null,
    d.receivingHelo ?? null,
    d.receivingIp ?? null,
    d.additionalInformation ?? null,
    d.reasonCode ?? null,
  ]);
}

export function detailFromKey(k: string): FailureDetail {
  const [resultType, sendingIp, receivingMx, receivingHelo, receivingIp, additionalInformation, reasonCode] = JSON.parse(k) as (string | null)[];
  const d: FailureDetail = { resultType: resultType as ResultType };
  if (sendingIp != null) d.sendingIp = sendingIp;
  if (receivingMx != null) d.receivingMx = receivingMx;
  if (receivingHelo != null) d.receivingHelo = receivingHelo;
  if (receivingIp != null) d.receivingIp = receivingIp;
  if (additionalInformation != null) d.additionalInformation = additionalInformation;
  if (reasonCode != null) d.reasonCode = reasonCode;
  return d;
}

/** The grouping key of a policy (TLSRPT-11). */
export function policyKey(p: Policy): string {
  return JSON.stringify([p.type, p.strings, p.domain, p.mxHost ?? null]);
}

export function policyFromKey(k: string): Policy {
  const [type, strings, domain, mxHost] = JSON.parse(k) as [PolicyType, string[], string, string[] | null];
  return mxHost ? { type, strings, domain, mxHost } : { type, strings, domain };
}

function detailJson(d: FailureDetail, count: number): Record<string, string | number> {
  // Key order as in RFC 8460 §4.4 / Appendix B.
  const o: Record<string, string | number> = { 'result-type': d.resultType };
  if (d.sendingIp) o['sending-mta-ip'] = canonicalIp(d.sendingIp);
  if (d.receivingMx) o['receiving-mx-hostname'] = aLabel(d.receivingMx);
  // Free text a peer or a TLS stack produced: printable in the document, whatever the stored counts hold.
  if (d.receivingHelo) o['receiving-mx-helo'] = printable(d.receivingHelo);
  if (d.receivingIp) o['receiving-ip'] = canonicalIp(d.receivingIp);
  o['failed-session-count'] = count;
  if (d.additionalInformation) o['additional-information'] = printable(d.additionalInformation);
  if (d.reasonCode) o['failure-reason-code'] = printable(d.reasonCode);
  return o;
}

/** Sorts for a stable document (golden files, diffs between runs). */
const byKey =
  <T>(key: (t: T) => string) =>
  (a: T, b: T) =>
    key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0;

/**
 * Builds the report (TLSRPT-30, 31): identical failure details merged and counted (TLSRPT-26),
 * totals are sums, counts are integers, domains are A-labels (TLSRPT-15).
 */
export function buildReport(input: ReportInput): ReportJson {
  const { begin, end } = dayRange(input.day);
  const iso = (s: number) => new Date(s * 1000).toISOString().replace(/\.000Z$/, 'Z');
  const merged = new Map<string, PolicyCounts>();
  for (const p of input.policies) {
    const policy: Policy = { ...p.policy, domain: aLabel(p.policy.domain), ...(p.policy.mxHost ? { mxHost: [...p.policy.mxHost] } : {}) };
    const k = policyKey(policy);
    const cur = merged.get(k) ?? { policy, success: 0, failure: 0, details: [] };
    cur.success += p.success;
    cur.failure += p.failure;
    cur.details.push(...p.details);
    merged.set(k, cur);
  }
  const policies = [...merged.values()].sort(byKey((p) => policyKey(p.policy))).map((p) => {
    const details = new Map<string, number>();
    for (const d of p.details) details.set(detailKey(d.detail), (details.get(detailKey(d.detail)) ?? 0) + d.count);
    for (const n of [p.success, p.failure, ...details.values()]) {
      if (!Number.isSafeInteger(n) || n < 0) throw new Error(`session count is not a non-negative integer: ${n}`);
    }
    const policy: ReportJson['policies'][number]['policy'] = {
      'policy-type': p.policy.type,
      'policy-string': [...p.policy.strings],
      'policy-domain': p.policy.domain,
    };
    if (p.policy.type === 'sts') policy['mx-host'] = [...(p.policy.mxHost ?? [])]; // TLSRPT-13: an array
    const entry: ReportJson['policies'][number] = {
      policy,
      summary: { 'total-successful-session-count': p.success, 'total-failure-session-count': p.failure },
    };
    if (details.size) entry['failure-details'] = [...details.entries()].sort(byKey(([k]) => k)).map(([k, n]) => detailJson(detailFromKey(k), n));
    return entry;
  });
  return {
    'organization-name': input.organizationName,
    'date-range': { 'start-datetime': iso(begin), 'end-datetime': iso(end) },
    'contact-info': input.contactInfo,
    'report-id': input.reportId,
    policies,
  };
}

/**
 * report-id: unique per report and usable as the left part of a msg-id (TLSRPT-32):
 * `YYYYMMDD.<policy-domain>.<random alnum>` uses dot-atom-text characters only.
 */
export function makeReportId(day: string, policyDomain: string, random: string): string {
  if (!/^[A-Za-z0-9]+$/.test(random)) throw new Error('report-id random part must be alphanumeric');
  return `${day.replace(/-/g, '')}.${aLabel(policyDomain)}.${random}`;
}

/** RFC 8460 §5.1 filename (TLSRPT-40). `uniqueId` is ALPHA/DIGIT only. */
export function reportFilename(opts: { submitter: string; policyDomain: string; day: string; uniqueId?: string; gzip?: boolean }): string {
  const { begin, end } = dayRange(opts.day);
  if (opts.uniqueId !== undefined && !/^[A-Za-z0-9]+$/.test(opts.uniqueId)) throw new Error('unique-id must be ALPHA/DIGIT');
  const parts = [aLabel(opts.submitter), aLabel(opts.policyDomain), String(begin), String(end), ...(opts.uniqueId ? [opts.uniqueId] : [])];
  return `${parts.join('!')}${opts.gzip === false ? '.json' : '.json.gz'}`;
}

/** Subject of a mailed report (RFC 8460 §5.3, TLSRPT-43). */
export function reportSubject(policyDomain: string, submitter: string, reportId: string): string {
  return `Report Domain: ${aLabel(policyDomain)} Submitter: ${aLabel(submitter)} Report-ID: <${reportId}@${aLabel(submitter)}>`;
}

/** The submitter is the domain of contact-info (TLSRPT-33). */
export function submitterOf(contactInfo: string): string {
  const at = contactInfo.lastIndexOf('@');
  if (at < 1) throw new Error(`contact-info is not an addr-spec: ${contactInfo}`);
  return aLabel(contactInfo.slice(at + 1));
}

/**
 * Reads a report as a receiver would (TLSRPT-50: JSON is authoritative, content untrusted):
 * `mx-host` as string or array (EID 6241, TLSRPT-13), timestamps with or without a zone (TLSRPT-31).
 * Returns a normalised copy; throws on anything that is not a report.
 */
export function parseReport(text: string): ReportJson {
  const j = JSON.parse(text) as Record<string, unknown>;
  const str = (v: unknown, what: string): string => {
    if (typeof v !== 'string') throw new Error(`${what}: expected a string`);
    return v;
  };
  const int = (v: unknown, what: string): number => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new Error(`${what}: expected a non-negative integer`);
    return v;
  };
  const time = (v: unknown, what: string): string => {
    const s = str(v, what);
    const withZone = /(Z|[+-]\d{2}:\d{2})$/i.test(s) ? s : `${s}Z`; // a zoneless time is read as UTC
    const t = Date.parse(withZone);
    if (Number.isNaN(t)) throw new Error(`${what}: not an RFC 3339 time`);
    return new Date(t).toISOString().replace(/\.000Z$/, 'Z');
  };
  const dr = j['date-range'] as Record<string, unknown> | undefined;
  if (!dr || typeof dr !== 'object') throw new Error('date-range: missing');
  if (!Array.isArray(j.policies)) throw new Error('policies: expected an array');
  return {
    'organization-name': str(j['organization-name'], 'organization-name'),
    'date-range': { 'start-datetime': time(dr['start-datetime'], 'start-datetime'), 'end-datetime': time(dr['end-datetime'], 'end-datetime') },
    'contact-info': str(j['contact-info'], 'contact-info'),
    'report-id': str(j['report-id'], 'report-id'),
    policies: (j.policies as Record<string, unknown>[]).map((p, i) => {
      const pol = p.policy as Record<string, unknown>;
      const sum = p.summary as Record<string, unknown>;
      if (!pol || !sum) throw new Error(`policies[${i}]: policy and summary are required`);
      const type = str(pol['policy-type'], 'policy-type');
      if (type !== 'tlsa' && type !== 'sts' && type !== 'no-policy-found') throw new Error(`policies[${i}]: unknown policy-type ${type}`);
      const ps = pol['policy-string'] ?? [];
      const mx = pol['mx-host'];
      const policy: ReportJson['policies'][number]['policy'] = {
        'policy-type': type,
        'policy-string': (Array.isArray(ps) ? ps : [ps]).map((s) => str(s, 'policy-string')),
        'policy-domain': str(pol['policy-domain'], 'policy-domain'),
      };
      if (mx !== undefined) policy['mx-host'] = (Array.isArray(mx) ? mx : [mx]).map((s) => str(s, 'mx-host'));
      const out: ReportJson['policies'][number] = {
        policy,
        summary: {
          'total-successful-session-count': int(sum['total-successful-session-count'], 'total-successful-session-count'),
          'total-failure-session-count': int(sum['total-failure-session-count'], 'total-failure-session-count'),
        },
      };
      if (p['failure-details'] !== undefined) {
        if (!Array.isArray(p['failure-details'])) throw new Error('failure-details: expected an array');
        out['failure-details'] = (p['failure-details'] as Record<string, unknown>[]).map((d) => {
          const o: Record<string, string | number> = {};
          for (const [k, v] of Object.entries(d)) {
            if (k === 'failed-session-count') o[k] = int(v, k);
            else o[k] = str(v, k);
          }
          if (typeof o['result-type'] !== 'string') throw new Error('failure-details: result-type is required');
          return o;
        });
      }
      return out;
    }),
  };
}

/**
 * `dane-relay check DOMAIN`: the delivery path's own resolution and verification, without mail.
 *
 * Same functions as delivery (route/nexthop.ts lookupMx + hostContext, route/host.ts planHost,
 * delivery/attempt.ts attemptAddress: requirementFor, SmtpSession.connect with the real verify
 * callback, the cleartext and audit retries), then
 * QUIT. Every MX is examined (delivery stops at the first usable one); the verdict is what
 * delivery would reach: the first host, in MX order, whose session opens (RFC 7672 §2.2).
 * A few extra lookups are made for advice only and are marked `diagnostic`: they never
 * influence the verdict.
 */
import { createHash, X509Certificate } from 'node:crypto';
import type { Resolver, DnssecStatus, InsecureReason } from '../dns/types.js';
import { isAnswer } from '../dns/types.js';
import type { MxDecision } from '../route/mx.js';
import { lookupMx, hostContext } from '../route/nexthop.js';
import { planHost, type SkipCause } from '../route/host.js';
import { PlanBudget } from '../route/budget.js';
import type { TlsPlan } from '../dane/policy.js';
import { formatTlsa, isUsable, spkiFromCertDer, usableRecords } from '../dane/tlsa.js';
import { attemptAddress } from '../delivery/attempt.js';
import type { SmtpTimeouts } from '../delivery/smtpClient.js';
import type { PresentedChain, VerifyOutcome } from '../dane/types.js';
import type { ResolvedPolicy } from '../policy/resolve.js';

export interface InspectDeps {
  resolver: Resolver;
  selfNames: string[];
  /** delivery.mx_host_limit (default 5; 0: all) */
  mxHostLimit?: number;
  heloName: string;
  port: number;
  timeouts: SmtpTimeouts;
  digestPreference: ('sha512' | 'sha256')[];
  now: () => number;
  /** extra lookups for advice (default true); the probe turns them off */
  diagnose?: boolean;
}

export interface CertInfo {
  depth: number;
  subject: string;
  issuer: string;
  spkiSha256: string;
  certSha256: string;
  notBefore: string;
  notAfter: string;
  ca: boolean;
}

export interface ConnReport {
  address: string;
  plan: TlsPlan['kind'];
  ok: boolean;
  stage?: string;
  error?: string;
  tls?: { protocol: string; cipher: string };
  chain?: CertInfo[];
  verify?: VerifyOutcome;
  /** this attempt was the cleartext retry after a failed opportunistic handshake (DANE-44) */
  cleartextRetry?: boolean;
  /** this attempt was the DANE-46 audit-only retry over unauthenticated TLS after a failed verification */
  auditRetry?: boolean;
  /** DANE-46 audit-only: the next attempt is over unauthenticated TLS after this failed verification */
  auditRetryNext?: boolean;
}

export interface HostReport {
  host: string;
  preference: number;
  literal?: boolean;
  addresses: string[];
  addressStatus?: DnssecStatus;
  addressInsecureReason?: InsecureReason;
  tlsaName?: string;
  tlsaStatus?: DnssecStatus;
  tlsaInsecureReason?: InsecureReason;
  tlsa?: { record: string; usable: boolean; selected: boolean }[];
  skip?: { reason: string; code: string; cause: SkipCause };
  plan?: { kind: TlsPlan['kind']; why: string; sni?: string; label?: string; referenceNames?: string[] };
  connections: ConnReport[];
  /** diagnostic TLSA lookup made only for advice (not by delivery) */
  diagnosticTlsa?: { name: string; status: DnssecStatus; records: string[] };
}

export type VerdictKind = 'dane' | 'tls' | 'cleartext' | 'defer' | 'fail';

export interface InspectReport {
  domain: string;
  checkedAt: string;
  policy: ResolvedPolicy;
  mx: {
    kind: MxDecision['kind'];
    status?: DnssecStatus;
    insecureReason?: InsecureReason;
    implicit?: boolean;
    expandedDomain?: string;
    code?: string;
    reason?: string;
    hosts?: { host: string; preference: number }[];
    /** MX hosts past delivery.mx_host_limit: delivery never plans nor tries them */
    notTried?: string[];
  };
  /** the message's DNSSEC work budget was spent: why, and the hosts left unplanned (issue 22) */
  budget?: { reason: string; notPlanned: string[] };
  hosts: HostReport[];
  verdict: { kind: VerdictKind; detail: string; host?: string; address?: string; label?: string; code?: string };
}

function certInfo(der: Buffer, depth: number): CertInfo | undefined {
  try {
    // node's parser is enough for display; verification used the verifier's own parse.
    const c = new X509Certificate(der);
    const spki = spkiFromCertDer(der) ?? c.publicKey.export({ type: 'spki', format: 'der' }); // RFC 6698 §2.1.2: the bytes as encoded
    return {
      depth,
      subject: c.subject.replace(/\n/g, ', '),
      issuer: c.issuer.replace(/\n/g, ', '),
      spkiSha256: createHash('sha256').update(spki).digest('hex').toUpperCase(),
      certSha256: createHash('sha256').update(der).digest('hex').toUpperCase(),
      notBefore: new Date(c.validFrom).toISOString(),
      notAfter: new Date(c.validTo).toISOString(),
      ca: c.ca,
    };
  } catch {
    return undefined;
  }
}

export async function inspectDomain(domain: string, policy: ResolvedPolicy, deps: InspectDeps): Promise<InspectReport> {
  const diagnose = deps.diagnose ?? true;
  const report: InspectReport = {
    domain,
    checkedAt: new Date(deps.now()).toISOString(),
    policy,
    mx: { kind: 'defer' },
    hosts: [],
    verdict: { kind: 'defer', detail: '' },
  };
  // The same work budget as one delivery attempt (route/budget.ts): check stops where delivery would.
  const plan = new PlanBudget(deps.resolver, domain);
  let mx: MxDecision;
  try {
    mx = await lookupMx(plan, domain, deps.selfNames, deps.mxHostLimit);
  } catch (e) {
    mx = { kind: 'defer', code: '4.4.3', reason: `MX lookup for ${domain} failed: ${(e as Error).message}`, problem: 'error' };
  }
  if (mx.kind !== 'hosts') {
    report.mx = { kind: mx.kind, code: mx.code, reason: mx.reason };
    report.verdict = { kind: mx.kind === 'fail' ? 'fail' : 'defer', detail: mx.reason, code: mx.code };
    return report;
  }
  report.mx = {
    kind: 'hosts',
    status: mx.status,
    ...(mx.insecureReason ? { insecureReason: mx.insecureReason } : {}),
    implicit: mx.implicit,
    hosts: mx.hosts.map((h) => ({ host: h.host, preference: h.preference })),
    ...(mx.expandedDomain ? { expandedDomain: mx.expandedDomain } : {}),
    ...(mx.notTried ? { notTried: mx.notTried } : {}),
  };

  const failures: string[] = [];
  for (const h of mx.hosts) {
    if (plan.exhausted) {
      const notPlanned = mx.hosts.slice(mx.hosts.indexOf(h)).map((x) => x.host);
      report.budget = { reason: plan.exhausted, notPlanned };
      failures.push(`${plan.exhausted}; not planned: ${notPlanned.join(', ')}`);
      break;
    }
    const hp = await planHost(hostContext(plan, domain, mx, policy, deps.port), h);
    const hr: HostReport = { host: h.host, preference: h.preference, addresses: hp.addresses, connections: [] };
    if (h.literal) hr.literal = true;
    if (hp.addressStatus) hr.addressStatus = hp.addressStatus;
    if (hp.addressInsecureReason) hr.addressInsecureReason = hp.addressInsecureReason;
    if (hp.tlsaName) hr.tlsaName = hp.tlsaName;
    if (hp.tlsaStatus) hr.tlsaStatus = hp.tlsaStatus;
    if (hp.tlsaInsecureReason) hr.tlsaInsecureReason = hp.tlsaInsecureReason;
    if (hp.tlsaRecords) {
      const selected = new Set(usableRecords(hp.tlsaRecords, deps.digestPreference));
      hr.tlsa = hp.tlsaRecords.map((r) => ({ record: formatTlsa(r), usable: isUsable(r), selected: selected.has(r) }));
    }
    report.hosts.push(hr);
    if (hp.kind === 'skip') {
      hr.skip = { reason: hp.skip.reason, code: hp.skip.code, cause: hp.skip.cause };
      failures.push(`${h.host}: ${hr.skip.reason}`);
      continue;
    }
    const p = hp.plan;
    hr.plan = {
      kind: p.kind,
      why: p.why,
      ...('sni' in p && p.sni ? { sni: p.sni } : {}),
      ...(p.kind === 'dane' ? { label: p.label, referenceNames: p.referenceNames } : {}),
    };
    // DANE-70: a listed destination gets no TLSA query, not even a diagnostic one.
    if (diagnose && !policy.exception && !h.literal && p.kind !== 'dane' && !hp.tlsaRecords) {
      const name = `_${deps.port}._tcp.${h.host}`;
      const ans = await deps.resolver.lookup(name, 'TLSA');
      if (isAnswer(ans) && ans.records.length > 0) hr.diagnosticTlsa = { name, status: ans.status, records: ans.records.map(formatTlsa) };
    }
    for (const address of hp.addresses) {
      // The delivery path's own attempt sequence (delivery/attempt.ts); check only records what happens.
      let conn: ConnReport | undefined;
      const opened = await attemptAddress(
        { host: h.host, address, port: deps.port },
        p,
        {
          heloName: deps.heloName,
          timeouts: deps.timeouts,
          digestPreference: deps.digestPreference,
          now: deps.now,
          audit: !!policy.audit,
        },
        {
          before: (a) => {
            const c: ConnReport = {
              address,
              plan: a.plan.kind,
              ok: false,
              ...(a.retry === 'cleartext' ? { cleartextRetry: true } : {}),
              ...(a.retry === 'audit' ? { auditRetry: true } : {}),
            };
            conn = c;
            hr.connections.push(c);
            a.requirement.observe = (chain: PresentedChain) => {
              c.chain = chain.certificates.map((x, i) => certInfo(x, i)).filter((x): x is CertInfo => !!x);
            };
          },
          after: (r) => {
            const c = conn!;
            if (r.ok) return;
            c.stage = r.error.stage;
            c.error = r.error.message;
            if (r.error.verify) c.verify = r.error.verify;
            if (r.next === 'audit') c.auditRetryNext = true;
            failures.push(`${h.host}[${address}]:${deps.port}: ${r.error.message}`);
          },
        },
      );
      if (!opened) continue;
      const { session: s, plan } = opened;
      const c = conn!;
      c.ok = true;
      if (s.tls) c.tls = { protocol: s.tls.protocol, cipher: s.tls.cipher };
      if (s.tls?.verify) c.verify = s.tls.verify;
      await s.quit();
      if (report.verdict.detail === '') {
        const kind: VerdictKind = plan.kind === 'dane' ? 'dane' : s.tls ? 'tls' : 'cleartext';
        const label = plan.kind === 'dane' ? plan.label : s.tls ? 'untrusted' : 'cleartext';
        report.verdict = {
          kind,
          host: h.host,
          address,
          label,
          detail: `${h.host}[${address}]:${deps.port} ${label}${c.verify?.ok ? `: ${c.verify.detail}` : ''}`,
        };
      }
    }
  }
  if (report.verdict.detail === '') report.verdict = { kind: 'defer', detail: failures.join('; ') || `no MX host for ${domain}` };
  return report;
}

/** Exit codes of `dane-relay check` (documented in README): 0 DANE, 1 defer/fail, 3 delivered without DANE. */
export function exitCodeOf(v: VerdictKind): number {
  return v === 'dane' ? 0 : v === 'tls' || v === 'cleartext' ? 3 : 1;
}

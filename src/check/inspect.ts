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
import { stsHostRule } from '../mtasts/enforce.js';
import type { CachedPolicy } from '../mtasts/store.js';
import { inspectSts, type StsInspectDeps, type StsReport } from './sts.js';

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
  /** MTA-STS as the relay applies it (issue 15); absent: not inspected (the DANE recovery probe) */
  sts?: StsInspectDeps;
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
  /** not used: `cause` for a DNS/DANE reason (route/host.ts); absent for an MX outside an enforce policy's patterns (`sts.mismatch`) */
  skip?: { reason: string; code: string; cause?: SkipCause };
  /**
   * Who governs this host (RFC 8461 §2): `dane` (usable TLSA, or a DANE lookup failure that skips it), `sts-enforce`
   * (no usable TLSA, an enforce policy), `sts-testing` (delivered as without a policy, failures reported), `none`.
   */
  mechanism?: 'dane' | 'sts-enforce' | 'sts-testing' | 'none';
  /** the MTA-STS policy and this host: the pattern that covers it, or why none does; the WebPKI result */
  sts?: { pattern?: string; mismatch?: string; webpki?: { ok: boolean; detail: string; diagnostic: boolean } };
  plan?: { kind: TlsPlan['kind']; why: string; sni?: string; label?: string; referenceNames?: string[] };
  connections: ConnReport[];
  /** diagnostic TLSA lookup made only for advice (not by delivery) */
  diagnosticTlsa?: { name: string; status: DnssecStatus; records: string[] };
}

/** `sts`: over TLS the MTA-STS policy authenticated (WebPKI, the MX name; RFC 8461 §4.2) */
export type VerdictKind = 'dane' | 'sts' | 'tls' | 'cleartext' | 'defer' | 'fail';

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
  /** MTA-STS (issue 15): record, cached and fetched policy, whether it governs (absent: not inspected) */
  sts?: StsReport;
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
  // MTA-STS as delivery would look it up (delivery asks once MX hosts are known; shown here whatever the MX answer).
  let sts: { policy?: CachedPolicy; governs: boolean } = { governs: false };
  if (deps.sts) {
    const r = await inspectSts(domain, policy, deps.resolver, deps.sts, deps.now);
    report.sts = r.report;
    sts = r;
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
      const c = hp.skip.cause;
      // A DANE lookup failure skips the host under DANE's rules (never an STS fallback, STS-52).
      hr.mechanism = c.kind === 'dane-required' || ((c.kind === 'lookup-failed' || c.kind === 'nsec3-iterations') && c.rrtype === 'TLSA') ? 'dane' : 'none';
      failures.push(`${h.host}: ${hr.skip.reason}`);
      continue;
    }
    let p: TlsPlan = hp.plan;
    if (sts.policy && p.kind !== 'dane') {
      // Delivery's per-host rule (STS-40…45; DANE's hosts are left alone, STS-50…52).
      const rule = stsHostRule(sts.policy, h.host, deps.sts!.roots);
      hr.sts = rule.kind === 'match' ? { pattern: rule.pattern } : { mismatch: rule.reason };
      if (sts.governs) {
        hr.mechanism = sts.policy.policy.mode === 'enforce' ? 'sts-enforce' : 'sts-testing';
        if (rule.kind === 'mismatch' && rule.skip) {
          hr.skip = { reason: rule.reason, code: '4.7.5' };
          failures.push(`${h.host}: ${rule.reason}`);
          continue;
        }
        if (rule.kind === 'match' && rule.plan) p = rule.plan;
      }
      // Not governed by it (testing, or set aside by tls_policy): one diagnostic WebPKI attempt for the owner.
      if (!(rule.kind === 'match' && rule.plan && sts.governs) && hp.addresses[0]) {
        const probe = stsHostRule({ ...sts.policy, policy: { ...sts.policy.policy, mode: 'enforce' } }, h.host, deps.sts!.roots);
        if (probe.kind === 'match' && probe.plan) hr.sts.webpki = await webpkiProbe(h.host, hp.addresses[0], probe.plan, deps);
      }
    }
    hr.mechanism ??= p.kind === 'dane' ? 'dane' : 'none';
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
            if (r.attempt.plan.kind === 'sts' && hr.sts && !hr.sts.webpki)
              hr.sts.webpki = { ok: false, detail: r.error.verify?.detail ?? `${r.error.stage}: ${r.error.message}`, diagnostic: false };
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
      if (plan.kind === 'sts' && hr.sts && !hr.sts.webpki) hr.sts.webpki = { ok: true, detail: s.tls?.verify?.detail ?? 'WebPKI: verified', diagnostic: false };
      await s.quit();
      if (report.verdict.detail === '') {
        const kind: VerdictKind = plan.kind === 'dane' ? 'dane' : plan.kind === 'sts' ? 'sts' : s.tls ? 'tls' : 'cleartext';
        const label = plan.kind === 'dane' ? plan.label : plan.kind === 'sts' ? 'sts-webpki' : s.tls ? 'untrusted' : 'cleartext';
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
  if (report.verdict.detail === '') {
    // One reason per host is in its own section; the verdict names the hosts (and a spent budget).
    const named = report.hosts.map((h) => `${h.host} ${h.skip ? 'skipped' : 'failed'}`);
    report.verdict = {
      kind: 'defer',
      detail: report.hosts.length
        ? `no MX host usable: ${named.join(', ')}${report.budget ? `; ${report.budget.reason}` : ''}`
        : failures.join('; ') || `no MX host for ${domain}`,
    };
  }
  return report;
}

/** A WebPKI verdict for a host the policy does not govern now (testing, or set aside): one diagnostic connection, then QUIT. */
async function webpkiProbe(host: string, address: string, plan: TlsPlan, deps: InspectDeps): Promise<{ ok: boolean; detail: string; diagnostic: boolean }> {
  let result: { ok: boolean; detail: string; diagnostic: boolean } = { ok: false, detail: 'not tried', diagnostic: true };
  const opened = await attemptAddress(
    { host, address, port: deps.port },
    plan,
    { heloName: deps.heloName, timeouts: deps.timeouts, digestPreference: deps.digestPreference, now: deps.now, audit: false },
    {
      after: (r) => {
        if (!r.ok) result = { ok: false, detail: r.error.verify?.detail ?? `${r.error.stage}: ${r.error.message}`, diagnostic: true };
      },
    },
  );
  if (opened) {
    result = { ok: true, detail: opened.session.tls?.verify?.detail ?? 'WebPKI: verified', diagnostic: true };
    await opened.session.quit();
  }
  return result;
}

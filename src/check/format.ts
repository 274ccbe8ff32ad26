/**
 * Human output of `dane-relay check` (the JSON form is documented in README: the InspectReport plus the
 * summary of check/verdict.ts and the advice). One reason per host (its `result:` line); the effective
 * verdict is the last line, after the advice and any hypothetical section (issue 21 item 10).
 */
import type { InspectReport } from './inspect.js';
import type { Advice } from './advice.js';
import type { StsReport, ShownPolicy } from './sts.js';
import { hostVerdict, summarize, type Summary } from './verdict.js';

const VERDICT: Record<InspectReport['verdict']['kind'], string> = {
  dane: 'deliverable with DANE',
  sts: 'deliverable with MTA-STS (TLS authenticated by WebPKI for the MX name)',
  tls: 'deliverable without DANE (TLS, not authenticated)',
  cleartext: 'deliverable without DANE (cleartext)',
  defer: 'would defer',
  fail: 'would fail permanently',
};

/** An insecure status's reason worth showing: trust-ad's `resolver` says nothing the mode does not. */
function why(reason: string | undefined): string | undefined {
  return reason && reason !== 'resolver' ? reason : undefined;
}

function policyLine(p: ShownPolicy): string {
  return `id ${p.id || '(none)'}, mode ${p.mode}, max_age ${p.maxAge}${p.mx.length ? `, mx ${p.mx.join(' ')}` : ''}`;
}

function stsLines(s: StsReport): string[] {
  const L: string[] = ['MTA-STS:'];
  const rec = s.record;
  const st = rec.status ? ` (DNSSEC ${rec.status})` : '';
  if (rec.kind === 'record') L.push(`  TXT ${rec.name}: id ${rec.id}${st}`);
  else L.push(`  TXT ${rec.name}: ${rec.kind === 'none' ? 'no valid record' : 'lookup failed'}${st}: ${rec.why ?? ''}`);
  if (s.cacheError) L.push(`  cached: unreadable (${s.cacheError})`);
  else if (s.cached)
    L.push(
      `  cached: ${policyLine(s.cached)}; fetched ${s.cached.fetchedAt}, expires ${s.cached.expiresAt}${s.cached.inForce ? '' : ' (expired)'}${s.cached.refreshFailure ? `; last refresh failed ${s.cached.refreshFailure.at}: ${s.cached.refreshFailure.resultType}: ${s.cached.refreshFailure.reason}` : ''}`,
    );
  else L.push('  cached: none');
  if (s.idMatchesCache !== undefined) L.push(`  cache id vs TXT id: ${s.idMatchesCache ? 'same (no refetch due)' : 'different (delivery refetches)'}`);
  const f = s.fetched;
  if (f) {
    const tag = f.diagnostic ? ' (diagnostic fetch: delivery would not fetch now)' : '';
    if (f.ok) L.push(`  fetched now${tag}: ${policyLine(f.policy)} from ${f.address}`);
    else if (rec.kind === 'none' && !s.cached) L.push(`  policy host: no policy served (${f.resultType}): ${f.reason}`);
    else L.push(`  fetched now${tag}: failed (${f.resultType}): ${f.reason}`);
    if (f.ok) for (const n of f.notes) L.push(`    note: ${n}`);
  }
  L.push(
    s.applied
      ? `  in force for delivery: ${policyLine(s.applied)} (${s.applied.source === 'fetch' ? 'fetched now' : 'cached'})`
      : '  in force for delivery: none',
  );
  L.push(`  governs: ${s.gate.kind === 'apply' ? 'yes' : 'no'}: ${s.gate.why}`);
  return L;
}

/** The facts: policy, MX, MTA-STS, each host with its one `result:` line. No verdict (see `formatReport`). */
function body(r: InspectReport): string[] {
  const L: string[] = [];
  L.push(`domain: ${r.domain}`);
  L.push(
    `policy: ${r.policy.level} (rule: ${r.policy.rule})${r.policy.exception ? ` — on the danefail list: no TLSA lookup, ${r.policy.exception.underlying} lowered to ${r.policy.level}` : ''}`,
  );
  if (r.mx.kind !== 'hosts') {
    L.push(`MX: ${r.mx.kind} ${r.mx.code}: ${r.mx.reason}`);
  } else {
    L.push(
      `MX: ${r.mx.status}${why(r.mx.insecureReason) ? ` (${why(r.mx.insecureReason)})` : ''}${r.mx.implicit ? ', implicit (no MX records: the domain itself)' : ''}${r.mx.expandedDomain ? `, CNAME → ${r.mx.expandedDomain}` : ''}`,
    );
    for (const h of r.mx.hosts ?? []) L.push(`  ${h.preference} ${h.host}`);
    if (r.mx.notTried?.length) L.push(`  not tried (beyond delivery.mx_host_limit): ${r.mx.notTried.join(', ')}`);
  }
  if (r.sts) L.push(...stsLines(r.sts));
  for (const h of r.hosts) {
    const v = hostVerdict(h);
    L.push('');
    L.push(`host ${h.host} (preference ${h.preference})${h.literal ? ' IP literal: no DANE' : ''}${h.mechanism ? `, governed by: ${h.mechanism}` : ''}`);
    L.push(
      `  addresses: ${h.addresses.join(' ') || 'none'}${h.addressStatus ? ` (${h.addressStatus}${why(h.addressInsecureReason) ? `: ${why(h.addressInsecureReason)}` : ''})` : ''}`,
    );
    if (h.tlsaName)
      L.push(
        `  TLSA ${h.tlsaName}: ${h.tlsaStatus ?? 'not looked up'}${why(h.tlsaInsecureReason) ? ` (${why(h.tlsaInsecureReason)})` : ''}${h.tlsa ? `, ${h.tlsa.length} record(s), ${h.tlsa.filter((t) => t.selected).length} usable` : ''}`,
      );
    for (const t of h.tlsa ?? []) L.push(`    ${t.record} ${t.selected ? 'usable' : t.usable ? 'not used (weaker digest, RFC 7671 §9)' : 'unusable'}`);
    if (h.diagnosticTlsa) {
      L.push(`  diagnostic (not used by delivery): TLSA ${h.diagnosticTlsa.name} is ${h.diagnosticTlsa.status}`);
      for (const t of h.diagnosticTlsa.records) L.push(`    ${t}`);
    }
    if (h.sts) {
      const w = h.sts.webpki;
      L.push(
        `  MTA-STS: ${h.sts.pattern ? `covered by mx ${h.sts.pattern}` : 'matches no mx pattern'}${w ? `; ${w.ok ? 'WebPKI valid' : 'WebPKI FAILED'}${w.diagnostic ? ' (diagnostic connection)' : ''}: ${w.detail}` : ''}`,
      );
    }
    if (h.plan && !h.skip)
      L.push(
        `  plan: ${h.plan.kind}${h.plan.label ? ` (${h.plan.label})` : ''}${h.plan.sni ? `, SNI ${h.plan.sni}` : ''}: ${h.plan.why}${h.plan.referenceNames ? `; names ${h.plan.referenceNames.join(', ')}` : ''}`,
      );
    for (const c of h.connections) {
      const head = `  ${c.address}${c.cleartextRetry ? ' (cleartext retry)' : ''}${c.auditRetry ? ' (audit-only retry: TLS without authentication)' : ''}: `;
      if (c.ok) L.push(`${head}${c.tls ? `STARTTLS ok, ${c.tls.protocol} ${c.tls.cipher}` : 'no TLS'}`);
      // The reason is the host's `result:` line; another address's different error is kept here.
      else L.push(`${head}failed at ${c.stage}${c.error && !v.reason?.includes(c.error) ? `: ${c.error}` : ''}`);
      for (const x of c.chain ?? []) {
        L.push(`    [${x.depth}] subject ${x.subject}${x.ca ? ' (CA)' : ''}`);
        L.push(`        issuer ${x.issuer}`);
        L.push(`        SPKI SHA-256 ${x.spkiSha256}`);
        L.push(`        valid ${x.notBefore} .. ${x.notAfter}`);
      }
      if (c.ok && c.verify?.ok)
        L.push(
          `    ${c.plan === 'sts' ? 'MTA-STS' : 'DANE'}: verified: ${c.verify.detail}${c.verify.matchedIndex !== undefined ? ` [record #${c.verify.matchedIndex + 1}]` : ''}`,
        );
    }
    L.push(`  result: ${v.verdict}${h.skip ? ` (${h.skip.code})` : ''}${v.reason ? `: ${v.reason}` : ''}`);
  }
  if (r.budget) {
    L.push('');
    L.push(`work budget spent (deferred 4.4.3): ${r.budget.reason}; not planned: ${r.budget.notPlanned.join(', ')}`);
  }
  return L;
}

function verdictLine(r: InspectReport): string {
  return `${VERDICT[r.verdict.kind]}${r.verdict.code ? ` (${r.verdict.code})` : ''}: ${r.verdict.detail}`;
}

/**
 * The whole text report. `without`: the same destination without its danefail exception (what the
 * recovery probe checks), shown before the effective verdict, which is always the last line.
 */
export function formatReport(
  r: InspectReport,
  advice: Advice[],
  s: Summary = summarize(r, advice),
  without?: { report: InspectReport; advice: Advice[] },
): string {
  const L = body(r);
  if (without) {
    L.push('');
    L.push('--- without the danefail exception (what the recovery probe checks; not what delivery does) ---');
    L.push(...body(without.report));
    L.push(`hypothetical verdict without the exception: ${verdictLine(without.report)}`);
    for (const a of without.advice) L.push(`  - [${a.code}] ${a.text}`);
    L.push('--- end of the hypothetical section ---');
  }
  L.push('');
  if (advice.length) {
    L.push('advice for the domain owner:');
    for (const a of advice) L.push(`  - [${a.code}]${a.severity === 'warning' ? ' (warning)' : ''} ${a.text}`);
  }
  L.push(`mechanism: ${s.mechanism.kind}: ${s.mechanism.why}`);
  L.push(`status: ${s.status} (exit ${s.exitCode})`);
  L.push(`verdict: ${verdictLine(r)}`);
  return L.join('\n') + '\n';
}

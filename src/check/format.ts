/** Human output of `dane-relay check` (the JSON form is the InspectReport plus advice). */
import type { InspectReport } from './inspect.js';
import type { Advice } from './advice.js';

const VERDICT: Record<InspectReport['verdict']['kind'], string> = {
  dane: 'deliverable with DANE',
  tls: 'deliverable without DANE (TLS, not authenticated)',
  cleartext: 'deliverable without DANE (cleartext)',
  defer: 'would defer',
  fail: 'would fail permanently',
};

/** An insecure status's reason worth showing: trust-ad's `resolver` says nothing the mode does not. */
function why(reason: string | undefined): string | undefined {
  return reason && reason !== 'resolver' ? reason : undefined;
}

export function formatReport(r: InspectReport, advice: Advice[]): string {
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
  for (const h of r.hosts) {
    L.push('');
    L.push(`host ${h.host} (preference ${h.preference})${h.literal ? ' IP literal: no DANE' : ''}`);
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
    if (h.skip) {
      L.push(`  skipped (${h.skip.code}): ${h.skip.reason}`);
      continue;
    }
    if (h.plan)
      L.push(
        `  plan: ${h.plan.kind}${h.plan.label ? ` (${h.plan.label})` : ''}${h.plan.sni ? `, SNI ${h.plan.sni}` : ''}: ${h.plan.why}${h.plan.referenceNames ? `; names ${h.plan.referenceNames.join(', ')}` : ''}`,
      );
    for (const c of h.connections) {
      const head = `  ${c.address}${c.cleartextRetry ? ' (cleartext retry)' : ''}${c.auditRetry ? ' (audit-only retry: TLS without authentication)' : ''}: `;
      if (c.ok) L.push(`${head}${c.tls ? `STARTTLS ok, ${c.tls.protocol} ${c.tls.cipher}` : 'no TLS'}`);
      else L.push(`${head}failed at ${c.stage}: ${c.error}`);
      for (const x of c.chain ?? []) {
        L.push(`    [${x.depth}] subject ${x.subject}${x.ca ? ' (CA)' : ''}`);
        L.push(`        issuer ${x.issuer}`);
        L.push(`        SPKI SHA-256 ${x.spkiSha256}`);
        L.push(`        valid ${x.notBefore} .. ${x.notAfter}`);
      }
      if (c.verify)
        L.push(
          `    DANE: ${c.verify.ok ? 'verified' : `FAILED (${c.verify.reason})`}: ${c.verify.detail}${c.verify.matchedIndex !== undefined ? ` [record #${c.verify.matchedIndex + 1}]` : ''}`,
        );
    }
  }
  if (r.budget) {
    L.push('');
    L.push(`work budget spent (deferred 4.4.3): ${r.budget.reason}; not planned: ${r.budget.notPlanned.join(', ')}`);
  }
  L.push('');
  L.push(`verdict: ${VERDICT[r.verdict.kind]}${r.verdict.code ? ` (${r.verdict.code})` : ''}: ${r.verdict.detail}`);
  if (advice.length) {
    L.push('advice for the domain owner:');
    for (const a of advice) L.push(`  - [${a.code}] ${a.text}`);
  }
  return L.join('\n') + '\n';
}

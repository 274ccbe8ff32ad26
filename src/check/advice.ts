/**
 * Advice for a domain's owner (pure), from what `check` saw, after the breakage patterns of the
 * field reports (USENIX'22 "DANE mismanagement" — missing DS, TLSA not updated
 * after renewal, Let's Encrypt intermediate rotation; Dukhovni "Real World DANE" — publish
 * current + next, monitor TLSA against the live chain) and RFC 7671 §8 (key rollover); for MTA-STS the
 * digest's operator hygiene list (STS-70…74).
 */
import type { InspectReport } from './inspect.js';
import type { SkipCause } from '../route/host.js';
import { assessRollover, type RolloverKind } from '../policy/rollover.js';
import { samePolicy } from './sts.js';

export type StsAdviceCode = 'sts-no-txt' | 'sts-id-unchanged' | 'sts-mx-uncovered' | 'sts-cert-invalid' | 'sts-max-age-short' | 'sts-wildcard';

export type AdviceCode = 'no-ds' | 'mx-insecure' | 'tlsa-no-match' | 'tlsa-lookup-error' | 'no-starttls' | RolloverKind | StsAdviceCode;

export interface Advice {
  code: AdviceCode;
  /** `warning`: something is broken or about to break (check exits 4, degraded, unless it would defer); `advice`: structural */
  severity: 'warning' | 'advice';
  host?: string;
  text: string;
}

/** STS-70: below a day, an `enforce` policy protects little against a first-contact or expiry downgrade (§10.2; the RFC expects weeks). */
export const STS_MIN_ENFORCE_MAX_AGE = 86_400;

/** Owner advice on the domain's MTA-STS setup (digest STS-70…74). */
function stsAdvice(r: InspectReport, add: (a: Omit<Advice, 'severity'> & { severity?: Advice['severity'] }) => void): void {
  const s = r.sts;
  if (!s) return;
  const fetched = s.fetched?.ok ? s.fetched.policy : undefined;
  if (fetched && s.record.kind === 'none') {
    add({
      code: 'sts-no-txt',
      text: `a policy is served at https://mta-sts.${r.domain}/.well-known/mta-sts.txt (mode ${fetched.mode}) but ${s.record.name} has no valid TXT record (${s.record.why ?? 'none'}): senders never discover it (RFC 8461 §3.1). Publish "${s.record.name}. IN TXT "v=STSv1; id=<new id>"".`,
    });
  }
  // STS-71: the body changed but the id did not, so senders holding the old policy never refetch it.
  if (s.cached && fetched && s.record.kind === 'record' && s.cached.id === s.record.id && !samePolicy(s.cached, fetched)) {
    add({
      code: 'sts-id-unchanged',
      text: `the policy served now differs from the one cached under the same id ${s.record.id} (cached: ${s.cached.lines.join(' / ')}; served: ${fetched.lines.join(' / ')}): senders that hold the old policy keep it until it expires. Change the id in ${s.record.name} whenever the policy changes, after the new policy is served (RFC 8461 §3.1, §8.1).`,
    });
  }
  const pol = s.applied ?? (fetched ? { ...fetched } : undefined);
  if (pol && pol.mode !== 'none') {
    for (const h of r.hosts) {
      if (h.sts?.mismatch)
        add({
          code: 'sts-mx-uncovered',
          host: h.host,
          text: `${h.sts.mismatch}: under enforce senders never use it (often a backup MX, found only when the primary fails). Add an mx line for it (RFC 8461 §4.1).`,
        });
      if (h.sts?.webpki && !h.sts.webpki.ok)
        add({
          code: 'sts-cert-invalid',
          host: h.host,
          text: `${h.host}: ${h.sts.webpki.detail}${h.sts.webpki.diagnostic ? ' (diagnostic connection: the policy does not govern this host now)' : ''}: MTA-STS senders need a certificate valid for the MX name under WebPKI (RFC 8461 §4.2).`,
        });
    }
    if (pol.mode === 'enforce' && pol.maxAge < STS_MIN_ENFORCE_MAX_AGE)
      add({
        code: 'sts-max-age-short',
        text: `max_age ${pol.maxAge} s under enforce: a sender's cached policy lapses within a day, reopening the downgrade window of a first contact (RFC 8461 §10.2 prefers weeks). Use at least 86400, better 604800 or more.`,
      });
    for (const m of pol.mx.filter((x) => x.startsWith('*.')))
      add({
        code: 'sts-wildcard',
        severity: 'advice',
        text: `mx ${m} admits any host with a WebPKI certificate under ${m.slice(2)} (RFC 8461 §10.4): list the MX hosts if others in that domain can obtain certificates.`,
      });
  }
}

/** The host was skipped because of its TLSA lookup: it failed, or its answer was insecure (DANE-33, RFC 7672 §2.1.2). */
function tlsaLookupTrouble(c: SkipCause): boolean {
  switch (c.kind) {
    case 'lookup-failed':
    case 'nsec3-iterations':
      return c.rrtype === 'TLSA';
    case 'dane-required':
      return !!c.tlsaInsecure;
    case 'no-address':
      return false;
  }
}

export function adviceFor(r: InspectReport, now: number, warnMs: number): Advice[] {
  const out: Advice[] = [];
  const seen = new Set<string>();
  const add = (a: Omit<Advice, 'severity'> & { severity?: Advice['severity'] }) => {
    const k = `${a.code}|${a.host ?? ''}|${a.text}`;
    if (!seen.has(k)) {
      seen.add(k);
      out.push({ ...a, severity: a.severity ?? 'warning' });
    }
  };
  for (const h of r.hosts) {
    const d = h.diagnosticTlsa;
    if (d && d.status === 'insecure') {
      add({
        code: 'no-ds',
        host: h.host,
        text: `TLSA records are published at ${d.name} but do not validate (insecure): the zone looks signed without a DS record at its parent, the most common DANE breakage. Publish the DS record with the registrar (or remove the TLSA records).`,
      });
    } else if (d && d.status === 'secure' && r.mx.status !== 'secure') {
      add({
        code: 'mx-insecure',
        host: h.host,
        text: `${d.name} has DNSSEC-signed TLSA records, but the MX RRset of ${r.domain} is ${r.mx.status}: senders ignore the TLSA records (RFC 7672 §2.2.1). Sign ${r.domain}'s zone and publish its DS record.`,
      });
    }
    if (h.skip?.cause && tlsaLookupTrouble(h.skip.cause)) {
      add({
        code: 'tlsa-lookup-error',
        host: h.host,
        text: `${h.skip.reason}: DANE senders skip this host (RFC 7672 §2.1.2). Make the zone answer TLSA queries with data or a valid denial of existence (no REFUSED/NOTIMP, correct NSEC/NSEC3 for _tcp).`,
      });
    }
    for (const c of h.connections) {
      if (h.plan?.kind === 'dane' && c.stage === 'starttls') {
        add({
          code: 'no-starttls',
          host: h.host,
          text: `${h.host}[${c.address}] has usable TLSA records but ${c.error}: offer STARTTLS to every client, or DANE senders defer (RFC 7672 §2.2).`,
        });
      }
      if (c.verify && !c.verify.ok && c.verify.reason === 'dane-no-match') {
        const leaf = c.chain?.[0];
        add({
          code: 'tlsa-no-match',
          host: h.host,
          text:
            `the TLSA records at ${h.tlsaName} match no certificate ${h.host} presents (typically a renewal with a new key without updating TLSA).` +
            (leaf
              ? ` Publish "${h.tlsaName}. IN TLSA 3 1 1 ${leaf.spkiSha256}" for the current key (dane-relay tlsa --cert FILE prints it), next to a record for the next key.`
              : ''),
        });
      }
      if (c.verify?.ok && c.verify.facts) {
        for (const f of assessRollover(c.verify.facts, now, warnMs)) {
          const fix = f.kind.startsWith('ee')
            ? 'Publish a 3 1 1 record for the next key now (RFC 7671 §8.1), or a 2 1 1 for the issuing CA, before the certificate is renewed.'
            : 'Publish a record for the successor intermediate or for the root as well, or a 3 1 1 for the server key, before the CA rotates.';
          add({ code: f.kind, severity: f.severity, host: h.host, text: `${h.host}: ${f.detail}. ${fix}` });
        }
      }
    }
  }
  stsAdvice(r, add);
  return out;
}

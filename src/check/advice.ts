/**
 * Advice for a domain's owner (pure), from what `check` saw, after the breakage patterns of the
 * field reports (USENIX'22 "DANE mismanagement" — missing DS, TLSA not updated
 * after renewal, Let's Encrypt intermediate rotation; Dukhovni "Real World DANE" — publish
 * current + next, monitor TLSA against the live chain) and RFC 7671 §8 (key rollover).
 */
import type { InspectReport } from './inspect.js';
import type { SkipCause } from '../route/host.js';
import { assessRollover, type RolloverKind } from '../policy/rollover.js';

export type AdviceCode = 'no-ds' | 'mx-insecure' | 'tlsa-no-match' | 'tlsa-lookup-error' | 'no-starttls' | RolloverKind;

export interface Advice {
  code: AdviceCode;
  host?: string;
  text: string;
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
  const add = (a: Advice) => {
    const k = `${a.code}|${a.host ?? ''}|${a.text}`;
    if (!seen.has(k)) {
      seen.add(k);
      out.push(a);
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
    if (h.skip && tlsaLookupTrouble(h.skip.cause)) {
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
          add({ code: f.kind, host: h.host, text: `${h.host}: ${f.detail}. ${fix}` });
        }
      }
    }
  }
  return out;
}

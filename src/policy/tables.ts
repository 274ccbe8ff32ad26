/**
 * Parsers for the two operator files (pure: text in, table or line-numbered errors out).
 *
 * `tls_policy` — Postfix smtp_tls_policy_maps names and meanings (none, may, encrypt,
 * dane, dane-only); one entry per line: `DOMAIN LEVEL [OPTION…]`, where DOMAIN is a
 * next-hop domain (exact) or `.parent` (every subdomain of parent, not parent itself,
 * as in Postfix). Option `trust-insecure-mx` is the DANE-15 opt-in (RFC 7672 §2.2.1:
 * use the MX host's TLSA even when the MX RRset is insecure; logged `trusted`). Option `audit`
 * (level dane only) is DANE-46 (RFC 7672 §9.1): a failed DANE authentication is logged and the
 * message goes over TLS without it, logged `untrusted`. Option `nsec3-iterations-insecure` (dane,
 * dane-only) takes an MX, address or TLSA answer that is insecure only because the zone's NSEC3 uses
 * more iterations than the validator's limit (RFC 9276 §3.2) as insecure, as Unbound does; without it
 * such an answer is a lookup failure for DANE (host skipped, 4.7.5; issue 13). Option `sts-ignore` (any
 * level, or alone: `DOMAIN sts-ignore`) makes delivery ignore the destination's MTA-STS policy (RFC 8461; issue
 * 15): its mail goes out under the ordinary level, logged as an exception on every delivery. Alone, the entry
 * sets no level: the destination keeps the level it has without this line (a `.parent` entry, else
 * `delivery.tls_level`). It never reaches REQUIRETLS mail (RFC 8689: tls_policy does not apply to it).
 *
 * `danefail` — the exception list format operators share (digest DANE-70, RFC 7672 §9.1;
 * github.com/danefail/list `dane_fail_list.dat`): one bare domain per line, surrounding
 * whitespace trimmed (old revisions have trailing spaces), blank and `#` lines skipped
 * (`##` lines name the broken MX/TLSA owner), lowercase, trailing dot dropped; exact match.
 *
 * A file with any error is rejected as a whole (the caller keeps the previous version).
 */
import { tlsLevels, type TlsLevel } from '../dane/levels.js';
import { lowerName } from '../dns/name.js';

export interface PolicyEntry {
  /** lowercase, no trailing dot; a leading "." means "every subdomain of" */
  key: string;
  /** absent: an `sts-ignore`-only entry, the level comes from the next less specific entry or the default */
  level?: TlsLevel;
  /** DANE-15 opt-in */
  trustInsecureMx: boolean;
  /** DANE-46 audit-only: a failed DANE authentication is logged and the message delivered over TLS anyway */
  audit: boolean;
  /** answers insecure only by the NSEC3 iteration limit count as insecure (issue 13; RFC 9276 §3.2) */
  nsec3IterationsInsecure: boolean;
  /** issue 15: the destination's MTA-STS policy is ignored (logged as an exception on every delivery) */
  stsIgnore: boolean;
  line: number;
}

export interface PolicyTable {
  /** label used in log lines, e.g. "policy/tls_policy" */
  source: string;
  entries: Map<string, PolicyEntry>;
}

export interface ExceptionList {
  source: string;
  /** domain → line number */
  domains: Map<string, number>;
}

export class PolicyFileError extends Error {
  constructor(
    readonly source: string,
    readonly problems: { line: number; message: string }[],
  ) {
    super(`${source}: rejected (previous version stays in force)\n` + problems.map((p) => `  - line ${p.line}: ${p.message}`).join('\n'));
    this.name = 'PolicyFileError';
  }
}

const LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;

/** Lowercase, drop one trailing dot; undefined if not a plausible DNS name (A-labels). */
export function normalizeDomain(raw: string): string | undefined {
  const d = lowerName(raw);
  if (d.length === 0 || d.length > 253) return undefined;
  return d.split('.').every((l) => LABEL.test(l)) ? d : undefined;
}

/**
 * Postfix's levels the relay does not implement (issue 21 item 9), refused with the reason and the
 * nearest level that is not weaker, never mapped silently: Postfix `verify` and `secure` authenticate
 * the MX host with a public-CA (WebPKI) chain and a name check (verify: the MX host name, which
 * unsigned DNS can forge; secure: the next-hop domain, smtp_tls_secure_cert_match); `fingerprint`
 * pins certificate or public-key digests in the policy entry (match=…). The relay authenticates by
 * DANE (RFC 7672) and, where a domain publishes one, MTA-STS (RFC 8461, itself a WebPKI check of the
 * MX name against the policy, applied without a table entry); `encrypt` would be weaker than any of the three.
 */
export const POSTFIX_ONLY_LEVELS: Readonly<Record<string, string>> = {
  verify:
    'Postfix\'s "verify" (public-CA certificate, name checked against the MX host name) is not supported: the relay authenticates MX hosts by DANE, and by MTA-STS where the domain publishes a policy (applied without a table entry). Nearest level that is not weaker: "dane-only" (needs TLSA records); "encrypt" would only encrypt, without authentication',
  secure:
    'Postfix\'s "secure" (public-CA certificate, name checked against the next-hop domain) is not supported: the relay authenticates MX hosts by DANE, and by MTA-STS where the domain publishes a policy (applied without a table entry). Nearest level that is not weaker: "dane-only" (needs TLSA records); "encrypt" would only encrypt, without authentication',
  fingerprint:
    'Postfix\'s "fingerprint" (certificate or public-key digests pinned in this file with match=) is not supported: the relay pins keys only through DANE. Nearest level that is not weaker: "dane-only", with the destination publishing those digests as TLSA 3 1 1 records (`dane-relay tlsa --cert FILE` prints them); "encrypt" would only encrypt, without authentication',
};

const OPTIONS = new Set(['trust-insecure-mx', 'audit', 'nsec3-iterations-insecure', 'sts-ignore']);

export function parseTlsPolicy(text: string, source: string): PolicyTable {
  const entries = new Map<string, PolicyEntry>();
  const problems: { line: number; message: string }[] = [];
  text.split('\n').forEach((rawLine, i) => {
    const line = i + 1;
    const s = rawLine.replace(/\r$/, '').trim();
    if (s === '' || s.startsWith('#')) return;
    const [rawKey, second, ...rest] = s.split(/\s+/);
    const sub = rawKey!.startsWith('.');
    const domain = normalizeDomain(sub ? rawKey!.slice(1) : rawKey!);
    if (!domain) {
      problems.push({ line, message: `"${rawKey}" is not a domain or .parent-domain` });
      return;
    }
    if (second === undefined) {
      problems.push({ line, message: `no TLS level after "${rawKey}" (expected one of ${tlsLevels.join(', ')}, or sts-ignore)` });
      return;
    }
    // `DOMAIN sts-ignore`: an entry that only sets the option, not a level.
    const levelless = second.toLowerCase() === 'sts-ignore';
    const opts = levelless ? [second, ...rest] : rest;
    const level = levelless ? undefined : (second.toLowerCase() as TlsLevel);
    const postfixOnly = level === undefined ? undefined : POSTFIX_ONLY_LEVELS[level];
    if (postfixOnly) {
      problems.push({ line, message: postfixOnly });
      return;
    }
    if (level !== undefined && !tlsLevels.includes(level)) {
      problems.push({ line, message: `unknown TLS level "${second}" (expected one of ${tlsLevels.join(', ')})` });
      return;
    }
    if (levelless && opts.some((o) => o.toLowerCase() !== 'sts-ignore')) {
      problems.push({
        line,
        message: `an entry without a TLS level may only carry sts-ignore (the level comes right after the domain: DOMAIN LEVEL [OPTION…])`,
      });
      return;
    }
    const bad = opts.filter((o) => !OPTIONS.has(o.toLowerCase()));
    if (bad.length) {
      problems.push({ line, message: `unknown option ${bad.map((b) => `"${b}"`).join(', ')} (known: ${[...OPTIONS].join(', ')})` });
      return;
    }
    const stsIgnore = opts.some((o) => o.toLowerCase() === 'sts-ignore');
    const trustInsecureMx = opts.some((o) => o.toLowerCase() === 'trust-insecure-mx');
    if (trustInsecureMx && level !== 'dane' && level !== 'dane-only') {
      problems.push({ line, message: `trust-insecure-mx only applies to dane and dane-only` });
      return;
    }
    const audit = opts.some((o) => o.toLowerCase() === 'audit');
    if (audit && level !== 'dane') {
      problems.push({ line, message: `audit only applies to dane (dane-only means DANE or defer)` });
      return;
    }
    const nsec3IterationsInsecure = opts.some((o) => o.toLowerCase() === 'nsec3-iterations-insecure');
    if (nsec3IterationsInsecure && level !== 'dane' && level !== 'dane-only') {
      problems.push({ line, message: `nsec3-iterations-insecure only applies to dane and dane-only` });
      return;
    }
    const key = sub ? `.${domain}` : domain;
    const prev = entries.get(key);
    if (prev) {
      problems.push({ line, message: `"${key}" already given on line ${prev.line}` });
      return;
    }
    entries.set(key, { key, ...(level !== undefined ? { level } : {}), trustInsecureMx, audit, nsec3IterationsInsecure, stsIgnore, line });
  });
  if (problems.length) throw new PolicyFileError(source, problems);
  return { source, entries };
}

export function parseDanefail(text: string, source: string): ExceptionList {
  const domains = new Map<string, number>();
  const problems: { line: number; message: string }[] = [];
  text.split('\n').forEach((rawLine, i) => {
    const line = i + 1;
    const s = rawLine.replace(/\r$/, '').trim();
    if (s === '' || s.startsWith('#')) return;
    if (/\s/.test(s)) {
      problems.push({ line, message: `one bare domain per line expected, got "${s}"` });
      return;
    }
    if (s.startsWith('.') || s.includes('*')) {
      problems.push({ line, message: `"${s}": entries are exact domains, no wildcards or .parent (DANE-70)` });
      return;
    }
    const d = normalizeDomain(s);
    if (!d) {
      problems.push({ line, message: `"${s}" is not a domain name` });
      return;
    }
    if (!domains.has(d)) domains.set(d, line); // a repeat is harmless in a shared list: first line wins
  });
  if (problems.length) throw new PolicyFileError(source, problems);
  return { source, domains };
}

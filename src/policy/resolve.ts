/**
 * The one place that decides a destination's effective TLS policy (pure).
 *
 * Order: the most specific tls_policy entry (exact domain, then the nearest `.parent`),
 * otherwise the default `delivery.tls_level`; then the danefail exception list (DANE-70)
 * lowers that level to `policy.exception_level` (may or encrypt: opportunistic TLS) when it is
 * the default `dane`/`dane-only` or a table `dane` entry. An explicit table `dane-only` entry
 * (exact or `.parent`) is the operator's own decision for that destination and wins over a
 * shared exception list: it is not lowered, and the conflict is reported at load
 * (`exceptionConflicts`). The returned `rule` names what decided, for the delivery log line
 * (e.g. `policy/tls_policy:12 .example.org dane-only`).
 */
import type { TlsLevel } from '../dane/levels.js';

/** The levels the exception list may lower DANE to (DANE-70: opportunistic TLS; `none` would strip TLS). */
export type ExceptionLevel = 'may' | 'encrypt';
import type { ExceptionList, PolicyEntry, PolicyTable } from './tables.js';
import { addressLiteral } from '../route/mx.js';
import { lowerName } from '../dns/name.js';

export interface PolicyInputs {
  defaultLevel: TlsLevel;
  table?: PolicyTable;
  exceptions?: ExceptionList;
  /** level used for a listed destination (default may); DANE-70: opportunistic TLS, never none */
  exceptionLevel: ExceptionLevel;
}

export interface ResolvedPolicy {
  level: TlsLevel;
  rule: string;
  /** DANE-15 opt-in: TLSA under an insecure MX, logged `trusted` */
  trustInsecureMx?: boolean;
  /** DANE-46 audit-only (explicit per destination) */
  audit?: boolean;
  /** issue 13: answers insecure only by the NSEC3 iteration limit count as insecure (explicit per destination) */
  nsec3IterationsInsecure?: boolean;
  /** set when the danefail list lowered a DANE level (DANE-70) */
  exception?: { underlying: TlsLevel; underlyingRule: string; line: number };
  /** a tls_policy entry (or the danefail list) decided, not `delivery.tls_level`: it wins over an MTA-STS policy */
  explicit?: true;
}

const isDane = (l: TlsLevel): boolean => l === 'dane' || l === 'dane-only';

/** The table entry that decides `domain` (exact, then nearest `.parent`), if any. */
function tableEntry(domain: string, t: PolicyTable | undefined): PolicyEntry | undefined {
  const d = lowerName(domain);
  if (!t || addressLiteral(d)) return undefined;
  const exact = t.entries.get(d);
  if (exact) return exact;
  for (let i = d.indexOf('.'); i !== -1; i = d.indexOf('.', i + 1)) {
    const e = t.entries.get(d.slice(i));
    if (e) return e;
  }
  return undefined;
}

/** Table entry or default, ignoring the exception list. */
export function resolveTable(domain: string, p: PolicyInputs): ResolvedPolicy {
  const hit = tableEntry(domain, p.table);
  if (hit) {
    return {
      explicit: true,
      level: hit.level,
      rule: `${p.table!.source}:${hit.line} ${hit.key} ${hit.level}${hit.trustInsecureMx ? ' trust-insecure-mx' : ''}${hit.audit ? ' audit' : ''}${hit.nsec3IterationsInsecure ? ' nsec3-iterations-insecure' : ''}`,
      ...(hit.trustInsecureMx ? { trustInsecureMx: true } : {}),
      ...(hit.audit ? { audit: true } : {}),
      ...(hit.nsec3IterationsInsecure ? { nsec3IterationsInsecure: true } : {}),
    };
  }
  return { level: p.defaultLevel, rule: `delivery.tls_level=${p.defaultLevel}` };
}

export function resolvePolicy(domain: string, p: PolicyInputs): ResolvedPolicy {
  const base = resolveTable(domain, p);
  const d = lowerName(domain);
  const line = p.exceptions?.domains.get(d);
  // An exception only lowers a DANE level; it never raises none/may/encrypt (it "switches DANE off").
  if (line === undefined || !isDane(base.level) || isDane(p.exceptionLevel)) return base;
  // The operator's explicit dane-only entry wins over the shared list (reported by exceptionConflicts).
  if (tableEntry(d, p.table)?.level === 'dane-only') return base;
  return {
    level: p.exceptionLevel,
    rule: `${p.exceptions!.source}:${line} ${d} exception ${base.level}→${p.exceptionLevel}`,
    exception: { underlying: base.level, underlyingRule: base.rule, line },
  };
}

export interface ExceptionConflict {
  domain: string;
  /** "policy/danefail:3" */
  exception: string;
  /** "policy/tls_policy:12 .example.org dane-only" */
  entry: string;
}

/**
 * Listed destinations whose explicit table `dane-only` entry keeps DANE required (the entry wins,
 * see resolvePolicy): one finding per listed domain, for a warning at each load.
 */
export function exceptionConflicts(p: PolicyInputs): ExceptionConflict[] {
  const out: ExceptionConflict[] = [];
  if (!p.exceptions || !p.table) return out;
  for (const [domain, line] of p.exceptions.domains) {
    const e = tableEntry(domain, p.table);
    if (e?.level === 'dane-only') out.push({ domain, exception: `${p.exceptions.source}:${line}`, entry: `${p.table.source}:${e.line} ${e.key} dane-only` });
  }
  return out;
}

/** Some table entry asks for DANE (the resolver trust check and the DNSSEC self-test then matter). */
export function mentionsDane(p: Pick<PolicyInputs, 'table'>): boolean {
  return [...(p.table?.entries.values() ?? [])].some((e) => isDane(e.level));
}

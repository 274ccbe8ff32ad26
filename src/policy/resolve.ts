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
 *
 * `sts-ignore` (issue 15) is decided by the most specific entry like every option; an entry that
 * carries only `sts-ignore` sets no level: the level (and its options) come from the next less
 * specific entry with one, else the default. REQUIRETLS runs never read this (delivery/deliver.ts
 * REQUIRETLS_LEVEL), so the option cannot lower a REQUIRETLS message's protection.
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
  /** issue 15: the entry says `sts-ignore`: the destination's MTA-STS policy is not applied (an exception, logged per delivery) */
  stsIgnore?: true;
}

const isDane = (l: TlsLevel): boolean => l === 'dane' || l === 'dane-only';

/** The table entries that apply to `domain`, most specific first (exact, then each `.parent`). */
function tableEntries(domain: string, t: PolicyTable | undefined): PolicyEntry[] {
  const d = lowerName(domain);
  if (!t || addressLiteral(d)) return [];
  const out: PolicyEntry[] = [];
  const exact = t.entries.get(d);
  if (exact) out.push(exact);
  for (let i = d.indexOf('.'); i !== -1; i = d.indexOf('.', i + 1)) {
    const e = t.entries.get(d.slice(i));
    if (e) out.push(e);
  }
  return out;
}

/** The entry that decides `domain`'s level: the most specific one with a level (an `sts-ignore`-only entry sets none). */
function levelEntry(domain: string, t: PolicyTable | undefined): PolicyEntry | undefined {
  return tableEntries(domain, t).find((e) => e.level !== undefined);
}

/** Table entry or default, ignoring the exception list. */
export function resolveTable(domain: string, p: PolicyInputs): ResolvedPolicy {
  const [first] = tableEntries(domain, p.table);
  const hit = levelEntry(domain, p.table);
  const base: ResolvedPolicy = hit
    ? {
        explicit: true,
        level: hit.level!,
        rule: `${p.table!.source}:${hit.line} ${hit.key} ${hit.level}${hit.trustInsecureMx ? ' trust-insecure-mx' : ''}${hit.audit ? ' audit' : ''}${hit.nsec3IterationsInsecure ? ' nsec3-iterations-insecure' : ''}${hit.stsIgnore ? ' sts-ignore' : ''}`,
        ...(hit.trustInsecureMx ? { trustInsecureMx: true } : {}),
        ...(hit.audit ? { audit: true } : {}),
        ...(hit.nsec3IterationsInsecure ? { nsec3IterationsInsecure: true } : {}),
      }
    : { level: p.defaultLevel, rule: `delivery.tls_level=${p.defaultLevel}` };
  if (!first?.stsIgnore) return base;
  // The most specific entry says sts-ignore; alone, it keeps the level decided above.
  if (first === hit) return { ...base, stsIgnore: true };
  return { ...base, rule: `${p.table!.source}:${first.line} ${first.key} sts-ignore (level: ${base.rule})`, stsIgnore: true };
}

export function resolvePolicy(domain: string, p: PolicyInputs): ResolvedPolicy {
  const base = resolveTable(domain, p);
  const d = lowerName(domain);
  const line = p.exceptions?.domains.get(d);
  // An exception only lowers a DANE level; it never raises none/may/encrypt (it "switches DANE off").
  if (line === undefined || !isDane(base.level) || isDane(p.exceptionLevel)) return base;
  // The operator's explicit dane-only entry wins over the shared list (reported by exceptionConflicts).
  if (levelEntry(d, p.table)?.level === 'dane-only') return base;
  return {
    level: p.exceptionLevel,
    rule: `${p.exceptions!.source}:${line} ${d} exception ${base.level}→${p.exceptionLevel}`,
    exception: { underlying: base.level, underlyingRule: base.rule, line },
    ...(base.stsIgnore ? { stsIgnore: true as const } : {}),
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
    const e = levelEntry(domain, p.table);
    if (e?.level === 'dane-only') out.push({ domain, exception: `${p.exceptions.source}:${line}`, entry: `${p.table.source}:${e.line} ${e.key} dane-only` });
  }
  return out;
}

/** Some table entry asks for DANE (the resolver trust check and the DNSSEC self-test then matter). */
export function mentionsDane(p: Pick<PolicyInputs, 'table'>): boolean {
  return [...(p.table?.entries.values() ?? [])].some((e) => e.level !== undefined && isDane(e.level));
}

/**
 * The one place that decides a destination's effective TLS policy (pure).
 *
 * Order: the danefail exception list (DANE-70) where the table/default level asks for
 * DANE; otherwise the most specific tls_policy entry (exact domain, then the nearest
 * `.parent`); otherwise the default `delivery.tls_level`. The returned `rule` names
 * what decided, for the delivery log line (e.g. `policy/tls_policy:12 .example.org dane-only`).
 */
import type { TlsLevel } from '../config/schema.js';
import type { ExceptionList, PolicyTable } from './tables.js';
import { addressLiteral } from '../route/mx.js';

export interface PolicyInputs {
  defaultLevel: TlsLevel;
  table?: PolicyTable;
  exceptions?: ExceptionList;
  /** level used for a listed destination (default may) */
  exceptionLevel: TlsLevel;
}

export interface ResolvedPolicy {
  level: TlsLevel;
  rule: string;
  /** DANE-15 opt-in: TLSA under an insecure MX, logged `trusted` */
  trustInsecureMx?: boolean;
  /** DANE-46 audit-only (explicit per destination) */
  audit?: boolean;
  /** set when the danefail list lowered a DANE level (DANE-70) */
  exception?: { underlying: TlsLevel; underlyingRule: string; line: number };
}

const isDane = (l: TlsLevel): boolean => l === 'dane' || l === 'dane-only';

/** Table entry or default, ignoring the exception list. */
export function resolveTable(domain: string, p: PolicyInputs): ResolvedPolicy {
  const d = domain.toLowerCase().replace(/\.$/, '');
  const t = p.table;
  if (t && !addressLiteral(d)) {
    const exact = t.entries.get(d);
    const hit = exact ?? (() => {
      // Nearest enclosing ".parent": walk up one label at a time.
      for (let i = d.indexOf('.'); i !== -1; i = d.indexOf('.', i + 1)) {
        const e = t.entries.get(d.slice(i));
        if (e) return e;
      }
      return undefined;
    })();
    if (hit) {
      return {
        level: hit.level,
        rule: `${t.source}:${hit.line} ${hit.key} ${hit.level}${hit.trustInsecureMx ? ' trust-insecure-mx' : ''}${hit.audit ? ' audit' : ''}`,
        ...(hit.trustInsecureMx ? { trustInsecureMx: true } : {}),
        ...(hit.audit ? { audit: true } : {}),
      };
    }
  }
  return { level: p.defaultLevel, rule: `delivery.tls_level=${p.defaultLevel}` };
}

export function resolvePolicy(domain: string, p: PolicyInputs): ResolvedPolicy {
  const base = resolveTable(domain, p);
  const d = domain.toLowerCase().replace(/\.$/, '');
  const line = p.exceptions?.domains.get(d);
  // An exception only lowers a DANE level; it never raises none/may/encrypt (it "switches DANE off").
  if (line === undefined || !isDane(base.level) || isDane(p.exceptionLevel)) return base;
  return {
    level: p.exceptionLevel,
    rule: `${p.exceptions!.source}:${line} ${d} exception ${base.level}→${p.exceptionLevel}`,
    exception: { underlying: base.level, underlyingRule: base.rule, line },
  };
}

/**
 * The MTA-STS rules of a delivery (RFC 8461 §4, §5; digest STS-40…46, STS-50…52), pure, so that
 * delivery (`delivery/deliver.ts`) and `dane-relay check` (`check/sts.ts`) judge by one code path:
 * whether the policy a lookup produced applies to the destination at all (`stsGate`), and what it
 * means for one MX host that DANE did not claim (`stsHostRule`).
 */
import type { TlsLevel } from '../dane/levels.js';
import type { TlsPlan } from '../dane/policy.js';
import { matchingPattern } from './policy.js';
import type { StsLookup } from './policies.js';
import type { CachedPolicy } from './store.js';

/** What the destination's resolved TLS policy (policy/resolve.ts) says about MTA-STS. */
export interface StsLevelFacts {
  level: TlsLevel;
  rule: string;
  /** a tls_policy entry decided the level: it wins over the MTA-STS policy */
  explicit?: true;
  /** the tls_policy entry says `sts-ignore` */
  stsIgnore?: true;
}

/** Is an MTA-STS policy looked up for this level at all? `none` sends in cleartext: no policy can apply. */
export function stsConsidered(level: Pick<StsLevelFacts, 'level'>): boolean {
  return level.level !== 'none';
}

export type StsGate =
  /** the policy governs every host without usable TLSA (`enforce` or `testing`) */
  | { kind: 'apply'; policy: CachedPolicy }
  /** no policy in force (none discovered or cached, or mode `none`, STS-46) */
  | { kind: 'none'; why: string; policy?: CachedPolicy }
  /** a tls_policy entry sets the policy aside (issue 15): logged as an exception on every delivery */
  | { kind: 'exception'; how: 'sts-ignore' | 'explicit-level'; rule: string; policy: CachedPolicy };

/** Does the policy in force (`lookup.applied`, mtasts/policies.ts) govern this destination's delivery? */
export function stsGate(lookup: Pick<StsLookup, 'applied'>, level: StsLevelFacts): StsGate {
  const p = lookup.applied;
  if (!p) return { kind: 'none', why: 'no MTA-STS policy in force (none discovered, fetched or cached)' };
  if (p.policy.mode === 'none') return { kind: 'none', why: `the policy of ${p.domain} (id ${p.id}) has mode none (STS-46)`, policy: p };
  if (level.stsIgnore) return { kind: 'exception', how: 'sts-ignore', rule: level.rule, policy: p };
  if (level.explicit) return { kind: 'exception', how: 'explicit-level', rule: level.rule, policy: p };
  return { kind: 'apply', policy: p };
}

export type StsHostRule =
  /** STS-40: no mx pattern covers the host; `enforce`: not used (STS-43); `testing`: delivered as without a policy (STS-45) */
  | { kind: 'mismatch'; reason: string; skip: boolean }
  /** covered by `pattern`; `enforce` gives the `sts` plan (STARTTLS, WebPKI for the MX name, STS-41/42), `testing` keeps the host's plan */
  | { kind: 'match'; pattern: string; plan?: TlsPlan };

/**
 * One MX host under a policy that applies (STS-40…45). Only for hosts DANE did not claim: a host with
 * usable TLSA keeps its DANE plan and a skipped host stays skipped (STS-50…52); the caller checks that.
 */
export function stsHostRule(p: CachedPolicy, host: string, roots: readonly (string | Buffer)[]): StsHostRule {
  const pattern = matchingPattern(p.policy, host);
  if (pattern === undefined) {
    return {
      kind: 'mismatch',
      reason: `MTA-STS policy of ${p.domain} (id ${p.id}, ${p.policy.mode}): ${host} matches no mx pattern (${p.policy.mx.join(', ')})`,
      skip: p.policy.mode === 'enforce',
    };
  }
  if (p.policy.mode !== 'enforce') return { kind: 'match', pattern };
  return {
    kind: 'match',
    pattern,
    plan: {
      kind: 'sts',
      why: `MTA-STS enforce (${p.domain} id ${p.id}, mx ${pattern})`,
      sni: host,
      policyDomain: p.domain,
      pattern,
      roots,
      policyLines: p.policy.lines,
      mxPatterns: p.policy.mx,
    },
  };
}

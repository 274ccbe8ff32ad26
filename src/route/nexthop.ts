/**
 * The next hop's MX decision and the per-host context, shared by delivery (`delivery/deliver.ts`)
 * and the diagnostic `dane-relay check` (`check/inspect.ts`), so both reach the same plan by the
 * same code. RFC 5321 §5.1, RFC 7672 §2.2.1.
 */
import type { Resolver } from '../dns/types.js';
import type { TlsLevel } from '../dane/levels.js';
import { addressLiteral, capHosts, decideMx, DEFAULT_MX_HOST_LIMIT, type MxDecision } from './mx.js';
import type { HostContext } from './host.js';

/**
 * MX lookup and decision for `domain` (an address literal needs no lookup, DANE-10), with at most
 * `hostLimit` hosts (`delivery.mx_host_limit`, 0: no limit; the rest are listed in `notTried`).
 */
export async function lookupMx(resolver: Resolver, domain: string, selfNames: string[], hostLimit = DEFAULT_MX_HOST_LIMIT): Promise<MxDecision> {
  const lit = addressLiteral(domain);
  if (lit) return { kind: 'hosts', hosts: [{ host: lit, preference: 0, literal: true }], status: 'insecure', implicit: true };
  const ans = await resolver.lookup(domain, 'MX');
  return capHosts(decideMx(domain, ans, selfNames), hostLimit);
}

/** The planHost context for one host of a `hosts` decision. */
export function hostContext(
  resolver: Resolver,
  domain: string,
  mx: Extract<MxDecision, { kind: 'hosts' }>,
  policy: { level: TlsLevel; trustInsecureMx?: boolean; nsec3IterationsInsecure?: boolean },
  port: number,
): HostContext {
  return {
    resolver,
    nextHop: domain,
    expandedNextHop: mx.expandedDomain,
    mxStatus: mx.status,
    implicit: mx.implicit,
    level: policy.level,
    port,
    ...(mx.insecureReason ? { mxInsecureReason: mx.insecureReason } : {}),
    ...(policy.trustInsecureMx ? { trustInsecureMx: true } : {}),
    ...(policy.nsec3IterationsInsecure ? { nsec3IterationsInsecure: true } : {}),
  };
}

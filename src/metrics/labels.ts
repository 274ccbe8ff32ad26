/**
 * Pure mappings from what delivery knows to the few label values metrics use. Label sets
 * are closed so a hostile or broken destination can never grow the number of series.
 */
import type { DaneStatus } from './events.js';
import type { DeferralCause, HostFailure } from '../delivery/events.js';
import type { SkipCause } from '../route/host.js';

/** How a session was protected, from the plan it ran under and what the handshake gave. */
export function daneStatusOf(s: { connected: boolean; planKind?: 'none' | 'may' | 'encrypt' | 'dane'; tls: boolean; verified: boolean }): DaneStatus {
  if (!s.connected) return 'none';
  if (!s.tls) return 'cleartext';
  if (s.planKind === 'dane' && s.verified) return 'dane-verified';
  return 'tls-unauthenticated';
}

export const DEFERRAL_REASONS = [
  'dns-bogus', 'dns-lookup-failed', 'tlsa-lookup-failed', 'dane-required', 'dane-no-match', 'tls-verify-failed',
  'starttls-failed', 'tls-handshake-failed', 'no-address', 'connect', 'connection-lost', 'protocol-error', 'remote-temporary', 'internal', 'other',
] as const;
export type DeferralReason = (typeof DEFERRAL_REASONS)[number];

/** The label of a skipped host. */
function skipReason(c: SkipCause): DeferralReason {
  switch (c.kind) {
    case 'lookup-failed': return c.rrtype === 'TLSA' ? 'tlsa-lookup-failed' : c.problem === 'bogus' ? 'dns-bogus' : 'dns-lookup-failed';
    // an answer insecure only by the NSEC3 iteration limit: under DANE no proof that DANE is absent (issue 13)
    case 'nsec3-iterations': return c.rrtype === 'TLSA' ? 'tlsa-lookup-failed' : 'dane-required';
    case 'no-address': return 'no-address';
    case 'dane-required': return 'dane-required';
  }
}

/** The label of a failed connection attempt. */
function attemptReason(f: Extract<HostFailure, { kind: 'attempt' }>): DeferralReason {
  switch (f.stage) {
    case 'verify': return f.verifyReason === 'dane-no-match' ? 'dane-no-match' : 'tls-verify-failed';
    case 'starttls': return 'starttls-failed';
    // a failed opportunistic handshake is followed by a cleartext retry: no policy failure
    case 'tls': return f.code === '4.7.5' ? 'tls-handshake-failed' : 'connect';
    case 'greeting': return 'connection-lost';
    case 'connect': case 'ehlo': case 'mail': case 'rcpt': case 'data': case 'protocol': return 'connect';
  }
}

/** The label of one MX host's failure (its share of an `unreachable` deferral). */
export function hostFailureReason(f: HostFailure): DeferralReason | undefined {
  switch (f.kind) {
    case 'self': return undefined;
    case 'skipped': return skipReason(f.cause);
    case 'attempt': return attemptReason(f);
  }
}

/**
 * Which host failure names an unreachable destination: among the hosts whose code became the
 * deferral's code (delivery's aggregate: TLS/DANE, then DNS, then connection), the most specific.
 */
const HOST_PRIORITY: readonly DeferralReason[] = [
  'tlsa-lookup-failed', 'dns-bogus', 'dns-lookup-failed', 'dane-no-match', 'dane-required', 'tls-verify-failed',
  'starttls-failed', 'tls-handshake-failed', 'no-address', 'connection-lost', 'connect',
];

/**
 * A deferral's reason label, from the typed cause delivery gives with it (delivery/events.ts) and
 * its RFC 3463 code (which host failures decided an unreachable destination's code).
 */
export function deferralReason(cause: DeferralCause, code: string): DeferralReason {
  switch (cause.kind) {
    case 'dnssec-hold': return 'dns-lookup-failed';
    case 'mx-lookup': return cause.problem === 'bogus' ? 'dns-bogus' : 'dns-lookup-failed';
    case 'unreachable': {
      const labels = cause.hosts.filter((h) => h.kind !== 'self' && h.code === code).map(hostFailureReason);
      return HOST_PRIORITY.find((r) => labels.includes(r)) ?? 'connect';
    }
    case 'reply': return 'remote-temporary';
    case 'protocol': return 'protocol-error';
    case 'connection-lost': return 'connection-lost';
    case 'internal': return 'internal';
    // bounces: never a deferral
    case 'mx-refused': case 'self-loop': case 'body-refused': return 'other';
  }
}

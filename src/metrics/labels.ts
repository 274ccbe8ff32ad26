/**
 * Pure mappings from what delivery knows to the few label values metrics use. Label sets
 * are closed so a hostile or broken destination can never grow the number of series.
 */
import type { DaneStatus } from './events.js';
import { tlsWord } from '../vocabulary/words.js';

/** Why ingress refused a connection, a command or a message (issue 21 item 7): one label value per refusal in ingress/server.ts. */
export const INGRESS_REJECT_REASONS = [
  'too-many-connections',
  'too-many-connections-client',
  'auth-failed',
  'auth-needs-tls',
  'auth-unavailable',
  'bad-parameter',
  'bad-address',
  'rate-limit',
  'no-postmaster',
  'relay-denied',
  'too-many-recipients',
  'too-large',
  'too-many-hops',
  'long-line',
  'spool-failure',
] as const;
export type IngressRejectReason = (typeof INGRESS_REJECT_REASONS)[number];

/**
 * How a session was protected, from the plan it ran under and what the handshake gave, in the
 * vocabulary's words (issue 21 item 4). Authenticated only under a plan that verifies (DANE, MTA-STS);
 * `daneLabel` 'trusted': a DANE match reached through an insecure MX (DANE-15/71).
 */
export function daneStatusOf(s: {
  connected: boolean;
  planKind?: 'none' | 'may' | 'encrypt' | 'dane' | 'sts';
  tls: boolean;
  verified: boolean;
  daneLabel?: 'verified' | 'trusted';
}): DaneStatus {
  return tlsWord({
    connected: s.connected,
    tls: s.tls,
    authenticated: s.verified && (s.planKind === 'dane' || s.planKind === 'sts'),
    nameBound: !(s.planKind === 'dane' && s.daneLabel === 'trusted'),
  });
}

export const DEFERRAL_REASONS = [
  'dns-bogus',
  'dns-lookup-failed',
  'tlsa-lookup-failed',
  'dane-required',
  'dane-no-match',
  'tls-verify-failed',
  'starttls-failed',
  'tls-handshake-failed',
  'sts-mx-mismatch',
  'sts-state-unavailable',
  'requiretls-unsupported',
  'no-address',
  'connect',
  'connection-lost',
  'protocol-error',
  'remote-temporary',
  'internal',
  'other',
] as const;
export type DeferralReason = (typeof DEFERRAL_REASONS)[number];

/** The rollover warning kinds (policy/rollover.ts RolloverKind; delivery/metrics.ts checks the two agree), each counted from 0. */
export const ROLLOVER_KINDS = ['ee-key-expiring', 'ee-cert-expiring', 'ta-expiring', 'ee-no-next-key', 'ta-no-successor'] as const;

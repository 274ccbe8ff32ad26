/**
 * Pure mappings from what delivery knows to the few label values metrics use. Label sets
 * are closed so a hostile or broken destination can never grow the number of series.
 */
import type { DaneStatus } from './events.js';
import { tlsWord } from '../vocabulary/words.js';

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

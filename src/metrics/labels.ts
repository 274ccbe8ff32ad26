/**
 * Pure mappings from what delivery knows to the few label values metrics use. Label sets
 * are closed so a hostile or broken destination can never grow the number of series.
 */
import type { DaneStatus } from './events.js';

/** How a session was protected, from the plan it ran under and what the handshake gave. */
export function daneStatusOf(s: { connected: boolean; planKind?: 'none' | 'may' | 'encrypt' | 'dane' | 'sts'; tls: boolean; verified: boolean }): DaneStatus {
  if (!s.connected) return 'none';
  if (!s.tls) return 'cleartext';
  if (s.planKind === 'dane' && s.verified) return 'dane-verified';
  return 'tls-unauthenticated';
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

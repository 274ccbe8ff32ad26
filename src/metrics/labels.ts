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
  'dns-bogus', 'dns-lookup-failed', 'tlsa-lookup-failed', 'dane-required', 'dane-no-match', 'tls-verify-failed',
  'starttls-failed', 'tls-handshake-failed', 'no-address', 'connect', 'connection-lost', 'protocol-error', 'remote-temporary', 'internal', 'other',
] as const;
export type DeferralReason = (typeof DEFERRAL_REASONS)[number];

/**
 * A deferral's reason label, from its RFC 3463 code and its one-line reason. The code says
 * the class (4.4.3 DNS, 4.7.5 TLS/DANE policy, 4.4.1 connect, 4.4.2 lost connection, 4.5.0 a
 * peer that broke the protocol);
 * the text refines it.
 */
export function deferralReason(o: { code: string; reason: string; reply?: string }): DeferralReason {
  const t = o.reason;
  if (o.code === '4.5.0') return 'protocol-error';
  if (o.reply) return 'remote-temporary';
  if (/internal error/i.test(t) || o.code === '4.3.0') return 'internal';
  if (/TLSA lookup/i.test(t)) return 'tlsa-lookup-failed';
  if (o.code === '4.4.3') return /bogus/i.test(t) ? 'dns-bogus' : 'dns-lookup-failed';
  if (o.code === '4.7.5') {
    if (/dane-no-match|TLSA records? (?:do(?:es)? not|did not) match|no TLSA record matched/i.test(t)) return 'dane-no-match';
    if (/dane-only|DANE (?:is )?required|no usable TLSA|not DNSSEC-signed|insecure/i.test(t)) return 'dane-required';
    if (/verif|certificate/i.test(t)) return 'tls-verify-failed';
    if (/STARTTLS/i.test(t)) return 'starttls-failed';
    return 'tls-handshake-failed';
  }
  if (o.code === '4.4.4') return 'no-address';
  if (o.code === '4.4.1') return 'connect';
  if (o.code === '4.4.2') return 'connection-lost';
  return 'other';
}

/**
 * One vocabulary for what happened to a recipient and how its session was protected (issue 21 item 4):
 * the words Postfix operators grep for, used by the log, `queue list`, metrics label values and the docs.
 * Every surface takes its word from here; test/vocabulary/words.test.ts checks that the same outcome gives
 * the same word in the log, the queue listing and the metrics.
 *
 * - Status (Postfix `status=`): `sent`, `deferred`, `bounced`. A recipient not yet tried is `pending`.
 * - TLS connection level (Postfix's "… TLS connection established" and `smtp_tls_audit_template`
 *   `status`, tls/tls_client.c): `Verified` — the certificate matched: a DANE-EE or DANE-TA match with a
 *   secure MX (Postfix sets "matched" for a DANE-EE/fingerprint match and for a trusted chain whose name
 *   matched), or an MTA-STS WebPKI chain with the MX name; `Trusted` — the chain is trusted but the name
 *   is not authenticated: a DANE match reached through an insecure MX (the TLSA records were found from a
 *   name DNSSEC did not bind to the domain, DANE-15/71); `Untrusted` — TLS whose certificate was not
 *   checked or not accepted (opportunistic TLS, an audit-only retry); `Anonymous` — TLS without any peer
 *   certificate (anonymous cipher suites; Node's client does not offer them, so the relay does not make
 *   such sessions, the word is kept for completeness); `Cleartext` — no TLS (Postfix's audit word).
 *   `none`: no session at all (Postfix `relay=none`).
 * Imports nothing: every layer may use it.
 */

export const STATUS_WORDS = ['sent', 'deferred', 'bounced'] as const;
export type StatusWord = (typeof STATUS_WORDS)[number];

/** The queue's stored recipient state (spool format, unchanged on disk) as the operator sees it. */
export type ShownState = 'pending' | StatusWord;
const SHOWN: Record<'pending' | 'deferred' | 'delivered' | 'failed', ShownState> = {
  pending: 'pending',
  deferred: 'deferred',
  delivered: 'sent',
  failed: 'bounced',
};
export function shownState(state: 'pending' | 'deferred' | 'delivered' | 'failed'): ShownState {
  return SHOWN[state];
}

export const TLS_WORDS = ['Verified', 'Trusted', 'Untrusted', 'Anonymous', 'Cleartext', 'none'] as const;
export type TlsWord = (typeof TLS_WORDS)[number];

/**
 * The TLS word of a session, from its facts: `connected` (a session carried the transaction), `tls`,
 * `authenticated` (its chain was verified under the plan: DANE or MTA-STS), `nameBound` (the verified
 * name is DNSSEC-bound to the destination, or WebPKI-checked; false for a DANE match via an insecure
 * MX), `certificate` (the peer presented one; default true).
 */
export function tlsWord(s: { connected: boolean; tls: boolean; authenticated: boolean; nameBound?: boolean; certificate?: boolean }): TlsWord {
  if (!s.connected) return 'none';
  if (!s.tls) return 'Cleartext';
  if (s.certificate === false) return 'Anonymous';
  if (!s.authenticated) return 'Untrusted';
  return s.nameBound === false ? 'Trusted' : 'Verified';
}

/**
 * The TLS security levels a destination can be given, lowest first — Postfix's names
 * (smtp_tls_security_level: none, may, encrypt, dane, dane-only); RFC 7672 §2.2 says what the two
 * DANE levels require. `decideTls` (policy.ts) is the lowest layer that reads a level, so the type
 * lives here; the configuration (`delivery.tls_level`), the policy tables, routing and delivery
 * import it from here.
 */
export const tlsLevels = ['none', 'may', 'encrypt', 'dane', 'dane-only'] as const;
export type TlsLevel = (typeof tlsLevels)[number];

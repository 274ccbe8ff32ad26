/**
 * The Received: trace header the relay prepends to every accepted message
 * (RFC 5321 §4.4: an SMTP server MUST insert one; syntax RFC 5321 §4.4 Time-stamp-line,
 * RFC 5322 §3.6.7):
 *
 *   Received: from <helo> (<rdns> [<ip>])
 *           by <hostname> with ESMTPS (TLSv1.3 TLS_AES_256_GCM_SHA384) id <queue id>
 *           for <rcpt>; Tue, 24 Nov 2026 16:31:04 +0000
 *
 * "with" is the RFC 3848 protocol keyword (ESMTP, ESMTPS, ESMTPSA, ...). "for" names
 * the recipient only when there is exactly one: listing all of them would disclose
 * Bcc recipients to every other recipient (RFC 5321 §7.2).
 */

export interface ReceivedInfo {
  /** HELO/EHLO argument, as the client sent it */
  helo?: string | undefined;
  /** reverse DNS name of the client, if any */
  rdns?: string | undefined;
  /** client IP address */
  address: string;
  /** our host name */
  hostname: string;
  /** RFC 3848 protocol type: SMTP, ESMTP, ESMTPS, ESMTPSA, ... */
  protocol: string;
  /** TLS protocol version and cipher, when the session was encrypted */
  tls?: { version?: string | undefined; cipher?: string | undefined } | undefined;
  /** queue id */
  id: string;
  recipients: readonly string[];
  /** epoch ms */
  date: number;
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** RFC 5322 §3.3 date-time in UTC with a numeric zone ("GMT" is obsolete syntax, §4.3). */
export function rfc5322Date(ms: number): string {
  const d = new Date(ms);
  const p2 = (n: number) => String(n).padStart(2, '0');
  return `${DAYS[d.getUTCDay()]}, ${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())} +0000`;
}

/** RFC 5321 §4.1.3 address literal: "[192.0.2.1]" or "[IPv6:2001:db8::1]". */
export function addressLiteral(ip: string): string {
  return ip.includes(':') ? `[IPv6:${ip}]` : `[${ip}]`;
}

/**
 * Client-supplied text (the HELO name) goes into a header field: keep it to visible
 * ASCII and drop characters that would open or close a comment or end the clause, so
 * a hostile HELO can neither inject a header line (smtp-server already refuses control
 * characters) nor make the trace misleading to a parser.
 */
function sanitizeToken(s: string): string {
  const t = s.replace(/[^\x21-\x7e]|[()\\;"]/g, '?');
  return t.length > 0 ? t : 'unknown';
}

/** The complete header field, folded, ending in CRLF. */
export function receivedHeader(r: ReceivedInfo): string {
  const lit = addressLiteral(r.address);
  const tcpInfo = r.rdns ? `${sanitizeToken(r.rdns)} ${lit}` : lit;
  const tls =
    r.tls && (r.tls.version || r.tls.cipher)
      ? ` (${[r.tls.version, r.tls.cipher]
          .filter(Boolean)
          .map((v) => sanitizeToken(v!))
          .join(' ')})`
      : '';
  const lines = [`Received: from ${sanitizeToken(r.helo ?? '')} (${tcpInfo})`, `\tby ${r.hostname} with ${r.protocol}${tls} id ${r.id}`];
  const date = rfc5322Date(r.date);
  if (r.recipients.length === 1) lines.push(`\tfor <${r.recipients[0]}>; ${date}`);
  else lines[lines.length - 1] += `; ${date}`;
  return lines.join('\r\n') + '\r\n';
}

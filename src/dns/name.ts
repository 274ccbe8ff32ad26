/**
 * Names and addresses, one spelling each: every stage that compares, caches or keys by a domain
 * name or an IP address normalises it here, so "Example.COM." and "example.com", or
 * "::ffff:192.0.2.1" and "192.0.2.1", can never be two keys for one thing.
 *
 * - `normalizeName`: the resolver's canonical form (RFC 1035 §2.3.4 limits, A-labels, RFC 4343
 *   ASCII-only case folding); throws on a name that cannot be sent.
 * - `lowerName`: the loose form for names from config, tables and peers that are only compared
 *   (lower case, one trailing dot dropped), never sent.
 * - `canonicalIp`: one text per address (RFC 5952 for IPv6, dotted decimal for IPv4 and IPv4-mapped).
 */
import { isIP } from 'node:net';
import { domainToASCII } from 'node:url';

/**
 * Canonical form used throughout the resolver: lowercase, no trailing dot,
 * A-labels. Non-ASCII labels are converted with `domainToASCII` label by label
 * (so `_25._tcp` prefixes are left alone). Throws on names that cannot be
 * sent: empty labels, labels over 63 octets, names over 253 characters
 * (RFC 1035 §2.3.4).
 */
export function normalizeName(input: string): string {
  let n = input.trim();
  if (n.endsWith('.') && !n.endsWith('\\.')) n = n.slice(0, -1);
  if (n === '') throw new Error('empty domain name');
  // eslint-disable-next-line no-control-regex
  if (/[^\x00-\x7f]/.test(n)) {
    n = n
      .split('.')
      .map((label) => {
        // eslint-disable-next-line no-control-regex
        if (!/[^\x00-\x7f]/.test(label)) return label;
        const a = domainToASCII(label);
        if (a === '') throw new Error(`cannot convert label "${label}" to an A-label`);
        return a;
      })
      .join('.');
  }
  n = asciiLower(n);
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x20\x7f]/.test(n)) throw new Error(`whitespace or control character in domain name "${input}"`);
  const labels = splitName(n);
  let wire = 1;
  for (const l of labels) {
    if (l.length === 0) throw new Error(`empty label in "${input}"`);
    if (l.length > 63) throw new Error(`label longer than 63 octets in "${input}"`);
    wire += l.length + 1;
  }
  if (wire > 255) throw new Error(`domain name too long: "${input}"`);
  return n;
}

/** Lowercase ASCII letters only (RFC 4343: DNS case-insensitivity is ASCII only). */
export function asciiLower(s: string): string {
  return s.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

/** Case-insensitive, trailing-dot-insensitive comparison of presentation names. */
export function sameName(a: string, b: string): boolean {
  return stripDot(asciiLower(a)) === stripDot(asciiLower(b));
}

/** One trailing dot dropped (not an escaped one, not the root's). */
export function stripDot(s: string): string {
  return s.length > 1 && s.endsWith('.') && !s.endsWith('\\.') ? s.slice(0, -1) : s;
}

/**
 * True when `name` equals `ancestor` or is below it. Both canonical. Compared
 * label by label: a label may contain an escaped dot (`evil\.example.com` is
 * one label "evil.example" under "com", not a name below example.com), so a
 * plain string suffix test is only trusted when neither name has an escape.
 */
export function isAtOrBelow(name: string, ancestor: string): boolean {
  if (ancestor === '' || ancestor === '.') return true;
  if (name === ancestor) return true;
  if (!name.endsWith('.' + ancestor)) return !name.includes('\\') && !ancestor.includes('\\') ? false : labelsAtOrBelow(name, ancestor);
  if (!name.includes('\\') && !ancestor.includes('\\')) return true;
  return labelsAtOrBelow(name, ancestor);
}

function labelsAtOrBelow(name: string, ancestor: string): boolean {
  const a = splitName(name);
  const b = splitName(ancestor);
  if (b.length > a.length) return false;
  for (let i = 1; i <= b.length; i++) if (asciiLower(a[a.length - i]!) !== asciiLower(b[b.length - i]!)) return false;
  return true;
}

/**
 * Split a presentation-format name into raw label bytes, honouring `\.` and
 * `\DDD` escapes (RFC 1035 §5.1). Returns labels as latin1 strings (one char
 * per octet).
 */
export function splitName(name: string): string[] {
  if (name === '' || name === '.') return [];
  const labels: string[] = [];
  let cur = '';
  for (let i = 0; i < name.length; i++) {
    const c = name[i]!;
    if (c === '\\') {
      const d = /^\d{3}/.exec(name.slice(i + 1));
      if (d) {
        cur += String.fromCharCode(Number(d[0]) & 0xff);
        i += 3;
      } else if (i + 1 < name.length) {
        cur += name[i + 1];
        i += 1;
      }
    } else if (c === '.') {
      labels.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  labels.push(cur);
  return labels;
}

/**
 * Lower case, one trailing dot dropped: the form names from configuration, policy tables, SMTP
 * commands and certificates are compared in (RFC 4343: DNS names compare case-insensitively; a
 * trailing dot only marks the name absolute). No validation: callers that send a name use
 * `normalizeName`.
 */
export function lowerName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

/**
 * One spelling per IP address (TLSRPT-25/26: the failure-details merge key must not split one peer
 * in two): brackets and an IPv6 zone index dropped, an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`,
 * what a dual-stack socket reports, in either notation) becomes dotted decimal, other IPv6 the
 * RFC 5952 §4 form (lower case, shortest) via the WHATWG URL parser (pure, no I/O). Anything that is
 * not an address is returned unchanged.
 */
export function canonicalIp(ip: string): string {
  const a = ip
    .trim()
    .replace(/^\[|\]$/g, '')
    .replace(/%.*$/, '');
  if (isIP(a) === 4) return a;
  if (isIP(a) !== 6) return ip;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
  if (mapped && isIP(mapped[1]!) === 4) return mapped[1]!;
  const canon = new URL(`http://[${a}]/`).hostname.slice(1, -1);
  const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(canon);
  if (hex) {
    const n = ((parseInt(hex[1]!, 16) << 16) >>> 0) + parseInt(hex[2]!, 16);
    return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
  }
  return canon;
}

/**
 * Address → name (PTR) through the relay's own resolver. Ingress uses the name only to decorate the
 * Received line (RFC 5321 §4.4 "FROM domain (TCP-info)"); it decides nothing, so any failure — bogus,
 * indeterminate, SERVFAIL, timeout — is simply "no name" and the line shows the address alone.
 *
 * Asked through the configured resolver like every other name the relay resolves, never the system's
 * (node:dns reverse would use /etc/resolv.conf: a second view of DNS with no DNSSEC status).
 */
import { isIP } from 'node:net';
import { canonicalIp } from './name.js';
import { isAnswer, type Resolver } from './types.js';

/**
 * The PTR owner of an address: RFC 1035 §3.5 (`d.c.b.a.in-addr.arpa`) and RFC 3596 §2.5 (32 nibbles,
 * least significant first, under `ip6.arpa`). An IPv4-mapped IPv6 address is its IPv4 address.
 * undefined for anything that is not an address.
 */
export function ptrName(ip: string): string | undefined {
  const a = canonicalIp(ip);
  if (isIP(a) === 4) return `${a.split('.').reverse().join('.')}.in-addr.arpa`;
  if (isIP(a) !== 6) return undefined;
  const [head = '', tail] = a.split('::');
  const groups = (s: string) => (s ? s.split(':') : []);
  const hi = groups(head);
  const lo = tail === undefined ? [] : groups(tail);
  const all = [...hi, ...Array<string>(8 - hi.length - lo.length).fill('0'), ...lo];
  const nibbles = all.map((g) => g.padStart(4, '0')).join('');
  return `${[...nibbles].reverse().join('.')}.ip6.arpa`;
}

/** The names `ip` maps back to (usable answers only), or none. Never throws. */
export async function reverseNames(resolver: Resolver, ip: string): Promise<string[]> {
  const name = ptrName(ip);
  if (!name) return [];
  try {
    const a = await resolver.lookup(name, 'PTR');
    return isAnswer(a) ? [...a.records] : [];
  } catch {
    return [];
  }
}

/**
 * Where a destination's `rua` may send us (issue 13). The `_smtp._tls` TXT record is written by
 * whoever controls the destination's DNS; without these rules it could make the relay POST or mail
 * into the operator's own network (a server-side request forgery through TLSRPT):
 *
 * - `https:` report hosts are resolved through the relay's own Resolver (never getaddrinfo: the relay
 *   trusts one view of DNS), every address is checked, and the connection goes to the checked address
 *   (no second lookup an attacker could answer differently) with the URL's host as SNI, Host header and
 *   certificate name.
 * - refused unless `tlsrpt.allow_private_targets: true`: `https:` to an IP literal or to a name with any
 *   address in a special-purpose block (loopback, RFC 1918 private, fc00::/7, link-local, unspecified,
 *   multicast, CGNAT 100.64/10, documentation, benchmarking, reserved, …: the IANA special-purpose
 *   address registries' "not globally reachable" entries) or `localhost` (RFC 6761 §6.3), and
 *   `mailto:` to an address literal (`user@[192.0.2.1]`).
 */
import net from 'node:net';
import type { Resolver } from '../../dns/types.js';
import { hostAddresses } from '../../dns/addresses.js';
import { lowerName } from '../../dns/name.js';

/** Special-purpose blocks a report must not be sent to (IANA IPv4/IPv6 Special-Purpose Address Registries, RFC 6890). */
const SPECIAL: [string, number, 'ipv4' | 'ipv6', string][] = [
  ['0.0.0.0', 8, 'ipv4', 'unspecified ("this network", RFC 791)'],
  ['10.0.0.0', 8, 'ipv4', 'private (RFC 1918)'],
  ['100.64.0.0', 10, 'ipv4', 'carrier-grade NAT (RFC 6598)'],
  ['127.0.0.0', 8, 'ipv4', 'loopback'],
  ['169.254.0.0', 16, 'ipv4', 'link-local (RFC 3927)'],
  ['172.16.0.0', 12, 'ipv4', 'private (RFC 1918)'],
  ['192.0.0.0', 24, 'ipv4', 'IETF protocol assignments (RFC 6890)'],
  ['192.0.2.0', 24, 'ipv4', 'documentation (RFC 5737)'],
  ['192.88.99.0', 24, 'ipv4', '6to4 relay anycast (deprecated, RFC 7526)'],
  ['192.168.0.0', 16, 'ipv4', 'private (RFC 1918)'],
  ['198.18.0.0', 15, 'ipv4', 'benchmarking (RFC 2544)'],
  ['198.51.100.0', 24, 'ipv4', 'documentation (RFC 5737)'],
  ['203.0.113.0', 24, 'ipv4', 'documentation (RFC 5737)'],
  ['224.0.0.0', 4, 'ipv4', 'multicast'],
  ['240.0.0.0', 4, 'ipv4', 'reserved (incl. broadcast)'],
  ['::', 128, 'ipv6', 'unspecified'],
  ['::1', 128, 'ipv6', 'loopback'],
  ['64:ff9b:1::', 48, 'ipv6', 'local-use NAT64 (RFC 8215)'],
  ['100::', 64, 'ipv6', 'discard-only (RFC 6666)'],
  ['2001::', 23, 'ipv6', 'IETF protocol assignments (RFC 2928)'],
  ['2001:db8::', 32, 'ipv6', 'documentation (RFC 3849)'],
  ['fc00::', 7, 'ipv6', 'unique local (RFC 4193)'],
  ['fe80::', 10, 'ipv6', 'link-local'],
  ['fec0::', 10, 'ipv6', 'site-local (deprecated, RFC 3879)'],
  ['ff00::', 8, 'ipv6', 'multicast'],
];

const BLOCKS = SPECIAL.map(([addr, prefix, family, what]) => {
  const b = new net.BlockList();
  b.addSubnet(addr, prefix, family);
  return { b, family, what };
});

/** IPv4 embedded in an IPv6 address that carries one to the IPv4 Internet (mapped, NAT64, 6to4). */
function embeddedV4(ip: string): string | undefined {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip) ?? /^64:ff9b::(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (m) return m[1];
  const hex = /^(?:::ffff:|64:ff9b::)([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(ip);
  if (hex) {
    const a = parseInt(hex[1]!, 16);
    const b = parseInt(hex[2]!, 16);
    return `${a >> 8}.${a & 255}.${b >> 8}.${b & 255}`;
  }
  const six = /^2002:([0-9a-f]{1,4}):([0-9a-f]{1,4}):/i.exec(ip);
  if (six) {
    const a = parseInt(six[1]!, 16);
    const b = parseInt(six[2]!, 16);
    return `${a >> 8}.${a & 255}.${b >> 8}.${b & 255}`;
  }
  return undefined;
}

/** What kind of special-purpose address `ip` is, or undefined for a globally reachable one. */
export function specialPurpose(ip: string): string | undefined {
  const family = net.isIP(ip);
  if (family === 0) return 'not an IP address';
  const fam = family === 4 ? 'ipv4' : 'ipv6';
  for (const { b, family: f, what } of BLOCKS) if (f === fam && b.check(ip, fam)) return what;
  if (family === 6) {
    const v4 = embeddedV4(ip);
    if (v4) {
      const inner = specialPurpose(v4);
      if (inner) return `${inner}, inside an IPv6 address`;
    }
  }
  return undefined;
}

/** `mailto:` rua: why the relay must not mail there, or undefined. */
export function mailtoTargetProblem(address: string, allowPrivate: boolean): string | undefined {
  if (allowPrivate) return undefined;
  const domain = address.slice(address.lastIndexOf('@') + 1);
  if (/^\[.*\]$/.test(domain)) return `mailto:${address} is an address literal (tlsrpt.allow_private_targets is not set)`;
  return undefined;
}

export interface HttpsTarget {
  host: string;
  address: string;
  family: 4 | 6;
}
export type TargetResult = ({ ok: true } & HttpsTarget) | { ok: false; refused: boolean; reason: string };

const isLocalhost = (h: string): boolean => h === 'localhost' || h.endsWith('.localhost');

/**
 * The checked address to POST `url` to. `refused`: the target itself is not allowed (logged, not
 * retried); otherwise (DNS trouble) a later attempt may succeed.
 */
export async function httpsTarget(url: string, o: { resolver?: Resolver; allowPrivate: boolean }): Promise<TargetResult> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return { ok: false, refused: true, reason: `bad URL ${url}` };
  }
  if (u.protocol !== 'https:') return { ok: false, refused: true, reason: `not https: ${url}` };
  const host = lowerName(u.hostname.replace(/^\[(.*)\]$/, '$1'));
  const ipFamily = net.isIP(host);
  if (ipFamily !== 0) {
    if (!o.allowPrivate) return { ok: false, refused: true, reason: `${url}: the host is an IP literal (tlsrpt.allow_private_targets is not set)` };
    return { ok: true, host, address: host, family: ipFamily as 4 | 6 };
  }
  if (isLocalhost(host)) {
    // RFC 6761 §6.3: localhost names are loopback, resolved locally and never sent to DNS.
    if (!o.allowPrivate) return { ok: false, refused: true, reason: `${url}: ${host} is loopback (RFC 6761; tlsrpt.allow_private_targets is not set)` };
    return { ok: true, host, address: '127.0.0.1', family: 4 };
  }
  if (!o.resolver) return { ok: false, refused: false, reason: `${url}: no resolver to look up ${host}` };
  const found = await hostAddresses(o.resolver, host);
  if (!found.ok) return { ok: false, refused: false, reason: `${url}: ${found.why}` };
  const v4 = found.v4;
  const v6 = found.v6;
  if (!o.allowPrivate) {
    // Every address counts: a name that mixes a public and a private address would otherwise reach
    // the private one whenever the public one fails.
    const bad = [...v4, ...v6].map((ip) => ({ ip, what: specialPurpose(ip) })).filter((x) => x.what);
    if (bad.length) {
      return {
        ok: false,
        refused: true,
        reason: `${url}: ${host} resolves to ${bad.map((x) => `${x.ip} (${x.what})`).join(', ')} (tlsrpt.allow_private_targets is not set)`,
      };
    }
  }
  return v4.length ? { ok: true, host, address: v4[0]!, family: 4 } : { ok: true, host, address: v6[0]!, family: 6 };
}

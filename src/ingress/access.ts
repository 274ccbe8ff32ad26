/**
 * Who may relay. One pure decision, taken at RCPT time, so that it can be tested
 * exhaustively without sockets: an open relay is the one mistake a relay cannot make
 * (RFC 5321 §3.6.1 lets an MTA refuse to relay, RFC 2505 §2 says it should unless the
 * client is known; RFC 6409 §4.3 ties submission to authentication).
 *
 * Addresses are compared as 128-bit integers in IPv6 space: an IPv4 address or prefix
 * is mapped into ::ffff:0:0/96 (RFC 4291 §2.5.5.2). That way a dual-stack listener,
 * which reports IPv4 peers as "::ffff:127.0.0.1", still matches "127.0.0.0/8", and an
 * IPv4 peer matches "::ffff:0:0/96" — one comparison, no special cases that could be
 * forgotten on one side.
 */
import { isIPv4, isIPv6 } from 'node:net';

export interface Cidr {
  /** as written in the config, for logs */
  readonly text: string;
  /** network address in IPv6 space (IPv4 mapped) */
  readonly bits: bigint;
  /** prefix length in IPv6 space (96 + n for IPv4 /n) */
  readonly prefix: number;
}

export type RelayDecision =
  | { allowed: true; reason: 'relay_clients'; matched: string }
  | { allowed: true; reason: 'authenticated'; user: string }
  | { allowed: false; reason: 'not_permitted' };

const V4_MAPPED = 0xffffn << 32n;
const ALL_ONES = (1n << 128n) - 1n;

function parseV4(s: string): bigint | undefined {
  if (!isIPv4(s)) return undefined;
  return s.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n);
}

/**
 * Parses an IPv4 or IPv6 address (zone index ignored) into IPv6 space.
 * Returns undefined for anything that is not an address.
 */
export function ipToBits(address: string): bigint | undefined {
  const a = address.trim();
  const v4 = parseV4(a);
  if (v4 !== undefined) return V4_MAPPED | v4;
  const noZone = a.split('%')[0]!;
  if (!isIPv6(noZone)) return undefined;
  let s = noZone.toLowerCase();
  // An embedded dotted quad (::ffff:1.2.3.4, RFC 4291 §2.2 form 3) stands for the last 32 bits.
  const dotted = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  let tail: bigint | undefined;
  if (dotted) {
    tail = parseV4(dotted[2]!);
    if (tail === undefined) return undefined;
    s = `${dotted[1]}0:0`;
  }
  const [head, rest] = s.split('::') as [string, string | undefined];
  const h = head === '' ? [] : head.split(':');
  const t = rest === undefined ? [] : rest === '' ? [] : rest.split(':');
  const groups = rest === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  if (groups.length !== 8) return undefined;
  let bits = groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
  if (tail !== undefined) bits = (bits & ~0xffffffffn) | tail;
  return bits;
}

/** "10.0.0.0/8", "2001:db8::/32" or a bare address (a host route). Throws on anything else. */
export function compileCidr(text: string): Cidr {
  const [addr, p, extra] = text.trim().split('/');
  if (addr === undefined || extra !== undefined) throw new Error(`invalid CIDR prefix: ${JSON.stringify(text)}`);
  const v4 = isIPv4(addr);
  const bits = ipToBits(addr);
  if (bits === undefined || (p !== undefined && !/^\d{1,3}$/.test(p))) throw new Error(`invalid CIDR prefix: ${JSON.stringify(text)}`);
  const max = v4 ? 32 : 128;
  const n = p === undefined ? max : Number(p);
  if (n > max) throw new Error(`invalid CIDR prefix: ${JSON.stringify(text)} (prefix longer than ${max})`);
  const prefix = v4 ? 96 + n : n;
  // Host bits set ("10.1.2.3/8") are tolerated and cleared, as routers do.
  return { text, bits: bits & mask(prefix), prefix };
}

function mask(prefix: number): bigint {
  return prefix === 0 ? 0n : (ALL_ONES << BigInt(128 - prefix)) & ALL_ONES;
}

export function compileCidrs(list: readonly string[]): Cidr[] {
  return list.map(compileCidr);
}

export function cidrContains(cidr: Cidr, address: string): boolean {
  const bits = ipToBits(address);
  return bits !== undefined && (bits & mask(cidr.prefix)) === cidr.bits;
}

/**
 * The relay decision. A client may relay if its address is inside one of the
 * relay_clients prefixes, or if it authenticated (the server only accepts AUTH over
 * TLS, so `user` is only ever set on an encrypted session). Everyone else is refused:
 * the caller answers 554 5.7.1 at RCPT (RFC 3463 §3.8: "Delivery not authorized").
 */
export function relayDecision(client: { address: string; user?: string | undefined }, relayClients: readonly Cidr[]): RelayDecision {
  for (const c of relayClients) {
    if (cidrContains(c, client.address)) return { allowed: true, reason: 'relay_clients', matched: c.text };
  }
  if (typeof client.user === 'string' && client.user.length > 0) return { allowed: true, reason: 'authenticated', user: client.user };
  return { allowed: false, reason: 'not_permitted' };
}

/**
 * The key per-client limits count under (AUTH failures and concurrency, message rate, connections
 * per client): an IPv4 address (also when a dual-stack socket reports it IPv4-mapped), or the
 * /`v6Prefix` network of an IPv6 address. One IPv6 host usually holds a whole /64 (RFC 6177 §2:
 * sites get /48 to /64), so counting per address would let it take 2^64 fresh addresses, each with
 * a fresh budget. Anything that is not an address counts as itself.
 */
export function clientKey(address: string, v6Prefix: number): string {
  const bits = ipToBits(address);
  if (bits === undefined) return address;
  if (bits >> 32n === 0xffffn) {
    const v4 = Number(bits & 0xffffffffn);
    return [v4 >>> 24, (v4 >>> 16) & 255, (v4 >>> 8) & 255, v4 & 255].join('.');
  }
  const net = bits & mask(v6Prefix);
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((net >> BigInt(i * 16)) & 0xffffn).toString(16));
  return `${groups.join(':')}/${v6Prefix}`;
}

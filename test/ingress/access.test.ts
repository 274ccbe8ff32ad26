/**
 * The relay decision, exhaustively: an open relay is the failure this table exists
 * to prevent (RFC 5321 §3.6.1, RFC 2505 §2).
 */
import { describe, expect, it } from 'vitest';
import { cidrContains, compileCidr, compileCidrs, ipToBits, relayDecision } from '../../src/ingress/access.js';

describe('ipToBits', () => {
  it.each([
    ['0.0.0.0', 0xffffn << 32n],
    ['127.0.0.1', (0xffffn << 32n) | 0x7f000001n],
    ['::ffff:127.0.0.1', (0xffffn << 32n) | 0x7f000001n],
    ['::FFFF:7f00:1', (0xffffn << 32n) | 0x7f000001n],
    ['::1', 1n],
    ['::', 0n],
    ['2001:db8::1', (0x20010db8n << 96n) | 1n],
    ['fe80::1%eth0', (0xfe80n << 112n) | 1n],
    ['1:2:3:4:5:6:7:8', 0x00010002000300040005000600070008n],
    ['1:2:3:4:5:6:1.2.3.4', 0x00010002000300040005000601020304n],
  ])('%s', (addr, bits) => {
    expect(ipToBits(addr)).toBe(bits);
  });

  it.each(['', 'localhost', '1.2.3', '256.1.1.1', '1.2.3.4.5', ':::1', '1::2::3', '[::1]', '127.0.0.1/8', ' '])('rejects %j', (s) => {
    expect(ipToBits(s)).toBeUndefined();
  });
});

describe('compileCidr', () => {
  it('maps IPv4 prefixes into ::ffff:0:0/96', () => {
    expect(compileCidr('10.0.0.0/8').prefix).toBe(104);
    expect(compileCidr('10.1.2.3').prefix).toBe(128);
    expect(compileCidr('::1').prefix).toBe(128);
    expect(compileCidr('::/0').prefix).toBe(0);
  });
  it('clears host bits instead of refusing them', () => {
    expect(compileCidr('10.1.2.3/8').bits).toBe(compileCidr('10.0.0.0/8').bits);
  });
  it.each(['10.0.0.0/33', '::/129', 'example.com/8', '10.0.0.0/8/8', '10.0.0.0/-1', '10.0.0.0/ 8', '10.0.0.0/'])('refuses %j', (s) => {
    expect(() => compileCidr(s)).toThrow(/invalid CIDR/);
  });
});

describe('cidrContains', () => {
  const cases: [string, string, boolean][] = [
    // IPv4
    ['127.0.0.0/8', '127.0.0.1', true],
    ['127.0.0.0/8', '127.255.255.255', true],
    ['127.0.0.0/8', '128.0.0.1', false],
    ['127.0.0.0/8', '126.255.255.255', false],
    ['10.0.0.0/8', '127.0.0.1', false],
    ['192.168.1.0/24', '192.168.1.77', true],
    ['192.168.1.0/24', '192.168.2.1', false],
    ['192.0.2.7/32', '192.0.2.7', true],
    ['192.0.2.7/32', '192.0.2.8', false],
    ['0.0.0.0/0', '203.0.113.9', true],
    // IPv4-mapped IPv6 peer (dual-stack listener) against IPv4 prefixes, RFC 4291 §2.5.5.2
    ['127.0.0.0/8', '::ffff:127.0.0.1', true],
    ['127.0.0.0/8', '::FFFF:127.0.0.1', true],
    ['10.0.0.0/8', '::ffff:127.0.0.1', false],
    ['0.0.0.0/0', '::ffff:198.51.100.1', true],
    // IPv4 peer against the mapped IPv6 prefix
    ['::ffff:0:0/96', '127.0.0.1', true],
    // IPv6
    ['::1/128', '::1', true],
    ['::1/128', '::2', false],
    ['::1/128', '0:0:0:0:0:0:0:1', true],
    ['2001:db8::/32', '2001:db8:ffff::1', true],
    ['2001:db8::/32', '2001:db9::1', false],
    ['fe80::/10', 'fe80::1%lo', true],
    // no cross-family surprises
    ['::1/128', '127.0.0.1', false],
    ['127.0.0.0/8', '::1', false],
    ['::/0', '127.0.0.1', true], // ::/0 is "everything", including mapped IPv4
    ['0.0.0.0/0', '::1', false], // an IPv4 "everything" is IPv4 only
    // IPv4-compatible (deprecated, RFC 4291 §2.5.5.1) is not IPv4-mapped
    ['127.0.0.0/8', '::127.0.0.1', false],
    // garbage never matches
    ['0.0.0.0/0', 'not-an-ip', false],
    ['::/0', '', false],
  ];
  it.each(cases)('%s contains %s: %s', (cidr, addr, expected) => {
    expect(cidrContains(compileCidr(cidr), addr)).toBe(expected);
  });
});

describe('relayDecision', () => {
  const defaults = compileCidrs(['127.0.0.0/8', '::1/128']);
  const elsewhere = compileCidrs(['10.0.0.0/8']);
  type Row = [string, readonly string[], string, string | undefined, boolean, string];
  const table: Row[] = [
    // name,                         relay_clients,  client,              user,      allowed, reason
    ['loopback v4, default list', ['127.0.0.0/8', '::1/128'], '127.0.0.1', undefined, true, 'relay_clients'],
    ['loopback v6, default list', ['127.0.0.0/8', '::1/128'], '::1', undefined, true, 'relay_clients'],
    ['mapped loopback', ['127.0.0.0/8', '::1/128'], '::ffff:127.0.0.1', undefined, true, 'relay_clients'],
    ['outside v4', ['127.0.0.0/8', '::1/128'], '203.0.113.5', undefined, false, 'not_permitted'],
    ['outside mapped', ['127.0.0.0/8', '::1/128'], '::ffff:203.0.113.5', undefined, false, 'not_permitted'],
    ['outside v6', ['127.0.0.0/8', '::1/128'], '2001:db8::5', undefined, false, 'not_permitted'],
    ['denied network', ['10.0.0.0/8'], '127.0.0.1', undefined, false, 'not_permitted'],
    ['denied network, authenticated', ['10.0.0.0/8'], '127.0.0.1', 'alice', true, 'authenticated'],
    ['outside, authenticated', ['127.0.0.0/8'], '203.0.113.5', 'alice', true, 'authenticated'],
    ['empty user is not a user', ['10.0.0.0/8'], '127.0.0.1', '', false, 'not_permitted'],
    ['empty relay_clients', [], '127.0.0.1', undefined, false, 'not_permitted'],
    ['empty relay_clients, authenticated', [], '127.0.0.1', 'bob', true, 'authenticated'],
    ['unparseable client', ['0.0.0.0/0', '::/0'], 'garbage', undefined, false, 'not_permitted'],
    ['network match wins over user', ['127.0.0.0/8'], '127.0.0.2', 'alice', true, 'relay_clients'],
  ];
  it.each(table)('%s', (_name, list, address, user, allowed, reason) => {
    const d = relayDecision({ address, user }, compileCidrs(list));
    expect(d.allowed).toBe(allowed);
    expect(d.reason).toBe(reason);
  });

  it('names the matching prefix', () => {
    expect(relayDecision({ address: '::1' }, defaults)).toEqual({ allowed: true, reason: 'relay_clients', matched: '::1/128' });
    expect(relayDecision({ address: '127.0.0.1', user: 'carol' }, elsewhere)).toEqual({ allowed: true, reason: 'authenticated', user: 'carol' });
  });
});

/**
 * PTR lookups for the Received line go through the relay's resolver (dns/reverse.ts): the owner
 * names of RFC 1035 §3.5 and RFC 3596 §2.5, and real queries to a real DNS server on loopback.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ptrName, reverseNames } from '../../src/dns/reverse.js';
import { StubResolver } from '../../src/dns/stub.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';

describe('ptrName (RFC 1035 §3.5, RFC 3596 §2.5)', () => {
  it('IPv4: the octets reversed under in-addr.arpa; IPv4-mapped IPv6 is its IPv4 address', () => {
    expect(ptrName('192.0.2.10')).toBe('10.2.0.192.in-addr.arpa');
    expect(ptrName('::ffff:192.0.2.10')).toBe('10.2.0.192.in-addr.arpa');
  });

  it("IPv6: RFC 3596 §2.5's own example, and compressed forms expand to 32 nibbles", () => {
    expect(ptrName('4321:0:1:2:3:4:567:89ab')).toBe('b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa');
    expect(ptrName('2001:db8::1')).toBe('1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa');
    expect(ptrName('::')).toBe(`${Array(32).fill('0').join('.')}.ip6.arpa`);
    expect(ptrName('[2001:DB8::1%eth0]')).toBe(ptrName('2001:db8::1'));
  });

  it('not an address: no name (nothing is asked)', () => {
    for (const s of ['', 'localhost', '1.2.3', '300.1.1.1', '::g', 'a.b.c.d', '1.2.3.4\r\nX']) expect(ptrName(s)).toBeUndefined();
  });

  it('property: any IPv6 address, however written, gives the 32 nibbles of its 128 bits, least significant first', () => {
    fc.assert(
      fc.property(fc.ipV6(), (ip) => {
        const name = ptrName(ip);
        if (/^::ffff:\d/i.test(ip) || /^(0{1,4}:){5}ffff:/i.test(ip)) return; // IPv4-mapped: in-addr.arpa (above)
        expect(name).toMatch(/^([0-9a-f]\.){32}ip6\.arpa$/);
        const hex = name!.slice(0, 63).split('.').reverse().join('');
        const groups = hex.match(/.{4}/g)!.join(':');
        expect(new URL(`http://[${groups}]/`).hostname).toBe(new URL(`http://[${ip}]/`).hostname);
      }),
      { numRuns: 500 },
    );
  });
});

describe('reverseNames through the relay resolver (real DNS on loopback)', () => {
  let dns: TestDns;
  let resolver: StubResolver;
  beforeAll(async () => {
    dns = await startDnsServer({
      zones: [{ name: 'in-addr.arpa', secure: false }],
      records: [
        { name: '10.2.0.192.in-addr.arpa', type: 'PTR', data: 'Client.Example.' },
        { name: '11.2.0.192.in-addr.arpa', type: 'PTR', data: 'slow.example' },
      ],
    });
    dns.behave('11.2.0.192.in-addr.arpa', 'PTR', 'servfail');
    resolver = new StubResolver({ servers: [dns.server], timeoutMs: 2000, attempts: 1 });
  });
  afterAll(async () => {
    await resolver.close();
    await dns.close();
  });

  it('asks the configured resolver for PTR at the RFC 1035 owner and gives the name in canonical form', async () => {
    expect(await reverseNames(resolver, '192.0.2.10')).toEqual(['client.example']);
    expect(dns.queriesFor('10.2.0.192.in-addr.arpa', 'PTR')).toBe(1);
  });

  it('a failing answer (SERVFAIL) or no record is no name, never an error', async () => {
    expect(await reverseNames(resolver, '192.0.2.11')).toEqual([]);
    expect(await reverseNames(resolver, '192.0.2.12')).toEqual([]);
    expect(await reverseNames(resolver, 'not-an-ip')).toEqual([]);
  });
});

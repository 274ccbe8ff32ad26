/**
 * Regression (found by the fault suite's DNS fuzzer, test/faults/dnsFuzz.test.ts): a reply with
 * AD=1 and no record for the question was taken as a secure denial even when it was not one —
 * records under another owner in the answer section (a corrupted owner name), or no SOA at all
 * (a corrupted ANCOUNT that left the real answer as trailing bytes). A secure "no TLSA" switches
 * DANE off for the host (RFC 7672 §2.2.3), so such a reply must be an error, never a denial.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import dnsPacket from 'dns-packet';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { StubResolver } from '../../src/dns/stub.js';

let dns: TestDns;
let r: StubResolver;
const NAME = '_25._tcp.mx.dest.test';
const tlsa = { usage: 3, selector: 1, matchingType: 1, certificate: Buffer.alloc(32, 1) };

function reply(q: Buffer, p: { ad: boolean; rcode?: number; answers?: dnsPacket.Answer[]; authorities?: dnsPacket.Answer[] }): Buffer {
  const query = dnsPacket.decode(q);
  return dnsPacket.encode({
    type: 'response',
    id: query.id,
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (p.ad ? dnsPacket.AUTHENTIC_DATA : 0) | (p.rcode ?? 0),
    questions: query.questions,
    answers: p.answers ?? [],
    authorities: p.authorities ?? [],
  });
}
const soa: dnsPacket.Answer = {
  name: 'dest.test',
  type: 'SOA',
  ttl: 300,
  class: 'IN',
  data: { mname: 'ns.dest.test', rname: 'hostmaster.dest.test', serial: 1, refresh: 3600, retry: 600, expire: 86400, minimum: 300 },
};

beforeAll(async () => {
  dns = await startDnsServer();
  r = new StubResolver({ servers: [dns.server], timeoutMs: 500, attempts: 1, cache: false });
});
afterAll(async () => {
  await r.close();
  await dns.close();
});

describe('secure denials must look like denials (DANE-1, DANE-33)', () => {
  it('DANE-33 AD=1, TLSA record under another owner, no record for the question → error, not "no TLSA"', async () => {
    dns.behave(NAME, 'TLSA', {
      raw: (q) => reply(q, { ad: true, answers: [{ name: '_25._tcp.mx.dext.test', type: 'TLSA', ttl: 300, class: 'IN', data: tlsa }], authorities: [soa] }),
    });
    const a = await r.lookup(NAME, 'TLSA');
    expect(a.error).toMatchObject({ kind: 'malformed' });
    expect(a.error!.message).toMatch(/unrelated TLSA record/);
    expect(a.status).toBe('indeterminate');
  });

  it('DANE-33 AD=1, NOERROR, empty answer and no SOA → error', async () => {
    dns.behave(NAME, 'TLSA', { raw: (q) => reply(q, { ad: true }) });
    const a = await r.lookup(NAME, 'TLSA');
    expect(a.error).toMatchObject({ kind: 'malformed' });
    expect(a.error!.message).toMatch(/without the zone's SOA/);
  });

  it('DANE-33 AD=1 NXDOMAIN without SOA → error', async () => {
    dns.behave(NAME, 'TLSA', { raw: (q) => reply(q, { ad: true, rcode: 3 }) });
    expect((await r.lookup(NAME, 'TLSA')).error).toMatchObject({ kind: 'malformed' });
  });

  it('DANE-33 a CNAME whose target was corrupted, next to records for the real target, is not followed (fuzz seed 549620057)', async () => {
    const ALIAS = '_25._tcp.alias.dest.test';
    // the corrupted target exists nowhere: following it would end in a "secure" NXDOMAIN → no TLSA
    dns.behave(ALIAS, 'TLSA', {
      raw: (q) =>
        reply(q, {
          ad: true,
          answers: [
            { name: ALIAS, type: 'CNAME', ttl: 300, class: 'IN', data: '_25._tcp.ho\\000\\001.provider.test' },
            { name: '_25._tcp.host.provider.test', type: 'TLSA', ttl: 300, class: 'IN', data: tlsa },
          ],
        }),
    });
    const a = await r.lookup(ALIAS, 'TLSA');
    expect(a.error).toMatchObject({ kind: 'malformed' });
    expect(a.error!.message).toMatch(/answer section holds TLSA for _25\._tcp\.host\.provider\.test/);
    expect(dns.queriesFor('_25._tcp.ho\\000\\001.provider.test', 'TLSA')).toBe(0);
  });

  it('DANE-5 an incomplete but clean chain is still followed (the target asked for on its own)', async () => {
    const ALIAS = '_25._tcp.alias2.dest.test';
    dns.behave(ALIAS, 'TLSA', {
      raw: (q) => reply(q, { ad: true, answers: [{ name: ALIAS, type: 'CNAME', ttl: 300, class: 'IN', data: '_25._tcp.mx.provider.test' }] }),
    });
    dns.behave('_25._tcp.mx.provider.test', 'TLSA', {
      raw: (q) => reply(q, { ad: true, answers: [{ name: '_25._tcp.mx.provider.test', type: 'TLSA', ttl: 300, class: 'IN', data: tlsa }] }),
    });
    const a = await r.lookup(ALIAS, 'TLSA');
    expect(a.error).toBeUndefined();
    expect(a).toMatchObject({ status: 'secure', canonicalName: '_25._tcp.mx.provider.test' });
    expect(a.records).toHaveLength(1);
  });

  it('DANE-1 a real secure NODATA (SOA in authority, empty answer) is still a secure denial', async () => {
    dns.behave(NAME, 'TLSA', { raw: (q) => reply(q, { ad: true, authorities: [soa] }) });
    const a = await r.lookup(NAME, 'TLSA');
    expect(a.error).toBeUndefined();
    expect(a).toMatchObject({ status: 'secure', rcode: 'NOERROR', records: [] });
  });

  it('DANE-1 an insecure NODATA without SOA is still an insecure answer (the check is for secure denials only)', async () => {
    dns.behave(NAME, 'TLSA', { raw: (q) => reply(q, { ad: false }) });
    const a = await r.lookup(NAME, 'TLSA');
    expect(a.error).toBeUndefined();
    expect(a).toMatchObject({ status: 'insecure', records: [] });
  });
});

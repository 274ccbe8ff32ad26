/**
 * StubResolver (dns.mode: trust-ad) against real DNS servers on loopback:
 * test/support/dnsServer.ts (a validating-resolver look-alike built on
 * dns-packet) and, for spoofing tests, hand-rolled UDP sockets.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import dnsPacket from 'dns-packet';
import { StubResolver, isLoopbackServer, statusFromFlags, type StubResolverOptions } from '../../src/dns/stub.js';
import { isAnswer } from '../../src/dns/types.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';

const RD = dnsPacket.RECURSION_DESIRED;
const RA = dnsPacket.RECURSION_AVAILABLE;
const AD = dnsPacket.AUTHENTIC_DATA;

let dns: TestDns;
let dns2: TestDns;
const resolvers: StubResolver[] = [];

function mk(o: Partial<StubResolverOptions> = {}): StubResolver {
  const r = new StubResolver({ servers: [dns.server], timeoutMs: 2000, attempts: 1, ...o });
  resolvers.push(r);
  return r;
}

/** A reply to `query` built with dns-packet, for `raw` behaviours. */
function reply(query: Buffer, p: Partial<dnsPacket.Packet> = {}, ad = true): Buffer {
  const q = dnsPacket.decode(query);
  return dnsPacket.encode({ type: 'response', id: q.id, flags: RD | RA | (ad ? AD : 0), questions: q.questions, ...p });
}

beforeAll(async () => {
  dns = await startDnsServer({
    zones: [
      { name: 'sec.test', secure: true },
      { name: 'insec.test', secure: false },
      { name: 'neg.test', secure: true },
      { name: 'longneg.test', secure: false },
    ],
  });
  dns2 = await startDnsServer({ zones: [{ name: 'sec.test', secure: true }] });
});

afterEach(async () => {
  await Promise.all(resolvers.splice(0).map((r) => r.close()));
});

afterAll(async () => {
  await Promise.all([dns.close(), dns2.close()]);
});

describe('DANE-1 status of answers', () => {
  it('DANE-1 statusFromFlags: rcode × AD table', () => {
    const table: Array<[string | number, boolean, string]> = [
      ['NOERROR', true, 'secure'],
      ['NOERROR', false, 'insecure'],
      ['NXDOMAIN', true, 'secure'],
      ['NXDOMAIN', false, 'insecure'],
      ['SERVFAIL', true, 'indeterminate'],
      ['SERVFAIL', false, 'indeterminate'],
      ['REFUSED', true, 'indeterminate'],
      ['FORMERR', false, 'indeterminate'],
      ['NOTIMP', false, 'indeterminate'],
      ['BADVERS', true, 'indeterminate'],
      [0, true, 'secure'],
      [3, false, 'insecure'],
      [2, true, 'indeterminate'],
      ['noerror', true, 'secure'],
    ];
    for (const [rcode, ad, want] of table) expect([rcode, ad, statusFromFlags(rcode, ad)]).toEqual([rcode, ad, want]);
  });

  it('DANE-1 secure/insecure answers and denials are answers; SERVFAIL is an error, not "no records"', async () => {
    dns.add({ name: 'a.sec.test', type: 'A', data: '192.0.2.1' }, { name: 'a.insec.test', type: 'A', data: '192.0.2.2' });
    dns.behave('bogus.sec.test', 'A', 'servfail');
    const r = mk();
    const sec = await r.lookup('a.sec.test', 'A');
    expect([sec.status, sec.records, sec.rcode, isAnswer(sec)]).toEqual(['secure', ['192.0.2.1'], 'NOERROR', true]);
    const insec = await r.lookup('a.insec.test', 'A');
    expect([insec.status, insec.records, isAnswer(insec)]).toEqual(['insecure', ['192.0.2.2'], true]);
    const nxSec = await r.lookup('nothing.sec.test', 'A');
    expect([nxSec.rcode, nxSec.status, nxSec.records, isAnswer(nxSec)]).toEqual(['NXDOMAIN', 'secure', [], true]);
    const nxInsec = await r.lookup('nothing.insec.test', 'A');
    expect([nxInsec.rcode, nxInsec.status, isAnswer(nxInsec)]).toEqual(['NXDOMAIN', 'insecure', true]);
    const bogus = await r.lookup('bogus.sec.test', 'A');
    expect(bogus.error?.kind).toBe('servfail');
    expect(bogus.status).toBe('indeterminate');
    expect(bogus.records).toEqual([]);
    expect(isAnswer(bogus)).toBe(false);
  });
});

describe('DANE-3 query flags', () => {
  it('DANE-3 queries set RD=1, DO=1, CD=0 (AD=0) over UDP and over the TCP retry', async () => {
    dns.add({ name: 'flags.sec.test', type: 'MX', data: { preference: 10, exchange: 'mx.flags.sec.test' } });
    dns.behave('flags.sec.test', 'MX', 'truncate');
    const a = await mk().lookup('flags.sec.test', 'MX');
    expect(a.status).toBe('secure');
    const seen = dns.queries.filter((q) => q.name === 'flags.sec.test');
    expect(seen.map((q) => q.transport)).toEqual(['udp', 'tcp']);
    for (const q of seen) expect(q.flags).toEqual({ rd: true, do: true, cd: false, ad: false });
  });
});

describe('transport', () => {
  it('TC=1 → the same question over TCP to the same server, and that answer is used', async () => {
    dns.add({ name: 'tc.sec.test', type: 'A', data: '192.0.2.30' });
    dns.behave('tc.sec.test', 'A', 'truncate');
    const a = await mk({ servers: [dns.server, dns2.server] }).lookup('tc.sec.test', 'A');
    expect([a.status, a.records, a.server]).toEqual(['secure', ['192.0.2.30'], dns.server]);
    expect(dns2.queriesFor('tc.sec.test')).toBe(0);
  });

  it('an answer larger than the EDNS UDP size (1232) is truncated by the server and read in full over TCP', async () => {
    const strings = Array.from({ length: 40 }, (_, i) => `${String(i).padStart(2, '0')}-${'x'.repeat(97)}`);
    dns.add(...strings.map((s) => ({ name: 'big.sec.test', type: 'TXT' as const, data: s })));
    const a = await mk().lookup('big.sec.test', 'TXT');
    expect(a.records.length).toBe(40);
    expect([...a.records].sort()).toEqual(strings);
    expect(dns.queries.filter((q) => q.name === 'big.sec.test').map((q) => q.transport)).toEqual(['udp', 'tcp']);
  });

  it('timeout on the first server → the next server answers', async () => {
    dns.behave('slow.sec.test', 'A', 'timeout');
    dns2.add({ name: 'slow.sec.test', type: 'A', data: '192.0.2.31' });
    const t0 = Date.now();
    const a = await mk({ servers: [dns.server, dns2.server], timeoutMs: 300 }).lookup('slow.sec.test', 'A');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect([a.status, a.records, a.server]).toEqual(['secure', ['192.0.2.31'], dns2.server]);
    expect(dns.queriesFor('slow.sec.test', 'A')).toBe(1);
  });

  it('attempts = rounds over the server list; all timing out → error "timeout"', async () => {
    dns.behave('dead.sec.test', '*', 'timeout');
    dns2.behave('dead.sec.test', '*', 'timeout');
    const a = await mk({ servers: [dns.server, dns2.server], timeoutMs: 150, attempts: 2 }).lookup('dead.sec.test', 'A');
    expect(a.error?.kind).toBe('timeout');
    expect(a.status).toBe('indeterminate');
    expect([dns.queriesFor('dead.sec.test'), dns2.queriesFor('dead.sec.test')]).toEqual([2, 2]);
  });

  it('REFUSED/NOTIMP/FORMERR → next server; refused everywhere → error "refused", each server asked once', async () => {
    dns2.add({ name: 'ref.sec.test', type: 'A', data: '192.0.2.32' });
    const r = mk({ servers: [dns.server, dns2.server], attempts: 3 });
    for (const b of ['refused', 'notimp', 'formerr'] as const) {
      dns.behave('ref.sec.test', 'A', b);
      const a = await mk({ servers: [dns.server, dns2.server], cache: false }).lookup('ref.sec.test', 'A');
      expect([b, a.records, a.server]).toEqual([b, ['192.0.2.32'], dns2.server]);
    }
    dns.behave('allref.sec.test', 'A', 'refused');
    dns2.behave('allref.sec.test', 'A', 'refused');
    const all = await r.lookup('allref.sec.test', 'A');
    expect(all.error?.kind).toBe('refused');
    expect(all.rcode).toBe('REFUSED');
    expect([dns.queriesFor('allref.sec.test'), dns2.queriesFor('allref.sec.test')]).toEqual([1, 1]);
  });

  it("DANE-1 SERVFAIL is the validator's verdict: error at once, the next server is not asked", async () => {
    dns.behave('sf.sec.test', 'A', 'servfail');
    dns2.add({ name: 'sf.sec.test', type: 'A', data: '192.0.2.33' });
    const a = await mk({ servers: [dns.server, dns2.server] }).lookup('sf.sec.test', 'A');
    expect(a.error?.kind).toBe('servfail');
    expect(dns2.queriesFor('sf.sec.test')).toBe(0);
  });
});

describe('hostile replies', () => {
  it('garbage, wrong-ID, wrong-question, wrong-type and QR=0 datagrams are ignored; the genuine reply is accepted', async () => {
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    sock.on('message', (msg, rinfo) => {
      const q = dnsPacket.decode(msg);
      const name = q.questions![0]!.name;
      const send = (b: Buffer): void => void sock.send(b, rinfo.port, rinfo.address);
      const evil: dnsPacket.Answer = { name, type: 'A', ttl: 60, data: '6.6.6.6' };
      const base = { type: 'response' as const, id: q.id, flags: RD | RA | AD, questions: q.questions };
      send(randomBytes(40));
      send(Buffer.from([0x00]));
      send(dnsPacket.encode({ ...base, id: ((q.id ?? 0) + 1) & 0xffff, answers: [evil] }));
      send(dnsPacket.encode({ ...base, questions: [{ name: 'evil.test', type: 'A' }], answers: [{ ...evil, name: 'evil.test' }] }));
      send(dnsPacket.encode({ ...base, questions: [{ name, type: 'AAAA' }], answers: [evil] }));
      send(dnsPacket.encode({ ...base, type: 'query', answers: [evil] }));
      send(dnsPacket.encode({ ...base, answers: [{ name, type: 'A', ttl: 60, data: '192.0.2.44' }] }));
    });
    try {
      const a = await mk({ servers: [`127.0.0.1:${sock.address().port}`] }).lookup('spoof.sec.test', 'A');
      expect([a.error, a.status, a.records]).toEqual([undefined, 'secure', ['192.0.2.44']]);
    } finally {
      await new Promise<void>((r) => sock.close(() => r()));
    }
  });

  it('a reply with our ID and question but a corrupt body → error "malformed" (no crash, nothing used)', async () => {
    dns.behave('corrupt.sec.test', 'A', {
      raw: (query) => {
        const good = reply(query, { answers: [{ name: 'corrupt.sec.test', type: 'A', ttl: 60, data: '192.0.2.45' }] });
        const bad = Buffer.concat([good, Buffer.from([0xff])]);
        bad.writeUInt16BE(5, good.length - 6); // RDLENGTH 5 for an A record
        return bad;
      },
    });
    const a = await mk().lookup('corrupt.sec.test', 'A');
    expect(a.error?.kind).toBe('malformed');
    expect(a.records).toEqual([]);
    expect(isAnswer(a)).toBe(false);
  });

  it('only garbage from the server → ignored until the timeout, then error "timeout"', async () => {
    dns.behave('junk.sec.test', 'A', { raw: () => randomBytes(64) });
    const a = await mk({ timeoutMs: 200 }).lookup('junk.sec.test', 'A');
    expect(a.error?.kind).toBe('timeout');
  });

  it('the question name in the reply is matched case-insensitively (RFC 4343; 0x20 echo)', async () => {
    dns.behave('mixed.sec.test', 'A', {
      raw: (query) =>
        reply(query, {
          questions: [{ name: 'MiXeD.SeC.TeSt', type: 'A', class: 'IN' }],
          answers: [{ name: 'MIXED.sec.test', type: 'A', ttl: 60, data: '192.0.2.46' }],
        }),
    });
    const a = await mk().lookup('mixed.sec.test', 'A');
    expect([a.status, a.records]).toEqual(['secure', ['192.0.2.46']]);
  });

  it('records of other owners or other types in the answer section are ignored', async () => {
    dns.behave('junkrr.sec.test', 'A', {
      raw: (query) =>
        reply(query, {
          answers: [
            { name: 'bank.test', type: 'A', ttl: 60, data: '6.6.6.6' },
            { name: 'junkrr.sec.test', type: 'TXT', ttl: 60, data: 'x' },
            { name: 'junkrr.sec.test', type: 'A', ttl: 60, data: '192.0.2.47' },
            { name: 'www.junkrr.sec.test', type: 'A', ttl: 60, data: '6.6.6.7' },
          ],
        }),
    });
    const a = await mk().lookup('junkrr.sec.test', 'A');
    expect([a.records, a.canonicalName, a.chain]).toEqual([['192.0.2.47'], 'junkrr.sec.test', []]);
  });
});

describe('DANE-5 CNAME and DNAME', () => {
  it('DANE-5 secure chain: status secure, firstStatus secure, hops in order, no extra CNAME query', async () => {
    dns.add(
      { name: 'c1.sec.test', type: 'CNAME', data: 'c2.sec.test' },
      { name: 'c2.sec.test', type: 'CNAME', data: 'c3.sec.test' },
      { name: 'c3.sec.test', type: 'A', data: '192.0.2.50' },
    );
    const a = await mk().lookup('c1.sec.test', 'A');
    expect(a.status).toBe('secure');
    expect(a.firstStatus).toBe('secure');
    expect(a.canonicalName).toBe('c3.sec.test');
    expect(a.records).toEqual(['192.0.2.50']);
    expect(a.chain).toEqual([
      { owner: 'c1.sec.test', target: 'c2.sec.test', status: 'secure' },
      { owner: 'c2.sec.test', target: 'c3.sec.test', status: 'secure' },
    ]);
    expect(dns.queriesFor('c1.sec.test', 'CNAME')).toBe(0);
  });

  it('DANE-5 secure first CNAME into an insecure zone: whole result insecure, firstStatus secure from a CNAME-type query', async () => {
    dns.add({ name: 'm1.sec.test', type: 'CNAME', data: 'm2.insec.test' }, { name: 'm2.insec.test', type: 'A', data: '192.0.2.51' });
    const a = await mk().lookup('m1.sec.test', 'A');
    expect([a.status, a.firstStatus, a.canonicalName, a.records]).toEqual(['insecure', 'secure', 'm2.insec.test', ['192.0.2.51']]);
    expect(a.chain[0]).toEqual({ owner: 'm1.sec.test', target: 'm2.insec.test', status: 'secure' });
    expect(dns.queriesFor('m1.sec.test', 'CNAME')).toBe(1);
  });

  it('DANE-5 insecure first CNAME into a secure zone: everything after it is insecure, firstStatus insecure', async () => {
    dns.add({ name: 'i1.insec.test', type: 'CNAME', data: 'i2.sec.test' }, { name: 'i2.sec.test', type: 'A', data: '192.0.2.52' });
    const a = await mk().lookup('i1.insec.test', 'A');
    expect([a.status, a.firstStatus, a.canonicalName]).toEqual(['insecure', 'insecure', 'i2.sec.test']);
    expect(a.chain[0]!.status).toBe('insecure');
  });

  it('DANE-5 DNAME counts via its synthesised CNAME', async () => {
    dns.add({ name: 'old.sec.test', type: 'DNAME', data: 'new.sec.test' }, { name: 'mx.new.sec.test', type: 'A', data: '192.0.2.53' });
    const a = await mk().lookup('mx.old.sec.test', 'A');
    expect([a.status, a.firstStatus, a.canonicalName, a.records]).toEqual(['secure', 'secure', 'mx.new.sec.test', ['192.0.2.53']]);
    expect(a.chain).toEqual([{ owner: 'mx.old.sec.test', target: 'mx.new.sec.test', status: 'secure' }]);
  });

  it('DANE-5 an incomplete chain is completed by querying the target; the insecure second response makes the result insecure', async () => {
    dns.behave('p1.sec.test', 'A', {
      raw: (query) => reply(query, { answers: [{ name: 'p1.sec.test', type: 'CNAME', ttl: 60, data: 'p2.insec.test' }] }),
    });
    dns.add({ name: 'p2.insec.test', type: 'A', ttl: 30, data: '192.0.2.54' });
    const a = await mk().lookup('p1.sec.test', 'A');
    expect([a.status, a.firstStatus, a.canonicalName, a.records, a.ttl]).toEqual(['insecure', 'secure', 'p2.insec.test', ['192.0.2.54'], 30]);
    expect(a.chain).toEqual([{ owner: 'p1.sec.test', target: 'p2.insec.test', status: 'secure' }]);
    expect(dns.queriesFor('p2.insec.test', 'A')).toBe(1);
    // the first response was AD=1 and covered the first CNAME: no CNAME-type query needed
    expect(dns.queriesFor('p1.sec.test', 'CNAME')).toBe(0);
  });

  it('DANE-5 an error at any hop fails the lookup (in one response and on the follow-up query)', async () => {
    dns.add({ name: 'e1.sec.test', type: 'CNAME', data: 'e2.sec.test' });
    dns.behave('e2.sec.test', 'A', 'servfail');
    const inOne = await mk().lookup('e1.sec.test', 'A');
    expect([inOne.error?.kind, inOne.status]).toEqual(['servfail', 'indeterminate']);

    dns.behave('e3.sec.test', 'A', {
      raw: (query) => reply(query, { answers: [{ name: 'e3.sec.test', type: 'CNAME', ttl: 60, data: 'e4.sec.test' }] }),
    });
    dns.behave('e4.sec.test', 'A', 'servfail');
    const followUp = await mk().lookup('e3.sec.test', 'A');
    expect([followUp.error?.kind, followUp.status, followUp.records]).toEqual(['servfail', 'indeterminate', []]);
    expect(followUp.chain.map((h) => h.target)).toEqual(['e4.sec.test']);
  });

  it('DANE-5 a CNAME loop is an error "loop"', async () => {
    dns.add({ name: 'l1.sec.test', type: 'CNAME', data: 'l2.sec.test' }, { name: 'l2.sec.test', type: 'CNAME', data: 'l1.sec.test' });
    const a = await mk().lookup('l1.sec.test', 'A');
    expect([a.error?.kind, a.status, a.records]).toEqual(['loop', 'indeterminate', []]);
  });

  it('DANE-5 going past 8 aliases is an error "depth"; exactly 8 is followed', async () => {
    for (let i = 0; i < 9; i++) dns.add({ name: `d${i}.sec.test`, type: 'CNAME', data: `d${i + 1}.sec.test` });
    dns.add({ name: 'd9.sec.test', type: 'A', data: '192.0.2.55' });
    const r = mk();
    const nine = await r.lookup('d0.sec.test', 'A');
    expect([nine.error?.kind, nine.status]).toEqual(['depth', 'indeterminate']);
    const eight = await r.lookup('d1.sec.test', 'A');
    expect([eight.error, eight.chain.length, eight.records, eight.status]).toEqual([undefined, 8, ['192.0.2.55'], 'secure']);
  });

  it('a CNAME-type lookup returns the alias itself, without following it', async () => {
    dns.add({ name: 'self.sec.test', type: 'CNAME', data: 'Target.Insec.Test.' });
    const a = await mk().lookup('self.sec.test', 'CNAME');
    expect([a.status, a.records, a.chain, a.canonicalName]).toEqual(['secure', ['target.insec.test'], [], 'self.sec.test']);
  });
});

describe('negative answers and record types', () => {
  it('DANE-1 NXDOMAIN vs NODATA (also at an empty non-terminal), with the SOA-derived negative TTL', async () => {
    dns.add(
      {
        name: 'neg.test',
        type: 'SOA',
        ttl: 900,
        data: { mname: 'ns.neg.test', rname: 'h.neg.test', serial: 1, refresh: 1, retry: 1, expire: 1, minimum: 120 },
      },
      { name: 'txtonly.neg.test', type: 'TXT', data: 'hello' },
      { name: '_25._tcp.mx.neg.test', type: 'TLSA', data: { usage: 3, selector: 1, matchingType: 1, certificate: randomBytes(32) } },
      {
        name: 'longneg.test',
        type: 'SOA',
        ttl: 86400,
        data: { mname: 'ns.longneg.test', rname: 'h.longneg.test', serial: 1, refresh: 1, retry: 1, expire: 1, minimum: 86400 },
      },
    );
    const r = mk();
    const nodata = await r.lookup('txtonly.neg.test', 'A');
    expect([nodata.rcode, nodata.status, nodata.records, nodata.ttl, isAnswer(nodata)]).toEqual(['NOERROR', 'secure', [], 120, true]);
    const ent = await r.lookup('_tcp.mx.neg.test', 'TLSA');
    expect([ent.rcode, ent.records]).toEqual(['NOERROR', []]);
    const nx = await r.lookup('missing.neg.test', 'A');
    expect([nx.rcode, nx.status, nx.records, nx.ttl]).toEqual(['NXDOMAIN', 'secure', [], 120]);
    const capped = await r.lookup('missing.longneg.test', 'A');
    expect([capped.rcode, capped.status, capped.ttl]).toEqual(['NXDOMAIN', 'insecure', 3600]);
  });

  it('DANE-30 TLSA at _25._tcp.<host> round-trips through a real server', async () => {
    const d1 = randomBytes(32);
    const d2 = randomBytes(64);
    dns.add(
      { name: '_25._tcp.mail.sec.test', type: 'TLSA', ttl: 120, data: { usage: 3, selector: 1, matchingType: 1, certificate: d1 } },
      { name: '_25._tcp.mail.sec.test', type: 'TLSA', ttl: 120, data: { usage: 2, selector: 0, matchingType: 2, certificate: d2 } },
    );
    const a = await mk().lookup('_25._tcp.mail.sec.test', 'TLSA');
    expect(a.status).toBe('secure');
    expect(a.ttl).toBe(120);
    expect(a.records).toEqual([
      { usage: 3, selector: 1, matchingType: 1, data: d1 },
      { usage: 2, selector: 0, matchingType: 2, data: d2 },
    ]);
  });

  it('TXT with several strings in one RR is joined without separator; separate RRs stay separate', async () => {
    dns.add(
      { name: '_smtp._tls.sec.test', type: 'TXT', data: ['v=TLSRPTv1;', 'rua=mailto:', 'r@sec.test'] },
      { name: '_smtp._tls.sec.test', type: 'TXT', data: 'other' },
    );
    const a = await mk().lookup('_smtp._tls.sec.test', 'TXT');
    expect(a.records).toEqual(['v=TLSRPTv1;rua=mailto:r@sec.test', 'other']);
  });

  it('MX records come back with lowercase exchanges and their preferences', async () => {
    dns.add(
      { name: 'mxs.sec.test', type: 'MX', data: { preference: 20, exchange: 'MX2.Sec.Test' } },
      { name: 'mxs.sec.test', type: 'MX', data: { preference: 10, exchange: 'mx1.sec.test.' } },
    );
    const a = await mk().lookup('mxs.sec.test', 'MX');
    expect(a.records).toEqual([
      { preference: 20, exchange: 'mx2.sec.test' },
      { preference: 10, exchange: 'mx1.sec.test' },
    ]);
  });
});

describe('cache', () => {
  it('positive answers are cached for their TTL: a second lookup asks no server and reports the remaining TTL', async () => {
    dns.add({ name: 'cache1.sec.test', type: 'A', ttl: 100, data: '192.0.2.60' });
    const r = mk();
    const first = await r.lookup('cache1.sec.test', 'A');
    (first.records as string[]).push('6.6.6.6'); // a caller mutating its copy must not poison the cache
    const second = await r.lookup('CACHE1.sec.test.', 'A');
    expect(dns.queriesFor('cache1.sec.test', 'A')).toBe(1);
    expect([second.records, second.status]).toEqual([['192.0.2.60'], 'secure']);
    expect(second.ttl).toBeGreaterThan(95);
    expect(second.ttl).toBeLessThanOrEqual(100);
  });

  it('concurrent identical lookups share one in-flight query', async () => {
    dns.add({ name: 'shared.sec.test', type: 'A', data: '192.0.2.61' });
    dns.behave('shared.sec.test', 'A', { delayMs: 100 });
    const r = mk();
    const all = await Promise.all(Array.from({ length: 5 }, () => r.lookup('shared.sec.test', 'A')));
    expect(all.map((a) => a.records)).toEqual(Array(5).fill(['192.0.2.61']));
    expect(dns.queriesFor('shared.sec.test', 'A')).toBe(1);
  });

  it('negative answers are cached; errors are not', async () => {
    dns.behave('sfcache.sec.test', 'A', 'servfail');
    const r = mk();
    await r.lookup('nxcache.sec.test', 'A');
    await r.lookup('nxcache.sec.test', 'A');
    expect(dns.queriesFor('nxcache.sec.test', 'A')).toBe(1);
    expect((await r.lookup('sfcache.sec.test', 'A')).error?.kind).toBe('servfail');
    expect((await r.lookup('sfcache.sec.test', 'A')).error?.kind).toBe('servfail');
    expect(dns.queriesFor('sfcache.sec.test', 'A')).toBe(2);
  });

  it('cache:false asks every time, and TTL 0 answers are never cached', async () => {
    dns.add({ name: 'nocache.sec.test', type: 'A', data: '192.0.2.62' }, { name: 'ttl0.sec.test', type: 'A', ttl: 0, data: '192.0.2.63' });
    const off = mk({ cache: false });
    await off.lookup('nocache.sec.test', 'A');
    await off.lookup('nocache.sec.test', 'A');
    expect(dns.queriesFor('nocache.sec.test')).toBe(2);
    const on = mk();
    await on.lookup('ttl0.sec.test', 'A');
    await on.lookup('ttl0.sec.test', 'A');
    expect(dns.queriesFor('ttl0.sec.test')).toBe(2);
  });

  it('maxCacheEntries bounds the cache; the least recently used entry is evicted', async () => {
    for (const n of ['lru1', 'lru2', 'lru3']) dns.add({ name: `${n}.sec.test`, type: 'A', data: '192.0.2.64' });
    const r = mk({ maxCacheEntries: 2 });
    await r.lookup('lru1.sec.test', 'A');
    await r.lookup('lru2.sec.test', 'A');
    await r.lookup('lru1.sec.test', 'A'); // touch lru1: lru2 is now least recent
    await r.lookup('lru3.sec.test', 'A'); // evicts lru2
    await r.lookup('lru1.sec.test', 'A');
    await r.lookup('lru2.sec.test', 'A');
    expect(['lru1', 'lru2', 'lru3'].map((n) => dns.queriesFor(`${n}.sec.test`))).toEqual([1, 2, 1]);
  });
});

describe('names, DANE-2 and lifecycle', () => {
  it('input case and trailing dot do not matter; outputs are lowercase without the dot', async () => {
    dns.add({ name: 'case.sec.test', type: 'CNAME', data: 'Case-Target.Sec.Test.' }, { name: 'case-target.sec.test', type: 'A', data: '192.0.2.70' });
    const a = await mk().lookup('CaSe.SEC.test.', 'A');
    expect([a.qname, a.canonicalName, a.chain[0]?.target, a.records]).toEqual([
      'case.sec.test',
      'case-target.sec.test',
      'case-target.sec.test',
      ['192.0.2.70'],
    ]);
  });

  it('IDNA: a U-label name is asked for as its A-label', async () => {
    dns.add({ name: 'xn--bcher-kva.sec.test', type: 'A', data: '192.0.2.71' });
    const a = await mk().lookup('Bücher.sec.test', 'A');
    expect([a.qname, a.records]).toEqual(['xn--bcher-kva.sec.test', ['192.0.2.71']]);
    expect(dns.queriesFor('xn--bcher-kva.sec.test', 'A')).toBe(1);
  });

  it('an invalid name is an error answer and no query is sent', async () => {
    const before = dns.queries.length;
    const a = await mk().lookup('bad..name.test', 'A');
    expect([a.error?.kind, a.status, isAnswer(a)]).toEqual(['other', 'indeterminate', false]);
    expect(dns.queries.length).toBe(before);
  });

  it('DANE-2 isLoopbackServer accepts only 127.0.0.0/8 and ::1', () => {
    const table: Array<[string, boolean]> = [
      ['127.0.0.1', true],
      ['127.0.0.53:53', true],
      ['127.255.255.254:5353', true],
      ['[::1]:53', true],
      ['::1', true],
      ['[0:0:0:0:0:0:0:1]:53', true],
      ['128.0.0.1:53', false],
      ['10.0.0.1', false],
      ['[::2]:53', false],
      ['[2001:db8::1]:53', false],
      ['localhost:53', false], // names are not addresses; the AD bit must come from a known address
      ['garbage', false],
    ];
    for (const [s, want] of table) expect([s, isLoopbackServer(s)]).toEqual([s, want]);
  });

  it('bad server strings are rejected at construction', () => {
    expect(() => new StubResolver({ servers: ['localhost:53'], timeoutMs: 100, attempts: 1 })).toThrow();
    expect(() => new StubResolver({ servers: ['127.0.0.1:99999'], timeoutMs: 100, attempts: 1 })).toThrow();
    expect(() => new StubResolver({ servers: [], timeoutMs: 100, attempts: 1 })).toThrow();
  });

  it('close() ends in-flight lookups at once with an error and later lookups fail', async () => {
    dns.behave('hang.sec.test', 'A', 'timeout');
    const r = mk({ timeoutMs: 10_000 });
    const p = r.lookup('hang.sec.test', 'A');
    await new Promise((res) => setTimeout(res, 50));
    await r.close();
    const a = await p;
    // ended by close(), not by the 10 s timeout (the reason says which; an elapsed-time bound would depend on the machine's load)
    expect([a.status, isAnswer(a)]).toEqual(['indeterminate', false]);
    expect(a.error?.message).toMatch(/resolver closed/);
    expect((await r.lookup('a.sec.test', 'A')).error?.message).toMatch(/closed/);
  });
});

/**
 * wire.ts against dns-packet: messages are built with dns-packet (an
 * independent encoder) and read back with our strict decoder, and our
 * queries are read back with dns-packet.
 */
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import dnsPacket from 'dns-packet';
import { encodeQuery, ipv6ToText, parseMessage, parseQuestion, toRecordData, type WireRr } from '../../src/dns/wire.js';
import { normalizeName } from '../../src/dns/name.js';

function response(answers: dnsPacket.Answer[], extra: Partial<dnsPacket.Packet> = {}): Buffer {
  return dnsPacket.encode({
    type: 'response',
    id: 4242,
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | dnsPacket.AUTHENTIC_DATA,
    questions: [{ name: 'example.test', type: 'A', class: 'IN' }],
    answers,
    ...extra,
  });
}

function parseOk(buf: Buffer) {
  const r = parseMessage(buf);
  if (!r.ok) throw new Error(`expected a parse, got: ${r.error}`);
  return r.message;
}

describe('wire: queries', () => {
  it('DANE-3 encodeQuery sets RD=1, CD=0, EDNS0 DO=1 with UDP size 1232 (dns-packet reads it back)', () => {
    const q = dnsPacket.decode(encodeQuery(0xbeef, '_25._tcp.mx.example.test', 'TLSA'));
    expect(q.id).toBe(0xbeef);
    expect(q.type).toBe('query');
    expect(q.flag_rd).toBe(true);
    expect(q.flag_cd).toBe(false);
    expect(q.questions).toEqual([{ name: '_25._tcp.mx.example.test', type: 'TLSA', class: 'IN' }]);
    const opt = q.additionals!.find((a) => a.type === 'OPT') as dnsPacket.OptAnswer;
    expect(opt.udpPayloadSize).toBe(1232);
    expect(opt.flag_do).toBe(true);
    expect(opt.ednsVersion).toBe(0);
  });
});

describe('wire: record data', () => {
  it('DANE-40 TLSA round-trip: dns-packet encodes, we decode usage/selector/matchingType/data unchanged', () => {
    const cert = randomBytes(32);
    const m = parseOk(
      response(
        [
          { name: 'example.test', type: 'TLSA', ttl: 60, data: { usage: 3, selector: 1, matchingType: 1, certificate: cert } },
          { name: 'example.test', type: 'TLSA', ttl: 60, data: { usage: 255, selector: 9, matchingType: 0, certificate: Buffer.alloc(0) } },
        ],
        { questions: [{ name: 'example.test', type: 'TLSA' }] },
      ),
    );
    const recs = m.answers.map((rr) => toRecordData('TLSA', rr));
    expect(recs[0]).toEqual({ usage: 3, selector: 1, matchingType: 1, data: cert });
    expect(Buffer.isBuffer(recs[0]!.data)).toBe(true);
    // unusable values still decode (DANE-40 decides usability, not the parser)
    expect(recs[1]).toEqual({ usage: 255, selector: 9, matchingType: 0, data: Buffer.alloc(0) });
  });

  it('TXT: the strings of one RR are joined with no separator (RFC 8460 §3)', () => {
    const m = parseOk(response([{ name: 'example.test', type: 'TXT', ttl: 60, data: ['v=TLSRPTv1; ', 'rua=mailto:tls@', 'example.test'] }]));
    expect(toRecordData('TXT', m.answers[0]!)).toBe('v=TLSRPTv1; rua=mailto:tls@example.test');
  });

  it('MX, A, AAAA, CNAME convert to lowercase names and canonical addresses', () => {
    const m = parseOk(
      response([
        { name: 'example.test', type: 'MX', ttl: 60, data: { preference: 10, exchange: 'MX1.Example.TEST' } },
        { name: 'example.test', type: 'A', ttl: 60, data: '192.0.2.7' },
        { name: 'example.test', type: 'AAAA', ttl: 60, data: '2001:DB8:0:0:0:0:0:1' },
        { name: 'example.test', type: 'CNAME', ttl: 60, data: 'Target.Example.Test' },
      ]),
    );
    expect(toRecordData('MX', m.answers[0]!)).toEqual({ preference: 10, exchange: 'mx1.example.test' });
    expect(toRecordData('A', m.answers[1]!)).toBe('192.0.2.7');
    expect(toRecordData('AAAA', m.answers[2]!)).toBe('2001:db8::1');
    expect(toRecordData('CNAME', m.answers[3]!)).toBe('target.example.test');
    // wrong type is refused, not coerced
    expect(toRecordData('A', m.answers[0]!)).toBeUndefined();
  });

  it('ipv6ToText follows RFC 5952 (longest zero run, not a single zero group)', () => {
    const b = Buffer.from('20010db8000000010000000000000001', 'hex');
    expect(ipv6ToText(b)).toBe('2001:db8:0:1::1');
    expect(ipv6ToText(Buffer.alloc(16))).toBe('::');
    expect(ipv6ToText(Buffer.from('20010db8000100010001000100010001', 'hex'))).toBe('2001:db8:1:1:1:1:1:1');
  });

  it('EDNS: extended RCODE bits and the OPT record are read from the additional section (RFC 6891 §6.1.3)', () => {
    const buf = response([], {
      additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232, extendedRcode: 1, ednsVersion: 0, flags: 0x8000, flag_do: true, options: [] }],
    });
    const m = parseOk(buf);
    expect(m.rcode).toBe(16);
    expect(m.rcodeName).toBe('BADVERS');
    expect(m.edns).toEqual({ udpPayloadSize: 1232, version: 0, dnssecOk: true });
    expect(m.header.ad).toBe(true);
  });
});

describe('wire: hostile input never throws', () => {
  it('RDLENGTH that disagrees with the record content is malformed (dns-packet would desynchronise)', () => {
    const good = response([{ name: 'example.test', type: 'A', ttl: 60, data: '192.0.2.1' }]);
    // Last 6 bytes are RDLENGTH(2) + address(4): claim 5 bytes and append one.
    const bad = Buffer.concat([good, Buffer.from([0x01])]);
    bad.writeUInt16BE(5, good.length - 6);
    const r = parseMessage(bad);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.error).toMatch(/RDATA length/);
  });

  it('counts larger than the records present, and RDATA past the end, are malformed', () => {
    const good = response([{ name: 'example.test', type: 'A', ttl: 60, data: '192.0.2.1' }]);
    const more = Buffer.from(good);
    more.writeUInt16BE(2, 6); // ANCOUNT 2, only one present
    expect(parseMessage(more).ok).toBe(false);
    expect(parseMessage(good.subarray(0, good.length - 2)).ok).toBe(false);
  });

  it('compression pointer loops and forward pointers are malformed', () => {
    const hdr = Buffer.alloc(12);
    hdr.writeUInt16BE(0x1234, 0);
    hdr.writeUInt16BE(0x8180, 2); // QR, RD, RA
    hdr.writeUInt16BE(1, 4); // QDCOUNT
    // question name is a pointer to itself (offset 12)
    const selfLoop = Buffer.concat([hdr, Buffer.from([0xc0, 12, 0, 1, 0, 1])]);
    expect(parseMessage(selfLoop).ok).toBe(false);
    expect(parseQuestion(selfLoop)).toBeUndefined();
    // label then pointer back to that label: a loop through an earlier label
    const labelLoop = Buffer.concat([hdr, Buffer.from([1, 0x61, 0xc0, 12, 0, 1, 0, 1])]);
    expect(parseMessage(labelLoop).ok).toBe(false);
  });

  it('a label containing a "." byte is escaped, never read as two labels (RFC 1035 §5.1)', () => {
    const hdr = Buffer.alloc(12);
    hdr.writeUInt16BE(7, 0);
    hdr.writeUInt16BE(0x8180, 2);
    hdr.writeUInt16BE(1, 4);
    const name = Buffer.from([7, ...Buffer.from('bank.ex'), 4, ...Buffer.from('test'), 0]);
    const m = parseOk(Buffer.concat([hdr, name, Buffer.from([0, 1, 0, 1])]));
    expect(m.question!.name).toBe('bank\\.ex.test');
    expect(m.question!.name).not.toBe('bank.ex.test');
  });

  it('random garbage and truncations of a valid message return {ok:false} or a parse, never throw', () => {
    const good = response([
      { name: 'example.test', type: 'MX', ttl: 60, data: { preference: 10, exchange: 'mx.example.test' } },
      { name: 'example.test', type: 'TLSA', ttl: 60, data: { usage: 3, selector: 1, matchingType: 1, certificate: randomBytes(32) } },
    ]);
    let failures = 0;
    for (let cut = 0; cut < good.length; cut++) {
      const r = parseMessage(good.subarray(0, cut));
      if (!r.ok) failures++;
    }
    expect(failures).toBe(good.length); // every proper prefix is incomplete
    for (let i = 0; i < 2000; i++) {
      const junk = randomBytes(1 + (i % 200));
      expect(() => parseMessage(junk)).not.toThrow();
      expect(() => parseQuestion(junk)).not.toThrow();
      const flipped = Buffer.from(good);
      flipped[12 + (i % (good.length - 12))] ^= 1 << (i % 8);
      expect(() => parseMessage(flipped)).not.toThrow();
    }
  });

  it('decoded records keep owner names canonical (lowercase, no trailing dot)', () => {
    const m = parseOk(response([{ name: 'Example.TEST', type: 'A', ttl: 60, data: '192.0.2.1' }]));
    const rr: WireRr = m.answers[0]!;
    expect(rr.name).toBe('example.test');
    expect(rr.ttl).toBe(60);
  });
});

describe('wire: names', () => {
  it('normalizeName lowercases, strips one trailing dot and converts U-labels to A-labels', () => {
    expect(normalizeName('MX.Example.TEST.')).toBe('mx.example.test');
    expect(normalizeName('_25._tcp.bücher.example')).toBe('_25._tcp.xn--bcher-kva.example');
    expect(() => normalizeName('')).toThrow();
    expect(() => normalizeName('a..b')).toThrow();
    expect(() => normalizeName(`${'a'.repeat(64)}.test`)).toThrow();
    expect(() => normalizeName('has space.test')).toThrow();
  });
});

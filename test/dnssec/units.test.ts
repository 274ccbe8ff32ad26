/** Pure parts of the validator: names, canonical order, NSEC3 hashing, key tags, anchors, time windows. */
import { describe, expect, it } from 'vitest';
import { compareNames, commonAncestor, labelCount, childToward, joinLabels } from '../../src/dnssec/names.js';
import { base32hexDecode, base32hexEncode, nsec3Hash } from '../../src/dnssec/nsec3.js';
import { keyTag, parseTypeBitmap, parseRrsig } from '../../src/dnssec/records.js';
import { parseTrustAnchors, rootTrustAnchors, TrustAnchorError, closestAnchor } from '../../src/dnssec/anchors.js';
import { serialDelta, windowProblem, CLOCK_SKEW_SECONDS } from '../../src/dnssec/verify.js';
import { publicKeyFor, verifySignature, dsDigest } from '../../src/dnssec/algorithms.js';
import { nsecCovers } from '../../src/dnssec/nsec.js';
import { makeKey, dnskeyText, dsText, signBytes, bitmap, canonicalCompare } from '../support/signer.js';

describe('names (RFC 4034 §6.1)', () => {
  it('canonical order matches the RFC 4034 §6.1 example', () => {
    const ordered = [
      'example',
      'a.example',
      'yljkjljk.a.example',
      'z.a.example',
      'zabc.a.example',
      'z.example',
      '\\001.z.example',
      '*.z.example',
      '\\200.z.example',
    ];
    const shuffled = [...ordered].reverse();
    expect(shuffled.sort(compareNames)).toEqual(ordered);
    // the test signer's independent implementation agrees on plain names
    const plain = ['example', 'a.example', 'yljkjljk.a.example', 'z.a.example', 'zabc.a.example', 'z.example'];
    expect([...plain].reverse().sort(canonicalCompare)).toEqual(plain);
  });
  it('labels, ancestors and escapes', () => {
    expect(labelCount('.')).toBe(0);
    expect(labelCount('a.b.c')).toBe(3);
    expect(commonAncestor('a.b.example', 'c.b.example')).toBe('b.example');
    expect(commonAncestor('a.example', 'b.test')).toBe('.');
    expect(childToward('x.y.z.example', 'example')).toBe('z.example');
    expect(joinLabels(['a.b', 'c\\', '\x01'])).toBe('a\\.b.c\\\\.\\001');
  });
});

describe('NSEC3 hashing (RFC 5155 §5, Appendix A)', () => {
  it('matches the RFC 5155 Appendix A hashes (salt aabbccdd, 12 iterations)', () => {
    const salt = Buffer.from('aabbccdd', 'hex');
    expect(base32hexEncode(nsec3Hash('example', salt, 12))).toBe('0p9mhaveqvm6t7vbl5lop2u3t2rp3tom');
    expect(base32hexEncode(nsec3Hash('a.example', salt, 12))).toBe('35mthgpgcu1qg68fab165klnsnk3dpvl');
    expect(base32hexEncode(nsec3Hash('*.w.example', salt, 12))).toBe('r53bq7cc2uvmubfu5ocmm6pers9tk9en');
  });
  it('base32hex round-trips and rejects non-alphabet input', () => {
    const b = Buffer.from('00ff10203040aabbccddeeff0011223344556677', 'hex');
    expect(base32hexDecode(base32hexEncode(b))).toEqual(b);
    expect(base32hexDecode('xyz!')).toBeUndefined();
  });
});

describe('records', () => {
  it('key tags agree with the independent test signer for every algorithm', () => {
    for (const alg of [5, 7, 8, 10, 13, 14, 15, 16]) {
      const k = makeKey(alg);
      expect(keyTag(k.rdata)).toBe(k.tag);
    }
  });
  it('type bitmaps from the test signer parse back, and malformed ones are rejected', () => {
    const types = [1, 2, 6, 15, 16, 28, 46, 47, 48, 52, 257, 32769];
    expect([...parseTypeBitmap(bitmap(types))!].sort((a, b) => a - b)).toEqual(types);
    expect(parseTypeBitmap(Buffer.from([0, 0]))).toBeUndefined(); // zero-length window
    expect(parseTypeBitmap(Buffer.from([1, 1, 0x40, 0, 1, 0x40]))).toBeUndefined(); // windows out of order
    expect(parseTypeBitmap(Buffer.from([0, 5, 0x40]))).toBeUndefined(); // runs past the end
  });
  it('RRSIG RDATA with a compressed signer name is rejected (RFC 4034 §3.1.7)', () => {
    const r = Buffer.concat([Buffer.alloc(18), Buffer.from([0xc0, 0x0c]), Buffer.alloc(64)]);
    expect(parseRrsig(r)).toBeUndefined();
  });
});

describe('algorithms (RFC 8624 validation column)', () => {
  it('verifies signatures for 5, 7, 8, 10, 13, 14, 15, 16 and rejects a flipped bit', () => {
    for (const alg of [5, 7, 8, 10, 13, 14, 15, 16]) {
      const k = makeKey(alg);
      const data = Buffer.from(`data for ${alg}`);
      const sig = signBytes(k, data);
      expect(verifySignature(alg, k.pub, data, sig)).toBe(true);
      const bad = Buffer.from(sig);
      bad[bad.length - 1] ^= 1;
      expect(verifySignature(alg, k.pub, data, bad)).toBe(false);
    }
  });
  it('rejects unsupported algorithms, wrong key sizes, and RSA moduli below 1024 bits', () => {
    expect(publicKeyFor(3, makeKey(3).pub)).toBeUndefined();
    expect(publicKeyFor(12, makeKey(12).pub)).toBeUndefined();
    expect(publicKeyFor(13, Buffer.alloc(63))).toBeUndefined();
    expect(publicKeyFor(15, Buffer.alloc(31))).toBeUndefined();
    expect(publicKeyFor(8, makeKey(8, 257, 512).pub)).toBeUndefined();
    expect(verifySignature(13, Buffer.alloc(64), Buffer.from('x'), Buffer.alloc(64))).toBe(false);
  });
  it('DS digests use the owner in canonical form (RFC 4034 §5.1.4)', () => {
    const k = makeKey(13);
    const line = dsText('Example.TEST', k, 2).split(' ');
    expect(dsDigest(2, 'example.test', k.rdata)!.toString('hex').toUpperCase()).toBe(line[line.length - 1]);
    expect(dsDigest(3, 'example.test', k.rdata)).toBeUndefined();
  });
});

describe('trust anchors', () => {
  it('the built-in anchors are the IANA root KSKs 20326 and 38696', () => {
    const a = rootTrustAnchors().get('.')!;
    expect(a.ds.map((d) => d.keyTag)).toEqual([20326, 38696]);
    expect(a.ds.every((d) => d.algorithm === 8 && d.digestType === 2 && d.digest.length === 32)).toBe(true);
  });
  it("parses Unbound's root.key format (comments, TTL, class, parentheses) and DS records", () => {
    const k = makeKey(8);
    const text = [
      '; autotrust trust anchor file',
      ';;id: . 1',
      `${dnskeyText('.', k)} ;{id = ${k.tag} (ksk), size = 1024b} ;;state=2 [  VALID  ] ;;count=0`,
      'example.test. IN DS ( 12345 13 2',
      '   0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF ) ; split over lines',
      '',
    ].join('\n');
    const anchors = parseTrustAnchors(text);
    expect(anchors.get('.')!.dnskeys[0]!.keyTag).toBe(k.tag);
    expect(anchors.get('example.test')!.ds[0]!.keyTag).toBe(12345);
    expect(closestAnchor(anchors, 'mx.example.test')!.zone).toBe('example.test');
    expect(closestAnchor(anchors, 'other.test')!.zone).toBe('.');
  });
  it('reports the line of a bad record', () => {
    const bad = (text: string, line: number, msg: RegExp) => {
      try {
        parseTrustAnchors(text);
        expect.unreachable();
      } catch (e) {
        expect(e).toBeInstanceOf(TrustAnchorError);
        expect((e as TrustAnchorError).line).toBe(line);
        expect((e as Error).message).toMatch(msg);
      }
    };
    bad('; ok\n. IN DS 20326 8 2 zz\n', 2, /hexadecimal/);
    bad(`. IN DS 20326 8 2 ${'AA'.repeat(32)}\n. IN A 192.0.2.1\n`, 2, /DS or DNSKEY/);
    bad(`; ok\n. IN DS 20326 8 2 ${'AA'.repeat(32)}\n. IN DS 20326 8 2 AA\n`, 3, /SHA-256\) needs 32 octets, found 1/);
    bad(`. IN DS 20326 8 4 ${'AA'.repeat(32)}\n`, 1, /needs 48 octets/);
    bad('\n. IN DNSKEY 257 3 13 AAAA\n', 2, /not a valid ECDSAP256SHA256 key/);
    bad('\n\n. IN DNSKEY 257 3 8\n', 3, /base64/);
    bad('. IN DS ( 1 8 2\n AA\n', 1, /not closed/);
    bad('; nothing\n', 1, /no DS or DNSKEY/);
  });
});

describe('signature time windows (RFC 4034 §3.1.5, RFC 4035 §5.3.1)', () => {
  const sig = (inception: number, expiration: number) => ({ inception, expiration }) as Parameters<typeof windowProblem>[0];
  it('uses serial-number arithmetic across the 2106 wrap and allows a small skew', () => {
    expect(serialDelta(5, 0xfffffff0)).toBe(21);
    expect(serialDelta(0xfffffff0, 5)).toBe(-21);
    const now = 1_800_000_000;
    expect(windowProblem(sig(now - 10, now + 10), now)).toBeUndefined();
    expect(windowProblem(sig(now + CLOCK_SKEW_SECONDS - 1, now + 1000), now)).toBeUndefined();
    expect(windowProblem(sig(now + CLOCK_SKEW_SECONDS + 1, now + 1000), now)).toMatch(/not valid before/);
    expect(windowProblem(sig(now - 1000, now - CLOCK_SKEW_SECONDS - 1), now)).toMatch(/expired/);
  });
});

describe('NSEC coverage (RFC 4035 §5.4, RFC 6840 §4.1)', () => {
  const n = (owner: string, next: string, types: number[]) => ({ owner, nsec: { next, types: new Set(types) } });
  it('covers names strictly between owner and next; the last NSEC wraps to the apex', () => {
    expect(nsecCovers(n('a.example', 'd.example', [1]), 'b.example', 'example')).toBe(true);
    expect(nsecCovers(n('a.example', 'd.example', [1]), 'd.example', 'example')).toBe(false);
    expect(nsecCovers(n('a.example', 'd.example', [1]), 'a.example', 'example')).toBe(false);
    expect(nsecCovers(n('z.example', 'example', [1]), 'zz.example', 'example')).toBe(true);
    expect(nsecCovers(n('z.example', 'example', [1]), 'zz.other', 'example')).toBe(false);
  });
  it('an NSEC at a delegation or DNAME does not cover names below it', () => {
    expect(nsecCovers(n('sub.example', 'z.example', [2]), 'a.sub.example', 'example')).toBe(false);
    expect(nsecCovers(n('sub.example', 'z.example', [39]), 'a.sub.example', 'example')).toBe(false);
    expect(nsecCovers(n('sub.example', 'z.example', [1]), 'a.sub.example', 'example')).toBe(true);
  });
});

describe('DS → DNSKEY matching (RFC 4035 §5.2, RFC 4509 §3)', () => {
  it('matches by digest, ignores unsupported DS, and ignores SHA-1 when SHA-256 is present', async () => {
    const { matchDs } = await import('../../src/dnssec/dsmatch.js');
    const { parseDs, parseDnskey } = await import('../../src/dnssec/records.js');
    const { dsRdata } = await import('../support/signer.js');
    const k = makeKey(13);
    const other = makeKey(13);
    const dnskey = parseDnskey(k.rdata)!;
    const ds = (r: Buffer) => parseDs(r)!;
    expect(matchDs('z.test', [ds(dsRdata('z.test', k, 2))], [dnskey]).keys).toEqual([dnskey]);
    expect(matchDs('z.test', [ds(dsRdata('z.test', k, 4))], [dnskey]).keys).toEqual([dnskey]);
    expect(matchDs('z.test', [ds(dsRdata('z.test', k, 1))], [dnskey]).keys).toEqual([dnskey]);
    // wrong owner name → no match
    expect(matchDs('y.test', [ds(dsRdata('z.test', k, 2))], [dnskey]).keys).toEqual([]);
    // SHA-1 for k, SHA-256 for another key: the SHA-1 DS is ignored (RFC 4509 §3)
    const m = matchDs('z.test', [ds(dsRdata('z.test', k, 1)), ds(dsRdata('z.test', other, 2))], [dnskey]);
    expect(m.keys).toEqual([]);
    expect(m.notes.map((n) => n.text).join('\n')).toMatch(/RFC 4509/);
    // unsupported digest type 3 (GOST): not usable
    const gost = Buffer.from(dsRdata('z.test', k, 2));
    gost[3] = 3;
    expect(matchDs('z.test', [ds(gost)], [dnskey]).usable).toBe(false);
  });
});

/**
 * Issue 17: the verifier keeps the parses of the last certificates it saw (src/dane/verify.ts, by content,
 * LRU, CERT_PARSE_CACHE_ENTRIES). A cache of a pure function of the bytes: it must never change a verdict.
 * Real certificates (test/support/pki.ts), real verifications; a verdict from warm parses is compared with
 * the verdict from cold ones (the cache emptied first).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { TlsaRecord } from '../../src/dns/types.js';
import { CERT_PARSE_CACHE_ENTRIES, certParseCacheStats, clearCertParseCache, verifyDane, type DaneVerifyInput } from '../../src/dane/verify.js';
import { makeCa, makeIntermediate, makeLeaf, makeSelfSigned, tlsaData, type Issued } from '../support/pki.js';

const DAY = 86_400_000;
const NOW = new Date();
const MX = 'mx.example.com';
const of = (c: Issued, usage: number, s: 0 | 1, m: 0 | 1 | 2): TlsaRecord => ({ usage, selector: s, matchingType: m, data: tlsaData(c, s, m) });
const input = (records: TlsaRecord[], chain: Buffer[], now = NOW): DaneVerifyInput => ({ records, chain, referenceNames: [MX, 'example.com'], now });

let root: Issued, inter: Issued, leaf: Issued, other: Issued, stale: Issued;
beforeAll(async () => {
  root = await makeCa({ cn: 'Cache Root' });
  inter = await makeIntermediate(root, { cn: 'Cache Issuing CA' });
  leaf = await makeLeaf(inter, { cn: MX, dnsNames: [MX] });
  other = await makeSelfSigned({ cn: 'other.invalid', dnsNames: ['other.invalid'] });
  stale = await makeSelfSigned({ cn: MX, dnsNames: [MX], notBefore: new Date(NOW.getTime() - 400 * DAY), notAfter: new Date(NOW.getTime() - 300 * DAY) });
});

/** The verdict with warm parses, then with cold ones: they must be the same. */
function warmAndCold(i: DaneVerifyInput): { warm: unknown; cold: unknown } {
  verifyDane(i); // warm the cache with this input's certificates
  const warm = verifyDane(i);
  clearCertParseCache();
  const cold = verifyDane(i);
  return { warm, cold };
}

describe('issue 17: the certificate parse cache never changes a verdict', () => {
  it('issue17 a repeated chain is parsed once: the next verification of it hits the cache and reaches the same outcome', () => {
    clearCertParseCache();
    const i = input([of(root, 2, 0, 1)], [leaf.der, inter.der, root.der]);
    const first = verifyDane(i);
    const before = certParseCacheStats();
    const again = verifyDane(i);
    const after = certParseCacheStats();
    expect(first.ok).toBe(true);
    expect(again).toEqual(first);
    expect(after.hits - before.hits).toBe(3);
    expect(after.misses).toBe(before.misses);
  });

  it('DANE-54 dates are judged at each verification, never cached: the same chain is valid now, certificate-expired after its notAfter, valid again now', () => {
    const chain = [leaf.der, inter.der, root.der];
    const records = [of(root, 2, 0, 1)];
    const later = new Date(leaf.cert.notAfter.getTime() + DAY);
    expect(verifyDane(input(records, chain)).ok).toBe(true);
    const expired = verifyDane(input(records, chain, later));
    expect([expired.ok, expired.reason]).toEqual([false, 'certificate-expired']);
    expect(verifyDane(input(records, chain)).ok).toBe(true);
  });

  it('DANE-53 the same certificate at another depth: a cached parse takes its place in this chain (depth of the matched anchor)', () => {
    const records = [of(inter, 2, 0, 1)];
    const inOrder = verifyDane(input(records, [leaf.der, inter.der, root.der]));
    const shuffled = verifyDane(input(records, [leaf.der, root.der, inter.der]));
    expect([inOrder.ok, inOrder.depth]).toEqual([true, 1]);
    expect([shuffled.ok, shuffled.depth]).toEqual([true, 2]);
  });

  it('DANE-52 a buffer the caller changes after a verification is judged by its new bytes, not by what was cached for it', () => {
    const der = Buffer.from(leaf.der);
    const records = [of(leaf, 3, 0, 1)]; // the full certificate's digest
    expect(verifyDane(input(records, [der])).ok).toBe(true);
    der[der.length - 1] ^= 0xff; // a byte of the signature
    const changed = verifyDane(input(records, [der]));
    expect([changed.ok, changed.reason]).toEqual([false, 'dane-no-match']);
  });

  it(`issue17 bounded: at most ${CERT_PARSE_CACHE_ENTRIES} parses kept (junk too), the least recently used dropped first`, () => {
    clearCertParseCache();
    const junk = (n: number) => Buffer.from([0x30, 0x04, 0x02, 0x02, n >> 8, n & 0xff]);
    const records = [of(leaf, 3, 1, 1)];
    for (let n = 0; n < CERT_PARSE_CACHE_ENTRIES + 20; n++) {
      const r = verifyDane(input(records, [junk(n)]));
      expect(r.ok).toBe(false);
    }
    expect(certParseCacheStats().entries).toBe(CERT_PARSE_CACHE_ENTRIES);
    const s0 = certParseCacheStats();
    verifyDane(input(records, [junk(CERT_PARSE_CACHE_ENTRIES + 19)])); // the newest: kept
    const s1 = certParseCacheStats();
    verifyDane(input(records, [junk(0)])); // the oldest: dropped long ago
    const s2 = certParseCacheStats();
    expect([s1.hits - s0.hits, s1.misses - s0.misses]).toEqual([1, 0]);
    expect([s2.hits - s1.hits, s2.misses - s1.misses]).toEqual([0, 1]);
    expect(certParseCacheStats().entries).toBe(CERT_PARSE_CACHE_ENTRIES);
  });

  it('issue17 property: for generated chains (any order, repeats, junk, stale and foreign certificates), records and verification times, warm parses give the verdict cold ones give', () => {
    const certs = () => [leaf.der, inter.der, root.der, other.der, stale.der, Buffer.from([0x30, 0x00]), Buffer.alloc(0)];
    const recordsOf = () => [
      of(leaf, 3, 1, 1),
      of(leaf, 3, 0, 2),
      of(other, 3, 1, 1),
      of(stale, 3, 1, 1),
      of(root, 2, 0, 1),
      of(inter, 2, 1, 1),
      of(root, 2, 0, 0),
      of(stale, 2, 0, 1),
      { usage: 2, selector: 1, matchingType: 0, data: root.spki },
    ];
    fc.assert(
      fc.property(
        fc.array(fc.nat(6), { minLength: 1, maxLength: 5 }),
        fc.subarray(
          Array.from({ length: 9 }, (_, k) => k),
          { minLength: 1 },
        ),
        fc.constantFrom(-500, -1, 0, 1, 45, 400),
        (chainIx, recordIx, days) => {
          const pool = certs();
          const all = recordsOf();
          const i = input(
            recordIx.map((k) => all[k]!),
            chainIx.map((k) => pool[k]!),
            new Date(NOW.getTime() + days * DAY),
          );
          const { warm, cold } = warmAndCold(i);
          expect(warm).toEqual(cold);
        },
      ),
      { numRuns: 150 },
    );
  });
});

/**
 * Issue 13, defect 5: every `2 0 0` anchor taken from DNS must be its own certificate in the
 * verifier's issuer memo. Before the fix they all shared the chain index -1, so with two
 * full-certificate TA records (current and next CA, the rollover practice of RFC 7671 §8)
 * the second anchor reused the first one's answer.
 *
 * Real certificates (test/support/pki.ts), real signatures; nothing is mocked.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import fc from 'fast-check';
import type { TlsaRecord } from '../../src/dns/types.js';
import { verifyDane } from '../../src/dane/verify.js';
import { makeCa, makeIntermediate, makeLeaf, makeSelfSigned, tlsaData, type Issued } from '../support/pki.js';

const MX = 'mx.example.com';
const NOW = new Date();
const of = (c: Issued, usage: number, s: 0 | 1, m: 0 | 1 | 2): TlsaRecord => ({ usage, selector: s, matchingType: m, data: tlsaData(c, s, m) });
const verify = (records: TlsaRecord[], chain: Issued[]) =>
  verifyDane({ records, chain: chain.map((c) => c.der), referenceNames: [MX, 'example.com'], now: NOW });

// Current CA (being retired) and next CA, each root → intermediate → leaf; plus a CA whose
// pathLen 0 forbids the intermediate below it, and a stranger CA that issued nothing here.
let oldRoot: Issued, oldInter: Issued, oldLeaf: Issued;
let newRoot: Issued, newInter: Issued, newLeaf: Issued;
let tightRoot: Issued, tightInter: Issued, tightLeaf: Issued;
let stranger: Issued, selfSigned: Issued;
beforeAll(async () => {
  oldRoot = await makeCa({ cn: 'Rollover Root 2025' });
  oldInter = await makeIntermediate(oldRoot, { cn: 'Rollover Issuing 2025' });
  oldLeaf = await makeLeaf(oldInter, { cn: MX, dnsNames: [MX] });
  newRoot = await makeCa({ cn: 'Rollover Root 2026', keyAlg: 'rsa' });
  newInter = await makeIntermediate(newRoot, { cn: 'Rollover Issuing 2026' });
  newLeaf = await makeLeaf(newInter, { cn: MX, dnsNames: [MX] });
  tightRoot = await makeCa({ cn: 'Tight Root', pathLen: 0 });
  tightInter = await makeIntermediate(tightRoot, { cn: 'Tight Issuing' });
  tightLeaf = await makeLeaf(tightInter, { cn: MX, dnsNames: [MX] });
  stranger = await makeCa({ cn: 'Stranger Root' });
  selfSigned = await makeSelfSigned({ dnsNames: [MX] });
});

describe('issue13 defect 5: each DNS-derived DANE-TA certificate has its own identity', () => {
  it('DANE-54 RFC 7671 §8 rollover: old CA listed first, the chain to the new CA verifies', () => {
    const rrset = [of(oldRoot, 2, 0, 0), of(newRoot, 2, 0, 0)];
    const r = verify(rrset, [newLeaf, newInter]);
    expect(r.ok, r.detail).toBe(true);
    expect(r.matchedIndex).toBe(1);
    expect(r.detail).toContain('anchor certificate from DNS');
    // and the chain to the old CA still verifies during the overlap
    expect(verify(rrset, [oldLeaf, oldInter]).ok).toBe(true);
    // new CA first as well
    expect(verify([...rrset].reverse(), [newLeaf, newInter]).ok).toBe(true);
  });

  it('DANE-53 DANE-54 an anchor whose path-length constraint fails is not credited to an unrelated second anchor', () => {
    // tightRoot (pathLen 0) signed tightInter, which signed the leaf: one intermediate too many.
    expect(verify([of(tightRoot, 2, 0, 0)], [tightLeaf, tightInter]).ok).toBe(false);
    for (const rrset of [
      [of(tightRoot, 2, 0, 0), of(stranger, 2, 0, 0)],
      [of(stranger, 2, 0, 0), of(tightRoot, 2, 0, 0)],
      [of(tightRoot, 2, 0, 0), of(oldRoot, 2, 0, 0), of(stranger, 2, 0, 0)],
    ]) {
      const r = verify(rrset, [tightLeaf, tightInter]);
      expect(r.ok, r.detail).toBe(false);
      expect(r.reason).toBe('validation-failure');
      expect(r.detail).toMatch(/path length 0/);
    }
  });

  it('DANE-54 two 2 1 0 keys and two 2 0 0 certificates: each is judged by its own signature', () => {
    const rrset = [of(oldRoot, 2, 1, 0), of(stranger, 2, 0, 0), of(newRoot, 2, 1, 0), of(oldRoot, 2, 0, 0)];
    expect(verify(rrset, [newLeaf, newInter]).ok).toBe(true);
    expect(verify(rrset, [oldLeaf, oldInter]).ok).toBe(true);
    expect(verify([of(stranger, 2, 0, 0), of(tightRoot, 2, 1, 0)], [newLeaf, newInter]).ok).toBe(false);
  });

  it('DANE-50 DANE-53 DANE-54 property: the verdict does not depend on the order of the TLSA RRset, and equals "some record alone verifies" (RFC 6698 §4.1)', () => {
    // Every record kind the verifier treats differently: DNS certificates (2 0 0), DNS keys (2 1 0),
    // in-chain anchors (2 0 1 / 2 1 1), DANE-EE (3 1 1) that match or not.
    const pool: TlsaRecord[] = [
      of(oldRoot, 2, 0, 0),
      of(newRoot, 2, 0, 0),
      of(tightRoot, 2, 0, 0),
      of(stranger, 2, 0, 0),
      of(oldRoot, 2, 1, 0),
      of(newRoot, 2, 1, 0),
      of(stranger, 2, 1, 0),
      of(oldInter, 2, 1, 1),
      of(newInter, 2, 0, 1),
      of(tightInter, 2, 1, 1),
      of(selfSigned, 3, 1, 1),
      of(stranger, 3, 1, 1),
    ];
    const chains: Issued[][] = [
      [newLeaf, newInter],
      [oldLeaf, oldInter],
      [tightLeaf, tightInter],
      [newInter, newLeaf],
      [newLeaf],
      [newLeaf, oldInter, newInter],
      [selfSigned],
    ];
    const alone = new Map<string, boolean>();
    const aloneOk = (r: TlsaRecord, ci: number): boolean => {
      const k = `${pool.indexOf(r)}/${ci}`;
      let v = alone.get(k);
      if (v === undefined) alone.set(k, (v = verify([r], chains[ci]!).ok));
      return v;
    };
    fc.assert(
      fc.property(
        fc.subarray(
          pool.map((_, i) => i),
          { minLength: 1 },
        ),
        fc.integer({ min: 0, max: chains.length - 1 }),
        fc.infiniteStream(fc.nat()),
        (picked, ci, rand) => {
          const records = picked.map((i) => pool[i]!);
          // a random permutation of the picked records (Fisher–Yates from the stream)
          const perm = [...records];
          const it = rand[Symbol.iterator]();
          for (let i = perm.length - 1; i > 0; i--) {
            const j = it.next().value! % (i + 1);
            [perm[i], perm[j]] = [perm[j]!, perm[i]!];
          }
          const a = verify(records, chains[ci]!);
          const b = verify(perm, chains[ci]!);
          const reversed = verify([...records].reverse(), chains[ci]!);
          const oracle = records.some((r) => aloneOk(r, ci));
          expect(a.ok).toBe(oracle);
          expect(b.ok).toBe(oracle);
          expect(reversed.ok).toBe(oracle);
          if (!oracle) {
            expect(b.reason).toBe(a.reason);
            expect(reversed.reason).toBe(a.reason);
          }
        },
      ),
      { seed: 20261313, numRuns: 80 },
    );
  });
});

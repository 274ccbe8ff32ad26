/**
 * verifyDane's additive outcome fields (matchedIndex, matchedUsage, facts) that rollover warnings
 * and `check` read, against real certificates from the test PKI.
 */
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { verifyDane } from '../../src/dane/verify.js';
import { makeCa, makeIntermediate, makeLeaf, makeSelfSigned, tlsaData, type Issued } from '../support/pki.js';
import type { TlsaRecord } from '../../src/dns/types.js';

const rec = (usage: number, selector: 0 | 1, mt: 0 | 1 | 2, c: Issued): TlsaRecord => ({ usage, selector, matchingType: mt, data: tlsaData(c, selector, mt) });
const now = new Date();

describe('verifyDane facts', () => {
  it('DANE-52 DANE-EE: the matching record index and usage, every presented certificate with its dates and SPKI digest', async () => {
    const ca = await makeCa({ cn: 'Facts CA' });
    const leaf = await makeLeaf(ca, { cn: 'mx.f.test', notAfter: new Date(Date.now() + 9 * 86_400_000) });
    const other = await makeSelfSigned();
    const records = [rec(3, 1, 1, other), rec(3, 1, 1, leaf), rec(1, 1, 1, leaf), rec(2, 1, 1, ca)];
    const v = verifyDane({ records, chain: [leaf.der, ca.der], referenceNames: ['mx.f.test'], now });
    expect(v).toMatchObject({ ok: true, matchedIndex: 1, matchedUsage: 3, depth: 0 });
    expect(v.facts!.records).toMatchObject([
      { index: 0, usage: 3, selector: 1, matchingType: 1, usable: true, matchDepth: null },
      { index: 1, usage: 3, selector: 1, matchingType: 1, usable: true, matchDepth: 0 },
      { index: 2, usage: 1, selector: 1, matchingType: 1, usable: false, matchDepth: null },
      { index: 3, usage: 2, selector: 1, matchingType: 1, usable: true, matchDepth: 1 },
    ]);
    expect(v.facts!.chain.map((c) => [c.depth, c.subject, c.ca])).toEqual([
      [0, 'CN=mx.f.test', false],
      [1, 'CN=Facts CA', true],
    ]);
    // a stable record identity (usage, selector, matching type, digest of the data) for MxFactsStore's history
    expect(v.facts!.records[1]!.id).toBe(`3 1 1 ${createHash('sha256').update(records[1]!.data).digest('hex').slice(0, 32)}`);
    expect(new Set(v.facts!.records.map((r) => r.id)).size).toBe(4);
    expect(v.facts!.chain[0]!.notAfter).toBe(new Date(Math.floor(leaf.cert.notAfter.getTime() / 1000) * 1000).toISOString());
    expect(v.facts!.chain[0]!.spkiSha256).toBe(createHash('sha256').update(leaf.spki).digest('hex').toUpperCase());
  });

  it('DANE-53 DANE-TA on an intermediate: matchedUsage 2 at depth 1', async () => {
    const root = await makeCa();
    const int = await makeIntermediate(root, { cn: 'Facts Int' });
    const leaf = await makeLeaf(int, { dnsNames: ['mx.f.test'] });
    const v = verifyDane({ records: [rec(2, 1, 1, int)], chain: [leaf.der, int.der], referenceNames: ['mx.f.test'], now });
    expect(v).toMatchObject({ ok: true, matchedIndex: 0, matchedUsage: 2, depth: 1 });
    expect(v.facts!.records[0]!.matchDepth).toBe(1);
  });

  it('DANE-50 no match: facts present, nothing matched, no matchedIndex', async () => {
    const leaf = await makeSelfSigned();
    const other = await makeSelfSigned();
    const v = verifyDane({ records: [rec(3, 1, 1, other)], chain: [leaf.der], referenceNames: ['x'], now });
    expect(v.ok).toBe(false);
    expect(v.matchedIndex).toBeUndefined();
    expect(v.facts!.records[0]!.matchDepth).toBeNull();
  });

  it('issue7: garbage chain: no facts, no exception', () => {
    const v = verifyDane({
      records: [{ usage: 3, selector: 1, matchingType: 1, data: Buffer.alloc(32) }],
      chain: [Buffer.from('junk')],
      referenceNames: ['x'],
      now,
    });
    expect(v.ok).toBe(false);
    expect(v.facts).toBeUndefined();
  });
});

describe('facts never change the outcome', () => {
  it('DANE-52 a junk extra certificate whose dates cannot be rendered: DANE-EE still verifies, the outcome comes back without facts', async () => {
    const leaf = await makeSelfSigned({ dnsNames: ['mx.f.test'] });
    const other = await makeSelfSigned();
    // A structurally valid certificate whose notBefore UTCTime is garbage: node parses it, its validFrom is not a date.
    const junk = Buffer.from(other.der);
    const at = junk.indexOf(Buffer.from([0x17, 0x0d]));
    expect(at).toBeGreaterThan(0);
    junk.fill(0x5a, at + 2, at + 15);
    const v = verifyDane({ records: [rec(3, 1, 1, leaf)], chain: [leaf.der, junk], referenceNames: ['mx.f.test'], now });
    expect(v).toMatchObject({ ok: true, matchedIndex: 0, matchedUsage: 3 });
    expect(v.facts).toBeUndefined();
    // without the junk certificate the same session has facts (the guard only drops what cannot be collected)
    expect(verifyDane({ records: [rec(3, 1, 1, leaf)], chain: [leaf.der], referenceNames: ['mx.f.test'], now }).facts).toBeDefined();
  });
});

/**
 * TLSA usability (DANE-40), digest agility (DANE-51) and presentation format,
 * with association data computed from real generated certificates.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { X509Certificate } from 'node:crypto';
import type { TlsaRecord } from '../../src/dns/types.js';
import { formatTlsa, isUsable, readTlv, spkiFromCertDer, usableRecords } from '../../src/dane/tlsa.js';
import { makeCa, makeLeaf, makeSelfSigned, tlsaData, type Issued } from '../support/pki.js';

const rec = (usage: number, selector: number, matchingType: number, data: Buffer): TlsaRecord => ({ usage, selector, matchingType, data });
const of = (c: Issued, u: number, s: 0 | 1, m: 0 | 1 | 2): TlsaRecord => rec(u, s, m, tlsaData(c, s, m));
const fmt = (rs: TlsaRecord[]): string[] => rs.map((r) => `${r.usage} ${r.selector} ${r.matchingType}`);

let ec: Issued;
let rsa: Issued;
beforeAll(async () => {
  ec = await makeSelfSigned({ cn: 'mx.example.org' });
  const ca = await makeCa({ keyAlg: 'rsa' });
  rsa = await makeLeaf(ca, { keyAlg: 'rsa', dnsNames: ['mx.example.org'] });
});

describe('DANE-40 usability', () => {
  it('DANE-40 usages 2 and 3 with selector 0/1 and matching type 0/1/2 and well-formed data are usable', () => {
    for (const u of [2, 3])
      for (const s of [0, 1] as const)
        for (const m of [0, 1, 2] as const) {
          expect(isUsable(of(ec, u, s, m)), `${u} ${s} ${m}`).toBe(true);
          expect(isUsable(of(rsa, u, s, m)), `rsa ${u} ${s} ${m}`).toBe(true);
        }
  });

  it('DANE-40 PKIX usages 0 and 1, private 255 and unassigned 4 are unusable even with correct data', () => {
    for (const u of [0, 1, 4, 255]) expect(isUsable(of(ec, u, 1, 1)), `usage ${u}`).toBe(false);
  });

  it('DANE-40 unknown selectors (3 9 1, 3 2 1, 3 255 1) and matching types (3 1 3, 3 1 255) are unusable', () => {
    const d = tlsaData(ec, 1, 1);
    expect(isUsable(rec(3, 9, 1, d))).toBe(false);
    expect(isUsable(rec(3, 2, 1, d))).toBe(false);
    expect(isUsable(rec(3, 255, 1, d))).toBe(false);
    expect(isUsable(rec(3, 1, 3, d))).toBe(false);
    expect(isUsable(rec(3, 1, 255, d))).toBe(false);
  });

  it('DANE-40 a digest must be exactly 32 bytes for SHA-256 and 64 for SHA-512', () => {
    const d256 = tlsaData(ec, 1, 1);
    const d512 = tlsaData(ec, 1, 2);
    expect(isUsable(rec(3, 1, 1, d256.subarray(0, 31)))).toBe(false); // short digest
    expect(isUsable(rec(3, 1, 1, Buffer.concat([d256, Buffer.from([0])])))).toBe(false);
    expect(isUsable(rec(3, 1, 1, d512))).toBe(false); // SHA-512-sized data labelled SHA-256
    expect(isUsable(rec(3, 1, 2, d256))).toBe(false);
    expect(isUsable(rec(3, 1, 1, Buffer.alloc(0)))).toBe(false);
  });

  it('DANE-40 Full(0) data must be a whole parseable certificate (selector 0) or SubjectPublicKeyInfo (selector 1)', () => {
    expect(isUsable(rec(2, 0, 0, ec.der.subarray(0, ec.der.length - 1)))).toBe(false); // truncated
    expect(isUsable(rec(2, 0, 0, Buffer.concat([ec.der, Buffer.from([0])])))).toBe(false); // trailing junk
    expect(isUsable(rec(2, 0, 0, ec.spki))).toBe(false); // an SPKI is not a certificate
    expect(isUsable(rec(3, 1, 0, ec.der))).toBe(false); // a certificate is not an SPKI
    expect(isUsable(rec(3, 1, 0, Buffer.from('30030201ff', 'hex')))).toBe(false);
    expect(isUsable(rec(3, 1, 0, Buffer.from('not der at all')))).toBe(false);
    expect(isUsable(rec(2, 0, 0, rsa.der))).toBe(true);
    expect(isUsable(rec(2, 1, 0, rsa.spki))).toBe(true);
  });
});

describe('DANE-51 digest agility', () => {
  it('DANE-51 per (usage, selector) keeps Full(0) and only the strongest digest present', () => {
    const set = [of(ec, 3, 1, 0), of(ec, 3, 1, 1), of(ec, 3, 1, 2), of(ec, 3, 0, 1), of(ec, 2, 1, 1), of(ec, 2, 1, 2), of(ec, 2, 0, 1)];
    // RFC 7671 §9 example: of {3 1 0, 3 1 1, 3 1 2} only 3 1 0 and 3 1 2 count; other groups independent.
    expect(fmt(usableRecords(set))).toEqual(['3 1 0', '3 1 2', '3 0 1', '2 1 2', '2 0 1']);
  });

  it('DANE-51 the preference is configurable, and a digest outside it is unsupported', () => {
    const set = [of(ec, 3, 1, 1), of(ec, 3, 1, 2), of(ec, 3, 0, 2)];
    expect(fmt(usableRecords(set, ['sha256', 'sha512']))).toEqual(['3 1 1', '3 0 2']);
    expect(fmt(usableRecords(set, ['sha256']))).toEqual(['3 1 1']);
    expect(fmt(usableRecords(set, ['sha512']))).toEqual(['3 1 2', '3 0 2']);
  });

  it('DANE-51 unusable records are dropped before agility: a malformed 3 1 2 does not hide a good 3 1 1', () => {
    const bad512 = rec(3, 1, 2, Buffer.alloc(32, 0xab)); // 32 bytes labelled SHA-512: unusable
    const set = [of(ec, 3, 1, 1), bad512, of(ec, 1, 1, 2)];
    expect(fmt(usableRecords(set))).toEqual(['3 1 1']);
  });

  it('DANE-51 an RRset of only unusable records leaves nothing', () => {
    expect(usableRecords([of(ec, 1, 1, 1), rec(3, 9, 1, tlsaData(ec, 1, 1)), rec(3, 1, 1, Buffer.alloc(20))])).toEqual([]);
  });
});

describe('formatTlsa and DER helpers', () => {
  it('formatTlsa gives "u s m HEX" in uppercase without spaces', () => {
    const r = rec(3, 1, 1, Buffer.from('9f86d081884c7d65', 'hex'));
    expect(formatTlsa(r)).toBe('3 1 1 9F86D081884C7D65');
    expect(formatTlsa(of(ec, 3, 1, 1))).toMatch(/^3 1 1 [0-9A-F]{64}$/);
  });

  it('DANE-50 spkiFromCertDer returns the SubjectPublicKeyInfo bytes node extracts, for EC and RSA', () => {
    for (const c of [ec, rsa]) {
      const spki = spkiFromCertDer(c.der);
      expect(spki?.equals(new X509Certificate(c.der).publicKey.export({ type: 'spki', format: 'der' }))).toBe(true);
    }
    expect(spkiFromCertDer(ec.der.subarray(0, 100))).toBeNull();
    expect(spkiFromCertDer(Buffer.from([0x30, 0x80, 0, 0]))).toBeNull(); // BER indefinite length
  });

  it('readTlv rejects lengths past the buffer and non-minimal length octets', () => {
    expect(readTlv(Buffer.from([0x30, 0x05, 1, 2]), 0)).toBeNull();
    expect(readTlv(Buffer.from([0x30, 0x81, 0x01, 0x00]), 0)).toBeNull(); // 1-byte length in long form
    expect(readTlv(Buffer.from([0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), 0)).toBeNull();
    expect(readTlv(Buffer.from([0x04, 0x02, 0xaa, 0xbb]), 0)).toEqual({ tag: 4, start: 0, contentStart: 2, end: 4 });
  });
});

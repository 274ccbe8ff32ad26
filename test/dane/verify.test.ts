/**
 * DANE authentication (digest DANE-50…56) against real generated chains:
 * real keys, real signatures, real validity periods. Nothing under test is mocked.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import type { TlsaRecord } from '../../src/dns/types.js';
import { verifyDane, matchesReferenceName, MAX_CHAIN, type DaneVerifyInput } from '../../src/dane/verify.js';
import { formatTlsa } from '../../src/dane/tlsa.js';
import { makeCa, makeIntermediate, makeLeaf, makeSelfSigned, tlsaData, type Issued } from '../support/pki.js';

const DAY = 86400_000;
const NOW = new Date();
const of = (c: Issued, usage: number, s: 0 | 1, m: 0 | 1 | 2): TlsaRecord => ({ usage, selector: s, matchingType: m, data: tlsaData(c, s, m) });
const NEXT_HOP = 'example.com';
const MX = 'mx.example.com';

function verify(records: TlsaRecord[], chain: (Issued | Buffer)[], refs: string[] = [MX, NEXT_HOP], extra: Partial<DaneVerifyInput> = {}) {
  return verifyDane({ records, chain: chain.map((c) => (Buffer.isBuffer(c) ? c : c.der)), referenceNames: refs, now: NOW, ...extra });
}

/** A certificate for `subject`'s name and key, issued and signed by `issuer` (cross-signing). */
async function crossSign(subject: Issued, issuer: Issued, ca = true): Promise<Buffer> {
  const c = await x509.X509CertificateGenerator.create({
    subject: subject.cert.subjectName,
    issuer: issuer.cert.subjectName,
    publicKey: subject.keys.publicKey,
    signingKey: issuer.keys.privateKey,
    signingAlgorithm: issuer.keys.privateKey.algorithm.name === 'ECDSA' ? { name: 'ECDSA', hash: 'SHA-256' } : { name: 'RSASSA-PKCS1-v1_5' },
    notBefore: new Date(NOW.getTime() - DAY),
    notAfter: new Date(NOW.getTime() + DAY),
    // keyCertSign even when ca=false, so only basicConstraints can stop it issuing
    extensions: [new x509.BasicConstraintsExtension(ca, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
  });
  return Buffer.from(c.rawData);
}

// A shared PKI: root → intermediate → leaf for mx.example.com / example.com.
let root: Issued, inter: Issued, leaf: Issued;
beforeAll(async () => {
  root = await makeCa({ cn: 'Example Root' });
  inter = await makeIntermediate(root, { cn: 'Example Issuing CA 1' });
  leaf = await makeLeaf(inter, { cn: MX, dnsNames: [MX] });
});

/** CPU milliseconds the process spent since `since` (work done; a busy machine stretches wall time, not this) */
const cpuMs = (since: NodeJS.CpuUsage): number => {
  const d = process.cpuUsage(since);
  return (d.user + d.system) / 1000;
};

describe('DANE-52 DANE-EE (usage 3)', () => {
  it('DANE-52 3 1 1 matches an expired self-signed leaf with a wrong name (case 5)', async () => {
    const stale = await makeSelfSigned({
      cn: 'wrong.invalid',
      dnsNames: ['wrong.invalid'],
      notBefore: new Date('2015-01-01'),
      notAfter: new Date('2016-01-01'),
    });
    const r = verify([of(stale, 3, 1, 1)], [stale]);
    expect(r.ok).toBe(true);
    expect(r.matched).toBe(formatTlsa(of(stale, 3, 1, 1)));
    expect(r.depth).toBe(0);
    expect(r.detail).toMatch(/^DANE-EE 3 1 1 [0-9A-F]{16}… matched the leaf$/);
  });

  it('DANE-52 3 1 1 of a different key fails with dane-no-match naming the leaf SPKI digest (case 5)', async () => {
    const other = await makeSelfSigned();
    const mine = await makeSelfSigned({ dnsNames: [MX] });
    const r = verify([of(other, 3, 1, 1), of(other, 3, 0, 1)], [mine]);
    expect(r.ok).toBe(false);
    expect(r.reason).toBe('dane-no-match');
    const spkiHex = tlsaData(mine, 1, 1).toString('hex').toUpperCase();
    expect(r.detail).toBe(
      `no TLSA record matched: leaf SPKI sha256 ${spkiHex}, cert sha256 ${tlsaData(mine, 0, 1).toString('hex').toUpperCase()}, 2 usable records tried`,
    );
  });

  it('DANE-50 every selector and matching type matches the leaf, for EC and RSA keys', async () => {
    const rsa = await makeSelfSigned({ keyAlg: 'rsa' });
    for (const c of [leaf, rsa])
      for (const s of [0, 1] as const)
        for (const m of [0, 1, 2] as const) {
          const r = verify([of(c, 3, s, m)], [c]);
          expect(r.ok, `3 ${s} ${m}`).toBe(true);
        }
  });

  it('DANE-50 selector 0 is the whole certificate: a re-issued certificate with the same key matches 3 1 1 but not 3 0 1', async () => {
    const again = await makeLeaf(inter, { dnsNames: [MX] });
    // same key, new certificate: build by cross-signing the old leaf's key under the intermediate
    const sameKey = await crossSign(leaf, inter);
    expect(verify([of(leaf, 3, 1, 1)], [sameKey]).ok).toBe(true);
    expect(verify([of(leaf, 3, 0, 1)], [sameKey]).reason).toBe('dane-no-match');
    expect(verify([of(leaf, 3, 1, 1)], [again]).reason).toBe('dane-no-match');
  });

  it('DANE-52 DANE-EE compares with the leaf only: 3 1 1 of the intermediate does not authenticate', () => {
    const r = verify([of(inter, 3, 1, 1)], [leaf, inter, root]);
    expect(r.ok).toBe(false);
    expect(r.reason).toBe('dane-no-match');
  });

  it('DANE-52 DANE-EE ignores the rest of the chain, however broken', () => {
    const r = verify([of(leaf, 3, 1, 2)], [leaf, Buffer.from('garbage'), root]);
    expect(r.ok).toBe(true);
    expect(r.depth).toBe(0);
  });

  it('DANE-51 3 1 2 mismatch next to a 3 1 1 match fails (case 10)', async () => {
    const other = await makeSelfSigned();
    const r = verify([of(leaf, 3, 1, 1), of(other, 3, 1, 2)], [leaf]);
    expect(r.ok).toBe(false);
    expect(r.reason).toBe('dane-no-match');
    expect(r.detail).toContain('1 usable record tried');
  });

  it('DANE-51 with preference sha256 first, the same RRset passes on the 3 1 1', async () => {
    const other = await makeSelfSigned();
    const r = verify([of(leaf, 3, 1, 1), of(other, 3, 1, 2)], [leaf], undefined, { digestPreference: ['sha256', 'sha512'] });
    expect(r.ok).toBe(true);
    expect(r.matched).toBe(formatTlsa(of(leaf, 3, 1, 1)));
  });

  it('DANE-51 a Full(0) match survives next to a mismatching stronger digest', async () => {
    const other = await makeSelfSigned();
    const r = verify([of(leaf, 3, 1, 0), of(other, 3, 1, 2)], [leaf]);
    expect(r.ok).toBe(true);
    expect(r.matched?.startsWith('3 1 0 30')).toBe(true);
  });

  it('DANE-40 unusable records (1 1 1, 0 0 1, 3 9 1, short digest) never authenticate; alone they give tlsa-invalid', () => {
    const unusable: TlsaRecord[] = [
      of(leaf, 1, 1, 1),
      of(root, 0, 0, 1),
      { ...of(leaf, 3, 1, 1), selector: 9 },
      { ...of(leaf, 3, 1, 1), data: tlsaData(leaf, 1, 1).subarray(0, 31) },
    ];
    const r = verify(unusable, [leaf, inter, root]);
    expect(r.ok).toBe(false);
    expect(r.reason).toBe('tlsa-invalid');
    expect(r.detail).toContain('no usable TLSA record among 4');
    // next to one usable matching record, the unusable ones are simply ignored
    const ok = verify([...unusable, of(leaf, 3, 1, 1)], [leaf]);
    expect(ok.ok).toBe(true);
    expect(ok.matched).toBe(formatTlsa(of(leaf, 3, 1, 1)));
  });

  it('DANE-50 any one matching usable record is enough (RFC 6698 §4.1)', async () => {
    const other = await makeSelfSigned();
    const r = verify([of(other, 3, 1, 1), of(other, 2, 0, 1), of(leaf, 3, 0, 1)], [leaf, inter]);
    expect(r.ok).toBe(true);
    expect(r.matched).toBe(formatTlsa(of(leaf, 3, 0, 1)));
  });
});

describe('DANE-53 DANE-TA (usage 2), anchor in the chain', () => {
  it('DANE-53 2 0 1 with the root in the chain and the next-hop domain in the SAN passes (case 6)', async () => {
    const l = await makeLeaf(inter, { cn: 'anything', dnsNames: [NEXT_HOP] });
    const r = verify([of(root, 2, 0, 1)], [l, inter, root]);
    expect(r.ok).toBe(true);
    expect(r.depth).toBe(2);
    expect(r.matched).toBe(formatTlsa(of(root, 2, 0, 1)));
    expect(r.detail).toContain('leaf dNSName example.com matches example.com');
  });

  it('DANE-56 2 0 1 with an unrelated SAN fails with certificate-host-mismatch (case 6)', async () => {
    const l = await makeLeaf(inter, { cn: MX, dnsNames: ['mail.unrelated.net'] });
    const r = verify([of(root, 2, 0, 1)], [l, inter, root]);
    expect(r.ok).toBe(false);
    expect(r.reason).toBe('certificate-host-mismatch');
    expect(r.detail).toContain('[mail.unrelated.net] matches none of [mx.example.com, example.com]');
  });

  it('DANE-54 2 0 1 with the anchor missing from the chain fails (case 6)', () => {
    const r = verify([of(root, 2, 0, 1)], [leaf, inter]);
    expect(r.ok).toBe(false);
    expect(r.reason).toBe('dane-no-match');
  });

  it('DANE-53 the chain may be unordered, duplicated and carry junk', () => {
    const r = verify([of(root, 2, 1, 2)], [leaf, Buffer.from([0x30, 0x03, 0x02, 0x01]), root, Buffer.alloc(0), inter, inter]);
    expect(r.ok).toBe(true);
    expect(r.depth).toBe(2);
  });

  it('DANE-53 2 1 1 pinned to the intermediate passes; after the intermediate is replaced it fails', async () => {
    const pinned = of(inter, 2, 1, 1);
    const ok = verify([pinned], [leaf, inter, root]);
    expect(ok.ok).toBe(true);
    expect(ok.depth).toBe(1);
    // Issuer rotates to a new intermediate (same name, new key), leaf re-issued under it.
    const inter2 = await makeIntermediate(root, { cn: 'Example Issuing CA 1' });
    const leaf2 = await makeLeaf(inter2, { dnsNames: [MX] });
    const r = verify([pinned], [leaf2, inter2, root]);
    expect(r.ok).toBe(false);
    expect(r.reason).toBe('dane-no-match');
    // Old intermediate still sent along, but the leaf is not signed by it.
    const r2 = verify([pinned], [leaf2, inter, inter2, root]);
    expect(r2.ok).toBe(false);
    expect(r2.reason).toBe('validation-failure');
    expect(r2.detail).toContain('does not chain');
  });

  it('DANE-53 a leaf whose issuer name matches the anchor but whose signature is from another key fails', async () => {
    const impostor = await makeCa({ cn: 'Example Root' }); // same name, different key
    const forged = await makeLeaf(impostor, { dnsNames: [MX] });
    const r = verify([of(root, 2, 0, 1)], [forged, root]);
    expect(r.ok).toBe(false);
    expect(r.reason).toBe('validation-failure');
    // Without an authorityKeyIdentifier only the signature tells them apart.
    const noAki = await crossSign(leaf, impostor);
    const r2 = verify([of(root, 2, 0, 1)], [noAki, root]);
    expect(r2.ok).toBe(false);
    expect(r2.detail).toContain('does not chain');
    // ...and the same certificate does validate under the key that really signed it.
    expect(verify([of(impostor, 2, 0, 1)], [noAki, impostor], [MX]).ok).toBe(true);
  });

  it('DANE-53 an expired intermediate under the anchor fails with certificate-expired', async () => {
    const old = await makeIntermediate(root, { notBefore: new Date(NOW.getTime() - 400 * DAY), notAfter: new Date(NOW.getTime() - DAY) });
    const l = await makeLeaf(old, { dnsNames: [MX] });
    const r = verify([of(root, 2, 0, 1)], [l, old, root]);
    expect(r.ok).toBe(false);
    expect(r.reason).toBe('certificate-expired');
    expect(r.depth).toBe(2);
  });

  it('DANE-53 an expired leaf under DANE-TA fails with certificate-expired', async () => {
    const l = await makeLeaf(inter, { dnsNames: [MX], notBefore: new Date(NOW.getTime() - 90 * DAY), notAfter: new Date(NOW.getTime() - 1000) });
    const r = verify([of(inter, 2, 1, 1)], [l, inter]);
    expect(r.reason).toBe('certificate-expired');
    expect(r.detail).toContain('expired');
  });

  it('DANE-53 a not-yet-valid leaf under DANE-TA fails', async () => {
    const l = await makeLeaf(inter, { dnsNames: [MX], notBefore: new Date(NOW.getTime() + DAY) });
    const r = verify([of(inter, 2, 1, 1)], [l, inter]);
    expect(r.ok).toBe(false);
    expect(r.reason).toBe('validation-failure');
    expect(r.detail).toContain('not valid before');
  });

  it("DANE-53 the anchor certificate's own dates are not checked (RFC 5280 §6.1: the anchor is not in the path)", async () => {
    const oldRoot = await makeCa({ notBefore: new Date(NOW.getTime() - 400 * DAY), notAfter: new Date(NOW.getTime() - DAY) });
    const l = await makeLeaf(oldRoot, { dnsNames: [MX] });
    expect(verify([of(oldRoot, 2, 0, 1)], [l, oldRoot]).ok).toBe(true);
  });

  it('DANE-53 an end-entity certificate cannot act as an issuer below the anchor', async () => {
    const ee = await makeLeaf(root, { dnsNames: ['ee.example.com'] });
    const l = await makeLeaf(ee, { dnsNames: [MX] });
    const r = verify([of(root, 2, 0, 1)], [l, ee, root]);
    expect(r.ok).toBe(false);
    expect(r.reason).toBe('validation-failure');
    // Even with keyCertSign, basicConstraints cA=false forbids issuing (RFC 5280 §4.2.1.9).
    const notCa = await makeCa({ cn: 'Not A CA' });
    const notCaDer = await crossSign(notCa, root, false);
    const l2 = await makeLeaf(notCa, { dnsNames: [MX] });
    const r2 = verify([of(root, 2, 0, 1)], [l2, notCaDer, root]);
    expect(r2).toMatchObject({ ok: false, reason: 'validation-failure' });
    expect(r2.detail).toContain('is not a CA');
  });

  it("DANE-53 an intermediate's pathLen is enforced", async () => {
    const i1 = await makeIntermediate(root, { pathLen: 0 });
    const i2 = await makeIntermediate(i1);
    const l = await makeLeaf(i2, { dnsNames: [MX] });
    const r = verify([of(root, 2, 0, 1)], [l, i2, i1, root]);
    expect(r.ok).toBe(false);
    expect(r.reason).toBe('validation-failure');
    expect(r.detail).toContain('path length 0');
    const j1 = await makeIntermediate(root, { pathLen: 1 });
    const j2 = await makeIntermediate(j1);
    const l2 = await makeLeaf(j2, { dnsNames: [MX] });
    expect(verify([of(root, 2, 0, 1)], [l2, j2, j1, root]).ok).toBe(true);
  });

  it('DANE-53 anchor constraints apply with selector Cert(0) but not with a bare key SPKI(1)', async () => {
    const tight = await makeCa({ pathLen: 0 });
    const i = await makeIntermediate(tight);
    const l = await makeLeaf(i, { dnsNames: [MX] });
    const bySel0 = verify([of(tight, 2, 0, 1)], [l, i, tight]);
    expect(bySel0.ok).toBe(false);
    expect(bySel0.detail).toContain('the anchor');
    expect(verify([of(tight, 2, 1, 1)], [l, i, tight]).ok).toBe(true);
  });

  it('DANE-53 RSA and EC keys mix along the path', async () => {
    const rsaRoot = await makeCa({ keyAlg: 'rsa' });
    const ecInter = await makeIntermediate(rsaRoot);
    const rsaLeaf = await makeLeaf(ecInter, { keyAlg: 'rsa', dnsNames: [MX] });
    const r = verify([of(rsaRoot, 2, 1, 1)], [rsaLeaf, ecInter, rsaRoot]);
    expect(r.ok).toBe(true);
    expect(r.depth).toBe(2);
  });

  it('DANE-53 a 2-record matching a self-signed leaf makes it its own anchor; names are still checked', async () => {
    const ss = await makeSelfSigned({ dnsNames: [MX] });
    expect(verify([of(ss, 2, 0, 1)], [ss]).ok).toBe(true);
    expect(verify([of(ss, 2, 0, 1)], [ss], ['other.example']).reason).toBe('certificate-host-mismatch');
  });
});

describe('DANE-54 DANE-TA, anchor absent from the chain', () => {
  it('DANE-54 2 0 0: the chain validates against the certificate from DNS', () => {
    const r = verify([of(root, 2, 0, 0)], [leaf, inter]);
    expect(r.ok).toBe(true);
    expect(r.depth).toBe(2); // where the anchor would sit
    expect(r.detail).toContain('anchor certificate from DNS');
  });

  it('DANE-54 2 0 0: a chain from another CA fails', async () => {
    const otherRoot = await makeCa({ cn: 'Example Root' });
    const r = verify([of(otherRoot, 2, 0, 0)], [leaf, inter]);
    expect(r.ok).toBe(false);
    expect(r.reason).toBe('validation-failure');
  });

  it('DANE-54 2 0 0: anchor constraints from the DNS certificate apply', async () => {
    const tight = await makeCa({ pathLen: 0 });
    const i = await makeIntermediate(tight);
    const l = await makeLeaf(i, { dnsNames: [MX] });
    expect(verify([of(tight, 2, 0, 0)], [l, i]).ok).toBe(false);
  });

  it('DANE-54 2 1 0: the top presented certificate signed by that key passes; another key fails', async () => {
    const r = verify([of(root, 2, 1, 0)], [leaf, inter]);
    expect(r.ok).toBe(true);
    expect(r.detail).toContain('anchor public key from DNS');
    const stranger = await makeCa();
    const bad = verify([of(stranger, 2, 1, 0)], [leaf, inter]);
    expect(bad.ok).toBe(false);
    expect(bad.reason).toBe('validation-failure');
  });

  it('DANE-54 digest 2-records (2 0 1, 2 1 1, 2 0 2) with the anchor absent fail', () => {
    for (const rr of [of(root, 2, 0, 1), of(root, 2, 1, 1), of(root, 2, 0, 2)]) {
      const r = verify([rr], [leaf, inter]);
      expect(r.ok, formatTlsa(rr).slice(0, 5)).toBe(false);
      expect(r.reason).toBe('dane-no-match');
    }
  });

  it('DANE-54 2 0 0 absent anchor still needs valid dates and names below it', async () => {
    const l = await makeLeaf(inter, { dnsNames: ['elsewhere.example'] });
    expect(verify([of(root, 2, 0, 0)], [l, inter]).reason).toBe('certificate-host-mismatch');
  });
});

describe('DANE-55/56 reference identifiers (DANE-TA only)', () => {
  it('DANE-56 the CN is used only when the leaf has no dNSName', async () => {
    const cnOnly = await makeLeaf(inter, { cn: MX });
    const r = verify([of(inter, 2, 1, 1)], [cnOnly, inter]);
    expect(r.ok).toBe(true);
    expect(r.detail).toContain('leaf CN mx.example.com matches mx.example.com');
    const sanElsewhere = await makeLeaf(inter, { cn: MX, dnsNames: ['other.example.net'] });
    expect(verify([of(inter, 2, 1, 1)], [sanElsewhere, inter]).reason).toBe('certificate-host-mismatch');
  });

  it('DANE-55 the TLSA base domain and each extra reference name are accepted, nothing else', async () => {
    const l = await makeLeaf(inter, { dnsNames: [NEXT_HOP] });
    expect(verify([of(inter, 2, 1, 1)], [l, inter], [MX, NEXT_HOP]).ok).toBe(true);
    expect(verify([of(inter, 2, 1, 1)], [l, inter], [MX]).reason).toBe('certificate-host-mismatch');
    expect(verify([of(inter, 2, 1, 1)], [l, inter], []).reason).toBe('certificate-host-mismatch');
  });

  it('DANE-56 a wildcard dNSName covers exactly one leftmost label', async () => {
    const wild = await makeLeaf(inter, { dnsNames: ['*.example.com'] });
    const rr = [of(inter, 2, 1, 1)];
    expect(verify(rr, [wild, inter], ['mx.example.com']).ok).toBe(true);
    expect(verify(rr, [wild, inter], ['a.mx.example.com']).reason).toBe('certificate-host-mismatch');
    expect(verify(rr, [wild, inter], ['example.com']).reason).toBe('certificate-host-mismatch');
  });

  it('DANE-56 names compare case-insensitively', async () => {
    const l = await makeLeaf(inter, { dnsNames: ['MX.Example.COM'] });
    expect(verify([of(inter, 2, 1, 1)], [l, inter], ['mx.example.com']).ok).toBe(true);
  });

  it('DANE-56 matching rules table (RFC 7672 §3.2.3)', () => {
    const yes: [string, string][] = [
      ['mx.example.com', 'mx.example.com'],
      ['MX.EXAMPLE.COM', 'mx.example.com'],
      ['mx.example.com.', 'mx.example.com'],
      ['*.example.com', 'mx1.example.com'],
      ['*.Example.com', 'MX1.example.COM'],
      ['xn--bcher-kva.example', 'xn--bcher-kva.example'],
      ['*.example', 'mx.example'],
    ];
    const no: [string, string][] = [
      ['*.example.com', 'example.com'],
      ['*.example.com', 'a.b.example.com'], // multi-label: optional in the RFC, not offered
      ['smtp*.example.com', 'smtp1.example.com'], // partial wildcard: not the whole label
      ['*smtp.example.com', 'xsmtp.example.com'],
      ['mx.*.com', 'mx.example.com'],
      ['*.*.example.com', 'a.b.example.com'],
      ['*', 'com'],
      ['mx.example.com', 'mx.example.org'],
      ['mx.example.com\u0000.evil.com', 'mx.example.com'],
      ['', 'mx.example.com'],
      ['mx.example.com', '*.example.com'], // a reference identifier is never a pattern
      ['mx..example.com', 'mx..example.com'],
    ];
    for (const [p, r] of yes) expect(matchesReferenceName(p, r), `${p} ~ ${r}`).toBe(true);
    for (const [p, r] of no) expect(matchesReferenceName(p, r), `${p} !~ ${r}`).toBe(false);
  });

  it('DANE-52 names are never checked for DANE-EE, even next to a failing DANE-TA record', async () => {
    const l = await makeLeaf(inter, { dnsNames: ['wrong.example.net'] });
    const r = verify([of(root, 2, 0, 1), of(l, 3, 1, 1)], [l, inter, root]);
    expect(r.ok).toBe(true);
    expect(r.matched?.startsWith('3 1 1')).toBe(true);
  });
});

describe('hostile certificates and chains', () => {
  it('an empty chain fails cleanly', () => {
    const r = verify([of(leaf, 3, 1, 1)], []);
    expect(r).toMatchObject({ ok: false, reason: 'validation-failure' });
  });

  it('a garbage, truncated or empty leaf fails with validation-failure, no exception', () => {
    for (const bad of [
      Buffer.from('hello world'),
      leaf.der.subarray(0, leaf.der.length - 10),
      Buffer.alloc(0),
      Buffer.from([0x30, 0x84, 0x7f, 0xff, 0xff, 0xff]),
    ]) {
      const r = verify([of(leaf, 3, 0, 1), of(root, 2, 0, 1)], [bad, inter, root]);
      expect(r.ok).toBe(false);
      expect(r.reason).toBe('validation-failure');
      expect(r.detail).toMatch(/^leaf certificate rejected/);
    }
  });

  it('an oversized certificate (huge SAN extension) is refused as leaf and ignored as a chain entry', async () => {
    const names = Array.from({ length: 3000 }, (_, i) => `host-${i}.very-long-label-for-size.example.com`);
    const huge = await makeSelfSigned({ dnsNames: names });
    expect(huge.der.length).toBeGreaterThan(64 * 1024);
    const r = verify([of(huge, 3, 1, 1)], [huge]);
    expect(r).toMatchObject({ ok: false, reason: 'validation-failure' });
    expect(r.detail).toContain('exceeds');
    expect(verify([of(root, 2, 0, 1)], [leaf, huge.der, inter, root]).ok).toBe(true);
  });

  it(`a 100-certificate chain fails at once (limit ${MAX_CHAIN})`, () => {
    const chain = [leaf, ...Array.from({ length: 99 }, () => inter)];
    const t0 = process.cpuUsage();
    const r = verify([of(leaf, 3, 1, 1)], chain);
    expect(cpuMs(t0)).toBeLessThan(1000);
    expect(r).toMatchObject({ ok: false, reason: 'validation-failure' });
    expect(r.detail).toContain('100 certificates');
  });

  it('an issuer cycle in the presented chain ends in a failing outcome', async () => {
    // X → Y → X' where X' carries X's name and key but is signed by Y: a loop.
    const x = await makeCa({ cn: 'Loop X' });
    const y = await makeIntermediate(x, { cn: 'Loop Y' });
    const xPrime = await crossSign(x, y);
    const l = await makeLeaf(y, { dnsNames: [MX] });
    const stranger = await makeCa();
    const t0 = process.cpuUsage();
    const r = verify([of(stranger, 2, 1, 0)], [l, y.der, xPrime, x.der]);
    expect(cpuMs(t0)).toBeLessThan(2000);
    expect(r).toMatchObject({ ok: false, reason: 'validation-failure' });
    // ...and the same loop still validates when the TLSA record names a real anchor in it.
    expect(verify([of(x, 2, 1, 1)], [l, xPrime, y.der]).ok).toBe(true);
  });

  it('a swarm of same-name, same-key certificates cannot make the path search explode', async () => {
    const swarm = await makeCa({ cn: 'Swarm' });
    const copies = await Promise.all(Array.from({ length: 8 }, () => crossSign(swarm, swarm)));
    const l = await makeLeaf(swarm, { dnsNames: [MX] });
    const stranger = await makeCa();
    const t0 = process.cpuUsage();
    const r = verify([of(stranger, 2, 1, 0)], [l, ...copies, swarm]); // 8! orderings without a bound
    expect(cpuMs(t0)).toBeLessThan(3000);
    expect(r).toMatchObject({ ok: false, reason: 'validation-failure' });
    expect(r.detail).toContain('abandoned');
  });

  it('non-Buffer junk inside the chain array is skipped', () => {
    const chain = [leaf.der, 'nonsense' as unknown as Buffer, inter.der, root.der];
    const r = verifyDane({ records: [of(root, 2, 0, 1)], chain, referenceNames: [MX], now: NOW });
    expect(r.ok).toBe(true);
  });
});

describe('input shapes', () => {
  it('a null leaf entry fails cleanly; Uint8Array entries are accepted', () => {
    const bad = verifyDane({ records: [of(leaf, 3, 1, 1)], chain: [null as unknown as Buffer], referenceNames: [MX], now: NOW });
    expect(bad).toMatchObject({ ok: false, reason: 'validation-failure' });
    const view = new Uint8Array(leaf.der.buffer, leaf.der.byteOffset, leaf.der.byteLength);
    const good = verifyDane({ records: [of(leaf, 3, 1, 1)], chain: [view as Buffer], referenceNames: [MX], now: NOW });
    expect(good.ok).toBe(true);
  });
});

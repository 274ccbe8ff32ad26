/**
 * Self-check of the test PKI (test/support/pki.ts): what it makes must be
 * accepted by node:crypto (OpenSSL), the same parser node:tls uses, so that a
 * DANE test failing means the verifier is wrong, not the fixture.
 */
import { describe, it, expect } from 'vitest';
import { X509Certificate, createPrivateKey, createPublicKey, createHash } from 'node:crypto';
import { makeCa, makeIntermediate, makeLeaf, makeSelfSigned, chainPem, tlsaData } from '../support/pki.js';

describe('test PKI', () => {
  it('root → intermediate → leaf chain: node:crypto parses it and checkIssued/verify agree', async () => {
    const root = await makeCa({ cn: 'Root', pathLen: 1 });
    const inter = await makeIntermediate(root, { cn: 'Inter', pathLen: 0 });
    const leaf = await makeLeaf(inter, { cn: 'mx.example.org', dnsNames: ['mx.example.org', 'example.org'] });

    const r = new X509Certificate(root.certPem);
    const i = new X509Certificate(inter.der);
    const l = new X509Certificate(leaf.der);
    expect(r.ca).toBe(true);
    expect(i.ca).toBe(true);
    expect(l.ca).toBe(false);
    expect(l.subjectAltName).toBe('DNS:mx.example.org, DNS:example.org');
    expect(l.checkIssued(i)).toBe(true);
    expect(i.checkIssued(r)).toBe(true);
    expect(l.checkIssued(r)).toBe(false);
    expect(l.verify(i.publicKey)).toBe(true);
    expect(i.verify(r.publicKey)).toBe(true);
    expect(r.verify(r.publicKey)).toBe(true);
    expect(l.verify(r.publicKey)).toBe(false);
    // spki is the SubjectPublicKeyInfo DER node extracts too
    expect(l.publicKey.export({ type: 'spki', format: 'der' }).equals(leaf.spki)).toBe(true);
    // the key PEM is the private half of the certificate's key
    const pub = createPublicKey(createPrivateKey(leaf.keyPem)).export({ type: 'spki', format: 'der' });
    expect(pub.equals(leaf.spki)).toBe(true);
    expect(chainPem(leaf, inter).match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
  });

  it('RSA self-signed leaf with custom dates, and tlsaData digests', async () => {
    const nb = new Date('2020-01-01T00:00:00Z');
    const na = new Date('2020-02-01T00:00:00Z');
    const ss = await makeSelfSigned({ keyAlg: 'rsa', notBefore: nb, notAfter: na, serial: '0a1b' });
    const c = new X509Certificate(ss.der);
    expect(c.publicKey.asymmetricKeyType).toBe('rsa');
    expect(c.verify(c.publicKey)).toBe(true);
    expect(new Date(c.validTo).getTime()).toBe(na.getTime());
    expect(c.serialNumber.toLowerCase()).toBe('0a1b');
    expect(c.subjectAltName).toBeUndefined();
    expect(tlsaData(ss, 0, 0).equals(ss.der)).toBe(true);
    expect(tlsaData(ss, 1, 0).equals(ss.spki)).toBe(true);
    expect(tlsaData(ss, 1, 1).equals(createHash('sha256').update(ss.spki).digest())).toBe(true);
    expect(tlsaData(ss, 0, 2)).toHaveLength(64);
  });
});

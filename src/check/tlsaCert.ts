/**
 * `dane-relay tlsa --cert FILE`: the TLSA records an operator should publish for a certificate
 * (or a PEM chain, leaf first). RFC 7671 §5.1/§5.2 and RFC 7672 §3.1: `3 1 1` (DANE-EE, SHA-256
 * of the SubjectPublicKeyInfo) for the server certificate, `2 1 1` (DANE-TA) for each CA
 * certificate. The SPKI bytes are taken exactly as encoded in the certificate (RFC 6698 §2.1.2).
 */
import { X509Certificate, createHash } from 'node:crypto';
import { spkiFromCertDer } from '../dane/tlsa.js';

export interface TlsaSuggestion {
  record: string;
  usage: 2 | 3;
  subject: string;
  notAfter: string;
  ca: boolean;
}

/** DER certificates from PEM text (any number of CERTIFICATE blocks), or the bytes themselves if DER. */
export function certificatesFrom(bytes: Buffer): Buffer[] {
  const text = bytes.toString('latin1');
  const blocks = [...text.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g)];
  if (blocks.length > 0) return blocks.map((m) => Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
  return bytes.length > 0 && bytes[0] === 0x30 ? [bytes] : [];
}

export function suggestTlsa(ders: Buffer[]): TlsaSuggestion[] {
  const out: TlsaSuggestion[] = [];
  ders.forEach((der, i) => {
    const c = new X509Certificate(der); // throws on garbage: the CLI reports it
    const spki = spkiFromCertDer(der);
    if (!spki) throw new Error(`certificate ${i + 1}: SubjectPublicKeyInfo not readable`);
    const hex = createHash('sha256').update(spki).digest('hex').toUpperCase();
    const base = { subject: c.subject.replace(/\n/g, ', '), notAfter: new Date(c.validTo).toISOString(), ca: c.ca };
    // The server certificate (first, or any non-CA) gets DANE-EE; CA certificates DANE-TA.
    if (!c.ca || i === 0) out.push({ ...base, usage: 3, record: `3 1 1 ${hex}` });
    if (c.ca) out.push({ ...base, usage: 2, record: `2 1 1 ${hex}` });
  });
  return out;
}

export function formatSuggestions(s: TlsaSuggestion[], owner?: string): string {
  const lines: string[] = [];
  for (const x of s) {
    lines.push(`; ${x.usage === 3 ? 'DANE-EE (server key)' : 'DANE-TA (CA key)'}: ${x.subject}, expires ${x.notAfter}`);
    lines.push(owner ? `${owner}. IN TLSA ${x.record}` : x.record);
  }
  if (s.some((x) => x.usage === 3)) lines.push("; publish the next key's 3 1 1 as well, before the next renewal (RFC 7671 §8.1)");
  return lines.join('\n') + '\n';
}

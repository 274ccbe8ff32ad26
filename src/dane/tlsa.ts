/**
 * TLSA record rules that need no certificate: usability (digest DANE-40),
 * digest algorithm agility (DANE-51) and the presentation format used in logs,
 * DSNs and TLSRPT.
 *
 * Also home of a tiny, bounds-checked DER reader: the verifier needs the exact
 * SubjectPublicKeyInfo bytes *as encoded in the certificate* (RFC 6698 §2.1.2
 * selector 1), and re-encoding a parsed key (what node's KeyObject.export does)
 * is not guaranteed to reproduce them.
 */
import { X509Certificate } from 'node:crypto';
import type { TlsaRecord } from '../dns/types.js';

export type DigestName = 'sha512' | 'sha256';

/** Matching type number ↔ digest (RFC 6698 §2.1.3; IANA "TLSA Matching Types"). */
export const MATCHING_TYPE_DIGEST: Readonly<Record<number, DigestName>> = { 1: 'sha256', 2: 'sha512' };
const DIGEST_LENGTH: Readonly<Record<number, number>> = { 1: 32, 2: 64 };

/** Default preference, strongest first (RFC 7671 §9: SHA2-512 over SHA2-256). */
export const DEFAULT_DIGEST_PREFERENCE: readonly DigestName[] = ['sha512', 'sha256'];

// ---------------------------------------------------------------------------
// DER
// ---------------------------------------------------------------------------

export interface Tlv {
  tag: number;
  /** offset of the tag byte */
  start: number;
  /** offset of the first content byte */
  contentStart: number;
  /** offset just past the content */
  end: number;
}

/**
 * Reads one DER TLV at `offset`, never past `limit`. Returns null for anything
 * that is not strict DER we can use: high tag numbers, indefinite lengths,
 * non-minimal or over-long length octets, or content running past `limit`.
 */
export function readTlv(buf: Uint8Array, offset: number, limit: number = buf.length): Tlv | null {
  if (offset < 0 || offset + 2 > limit) return null;
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) return null; // multi-byte tag: never used in the structures we walk
  let p = offset + 1;
  const first = buf[p++]!;
  let len: number;
  if (first < 0x80) {
    len = first;
  } else {
    const n = first & 0x7f;
    if (n === 0 || n > 4) return null; // indefinite (BER only) or absurd (> 4 GiB)
    if (p + n > limit) return null;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p++]!;
    if (buf[offset + 2] === 0 || len < 0x80) return null; // DER: minimal length encoding
  }
  const end = p + len;
  if (end > limit) return null;
  return { tag, start: offset, contentStart: p, end };
}

/** The children of a constructed TLV, or null if they do not tile its content exactly. */
export function children(buf: Uint8Array, parent: Tlv, max = 64): Tlv[] | null {
  const out: Tlv[] = [];
  let p = parent.contentStart;
  while (p < parent.end) {
    if (out.length >= max) return null;
    const t = readTlv(buf, p, parent.end);
    if (!t) return null;
    out.push(t);
    p = t.end;
  }
  return out;
}

/** True when `buf` is exactly one SEQUENCE TLV, nothing trailing. */
function isSingleSequence(buf: Uint8Array): Tlv | null {
  const t = readTlv(buf, 0);
  return t && t.tag === 0x30 && t.end === buf.length ? t : null;
}

/**
 * The SubjectPublicKeyInfo bytes exactly as they appear inside a DER
 * certificate (RFC 5280 §4.1: Certificate → tbsCertificate → [version],
 * serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo).
 */
export function spkiFromCertDer(der: Uint8Array): Buffer | null {
  const cert = isSingleSequence(der);
  if (!cert) return null;
  const top = children(der, cert, 3);
  if (top?.length !== 3 || top[0]!.tag !== 0x30) return null;
  const tbs = children(der, top[0]!, 16);
  if (!tbs) return null;
  let i = tbs[0]?.tag === 0xa0 ? 1 : 0; // [0] EXPLICIT version, absent for v1
  const expected = [0x02, 0x30, 0x30, 0x30, 0x30, 0x30]; // serial, sigAlg, issuer, validity, subject, spki
  for (const tag of expected) {
    if (tbs[i]?.tag !== tag) return null;
    i++;
  }
  const spki = tbs[i - 1]!;
  if (!isSpkiStructure(der.subarray(spki.start, spki.end))) return null;
  return Buffer.from(der.subarray(spki.start, spki.end));
}

/** SubjectPublicKeyInfo ::= SEQUENCE { algorithm AlgorithmIdentifier, subjectPublicKey BIT STRING } */
function isSpkiStructure(buf: Uint8Array): boolean {
  const seq = isSingleSequence(buf);
  if (!seq) return false;
  const kids = children(buf, seq, 2);
  if (kids?.length !== 2 || kids[0]!.tag !== 0x30 || kids[1]!.tag !== 0x03) return false;
  const alg = children(buf, kids[0]!, 2);
  return !!alg && alg.length >= 1 && alg[0]!.tag === 0x06;
}

/** A complete, parseable DER certificate with nothing trailing. */
export function isCertificateDer(buf: Uint8Array): boolean {
  if (!isSingleSequence(buf)) return false;
  try {
    new X509Certificate(buf);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// TLSA rules
// ---------------------------------------------------------------------------

/**
 * DANE-40 [RFC 6698 §4.1; RFC 7671 §9; RFC 7672 §3.1.3]: usable = DANE-TA(2) or
 * DANE-EE(3), Cert(0) or SPKI(1), Full(0)/SHA2-256(1)/SHA2-512(2), and
 * well-formed association data. PKIX-TA(0)/PKIX-EE(1) are unusable for SMTP
 * (RFC 7672 §3.1.3), as are private-use (255) and unassigned values. Unusable
 * records are ignored, never an error.
 */
export function isUsable(r: TlsaRecord): boolean {
  if (r.usage !== 2 && r.usage !== 3) return false;
  if (r.selector !== 0 && r.selector !== 1) return false;
  if (!((r.data as unknown) instanceof Uint8Array)) return false; // Buffer is a Uint8Array
  switch (r.matchingType) {
    case 1:
    case 2:
      return r.data.length === DIGEST_LENGTH[r.matchingType];
    case 0:
      // Full(0): the data is the certificate (selector 0) or the SPKI (selector 1) itself.
      return r.selector === 0 ? isCertificateDer(r.data) : isSpkiStructure(r.data);
    default:
      return false;
  }
}

/**
 * DANE-51, RFC 7671 §9 (digest algorithm agility): drop unusable records; then,
 * per (usage, selector), keep every Full(0) record and only the records of the
 * most preferred digest present in that group. A digest type absent from
 * `digestPreference` is treated as unsupported (RFC 7671 §9 speaks of the
 * client's supported algorithms), so it is dropped too.
 *
 * Example from RFC 7671 §9: {3 1 0, 3 1 1, 3 1 2} → the key must match 3 1 0 or
 * 3 1 2; a match only against the weaker 3 1 1 is not accepted.
 */
export function usableRecords(records: readonly TlsaRecord[], digestPreference: readonly DigestName[] = DEFAULT_DIGEST_PREFERENCE): TlsaRecord[] {
  const rank = (mt: number): number => {
    const name = MATCHING_TYPE_DIGEST[mt];
    return name === undefined ? -1 : digestPreference.indexOf(name);
  };
  const usable = records.filter((r) => isUsable(r) && (r.matchingType === 0 || rank(r.matchingType) >= 0));
  // Strongest (lowest rank) digest per (usage, selector).
  const best = new Map<string, number>();
  for (const r of usable) {
    if (r.matchingType === 0) continue;
    const key = `${r.usage}/${r.selector}`;
    const cur = best.get(key);
    if (cur === undefined || rank(r.matchingType) < rank(cur)) best.set(key, r.matchingType);
  }
  return usable.filter((r) => r.matchingType === 0 || best.get(`${r.usage}/${r.selector}`) === r.matchingType);
}

/** Presentation form `3 1 1 ABCDEF…` (RFC 6698 §2.2; uppercase hex, no spaces). */
export function formatTlsa(r: TlsaRecord): string {
  const hex = Buffer.from(r.data).toString('hex').toUpperCase();
  return `${r.usage} ${r.selector} ${r.matchingType}${hex ? ` ${hex}` : ''}`;
}

/** Short form for human sentences: the first `hexChars` of the data, then "…". */
export function shortTlsa(r: TlsaRecord, hexChars = 16): string {
  const full = formatTlsa(r);
  const prefix = `${r.usage} ${r.selector} ${r.matchingType}`;
  const hex = full.slice(prefix.length + 1);
  return hex.length > hexChars ? `${prefix} ${hex.slice(0, hexChars)}…` : full;
}

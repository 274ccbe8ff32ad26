/**
 * Parsing of the DNSSEC record types from their RDATA (RFC 4034 §2–§5,
 * RFC 5155 §3), key tags (RFC 4034 App. B) and type bitmaps (RFC 4034 §4.1.2).
 * Every parser returns undefined for RDATA that does not parse; it never throws.
 */
import { nameToWire } from '../dns/wire.js';
import { joinLabels } from './names.js';

export interface Dnskey {
  flags: number;
  protocol: number;
  algorithm: number;
  publicKey: Buffer;
  keyTag: number;
  rdata: Buffer;
}
export interface Ds {
  keyTag: number;
  algorithm: number;
  digestType: number;
  digest: Buffer;
}
export interface Rrsig {
  typeCovered: number;
  algorithm: number;
  labels: number;
  originalTtl: number;
  expiration: number;
  inception: number;
  keyTag: number;
  signer: string;
  signature: Buffer;
  /** RRSIG RDATA without the signature, signer in canonical form (RFC 4034 §3.1.8.1) */
  signedPrefix: Buffer;
}
export interface Nsec {
  next: string;
  types: Set<number>;
}
export interface Nsec3 {
  hashAlgorithm: number;
  flags: number;
  iterations: number;
  salt: Buffer;
  nextHash: Buffer;
  types: Set<number>;
}

export const DNSKEY_ZONE = 0x0100; // RFC 4034 §2.1.1
export const DNSKEY_REVOKE = 0x0080; // RFC 5011 §3
export const DNSKEY_SEP = 0x0001;
export const NSEC3_OPT_OUT = 0x01; // RFC 5155 §3.1.2.1

/** RFC 4034 Appendix B (algorithm 1 is not supported, so its special case is not needed). */
export function keyTag(rdata: Buffer): number {
  let ac = 0;
  for (let i = 0; i < rdata.length; i++) ac += i & 1 ? rdata[i]! : rdata[i]! << 8;
  ac += (ac >> 16) & 0xffff;
  return ac & 0xffff;
}

export function parseDnskey(rdata: Buffer): Dnskey | undefined {
  if (rdata.length < 5) return undefined;
  return {
    flags: rdata.readUInt16BE(0),
    protocol: rdata[2]!,
    algorithm: rdata[3]!,
    publicKey: rdata.subarray(4),
    keyTag: keyTag(rdata),
    rdata,
  };
}

export function parseDs(rdata: Buffer): Ds | undefined {
  if (rdata.length < 5) return undefined;
  return { keyTag: rdata.readUInt16BE(0), algorithm: rdata[2]!, digestType: rdata[3]!, digest: rdata.subarray(4) };
}

/**
 * An uncompressed name in RDATA (RFC 4034 §3.1.7, §4.1.1 and RFC 3597 §4
 * forbid compression there). Returns the presentation name and its end.
 */
export function readPlainName(buf: Buffer, offset: number): { name: string; end: number } | undefined {
  const labels: string[] = [];
  let p = offset;
  let total = 1;
  for (;;) {
    if (p >= buf.length) return undefined;
    const len = buf[p]!;
    if (len === 0) break;
    if (len > 63) return undefined; // compression pointer or extended label: not allowed here
    if (p + 1 + len > buf.length) return undefined;
    total += len + 1;
    if (total > 255) return undefined;
    labels.push(
      buf
        .subarray(p + 1, p + 1 + len)
        .toString('latin1')
        .replace(/[A-Z]/g, (c) => c.toLowerCase()),
    );
    p += 1 + len;
  }
  return { name: joinLabels(labels), end: p + 1 };
}

export function parseRrsig(rdata: Buffer): Rrsig | undefined {
  if (rdata.length < 19) return undefined;
  const n = readPlainName(rdata, 18);
  if (!n || n.end >= rdata.length) return undefined;
  let signerWire: Buffer;
  try {
    signerWire = nameToWire(n.name);
  } catch {
    return undefined;
  }
  return {
    typeCovered: rdata.readUInt16BE(0),
    algorithm: rdata[2]!,
    labels: rdata[3]!,
    originalTtl: rdata.readUInt32BE(4),
    expiration: rdata.readUInt32BE(8),
    inception: rdata.readUInt32BE(12),
    keyTag: rdata.readUInt16BE(16),
    signer: n.name,
    signature: rdata.subarray(n.end),
    signedPrefix: Buffer.concat([rdata.subarray(0, 18), signerWire]),
  };
}

/** RFC 4034 §4.1.2: windows in increasing order, 1–32 octets each. */
export function parseTypeBitmap(buf: Buffer): Set<number> | undefined {
  const types = new Set<number>();
  let p = 0;
  let lastWindow = -1;
  while (p < buf.length) {
    if (p + 2 > buf.length) return undefined;
    const win = buf[p]!;
    const len = buf[p + 1]!;
    if (win <= lastWindow || len < 1 || len > 32 || p + 2 + len > buf.length) return undefined;
    lastWindow = win;
    for (let i = 0; i < len; i++) {
      const byte = buf[p + 2 + i]!;
      for (let bit = 0; bit < 8; bit++) if (byte & (0x80 >> bit)) types.add(win * 256 + i * 8 + bit);
    }
    p += 2 + len;
  }
  return types;
}

export function parseNsec(rdata: Buffer): Nsec | undefined {
  const n = readPlainName(rdata, 0);
  if (!n) return undefined;
  const types = parseTypeBitmap(rdata.subarray(n.end));
  return types ? { next: n.name, types } : undefined;
}

export function parseNsec3(rdata: Buffer): Nsec3 | undefined {
  if (rdata.length < 6) return undefined;
  const saltLen = rdata[4]!;
  let p = 5 + saltLen;
  if (p >= rdata.length) return undefined;
  const hashLen = rdata[p]!;
  if (hashLen < 1 || p + 1 + hashLen > rdata.length) return undefined;
  const nextHash = rdata.subarray(p + 1, p + 1 + hashLen);
  p += 1 + hashLen;
  const types = parseTypeBitmap(rdata.subarray(p));
  if (!types) return undefined;
  return { hashAlgorithm: rdata[0]!, flags: rdata[1]!, iterations: rdata.readUInt16BE(2), salt: rdata.subarray(5, 5 + saltLen), nextHash, types };
}

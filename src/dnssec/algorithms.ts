/**
 * DNSSEC signature algorithms and DS digests with node:crypto.
 *
 * RFC 8624 §3.1 validation column: MUST RSASHA1 (5), RSASHA1-NSEC3-SHA1 (7),
 * RSASHA256 (8), RSASHA512 (10), ECDSAP256SHA256 (13); RECOMMENDED
 * ECDSAP384SHA384 (14), ED25519 (15), ED448 (16). The issue listed only 8, 10
 * and 13–16; the RFC's column also makes 5 and 7 MUST for validators (their
 * deprecation drafts concern signing), so they are validated too — the RFC wins.
 * RSAMD5 (1), DSA (3, 6) and ECC-GOST (12) are not supported: a zone signed only
 * with them is insecure, not bogus (RFC 4035 §5.2, RFC 6840 §5.2).
 * DS digests (RFC 8624 §3.3): SHA-1 (1), SHA-256 (2), SHA-384 (4).
 */
import { createHash, createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { canonicalWire } from './names.js';

export const SUPPORTED_ALGORITHMS: ReadonlySet<number> = new Set([5, 7, 8, 10, 13, 14, 15, 16]);
export const SUPPORTED_DIGESTS: ReadonlySet<number> = new Set([1, 2, 4]);

export const ALGORITHM_NAMES: Record<number, string> = {
  1: 'RSAMD5',
  3: 'DSA',
  5: 'RSASHA1',
  6: 'DSA-NSEC3-SHA1',
  7: 'RSASHA1-NSEC3-SHA1',
  8: 'RSASHA256',
  10: 'RSASHA512',
  12: 'ECC-GOST',
  13: 'ECDSAP256SHA256',
  14: 'ECDSAP384SHA384',
  15: 'ED25519',
  16: 'ED448',
};
export const DIGEST_NAMES: Record<number, string> = { 1: 'SHA-1', 2: 'SHA-256', 3: 'GOST', 4: 'SHA-384' };

export function algorithmName(a: number): string {
  return ALGORITHM_NAMES[a] ?? `ALG${a}`;
}

/**
 * RSA moduli accepted: RFC 3110 §2 allows up to 4096 bits; larger keys only
 * cost verification time (a KeyTrap-style lever), smaller than 1024 are
 * breakable (RFC 8624 §3.1 note).
 */
const RSA_MIN_BITS = 1024;
const RSA_MAX_BITS = 4096;
/**
 * Public exponent octets accepted. RFC 3110 §2 allows up to 4096 bits, but
 * every signer uses 3 or 65537; a huge exponent only makes each verification
 * cost more (a KeyTrap-style lever), so such a key is treated as unsupported:
 * it validates nothing, like Unbound/OpenSSL's limits on RSA exponents.
 */
const RSA_MAX_EXPONENT_OCTETS = 4;

const b64u = (b: Buffer): string => b.toString('base64url');

/** Public key from DNSKEY key material, or undefined if it is malformed for the algorithm. */
export function publicKeyFor(algorithm: number, key: Buffer): KeyObject | undefined {
  try {
    switch (algorithm) {
      case 5:
      case 7:
      case 8:
      case 10: {
        // RFC 3110 §2: exponent length (1 octet, or 0 then 2 octets), exponent, modulus.
        if (key.length < 3) return undefined;
        let elen = key[0]!;
        let p = 1;
        if (elen === 0) {
          elen = key.readUInt16BE(1);
          p = 3;
        }
        if (elen === 0 || elen > RSA_MAX_EXPONENT_OCTETS || p + elen >= key.length) return undefined;
        const e = key.subarray(p, p + elen);
        const n = key.subarray(p + elen);
        if (n[0] === 0) return undefined; // leading zero octets would misstate the modulus size
        const bits = n.length * 8 - Math.clz32(n[0]!) + 24;
        if (bits < RSA_MIN_BITS || bits > RSA_MAX_BITS) return undefined;
        return createPublicKey({ key: { kty: 'RSA', n: b64u(n), e: b64u(e) }, format: 'jwk' });
      }
      case 13:
      case 14: {
        // RFC 6605 §4: the uncompressed point without its 0x04 prefix, x | y.
        const size = algorithm === 13 ? 32 : 48;
        if (key.length !== 2 * size) return undefined;
        return createPublicKey({
          key: { kty: 'EC', crv: algorithm === 13 ? 'P-256' : 'P-384', x: b64u(key.subarray(0, size)), y: b64u(key.subarray(size)) },
          format: 'jwk',
        });
      }
      case 15:
      case 16: {
        // RFC 8080 §3: the raw public key, 32 (Ed25519) or 57 (Ed448) octets.
        if (key.length !== (algorithm === 15 ? 32 : 57)) return undefined;
        return createPublicKey({ key: { kty: 'OKP', crv: algorithm === 15 ? 'Ed25519' : 'Ed448', x: b64u(key) }, format: 'jwk' });
      }
      default:
        return undefined;
    }
  } catch {
    return undefined;
  }
}

const keyCache = new Map<string, KeyObject | null>();
const KEY_CACHE_MAX = 1024;

function cachedKey(algorithm: number, key: Buffer): KeyObject | undefined {
  const id = `${algorithm}:${key.toString('base64')}`;
  let k = keyCache.get(id);
  if (k === undefined) {
    k = publicKeyFor(algorithm, key) ?? null;
    if (keyCache.size >= KEY_CACHE_MAX) keyCache.delete(keyCache.keys().next().value as string);
    keyCache.set(id, k);
  }
  return k ?? undefined;
}

/** Verify one signature; false for anything malformed or unsupported (never throws). */
export function verifySignature(algorithm: number, key: Buffer, data: Buffer, signature: Buffer): boolean {
  const pub = cachedKey(algorithm, key);
  if (!pub) return false;
  try {
    switch (algorithm) {
      case 5:
      case 7:
        return cryptoVerify('sha1', data, pub, signature); // RFC 3110 §3
      case 8:
        return cryptoVerify('sha256', data, pub, signature);
      case 10:
        return cryptoVerify('sha512', data, pub, signature);
      case 13:
        // RFC 6605 §4: r | s, each the curve size — IEEE P1363, not DER.
        return signature.length === 64 && cryptoVerify('sha256', data, { key: pub, dsaEncoding: 'ieee-p1363' }, signature);
      case 14:
        return signature.length === 96 && cryptoVerify('sha384', data, { key: pub, dsaEncoding: 'ieee-p1363' }, signature);
      case 15:
      case 16:
        return cryptoVerify(null, data, pub, signature);
      default:
        return false;
    }
  } catch {
    return false;
  }
}

/** RFC 4034 §5.1.4: digest = H(owner name in canonical wire form | DNSKEY RDATA). */
export function dsDigest(digestType: number, owner: string, dnskeyRdata: Buffer): Buffer | undefined {
  const alg = digestType === 1 ? 'sha1' : digestType === 2 ? 'sha256' : digestType === 4 ? 'sha384' : undefined;
  if (!alg) return undefined;
  return createHash(alg).update(canonicalWire(owner)).update(dnskeyRdata).digest();
}

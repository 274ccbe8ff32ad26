/**
 * DS → DNSKEY matching (RFC 4035 §5.2, RFC 4034 §5.1.4), pure.
 */
import { SUPPORTED_ALGORITHMS, SUPPORTED_DIGESTS, algorithmName, dsDigest, DIGEST_NAMES } from './algorithms.js';
import { MAX_KEYS_PER_SIGNATURE } from './budget.js';
import type { Dnskey, Ds } from './records.js';

export interface DsMatch {
  /** DNSKEYs whose digest equals a usable DS */
  keys: Dnskey[];
  /** one line per DS: what it matched, or why it was ignored */
  notes: Array<{ ok: boolean; text: string }>;
  /** true when at least one DS had a supported algorithm and digest */
  usable: boolean;
}

const show = (ds: Ds): string => `DS ${ds.keyTag}/${algorithmName(ds.algorithm)}/${DIGEST_NAMES[ds.digestType] ?? ds.digestType}`;

/**
 * DS records with an unsupported algorithm or digest are ignored. RFC 4509
 * §3: when SHA-256 (or stronger) DS records are present, SHA-1 ones are
 * ignored, so a forged SHA-1 collision cannot stand in for them. At most
 * MAX_KEYS_PER_SIGNATURE keys sharing one tag are hashed per DS.
 */
export function matchDs(zone: string, dsSet: Ds[], keys: Dnskey[]): DsMatch {
  const notes: DsMatch['notes'] = [];
  const supported = dsSet.filter((ds) => SUPPORTED_ALGORITHMS.has(ds.algorithm) && SUPPORTED_DIGESTS.has(ds.digestType));
  const strong = supported.some((ds) => ds.digestType !== 1);
  const out: Dnskey[] = [];
  for (const ds of dsSet) {
    if (!supported.includes(ds)) {
      notes.push({ ok: false, text: `${show(ds)} ignored: unsupported algorithm or digest` });
      continue;
    }
    if (strong && ds.digestType === 1) {
      notes.push({ ok: false, text: `${show(ds)} ignored: a SHA-256/384 DS is present (RFC 4509 §3)` });
      continue;
    }
    let tried = 0;
    let matched = false;
    for (const k of keys) {
      if (k.keyTag !== ds.keyTag || k.algorithm !== ds.algorithm || k.protocol !== 3) continue;
      if (++tried > MAX_KEYS_PER_SIGNATURE) break;
      const d = dsDigest(ds.digestType, zone, k.rdata);
      if (d?.equals(ds.digest)) {
        matched = true;
        if (!out.includes(k)) out.push(k);
        notes.push({ ok: true, text: `${show(ds)} matches DNSKEY ${k.keyTag}` });
      }
    }
    if (!matched) notes.push({ ok: false, text: `${show(ds)} matches no DNSKEY` });
  }
  return { keys: out, notes, usable: supported.length > 0 };
}

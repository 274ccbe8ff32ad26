/**
 * RRset signature validation (RFC 4035 §5.3) against the validated DNSKEYs of
 * one zone, within the lookup's work budget.
 */
import { SUPPORTED_ALGORITHMS, algorithmName, verifySignature } from './algorithms.js';
import { type Budget, MAX_KEYS_PER_SIGNATURE, MAX_SIGNATURES_PER_RRSET } from './budget.js';
import { signedData, signedOwner, type RawRr } from './canonical.js';
import { isAtOrBelow } from './names.js';
import { DNSKEY_REVOKE, DNSKEY_ZONE, type Dnskey, type Rrsig } from './records.js';

/**
 * Clock skew tolerated at both ends of a signature's validity window. RFC
 * 4035 §5.3.1 asks for the exact window; resolvers allow a little (Unbound
 * val-sig-skew-min is one hour) so a slightly wrong clock on either side does
 * not make whole zones bogus. Five minutes keeps the window near exact.
 */
export const CLOCK_SKEW_SECONDS = 300;

export interface RRset {
  name: string;
  typeCode: number;
  class: number;
  rrs: RawRr[];
  sigs: Rrsig[];
}
export interface ZoneKeys {
  zone: string;
  keys: Dnskey[];
}

export type VerifyResult = { ok: true; ttl: number; sig: Rrsig; key: Dnskey; wildcard: boolean } | { ok: false; reason: string };

/** RFC 4034 §3.1.5 / RFC 1982: signed difference of two 32-bit serial times. */
export function serialDelta(t: number, now: number): number {
  return ((t >>> 0) - (now >>> 0)) | 0;
}

/** Why a signature's time window excludes `now` (seconds), if it does. */
export function windowProblem(sig: Rrsig, now: number): string | undefined {
  if (serialDelta(sig.inception, now) > CLOCK_SKEW_SECONDS) return `not valid before ${iso(sig.inception, now)}`;
  if (serialDelta(sig.expiration, now) < -CLOCK_SKEW_SECONDS) return `expired ${iso(sig.expiration, now)}`;
  return undefined;
}

function iso(t: number, now: number): string {
  return new Date((now + serialDelta(t, now)) * 1000).toISOString();
}

/** Keys of the zone usable for `sig`: zone key, protocol 3, not revoked, same algorithm and tag. */
export function candidateKeys(zone: ZoneKeys, sig: Rrsig): Dnskey[] {
  return zone.keys.filter(
    (k) => k.keyTag === sig.keyTag && k.algorithm === sig.algorithm && k.protocol === 3 && (k.flags & DNSKEY_ZONE) !== 0 && (k.flags & DNSKEY_REVOKE) === 0,
  );
}

/** RFC 4035 §5.3.1–5.3.3; yields every YIELD_EVERY verifications (`Budget.pace`). */
export async function verifyRRset(rrset: RRset, zone: ZoneKeys, now: number, budget: Budget): Promise<VerifyResult> {
  if (rrset.sigs.length === 0) return { ok: false, reason: 'no RRSIG' };
  const reasons: string[] = [];
  let considered = 0;
  for (const sig of rrset.sigs) {
    if (sig.signer !== zone.zone) {
      reasons.push(`RRSIG by ${sig.signer}, not ${zone.zone}`);
      continue;
    }
    if (!isAtOrBelow(rrset.name, sig.signer)) {
      reasons.push(`signer ${sig.signer} is not an ancestor of ${rrset.name}`);
      continue;
    }
    if (!SUPPORTED_ALGORITHMS.has(sig.algorithm)) {
      reasons.push(`algorithm ${algorithmName(sig.algorithm)} not supported`);
      continue;
    }
    const owner = signedOwner(rrset.name, sig);
    if (owner === undefined) {
      reasons.push(`RRSIG labels ${sig.labels} exceeds the owner's`);
      continue;
    }
    const w = windowProblem(sig, now);
    if (w) {
      reasons.push(`RRSIG ${sig.keyTag}/${algorithmName(sig.algorithm)} ${w}`);
      continue;
    }
    const keys = candidateKeys(zone, sig);
    if (keys.length === 0) {
      reasons.push(`no DNSKEY with tag ${sig.keyTag} and algorithm ${algorithmName(sig.algorithm)}`);
      continue;
    }
    if (++considered > MAX_SIGNATURES_PER_RRSET) {
      reasons.push(`more than ${MAX_SIGNATURES_PER_RRSET} RRSIGs tried`);
      break;
    }
    const data = signedData(rrset.rrs, sig, owner);
    let tried = 0;
    for (const key of keys) {
      if (++tried > MAX_KEYS_PER_SIGNATURE) {
        reasons.push(`more than ${MAX_KEYS_PER_SIGNATURE} keys share tag ${sig.keyTag}`);
        break;
      }
      await budget.pace();
      budget.spendVerification();
      if (verifySignature(sig.algorithm, key.publicKey, data, sig.signature)) {
        const untilExpiry = Math.max(0, serialDelta(sig.expiration, now));
        const ttl = Math.min(sig.originalTtl, untilExpiry, ...rrset.rrs.map((r) => r.ttl));
        return { ok: true, ttl, sig, key, wildcard: owner !== rrset.name };
      }
    }
    if (tried <= MAX_KEYS_PER_SIGNATURE) reasons.push(`RRSIG ${sig.keyTag}/${algorithmName(sig.algorithm)} does not verify`);
  }
  return { ok: false, reason: reasons.join('; ') || 'no usable RRSIG' };
}

/**
 * The data an RRSIG signs (RFC 4034 §3.1.8.1, §6.2, §6.3):
 *   RRSIG_RDATA(without signature) | RR(1) | RR(2) | ...
 * with each RR as owner | type | class | original TTL | RDLENGTH | RDATA,
 * RRs sorted by canonical RDATA, duplicates removed, owner lowercased, and
 * a wildcard-expanded owner replaced by "*." + the rightmost Labels labels
 * (RFC 4035 §5.3.2).
 */
import { canonicalWire, labelCount, suffix } from './names.js';
import type { Rrsig } from './records.js';

export interface RawRr {
  name: string;
  typeCode: number;
  class: number;
  ttl: number;
  rdata: Buffer;
}

/** The owner name the signature was made over, or undefined if Labels is impossible for this owner. */
export function signedOwner(owner: string, sig: Rrsig): string | undefined {
  const n = labelCount(owner);
  if (sig.labels > n) return undefined; // RFC 4035 §5.3.1
  if (sig.labels === n) return owner;
  return sig.labels === 0 ? '*' : `*.${suffix(owner, sig.labels)}`;
}

export function signedData(rrs: RawRr[], sig: Rrsig, owner: string): Buffer {
  const ownerWire = canonicalWire(owner);
  const sorted = [...rrs].map((r) => r.rdata).sort(Buffer.compare);
  const parts: Buffer[] = [sig.signedPrefix];
  let prev: Buffer | undefined;
  for (const rdata of sorted) {
    if (prev?.equals(rdata)) continue;
    prev = rdata;
    const fixed = Buffer.alloc(10);
    fixed.writeUInt16BE(rrs[0]!.typeCode, 0);
    fixed.writeUInt16BE(rrs[0]!.class, 2);
    fixed.writeUInt32BE(sig.originalTtl, 4);
    fixed.writeUInt16BE(rdata.length, 8);
    parts.push(ownerWire, fixed, rdata);
  }
  return Buffer.concat(parts);
}

/** Group a message section into RRsets with the RRSIGs that cover them (RFC 4034 §3, RFC 2181 §5). */
import { CLASS_IN, TYPE_CODES, type WireRr } from '../dns/wire.js';
import type { RawRr } from './canonical.js';
import { parseRrsig } from './records.js';
import type { RRset } from './verify.js';

/**
 * RRsets of the IN class, keyed "owner|type". RRSIGs that do not parse are
 * dropped (they cannot validate anything). Records without canonical RDATA
 * (not decoded by wire.ts) are skipped.
 */
export function groupRRsets(section: WireRr[]): Map<string, RRset> {
  const sets = new Map<string, RRset>();
  const get = (name: string, typeCode: number): RRset => {
    const k = `${name}|${typeCode}`;
    let s = sets.get(k);
    if (!s) {
      s = { name, typeCode, class: CLASS_IN, rrs: [], sigs: [] };
      sets.set(k, s);
    }
    return s;
  };
  for (const rr of section) {
    if (rr.class !== CLASS_IN || !rr.rdata) continue;
    if (rr.typeCode === TYPE_CODES.RRSIG) {
      const sig = parseRrsig(rr.rdata);
      if (sig) get(rr.name, sig.typeCovered).sigs.push(sig);
      continue;
    }
    const raw: RawRr = { name: rr.name, typeCode: rr.typeCode, class: rr.class, ttl: rr.ttl, rdata: rr.rdata };
    get(rr.name, rr.typeCode).rrs.push(raw);
  }
  for (const [k, s] of sets) if (s.rrs.length === 0) sets.delete(k); // signatures over nothing
  return sets;
}

export function rrsetsOfType(sets: Map<string, RRset>, typeCode: number): RRset[] {
  return [...sets.values()].filter((s) => s.typeCode === typeCode);
}

/**
 * Denial of existence with NSEC (RFC 4035 §3.1.3, §5.4; RFC 6840 §4.1, §4.3).
 * Inputs are NSEC records already validated as signed by `zone`.
 */
import { TYPE_CODES } from '../dns/wire.js';
import { commonAncestor, compareNames, isAtOrBelow, labelCount, suffix } from './names.js';
import type { Nsec } from './records.js';

export interface OwnedNsec {
  owner: string;
  nsec: Nsec;
}
export type Proof = { ok: true; detail: string; insecure?: boolean } | { ok: false; reason: string };

const T = TYPE_CODES;

/**
 * True when this NSEC proves that nothing exists at `name`: owner < name <
 * next in canonical order, or, for the last NSEC of the zone (next is the
 * apex), owner < name. RFC 6840 §4.1: an NSEC at a delegation point (NS
 * without SOA) or a DNAME says nothing about names below its owner.
 */
export function nsecCovers(n: OwnedNsec, name: string, zone: string): boolean {
  if (!isAtOrBelow(name, zone) || !isAtOrBelow(n.owner, zone)) return false;
  if (compareNames(n.owner, name) >= 0) return false;
  const last = compareNames(n.nsec.next, n.owner) <= 0;
  if (!last && compareNames(name, n.nsec.next) >= 0) return false;
  if (isAtOrBelow(name, n.owner)) {
    const t = n.nsec.types;
    if ((t.has(T.NS) && !t.has(T.SOA)) || t.has(T.DNAME)) return false;
  }
  return true;
}

/** RFC 4035 §5.4 closest encloser: the longer common ancestor of name with the NSEC's owner or next name. */
function closestEncloser(n: OwnedNsec, name: string): string {
  const a = commonAncestor(name, n.owner);
  const b = commonAncestor(name, n.nsec.next);
  return labelCount(a) >= labelCount(b) ? a : b;
}

function wildcardOf(ce: string): string {
  return ce === '.' ? '*' : `*.${ce}`;
}

function show(n: OwnedNsec): string {
  return `NSEC ${n.owner} -> ${n.nsec.next}`;
}

/** Whether the type bitmap at `name` may deny `qtype` (RFC 4035 §5.4; RFC 6840 §4.1, §4.3). */
function deniesType(n: OwnedNsec, qtype: number, name: string, zone: string): string | undefined {
  const t = n.nsec.types;
  if (t.has(qtype)) return `${show(n)} lists the type`;
  if (t.has(T.CNAME)) return `${show(n)} has a CNAME`;
  if (qtype === T.DS) {
    if (t.has(T.SOA) && name !== '.') return `${show(n)} is the child zone's apex NSEC, it cannot deny DS`;
  } else if (t.has(T.NS) && !t.has(T.SOA) && name !== zone) {
    return `${show(n)} is from the parent side of a delegation`;
  }
  return undefined;
}

export function proveNxdomain(nsecs: OwnedNsec[], qname: string, zone: string): Proof {
  const cover = nsecs.find((n) => nsecCovers(n, qname, zone));
  if (!cover) return { ok: false, reason: `no NSEC covers ${qname}` };
  // A next name below qname means qname is an empty non-terminal: it exists, so this is no NXDOMAIN proof.
  if (isAtOrBelow(cover.nsec.next, qname)) return { ok: false, reason: `${show(cover)}: ${qname} is an empty non-terminal, it exists` };
  const ce = closestEncloser(cover, qname);
  if (ce === qname || !isAtOrBelow(qname, ce)) return { ok: false, reason: `closest encloser ${ce} is not a proper ancestor of ${qname}` };
  if (!isAtOrBelow(ce, zone)) return { ok: false, reason: `closest encloser ${ce} is outside ${zone}` };
  const wc = wildcardOf(ce);
  const wcover = nsecs.find((n) => nsecCovers(n, wc, zone));
  if (!wcover) return { ok: false, reason: `no NSEC denies the wildcard ${wc}` };
  return { ok: true, detail: `${show(cover)} covers ${qname}; ${show(wcover)} covers ${wc}` };
}

export function proveNodata(nsecs: OwnedNsec[], qname: string, qtype: number, zone: string): Proof {
  const match = nsecs.find((n) => n.owner === qname);
  if (match) {
    const why = deniesType(match, qtype, qname, zone);
    if (why) return { ok: false, reason: why };
    return { ok: true, detail: `${show(match)} at ${qname} does not list the type` };
  }
  const cover = nsecs.find((n) => nsecCovers(n, qname, zone));
  if (!cover) return { ok: false, reason: `no NSEC matches or covers ${qname}` };
  // Empty non-terminal (RFC 4035 §3.1.3.2 note, RFC 5155 §7.2.3 analogue): the next name is below qname.
  if (isAtOrBelow(cover.nsec.next, qname) && cover.nsec.next !== qname) {
    return { ok: true, detail: `${show(cover)}: ${qname} is an empty non-terminal` };
  }
  // Wildcard NODATA (RFC 4035 §3.1.3.4): qname does not exist, the wildcard exists without the type.
  const ce = closestEncloser(cover, qname);
  const wc = wildcardOf(ce);
  const wmatch = nsecs.find((n) => n.owner === wc);
  if (!wmatch) return { ok: false, reason: `${show(cover)} shows ${qname} does not exist, but the answer was NODATA` };
  const why = deniesType(wmatch, qtype, wc, zone);
  if (why) return { ok: false, reason: why };
  return { ok: true, detail: `${show(cover)} covers ${qname}; ${show(wmatch)} at the wildcard does not list the type` };
}

/**
 * RFC 4035 §5.3.4: an answer synthesised from a wildcard is only valid with
 * an NSEC proving that `qname` itself does not exist (no closer match), and
 * the wildcard the RRSIG's Labels field names must be the one at the closest
 * encloser that NSEC implies (as Unbound's val_nsec_proves_positive_wildcard):
 * otherwise an expansion of `*.example.com` could be replayed for a name
 * under `b.example.com`, which has its own wildcard or names.
 */
export function proveWildcardAnswer(nsecs: OwnedNsec[], qname: string, zone: string, sigLabels: number): Proof {
  if (sigLabels < labelCount(zone)) return { ok: false, reason: `RRSIG labels ${sigLabels} put the wildcard above the zone ${zone}` };
  if (sigLabels >= labelCount(qname)) return { ok: false, reason: `RRSIG labels ${sigLabels} do not make ${qname} a wildcard expansion` };
  const wce = suffix(qname, sigLabels);
  const cover = nsecs.find((n) => nsecCovers(n, qname, zone) && !isAtOrBelow(n.nsec.next, qname));
  if (!cover) return { ok: false, reason: `wildcard answer for ${qname} without an NSEC covering it` };
  const ce = closestEncloser(cover, qname);
  if (ce !== wce) return { ok: false, reason: `${show(cover)} puts the closest encloser of ${qname} at ${ce}, but the RRSIG is from the wildcard at ${wce}` };
  return { ok: true, detail: `${show(cover)} covers ${qname}, closest encloser ${ce}: wildcard expansion of ${wildcardOf(ce)} is legitimate` };
}

export type CutProof =
  | { kind: 'insecure'; detail: string; reason: 'unsigned-delegation' | 'opt-out' }
  | { kind: 'not-a-cut' | 'nonexistent'; detail: string }
  | { kind: 'bogus'; detail: string };

/**
 * A DS query for `name` in `zone` came back without DS (RFC 4035 §5.2):
 * NS without DS and SOA proves an unsigned delegation (insecure); a match
 * without NS, or an empty non-terminal, is not a zone cut; a covering NSEC
 * proves the name does not exist.
 */
export function nsecCut(nsecs: OwnedNsec[], name: string, zone: string): CutProof {
  const match = nsecs.find((n) => n.owner === name);
  if (match) {
    const t = match.nsec.types;
    if (t.has(T.DS)) return { kind: 'bogus', detail: `${show(match)} lists DS but no DS was given` };
    if (t.has(T.SOA)) return { kind: 'bogus', detail: `${show(match)} is the child's apex NSEC, it cannot deny DS` };
    if (t.has(T.NS)) return { kind: 'insecure', reason: 'unsigned-delegation', detail: `${show(match)}: delegation without DS` };
    return { kind: 'not-a-cut', detail: `${show(match)}: no NS, not a zone cut` };
  }
  const cover = nsecs.find((n) => nsecCovers(n, name, zone));
  if (!cover) return { kind: 'bogus', detail: `no NSEC matches or covers ${name}` };
  if (isAtOrBelow(cover.nsec.next, name)) return { kind: 'not-a-cut', detail: `${show(cover)}: ${name} is an empty non-terminal` };
  return { kind: 'nonexistent', detail: `${show(cover)}: ${name} does not exist` };
}

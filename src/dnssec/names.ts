/**
 * Domain names as DNSSEC sees them: label counts, canonical ordering
 * (RFC 4034 §6.1) and canonical wire form (RFC 4034 §6.2). Names are the
 * canonical presentation strings of src/dns/wire.ts (lowercase, no trailing
 * dot, "." for the root).
 */
import { nameToWire } from '../dns/wire.js';
import { asciiLower, isAtOrBelow, splitName } from '../dns/name.js';

export { isAtOrBelow };

/** Labels of a name, leftmost first, as latin1 octet strings. */
export function labelsOf(name: string): string[] {
  return splitName(name);
}

/** Number of labels, not counting the root (RRSIG Labels field, RFC 4034 §3.1.3). */
export function labelCount(name: string): number {
  return splitName(name).length;
}

/**
 * Name from raw labels, in the same presentation form src/dns/wire.ts
 * produces (RFC 1035 §5.1: `\.`, `\\`, `\DDD` for non-printable octets), so
 * names built here compare equal as strings with decoded ones.
 */
export function joinLabels(labels: string[]): string {
  if (labels.length === 0) return '.';
  return labels.map(labelText).join('.');
}

function labelText(l: string): string {
  let s = '';
  for (let i = 0; i < l.length; i++) {
    const b = l.charCodeAt(i) & 0xff;
    if (b === 0x2e || b === 0x5c) s += '\\' + String.fromCharCode(b);
    else if (b > 0x20 && b < 0x7f) s += String.fromCharCode(b);
    else s += '\\' + String(b).padStart(3, '0');
  }
  return s;
}

/** The parent name ("." for a TLD); undefined for the root. */
export function parentOf(name: string): string | undefined {
  const l = splitName(name);
  if (l.length === 0) return undefined;
  return joinLabels(l.slice(1));
}

/** The rightmost `n` labels of `name`. */
export function suffix(name: string, n: number): string {
  const l = splitName(name);
  return joinLabels(l.slice(Math.max(0, l.length - n)));
}

/** The name one label longer than `ancestor` on the way to `name` (name must be below ancestor). */
export function childToward(name: string, ancestor: string): string {
  return suffix(name, labelCount(ancestor) + 1);
}

/** Lowercase uncompressed wire form (RFC 4034 §6.2). */
export function canonicalWire(name: string): Buffer {
  return nameToWire(name === '.' ? '.' : asciiLower(name));
}

/**
 * RFC 4034 §6.1 canonical order: compare label by label from the right, each
 * label as lowercase octets; a name sorts before its descendants.
 */
export function compareNames(a: string, b: string): number {
  const la = splitName(asciiLower(a));
  const lb = splitName(asciiLower(b));
  for (let i = 1; i <= Math.min(la.length, lb.length); i++) {
    const x = Buffer.from(la[la.length - i]!, 'latin1');
    const y = Buffer.from(lb[lb.length - i]!, 'latin1');
    const c = Buffer.compare(x, y);
    if (c !== 0) return c;
  }
  return la.length - lb.length;
}

/** Longest common ancestor of two names. */
export function commonAncestor(a: string, b: string): string {
  const la = splitName(a);
  const lb = splitName(b);
  let n = 0;
  while (n < la.length && n < lb.length && la[la.length - 1 - n] === lb[lb.length - 1 - n]) n++;
  return joinLabels(la.slice(la.length - n));
}

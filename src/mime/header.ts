/**
 * Header fields as the 7-bit conversion needs them (RFC 5322 §2.2, RFC 2045): the MIME fields'
 * values, and folding of over-long lines at existing white space (§2.2.3: unfolding removes the
 * inserted CRLF, so the field's value is unchanged). Nothing here decodes or re-encodes a value:
 * header fields are never converted.
 */
import { MAX_LINE_OCTETS } from './scan.js';

export interface HeaderField {
  /** lower case, "" for lines that belong to no field (a continuation before any field) */
  name: string;
  /** the field's physical lines, without their CRLF */
  lines: Buffer[];
}

/** "Name:" where the name is RFC 5322 ftext (33…126 except ":"); undefined for anything else. */
export function fieldName(line: Buffer): string | undefined {
  const colon = line.indexOf(0x3a);
  if (colon <= 0) return undefined;
  for (let i = 0; i < colon; i++) {
    const c = line[i]!;
    if (c < 0x21 || c > 0x7e) return undefined;
  }
  return line.toString('latin1', 0, colon).toLowerCase();
}

/** The unfolded value of a field (after the colon), trimmed; octets as latin1 so nothing is lost. */
export function fieldValue(f: HeaderField): string {
  const raw = f.lines.map((l) => l.toString('latin1')).join('');
  return raw.slice(raw.indexOf(':') + 1).trim();
}

export interface ContentType {
  type: string;
  subtype: string;
  params: Map<string, string>;
}

/** RFC 2045 §5.1 Content-Type: type "/" subtype *(";" parameter); comments are not expected here. */
export function parseContentType(value: string): ContentType | undefined {
  const m = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*\/\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*(.*)$/s.exec(value);
  if (!m) return undefined;
  const params = new Map<string, string>();
  let rest = m[3]!;
  for (;;) {
    const p = /^;\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*/.exec(rest);
    if (!p) break;
    rest = rest.slice(p[0].length);
    let v: string;
    if (rest.startsWith('"')) {
      let i = 1;
      v = '';
      while (i < rest.length && rest[i] !== '"') {
        if (rest[i] === '\\' && i + 1 < rest.length) i++;
        v += rest[i++];
      }
      rest = rest.slice(i + 1);
    } else {
      const t = /^[^\s;()<>@,:\\"/[\]?=]*/.exec(rest)![0];
      v = t;
      rest = rest.slice(t.length);
    }
    const name = p[1]!.toLowerCase();
    if (!params.has(name)) params.set(name, v);
    rest = rest.replace(/^\s+/, '');
  }
  return { type: m[1]!.toLowerCase(), subtype: m[2]!.toLowerCase(), params };
}

/** RFC 2046 §5.1.1: 1 to 70 characters from bchars, not ending in a space. */
export function validBoundary(b: string): boolean {
  return /^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$/.test(b);
}

const isWsp = (c: number | undefined): boolean => c === 0x20 || c === 0x09;

/**
 * Folds one header line longer than 998 octets at white space that is already there: a CRLF is
 * put before a space or tab (RFC 5322 §2.2.3), each piece ≤ 998 octets and none made of white
 * space only. undefined when the line has no such place (then it cannot be sent as it is).
 */
export function foldLine(line: Buffer): Buffer[] | undefined {
  const out: Buffer[] = [];
  let rest = line;
  while (rest.length > MAX_LINE_OCTETS) {
    let firstVisible = 0;
    while (firstVisible < rest.length && isWsp(rest[firstVisible])) firstVisible++;
    // the last white space at or before the limit with something visible before it
    let cut = -1;
    for (let j = MAX_LINE_OCTETS; j > firstVisible; j--) {
      if (isWsp(rest[j])) {
        cut = j;
        break;
      }
    }
    if (cut < 0) return undefined;
    out.push(rest.subarray(0, cut));
    rest = rest.subarray(cut);
  }
  out.push(rest);
  return out;
}

/**
 * The TXT record grammar RFC 8460 §3 (TLSRPT) and RFC 8461 §3.1 (MTA-STS) share: a version tag
 * first, then `name=value` fields separated by `*WSP ";" *WSP`, an optional trailing `;`, extension
 * fields `(ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")` "=" `1*(%x21-3A / %x3C / %x3E-7E)`.
 * Pure; each caller checks the values of its own fields and decides what a repeated field means.
 */

const FIELD_DELIM = /[ \t]*;[ \t]*/;
const EXT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
const EXT_VALUE = /^[\x21-\x3a\x3c\x3e-\x7e]+$/;

export interface TxtField {
  name: string;
  value: string;
}
export type TxtFields = { ok: true; fields: TxtField[] } | { ok: false; why: string };

/**
 * `record` (the strings of one TXT RR joined without spaces) → its fields after `version`, in order.
 * `version` must be first, case-sensitive, followed by a delimiter; a field without `=` or with an empty
 * name is malformed. `known` names are returned unchecked (the caller checks their values); every other
 * field must be a well-formed extension, which is returned too (callers ignore it).
 */
export function parseTxtFields(record: string, version: string, known: readonly string[]): TxtFields {
  if (!record.startsWith(version)) return { ok: false, why: `does not start with ${version}` };
  const parts = record.slice(version.length).split(FIELD_DELIM);
  // parts[0] is what sat between the version and the first ';' (must be empty).
  if (parts[0] !== '') return { ok: false, why: `unexpected text after ${version}: ${JSON.stringify(parts[0])}` };
  if (parts.length < 2) return { ok: false, why: 'no fields after the version' };
  const fields: TxtField[] = [];
  for (let i = 1; i < parts.length; i++) {
    const f = parts[i]!;
    if (f === '' && i === parts.length - 1) continue; // trailing ";"
    const eq = f.indexOf('=');
    if (eq <= 0) return { ok: false, why: `malformed field ${JSON.stringify(f)}` };
    const name = f.slice(0, eq);
    const value = f.slice(eq + 1);
    if (!known.includes(name) && (!EXT_NAME.test(name) || !EXT_VALUE.test(value))) {
      return { ok: false, why: `malformed extension field ${JSON.stringify(f)}` };
    }
    fields.push({ name, value });
  }
  return { ok: true, fields };
}

/**
 * The RRset → the one record of this kind: records not beginning with the literal `prefix` (the
 * version and its `;`) are dropped, exactly one must remain (RFC 8460 §3, RFC 8461 §3.1). The prefix
 * test comes first, as in both RFCs' prose, so `v=STSv1 ;` is no record at all although the ABNF
 * alone would accept it.
 */
export function pickVersionedRecord(txts: readonly string[], prefix: string): { ok: true; record: string } | { ok: false; why: string } {
  const candidates = txts.filter((t) => t.startsWith(prefix));
  const tag = prefix.replace(/;$/, '');
  if (candidates.length === 0) return { ok: false, why: `no ${tag} record` };
  if (candidates.length > 1) return { ok: false, why: `${candidates.length} ${tag} records (exactly one allowed)` };
  return { ok: true, record: candidates[0]! };
}

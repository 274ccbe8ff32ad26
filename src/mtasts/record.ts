/**
 * MTA-STS discovery record (RFC 8461 §3.1, digest STS-1…5): TXT at `_mta-sts.<domain>`.
 * Pure: the RRset (each record's strings already joined without spaces, STS-2) → the policy id.
 */
import { parseTxtFields, pickVersionedRecord } from '../dns/txtFields.js';

export type StsRecord = { ok: true; id: string } | { ok: false; why: string };

/** STS-4: `id` = 1*32(ALPHA / DIGIT), case-sensitive name. */
const ID = /^[A-Za-z0-9]{1,32}$/;

/** The owner name of the discovery record (STS-1): the Policy Domain itself, never its parent. */
export function stsRecordName(policyDomain: string): string {
  return `_mta-sts.${policyDomain}`;
}

/**
 * One record → its id (STS-4): `v=STSv1` first and case-sensitive, `id=` exactly once with 1–32
 * letters or digits, extension fields (well-formed) ignored, a trailing `;` allowed, US-ASCII only.
 * A second `id` field makes the record invalid (derived: the ABNF admits it, but which id would be
 * meant is unknowable, and an unusable record only means "no live record", STS-5).
 */
export function parseStsRecord(record: string): StsRecord {
  if (!/^[\t\x20-\x7e]*$/.test(record)) return { ok: false, why: 'not printable US-ASCII' };
  const parsed = parseTxtFields(record, 'v=STSv1', ['id']);
  if (!parsed.ok) return parsed;
  const ids = parsed.fields.filter((f) => f.name === 'id');
  if (ids.length === 0) return { ok: false, why: 'no id field' };
  if (ids.length > 1) return { ok: false, why: 'id given more than once' };
  const id = ids[0]!.value;
  if (!ID.test(id)) return { ok: false, why: `id ${JSON.stringify(id)} is not 1 to 32 letters or digits` };
  return { ok: true, id };
}

/**
 * The TXT RRset → the id (STS-3): records not beginning with the literal `v=STSv1;` are dropped; if
 * not exactly one is left, or it does not parse, the domain has no (live) record. The prefix test is
 * applied first, so `v=STSv1 ;` is no record (the digest's trap, RFC 8461 errata 6285).
 */
export function parseStsTxt(txts: readonly string[]): StsRecord {
  const one = pickVersionedRecord(txts, 'v=STSv1;');
  return one.ok ? parseStsRecord(one.record) : one;
}

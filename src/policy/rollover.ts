/**
 * Rollover risk (pure): is this destination one certificate renewal away from failing DANE?
 *
 * RFC 7671 §8.1 and §8.4 (digest background: Dukhovni "publish current + next"): a TLSA RRset
 * should survive the next change of the server key or of the issuing CA. Which records survive
 * what, assuming a renewal may change the key (Let's Encrypt clients do by default):
 *
 * - a leaf renewal keeps working only through a DANE-TA record matching an issuer (depth ≥ 1)
 *   that is not itself about to be replaced, or through a usable record that matches nothing
 *   presented now (taken to be the pre-published next key / next CA);
 * - a replacement of the issuer matched by a `2 x x` record keeps working through a `3 1 x`
 *   on the leaf key (Dukhovni: "if the CA key changes, keep the same EE key"), a `2 x x` on a
 *   certificate higher in the chain that is not expiring, or a pre-published record.
 *
 * `warning` findings are within `warnMs` of the expiry that forces the change (logged and counted
 * as RelayEvents.rolloverWarning); `advice` findings are structural (only `check` shows them).
 *
 * Which records count (our rule, RFC 7672 §3.1.1 / RFC 7671 §8):
 * - a record authenticates now only as its usage allows: a DANE-EE (`3 x x`) record matches the
 *   leaf or nothing; one whose data equals an intermediate's (depth ≥ 1) counts as non-matching;
 * - a usable non-matching record is taken as the pre-published next key / CA (and suppresses the
 *   warnings) only if it describes no presented certificate (a misplaced `3 x x` on an intermediate
 *   is not a next key) and it is not stale: a record that this MX's certificates matched in an
 *   earlier session and no longer match is the previous key's record left behind (`retired`, kept
 *   by MxFactsStore), not a new one. Without history (one-shot `check`) nothing is retired.
 */
import type { DaneFacts } from '../dane/types.js';

export type RolloverKind =
  /** only DANE-EE records on the current key (3 1 x); leaf expires soon */
  | 'ee-key-expiring'
  /** only a DANE-EE record on the whole certificate (3 0 x); any renewal breaks it; leaf expires soon */
  | 'ee-cert-expiring'
  /** a DANE-TA record pins an issuer certificate that expires soon, nothing else would match its successor */
  | 'ta-expiring'
  /** structural: DANE-EE only, no second record for the next key */
  | 'ee-no-next-key'
  /** structural: DANE-TA on an intermediate only, no record for its successor */
  | 'ta-no-successor';

export interface RolloverFinding {
  kind: RolloverKind;
  severity: 'warning' | 'advice';
  /** index of the record concerned in the TLSA RRset */
  record: number;
  /** chain depth of the certificate concerned */
  depth: number;
  /** that certificate's notAfter (ISO) */
  expires: string;
  detail: string;
}

const DAY = 86_400_000;

/** Does this record authenticate the presented chain as its usage allows (DANE-EE: the leaf only)? */
export function authenticates(r: DaneFacts['records'][number]): boolean {
  return r.matchDepth !== null && !(r.usage === 3 && r.matchDepth > 0);
}

export function assessRollover(facts: DaneFacts, now: number, warnMs: number, opts: { retired?: ReadonlySet<number> } = {}): RolloverFinding[] {
  const usable = facts.records.filter((r) => r.usable);
  const matching = usable.filter(authenticates);
  if (matching.length === 0) return []; // nothing authenticates now: that is a failure, not a rollover risk
  const certAt = (d: number) => facts.chain.find((c) => c.depth === d);
  const expiresSoon = (d: number): boolean => {
    const c = certAt(d);
    return !!c && Date.parse(c.notAfter) - now <= warnMs;
  };
  const days = (d: number): string => {
    const c = certAt(d);
    if (!c) return 'unknown';
    const n = Math.floor((Date.parse(c.notAfter) - now) / DAY);
    return n < 0 ? `expired ${-n} day(s) ago` : `expires in ${n} day(s) (${c.notAfter})`;
  };
  const spare = usable.some((r) => r.matchDepth === null && !opts.retired?.has(r.index));
  if (spare) return []; // a pre-published record for the next key or CA exists
  const out: RolloverFinding[] = [];
  const tail = (r: { usage: number; selector: number; matchingType: number }) => `${r.usage} ${r.selector} ${r.matchingType}`;

  // Leaf renewal.
  const ee = matching.filter((r) => r.usage === 3 || (r.usage === 2 && r.matchDepth === 0));
  const taAbove = matching.filter((r) => r.usage === 2 && r.matchDepth! >= 1 && !expiresSoon(r.matchDepth!));
  if (ee.length > 0 && taAbove.length === 0) {
    const keyPinned = ee.find((r) => r.selector === 1);
    const r = keyPinned ?? ee[0]!;
    const soon = expiresSoon(0);
    const c = certAt(0);
    if (c) {
      if (soon) {
        out.push({
          kind: keyPinned ? 'ee-key-expiring' : 'ee-cert-expiring',
          severity: 'warning',
          record: r.index,
          depth: 0,
          expires: c.notAfter,
          detail: keyPinned
            ? `only ${tail(r)} on the current key matches and the certificate ${days(0)}: a renewal with a new key fails DANE unless the next key's record is published first`
            : `only ${tail(r)} on the whole certificate matches and it ${days(0)}: every renewal fails DANE unless the new record is published first`,
        });
      } else if (ee.every((x) => x.usage === 3)) {
        out.push({
          kind: 'ee-no-next-key',
          severity: 'advice',
          record: r.index,
          depth: 0,
          expires: c.notAfter,
          detail: `only ${ee.map(tail).join(', ')} matching the current ${keyPinned ? 'key' : 'certificate'}, no second record for the next key (publish current + next, RFC 7671 §8.1)`,
        });
      }
    }
  }

  // Issuer replacement, for each DANE-TA record on an intermediate.
  const leafKeyRecord = matching.some((r) => r.usage === 3 && r.selector === 1 && !expiresSoon(0));
  for (const r of matching.filter((x) => x.usage === 2 && x.matchDepth! >= 1)) {
    const d = r.matchDepth!;
    const higher = matching.some((x) => x.usage === 2 && x.matchDepth! > d && !expiresSoon(x.matchDepth!));
    if (higher || leafKeyRecord) continue;
    const c = certAt(d);
    if (!c) continue;
    if (expiresSoon(d)) {
      out.push({
        kind: 'ta-expiring',
        severity: 'warning',
        record: r.index,
        depth: d,
        expires: c.notAfter,
        detail: `${tail(r)} pins the issuer at depth ${d} (${c.subject}), which ${days(d)}: its successor matches no record`,
      });
    } else if (!c.subject || c.subject !== c.issuer) {
      out.push({
        kind: 'ta-no-successor',
        severity: 'advice',
        record: r.index,
        depth: d,
        expires: c.notAfter,
        detail: `${tail(r)} pins the intermediate at depth ${d} (${c.subject}) only: when the CA rotates intermediates, nothing matches (publish the next intermediate or the root too, or a 3 1 1 for the server key)`,
      });
    }
  }
  return out;
}

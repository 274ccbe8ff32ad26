/**
 * DANE rollover facts shared by a cluster's nodes (issue 16, spool.backend postgres): a warning is given
 * once per repeat period for the whole cluster (`relay_rollover_warnings`, claimed on the database's
 * clock), and each MX's latest facts with the union of the record ids that have authenticated it on any
 * node (`relay_mx_facts`), so a node that has not yet seen the old key can still tell a retired record
 * from the next key's. An MX whose facts have not changed is written at most every SHARE_EVERY_MS.
 */
import type pg from 'pg';
import type { MxFacts, RolloverLedger } from './mxFacts.js';
import { takeTurn } from '../spool/postgres/period.js';

const SHARE_EVERY_MS = 10 * 60_000;
const MAX_REMEMBERED = 10_000;

export class PgRolloverLedger implements RolloverLedger {
  /** per MX: what was last written and the ids the database answered */
  private readonly shared = new Map<string, { at: number; sig: string; ids: string[] }>();

  constructor(
    private readonly pool: pg.Pool,
    private readonly node: string,
    private readonly now: () => number = Date.now,
  ) {}

  claimWarning(key: string, repeatMs: number): Promise<boolean> {
    return takeTurn(this.pool, { table: 'relay_rollover_warnings', key: 'key', at: 'warned_at' }, key, this.node, repeatMs);
  }

  async share(f: MxFacts): Promise<string[]> {
    const k = `${f.domain}|${f.host}`;
    const sig = JSON.stringify([f.matchedIds, f.matchedIndex, f.findings.map((x) => [x.kind, x.record, x.expires])]);
    const last = this.shared.get(k);
    const now = this.now();
    if (last && last.sig === sig && now - last.at < SHARE_EVERY_MS) return last.ids;
    const r = await this.pool.query<{ matched_ids: string[] }>(
      `INSERT INTO relay_mx_facts AS m (domain, host, node, at, matched_index, matched_usage, findings, matched_ids)
       VALUES ($1, $2, $3, now(), $4, $5, $6, $7)
       ON CONFLICT (domain, host) DO UPDATE
          SET node = EXCLUDED.node, at = EXCLUDED.at, matched_index = EXCLUDED.matched_index, matched_usage = EXCLUDED.matched_usage,
              findings = EXCLUDED.findings,
              matched_ids = (SELECT coalesce(array_agg(DISTINCT x ORDER BY x), '{}') FROM unnest(m.matched_ids || EXCLUDED.matched_ids) AS x)
       RETURNING matched_ids`,
      [f.domain, f.host, this.node, f.matchedIndex ?? null, f.matchedUsage ?? null, JSON.stringify(f.findings), f.matchedIds],
    );
    const ids = r.rows[0]?.matched_ids ?? [];
    if (!last && this.shared.size >= MAX_REMEMBERED) this.shared.delete(this.shared.keys().next().value!);
    this.shared.set(k, { at: now, sig, ids });
    return ids;
  }
}

/**
 * "Once per period for the whole cluster" (issue 16): a row per key holds who last did the thing and when
 * (database time). One statement takes the turn: it inserts the row, or takes it over when the last turn is
 * older than the period; the row lock serialises nodes racing for the same key, so exactly one wins. Used by
 * the danefail probe (check/pgProbeLedger.ts) and rollover warnings (policy/pgRollover.ts).
 */
import type pg from 'pg';

/** The table's columns: the key (primary key), the node that took the last turn, and when. */
export interface PeriodTable {
  table: 'relay_probe_results' | 'relay_rollover_warnings';
  key: 'domain' | 'key';
  at: 'claimed_at' | 'warned_at';
}

/** true when this node has taken the turn for `key` (no node had within `periodMs`). */
export async function takeTurn(pool: pg.Pool, t: PeriodTable, key: string, node: string, periodMs: number): Promise<boolean> {
  const r = await pool.query(
    `INSERT INTO ${t.table} (${t.key}, node, ${t.at}) VALUES ($1, $2, now())
     ON CONFLICT (${t.key}) DO UPDATE SET node = EXCLUDED.node, ${t.at} = EXCLUDED.${t.at}
      WHERE ${t.table}.${t.at} < now() - $3 * interval '1 millisecond'
     RETURNING ${t.key}`,
    [key, node, Math.floor(periodMs)],
  );
  return (r.rowCount ?? 0) > 0;
}

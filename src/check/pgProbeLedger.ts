/**
 * The danefail exception probe coordinated across a cluster (issue 16, spool.backend postgres): a node
 * claims a destination's row before probing it, so that each listed destination is probed once per
 * interval by one node, not once by every node; what the probe found is recorded on the row for any
 * node (and the operator) to read. Times are the database's. A node that dies after its claim leaves
 * the destination unprobed for one interval; the next round anywhere takes it.
 */
import type pg from 'pg';
import type { ProbeLedger } from './probe.js';
import { takeTurn } from '../spool/postgres/period.js';

/** a claim is refused while another was made within this share of the interval (timers of nodes drift a little) */
const SLACK = 0.9;

export class PgProbeLedger implements ProbeLedger {
  constructor(
    private readonly pool: pg.Pool,
    private readonly node: string,
  ) {}

  claim(domain: string, intervalMs: number): Promise<boolean> {
    return takeTurn(this.pool, { table: 'relay_probe_results', key: 'domain', at: 'claimed_at' }, domain, this.node, intervalMs * SLACK);
  }

  async record(domain: string, r: { ok: boolean; host?: string; why: string }): Promise<void> {
    await this.pool.query('UPDATE relay_probe_results SET probed_at = now(), ok = $3, host = $4, why = $5 WHERE domain = $1 AND node = $2', [
      domain,
      this.node,
      r.ok,
      r.host ?? null,
      r.why,
    ]);
  }
}

/**
 * TLSRPT counts and report sends shared by the nodes of a PostgreSQL cluster (issue 16; RFC 8460 §4.1:
 * one report per policy domain and day from the sending organisation, not one per node).
 *
 * Counting is as in the file store (store.ts): an in-memory increment, flushed at most once a second, now
 * as `INSERT … ON CONFLICT DO UPDATE SET n = n + delta` rows keyed exactly as the file store's JSON lines
 * (day, report domain, policy key, failure-detail key), so every node's deltas add up and `read` returns
 * the same PolicyCounts the report is built from.
 *
 * Sending: a node that finds a report due claims its (day, domain) row under a lease (database clock). A
 * claim succeeds only for a row never claimed, or one whose lease expired without `sent_at` (its node died
 * mid-send); the INSERT … ON CONFLICT row lock serialises concurrent claims, so one node wins. The result
 * is written conditioned on the token. A node whose lease expired while it was still sending (longer than
 * `lease`) could duplicate a report: the lease is chosen far above the send's own timeouts.
 */
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { LoadedConfig } from '../../config/load.js';
import { addPending, BufferedCounts, countsFromTotals, type PendingCounts, type StoreLog } from './store.js';
import { isDay, nextDay, type PolicyCounts } from './report.js';
import type { PendingSend, PendingStore } from './https.js';

export class PgTlsrptStore extends BufferedCounts {
  constructor(
    private readonly pool: pg.Pool,
    log?: StoreLog,
  ) {
    super(log);
  }

  /** All of a batch's deltas in one transaction: either every row is added or none (kept for the next flush). */
  protected async write(batch: PendingCounts): Promise<void> {
    const keepAll = () => {
      for (const p of batch.values()) this.keep(p);
    };
    const c = await this.pool.connect().catch((e: unknown) => {
      keepAll();
      throw e;
    });
    try {
      await c.query('BEGIN');
      // Every node takes the row locks in the same order (sorted keys): concurrent flushes of the same rows
      // wait for each other instead of deadlocking.
      for (const p of [...batch.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, v]) => v)) {
        await c.query(
          `INSERT INTO relay_tlsrpt_counts (day, domain, policy, success, failure) VALUES ($1, $2, $3, $4, $5)
          ON CONFLICT (day, domain, policy) DO UPDATE SET success = relay_tlsrpt_counts.success + EXCLUDED.success,
            failure = relay_tlsrpt_counts.failure + EXCLUDED.failure`,
          [p.day, p.domain, p.policy, p.s, p.f],
        );
        for (const [detail, n] of [...p.x.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
          await c.query(
            `INSERT INTO relay_tlsrpt_details (day, domain, policy, detail, count) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (day, domain, policy, detail) DO UPDATE SET count = relay_tlsrpt_details.count + EXCLUDED.count`,
            [p.day, p.domain, p.policy, detail, n],
          );
        }
      }
      await c.query('COMMIT');
    } catch (e) {
      await c.query('ROLLBACK').catch(() => undefined);
      keepAll();
      this.log?.warn({ err: (e as Error).message }, 'tlsrpt: could not write counts to the database; will retry');
      throw e;
    } finally {
      c.release();
    }
  }

  async days(): Promise<string[]> {
    const r = await this.pool.query<{ day: string }>('SELECT DISTINCT day FROM relay_tlsrpt_counts ORDER BY day');
    return r.rows.map((x) => x.day).filter(isDay);
  }

  /** A day's counts per report domain: every node's flushed deltas plus this node's pending ones. */
  async read(day: string): Promise<Map<string, PolicyCounts[]>> {
    if (!isDay(day)) throw new Error(`not a day (YYYY-MM-DD): ${day}`);
    const totals: PendingCounts = new Map();
    const counts = await this.pool.query<{ domain: string; policy: string; success: string; failure: string }>(
      'SELECT domain, policy, success, failure FROM relay_tlsrpt_counts WHERE day = $1',
      [day],
    );
    for (const r of counts.rows) addPending(totals, day, r.domain, r.policy, Number(r.success), Number(r.failure), []);
    const details = await this.pool.query<{ domain: string; policy: string; detail: string; count: string }>(
      'SELECT domain, policy, detail, count FROM relay_tlsrpt_details WHERE day = $1',
      [day],
    );
    for (const r of details.rows) addPending(totals, day, r.domain, r.policy, 0, 0, [[r.detail, Number(r.count)]]);
    for (const p of this.pending.values()) if (p.day === day) addPending(totals, day, p.domain, p.policy, p.s, p.f, p.x);
    return countsFromTotals(totals, (err, domain) => this.log?.warn({ day, domain, err }, 'tlsrpt: skipped unreadable count row'));
  }

  /** Deletes the rows of days before `today - retentionDays` (any node may; deleting twice is harmless). */
  async prune(today: string, retentionDays: number): Promise<string[]> {
    const oldest = nextDay(today, -retentionDays);
    const r = await this.pool.query<{ day: string }>('WITH d AS (DELETE FROM relay_tlsrpt_counts WHERE day < $1 RETURNING day) SELECT DISTINCT day FROM d', [
      oldest,
    ]);
    await this.pool.query('DELETE FROM relay_tlsrpt_details WHERE day < $1', [oldest]);
    await this.pool.query('DELETE FROM relay_tlsrpt_sends WHERE day < $1', [oldest]);
    return r.rows.map((x) => x.day).sort();
  }
}

/**
 * How long a send claim lasts: far above one send's own bounds (DNS lookups, DKIM signing, an https POST
 * with its timeout, a spool commit), so a live node never loses its claim mid-send; a dead node's claim
 * holds that report back by at most this long (RFC 8460 §4.1 allows reports to be sent within a day).
 */
export const SEND_LEASE_MS = 15 * 60_000;

/** A claim on one (day, domain) report send. */
export interface SendClaim {
  day: string;
  domain: string;
  token: string;
}

/** The send claims of the cluster (relay_tlsrpt_sends). */
export class PgSendClaims {
  constructor(
    private readonly pool: pg.Pool,
    private readonly node: string,
    private readonly leaseMs: number,
  ) {}

  /** The claim, or undefined when the report was sent already or another live node holds it. */
  async claim(day: string, domain: string): Promise<SendClaim | undefined> {
    const token = randomUUID();
    const r = await this.pool.query(
      `INSERT INTO relay_tlsrpt_sends (day, domain, owner, token, expires_at)
      VALUES ($1, $2, $3, $4, now() + $5 * interval '1 millisecond')
      ON CONFLICT (day, domain) DO UPDATE SET owner = EXCLUDED.owner, token = EXCLUDED.token, expires_at = EXCLUDED.expires_at
      WHERE relay_tlsrpt_sends.sent_at IS NULL AND relay_tlsrpt_sends.expires_at < now()
      RETURNING token`,
      [day, domain, this.node, token, this.leaseMs],
    );
    return r.rowCount === 1 ? { day, domain, token } : undefined;
  }

  /** Records the outcome; false when the claim had been lost (lease expired and taken over). */
  async done(c: SendClaim, outcome: object): Promise<boolean> {
    const r = await this.pool.query(
      `UPDATE relay_tlsrpt_sends SET sent_at = now(), outcome = $4
      WHERE day = $1 AND domain = $2 AND token = $3 AND sent_at IS NULL`,
      [c.day, c.domain, c.token, JSON.stringify(outcome)],
    );
    return r.rowCount === 1;
  }

  /** Gives a claim back unsent (retry later): any node may claim it at once. */
  async release(c: SendClaim): Promise<void> {
    await this.pool.query(
      `UPDATE relay_tlsrpt_sends SET expires_at = now() - interval '1 millisecond'
      WHERE day = $1 AND domain = $2 AND token = $3 AND sent_at IS NULL`,
      [c.day, c.domain, c.token],
    );
  }

  async wasSent(day: string, domain: string): Promise<boolean> {
    const r = await this.pool.query('SELECT 1 FROM relay_tlsrpt_sends WHERE day = $1 AND domain = $2 AND sent_at IS NOT NULL', [day, domain]);
    return (r.rowCount ?? 0) > 0;
  }
}

/**
 * https sends awaiting retry, shared by the cluster (relay_tlsrpt_pending, migration 7): any node retries a
 * due send, one at a time — `due` claims the rows it returns under a lease (database clock) with
 * `FOR UPDATE SKIP LOCKED`, and the attempt's outcome (save: the next retry, lease given back; remove) ends
 * it. A node that dies mid-attempt leaves the send to another node once the lease expires; one that died after
 * the endpoint's 2xx but before `remove` makes the report be posted again (the window, as for a send claim).
 * Retry times (`next`) are the sending node's clock, as the queue's.
 */
export class PgPendingStore implements PendingStore {
  constructor(
    private readonly pool: pg.Pool,
    private readonly node: string,
    private readonly leaseMs: number,
  ) {}

  async save(p: PendingSend): Promise<void> {
    await this.pool.query(
      `INSERT INTO relay_tlsrpt_pending (id, day, domain, next_at, send) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (id) DO UPDATE SET next_at = EXCLUDED.next_at, send = EXCLUDED.send,
              lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL`,
      [p.id, p.day, p.domain, p.next, JSON.stringify(p)],
    );
  }

  async remove(id: string): Promise<void> {
    await this.pool.query('DELETE FROM relay_tlsrpt_pending WHERE id = $1', [id]);
  }

  async due(now: number): Promise<PendingSend[]> {
    const r = await this.pool.query<{ send: PendingSend }>(
      `WITH d AS (
         SELECT id FROM relay_tlsrpt_pending
          WHERE next_at <= $2 AND (lease_token IS NULL OR lease_expires_at < now())
          ORDER BY next_at
          FOR UPDATE SKIP LOCKED)
       UPDATE relay_tlsrpt_pending p
          SET lease_owner = $1, lease_token = gen_random_uuid(), lease_expires_at = now() + $3 * interval '1 millisecond'
         FROM d WHERE p.id = d.id
       RETURNING p.send`,
      [this.node, now, this.leaseMs],
    );
    return r.rows.map((x) => x.send);
  }

  async list(): Promise<PendingSend[]> {
    return (await this.pool.query<{ send: PendingSend }>('SELECT send FROM relay_tlsrpt_pending ORDER BY next_at')).rows.map((x) => x.send);
  }
}

/**
 * The cluster's TLSRPT for a config with `spool.backend: postgres` (the relay and the `tlsrpt` CLI), on a
 * small pool of its own; undefined for the file backend. The caller ends `pool` after the service stopped.
 */
export async function openSharedTlsrpt(
  cfg: LoadedConfig,
  node: string,
  log?: StoreLog,
): Promise<{ store: PgTlsrptStore; sends: PgSendClaims; pending: PgPendingStore; pool: pg.Pool } | undefined> {
  if (cfg.spool.backend !== 'postgres' || !cfg.spool.postgres) return undefined;
  const { openPool } = await import('../../spool/postgres/connect.js');
  const pool = openPool({ ...cfg.spool.postgres, pool: 2 }, { application: `dane-relay ${node} tlsrpt` });
  return {
    store: new PgTlsrptStore(pool, log),
    sends: new PgSendClaims(pool, node, SEND_LEASE_MS),
    pending: new PgPendingStore(pool, node, SEND_LEASE_MS),
    pool,
  };
}

/**
 * The MTA-STS policy cache in the queue database (issue 16, `spool.backend: postgres`): the file cache's
 * entries (store.ts) as rows of `relay_sts_policies`, so that a policy one node fetched governs the
 * deliveries of every node and a restart of any node keeps it (RFC 8461 §3.3, §10.2: losing it would
 * reopen the first-contact window). The rules (policies.ts) are the same over either store; the change
 * marker is the row's `version` (a sequence value, new at every write) instead of a file's mtime.
 * Entries read back go through the file store's decoder, so both refuse the same malformed entries.
 */
import type pg from 'pg';
import { decodeEntry, fileNameOf, STORE_FORMAT, type CachedPolicy, type StsPolicyStore } from './store.js';

/** epoch ms ↔ timestamptz, exact to the millisecond */
const MS = (col: string) => `(extract(epoch FROM ${col}) * 1000)::bigint`;

type Row = {
  id: string;
  policy: unknown;
  fetched_at: string;
  expires_at: string;
  last_used: string;
  refresh_failure: unknown;
  version: string;
};

export class PgStsPolicyStore implements StsPolicyStore {
  readonly where = 'the queue database (relay_sts_policies)';

  constructor(private readonly pool: pg.Pool) {}

  private static check(domain: string): void {
    if (!fileNameOf(domain)) throw new Error(`not a domain name: ${JSON.stringify(domain)}`);
  }

  async read(domain: string): Promise<{ entry: CachedPolicy; mtimeMs: number } | undefined> {
    PgStsPolicyStore.check(domain);
    const r = await this.pool.query<Row>(
      `SELECT id, policy, ${MS('fetched_at')} AS fetched_at, ${MS('expires_at')} AS expires_at, ${MS('last_used')} AS last_used,
              refresh_failure, version
         FROM relay_sts_policies WHERE domain = $1`,
      [domain],
    );
    const row = r.rows[0];
    if (!row) return undefined;
    const entry = decodeEntry(
      JSON.stringify({
        format: STORE_FORMAT,
        domain,
        id: row.id,
        fetchedAt: Number(row.fetched_at),
        expiresAt: Number(row.expires_at),
        lastUsed: Number(row.last_used),
        policy: row.policy,
        ...(row.refresh_failure ? { refreshFailure: row.refresh_failure } : {}),
      }),
      domain,
    );
    if (typeof entry === 'string') throw new Error(`relay_sts_policies ${domain}: ${entry}`);
    return { entry, mtimeMs: Number(row.version) };
  }

  async mtimeOf(domain: string): Promise<number | undefined> {
    PgStsPolicyStore.check(domain);
    const r = await this.pool.query<{ version: string }>('SELECT version FROM relay_sts_policies WHERE domain = $1', [domain]);
    return r.rows[0] ? Number(r.rows[0].version) : undefined;
  }

  async write(e: CachedPolicy): Promise<number> {
    PgStsPolicyStore.check(e.domain);
    const r = await this.pool.query<{ version: string }>(
      `INSERT INTO relay_sts_policies (domain, id, policy, fetched_at, expires_at, last_used, refresh_failure)
       VALUES ($1, $2, $3, to_timestamp($4::float8 / 1000), to_timestamp($5::float8 / 1000), to_timestamp($6::float8 / 1000), $7)
       ON CONFLICT (domain) DO UPDATE
          SET id = EXCLUDED.id, policy = EXCLUDED.policy, fetched_at = EXCLUDED.fetched_at, expires_at = EXCLUDED.expires_at,
              last_used = EXCLUDED.last_used, refresh_failure = EXCLUDED.refresh_failure, version = nextval('relay_sts_policy_version')
       RETURNING version`,
      [e.domain, e.id, JSON.stringify(e.policy), e.fetchedAt, e.expiresAt, e.lastUsed, e.refreshFailure ? JSON.stringify(e.refreshFailure) : null],
    );
    return Number(r.rows[0]!.version);
  }

  async remove(domain: string): Promise<boolean> {
    PgStsPolicyStore.check(domain);
    return ((await this.pool.query('DELETE FROM relay_sts_policies WHERE domain = $1', [domain])).rowCount ?? 0) > 0;
  }

  async domains(): Promise<string[]> {
    const r = await this.pool.query<{ domain: string }>('SELECT domain FROM relay_sts_policies ORDER BY domain');
    return r.rows.map((x) => x.domain).filter((d) => fileNameOf(d) !== undefined);
  }
}

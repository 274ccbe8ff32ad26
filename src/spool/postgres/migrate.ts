/**
 * The queue database's schema and its migrations (`dane-relay db migrate`; `serve` runs the same
 * before it starts). Versions are applied in order, each in its own transaction together with its
 * row in relay_schema_version; an advisory lock keeps nodes that start together from racing.
 * A database with a version this relay does not know is refused: it was migrated by a newer relay.
 */
import type pg from 'pg';

export interface Migration {
  version: number;
  description: string;
  sql: string;
  /** why the migration must not run now (under the migration lock, before its transaction), or undefined */
  precheck?: (c: pg.ClientBase, ctx: MigrateContext) => Promise<string | undefined>;
}

export interface MigrateContext {
  /** the node migrating (its own row in relay_nodes is not another live node); none for `dane-relay db migrate` */
  node?: string;
  /** the lease length: a node seen within two of them and not stopped is live (the `dane-relay nodes` rule) */
  leaseMs: number;
}

/**
 * What a node knows how to honour. A message that needs a feature (`relay_messages.requires`) is claimed only by
 * nodes whose list holds it: the database's counterpart of the file spool's format 3, which older readers refuse.
 * A new feature is appended here and set on the messages that need it; nothing else changes.
 */
export const FEATURES: readonly string[] = ['requiretls'];

/** The features a node must know to deliver a message with this envelope (RFC 8689 §4.1: the REQUIRETLS tag). */
export function requiredFeatures(e: { requireTls?: true }): string[] {
  return e.requireTls ? ['requiretls'] : [];
}

/** arbitrary constant: the advisory lock the migrations hold ("dane-mig" in ASCII) */
const MIGRATION_LOCK = 0x64616e652d6d6967n;

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    description: 'messages with recipient states and leases; nodes',
    sql: `
      CREATE TABLE relay_messages (
        id text PRIMARY KEY,
        envelope jsonb NOT NULL,
        size bigint NOT NULL,
        body_facts jsonb,
        body bytea NOT NULL,
        -- the recipient states (RecipientStatus[], as in the file spool's state file)
        recipients jsonb NOT NULL,
        held boolean NOT NULL DEFAULT false,
        -- epoch ms at which the earliest open recipient is due; NULL when none is open
        next_due bigint,
        lease_owner text,
        lease_token uuid,
        lease_expires_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now()
      );
      -- bodies are mostly read in pieces (DSN headers, delivery in chunks): stored uncompressed out of line,
      -- substring() reads only the pieces it needs
      ALTER TABLE relay_messages ALTER COLUMN body SET STORAGE EXTERNAL;
      CREATE INDEX relay_messages_due ON relay_messages (next_due) WHERE NOT held AND next_due IS NOT NULL;
      CREATE INDEX relay_messages_lease_owner ON relay_messages (lease_owner) WHERE lease_owner IS NOT NULL;
      CREATE TABLE relay_nodes (
        name text PRIMARY KEY,
        host text NOT NULL,
        pid integer NOT NULL,
        started_at timestamptz NOT NULL,
        seen_at timestamptz NOT NULL,
        stopped_at timestamptz
      );
    `,
  },
  {
    version: 2,
    description: 'delivery slots per destination, shared by all nodes',
    sql: `
      -- one row per session slot in use: a node holds a slot for each SMTP session to a destination, under a
      -- lease like a message's, so the per-destination limit holds across nodes and survives a node's death
      CREATE TABLE relay_slots (
        destination text NOT NULL,
        slot integer NOT NULL,
        owner text NOT NULL,
        token uuid NOT NULL,
        expires_at timestamptz NOT NULL,
        PRIMARY KEY (destination, slot)
      );
    `,
  },
  {
    version: 3,
    description: 'TLSRPT counts and report sends, shared by all nodes',
    sql: `
      -- the file store's JSON lines as rows: each node adds its deltas (INSERT ... ON CONFLICT DO UPDATE),
      -- keyed as reporting/tlsrpt/store.ts keys them (day, report domain, policy key, failure-detail key)
      CREATE TABLE relay_tlsrpt_counts (
        day text NOT NULL,
        domain text NOT NULL,
        policy text NOT NULL,
        success bigint NOT NULL DEFAULT 0,
        failure bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (day, domain, policy)
      );
      CREATE TABLE relay_tlsrpt_details (
        day text NOT NULL,
        domain text NOT NULL,
        policy text NOT NULL,
        detail text NOT NULL,
        count bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (day, domain, policy, detail)
      );
      -- one row per (day, domain) report: claimed under a lease by the node that sends it; sent_at set once
      -- it went out (or was dropped), after which no node sends it again
      CREATE TABLE relay_tlsrpt_sends (
        day text NOT NULL,
        domain text NOT NULL,
        owner text NOT NULL,
        token uuid NOT NULL,
        expires_at timestamptz NOT NULL,
        sent_at timestamptz,
        outcome jsonb,
        PRIMARY KEY (day, domain)
      );
    `,
  },
  {
    version: 4,
    description: 'features a node must know to claim a message (REQUIRETLS)',
    sql: `
      -- RFC 8689 §4.1: a REQUIRETLS message must never be delivered by a node that does not honour the tag. Claims
      -- filter on this (requires <@ the claiming node's features), as older file-spool readers refuse format 3.
      ALTER TABLE relay_messages ADD COLUMN requires text[] NOT NULL DEFAULT '{}';
    `,
    // Nodes running code from before this version claim without the filter: they would deliver a REQUIRETLS message
    // as an ordinary one. They must be stopped first; once it is applied they refuse to start (schema newer).
    precheck: async (c, ctx) => {
      const r = await c.query<{ name: string }>(
        `SELECT name FROM relay_nodes
          WHERE stopped_at IS NULL AND seen_at > now() - 2 * $1 * interval '1 millisecond' AND name IS DISTINCT FROM $2
          ORDER BY name`,
        [ctx.leaseMs, ctx.node ?? null],
      );
      if (r.rows.length === 0) return undefined;
      return (
        `node(s) ${r.rows.map((x) => x.name).join(', ')} are live and run a relay older than schema version 4, which would ` +
        'deliver REQUIRETLS messages without honouring the tag: stop them (SIGTERM), migrate, and upgrade them before they start again'
      );
    },
  },
  {
    version: 5,
    description: 'MTA-STS policy cache, shared by all nodes',
    sql: `
      -- RFC 8461 §3.3: the policy cache of mtasts/store.ts as rows, so that a policy one node fetched governs the
      -- deliveries of every node and survives the restart of any. version changes at every write (a sequence, so a
      -- purge followed by a new fetch never repeats a value): a node compares it with what it read last.
      CREATE SEQUENCE relay_sts_policy_version;
      CREATE TABLE relay_sts_policies (
        domain text PRIMARY KEY,
        id text NOT NULL,
        policy jsonb NOT NULL,
        fetched_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        last_used timestamptz NOT NULL,
        refresh_failure jsonb,
        version bigint NOT NULL DEFAULT nextval('relay_sts_policy_version')
      );
    `,
  },
  {
    version: 6,
    description: 'danefail probe results and DANE rollover facts, shared by all nodes',
    sql: `
      -- one probe per listed destination and interval for the whole cluster: a node claims the row (claimed_at,
      -- database time) before probing and records what it found; the others skip it until the interval has passed
      CREATE TABLE relay_probe_results (
        domain text PRIMARY KEY,
        node text NOT NULL,
        claimed_at timestamptz NOT NULL,
        probed_at timestamptz,
        ok boolean,
        host text,
        why text
      );
      -- a rollover warning goes out once a day per MX and risk for the whole cluster (policy/mxFacts.ts keys)
      CREATE TABLE relay_rollover_warnings (
        key text PRIMARY KEY,
        node text NOT NULL,
        warned_at timestamptz NOT NULL
      );
      -- the latest DANE facts per MX, and every record id that has authenticated it on any node (to tell a
      -- retired key's record left in the RRset from the next key's)
      CREATE TABLE relay_mx_facts (
        domain text NOT NULL,
        host text NOT NULL,
        node text NOT NULL,
        at timestamptz NOT NULL,
        matched_index integer,
        matched_usage integer,
        findings jsonb NOT NULL,
        matched_ids text[] NOT NULL,
        PRIMARY KEY (domain, host)
      );
    `,
  },
  {
    version: 7,
    description: 'TLSRPT https retries, shared by all nodes',
    sql: `
      -- https report sends awaiting retry (reporting/tlsrpt/https.ts PendingSend as send): any node retries a due
      -- one, claimed under a lease for the attempt (database clock); next_at is epoch ms on the sender's clock
      CREATE TABLE relay_tlsrpt_pending (
        id text PRIMARY KEY,
        day text NOT NULL,
        domain text NOT NULL,
        next_at bigint NOT NULL,
        send jsonb NOT NULL,
        lease_owner text,
        lease_token uuid,
        lease_expires_at timestamptz
      );
    `,
  },
];

export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;

export interface MigrateResult {
  from: number;
  to: number;
  applied: Migration[];
}

async function currentVersion(c: pg.ClientBase): Promise<number> {
  const r = await c.query<{ v: number | null }>('SELECT max(version) AS v FROM relay_schema_version');
  return r.rows[0]?.v ?? 0;
}

/** Brings the schema to SCHEMA_VERSION. */
export async function migrate(pool: pg.Pool, ctx: MigrateContext = { leaseMs: 30_000 }): Promise<MigrateResult> {
  const c = await pool.connect();
  try {
    await c.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK.toString()]);
    try {
      await c.query(`CREATE TABLE IF NOT EXISTS relay_schema_version (
        version integer PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
      const from = await currentVersion(c);
      if (from > SCHEMA_VERSION) throw new Error(`the queue database has schema version ${from}, newer than this relay's ${SCHEMA_VERSION}: upgrade the relay`);
      const applied: Migration[] = [];
      for (const m of MIGRATIONS.filter((x) => x.version > from)) {
        const refused = await m.precheck?.(c, ctx);
        if (refused) throw new Error(`migration ${m.version} (${m.description}) refused: ${refused}`);
        await c.query('BEGIN');
        try {
          await c.query(m.sql);
          await c.query('INSERT INTO relay_schema_version (version, description) VALUES ($1, $2)', [m.version, m.description]);
          await c.query('COMMIT');
        } catch (e) {
          await c.query('ROLLBACK').catch(() => undefined);
          throw new Error(`migration ${m.version} (${m.description}) failed: ${(e as Error).message}`, { cause: e });
        }
        applied.push(m);
      }
      return { from, to: SCHEMA_VERSION, applied };
    } finally {
      await c.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK.toString()]).catch(() => undefined);
    }
  } finally {
    c.release();
  }
}

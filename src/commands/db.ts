/**
 * `dane-relay db migrate` and `dane-relay nodes` (issue 16): the shared queue's schema, and which
 * nodes are alive and what they hold.
 */
import type pg from 'pg';
import { loadConfig, type LoadedConfig } from '../config/load.js';
import { describeUrl, openPool } from '../spool/postgres/connect.js';
import { migrate } from '../spool/postgres/migrate.js';

import { flag, stringOpt, type ParsedArgs } from './args.js';
import { configFileFor } from '../config/path.js';

const configFile = (p: ParsedArgs, err: NodeJS.WritableStream): string => configFileFor(stringOpt(p, 'config'), err);

/** Runs `fn` with a small pool to the configured queue database; exit 2 when there is none, 1 on a database error. */
async function withDb(
  args: ParsedArgs,
  err: NodeJS.WritableStream,
  fn: (c: { pg: NonNullable<LoadedConfig['spool']['postgres']>; pool: pg.Pool }) => Promise<number>,
): Promise<number> {
  const file = configFile(args, err);
  const cfg = loadConfig(file);
  if (cfg.spool.backend !== 'postgres' || !cfg.spool.postgres) {
    err.write(`${file}: spool.backend is ${cfg.spool.backend}: there is no queue database to talk to\n`);
    return 2;
  }
  const c = { pg: cfg.spool.postgres, pool: openPool({ ...cfg.spool.postgres, pool: 2 }, { application: 'dane-relay cli' }) };
  try {
    return await fn(c);
  } catch (e) {
    err.write(`dane-relay: ${describeUrl(c.pg.url)}: ${(e as Error).message}\n`);
    return 1;
  } finally {
    await c.pool.end().catch(() => undefined);
  }
}

export async function dbCli(args: ParsedArgs, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  return withDb(args, err, async (c) => {
    const r = await migrate(c.pool, { leaseMs: c.pg.lease });
    if (r.applied.length === 0) out.write(`${describeUrl(c.pg.url)}: schema version ${r.to}, up to date\n`);
    else for (const m of r.applied) out.write(`${describeUrl(c.pg.url)}: applied ${m.version} (${m.description})\n`);
    out.write(`schema version ${r.to} (was ${r.from})\n`);
    return 0;
  });
}

interface NodeRow {
  name: string;
  host: string;
  pid: number;
  started_at: Date;
  seen_at: Date;
  stopped_at: Date | null;
  live: boolean;
  leases: string;
  next_expiry: Date | null;
}

export async function nodesCli(args: ParsedArgs, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  return withDb(args, err, async (c) => {
    // live: seen within two lease periods (renewal runs every third of one) and not stopped
    const r = await c.pool.query<NodeRow>(
      `SELECT n.name, n.host, n.pid, n.started_at, n.seen_at, n.stopped_at,
              (n.stopped_at IS NULL AND n.seen_at > now() - 2 * $1 * interval '1 millisecond') AS live,
              count(m.id) AS leases, min(m.lease_expires_at) AS next_expiry
         FROM relay_nodes n LEFT JOIN relay_messages m ON m.lease_owner = n.name AND m.lease_expires_at > now()
        GROUP BY n.name ORDER BY n.name`,
      [c.pg.lease],
    );
    if (flag(args, 'json')) {
      out.write(
        `${JSON.stringify(
          r.rows.map((n) => ({ ...n, leases: Number(n.leases) })),
          null,
          2,
        )}\n`,
      );
      return 0;
    }
    // columns padded with spaces (the terminal sink shows a tab as \t)
    const table = [['NODE', 'STATE', 'LEASES', 'HOST', 'PID', 'LAST SEEN']];
    for (const n of r.rows)
      table.push([n.name, n.stopped_at ? 'stopped' : n.live ? 'live' : 'silent', String(n.leases), n.host, String(n.pid), n.seen_at.toISOString()]);
    const width = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
    for (const row of table) out.write(`${row.map((v, i) => (i < row.length - 1 ? v.padEnd(width[i]!) : v)).join('  ')}\n`);
    return 0;
  });
}

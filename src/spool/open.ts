/**
 * Opens the queue backend the configuration names (`spool.backend`, issue 16): the embedded file
 * spool under queue_dir (the default), or the queue shared with other nodes on PostgreSQL, whose
 * schema is brought up to date first (the same migrations as `dane-relay db migrate`).
 */
import { mkdir } from 'node:fs/promises';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { LoadedConfig } from '../config/load.js';
import { Spool } from './spool.js';
import type { QueueStore } from './types.js';

/** This node's name in leases: `spool.postgres.node`, else hostname:pid (unique among live processes on a host). */
export function nodeName(cfg: LoadedConfig): string {
  return cfg.spool.postgres?.node ?? `${hostname()}:${process.pid}`;
}

export async function openQueue(cfg: LoadedConfig, log: Logger, now: () => number): Promise<QueueStore> {
  if (cfg.spool.backend !== 'postgres') return Spool.open(cfg.queue_dir, { now, log });
  const pgc = cfg.spool.postgres!;
  const { openPool, describeUrl } = await import('./postgres/connect.js');
  const { migrate } = await import('./postgres/migrate.js');
  const { PgQueue } = await import('./postgres/queue.js');
  const pool = openPool(pgc, { application: `dane-relay ${nodeName(cfg)}` });
  try {
    const m = await migrate(pool);
    log.info({ db: describeUrl(pgc.url), schema_from: m.from, schema_version: m.to, node: nodeName(cfg), lease_ms: pgc.lease }, 'queue database opened');
    // queue_dir still holds the control socket (and TLSRPT's counts unless tlsrpt.dir says otherwise).
    await mkdir(cfg.queue_dir, { recursive: true, mode: 0o700 });
    return await PgQueue.open(pool, { node: nodeName(cfg), leaseMs: pgc.lease, now, log });
  } catch (e) {
    await pool.end().catch(() => undefined);
    throw new Error(`queue database ${describeUrl(pgc.url)}: ${(e as Error).message}`, { cause: e });
  }
}

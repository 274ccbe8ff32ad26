/**
 * The connection to the queue database (issue 16): a `pg` pool from `spool.postgres`. The password
 * comes from `password_file` or the environment (`password_env`, default PGPASSWORD as libpq does),
 * never from the URL (the schema refuses one there), and is never logged: what is logged is
 * `describeUrl`, which drops any userinfo password the driver might still see.
 */
import { readFileSync, statSync } from 'node:fs';
import pg from 'pg';
import { parse, parseIntoClientConfig } from 'pg-connection-string';

export interface PostgresSettings {
  url: string;
  password_file?: string;
  password_env: string;
  pool: number;
}

export class DbConfigError extends Error {
  override readonly name = 'DbConfigError';
}

/** The password, from the file (first line, mode not readable by others) or the environment; undefined when neither has one. */
export function dbPassword(s: PostgresSettings, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (s.password_file) {
    let text: string;
    try {
      const st = statSync(s.password_file);
      if (st.mode & 0o004)
        throw new DbConfigError(
          `spool.postgres.password_file ${s.password_file} is readable by other users (mode ${(st.mode & 0o777).toString(8)}): chmod 600 it`,
        );
      text = readFileSync(s.password_file, 'utf8');
    } catch (e) {
      if (e instanceof DbConfigError) throw e;
      throw new DbConfigError(`spool.postgres.password_file: cannot read ${s.password_file}: ${(e as Error).message}`);
    }
    const line = text.split(/\r?\n/, 1)[0] ?? '';
    if (!line) throw new DbConfigError(`spool.postgres.password_file ${s.password_file} is empty`);
    return line;
  }
  const v = env[s.password_env];
  return v ? v : undefined;
}

/** The URL for logs: user, host (or socket directory), port, database; never a password. */
export function describeUrl(url: string): string {
  try {
    const c = parse(url);
    return `postgresql://${c.user ? `${c.user}@` : ''}${c.host ?? ''}${c.port ? `:${c.port}` : ''}/${c.database ?? ''}`;
  } catch {
    return '(unparsable postgresql URL)';
  }
}

/**
 * A pool to the queue database. Every session runs with synchronous_commit on, whatever the server's
 * default: a COMMIT that returned is on disk (and, with synchronous_standby_names set on the server,
 * on a standby too), so the 250 that follows it is a promise the database can keep.
 */
export function openPool(s: PostgresSettings, opts: { application?: string; env?: NodeJS.ProcessEnv } = {}): pg.Pool {
  const password = dbPassword(s, opts.env);
  const pool = new pg.Pool({
    // parsed here, not given as connectionString: pg lets the URL's (empty) password override the one given
    ...parseIntoClientConfig(s.url),
    ...(password !== undefined ? { password } : {}),
    max: s.pool,
    application_name: opts.application ?? 'dane-relay',
    options: '-c synchronous_commit=on',
    // A database that does not answer must not hold a session or a delivery forever: fail, answer 4xx, retry.
    connectionTimeoutMillis: 10_000,
    statement_timeout: 30_000,
    idleTimeoutMillis: 30_000,
  });
  // An idle client whose server went away emits 'error' on the pool; it is dropped and the next query reconnects.
  pool.on('error', () => undefined);
  return pool;
}

/**
 * A throwaway PostgreSQL cluster for the shared-queue tests (issue 16): Debian's `postgresql`
 * binaries (pg_ctl under /usr/lib/postgresql/N/bin), a fresh data directory in a temp dir, listening
 * only on a Unix socket in that directory (no TCP port to collide with), password (SCRAM) auth.
 * PostgreSQL refuses to run as root: as root the cluster runs as a throwaway user (./users.ts),
 * otherwise as the user running the tests. `pgSkipReason` says why it cannot run here.
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { reachableTmpdir } from './reachable.js';
import { removeThrowawayUsers, skipReason as userSkip, throwawayUser, type LocalUser } from './users.js';

function binDir(): string | undefined {
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base)
    .filter((v) => existsSync(join(base, v, 'bin', 'pg_ctl')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? join(base, versions[0], 'bin') : undefined;
}

const BIN = binDir();
const isRoot = process.getuid?.() === 0;

/** Why a cluster cannot be started here, or undefined when it can. */
export const pgSkipReason: string | undefined = !BIN
  ? 'PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (apt-get install postgresql)'
  : isRoot && userSkip
    ? `PostgreSQL refuses to run as root and no throwaway user can be made: ${userSkip}`
    : undefined;

export interface TestPostgres {
  /** libpq URL over the Unix socket, without the password */
  url: string;
  /** the password, and a 0600 file holding it */
  password: string;
  passwordFile: string;
  /** the directory holding data/, the socket and the log */
  dir: string;
  /** `psql`-like one-shot query as the superuser; returns the rows as tab-separated text */
  sql(query: string): string;
  /** the same as sql() without blocking this process (a receiver or load in the test keeps running meanwhile) */
  sqlAsync(query: string): Promise<string>;
  /** stop: `immediate` is a crash (no checkpoint; recovery replays WAL at the next start) */
  stop(mode?: 'fast' | 'immediate'): void;
  start(): void;
  /** stop and start without blocking this process: a start after a crash replays WAL, which takes a while on a busy machine */
  stopAsync(mode?: 'fast' | 'immediate'): Promise<void>;
  startAsync(): Promise<void>;
  /** stops the cluster and removes everything, the throwaway user too */
  destroy(): void;
}

const PORT = 5432; // only names the socket file (.s.PGSQL.5432) in our own directory: no TCP listener

export function startPostgres(tag = 'pg'): TestPostgres {
  if (pgSkipReason) throw new Error(pgSkipReason);
  const user: LocalUser | undefined = isRoot ? throwawayUser(tag) : undefined;
  const dir = mkdtempSync(join(reachableTmpdir(user ? { uid: user.uid, gid: user.gid } : 'anyone'), 'dane-relay-pg-'));
  const data = join(dir, 'data');
  const password = `pw-${Math.random().toString(36).slice(2)}-${Date.now().toString(36)}`;
  const pwInit = join(dir, 'initpw');
  writeFileSync(pwInit, `${password}\n`, { mode: 0o600 });
  chmodSync(pwInit, 0o600);
  if (user) {
    chownSync(dir, user.uid, user.gid);
    chownSync(pwInit, user.uid, user.gid);
  }
  chmodSync(dir, 0o755);
  const as = user ? { uid: user.uid, gid: user.gid } : {};
  const pgEnv = { ...as, encoding: 'utf8' as const, env: { ...process.env, LC_ALL: 'C.UTF-8', PGTZ: 'UTC' } };
  const run = (cmd: string, args: string[]) => {
    const r = spawnSync(join(BIN!, cmd), args, pgEnv);
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr || r.stdout || r.error?.message}`);
    return r.stdout;
  };
  run('initdb', ['-D', data, '-U', 'dane', '--pwfile', pwInit, '--auth', 'scram-sha-256', '-E', 'UTF8', '--no-instructions']);
  rmSync(pwInit);
  // The relay connects as root or as the test user: the socket is for anyone, the password is the gate.
  const opts = `-k ${dir} -c listen_addresses='' -p ${PORT} -c unix_socket_permissions=0777 -c fsync=on -c synchronous_commit=on -c max_connections=200`;
  const logFile = join(dir, 'log');
  const runAsync = (cmd: string, args: string[]) =>
    new Promise<string>((res, rej) => {
      execFile(join(BIN!, cmd), args, pgEnv, (e, stdout, stderr) => {
        if (e) rej(new Error(`${cmd} ${args.join(' ')} failed: ${stderr || stdout || e.message}`));
        else res(stdout);
      });
    });
  const startArgs = ['-D', data, '-l', logFile, '-o', opts, '-w', '-t', '120', 'start'];
  const stopArgs = (mode: 'fast' | 'immediate') => ['-D', data, '-m', mode, '-w', '-t', '120', 'stop'];
  const start = () => {
    run('pg_ctl', startArgs);
  };
  const stop = (mode: 'fast' | 'immediate' = 'fast') => {
    run('pg_ctl', stopArgs(mode));
  };
  start();
  const passwordFile = join(dir, 'password');
  writeFileSync(passwordFile, `${password}\n`, { mode: 0o600 });
  chmodSync(passwordFile, 0o600);
  const url = `postgresql://dane@/postgres?host=${encodeURIComponent(dir)}&port=${PORT}`;
  const psqlArgs = (query: string) => [
    '-X',
    '-A',
    '-t',
    '-F',
    '\t',
    '-v',
    'ON_ERROR_STOP=1',
    '-h',
    dir,
    '-p',
    String(PORT),
    '-U',
    'dane',
    '-d',
    'postgres',
    '-c',
    query,
  ];
  const psqlEnv = { encoding: 'utf8' as const, env: { ...process.env, PGPASSWORD: password } };
  const sql = (query: string) => execFileSync(join(BIN!, 'psql'), psqlArgs(query), psqlEnv);
  const sqlAsync = (query: string) =>
    new Promise<string>((res, rej) => {
      execFile(join(BIN!, 'psql'), psqlArgs(query), psqlEnv, (e, stdout, stderr) => {
        if (e) rej(new Error(`psql: ${stderr || e.message}`));
        else res(stdout);
      });
    });
  let destroyed = false;
  return {
    url,
    password,
    passwordFile,
    dir,
    sql,
    sqlAsync,
    stop,
    start,
    stopAsync: async (mode: 'fast' | 'immediate' = 'fast') => void (await runAsync('pg_ctl', stopArgs(mode))),
    startAsync: async () => void (await runAsync('pg_ctl', startArgs)),
    destroy() {
      if (destroyed) return;
      destroyed = true;
      try {
        stop('immediate');
      } catch {
        /* not running */
      }
      rmSync(dir, { recursive: true, force: true });
      if (user) removeThrowawayUsers();
    },
  };
}

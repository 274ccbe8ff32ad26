/**
 * The CLI side of `dane-relay queue …`: ask the running relay over its control socket;
 * when nothing listens there, do the same on the files: changes under the spool lock,
 * `list`/`show` by reading (no lock needed). When a live process holds the lock but its
 * socket does not answer, say exactly that and change nothing.
 */
import { createConnection } from 'node:net';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Spool } from '../spool/spool.js';
import { isOwnerAlive, parseLock } from '../spool/lock.js';
import { listSpool, readMessagePrefix } from '../spool/inspect.js';
import { respond, type ControlRequest, type ControlResponse } from './commands.js';
import { spoolBackend } from './backends.js';
import { controlSocketPath, type ControlConfigView } from './server.js';

/** No relay listens (no socket file, or nobody behind it). */
export class NoRelayError extends Error {
  constructor(
    readonly path: string,
    readonly reason: string,
  ) {
    super(`no relay answers on ${path} (${reason})`);
  }
}

/** Sends one request over the socket; rejects with NoRelayError when nothing listens. */
export function request(path: string, req: ControlRequest, timeoutMs = 30_000): Promise<ControlResponse> {
  return new Promise((resolve, reject) => {
    const s = createConnection(path);
    let buf = '';
    let connected = false;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`control socket ${path} did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    s.setEncoding('utf8');
    s.on('connect', () => {
      connected = true;
      s.write(`${JSON.stringify(req)}\n`);
    });
    s.on('data', (d: string) => {
      buf += d;
    });
    s.on('end', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(buf.split('\n')[0]!) as ControlResponse);
      } catch {
        reject(new Error(`control socket ${path} sent an unreadable answer: ${JSON.stringify(buf.slice(0, 200))}`));
      }
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (!connected && (e.code === 'ENOENT' || e.code === 'ECONNREFUSED')) reject(new NoRelayError(path, e.code));
      else reject(new Error(`control socket ${path}: ${e.message}`));
    });
  });
}

export interface QueueCommandResult {
  response: ControlResponse;
  /** socket: the running relay answered; spool: the stopped relay's files, under the spool lock; read-only: a listing without the lock */
  via: 'socket' | 'spool' | 'read-only' | 'database';
  /** for stderr */
  warning?: string;
}

export async function runQueueCommand(cfg: ControlConfigView, req: ControlRequest, now: () => number = Date.now): Promise<QueueCommandResult> {
  if (cfg.spool?.backend === 'postgres' && cfg.spool.postgres) {
    // Shared queue (issue 16): the database is the truth for every node; no relay needs to run.
    const { openPool } = await import('../spool/postgres/connect.js');
    const { databaseBackend } = await import('./database.js');
    const pool = openPool({ ...cfg.spool.postgres, pool: 2 }, { application: 'dane-relay queue' });
    try {
      return { response: await respond(req, databaseBackend(pool), now()), via: 'database' };
    } finally {
      await pool.end().catch(() => undefined);
    }
  }
  const path = controlSocketPath(cfg);
  let noRelay: NoRelayError;
  try {
    return { response: await request(path, req), via: 'socket' };
  } catch (e) {
    if (!(e instanceof NoRelayError)) throw e;
    noRelay = e;
  }
  if (!existsSync(join(cfg.queue_dir, 'msg'))) {
    // Never created: an empty queue. Nothing to lock, and a typo in --config must not create directories.
    const empty = {
      list: async () => ({ messages: [], unreadable: [] }),
      get: async () => undefined,
      setHeld: async () => false,
      remove: async () => false,
      flush: async () => 0,
      requeue: async () => undefined,
      content: async () => undefined,
    };
    return { response: await respond(req, empty, now()), via: 'spool' };
  }
  const lockedBy = (pid?: number) =>
    `the spool ${cfg.queue_dir} is locked by ${pid ? `running process ${pid}` : 'another process'}, but its control socket ${path} does not answer (${noRelay.reason}); the relay may be starting, stopping or stuck, or runs with a different control.socket`;
  if (req.cmd === 'list' || req.cmd === 'show') {
    // Reading needs no lock (inspect.ts reads what is on disk and changes nothing), so a
    // `queue list` can never make a starting relay fail on a held lock. A live lock owner
    // that does not answer is still reported.
    const owner = await readFile(join(cfg.queue_dir, 'lock'), 'utf8').then(parseLock, () => undefined);
    const listing = await listSpool(cfg.queue_dir);
    const ro = {
      list: async () => listing,
      get: async (id: string) => listing.messages.find((m) => m.id === id),
      setHeld: async () => false,
      remove: async () => false,
      flush: async () => 0,
      requeue: async () => undefined,
      content: (id: string, max: number) => readMessagePrefix(cfg.queue_dir, id, max),
    };
    const response = await respond(req, ro, now());
    if (owner && owner.pid !== process.pid && isOwnerAlive(owner))
      return { response, via: 'read-only', warning: `${lockedBy(owner.pid)}; showing the spool files read-only` };
    return { response, via: 'spool' };
  }
  let spool: Spool;
  try {
    spool = await Spool.open(cfg.queue_dir, { log: { warn: () => undefined } });
  } catch (e) {
    if ((e as { code?: unknown }).code !== 'ELOCKED') throw e;
    return { response: { ok: false, code: 'ELOCKED', error: `${lockedBy((e as { pid?: number }).pid)}; nothing was changed` }, via: 'spool' };
  }
  try {
    return { response: await respond(req, spoolBackend(spool), now()), via: 'spool' };
  } finally {
    await spool.close();
  }
}

/**
 * The CLI side of `dane-relay queue …`: ask the running relay over its control socket;
 * when nothing listens there, take the spool lock and do the same on the files; when a
 * process holds the lock but its socket does not answer, say exactly that.
 */
import { createConnection } from 'node:net';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Spool } from '../spool/spool.js';
import { listSpool } from '../spool/inspect.js';
import { respond, type ControlRequest, type ControlResponse } from './commands.js';
import { spoolBackend } from './backends.js';
import { controlSocketPath, type ControlConfigView } from './server.js';

/** No relay listens (no socket file, or nobody behind it). */
export class NoRelayError extends Error {
  constructor(readonly path: string, readonly reason: string) {
    super(`no relay answers on ${path} (${reason})`);
  }
}

/** Sends one request over the socket; rejects with NoRelayError when nothing listens. */
export function request(path: string, req: ControlRequest, timeoutMs = 30_000): Promise<ControlResponse> {
  return new Promise((resolve, reject) => {
    const s = createConnection(path);
    let buf = '';
    let connected = false;
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`control socket ${path} did not answer within ${timeoutMs} ms`)); }, timeoutMs);
    s.setEncoding('utf8');
    s.on('connect', () => { connected = true; s.write(`${JSON.stringify(req)}\n`); });
    s.on('data', (d: string) => { buf += d; });
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
  via: 'socket' | 'spool' | 'read-only';
  /** for stderr */
  warning?: string;
}

export async function runQueueCommand(cfg: ControlConfigView, req: ControlRequest, now: () => number = Date.now): Promise<QueueCommandResult> {
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
    const empty = { list: async () => ({ messages: [], unreadable: [] }), get: async () => undefined, setHeld: async () => false, remove: async () => false, flush: async () => 0, requeue: async () => undefined };
    return { response: await respond(req, empty, now()), via: 'spool' };
  }
  let spool: Spool;
  try {
    spool = await Spool.open(cfg.queue_dir, { log: { warn: () => undefined } });
  } catch (e) {
    if ((e as { code?: unknown }).code !== 'ELOCKED') throw e;
    const pid = (e as { pid?: number }).pid;
    const why = `the spool ${cfg.queue_dir} is locked by ${pid ? `running process ${pid}` : 'another process'}, but its control socket ${path} does not answer (${noRelay.reason}); the relay may be starting, stopping or stuck, or runs with a different control.socket`;
    if (req.cmd === 'list' || req.cmd === 'show') {
      // Reading is safe beside a running relay: show what the files say, and say so.
      const listing = await listSpool(cfg.queue_dir);
      const ro = { list: async () => listing, get: async (id: string) => listing.messages.find((m) => m.id === id), setHeld: async () => false, remove: async () => false, flush: async () => 0, requeue: async () => undefined };
      return { response: await respond(req, ro, now()), via: 'read-only', warning: `${why}; showing the spool files read-only` };
    }
    return { response: { ok: false, code: 'ELOCKED', error: `${why}; nothing was changed` }, via: 'spool' };
  }
  try {
    return { response: await respond(req, spoolBackend(spool), now()), via: 'spool' };
  } finally {
    await spool.close();
  }
}

/**
 * The relay's control socket: a Unix domain socket (default `<queue_dir>/control.sock`,
 * config `control.socket`), mode 0600 in a directory only the relay's user may enter.
 * Protocol: per connection, one JSON request line in, one JSON response line out
 * (commands.ts has the shapes), then the server closes the connection.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { chmod, lstat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { configPath } from '../config/load.js';
import type { Logger } from 'pino';
import { respond, type ControlResponse, type QueueBackend } from './commands.js';
import { printableJson } from '../text/printable.js';
import { ensurePrivateDir } from '../files/private.js';

/** A request is a few hundred bytes; anything longer is not ours. */
const MAX_REQUEST = 64 * 1024;
const REQUEST_TIMEOUT_MS = 10_000;
/** sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL */
const MAX_SOCKET_PATH = 107;

export interface ControlConfigView {
  queue_dir: string;
  baseDir?: string;
  control?: { socket?: string };
  /** spool.backend postgres: queue commands go to the database */
  spool?: { backend: 'file' | 'postgres'; postgres?: import('../spool/postgres/connect.js').PostgresSettings };
}

/** Where the control socket is: `control.socket` (relative to the config file's directory) or `<queue_dir>/control.sock`. */
export function controlSocketPath(cfg: ControlConfigView): string {
  const s = cfg.control?.socket;
  return s ? configPath({ baseDir: cfg.baseDir ?? process.cwd() }, s) : join(cfg.queue_dir, 'control.sock');
}

function answers(path: string): Promise<boolean> {
  return new Promise((res) => {
    const c = createConnection(path);
    c.once('connect', () => {
      c.destroy();
      res(true);
    });
    c.once('error', () => res(false));
  });
}

export class ControlServer {
  private readonly sockets = new Set<Socket>();
  private constructor(
    readonly path: string,
    private readonly server: Server,
  ) {}

  static async start(opts: { path: string; backend: QueueBackend; now: () => number; log: Logger }): Promise<ControlServer> {
    const path = opts.path;
    if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
      throw new Error(`control.socket ${path} is longer than ${MAX_SOCKET_PATH} bytes (the Unix socket limit); set a shorter control.socket`);
    }
    // Owner-only directory: the socket's own mode is not honoured by every system, a directory's is.
    // (An existing directory was checked at start: owned by us, not writable by others; files/checks.ts.)
    await ensurePrivateDir(dirname(path));
    const st = await lstat(path).catch(() => undefined);
    if (st) {
      // lstat: a link planted here is "not a socket", never followed, never removed.
      if (!st.isSocket())
        throw new Error(`control.socket ${path} exists and is not a socket${st.isSymbolicLink() ? ' (a symbolic link)' : ''}; refusing to replace it`);
      if (await answers(path)) throw new Error(`control socket ${path} is in use by another process`);
      await unlink(path); // left by a relay that was killed
    }
    const srv = new ControlServer(path, createServer());
    srv.server.on('connection', (s) => srv.serve(s, opts));
    // bind() happens inside listen(), synchronously: the umask makes the socket 0600 from birth.
    const old = process.umask(0o177);
    try {
      await new Promise<void>((res, rej) => {
        srv.server.once('error', rej);
        srv.server.listen(path, () => {
          srv.server.off('error', rej);
          res();
        });
      });
    } finally {
      process.umask(old);
    }
    // The umask above made it 0600 at bind(); chmod follows links, so only after checking it is still our socket.
    if ((await lstat(path)).isSocket()) await chmod(path, 0o600);
    opts.log.info({ control_socket: path }, 'control socket listening');
    return srv;
  }

  private serve(s: Socket, opts: { backend: QueueBackend; now: () => number; log: Logger }): void {
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
    s.on('error', () => undefined);
    s.setTimeout(REQUEST_TIMEOUT_MS, () => s.destroy());
    let buf = '';
    let done = false;
    // Addresses and reasons in a listing are outside text: a client reading the socket directly gets them printable too.
    const reply = (r: ControlResponse) => {
      s.end(`${printableJson(r)}\n`);
    };
    s.setEncoding('utf8');
    s.on('data', (chunk: string) => {
      if (done) return;
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) {
        if (buf.length > MAX_REQUEST) {
          done = true;
          reply({ ok: false, code: 'EINVAL', error: 'request too long' });
        }
        return;
      }
      done = true;
      let raw: unknown;
      try {
        raw = JSON.parse(buf.slice(0, nl));
      } catch (e) {
        reply({ ok: false, code: 'EINVAL', error: `request is not JSON: ${(e as Error).message}` });
        return;
      }
      void respond(raw, opts.backend, opts.now()).then((r) => {
        const req = raw as { cmd?: unknown; id?: unknown; domain?: unknown };
        const fields = { cmd: req?.cmd, queue_id: req?.id, domain: req?.domain };
        if (r.ok) {
          if (req.cmd !== 'list' && req.cmd !== 'show') opts.log.info(fields, 'queue control');
        } else opts.log.warn({ ...fields, code: r.code, error: r.error }, 'queue control refused');
        reply(r);
      });
    });
  }

  async close(): Promise<void> {
    await new Promise<void>((res) => {
      this.server.close(() => res());
      for (const s of this.sockets) s.destroy();
    });
    await unlink(this.path).catch(() => undefined);
  }
}

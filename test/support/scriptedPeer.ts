/**
 * A scripted SMTP server on raw node:net (and node:tls after a scripted STARTTLS), for tests of
 * the delivery client against every reply a peer can send: the script answers each command with
 * raw bytes of its choosing (any code, multi-line, inconsistent, garbage), closes, or stalls.
 *
 * It also keeps the server's side of the truth per transaction (RFC 5321 §4.3.2): whether it
 * answered DATA with a well-formed 354, received the end-of-data dot and answered that with a
 * well-formed 2xx — or (RFC 3030 CHUNKING) received every octet of `BDAT <n> LAST` and answered
 * it with a well-formed 2xx — the only ways a message is delivered. Tests compare the client's verdicts
 * with it.
 */
import net from 'node:net';
import tls from 'node:tls';
import { Duplex } from 'node:stream';
import type { Connector } from '../../src/delivery/smtpClient.js';
import type { Target } from '../../src/delivery/types.js';

export type PeerAction =
  /**
   * write these bytes (one or more reply lines, CRLF included; or garbage); `thenClose`: and close (FIN) after them;
   * `hold`: counted as this command's reply but written only together with the next reply that is not held
   * (RFC 2920 §3.1 lets a server defer its replies while pipelined commands keep arriving)
   */
  | { reply: string; thenClose?: true; hold?: true }
  | { close: true }
  /** never answer; the client's stage timeout must end it */
  | { stall: true };

export interface PeerTransaction {
  /** the MAIL FROM address */
  from: string;
  rcpts: string[];
  /** the server answered DATA with a well-formed 354 and entered the data phase */
  dataPhase: boolean;
  /** the end-of-data dot arrived */
  dot: boolean;
  /** RCPTs answered with a well-formed 2xx */
  accepted: string[];
  /** the dot (or `BDAT … LAST`) was answered with a well-formed 2xx: the message is delivered to `accepted` (server's truth) */
  delivered: boolean;
  /** the body came in BDAT chunks (RFC 3030): `body` is their octets as sent, no transparency dots */
  bdat?: true;
  /** each reply of this transaction (MAIL, RCPT…, DATA, 'dot'): its code when well-formed, else undefined */
  replies: { step: string; code?: number }[];
  /**
   * the body bytes as received (dot-stuffed wire form), when the dot arrived; when the connection
   * closed inside the data phase instead, what had arrived by then (`dot` false); BDAT: every chunk's
   * octets, `dot` true once the LAST chunk arrived whole
   */
  body?: Buffer;
}

export interface PeerConnection {
  readonly id: number;
  /** every command line, in order (body lines excluded) */
  readonly commands: string[];
  /**
   * the same lines grouped by the read they arrived in: the lines one `data` event completed (RFC 2920
   * pipelining shows as several commands in one group; a client that waited for a reply, as one alone)
   */
  readonly reads: string[][];
  /** the TLS handshake after STARTTLS completed */
  tls: boolean;
  readonly transactions: PeerTransaction[];
}

export interface ConnectionScript {
  greeting(c: PeerConnection): PeerAction;
  /** a command line (without CRLF), outside the data phase */
  command(line: string, c: PeerConnection): PeerAction;
  /** after the end-of-data dot of the current transaction */
  endOfData(c: PeerConnection, t: PeerTransaction): PeerAction;
  /** the TLS context to upgrade with after a 220 reply to STARTTLS; none = the 220 is followed by nothing */
  tlsContext?(c: PeerConnection): tls.SecureContext | undefined;
}

export interface ScriptedPeer {
  host: string;
  port: number;
  readonly connections: PeerConnection[];
  close(): Promise<void>;
}

/** A well-formed reply whose every line carries the same code in class `cls` (2, 3, ...). */
export function wellFormed(reply: string, cls?: number): number | undefined {
  const lines = reply.split('\r\n');
  if (lines.pop() !== '' || lines.length === 0) return undefined;
  let code: string | undefined;
  for (let i = 0; i < lines.length; i++) {
    const m = /^([2-5]\d\d)([ -])/.exec(lines[i]!) ?? /^([2-5]\d\d)()$/.exec(lines[i]!);
    if (!m || /[\r\n\0]/.test(lines[i]!)) return undefined;
    if (code !== undefined && m[1] !== code) return undefined;
    code = m[1];
    const last = i === lines.length - 1;
    if (last !== (m[2] !== '-')) return undefined;
  }
  const n = Number(code);
  return cls === undefined || Math.floor(n / 100) === cls ? n : undefined;
}

/**
 * The code of the first reply in `raw` when it is well formed (see wellFormed), else undefined: what the peer
 * answered to its command. Anything after the first reply's last line ("NNN " or a bare "NNN") is an extra
 * reply the peer sent, which answers no command (a peer out of step, replyFuzz.ts `twice`).
 */
export function firstReplyCode(raw: string): number | undefined {
  const lines = raw.split('\r\n');
  const end = lines.findIndex((l) => !/^\d{3}-/.test(l));
  if (end < 0 || end === lines.length - 1) return wellFormed(raw);
  return wellFormed(`${lines.slice(0, end + 1).join('\r\n')}\r\n`);
}

export interface ScriptedPeerOptions {
  host?: string;
  port?: number;
  script: (c: PeerConnection) => ConnectionScript;
  /** keep every connection in `connections` (default true); long fuzz runs use the hooks instead */
  retain?: boolean;
  /** a transaction begins (MAIL); the object is updated as it goes on */
  onTransaction?: (t: PeerTransaction, c: PeerConnection) => void;
  /** the connection is gone */
  onClose?: (c: PeerConnection) => void;
}

/**
 * The peer's side of one connection: reads commands from `raw` and answers by the script. `raw` is a
 * TCP socket (startScriptedPeer) or one end of an in-process pair (scriptedConnector).
 */
function serve(raw: Duplex, conn: PeerConnection, o: Pick<ScriptedPeerOptions, 'script' | 'onTransaction' | 'onClose' | 'retain'>, onGone: () => void): void {
  {
    const script = o.script(conn);
    let sock: Duplex = raw;
    let buf: Buffer = Buffer.alloc(0);
    let current: PeerTransaction | undefined;
    /** inside DATA: searching for the dot */
    let inData = false;
    /** inside a BDAT chunk (RFC 3030 §2): octets still to come, then the reply */
    let bdat: { line: string; left: number; last: boolean; t?: PeerTransaction } | undefined;
    let done = false;
    raw.on('close', () => {
      onGone();
      // A data phase cut short: no message, but the bytes reached the peer all the same.
      if (inData && current && !current.dot) current.body = Buffer.from(buf);
      o.onClose?.(conn);
    });
    raw.on('error', () => undefined);

    /** Performs an action; false when the conversation is over (closed or stalled). */
    let held = '';
    const act = (a: PeerAction): boolean => {
      if (done) return false;
      if ('close' in a) {
        done = true;
        sock.destroy();
        return false;
      }
      if ('stall' in a) {
        done = true;
        return false;
      }
      if (a.hold) {
        held += a.reply;
        return true;
      }
      sock.write(held + a.reply);
      held = '';
      if (a.thenClose) {
        done = true;
        sock.end();
        return false;
      }
      return true;
    };

    const onData = (chunk: Buffer): void => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      let read: string[] | undefined;
      while (!done) {
        if (bdat) {
          const take = Math.min(bdat.left, buf.length);
          const c = bdat;
          if (c.t) c.t.body = Buffer.concat([c.t.body ?? Buffer.alloc(0), buf.subarray(0, take)]);
          buf = buf.subarray(take);
          c.left -= take;
          if (c.left > 0) return;
          bdat = undefined;
          // the reply comes after the chunk's last octet (RFC 3030 §2)
          const a = script.command(c.line, conn);
          const code = 'reply' in a ? firstReplyCode(a.reply) : undefined;
          if (c.t) {
            c.t.replies.push({ step: 'BDAT', ...(code !== undefined ? { code } : {}) });
            if (c.last) {
              c.t.dot = true;
              if (code !== undefined && Math.floor(code / 100) === 2) c.t.delivered = true;
              current = undefined;
            }
          }
          if (!act(a)) return;
          continue;
        }
        if (inData) {
          const atStart = buf.length >= 3 && buf[0] === 0x2e && buf[1] === 0x0d && buf[2] === 0x0a;
          const end = atStart ? 0 : buf.indexOf('\r\n.\r\n');
          if (!atStart && end < 0) return;
          const cut = atStart ? 3 : end + 5;
          const t = current!;
          t.dot = true;
          t.body = Buffer.from(buf.subarray(0, cut));
          buf = buf.subarray(cut);
          inData = false;
          const a = script.endOfData(conn, t);
          current = undefined;
          const code = 'reply' in a ? firstReplyCode(a.reply) : undefined;
          t.replies.push({ step: 'dot', ...(code !== undefined ? { code } : {}) });
          if (code !== undefined && Math.floor(code / 100) === 2) t.delivered = true;
          if (!act(a)) return;
          continue;
        }
        const nl = buf.indexOf('\n');
        if (nl < 0) {
          if (buf.length > 64 * 1024) {
            done = true;
            sock.destroy();
          }
          return;
        }
        const line = buf.subarray(0, nl > 0 && buf[nl - 1] === 0x0d ? nl - 1 : nl).toString('utf8');
        buf = buf.subarray(nl + 1);
        conn.commands.push(line);
        if (!read) conn.reads.push((read = []));
        read.push(line);
        const verb = line.split(' ')[0]!.toUpperCase();
        if (verb === 'MAIL') {
          current = { from: /<([^>]*)>/.exec(line)?.[1] ?? '', rcpts: [], accepted: [], dataPhase: false, dot: false, delivered: false, replies: [] };
          if (o.retain !== false) conn.transactions.push(current);
          o.onTransaction?.(current, conn);
        } else if (verb === 'RCPT' && current) {
          current.rcpts.push(/<([^>]*)>/.exec(line)?.[1] ?? '');
        } else if (verb === 'RSET') {
          current = undefined;
        } else if (verb === 'BDAT') {
          const m = /^BDAT (\d+)( LAST)?$/i.exec(line);
          if (m) {
            // the octets are read whatever the transaction's state: a pipelined chunk after a refusal is discarded
            if (current) {
              current.bdat = true;
              current.dataPhase = true;
            }
            bdat = { line, left: Number(m[1]), last: !!m[2], ...(current ? { t: current } : {}) };
            continue;
          }
        }
        const a = script.command(line, conn);
        if (current && (verb === 'MAIL' || verb === 'RCPT' || verb === 'DATA')) {
          const code = 'reply' in a ? firstReplyCode(a.reply) : undefined;
          current.replies.push({ step: verb, ...(code !== undefined ? { code } : {}) });
          if (verb === 'RCPT' && code !== undefined && Math.floor(code / 100) === 2) current.accepted.push(current.rcpts[current.rcpts.length - 1]!);
        }
        if (verb === 'DATA' && 'reply' in a && firstReplyCode(a.reply) === 354 && current) {
          current.dataPhase = true;
          inData = true;
        }
        if (verb === 'STARTTLS' && 'reply' in a && firstReplyCode(a.reply) === 220) {
          const ctx = script.tlsContext?.(conn);
          if (!act(a)) return;
          if (!ctx) continue;
          // RFC 3207 §4: the handshake starts right after the 220; nothing left in the buffer is read.
          sock.off('data', onData);
          buf = Buffer.alloc(0);
          const t = new tls.TLSSocket(raw, { isServer: true, secureContext: ctx });
          t.on('error', () => {
            done = true;
            raw.destroy();
          });
          t.once('secure', () => {
            conn.tls = true;
          });
          t.on('data', onData);
          sock = t;
          return;
        }
        if (verb === 'QUIT' && 'reply' in a) {
          act(a);
          done = true;
          sock.end();
          return;
        }
        if (!act(a)) return;
      }
    };
    raw.on('data', onData);
    act(script.greeting(conn));
  }
}

export async function startScriptedPeer(o: ScriptedPeerOptions): Promise<ScriptedPeer> {
  const host = o.host ?? '127.0.0.1';
  const connections: PeerConnection[] = [];
  const sockets = new Set<net.Socket>();
  let ids = 0;

  const server = net.createServer((raw) => {
    // Replies are small and each waits for the client: without this, Nagle + delayed ACK add ~40 ms each.
    raw.setNoDelay(true);
    sockets.add(raw);
    const conn: PeerConnection = { id: ids++, commands: [], reads: [], tls: false, transactions: [] };
    if (o.retain !== false) connections.push(conn);
    serve(raw, conn, o, () => sockets.delete(raw));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    host,
    port: (server.address() as net.AddressInfo).port,
    connections,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** "250-a\r\n250-b\r\n250 c\r\n" */
export function multiline(code: number, lines: string[]): string {
  return lines.map((l, i) => `${code}${i === lines.length - 1 ? ' ' : '-'}${l}\r\n`).join('');
}

/**
 * A well-behaved script with per-command overrides: `answer(verb, line, c)` returns an action to
 * use instead of the normal reply, or undefined for the normal one.
 */
export function normalScript(
  o: {
    ext?: string[];
    answer?: (verb: string, line: string, c: PeerConnection) => PeerAction | undefined;
    endOfData?: (c: PeerConnection, t: PeerTransaction) => PeerAction | undefined;
    greeting?: PeerAction;
  } = {},
): () => ConnectionScript {
  return () => ({
    greeting: () => o.greeting ?? { reply: '220 peer.test.invalid ESMTP\r\n' },
    command(line, c) {
      const verb = line.split(' ')[0]!.toUpperCase();
      const over = o.answer?.(verb, line, c);
      if (over) return over;
      switch (verb) {
        case 'EHLO':
          return { reply: multiline(250, ['peer.test.invalid', ...(o.ext ?? [])]) };
        case 'DATA':
          return { reply: '354 go ahead\r\n' };
        case 'QUIT':
          return { reply: '221 2.0.0 bye\r\n' };
        default:
          return { reply: '250 2.0.0 ok\r\n' };
      }
    },
    endOfData: (c, t) => o.endOfData?.(c, t) ?? { reply: '250 2.0.0 queued\r\n' },
  });
}

/**
 * Two connected in-process streams: what one writes, the other reads; ending one ends the other's
 * reading side; destroying one closes both (as a TCP peer sees a reset). No socket, no port. Bytes
 * arrive in a later turn of the event loop, in order, as from a network: delivered inside the
 * writer's call stack, one TLS stack would run inside the other's write (Node's TLS over a
 * JS stream does not survive that).
 */
export function duplexPair(): [Duplex, Duplex] {
  const ends: Duplex[] = [];
  const deliver = (to: number, chunk: Buffer | null): void => {
    setImmediate(() => {
      const other = ends[to]!;
      if (!other.destroyed) other.push(chunk);
    });
  };
  const make = (i: number): Duplex =>
    new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        deliver(1 - i, chunk);
        cb();
      },
      final(cb) {
        deliver(1 - i, null);
        cb();
      },
      destroy(err, cb) {
        setImmediate(() => {
          const other = ends[1 - i]!;
          if (!other.destroyed) other.destroy();
        });
        cb(err);
      },
    });
  ends.push(make(0), make(1));
  return [ends[0]!, ends[1]!];
}

export interface ScriptedConnector {
  /** the client's connector: each dial of a listed address gets a fresh in-process peer connection */
  connector: Connector;
  /** every connection, with the address it was dialled at */
  readonly connections: (PeerConnection & { address: string })[];
  /** every dial, in order, including refused ones */
  readonly dials: string[];
}

/**
 * A scripted SMTP peer behind a `Connector` instead of a port (issue 14): the client under test dials
 * `target.address`; an address with a script gets an in-process connection to it, any other is refused
 * like a closed port (ECONNREFUSED). The dialogue is the same real SMTP as over loopback.
 */
export function scriptedConnector(
  peers: Record<string, (c: PeerConnection) => ConnectionScript>,
  o: Pick<ScriptedPeerOptions, 'onTransaction' | 'onClose'> = {},
): ScriptedConnector {
  const connections: (PeerConnection & { address: string })[] = [];
  const dials: string[] = [];
  let ids = 0;
  const connector: Connector = async (target: Target) => {
    dials.push(target.address);
    const script = peers[target.address];
    if (!script) throw Object.assign(new Error(`connect ECONNREFUSED ${target.address}:${target.port}`), { code: 'ECONNREFUSED' });
    const [client, server] = duplexPair();
    const conn = { id: ids++, address: target.address, commands: [], reads: [], tls: false, transactions: [] };
    connections.push(conn);
    serve(server, conn, { script, ...o }, () => undefined);
    return client;
  };
  return { connector, connections, dials };
}

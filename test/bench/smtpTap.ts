/**
 * A transparent TCP relay in front of an SMTP server that notes when each message got its 250 after
 * the final dot (RFC 5321 §4.1.1.4), keyed by the message's Message-ID: the benchmark's load
 * generator (Postfix's smtp-source) reports only its total run time, so the per-message
 * "accepted at" times that `bench:postfix` needs to split end to end into ingest, queue wait and
 * tail are taken here, the same way for every relay under test. Bytes are passed on unchanged.
 *
 * Replies are matched to commands in order (one reply per command line, one per message body),
 * which also holds for a pipelining client (RFC 2920 §3.1: replies come in command order).
 */
import net from 'node:net';

/** A Message-ID in the first `HEAD_SCAN` octets of the body (smtp-source puts it in its 4th line). */
export const MESSAGE_ID = /^message-id:[ \t]*(<[^>\r\n]*>)/im;
const HEAD_SCAN = 8192;
const DOT = Buffer.from('\r\n.\r\n');

/** `at`: when the command (or the body's end) passed the tap on its way to the server; `step`: what it was */
type Expect = ({ kind: 'greeting' } | { kind: 'cmd' } | { kind: 'data' } | { kind: 'dot'; id: string | undefined }) & { at?: number; step?: ReplyStep };

/** The transaction steps whose reply latency the tap notes: MAIL, RCPT, DATA (to the 354) and the body's end (to the 250). */
export type ReplyStep = 'MAIL' | 'RCPT' | 'DATA' | 'dot';

export interface TapStats {
  /** wall-clock ms (performance.timeOrigin based) of each message's 250 after the dot, by Message-ID */
  accepted: Map<string, number>;
  /** messages whose final reply was not 250, or without a Message-ID */
  refused: number;
  unnamed: number;
  /**
   * ms from a command passing the tap to its reply passing it back, per step: the server's answer time as the
   * client sees it (for MAIL, RCPT and DATA mostly how long the command waited for the server to get to it; for
   * the dot, the commit to stable storage as well)
   */
  replyMs: Record<ReplyStep, number[]>;
}

export class SmtpTap {
  readonly stats: TapStats = { accepted: new Map(), refused: 0, unnamed: 0, replyMs: { MAIL: [], RCPT: [], DATA: [], dot: [] } };
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();

  private constructor(private readonly target: { host: string; port: number }) {
    this.server = net.createServer((c) => this.session(c));
  }

  static async listen(host: string, target: { host: string; port: number }): Promise<SmtpTap & { port: number }> {
    const tap = new SmtpTap(target);
    await new Promise<void>((resolve, reject) => {
      tap.server.once('error', reject);
      tap.server.listen(0, host, () => resolve());
    });
    const port = (tap.server.address() as net.AddressInfo).port;
    return Object.assign(tap, { port });
  }

  /** forget what earlier runs recorded */
  reset(): void {
    this.stats.accepted.clear();
    this.stats.refused = 0;
    this.stats.unnamed = 0;
    for (const v of Object.values(this.stats.replyMs)) v.length = 0;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private session(client: net.Socket): void {
    const upstream = net.connect(this.target.port, this.target.host);
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.setNoDelay(true);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    const expect: Expect[] = [{ kind: 'greeting' }];
    let mode: 'cmd' | 'data' = 'cmd';
    let line = '';
    /** the last 4 octets of the body so far (a dot line split across reads) and its first octets */
    let tail = Buffer.alloc(0);
    let head = '';
    let replyLine = '';

    const fromClient = (chunk: Buffer) => {
      let rest = chunk;
      while (rest.length > 0) {
        if (mode === 'data') {
          if (head.length < HEAD_SCAN) head += rest.subarray(0, HEAD_SCAN - head.length).toString('latin1');
          // "\r\n.\r\n" ends the body; the CRLF before the dot may be the one that ended the DATA line.
          const joined = Buffer.concat([tail, rest]);
          const at = joined.indexOf(DOT);
          if (at < 0) {
            tail = joined.subarray(Math.max(0, joined.length - (DOT.length - 1)));
            return;
          }
          const id = MESSAGE_ID.exec(head)?.[1];
          expect.push({ kind: 'dot', id, at: performance.now(), step: 'dot' });
          mode = 'cmd';
          rest = joined.subarray(at + DOT.length);
          continue;
        }
        const s = rest.toString('latin1');
        const nl = s.indexOf('\n');
        if (nl < 0) {
          line += s;
          return;
        }
        line += s.slice(0, nl);
        rest = rest.subarray(nl + 1);
        if (/^data\s*$/i.test(line.trim())) {
          expect.push({ kind: 'data', at: performance.now(), step: 'DATA' });
          // the body follows at once (a client does not wait for 354 before switching, RFC 2920 §3.1 aside)
          mode = 'data';
          tail = Buffer.from('\r\n');
          head = '';
        } else {
          const verb = /^\s*(mail|rcpt)\b/i.exec(line)?.[1]?.toUpperCase() as 'MAIL' | 'RCPT' | undefined;
          expect.push({ kind: 'cmd', ...(verb ? { at: performance.now(), step: verb } : {}) });
        }
        line = '';
      }
    };

    const fromServer = (chunk: Buffer) => {
      replyLine += chunk.toString('latin1');
      let nl = replyLine.indexOf('\n');
      while (nl >= 0) {
        const l = replyLine.slice(0, nl);
        replyLine = replyLine.slice(nl + 1);
        nl = replyLine.indexOf('\n');
        if (!/^\d{3}(?: |\r?$)/.test(l)) continue; // a continuation line ("250-...")
        const e = expect.shift();
        const code = Number(l.slice(0, 3));
        if (e?.step && e.at !== undefined) this.stats.replyMs[e.step].push(performance.now() - e.at);
        if (e?.kind === 'data' && code !== 354) mode = 'cmd'; // DATA refused: no body follows
        if (e?.kind !== 'dot') continue;
        if (code !== 250) this.stats.refused++;
        else if (e.id === undefined) this.stats.unnamed++;
        else this.stats.accepted.set(e.id, performance.timeOrigin + performance.now());
      }
    };

    client.on('data', (c: Buffer) => {
      fromClient(c);
      upstream.write(c);
    });
    upstream.on('data', (c: Buffer) => {
      fromServer(c);
      client.write(c);
    });
  }
}

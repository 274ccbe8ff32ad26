/**
 * SMTP peers that misbehave below the protocol level smtp-server lets a test reach: replies that
 * never end, replies trickled one byte at a time, a line without end, binary garbage, a connection
 * dropped in the middle of DATA. Raw node:net on loopback; each records what it got.
 */
import net from 'node:net';

export type HostileBehaviour =
  /** "220-" lines forever, never the final "220 " */
  | 'endless-greeting'
  /** a normal greeting, then "250-" lines forever in reply to EHLO */
  | 'endless-ehlo'
  /** the greeting one byte every 100 ms, for ever ("220-" continuation lines) */
  | 'trickle-greeting'
  /** one reply line that never ends (no LF) */
  | 'endless-line'
  /** random bytes instead of a greeting */
  | 'garbage'
  /** normal session until some body bytes arrived, then the connection is reset */
  | 'drop-mid-data'
  /** after 354, closes at once without reading the body */
  | 'close-after-354';

export interface HostilePeer {
  host: string;
  port: number;
  behaviour: HostileBehaviour;
  readonly connections: number;
  /** body bytes received in DATA (never acknowledged) */
  readonly dataBytes: number;
  close(): Promise<void>;
}

const CRLF = '\r\n';

/** Writes `chunk()` for as long as the peer reads, honouring backpressure. */
function flood(sock: net.Socket, chunk: () => Buffer | string): void {
  const pump = (): void => {
    while (!sock.destroyed && sock.writable) {
      if (!sock.write(chunk())) return void sock.once('drain', pump);
    }
  };
  pump();
}

export async function startHostilePeer(o: { host: string; port: number; behaviour: HostileBehaviour }): Promise<HostilePeer> {
  const sockets = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const st = { connections: 0, dataBytes: 0 };
  const b = o.behaviour;
  const server = net.createServer((sock) => {
    st.connections++;
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    if (b === 'endless-greeting') return flood(sock, () => `220-${'x'.repeat(70)}${CRLF}`);
    if (b === 'endless-line') return flood(sock, () => `220 ${'y'.repeat(1000)}`);
    if (b === 'garbage') return flood(sock, () => Buffer.from(Array.from({ length: 512 }, () => Math.floor(Math.random() * 256))));
    if (b === 'trickle-greeting') {
      const text = `220-slow${CRLF}`;
      let i = 0;
      const t = setInterval(() => {
        if (sock.destroyed) return void clearInterval(t);
        sock.write(text[i++ % text.length]!);
      }, 100);
      timers.add(t);
      sock.on('close', () => {
        clearInterval(t);
        timers.delete(t);
      });
      return;
    }
    sock.write(`220 hostile.test ESMTP${CRLF}`);
    let buf = '';
    let inData = false;
    sock.on('data', (d: Buffer) => {
      if (inData) {
        st.dataBytes += d.length;
        if (b === 'drop-mid-data') sock.resetAndDestroy();
        return;
      }
      buf += d.toString('latin1');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const verb = buf.slice(0, nl).trim().split(' ')[0]!.toUpperCase();
        buf = buf.slice(nl + 1);
        if (verb === 'EHLO' && b === 'endless-ehlo') return flood(sock, () => `250-${'z'.repeat(70)}${CRLF}`);
        if (verb === 'EHLO') sock.write(`250-hostile.test${CRLF}250 8BITMIME${CRLF}`);
        else if (verb === 'DATA') {
          sock.write(`354 go ahead${CRLF}`);
          if (b === 'close-after-354') return void sock.destroy();
          inData = true;
          if (buf.length) {
            st.dataBytes += buf.length;
            if (b === 'drop-mid-data') sock.resetAndDestroy();
          }
          return;
        } else if (verb === 'QUIT') sock.end(`221 bye${CRLF}`);
        else sock.write(`250 2.0.0 Ok${CRLF}`);
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => resolve());
  });
  return {
    host: o.host,
    port: o.port,
    behaviour: b,
    get connections() {
      return st.connections;
    },
    get dataBytes() {
      return st.dataBytes;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearInterval(t);
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

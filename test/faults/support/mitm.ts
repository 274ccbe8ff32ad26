/**
 * Active attackers between the relay and a destination, on loopback. Each one listens where the
 * destination's address records point and records every byte the relay sends it — in clear and,
 * when it gets the relay to talk TLS to it, decrypted — so a test can prove that nothing of the
 * envelope or body ever reached it.
 *
 * Modes:
 * - `terminate`: impersonates the MX: greets, offers STARTTLS, completes the handshake with its
 *   own certificate chain (chosen by the test to look as plausible as possible) and then accepts
 *   anything, like a real interceptor would.
 * - `strip`: transparent proxy to the genuine server that removes STARTTLS from EHLO replies.
 * - `reject-starttls`: transparent proxy that answers the relay's STARTTLS itself with 454.
 * - `inject`: impersonates the MX and answers STARTTLS with "220" followed, in the same write,
 *   by an extra reply — the STARTTLS command/response injection class (CVE-2011-0411): a client
 *   that keeps those bytes would read them as the first reply inside TLS. Then it terminates TLS
 *   with its own certificate, like `terminate`.
 */
import net from 'node:net';
import tls from 'node:tls';

export type MitmMode = 'terminate' | 'strip' | 'reject-starttls' | 'inject';
export const MITM_MODES: MitmMode[] = ['terminate', 'strip', 'reject-starttls', 'inject'];

export interface Mitm {
  host: string;
  port: number;
  mode: MitmMode;
  /** TCP connections the relay made to the attacker */
  readonly connections: number;
  /** completed TLS handshakes with the attacker's own certificate */
  readonly handshakes: number;
  /** everything the relay sent, in clear and (after a handshake with the attacker) decrypted */
  seen(): string;
  /** true when any of `markers` appears in what the relay sent */
  leaked(markers: string[]): boolean;
  close(): Promise<void>;
}

export interface MitmOptions {
  host: string;
  port: number;
  mode: MitmMode;
  /** the genuine server (strip / reject-starttls forward to it) */
  upstream?: { host: string; port: number };
  /** the attacker's key and chain (PEM, leaf first) for terminate / inject */
  tls?: { key: string; cert: string };
  name?: string;
}

const CRLF = '\r\n';

export async function startMitm(o: MitmOptions): Promise<Mitm> {
  const seen: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const state = { connections: 0, handshakes: 0 };
  const name = o.name ?? 'mx.attacker.invalid';

  /** A minimal SMTP server over `sock` (already greeted): accepts everything, records it. */
  const impostor = (sock: net.Socket | tls.TLSSocket, secure: boolean, onStartTls?: () => void): void => {
    let buf = '';
    let inData = false;
    sock.on('data', (d: Buffer) => {
      seen.push(Buffer.from(d));
      buf += d.toString('latin1');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        if (inData) {
          if (line === '.') {
            inData = false;
            sock.write(`250 2.0.0 Ok: stolen${CRLF}`);
          }
          continue;
        }
        const verb = line.split(' ')[0]!.toUpperCase();
        if (verb === 'EHLO') sock.write(`250-${name}${CRLF}250-PIPELINING${CRLF}250-8BITMIME${CRLF}${secure ? '' : `250-STARTTLS${CRLF}`}250 SMTPUTF8${CRLF}`);
        else if (verb === 'HELO') sock.write(`250 ${name}${CRLF}`);
        else if (verb === 'STARTTLS' && !secure && onStartTls) {
          sock.removeAllListeners('data');
          onStartTls();
          return;
        } else if (verb === 'DATA') {
          inData = true;
          sock.write(`354 go ahead${CRLF}`);
        } else if (verb === 'QUIT') {
          sock.end(`221 2.0.0 Bye${CRLF}`);
        } else sock.write(`250 2.0.0 Ok${CRLF}`);
      }
    });
  };

  const upgrade = (sock: net.Socket): void => {
    const secure = new tls.TLSSocket(sock, { isServer: true, key: o.tls!.key, cert: o.tls!.cert, minVersion: 'TLSv1.2' });
    secure.on('error', () => undefined);
    secure.on('secure', () => {
      state.handshakes++;
    });
    impostor(secure, true);
  };

  const onConnection = (sock: net.Socket): void => {
    state.connections++;
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    if (o.mode === 'terminate' || o.mode === 'inject') {
      sock.write(`220 ${name} ESMTP${CRLF}`);
      impostor(sock, false, () => {
        // The injected reply rides in the same segment as the 220 (one write).
        sock.write(o.mode === 'inject' ? `220 2.0.0 Ready to start TLS${CRLF}250-${name}${CRLF}250 AUTH PLAIN${CRLF}` : `220 2.0.0 Ready to start TLS${CRLF}`);
        upgrade(sock);
      });
      return;
    }
    // Proxy modes.
    const up = net.connect({ host: o.upstream!.host, port: o.upstream!.port });
    sockets.add(up);
    up.on('close', () => {
      sockets.delete(up);
      sock.destroy();
    });
    up.on('error', () => sock.destroy());
    sock.on('close', () => up.destroy());
    let fromServer = '';
    up.on('data', (d: Buffer) => {
      if (o.mode !== 'strip') return void sock.write(d);
      // Rewrite whole lines only: a capability split across segments must still be caught.
      fromServer += d.toString('latin1');
      const cut = fromServer.lastIndexOf('\n') + 1;
      const lines = fromServer.slice(0, cut);
      fromServer = fromServer.slice(cut);
      if (lines) sock.write(Buffer.from(lines.replace(/^(\d{3}[ -])STARTTLS\b/gim, '$1XXXXXXXA'), 'latin1'));
    });
    let fromClient = '';
    let passthrough = false;
    sock.on('data', (d: Buffer) => {
      seen.push(Buffer.from(d));
      if (o.mode !== 'reject-starttls' || passthrough) return void up.write(d);
      fromClient += d.toString('latin1');
      let nl: number;
      while ((nl = fromClient.indexOf('\n')) >= 0) {
        const line = fromClient.slice(0, nl + 1);
        fromClient = fromClient.slice(nl + 1);
        if (/^STARTTLS\r?\n$/i.test(line)) sock.write(`454 4.7.0 TLS not available due to temporary reason${CRLF}`);
        else up.write(Buffer.from(line, 'latin1'));
        if (/^DATA\r?\n$/i.test(line)) {
          // The body may contain a line reading "STARTTLS"; stop interpreting from here.
          passthrough = true;
          if (fromClient) up.write(Buffer.from(fromClient, 'latin1'));
          fromClient = '';
          return;
        }
      }
    });
  };

  const server = net.createServer(onConnection);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => resolve());
  });
  return {
    host: o.host,
    port: o.port,
    mode: o.mode,
    get connections() {
      return state.connections;
    },
    get handshakes() {
      return state.handshakes;
    },
    seen: () => Buffer.concat(seen).toString('latin1'),
    leaked(markers: string[]) {
      const text = Buffer.concat(seen).toString('latin1').toLowerCase();
      return markers.some((m) => text.includes(m.toLowerCase()));
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * A real SMTP receiver for tests, on smtp-server, bound to loopback.
 *
 * It records what a peer MTA would see: every command line (so tests can prove
 * that e.g. MAIL FROM or a post-TLS EHLO never arrived, digest DANE-43/63), the
 * SNI name asked for in the TLS handshake (DANE-60), the negotiated TLS version
 * (DANE-61) and the exact body bytes after dot-unstuffing.
 */
import { createHash } from 'node:crypto';
import type net from 'node:net';
import type tls from 'node:tls';
import { SMTPServer } from 'smtp-server';
import { recordDsn } from './dsnGrammar.js';
import type { SMTPServerOptions, SMTPServerSession } from 'smtp-server';

export interface ReceivedMessage {
  from: string;
  to: string[];
  /** body as received, dot-unstuffed, without the final ".\r\n"; empty when keepBody is false */
  body: Buffer;
  /** body length and SHA-256 (hex), always set, so huge bodies can be checked without keeping them */
  size: number;
  sha256: string;
  secure: boolean;
  /** MAIL FROM carried REQUIRETLS (RFC 8689) */
  requireTls: boolean;
  servername?: string;
  tlsProtocol?: string;
  clientAddress: string;
  remotePort: number;
  receivedAt: number;
}

export interface Rejection {
  code: number;
  message: string;
}

export interface ReceiverOptions {
  /** default 127.0.0.1; any 127.x.y.z works on Linux */
  host?: string;
  /** 0 = random */
  port?: number;
  /** offers STARTTLS when set; minVersion/maxVersion/ciphers go to the TLS context */
  tls?: { key: string; cert: string; minVersion?: tls.SecureVersion; maxVersion?: tls.SecureVersion; ciphers?: string };
  /** default true when tls is set; false hides STARTTLS (the command still works if sent) */
  starttls?: boolean;
  /** e.g. 421 or 554 to refuse the session instead of greeting with 220 */
  greeting?: { code: number; text: string };
  rcpt?: (address: string) => Rejection | undefined;
  mail?: (from: string) => Rejection | undefined;
  data?: (msg: ReceivedMessage) => Rejection | undefined;
  /** never answer at that stage ('dot' = after the body's final ".") */
  stall?: 'greeting' | 'ehlo' | 'mail' | 'rcpt' | 'data' | 'dot';
  /** advertise PIPELINING (default true) */
  pipelining?: boolean;
  /** advertise SMTPUTF8 (default true) */
  smtputf8?: boolean;
  /** advertise 8BITMIME (default true) */
  eightBitMime?: boolean;
  /** advertise DSN, RFC 3461 (default true, as smtp-server does) */
  dsn?: boolean;
  /** advertise REQUIRETLS after STARTTLS, RFC 8689 (default false) */
  requireTls?: boolean;
  /** advertise SIZE with this limit */
  size?: number;
  /** keep message bodies in memory (default true) */
  keepBody?: boolean;
  /** server name in the greeting and EHLO reply (default "mx.test.invalid") */
  name?: string;
}

export interface Receiver {
  host: string;
  port: number;
  /** accepted messages (final reply 250) */
  messages: ReceivedMessage[];
  /** TCP sessions that reached the SMTP layer */
  connections: number;
  /** every command line seen, e.g. 'EHLO x', 'STARTTLS', 'MAIL FROM:<a@b>' */
  commands: string[];
  /** successful STARTTLS handshakes */
  tlsHandshakes: number;
  /** server-side errors (e.g. failed TLS handshakes), as messages */
  errors: string[];
  close(): Promise<void>;
  /**
   * Resolves when at least n messages were accepted. The default bound is just under vitest's
   * 30 s test limit: it only turns that limit's bare "timed out" into a count, it is not a
   * speed expectation (a delivery on a loaded 2-core machine can take seconds).
   */
  waitFor(n: number, timeoutMs?: number): Promise<void>;
}

type Conn = { session: SMTPServerSession; handler_EHLO?: unknown; handler_HELO?: unknown; handler_DATA?: unknown };

export async function startReceiver(opts: ReceiverOptions = {}): Promise<Receiver> {
  const host = opts.host ?? '127.0.0.1';
  const messages: ReceivedMessage[] = [];
  const commands: string[] = [];
  const errors: string[] = [];
  const tlsProtocols = new Map<string, string>();
  const state = { connections: 0, tlsHandshakes: 0 };
  const keepBody = opts.keepBody ?? true;
  const never = (): void => {};

  const reject = (r: Rejection): Error & { responseCode: number } => Object.assign(new Error(r.message), { responseCode: r.code });

  const serverOptions: SMTPServerOptions = {
    name: opts.name ?? 'mx.test.invalid',
    // No network beyond loopback: never try a PTR lookup.
    disableReverseLookup: true,
    authOptional: true,
    disabledCommands: opts.tls ? ['AUTH'] : ['AUTH', 'STARTTLS'],
    hideSTARTTLS: opts.tls ? opts.starttls === false : true,
    hidePIPELINING: opts.pipelining === false,
    hideSMTPUTF8: opts.smtputf8 === false,
    hide8BITMIME: opts.eightBitMime === false,
    hideDSN: opts.dsn === false,
    hideREQUIRETLS: opts.requireTls !== true,
    // Real MTAs (Postfix, Exim) send RFC 3463 codes; let clients parse them.
    hideENHANCEDSTATUSCODES: false,
    ...(opts.size ? { size: opts.size } : {}),
    closeTimeout: 200,
    socketTimeout: 30_000,
    maxAllowedUnauthenticatedCommands: false,
    ...(opts.tls
      ? {
          key: opts.tls.key,
          cert: opts.tls.cert,
          ...(opts.tls.minVersion ? { minVersion: opts.tls.minVersion } : {}),
          ...(opts.tls.maxVersion ? { maxVersion: opts.tls.maxVersion } : {}),
          ...(opts.tls.ciphers ? { ciphers: opts.tls.ciphers } : {}),
        }
      : {}),
    // smtp-server logs each command line at debug level before dispatching it.
    logger: {
      debug: (entry: { tnx?: string } | undefined, _msg?: unknown, line?: unknown) => {
        if (entry?.tnx === 'command' && line !== undefined) commands.push(String(line));
      },
      info: never,
      warn: never,
      error: never,
      trace: never,
      fatal: never,
    },

    onConnect(session, callback) {
      state.connections++;
      if (opts.stall === 'greeting') return; // never greet
      if (opts.stall === 'ehlo' || opts.stall === 'data') {
        // smtp-server has no hook for EHLO or the DATA command itself; replace this
        // connection's handler so the command is swallowed without a reply.
        const conn = [...server.connections].find((c) => (c as unknown as Conn).session === session) as unknown as Conn | undefined;
        if (conn && opts.stall === 'ehlo') conn.handler_EHLO = conn.handler_HELO = never;
        if (conn && opts.stall === 'data') conn.handler_DATA = never;
      }
      if (opts.greeting && opts.greeting.code !== 220) return callback(reject({ code: opts.greeting.code, message: opts.greeting.text }));
      callback();
    },

    onSecure(socket, session, callback) {
      state.tlsHandshakes++;
      const proto = (socket as tls.TLSSocket).getProtocol?.();
      if (proto) tlsProtocols.set(session.id, proto);
      callback();
    },

    onMailFrom(address, _session, callback) {
      if (opts.stall === 'mail') return;
      const r = opts.mail?.(address.address);
      callback(r ? reject(r) : undefined);
    },

    onRcptTo(address, _session, callback) {
      if (opts.stall === 'rcpt') return;
      const r = opts.rcpt?.(address.address);
      callback(r ? reject(r) : undefined);
    },

    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      const hash = createHash('sha256');
      let size = 0;
      stream.on('data', (c: Buffer) => {
        size += c.length;
        hash.update(c);
        if (keepBody) chunks.push(c);
      });
      stream.on('end', () => {
        if (opts.stall === 'dot') return;
        const msg: ReceivedMessage = {
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((r) => r.address),
          body: Buffer.concat(chunks),
          size,
          sha256: hash.digest('hex'),
          secure: session.secure,
          requireTls: !!(session.envelope as { requireTLS?: boolean }).requireTLS,
          ...(session.servername ? { servername: session.servername } : {}),
          ...(tlsProtocols.get(session.id) ? { tlsProtocol: tlsProtocols.get(session.id)! } : {}),
          clientAddress: session.remoteAddress,
          remotePort: session.remotePort,
          receivedAt: Date.now(),
        };
        // issue 21 item 6: every DSN a receiver gets is checked against RFC 3464 (the test fails at its end if one breaks it)
        if (keepBody) recordDsn(msg.body, `DSN received by ${host}:${opts.port ?? 0} from <${msg.from}>`);
        const r = opts.data?.(msg);
        if (r) return callback(reject(r));
        messages.push(msg);
        callback(null, 'Ok: queued');
      });
    },
  };

  const server = new SMTPServer(serverOptions);
  server.on('error', (err: Error) => errors.push(err.message));

  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.server.off('error', reject);
      resolve();
    });
  });
  const port = (server.server.address() as net.AddressInfo).port;

  return {
    host,
    port,
    messages,
    get connections() {
      return state.connections;
    },
    commands,
    get tlsHandshakes() {
      return state.tlsHandshakes;
    },
    errors,
    close: () =>
      new Promise<void>((resolve) => {
        // Stalled sessions would otherwise hold close() open until closeTimeout.
        for (const c of server.connections) (c as unknown as { _socket?: net.Socket })._socket?.destroy();
        server.close(() => resolve());
      }),
    async waitFor(n: number, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      while (messages.length < n) {
        if (Date.now() > deadline) throw new Error(`receiver: ${messages.length} of ${n} messages after ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
  };
}

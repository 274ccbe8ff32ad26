/**
 * Ingress: the SMTP listener clients submit to. Protocol handling is smtp-server's;
 * the decisions are ours: who may relay (./access.ts), address syntax (./address.ts),
 * limits, AUTH policy, and — the one invariant that matters most — a 250 to DATA is
 * sent only after the spool said the message is durable (RFC 5321 §4.1.1.4, §6.1:
 * once we say 250 we own the message; a crash must not lose it).
 *
 * Where smtp-server's behaviour differs from what we must answer, the difference is
 * bridged per connection in `adapt()`, nowhere else:
 * - replies whose text starts with an enhanced status code ("5.7.1 ...") are sent with
 *   that code instead of the one smtp-server derives from the reply code alone (it
 *   would say 554 5.6.0 for a relay refusal; RFC 3463 §3.8 wants 5.7.1);
 * - AUTH is neither advertised nor accepted without TLS (RFC 4954 §4: 538 5.7.11),
 *   even when STARTTLS is not configured (smtp-server would then accept it);
 * - AUTH attempts are limited per client: counted when they arrive (not after the slow
 *   password check, which let parallel sessions through), and bounded in concurrency;
 * - the DSN parameters (RFC 3461) are checked on the command line as sent: smtp-server has
 *   already xtext-decoded the values it hands on, so their syntax could not be judged there;
 * - REQUIRETLS (RFC 8689) is advertised after STARTTLS, and, outside the RFC's letter, without TLS
 *   to `relay_clients` on loopback (digest RT-11); the MAIL parameter is judged on the raw line
 *   (no value, once, only where advertised: else 555 5.5.4) and taken off it before smtp-server
 *   sees it (smtp-server would refuse it in cleartext with 530), then kept with the envelope.
 *
 * Per-client limits count under clientKey() (./access.ts): an IPv4 address or an IPv6 /64
 * (`ingress.client_ipv6_prefix`). Every check and its increment are one synchronous step.
 *
 * Content: the spool learns while the body streams in whether it holds 8-bit octets, lines over
 * 998 octets or NUL (src/mime/scan.ts). A client that declared BODY=7BIT (or nothing) and sent
 * 8-bit octets anyway is not refused: the message is treated as 8-bit from then on (sent with
 * BODY=8BITMIME, or converted for a server without 8BITMIME) and the mismatch is logged. Lines
 * over 998 octets are accepted and encoded on the way out, or refused with 550 5.6.0 when
 * `ingress.long_lines: refuse`.
 */
import { readFile } from 'node:fs/promises';
import {
  SMTPServer,
  type SMTPServerAddress,
  type SMTPServerAuthentication,
  type SMTPServerAuthenticationResponse,
  type SMTPServerDataStream,
  type SMTPServerOptions,
  type SMTPServerSession,
} from 'smtp-server';
import type { Logger } from 'pino';
import { isIP } from 'node:net';
import type { Config } from '../config/schema.js';
import type { Draft, Envelope, QueuedMessage, SpoolWriter } from '../spool/types.js';
import { cidrContains, clientKey, compileCidr, compileCidrs, relayDecision, type Cidr } from './access.js';
import { checkMailbox } from './address.js';
import { commandParams, mailDsnOf, rcptDsnOf, type MailDsn, type RcptDsn } from '../dsn/params.js';
import { MAX_LINE_OCTETS } from '../mime/scan.js';
import { receivedHeader } from './received.js';
import { installDotScan } from './dotScan.js';
import { HeaderWatch, tlsRequiredOf } from './hops.js';
import { MESSAGE_ID_SCAN, messageIdOf } from './messageId.js';
import { AuthLimiter, Concurrency, SlidingWindow, type AuthAttempt, type Reservation } from './limits.js';
import { Users } from './users.js';
import type { RelayEvents } from '../metrics/events.js';
import type { IngressRejectReason } from '../metrics/labels.js';
import { lowerName } from '../dns/name.js';

export interface IngressOptions {
  config: Config['ingress'] & { listen: string[]; relayClients: string[]; hostname: string };
  spool: SpoolWriter;
  log: Logger;
  now?: () => number;
  /** the relay hands the message to the scheduler here */
  onQueued?: (msg: QueuedMessage) => void;
  /** metrics hooks (issue 7) */
  events?: RelayEvents;
  /**
   * The client's PTR names, for the Received line only, through the relay's resolver (dns/reverse.ts).
   * Absent: no lookup, the line shows the address alone. Never node:dns: one view of DNS.
   */
  reverse?: (ip: string) => Promise<string[]>;
  /**
   * Listen now, serve once this resolves (src/files/privileges.ts: the listeners are bound as root, the
   * relay drops privileges and opens its spool, then opens the gate). Clients that connect before
   * wait for the greeting, as they would in the kernel's backlog; a rejected gate closes them.
   */
  gate?: Promise<void>;
}

type SmtpConnection = SMTPServer['connections'] extends Set<infer C> ? C : never;
type SmtpError = Error & { responseCode: number };

/** Failed AUTH attempts per client address before AUTH is refused for a while (RFC 4954 §4 leaves the policy to us). */
export const AUTH_FAILURE_LIMIT = 5;
export const AUTH_FAILURE_WINDOW_MS = 15 * 60_000;
const RATE_WINDOW_MS = 60_000;
/** How long close() lets clients read their 421 before the sockets are destroyed. */
const CLOSE_GRACE_MS = 1000;
/** octets of DATA held before the spool draft begins when the header section has not ended yet (receive()) */
const HEADER_WAIT = 64 * 1024;

const LOOPBACK = [compileCidr('127.0.0.0/8'), compileCidr('::1/128')];
/** the `perClient` key that counts every admitted connection (no client key has this form) */
const ALL_CLIENTS = '*';
/** "d.d.d text": the reply carries its own RFC 3463 enhanced status code. */
const EXPLICIT_ENHANCED = /^[245]\.\d{1,3}\.\d{1,3}(?: |$)/;

function smtpError(code: number, text: string): SmtpError {
  return Object.assign(new Error(text), { responseCode: code });
}

/**
 * smtp-server's own replies that need a different enhanced code (or wording) than the
 * library derives from the reply code. Matched on code + text; test/ingress pins them.
 */
function remapLibraryReply(code: number, text: string): string | undefined {
  // RFC 4954 §6: "538 5.7.11 Encryption required for requested authentication mechanism"
  if (code === 538) return '5.7.11 Encryption required for requested authentication mechanism';
  // MAIL FROM SIZE=n above the limit, RFC 1870 §6.1 with RFC 3463 §3.4 code 5.3.4
  if (code === 552 && /maximum message size/i.test(text)) return '5.3.4 Message size exceeds fixed maximum message size';
  // shutting down: RFC 3463 §3.3 4.3.2 "System not accepting network messages"
  if (code === 421 && /shutting down/i.test(text)) return '4.3.2 Service shutting down';
  return undefined;
}

class AdaptedServer extends SMTPServer {
  /** sockets accepted before the gate opened (destroyed by close()) */
  readonly waiting = new Set<{ destroy(): void; destroyed: boolean }>();
  private open: boolean;

  constructor(
    options: SMTPServerOptions,
    private readonly adapt: (conn: SmtpConnection) => void,
    private readonly gate?: Promise<void>,
  ) {
    super(options);
    this.open = gate === undefined;
    void gate?.then(
      () => {
        this.open = true;
      },
      () => undefined,
    );
  }

  override connect(...args: Parameters<SMTPServer['connect']>): void {
    if (!this.open && this.gate !== undefined) {
      const socket = args[0] as unknown as { destroy(): void; destroyed: boolean };
      this.waiting.add(socket);
      this.gate.then(
        () => {
          this.waiting.delete(socket);
          if (!socket.destroyed) this.connect(...args);
        },
        () => {
          this.waiting.delete(socket);
          socket.destroy();
        },
      );
      return;
    }
    super.connect(...args);
    // connect() has just added the new connection (Set keeps insertion order); nothing
    // has been sent on it yet: the greeting waits for the reverse lookup, >= 100 ms.
    let last: SmtpConnection | undefined;
    for (const c of this.connections) last = c;
    if (last) this.adapt(last);
  }
}

interface SessionState {
  reservation?: Reservation | undefined;
  /** the AUTH exchange in progress on this connection */
  auth?: AuthAttempt | undefined;
  /** counted in `perClient` under this key (an admitted connection) */
  admitted?: string | undefined;
  /** the DSN parameters of the MAIL/RCPT command being handled, checked on its raw line (adapt()) */
  pendingDsn?: MailDsn | RcptDsn | undefined;
  /** the MAIL command being handled carried REQUIRETLS (adapt()) */
  pendingRequireTls?: boolean;
}

/** The DSN parameters we keep on smtp-server's parsed address objects, until envelopeOf(). */
type MailFromWithDsn = SMTPServerAddress & { relayDsn?: MailDsn; relayRequireTls?: true };
type RcptToWithDsn = SMTPServerAddress & { relayDsn?: RcptDsn };

export class Ingress {
  private readonly servers: AdaptedServer[] = [];
  private readonly inflight = new Set<Promise<void>>();
  /** one per listener, resolved on its 'close' (all of its sockets gone) */
  private readonly listenersClosed: Promise<void>[] = [];
  private readonly sessions = new WeakMap<SMTPServerSession, SessionState>();
  private readonly relayClients: Cidr[];
  private readonly rate: SlidingWindow | undefined;
  private readonly auth: AuthLimiter;
  /** open connections per client key (`ingress.max_connections_per_client`) */
  private readonly perClient = new Concurrency();
  private readonly now: () => number;
  private readonly log: Logger;
  private stopping = false;
  private closed = false;
  readonly addresses: { address: string; port: number }[] = [];

  private constructor(
    private readonly opts: IngressOptions,
    private readonly tls: { key: string; cert: string } | undefined,
    private users: Users | undefined,
  ) {
    this.relayClients = compileCidrs(opts.config.relayClients);
    this.rate = opts.config.rate_per_minute > 0 ? new SlidingWindow(opts.config.rate_per_minute, RATE_WINDOW_MS) : undefined;
    this.auth = new AuthLimiter(AUTH_FAILURE_LIMIT, AUTH_FAILURE_WINDOW_MS, opts.config.max_auth_per_client);
    this.now = opts.now ?? Date.now;
    this.log = opts.log.child({ component: 'ingress' });
  }

  static async start(opts: IngressOptions): Promise<Ingress> {
    const cfg = opts.config;
    const tls = cfg.tls ? { cert: await pemOrFile(cfg.tls.cert), key: await pemOrFile(cfg.tls.key) } : undefined;
    const users = cfg.users_file ? await Users.load(cfg.users_file) : undefined;
    const ing = new Ingress(opts, tls, users);
    // smtp-server's DATA scan with Buffer#indexOf (./dotScan.ts); a library version it was not checked against keeps its own
    if (!installDotScan()) ing.log.debug('smtp-server is not the version dotScan.ts was checked against: its own DATA scan is used');
    if (users && !tls) ing.log.warn('ingress.users_file is set but ingress.tls is not: AUTH is only accepted over TLS, so nobody can authenticate');
    try {
      for (const entry of cfg.listen) await ing.listen(entry);
    } catch (e) {
      await ing.close();
      throw e;
    }
    return ing;
  }

  /**
   * SIGHUP: re-read the users file. A file with any bad line is rejected whole and the
   * previous users stay in force, so a typo cannot lock everybody out. AUTH stays offered
   * or not as at start (smtp-server fixes the EHLO keywords when it starts).
   */
  async reloadUsers(): Promise<{ file?: string; users?: number; error?: string }> {
    const file = this.opts.config.users_file;
    if (!file || !this.users) return {};
    try {
      const next = await Users.load(file);
      this.users = next;
      this.log.info({ users_file: file, users: next.size }, 'users file reloaded');
      return { file, users: next.size };
    } catch (e) {
      const error = (e as Error).message;
      this.log.error({ users_file: file, error }, 'users file rejected; previous version stays in force');
      return { file, error };
    }
  }

  private serverOptions(): SMTPServerOptions {
    const cfg = this.opts.config;
    // Commands we do not offer: the XCLIENT/XFORWARD proxy commands would let a client
    // claim another address (and so a relay_clients match); the sendmail jokes are noise.
    const disabled = ['XCLIENT', 'XFORWARD', 'WIZ', 'SHELL', 'KILL'];
    if (!this.tls) disabled.push('STARTTLS');
    if (!this.users) disabled.push('AUTH');
    return {
      name: this.opts.config.hostname,
      // smtp-server prints "220 <name> ESMTP <banner>"; do not say ESMTP twice.
      banner: cfg.banner.replace(/^\s*ESMTP\b\s*|\s*\bESMTP\s*$/g, ''),
      size: cfg.max_message_size,
      hideSize: false,
      hidePIPELINING: false,
      hide8BITMIME: false,
      hideSMTPUTF8: false,
      // smtp-server hides ENHANCEDSTATUSCODES unless told otherwise; RFC 2034 §3 then
      // requires the code on every reply, which the library and adapt() provide.
      hideENHANCEDSTATUSCODES: false,
      // RFC 3461: NOTIFY/ORCPT/RET/ENVID are kept with the message (spool format 2) and passed on.
      hideDSN: false,
      // RFC 8689: the tag is stored (spool format 3) and delivery honours it (delivery/deliver.ts REQUIRETLS_LEVEL).
      hideREQUIRETLS: false,
      authMethods: ['PLAIN', 'LOGIN'],
      authOptional: true,
      allowInsecureAuth: false,
      maxAllowedUnauthenticatedCommands: false,
      disabledCommands: disabled,
      logger: false,
      socketTimeout: cfg.timeout,
      closeTimeout: cfg.timeout,
      resolver: {
        // The PTR name only decorates the Received line; loopback's is "localhost" by
        // definition, and a lookup there can only cost time (up to smtp-server's 1.5 s).
        // Elsewhere through the relay's resolver, never node:dns (the system's view of DNS).
        reverse: (ip, cb) => {
          const reverse = this.opts.reverse;
          if (!reverse || LOOPBACK.some((c) => cidrContains(c, ip))) return cb(null, []);
          reverse(ip).then(
            (names) => cb(null, names),
            () => cb(null, []),
          );
        },
      },
      ...(this.tls ? { key: this.tls.key, cert: this.tls.cert, minVersion: 'TLSv1.2' as const } : {}),
      onConnect: (session, cb) => this.onConnect(session, cb),
      onAuth: (auth, session, cb) => void this.onAuth(auth, session, cb),
      onMailFrom: (address, session, cb) => this.onMailFrom(address, session, cb),
      onRcptTo: (address, session, cb) => this.onRcptTo(address, session, cb),
      onData: (stream, session, cb) => this.onData(stream, session, cb),
      onClose: (session) => this.onClose(session),
    };
  }

  private async listen(entry: string): Promise<void> {
    const hp = parseListen(entry);
    if (!hp) throw new Error(`ingress: invalid listen address ${JSON.stringify(entry)}`);
    const server = new AdaptedServer(this.serverOptions(), (c) => this.adapt(c), this.opts.gate);
    server.on('error', (err: Error & { code?: string }) => {
      // Connection-level errors (a client resetting mid-transaction) land here too;
      // without a listener they would crash the process.
      this.log.debug({ err: { message: err.message, code: err.code } }, 'smtp connection error');
    });
    this.servers.push(server);
    this.listenersClosed.push(new Promise<void>((r) => server.server.once('close', () => r())));
    await new Promise<void>((resolve, reject) => {
      const onError = (e: Error) => reject(e);
      server.server.once('error', onError);
      server.listen(hp.port, hp.host, () => {
        server.server.off('error', onError);
        resolve();
      });
    });
    const a = server.server.address();
    if (a && typeof a === 'object') this.addresses.push({ address: a.address, port: a.port });
  }

  /** The key a client's per-client limits count under (IPv6: its /client_ipv6_prefix). */
  private clientKey(address: string): string {
    return clientKey(address, this.opts.config.client_ipv6_prefix);
  }

  /** See the module comment: the per-connection bridge between smtp-server and our replies. */
  private adapt(conn: SmtpConnection): void {
    const send = conn.send.bind(conn);
    conn.send = (code, data, context) => {
      if (typeof data === 'string') {
        if (EXPLICIT_ENHANCED.test(data)) return send(code, data, false);
        const mapped = remapLibraryReply(code, data);
        if (mapped !== undefined) return send(code, mapped, false);
      } else if (Array.isArray(data) && code === 250 && !conn.secure) {
        // EHLO reply in cleartext: never advertise AUTH (RFC 4954 §4, RFC 8314 §3).
        data = data.filter((line, i) => i === 0 || !/^AUTH\b/i.test(line));
        // RT-11: REQUIRETLS without TLS only to relay_clients on loopback (smtp-server offers it after STARTTLS).
        if (this.offersRequireTls(conn)) data = [...data, 'REQUIRETLS'];
      }
      return send(code, data, context);
    };
    const auth = conn.handler_AUTH.bind(conn);
    conn.handler_AUTH = (command, callback) => {
      if (!conn.secure) {
        conn.send(538, '5.7.11 Encryption required for requested authentication mechanism');
        return callback();
      }
      // What smtp-server answers itself (already authenticated: 503; unknown mechanism: 504)
      // checks no password and is not counted.
      const mech = String(command).trim().split(/\s+/)[1]?.toUpperCase() ?? '';
      if (conn.session.user || (mech !== 'PLAIN' && mech !== 'LOGIN')) return auth(command, callback);
      const st = this.state(conn.session);
      this.endAuth(st); // an earlier exchange on this connection that was aborted ("*") is over
      const key = this.clientKey(conn.remoteAddress);
      const admitted = this.auth.begin(key, this.now());
      if (!admitted.ok) {
        // RFC 4954 §6: 454 4.7.0 temporary authentication failure. Refused before the
        // SASL exchange, so a guesser learns nothing more until the window passes.
        this.log.warn(
          { client: conn.remoteAddress, client_key: key, why: admitted.why },
          admitted.why === 'failures' ? 'AUTH refused: too many failures' : 'AUTH refused: too many concurrent attempts',
        );
        conn.send(
          454,
          admitted.why === 'failures'
            ? '4.7.0 Too many failed authentication attempts, try again later'
            : '4.7.0 Too many concurrent authentication attempts, try again later',
        );
        return callback();
      }
      // Counted now, as a failure until onAuth says otherwise. It ends when the password check is
      // done (onAuth), when the exchange ends without one, or with the connection. smtp-server calls
      // this callback after each step; a multi-step exchange (AUTH LOGIN, 334 …) is still running
      // while the connection has a `_nextHandler` for the client's next line.
      st.auth = admitted.attempt;
      return auth(command, (...args: unknown[]) => {
        if (!(conn as unknown as { _nextHandler?: unknown })._nextHandler && st.auth === admitted.attempt) this.endAuth(st);
        (callback as (...a: unknown[]) => void)(...args);
      });
    };
    // RFC 3461 §4: the DSN parameters' syntax (xtext, lengths, NOTIFY combinations) on the raw
    // line. A bad one is refused here with 501 5.5.4 before smtp-server decodes it.
    const mail = conn.handler_MAIL.bind(conn);
    conn.handler_MAIL = (command, callback) => {
      const line = command.toString('utf8');
      const params = commandParams(line);
      const r = mailDsnOf(params);
      if (!r.ok) {
        conn.send(501, `5.5.4 ${r.text}`);
        return callback();
      }
      // RFC 8689 §2 (RT-2): REQUIRETLS takes no value, comes once, and only where it was advertised.
      const rt = params.filter(([k]) => k === 'REQUIRETLS');
      const refuse =
        rt.length === 0
          ? undefined
          : rt.length > 1
            ? 'REQUIRETLS given more than once'
            : rt[0]![1] !== undefined
              ? 'REQUIRETLS takes no value (RFC 8689 section 2)'
              : !this.offersRequireTls(conn)
                ? 'REQUIRETLS is offered only after STARTTLS (RFC 8689 section 2)'
                : undefined;
      if (refuse) {
        conn.send(555, `5.5.4 ${refuse}`);
        return callback();
      }
      const st = this.state(conn.session);
      st.pendingDsn = r.value;
      st.pendingRequireTls = rt.length === 1;
      // Taken off the line: smtp-server would refuse it without TLS (530), and we keep it ourselves.
      return mail(rt.length ? Buffer.from(line.replace(/[ \t]+REQUIRETLS(?=[ \t]|\r?\n?$)/i, ''), 'utf8') : command, callback);
    };
    const rcpt = conn.handler_RCPT.bind(conn);
    conn.handler_RCPT = (command, callback) => {
      const r = rcptDsnOf(commandParams(command.toString('utf8')), !!conn.session.envelope?.smtpUtf8);
      if (!r.ok) {
        conn.send(501, `5.5.4 ${r.text}`);
        return callback();
      }
      this.state(conn.session).pendingDsn = r.value;
      return rcpt(command, callback);
    };
  }

  /** RT-10/11: REQUIRETLS is offered after STARTTLS, and in cleartext only to relay_clients on loopback. */
  private offersRequireTls(conn: SmtpConnection): boolean {
    if (conn.secure) return true;
    const address = conn.remoteAddress;
    return LOOPBACK.some((c) => cidrContains(c, address)) && relayDecision({ address }, this.relayClients).reason === 'relay_clients';
  }

  /** The DSN parameters adapt() checked for the command being handled (taken once). */
  private takeDsn(session: SMTPServerSession): MailDsn | RcptDsn | undefined {
    const st = this.sessions.get(session);
    const d = st?.pendingDsn;
    if (st) st.pendingDsn = undefined;
    return d;
  }

  private endAuth(st: SessionState): void {
    if (st.auth) this.auth.end(st.auth);
    st.auth = undefined;
  }

  private state(session: SMTPServerSession): SessionState {
    let s = this.sessions.get(session);
    if (!s) this.sessions.set(session, (s = {}));
    return s;
  }

  private release(session: SMTPServerSession): void {
    const st = this.sessions.get(session);
    if (st?.reservation) {
      this.rate?.release(st.reservation);
      st.reservation = undefined;
    }
  }

  /** Counts a refusal (metrics: dane_relay_ingress_rejections_total). */
  private refused(reason: IngressRejectReason): void {
    this.opts.events?.ingressRejection?.({ reason });
  }

  /** Counts a refusal and answers the command with `err`. */
  private refuse(cb: (err?: Error | null) => void, reason: IngressRejectReason, err: SmtpError): void {
    this.refused(reason);
    cb(err);
  }

  private onConnect(session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    // Admission counts admitted connections, checked and counted in one synchronous step: a burst
    // gets exactly max_connections in (counting smtp-server's set, which also holds connections
    // still in their greeting delay, refused whole bursts), and never more.
    const max = this.opts.config.max_connections;
    if (!this.perClient.tryEnter(ALL_CLIENTS, max)) {
      this.log.warn({ client: session.remoteAddress, max_connections: max }, 'connection refused: too many connections');
      // RFC 5321 §3.8 / §4.2.2: 421 closes the channel; RFC 3463 §3.8 4.7.0.
      this.refused('too-many-connections');
      return cb(smtpError(421, '4.7.0 Too many connections, try again later'));
    }
    const perClient = this.opts.config.max_connections_per_client;
    const key = this.clientKey(session.remoteAddress);
    if (!this.perClient.tryEnter(key, perClient)) {
      this.perClient.leave(ALL_CLIENTS);
      this.log.warn(
        { client: session.remoteAddress, client_key: key, max_connections_per_client: perClient },
        'connection refused: too many connections from this client',
      );
      this.refused('too-many-connections-client');
      return cb(smtpError(421, '4.7.0 Too many connections from your address, try again later'));
    }
    this.state(session).admitted = key;
    cb();
  }

  private async onAuth(
    auth: SMTPServerAuthentication,
    session: SMTPServerSession,
    cb: (err: Error | null | undefined, response?: SMTPServerAuthenticationResponse) => void,
  ): Promise<void> {
    const client = session.remoteAddress;
    const st = this.state(session);
    const attempt = st.auth;
    const fail = (why: string) => {
      // Already counted as a failure when the attempt arrived (handler_AUTH in adapt()).
      this.endAuth(st);
      this.log.warn({ client, user: auth.username, method: auth.method, why }, 'AUTH failed');
      this.refused('auth-failed');
      cb(null, { responseCode: 535, message: '5.7.8 Authentication credentials invalid' });
    };
    try {
      if (!session.secure || !this.users) {
        this.endAuth(st);
        this.refused('auth-needs-tls');
        return cb(null, { responseCode: 538, message: '5.7.11 Encryption required for requested authentication mechanism' });
      }
      if (auth.method !== 'PLAIN' && auth.method !== 'LOGIN') return fail('mechanism');
      // RFC 4616 §2: an authzid different from the authcid asks to act as someone else;
      // we have no such authorisation, so it fails like a wrong password.
      if (auth.method === 'PLAIN' && auth.authzid && auth.authcid && auth.authzid !== auth.authcid) return fail('authzid');
      const user = auth.username ?? '';
      if (!(await this.users.verify(user, auth.password ?? ''))) return fail('credentials');
      if (attempt) this.auth.forgive(attempt);
      this.endAuth(st);
      this.log.info({ client, user, method: auth.method }, 'AUTH ok');
      cb(null, { user });
    } catch (err) {
      if (attempt) this.auth.forgive(attempt); // our failure, not the client's
      this.endAuth(st);
      this.log.error({ err, client }, 'AUTH error');
      this.refused('auth-unavailable');
      cb(null, { responseCode: 454, message: '4.7.0 Temporary authentication failure' });
    }
  }

  private onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const dsn = this.takeDsn(session) as MailDsn | undefined;
    const st = this.state(session);
    const requireTls = st.pendingRequireTls === true;
    st.pendingRequireTls = undefined;
    const unknown = unsupportedParams(address, MAIL_PARAMS);
    if (unknown) return this.refuse(cb, 'bad-parameter', smtpError(555, `5.5.4 MAIL FROM parameter ${unknown} not recognized or not implemented`));
    const r = checkMailbox(address.address, { role: 'sender', smtputf8: !!session.envelope.smtpUtf8 });
    if (!r.ok) return this.refuse(cb, 'bad-address', smtpError(r.code, `${r.enhanced} ${r.text}`));
    if (this.rate) {
      // A previous MAIL on this session that never reached "queued" gives its slot back.
      this.release(session);
      const res = this.rate.tryAcquire(this.clientKey(session.remoteAddress), this.now());
      if (!res) {
        this.log.warn({ client: session.remoteAddress, rate_per_minute: this.rate.limit }, 'message refused: rate limit');
        // RFC 3463 §3.8 4.7.1: delivery not authorized (now); the client retries later.
        return this.refuse(cb, 'rate-limit', smtpError(450, '4.7.1 Message rate limit exceeded, try again later'));
      }
      this.state(session).reservation = res;
    }
    address.address = r.address;
    if (dsn) (address as MailFromWithDsn).relayDsn = dsn;
    if (requireTls) (address as MailFromWithDsn).relayRequireTls = true;
    cb();
  }

  private onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const dsn = this.takeDsn(session) as RcptDsn | undefined;
    const unknown = unsupportedParams(address, RCPT_PARAMS);
    if (unknown) return this.refuse(cb, 'bad-parameter', smtpError(555, `5.5.4 RCPT TO parameter ${unknown} not recognized or not implemented`));
    const pm = postmasterTarget(address.address, this.opts.config.hostname);
    if (pm && !this.opts.config.postmaster)
      return this.refuse(cb, 'no-postmaster', smtpError(550, '5.1.1 No postmaster address is configured here (ingress.postmaster)'));
    const r = checkMailbox(pm ? this.opts.config.postmaster! : address.address, { role: 'recipient', smtputf8: !!session.envelope.smtpUtf8 });
    if (!r.ok) return this.refuse(cb, 'bad-address', smtpError(r.code, `${r.enhanced} ${r.text}`));
    const decision = relayDecision({ address: session.remoteAddress, user: userOf(session) }, this.relayClients);
    // RFC 5321 §4.5.1: mail to Postmaster is accepted from anyone; it can only reach the configured address.
    if (!decision.allowed && !pm) {
      this.log.info({ client: session.remoteAddress, rcpt: r.address }, 'relay denied');
      return this.refuse(cb, 'relay-denied', smtpError(554, '5.7.1 Relay access denied'));
    }
    const rcpts = session.envelope.rcptTo;
    const max = this.opts.config.max_recipients;
    // RFC 5321 §4.5.3.1.10: 452 for too many recipients, the client sends the rest in another transaction.
    if (rcpts.length >= max && !rcpts.some((x) => x.address === r.address))
      return this.refuse(cb, 'too-many-recipients', smtpError(452, '4.5.3 Too many recipients'));
    address.address = r.address;
    if (dsn) (address as RcptToWithDsn).relayDsn = dsn;
    cb();
  }

  private onData(stream: SMTPServerDataStream, session: SMTPServerSession, cb: (err?: Error | null, message?: string) => void): void {
    const p = this.receive(stream, session).then(
      (reply) => cb(null, reply),
      (err: Error) => cb(err),
    );
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  private envelopeOf(session: SMTPServerSession): Envelope {
    const e = session.envelope;
    const rdns = session.clientHostname && !session.clientHostname.startsWith('[') ? session.clientHostname : undefined;
    const user = userOf(session);
    const dsn = e.mailFrom ? (e.mailFrom as MailFromWithDsn).relayDsn : undefined;
    const requireTls = e.mailFrom ? (e.mailFrom as MailFromWithDsn).relayRequireTls : undefined;
    const envelope: Envelope = {
      from: e.mailFrom ? e.mailFrom.address : '',
      recipients: [...new Set(e.rcptTo.map((r) => r.address))],
      smtputf8: !!e.smtpUtf8,
      eightBit: e.bodyType === '8bitmime',
      client: { address: session.remoteAddress, ...(rdns ? { name: rdns } : {}), ...(user ? { user } : {}) },
      received: this.now(),
      kind: 'normal',
    };
    // the optional members only where present, in this order (it is the order in the spool's JSON)
    if (dsn) envelope.dsn = dsn;
    // A repeated recipient keeps the parameters of its first RCPT, like its place in the list.
    let rcptDsn: Record<string, RcptDsn> | undefined;
    for (const r of e.rcptTo as RcptToWithDsn[]) if (r.relayDsn && !(rcptDsn && r.address in rcptDsn)) (rcptDsn ??= {})[r.address] = r.relayDsn;
    if (rcptDsn) envelope.rcptDsn = rcptDsn;
    if (requireTls) envelope.requireTls = requireTls;
    return envelope;
  }

  /**
   * RFC 8689 §4.1 (RT-32, RT-33): a valid `TLS-Required: No` tags the message (`Envelope.tlsRequiredNo`), unless
   * MAIL FROM carried REQUIRETLS, which wins (the field is then ignored, and passed on unchanged like the rest of
   * the message). Every client that can relay through us is a relay client or authenticated (ingress/access.ts),
   * so the field is honoured from every message accepted. An invalid field (another value, two of them) is
   * ignored and logged (RT-30).
   */
  private withTlsRequired(envelope: Envelope, header: HeaderWatch, session: SMTPServerSession): Envelope {
    const field = tlsRequiredOf(header.tlsRequired);
    if (field.kind === 'absent') return envelope;
    const client = session.remoteAddress;
    if (field.kind === 'invalid') {
      this.log.warn({ client, from: envelope.from, why: field.why }, 'TLS-Required header field ignored');
      return envelope;
    }
    if (envelope.requireTls) {
      this.log.info({ client, from: envelope.from }, 'TLS-Required: No ignored: MAIL FROM carried REQUIRETLS (RFC 8689 section 4.1)');
      return envelope;
    }
    return { ...envelope, tlsRequiredNo: true };
  }

  /**
   * One message: Draft at DATA, Received first, body streamed with backpressure
   * (draft.write is awaited before the next chunk is pulled, so the socket is paused
   * while the disk is slow), then commit, and only then the 250.
   */
  private async receive(stream: SMTPServerDataStream, session: SMTPServerSession): Promise<string> {
    let envelope = this.envelopeOf(session);
    const client = session.remoteAddress;
    const max = this.opts.config.max_message_size;
    let draft: Draft | undefined;
    let failure: unknown;
    let oversized = false;
    let size = 0;
    // The client's header section, watched as it streams past: RFC 5321 §6.3 loop detection (Received:
    // fields) and RFC 8689 §3 TLS-Required.
    const header = new HeaderWatch();
    // the header section (its first MESSAGE_ID_SCAN octets), for the Message-ID of the `queued` line
    const head: Buffer[] = [];
    let headSize = 0;
    const maxHops = this.opts.config.max_hops;
    let looped = false;
    let aborted = false;
    const abort = async () => {
      if (draft && !aborted) {
        aborted = true;
        await draft.abort().catch(() => undefined);
      }
    };
    // The draft (and with it the envelope written to the spool) begins once the header section is complete,
    // or HEADER_WAIT octets in, so the envelope can carry what the header asks for (TLS-Required, RFC 8689
    // §4.1); until then the chunks wait here. A TLS-Required field later than that is not looked at (the
    // safe side: no relaxation).
    let waiting: Buffer[] | undefined = [];
    let waited = 0;
    const begin = async () => {
      const held = waiting ?? [];
      waiting = undefined;
      envelope = this.withTlsRequired(envelope, header, session);
      try {
        draft = await this.opts.spool.begin(envelope);
        const tls = session.tlsOptions || undefined;
        await draft.write(
          Buffer.from(
            receivedHeader({
              helo: session.hostNameAppearsAs || undefined,
              rdns: envelope.client.name,
              address: client,
              hostname: this.opts.config.hostname,
              protocol: session.transmissionType,
              tls: tls ? { version: tls.version, cipher: tls.name } : undefined,
              id: draft.id,
              recipients: envelope.recipients,
              date: envelope.received,
            }),
            'utf8',
          ),
        );
        for (const c of held) await draft.write(c);
      } catch (err) {
        failure = err;
        await abort();
      }
    };
    try {
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        size += chunk.length;
        // After a failure or once over a limit the rest is read and dropped: the
        // client is still sending and the protocol must stay in step until "." (RFC 5321 §4.1.1.4).
        if (failure !== undefined || oversized || looped) continue;
        if (!header.done) {
          const inHeader = header.push(chunk);
          if (headSize < MESSAGE_ID_SCAN) {
            const n = Math.min(inHeader, MESSAGE_ID_SCAN - headSize);
            head.push(chunk.subarray(0, n));
            headSize += n;
          }
          if (header.received > maxHops) {
            looped = true;
            await abort();
            continue;
          }
        }
        if (size > max) {
          oversized = true;
          await abort();
          continue;
        }
        if (waiting) {
          waiting.push(chunk);
          waited += chunk.length;
          if (header.done || waited >= HEADER_WAIT) await begin();
          continue;
        }
        try {
          await draft!.write(chunk);
        } catch (err) {
          failure = err;
          await abort();
        }
      }
      header.finish();
      if (waiting && failure === undefined && !oversized && !looped) await begin();
    } catch (err) {
      // The client went away before "." — the message is incomplete; nothing is queued.
      await abort();
      this.release(session);
      this.log.info({ client, queue_id: draft?.id, bytes: size }, 'client disconnected during DATA; message discarded');
      throw err;
    }
    if (oversized) {
      this.release(session);
      this.log.info({ client, queue_id: draft?.id, bytes: size, max_message_size: max }, 'message refused: too large');
      // RFC 1870 §6.3 / RFC 5321 §4.5.3.1.10, RFC 3463 §3.4 5.3.4
      this.refused('too-large');
      throw smtpError(552, '5.3.4 Message size exceeds fixed maximum message size');
    }
    if (looped) {
      this.release(session);
      this.log.warn(
        { client, queue_id: draft?.id, from: envelope.from, received_fields: header.received, max_hops: maxHops },
        'message refused: too many hops (mail loop?)',
      );
      // RFC 5321 §6.3 (and Postfix's hopcount_limit): refuse rather than relay a looping message; RFC 3463 §3.5 5.4.6 routing loop.
      this.refused('too-many-hops');
      throw smtpError(554, `5.4.6 Too many hops: ${header.received} Received: header fields, more than ${maxHops} (mail loop?)`);
    }
    if (failure === undefined && draft!.facts.longLines && this.opts.config.long_lines === 'refuse') {
      await abort();
      this.release(session);
      this.log.info({ client, queue_id: draft?.id, bytes: size }, 'message refused: a line longer than 998 octets (ingress.long_lines: refuse)');
      // RFC 5322 §2.1.1, RFC 5321 §4.5.3.1.6; RFC 3463 §3.7 5.6.0 (media error)
      this.refused('long-line');
      throw smtpError(550, `5.6.0 Message has a line longer than ${MAX_LINE_OCTETS} octets (RFC 5322 section 2.1.1); encode it (quoted-printable or base64)`);
    }
    let msg: QueuedMessage | undefined;
    if (failure === undefined) {
      try {
        msg = await draft!.commit();
      } catch (err) {
        failure = err;
        await abort();
      }
    }
    if (!msg) {
      this.release(session);
      const e = failure as { code?: string; message?: string } | undefined;
      this.log.error({ client, queue_id: draft?.id, err: { code: e?.code, message: e?.message } }, 'spool failure; message refused');
      // Shared queue (issue 16): the database did not commit (down, failed over, refused): nothing is queued,
      // the client tries again. RFC 5321 §4.2.5 451, RFC 3463 §3.3 4.3.0 (other or undefined mail system status).
      this.refused('spool-failure');
      if (e?.code === 'EDB') throw smtpError(451, '4.3.0 Queue database unavailable, try again later');
      // Never 250 for a message that is not durable. RFC 5321 §4.2.5 452, RFC 3463 §3.3 4.3.1.
      throw smtpError(452, '4.3.1 Insufficient system storage');
    }
    const st = this.sessions.get(session);
    if (st) st.reservation = undefined; // the slot now stands for a queued message
    // the Message-ID is looked for only when the line is written
    if (this.log.isLevelEnabled('info'))
      this.log.info(
        {
          queue_id: msg.id,
          message_id: messageIdOf(head.length === 1 ? head[0]! : Buffer.concat(head, headSize)),
          from: envelope.from,
          size: msg.size,
          nrcpt: envelope.recipients.length,
          client,
          ...(envelope.requireTls ? { require_tls: true } : {}),
          ...(envelope.tlsRequiredNo ? { tls_required: 'no' } : {}),
        },
        'queued',
      );
    if (msg.body?.eightBit && !envelope.eightBit && !envelope.smtputf8) {
      // RFC 6152 §3: 8-bit octets without BODY=8BITMIME. Accepted and treated as 8-bit (see the module comment).
      this.log.info({ queue_id: msg.id, client }, 'message has 8-bit octets but was not declared BODY=8BITMIME; treated as 8BITMIME');
    }
    try {
      this.opts.events?.messageReceived?.({ recipients: msg.recipients.length, bytes: msg.size });
      this.opts.onQueued?.(msg);
    } catch (err) {
      // The message is durable; recovery will find it. A scheduler hiccup must not
      // turn into a 4xx that makes the client send it twice.
      this.log.error({ err, queue_id: msg.id }, 'onQueued failed');
    }
    return `2.0.0 Ok: queued as ${msg.id}`;
  }

  private onClose(session: SMTPServerSession): void {
    this.release(session);
    const st = this.sessions.get(session);
    if (st) this.endAuth(st); // gone mid-exchange: the attempt stays counted as a failure
    if (st?.admitted !== undefined) {
      this.perClient.leave(st.admitted);
      this.perClient.leave(ALL_CLIENTS);
    }
    this.sessions.delete(session);
  }

  /**
   * Stops listening and waits for transactions in DATA to finish (commit + reply).
   * Idle sessions are answered 421 4.3.2 to their next command.
   */
  async stopAccepting(): Promise<void> {
    if (!this.stopping) {
      this.stopping = true;
      for (const s of this.servers) s.close();
    }
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  /** Stops everything: 421 to every session, sockets closed, in-flight drafts aborted. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (!this.stopping) {
      this.stopping = true;
      for (const s of this.servers) s.close();
    }
    for (const s of this.servers) for (const w of [...s.waiting]) w.destroy();
    const conns = this.servers.flatMap((s) => [...s.connections]);
    for (const c of conns) {
      c.send(421, '4.3.2 Service shutting down');
      c.close();
    }
    // Give clients a moment to read the 421 and hang up, then cut whatever is left.
    // (`_socket` is the TLS socket after STARTTLS; smtp-server strips listeners from
    // the raw one when it upgrades, so polling `destroyed` is the reliable signal.)
    const deadline = Date.now() + CLOSE_GRACE_MS;
    while (conns.some((c) => !c._socket.destroyed) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const c of conns) c._socket.destroy();
    await Promise.allSettled([...this.inflight]);
    // A listener that failed to bind never emits 'close' after close(); only wait for bound ones.
    await Promise.all(this.listenersClosed.slice(0, this.addresses.length));
  }
}

/** "addr:port" / "[v6]:port" like the config schema, but port 0 (any free port) is allowed for tests and tools. */
function parseListen(s: string): { host: string; port: number } | undefined {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:[\]]+):(\d{1,5})$/.exec(s);
  if (!m || isIP(m[1]!) === 0 || Number(m[2]) > 65535) return undefined;
  return { host: m[1]!, port: Number(m[2]) };
}

/**
 * ESMTP parameters we implement: SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531), AUTH
 * (RFC 4954 §5), RET/ENVID/NOTIFY/ORCPT (RFC 3461). smtp-server accepts others it knows even when
 * their extension is not offered (REQUIRETLS) and ignores unknown ones; either way the relay would
 * silently drop what the client asked for — REQUIRETLS (RFC 8689) most of all, a protection the
 * sender demanded. RFC 5321 §4.1.1.11: answer 555 instead.
 */
const MAIL_PARAMS = new Set(['SIZE', 'BODY', 'SMTPUTF8', 'AUTH', 'RET', 'ENVID']);
const RCPT_PARAMS = new Set(['NOTIFY', 'ORCPT']);

function unsupportedParams(address: SMTPServerAddress, allowed: Set<string>): string | undefined {
  const args = address.args;
  if (!args) return undefined;
  return Object.keys(args).find((k) => !allowed.has(k.toUpperCase()));
}

function userOf(session: SMTPServerSession): string | undefined {
  return typeof session.user === 'string' && session.user.length > 0 ? session.user : undefined;
}

async function pemOrFile(v: string): Promise<string> {
  return v.trimStart().startsWith('-----BEGIN') ? v : readFile(v, 'utf8');
}

/**
 * RFC 5321 §4.5.1, §4.1.1.3: the reserved mailbox — a bare "Postmaster" (any case) or
 * postmaster@<our hostname> — names this host's postmaster, not a destination to relay to.
 */
export function postmasterTarget(address: string, hostname: string): boolean {
  const at = address.lastIndexOf('@');
  const local = at < 0 ? address : address.slice(0, at);
  if (local.toLowerCase() !== 'postmaster') return false;
  return at < 0 || lowerName(address.slice(at + 1)) === hostname.toLowerCase();
}

/**
 * A small outbound SMTP client on node:net / node:tls.
 *
 * Why not nodemailer's client: the DANE policy (RFC 7672 §2.2) must provably be
 * enforced after the TLS handshake and before anything of the envelope, not even
 * the post-TLS EHLO, is sent (digest DANE-63). Owning the state machine makes that
 * ordering explicit and testable:
 *
 *   connect → greeting → EHLO (HELO on 5xx) → [STARTTLS → handshake → verify] → EHLO
 *
 * Only the final EHLO's extensions are kept (RFC 3207 §4.2: everything learned
 * before TLS is discarded).
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex, Readable } from 'node:stream';
import type { AuthenticatedRoute, Target, TlsRequirement } from './types.js';
import type { RequireTlsProblem } from './events.js';
import type { PresentedChain, VerifyOutcome } from '../dane/types.js';
import { replyLine } from './outcome.js';
import { decodeUtf8 } from '../text/printable.js';
import { mailDsnParams, rcptDsnParams, type MailDsn, type RcptDsn } from '../dsn/params.js';

export interface SmtpTimeouts {
  /** TCP connect */
  connect: number;
  /** 220 greeting (RFC 5321 §4.5.3.2.1: 5 min) */
  greeting: number;
  /** EHLO/HELO reply */
  ehlo: number;
  /** STARTTLS reply and the TLS handshake */
  starttls: number;
  /** MAIL reply (RFC 5321 §4.5.3.2.2: 5 min); also used for RSET */
  mail: number;
  /** each RCPT reply (§4.5.3.2.3: 5 min) */
  rcpt: number;
  /** the 354 reply to DATA (§4.5.3.2.4: 2 min) */
  data: number;
  /** each blocked write of the body (§4.5.3.2.5: 3 min) */
  data_block: number;
  /** the reply to the final "." (§4.5.3.2.6: 10 min) */
  data_done: number;
}

/**
 * Makes the connection a session speaks over (as mox's smtpclient.New(conn) and nodemailer's
 * `socket` option): resolves with a connected duplex, or rejects. `signal` aborts a dial the
 * session gave up on (connect timeout). The default, `dialTcp`, connects over TCP to the target's
 * address (already resolved by the relay's resolver: never getaddrinfo). A test passes one that
 * hands out its end of an in-process pair speaking a scripted SMTP peer.
 */
export type Connector = (target: Target, opts: { signal: AbortSignal; localAddress?: string }) => Promise<Duplex>;

/** The default connector: TCP to `target.address:port`, Nagle off. */
export const dialTcp: Connector = (target, opts) =>
  new Promise<Duplex>((resolve, reject) => {
    const sock = net.connect({ host: target.address, port: target.port, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) });
    // No Nagle: the client writes a command (or the end-of-data dot) and waits for its reply; held
    // back behind the peer's delayed ACK, each small write would cost ~40 ms per message.
    sock.setNoDelay(true);
    const onAbort = (): void => {
      sock.destroy();
      reject(new Error('aborted'));
    };
    const done = (): void => {
      opts.signal.removeEventListener('abort', onAbort);
      sock.off('connect', onConnect);
      sock.off('error', onError);
      sock.off('close', onClose);
    };
    // Connected: the session's own listeners take over; until then an error after connect must not go unheard.
    const onConnect = (): void => {
      done();
      sock.on('error', () => undefined);
      resolve(sock);
    };
    const onError = (err: Error): void => {
      done();
      sock.destroy();
      reject(err);
    };
    const onClose = (): void => {
      done();
      reject(new Error('closed'));
    };
    if (opts.signal.aborted) return onAbort();
    opts.signal.addEventListener('abort', onAbort, { once: true });
    sock.once('connect', onConnect);
    sock.once('error', onError);
    sock.once('close', onClose);
  });

export interface SmtpClientOptions {
  heloName: string;
  tls: TlsRequirement;
  timeouts: SmtpTimeouts;
  /** EHLO keywords (upper case) treated as not advertised: delivery.discard_ehlo_keywords */
  discardExtensions?: readonly string[];
  localAddress?: string;
  /** how to connect (default `dialTcp`) */
  connector?: Connector;
}

export interface Reply {
  code: number;
  /** RFC 3463 enhanced status code found at the start of the first line's text */
  enhanced?: string;
  /** the text of every line (after "NNN-"/"NNN "), joined with \n, as received */
  text: string;
}

/**
 * Where a session failed. `rset`: the RSET that opens a transaction on a reused connection (RFC 5321
 * §4.1.1.5) was refused, went unanswered, or the connection was found closed or out of step before it;
 * no reply of that transaction was read and DATA was never sent (a BDAT chunk may have been: see
 * SmtpSession.send), so the message may go over a new connection (delivery/deliver.ts).
 */
export type SmtpStage = 'connect' | 'greeting' | 'ehlo' | 'starttls' | 'tls' | 'verify' | 'rset' | 'mail' | 'rcpt' | 'data' | 'protocol';

/**
 * What went wrong, as one value (never flags that could contradict each other):
 * - `refused`: the server's reply said no (`permanent`: a 5xx where RFC 5321 makes it final);
 * - `timeout`: a stage timer ran out (RFC 5321 §4.5.3.2);
 * - `connection`: the connection could not be made, or was closed or broken;
 * - `tls-handshake`: the TLS handshake failed (`cleartextRetry`: mode `may`, DANE-44; `timedOut`: by the timer);
 * - `tls-required`: TLS is mandatory and STARTTLS was not offered or was refused (DANE-41/42/43);
 * - `unauthenticated`: the verifier rejected the peer's chain (DANE-63: nothing of the envelope was sent);
 * - `protocol`: the peer broke the protocol (a malformed or unexpected reply, data out of step);
 * - `local`: this side refused to go on (a command with CR/LF, a body the server did not agree to,
 *   the body stream failing); `permanent` when the message can never go as it is.
 */
export type SmtpFailure =
  | { kind: 'refused'; reply: Reply; permanent: boolean }
  | { kind: 'timeout' }
  | { kind: 'connection' }
  | { kind: 'tls-handshake'; cleartextRetry: boolean; timedOut: boolean }
  | { kind: 'tls-required'; reply?: Reply }
  | { kind: 'unauthenticated'; verify: VerifyOutcome }
  | { kind: 'protocol'; reply?: Reply }
  | { kind: 'local'; permanent: boolean; reply?: Reply };

export type SmtpErrorKind = SmtpFailure['kind'];

/** What the session knew of the peer when it failed (TLSRPT sending-mta-ip, receiving-mx-helo). */
export interface PeerFacts {
  /** our end of the connection, once connected */
  localAddress?: string;
  /** the 220 greeting's text, once read */
  greeting?: string;
}

export class SmtpError extends Error {
  readonly stage: SmtpStage;
  readonly failure: SmtpFailure;
  /** TLSRPT (issue 6): our address on the failed connection and the peer's greeting text, when known */
  readonly localAddress?: string;
  readonly greeting?: string;

  constructor(stage: SmtpStage, message: string, failure: SmtpFailure, opts: { cause?: unknown; peer?: PeerFacts } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'SmtpError';
    this.stage = stage;
    this.failure = failure;
    if (opts.peer?.localAddress !== undefined) this.localAddress = opts.peer.localAddress;
    if (opts.peer?.greeting !== undefined) this.greeting = opts.peer.greeting;
  }

  get kind(): SmtpErrorKind {
    return this.failure.kind;
  }
  /** the server's reply that ended it, when one did */
  get reply(): Reply | undefined {
    const f = this.failure;
    return f.kind === 'refused' || f.kind === 'tls-required' || f.kind === 'protocol' || f.kind === 'local' ? f.reply : undefined;
  }
  /**
   * True only for a 5xx reply to greeting/EHLO/MAIL/RCPT/DATA (or a local 5.x.x decision such as a
   * missing SMTPUTF8). TLS policy failures are never permanent: RFC 7672 §2.2 says try the next MX or defer.
   */
  get permanent(): boolean {
    const f = this.failure;
    return (f.kind === 'refused' || f.kind === 'local') && f.permanent;
  }
  /** mode 'may' and the TLS handshake failed: the caller may reconnect with mode 'none' (DANE-44) */
  get cleartextRetryAllowed(): boolean {
    return this.failure.kind === 'tls-handshake' && this.failure.cleartextRetry;
  }
  /** a stage timeout (RFC 5321 §4.5.3.2) ended the connection */
  get timeout(): boolean {
    return this.failure.kind === 'timeout' || (this.failure.kind === 'tls-handshake' && this.failure.timedOut);
  }
  /** the verifier's outcome, for stage 'verify' */
  get verify(): VerifyOutcome | undefined {
    return this.failure.kind === 'unauthenticated' ? this.failure.verify : undefined;
  }
}

export interface TlsInfo {
  protocol: string;
  cipher: string;
  verified: boolean;
  /** set once `verified`: the route that verification authenticated for REQUIRETLS (TlsRequirement.authenticatedRoute) */
  route?: AuthenticatedRoute;
  verify?: VerifyOutcome;
  servername?: string;
}

export interface SendInput {
  from: string;
  recipients: string[];
  size?: number;
  /**
   * The body holds 8-bit octets: sent with BODY=8BITMIME, and only to a server that advertises
   * 8BITMIME (RFC 6152 §3); the caller converts for one that does not (delivery/body.ts).
   */
  eightBit?: boolean;
  smtputf8?: boolean;
  /**
   * RFC 8689 §4.2.1 (RT-23, RT-26): MAIL FROM carries REQUIRETLS, which only a server that advertised
   * REQUIRETLS after STARTTLS, over an authenticated session, may receive. The caller chooses such a
   * session (delivery/deliver.ts); `send` refuses anything else before a command is sent.
   */
  requireTls?: boolean;
  /** RFC 3461 parameters, sent only to a server that advertises DSN; `rcpt` parallels `recipients` */
  dsn?: { mail?: MailDsn; rcpt?: (RcptDsn | undefined)[] };
  body: () => NodeJS.ReadableStream | Readable;
}

/** The step of a mail transaction a reply answers (RFC 5321 §4.3.2). */
export type TransactionStep = 'MAIL FROM' | 'RCPT TO' | 'DATA' | 'end of DATA' | 'BDAT';

/**
 * The client's verdict on one recipient of one transaction (issue 13): exactly one per recipient,
 * classified here from the replies so that no caller reads raw codes.
 *
 * - `delivered`: its RCPT got a 2xx, DATA a 354, the end of data a 2xx (RFC 5321 §4.3.2), or (CHUNKING)
 *   the one `BDAT … LAST` a 2xx (RFC 3030 §2) — the only ways to delivery; `reply` is that last reply;
 * - `refused`: a 4xx (temporary) or 5xx (permanent) at `step` (RFC 5321 §4.2.1);
 * - `protocol-error`: a reply the step does not allow (a 3xx to MAIL/RCPT/end of data, anything
 *   but 354 at DATA except 4xx/5xx): the peer's state is unknown, so the recipient is not
 *   delivered and the connection is not reused.
 *
 * Transport failures (close, timeout, malformed or over-long replies) are thrown as SmtpError:
 * they end the connection and leave every recipient of the transaction undecided.
 */
export type RecipientVerdict =
  | { address: string; kind: 'delivered'; reply: Reply }
  | { address: string; kind: 'refused'; step: TransactionStep; reply: Reply; permanent: boolean }
  | { address: string; kind: 'protocol-error'; step: TransactionStep; reply: Reply; detail: string };

/**
 * The MAIL command for this server: SIZE (RFC 1870), BODY=8BITMIME (RFC 6152 §2), SMTPUTF8
 * (RFC 6531 §3.4), RET/ENVID (RFC 3461 §4.3, §4.4) — each only when the server offers it.
 */
/**
 * RFC 8689 §4.2.1 steps 2-5 (RT-21…23): why a session cannot carry a REQUIRETLS message, or undefined when it
 * can — verified TLS over an authenticated route (`TlsInfo.route`) and REQUIRETLS in the EHLO reply after
 * STARTTLS. The one rule: delivery picks hosts with it, and `SmtpSession.send` refuses with it as the last guard.
 */
export function requireTlsProblem(tls: TlsInfo | undefined, extensions: ReadonlyMap<string, string>): RequireTlsProblem | undefined {
  if (!tls?.verified || !tls.route) return 'unauthenticated';
  return extensions.has('REQUIRETLS') ? undefined : 'not-advertised';
}

export function mailCommand(input: SendInput, ext: ReadonlyMap<string, string>): string {
  let cmd = `MAIL FROM:<${input.from}>`;
  if (ext.has('SIZE') && input.size !== undefined) cmd += ` SIZE=${Math.max(0, Math.floor(input.size))}`;
  if (input.eightBit && ext.has('8BITMIME')) cmd += ' BODY=8BITMIME';
  if (input.smtputf8) cmd += ' SMTPUTF8';
  if (input.requireTls) cmd += ' REQUIRETLS';
  if (ext.has('DSN')) cmd += mailDsnParams(input.dsn?.mail);
  return cmd;
}

/** A RCPT command: NOTIFY/ORCPT (RFC 3461 §4.1, §4.2) only for a server that offers DSN. */
export function rcptCommand(address: string, dsn: RcptDsn | undefined, ext: ReadonlyMap<string, string>): string {
  return `RCPT TO:<${address}>${ext.has('DSN') ? rcptDsnParams(dsn) : ''}`;
}

export interface SendResult {
  /** one verdict per recipient of the input, in its order */
  recipients: RecipientVerdict[];
}

/** Bounds for one reply: a hostile peer must not make us buffer without end. */
export const MAX_REPLY_LINES = 512;
export const MAX_REPLY_BYTES = 64 * 1024;
/** RFC 5321 §4.5.3.1.5 says 512 octets per reply line; we allow slack but bound it. */
export const MAX_LINE_BYTES = 8 * 1024;

const CRLF = '\r\n';

/** A reply in an error message: one printable line (outcome.ts replyLine), never the peer's raw bytes. */
const describe = replyLine;

/** RFC 5321 §4.2.1: the first digit says what happened (2 done, 3 go on, 4 try again, 5 never). */
function replyClass(code: number): 2 | 3 | 4 | 5 {
  return Math.floor(code / 100) as 2 | 3 | 4 | 5; // the reader admits only 2xx–5xx (§4.2)
}

function protocolError(address: string, step: TransactionStep, reply: Reply, why: string): RecipientVerdict {
  return { address, kind: 'protocol-error', step, reply, detail: `${describe(reply)} in reply to ${step}: ${why} (RFC 5321 §4.3.2)` };
}

/**
 * Incremental reply parser for one socket (RFC 5321 §4.2). Complete replies are
 * queued so pipelined replies (RFC 2920) that arrive in one segment are not lost.
 */
class ReplyReader {
  private buf: Buffer = Buffer.alloc(0);
  private lines: string[] = [];
  private code = 0;
  private bytes = 0;
  private readonly queue: Reply[] = [];
  private failure?: { protocol: boolean; message: string };
  private waiter?: { resolve: (r: Reply) => void; reject: (e: { protocol: boolean; message: string }) => void };

  feed(chunk: Buffer): void {
    if (this.failure) return;
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    let nl: number;
    while ((nl = this.buf.indexOf(0x0a)) !== -1) {
      const end = nl > 0 && this.buf[nl - 1] === 0x0d ? nl - 1 : nl;
      // As received, except that bytes which are not UTF-8 read as \xHH instead of U+FFFD (what was sent stays visible).
      const line = decodeUtf8(this.buf.subarray(0, end));
      this.bytes += nl + 1;
      this.buf = this.buf.subarray(nl + 1);
      if (!this.line(line)) return;
    }
    if (this.buf.length > MAX_LINE_BYTES) this.fail(true, `reply line longer than ${MAX_LINE_BYTES} bytes`);
  }

  /** Returns false once the reader has failed. */
  private line(line: string): boolean {
    // Reply-line = *( Reply-code "-" [ textstring ] CRLF ) Reply-code [ SP textstring ] CRLF (RFC 5321 §4.2)
    const m = /^([2-5][0-9][0-9])(?:([ -])(.*))?$/s.exec(line);
    if (!m || /[\0\r]/.test(line)) {
      this.fail(true, `malformed reply line ${JSON.stringify(line.slice(0, 80))}`);
      return false;
    }
    const code = Number(m[1]);
    if (this.lines.length > 0 && code !== this.code) {
      this.fail(true, `reply code changed inside a multi-line reply (${this.code} then ${code})`);
      return false;
    }
    this.code = code;
    this.lines.push(m[3] ?? '');
    if (this.lines.length > MAX_REPLY_LINES || this.bytes > MAX_REPLY_BYTES) {
      this.fail(true, `reply exceeds ${MAX_REPLY_LINES} lines / ${MAX_REPLY_BYTES} bytes`);
      return false;
    }
    if (m[2] === '-') return true;
    const text = this.lines.join('\n');
    const reply: Reply = { code, text };
    // RFC 3463 §2 / RFC 2034 §4: "class.subject.detail" leads the text; the class must match the reply.
    const e = /^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)/.exec(this.lines[0]!);
    if (e && Number(e[1]) === Math.floor(code / 100)) reply.enhanced = `${e[1]}.${e[2]}.${e[3]}`;
    this.lines = [];
    this.bytes = 0;
    this.code = 0;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve(reply);
    } else {
      this.queue.push(reply);
    }
    return true;
  }

  fail(protocol: boolean, message: string): void {
    if (this.failure) return;
    this.failure = { protocol, message };
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.reject(this.failure);
    }
  }

  /** Anything received that no command has asked for yet. */
  hasPending(): boolean {
    return this.queue.length > 0 || this.lines.length > 0 || this.buf.length > 0;
  }

  next(): Promise<Reply> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  cancel(): void {
    this.waiter = undefined;
  }
}

/**
 * How the rest of a pipelined batch ended after MAIL was refused or no recipient accepted: the peer in step (the
 * session goes on), gone (closing, or a reply that could not be read: the connection goes), or a reply that
 * shows it out of step (a reply no command of the batch can get, or more replies than commands): the
 * connection goes and no reply of the batch decides anything.
 */
type BatchEnd = 'in-step' | 'gone' | { outOfStep: string };
const OUT_OF_STEP = 'the replies to the batch are out of step with its commands; none decides';

/**
 * The largest batch sent with BDAT (SmtpSession.smallChunk; the closing NOOP counted): the whole transaction in one read of a peer
 * that reads 4 KB at a time, as Postfix's smtpd does (VSTREAM_BUFSIZE). Such a peer answers the pipelined
 * MAIL and RCPTs when its buffer runs dry; with a chunk that spans two of its reads, the BDAT reply follows
 * as a second small segment, held by the peer's Nagle until our delayed ACK: ~40 ms a message. Measured
 * with bench:postfix (issue 17): 3 KB messages 1.31× the rate with BDAT, 4–50 KB 0.6–0.9×. Larger
 * messages use DATA, whose 354 round trip keeps the peer's replies in step with our writes.
 */
export const BDAT_BATCH = 4096;

/**
 * CRLF normalisation and dot-stuffing for DATA (RFC 5321 §2.3.8, §4.5.2), streaming:
 * the state (previous byte was CR, at start of line) carries across chunks.
 *
 * `{ dots: false }` is the same for a BDAT chunk (RFC 3030 §2): CRLF normalisation only, no
 * transparency dots and no end-of-data line, the octets counted as they are sent.
 */
export class DataEncoder {
  private prevCR = false;
  private lineStart = true;
  private readonly dots: boolean;

  constructor(opts: { dots?: boolean } = {}) {
    this.dots = opts.dots ?? true;
  }

  /**
   * The chunk encoded. When it needs no change — every line break already CRLF, no line starting
   * with a dot, not ending in a CR — the chunk itself is returned, not a copy (nearly every chunk of
   * a spooled body: ingress stores CRLF lines without their transparency dots): a 50 KB body then
   * costs no allocation here. The caller must not change `chunk` afterwards.
   */
  push(chunk: Buffer): Buffer {
    if (this.clean(chunk)) {
      if (chunk.length > 0) this.lineStart = chunk[chunk.length - 1] === 0x0a;
      return chunk;
    }
    return this.rewrite(chunk);
  }

  /** true when encoding `chunk` in the current state would give back exactly its bytes */
  private clean(chunk: Buffer): boolean {
    const len = chunk.length;
    if (len === 0) return !this.prevCR;
    if (this.prevCR) return false;
    const dots = this.dots;
    if (dots && this.lineStart && chunk[0] === 0x2e) return false;
    if (chunk[len - 1] === 0x0d) return false;
    // every LF preceded by a CR and (DATA) not followed by a dot …
    let lfs = 0;
    for (let p = chunk.indexOf(0x0a); p !== -1; p = chunk.indexOf(0x0a, p + 1)) {
      if (p === 0 || chunk[p - 1] !== 0x0d || (dots && chunk[p + 1] === 0x2e)) return false;
      lfs++;
    }
    // … and as many CRs as LFs: each CR then is the one before an LF (no bare CR)
    let crs = 0;
    for (let p = chunk.indexOf(0x0d); p !== -1; p = chunk.indexOf(0x0d, p + 1)) if (++crs > lfs) return false;
    return crs === lfs;
  }

  private rewrite(chunk: Buffer): Buffer {
    const len = chunk.length;
    // worst case: every byte a bare CR/LF (two out) or a line of one dot (two out)
    const out = Buffer.allocUnsafe(len * 2);
    let i = 0;
    let o = 0;
    if (this.prevCR && len > 0) {
      this.prevCR = false;
      if (chunk[0] === 0x0a) i = 1; // the LF of a CRLF whose CRLF we already wrote
    }
    // Runs between line breaks are copied whole (Buffer#copy), not byte by byte: a 50 KB body is ~700 copies.
    let nextCR = chunk.indexOf(0x0d, i);
    let nextLF = chunk.indexOf(0x0a, i);
    while (i < len) {
      if (this.dots && this.lineStart && chunk[i] === 0x2e) out[o++] = 0x2e; // §4.5.2 transparency
      if (nextCR !== -1 && nextCR < i) nextCR = chunk.indexOf(0x0d, i);
      if (nextLF !== -1 && nextLF < i) nextLF = chunk.indexOf(0x0a, i);
      const e = Math.min(nextCR === -1 ? len : nextCR, nextLF === -1 ? len : nextLF);
      if (e > i) {
        o += chunk.copy(out, o, i, e);
        this.lineStart = false;
      }
      if (e === len) break;
      // bare CR, bare LF and CRLF all become CRLF
      out[o++] = 0x0d;
      out[o++] = 0x0a;
      this.lineStart = true;
      if (chunk[e] === 0x0d) {
        if (e + 1 === len) this.prevCR = true;
        i = e + 1 < len && chunk[e + 1] === 0x0a ? e + 2 : e + 1;
      } else i = e + 1;
    }
    return out.subarray(0, o);
  }

  /** Terminates the last line if needed and (DATA) adds the end-of-data "." line. */
  end(): Buffer {
    if (!this.dots) return this.lineStart ? Buffer.alloc(0) : Buffer.from(CRLF, 'latin1');
    return Buffer.from(this.lineStart ? `.${CRLF}` : `${CRLF}.${CRLF}`, 'latin1');
  }
}

function sniName(name: string | undefined): string | undefined {
  if (!name) return undefined;
  // RFC 6066 §3: HostName is a DNS name without the trailing dot; IP literals are not permitted.
  const n = name.replace(/\.$/, '');
  if (!n || net.isIP(n) !== 0 || n.startsWith('[')) return undefined;
  return n;
}

/** The chain the peer presented, leaf first, DER (digest DANE-52/53 work on exactly this). */
function presentedChain(sock: tls.TLSSocket): Buffer[] {
  const out: Buffer[] = [];
  let cert: tls.DetailedPeerCertificate | undefined = sock.getPeerCertificate(true) as tls.DetailedPeerCertificate;
  const seen = new Set<object>();
  const fingerprints = new Set<string>();
  // A self-signed top certificate has issuerCertificate === itself: stop on any repeat.
  while (cert?.raw && !seen.has(cert) && !fingerprints.has(cert.fingerprint256)) {
    seen.add(cert);
    fingerprints.add(cert.fingerprint256);
    out.push(Buffer.from(cert.raw));
    cert = cert.issuerCertificate;
  }
  return out;
}

/** The connection a session speaks over: a TCP socket, later the TLS socket on top of it, or any duplex (tests). */
type AnySocket = Duplex;

export class SmtpSession {
  readonly target: Target;
  private readonly opts: SmtpClientOptions;
  private sock!: AnySocket;
  private reader!: ReplyReader;
  private detach: () => void = () => {};
  private closed = false;
  private broken = false;
  private busy = false;
  /**
   * A transaction ran on this connection (its MAIL was written) and no RSET has been accepted since: the
   * next transaction starts with RSET (RFC 5321 §4.1.1.5). The session decides, so no caller can forget it.
   */
  private rsetOwed = false;
  private _greeting!: Reply;
  private _extensions = new Map<string, string>();
  private _tls?: TlsInfo;

  private constructor(target: Target, opts: SmtpClientOptions) {
    this.target = target;
    this.opts = opts;
  }

  get greeting(): Reply {
    return this._greeting;
  }
  /** Extensions of the last EHLO (post-TLS when TLS is up); keys upper case, value = parameters. */
  get extensions(): Map<string, string> {
    return this._extensions;
  }
  get tls(): TlsInfo | undefined {
    return this._tls;
  }
  /** our end of the connection (TLSRPT sending-mta-ip), kept from the TCP connect */
  get localAddress(): string | undefined {
    return this._localAddress;
  }
  private _localAddress?: string;
  get usable(): boolean {
    return !this.closed && !this.broken && !this.busy && !this.sock.destroyed && !this.reader.hasPending();
  }

  /**
   * Connects, reads the greeting, says EHLO, applies the TLS requirement and says
   * EHLO again over TLS. Resolves only when the session may carry a message.
   */
  static async connect(target: Target, opts: SmtpClientOptions): Promise<SmtpSession> {
    if (opts.tls.mode === 'verify' && typeof opts.tls.verify !== 'function') {
      throw new SmtpError('verify', "TLS mode 'verify' without a verify function", { kind: 'local', permanent: false });
    }
    const s = new SmtpSession(target, opts);
    try {
      await s.open();
    } catch (err) {
      s.destroy();
      throw err;
    }
    return s;
  }

  private async open(): Promise<void> {
    const { timeouts } = this.opts;
    await this.connect();

    const greeting = await this.read('greeting', timeouts.greeting);
    this._greeting = greeting;
    if (greeting.code !== 220) {
      // RFC 5321 §3.1: after a 554 (or other refusal) greeting the client sends QUIT.
      await this.politeQuit();
      if (greeting.code >= 400) {
        throw this.fail('greeting', `server refused the session: ${describe(greeting)}`, { kind: 'refused', reply: greeting, permanent: greeting.code >= 500 });
      }
      throw this.fail('protocol', `unexpected greeting ${describe(greeting)}`, { kind: 'protocol', reply: greeting });
    }

    await this.hello();

    const mode = this.opts.tls.mode;
    if (mode === 'none') return;
    if (!this._extensions.has('STARTTLS')) {
      if (mode === 'may') return; // opportunistic: cleartext is acceptable (RFC 7672 §2.2, DANE-44)
      // DANE-41/42/43: TLS is mandatory; no cleartext, no envelope.
      await this.politeQuit();
      throw this.fail('starttls', `STARTTLS required (mode ${mode}) but not offered by ${this.target.host}`, { kind: 'tls-required' });
    }

    this.write(`STARTTLS`);
    const r = await this.read('starttls', timeouts.starttls);
    if (r.code !== 220) {
      if (mode === 'may') return; // RFC 3207 §4: the client may continue without TLS
      await this.politeQuit();
      throw this.fail('starttls', `STARTTLS rejected (mode ${mode}): ${describe(r)}`, { kind: 'tls-required', reply: r });
    }
    // CVE-2011-0411 class: bytes after the 220 and before the handshake were not
    // protected by TLS and must never be read as replies inside the TLS session.
    if (this.reader.hasPending()) {
      this.destroy();
      throw this.fail('protocol', 'server sent data after 220 to STARTTLS before the TLS handshake (injection)', { kind: 'protocol' });
    }

    await this.handshake();
    if (this.opts.tls.observe) {
      const sock = this.sock as tls.TLSSocket;
      try {
        this.opts.tls.observe({
          certificates: presentedChain(sock),
          protocol: sock.getProtocol(),
          cipher: sock.getCipher()?.name ?? null,
          ...(this.opts.tls.webpkiRoots ? { pkix: this.pkixVerdict(sock) } : {}),
        });
      } catch {
        /* an observer never changes the outcome */
      }
    }

    if (mode === 'verify') {
      const outcome = await this.runVerify();
      this._tls!.verify = outcome;
      if (!outcome.ok) {
        // DANE-63: QUIT and leave; not even EHLO reaches an unauthenticated peer.
        await this.politeQuit();
        throw this.fail('verify', `TLS peer authentication failed: ${outcome.reason ?? 'rejected'}: ${outcome.detail}`, {
          kind: 'unauthenticated',
          verify: outcome,
        });
      }
      this._tls!.verified = true;
      if (this.opts.tls.authenticatedRoute) this._tls!.route = this.opts.tls.authenticatedRoute;
    }

    // RFC 3207 §4.2: discard pre-TLS knowledge and ask again.
    this._extensions = new Map();
    await this.hello();
  }

  /**
   * The connection, from the connector (default: a TCP connection to the target's address, `dialTcp`).
   * The connect timeout covers the connector; on timeout its dial is aborted.
   */
  private async connect(): Promise<void> {
    const { address, port } = this.target;
    const ms = this.opts.timeouts.connect;
    const dial = this.opts.connector ?? dialTcp;
    const abort = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        abort.abort();
        reject(this.fail('connect', `connect to ${address}:${port} timed out after ${ms} ms`, { kind: 'timeout' }));
      }, ms);
    });
    const dialling = dial(this.target, { signal: abort.signal, ...(this.opts.localAddress ? { localAddress: this.opts.localAddress } : {}) });
    // A connector that resolves after the timeout (one that ignores the signal) leaks nothing.
    dialling.then(
      (late) => {
        if (abort.signal.aborted) late.destroy();
      },
      () => undefined,
    );
    let sock: Duplex;
    try {
      sock = await Promise.race([dialling, timeout]);
    } catch (err) {
      if (err instanceof SmtpError) throw err;
      throw this.fail('connect', `connect to ${address}:${port} failed: ${(err as Error | undefined)?.message ?? 'closed'}`, { kind: 'connection' }, err);
    } finally {
      clearTimeout(timer);
    }
    this.sock = sock;
    this._localAddress = (sock as Partial<net.Socket>).localAddress;
    this.attach(sock);
  }

  /** An SmtpError of this session: with what it knew of the peer (TLSRPT) when it failed. */
  private fail(stage: SmtpStage, message: string, failure: SmtpFailure, cause?: unknown): SmtpError {
    return new SmtpError(stage, message, failure, {
      ...(cause !== undefined ? { cause } : {}),
      peer: { ...(this._localAddress !== undefined ? { localAddress: this._localAddress } : {}), ...(this._greeting ? { greeting: this._greeting.text } : {}) },
    });
  }

  /** A CR or LF inside an address would let a caller smuggle extra SMTP commands. */
  private assertCommandSafe(value: string, stage: SmtpStage): void {
    if (/[\r\n\0]/.test(value)) {
      throw this.fail(stage, `refusing to send a command containing CR, LF or NUL: ${JSON.stringify(value)}`, { kind: 'local', permanent: true });
    }
  }

  /** Binds a fresh reply reader to the socket. */
  private attach(sock: AnySocket): void {
    const reader = new ReplyReader();
    this.reader = reader;
    const onData = (chunk: Buffer): void => reader.feed(chunk);
    const onError = (err: Error): void => {
      this.closed = true;
      reader.fail(false, `connection error: ${err.message}`);
    };
    const onClose = (): void => {
      this.closed = true;
      reader.fail(false, 'connection closed by peer');
    };
    sock.on('data', onData);
    sock.on('error', onError);
    sock.on('close', onClose);
    this.detach = () => {
      sock.off('data', onData);
      sock.off('error', onError);
      sock.off('close', onClose);
    };
  }

  private write(line: string): void {
    if (!this.sock.destroyed) this.sock.write(line + CRLF);
  }

  /** Reads one reply; a timeout or a broken peer destroys the connection. */
  private async read(stage: SmtpStage, ms: number, what?: string): Promise<Reply> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.reader.cancel();
        reject(this.fail(stage, `timeout after ${ms} ms waiting for ${what ?? stage} reply from ${this.target.host}`, { kind: 'timeout' }));
      }, ms);
    });
    try {
      return await Promise.race([this.reader.next(), timeout]);
    } catch (err) {
      this.destroy();
      if (err instanceof SmtpError) throw err;
      const f = err as { protocol: boolean; message: string };
      throw this.fail(f.protocol ? 'protocol' : stage, `${f.message} (${what ?? stage})`, { kind: f.protocol ? 'protocol' : 'connection' });
    } finally {
      clearTimeout(timer);
    }
  }

  /** EHLO, falling back to HELO on 5xx (RFC 5321 §4.1.4). Sets extensions. */
  private async hello(): Promise<void> {
    const { heloName, timeouts } = this.opts;
    this.assertCommandSafe(heloName, 'ehlo');
    this.write(`EHLO ${heloName}`);
    const r = await this.read('ehlo', timeouts.ehlo);
    if (r.code === 250) {
      const ext = new Map<string, string>();
      for (const line of r.text.split('\n').slice(1)) {
        const [kw, ...params] = line.trim().split(/\s+/);
        if (kw) ext.set(kw.toUpperCase(), params.join(' '));
      }
      for (const kw of this.opts.discardExtensions ?? []) ext.delete(kw);
      this._extensions = ext;
      return;
    }
    if (r.code >= 500) {
      this.write(`HELO ${heloName}`);
      const h = await this.read('ehlo', timeouts.ehlo, 'HELO');
      if (h.code === 250) {
        this._extensions = new Map();
        return;
      }
      await this.politeQuit();
      throw this.fail('ehlo', `HELO rejected: ${describe(h)}`, { kind: 'refused', reply: h, permanent: h.code >= 500 });
    }
    await this.politeQuit();
    throw this.fail('ehlo', `EHLO rejected: ${describe(r)}`, { kind: 'refused', reply: r, permanent: false });
  }

  private async handshake(): Promise<void> {
    const { tls: req, timeouts } = this.opts;
    const raw = this.sock as net.Socket;
    this.detach();
    // Keep an error listener on the raw socket; the TLS socket reports the failure.
    raw.on('error', () => {});
    const servername = sniName(req.servername);
    const may = req.mode === 'may';
    const sock = tls.connect({
      socket: raw,
      // DANE-60: SNI is the TLSA base domain (or the MX name without DANE).
      ...(servername ? { servername } : {}),
      // We authenticate ourselves (DANE, RFC 7672 §3); the WebPKI verdict is irrelevant.
      rejectUnauthorized: false,
      // Empty trust store: getPeerCertificate(true) must report only what the peer
      // presented, never a root completed from the local store (DANE-53). Under an MTA-STS policy
      // the WebPKI roots instead: OpenSSL validates the chain, `verify` judges its verdict and the name.
      ca: req.webpkiRoots ? [...req.webpkiRoots] : [],
      // `authorized` is then the chain's verdict alone: names are judged by `verify` (SAN only, RFC 6125),
      // not by node's default check, which falls back to the CN.
      checkServerIdentity: () => undefined,
      // DANE-61, RFC 7672 §8.1: TLS 1.2 is our floor.
      minVersion: 'TLSv1.2',
      // DANE-62: no `session` is ever passed, so nothing is resumed; each
      // connection gets a full handshake and a full verification.
    });
    this.sock = sock;
    this.attach(sock);
    const host = this.target.host;
    await awaitEvent(sock, 'secureConnect', timeouts.starttls, true, (why, err) => {
      sock.destroy();
      raw.destroy();
      const message =
        why === 'timeout'
          ? `TLS handshake with ${host} timed out after ${timeouts.starttls} ms`
          : why === 'error'
            ? `TLS handshake with ${host} failed: ${err?.message}`
            : `connection closed during TLS handshake with ${host}`;
      return this.fail('tls', message, { kind: 'tls-handshake', cleartextRetry: may, timedOut: why === 'timeout' }, err);
    });
    const cipher = sock.getCipher();
    this._tls = {
      protocol: sock.getProtocol() ?? 'unknown',
      cipher: cipher?.name ?? 'unknown',
      verified: false,
      ...(servername ? { servername } : {}),
    };
  }

  /** OpenSSL's verdict on the chain against `webpkiRoots` (names are judged by the caller, mtasts/webpki.ts). */
  private pkixVerdict(sock: tls.TLSSocket): NonNullable<PresentedChain['pkix']> {
    return { authorized: sock.authorized, ...(sock.authorizationError ? { error: String(sock.authorizationError) } : {}) };
  }

  private async runVerify(): Promise<VerifyOutcome> {
    const sock = this.sock as tls.TLSSocket;
    if (sock.isSessionReused()) {
      // DANE-62: a resumed session skips the certificate exchange; never accept one.
      return { ok: false, reason: 'session-resumed', detail: 'TLS session was resumed; full handshake required' };
    }
    const certificates = presentedChain(sock);
    if (certificates.length === 0) {
      return { ok: false, reason: 'no-certificate', detail: 'peer presented no certificate' };
    }
    const chain: PresentedChain = {
      certificates,
      protocol: sock.getProtocol(),
      cipher: sock.getCipher()?.name ?? null,
      ...(this.opts.tls.webpkiRoots ? { pkix: this.pkixVerdict(sock) } : {}),
    };
    try {
      return await this.opts.tls.verify!(chain);
    } catch (err) {
      return { ok: false, reason: 'verifier-error', detail: (err as Error).message };
    }
  }

  /**
   * One mail transaction: [RSET,] MAIL, RCPT…, DATA, body, final reply; or, to a peer that offers
   * CHUNKING and PIPELINING, a message whose batch fits BDAT_BATCH as [RSET,] MAIL, RCPT…, `BDAT <n>
   * LAST`, its octets and NOOP in one write (RFC 3030 §4.2), then the replies (bdatInStep: the NOOP's). Rejections by the server are
   * results; only transport failures, timeouts and protocol violations throw.
   *
   * On a connection that already carried a transaction the session sends RSET first (RFC 5321
   * §4.1.1.5): with PIPELINING in the same write as MAIL, the RCPTs and DATA (RFC 2920 §3.1: RSET may
   * appear anywhere in a group), else alone. Any failure of the RSET (a reply other than 2xx, close,
   * timeout, garbage) throws stage `rset` before a reply to MAIL or RCPT is read: the connection is
   * destroyed and no verdict was given. With DATA no body went out. With BDAT the octets followed the
   * RSET: a peer that refused the RSET and still took the message holds a copy the relay sends again
   * (a duplicate, never a loss, RFC 5321 §6.1); a peer closing (421, idle timeout) reads no further.
   */
  async send(input: SendInput): Promise<SendResult> {
    if (this.busy) throw new Error('SmtpSession.send: a transaction is already running');
    // On a reused connection these take the place of a failed RSET (stage `rset`): nothing of this message was sent.
    const idle: SmtpStage = this.rsetOwed ? 'rset' : 'protocol';
    if (this.closed || this.broken || this.sock.destroyed) {
      throw this.fail(idle, 'session is not usable (closed or in an unknown state)', { kind: 'connection' });
    }
    if (this.reader.hasPending()) {
      // Unsolicited bytes (e.g. a 421 idle-timeout notice) would desynchronise replies.
      this.destroy();
      throw this.fail(idle, 'server sent unsolicited data between transactions', { kind: 'protocol' });
    }
    this.assertCommandSafe(input.from, 'mail');
    for (const r of input.recipients) this.assertCommandSafe(r, 'rcpt');
    if (input.recipients.length === 0) throw new Error('SmtpSession.send: no recipients');
    if (input.smtputf8 && !this._extensions.has('SMTPUTF8')) {
      // RFC 6531 §3.4: without SMTPUTF8 support the message cannot be sent as is.
      const text = '5.6.7 SMTPUTF8 required but not supported by the server (RFC 6531 §3.4)';
      throw this.fail('mail', `${this.target.host}: ${text}`, { kind: 'local', reply: { code: 550, enhanced: '5.6.7', text }, permanent: true });
    }
    if (input.eightBit && !this._extensions.has('8BITMIME')) {
      // RFC 6152 §3: 8-bit data MUST NOT go to a server that did not advertise 8BITMIME. The caller
      // converts first; this is the last line of defence, before anything of the transaction is sent.
      const text = '5.6.3 8-bit message body but the server does not advertise 8BITMIME (RFC 6152 section 3)';
      throw this.fail('mail', `${this.target.host}: ${text}`, { kind: 'local', reply: { code: 554, enhanced: '5.6.3', text }, permanent: true });
    }

    const rtProblem = input.requireTls ? requireTlsProblem(this._tls, this._extensions) : undefined;
    if (rtProblem) {
      // RFC 8689 §4.2.1 steps 2-5: a session over an authenticated route (DNSSEC+DANE or MTA-STS enforce)
      // whose EHLO advertised REQUIRETLS. The last line of defence: nothing of the transaction is sent; the
      // message waits (never a cleartext or weaker copy).
      const text =
        rtProblem === 'not-advertised'
          ? '4.7.30 REQUIRETLS support required: the server does not advertise REQUIRETLS (RFC 8689)'
          : '4.7.10 Encryption needed: no TLS session over a DNSSEC+DANE or MTA-STS enforce route (RFC 8689)';
      throw this.fail('mail', `${this.target.host}: ${text}`, {
        kind: 'local',
        permanent: false,
        reply: { code: 450, enhanced: text.slice(0, text.indexOf(' ')), text },
      });
    }

    return this.exclusive(() => this.transaction(input));
  }

  /**
   * Runs one command exchange with the session marked busy. Any failure leaves the
   * connection in an unknown protocol state, so it is closed and never reused.
   */
  private async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    this.busy = true;
    try {
      return await fn();
    } catch (err) {
      this.broken = true;
      this.destroy();
      throw err;
    } finally {
      this.busy = false;
    }
  }

  private async transaction(input: SendInput): Promise<SendResult> {
    const { timeouts } = this.opts;
    const ext = this._extensions;
    const mailCmd = mailCommand(input, ext);
    const rcptCmds = input.recipients.map((a, i) => rcptCommand(a, input.dsn?.rcpt?.[i], ext));
    const pipelining = ext.has('PIPELINING');
    const verdicts = new Map<number, RecipientVerdict>();
    const every = (which: number[], v: (address: string) => RecipientVerdict): void => {
      for (const i of which) verdicts.set(i, v(input.recipients[i]!));
    };
    const all = input.recipients.map((_, i) => i);
    /** The peer is out of step: each refusal read from the batch may have been another command's reply; none stands. */
    const voidAll = (evidence: string): void => {
      for (const i of all) {
        const v = verdicts.get(i);
        if (v && v.kind !== 'delivered') verdicts.set(i, protocolError(v.address, v.step, v.reply, `${evidence}; ${OUT_OF_STEP}`));
      }
    };
    const done = (): SendResult => ({
      recipients: input.recipients.map((address, i) => {
        const v = verdicts.get(i);
        if (!v) throw new Error(`SmtpSession: no verdict for ${address} (internal error)`);
        return v;
      }),
    });

    // RFC 2920 §3.1: with PIPELINING, [RSET,] MAIL, every RCPT and DATA go in one batch (DATA may end a
    // group), as Postfix and mox send them: one write and one round trip fewer per message than waiting
    // for the RCPT replies first. The body still waits for a 354 to that DATA and for an accepted recipient.
    const rset = this.rsetOwed;
    const batch = [...(rset ? ['RSET'] : []), mailCmd, ...rcptCmds];
    const chunk = pipelining && ext.has('CHUNKING') ? await this.smallChunk(input, batch) : undefined;
    if (chunk) {
      // RFC 3030 §4.2 with RFC 2920: the whole message in the one batch, `BDAT <n> LAST` and its octets after
      // the RCPTs: one write and one round trip per message instead of two (no 354 to wait for). A NOOP ends
      // the batch (RFC 2920 §3.1: NOOP may end a group): see bdatInStep.
      this.sock.cork();
      this.sock.write(`${[...batch, `BDAT ${chunk.length} LAST`].join(CRLF)}${CRLF}`);
      this.sock.write(chunk);
      this.sock.write(`NOOP${CRLF}`);
      this.sock.uncork();
      if (rset) await this.rsetReply();
      this.rsetOwed = true;
    } else if (pipelining) {
      this.sock.write([...batch, 'DATA'].join(CRLF) + CRLF);
      // The RSET's reply comes first; a failure throws before any MAIL/RCPT reply is read (none is a verdict then).
      if (rset) await this.rsetReply();
      // owed again for the next transaction (set after the reply: rsetReply clears what it answered)
      this.rsetOwed = true;
    } else {
      if (rset) {
        this.write('RSET');
        await this.rsetReply();
        this.expectNothingPending('MAIL FROM', 'rset');
      }
      this.write(mailCmd);
      this.rsetOwed = true;
    }
    const mail = this.note(await this.read('mail', timeouts.mail, 'MAIL'));
    const mailClass = replyClass(mail.code);
    if (mailClass === 3) {
      // RFC 5321 §4.3.2: MAIL allows no intermediate reply; what the peer thinks now is unknown.
      every(all, (address) => protocolError(address, 'MAIL FROM', mail, 'a 3xx reply is not allowed for MAIL'));
      this.abandon();
      return done();
    }
    if (mailClass !== 2) {
      every(all, (address) => ({ address, kind: 'refused', step: 'MAIL FROM', reply: mail, permanent: mailClass === 5 }));
      if (pipelining) {
        // The pipelined RCPTs are answered too (usually 503), then DATA. Any failure leaves the MAIL reply as
        // the verdict, and a connection that is not reused; replies out of step void it.
        const end = await this.finishRefusedBatch(rcptCmds.length, !!chunk);
        if (typeof end === 'object') voidAll(end.outOfStep);
        if (end !== 'in-step') this.abandon();
      }
      return done();
    }

    // RFC 5321 §4.2.1: the first digit decides; any 2xx to MAIL is positive completion.
    const accepted: number[] = [];
    for (let i = 0; i < rcptCmds.length; i++) {
      if (!pipelining) {
        this.expectNothingPending('RCPT TO');
        this.write(rcptCmds[i]!);
      }
      const reply = this.note(await this.read('rcpt', timeouts.rcpt, 'RCPT'));
      const cls = replyClass(reply.code);
      if (reply.code === 421) {
        // RFC 5321 §3.8: the peer is closing the channel; no DATA can follow. Every recipient still
        // open (accepted ones too) gets this temporary refusal.
        every(
          all.filter((j) => !verdicts.has(j)),
          (address) => ({ address, kind: 'refused', step: 'RCPT TO', reply, permanent: false }),
        );
        this.abandon();
        return done();
      }
      if (cls === 2) {
        accepted.push(i);
      } else if (cls === 3) {
        // An intermediate reply to RCPT: the peer may count this recipient as accepted or not. Nothing
        // decided so far goes to DATA: the transaction is abandoned and every open recipient retried.
        every(
          all.filter((j) => !verdicts.has(j)),
          (address) => protocolError(address, 'RCPT TO', reply, `a 3xx reply to RCPT TO:<${input.recipients[i]}> is not allowed; transaction abandoned`),
        );
        this.abandon();
        return done();
      } else {
        // RFC 5321 §4.5.3.1.10: 552 to RCPT is the old "too many recipients"; clients treat it as 452.
        verdicts.set(i, { address: input.recipients[i]!, kind: 'refused', step: 'RCPT TO', reply, permanent: cls === 5 && reply.code !== 552 });
      }
    }

    if (accepted.length === 0) {
      // The pipelined DATA is answered too; a failure here, or a reply that leaves the peer's state
      // unknown, costs only the connection.
      const end = pipelining ? await this.finishRefusedBatch(0, !!chunk) : 'in-step';
      if (end !== 'in-step') {
        if (typeof end === 'object') voidAll(end.outOfStep);
        this.abandon();
        return done();
      }
      // No accepted recipient: without PIPELINING, DATA would only earn a 554; end the transaction instead.
      await this.rsetOrAbandon();
      return done();
    }

    // The reply that decides the message for the accepted recipients: the end of data's (RFC 5321 §4.3.2) or
    // the BDAT LAST's (RFC 3030 §2). A 2xx delivers; a 3xx is none of its replies (the peer may be waiting for
    // more): no delivery, and the connection goes; a 4xx/5xx refuses.
    const decide = (step: 'end of DATA' | 'BDAT', end: Reply, no3xx: string): void => {
      const cls = replyClass(end.code);
      if (cls === 2) every(accepted, (address) => ({ address, kind: 'delivered', reply: end }));
      else if (cls === 3) {
        every(accepted, (address) => protocolError(address, step, end, no3xx));
        this.abandon();
      } else every(accepted, (address) => ({ address, kind: 'refused', step, reply: end, permanent: cls === 5 }));
    };
    if (chunk) {
      const end = this.note(await this.read('data', timeouts.data_done, 'BDAT'));
      decide('BDAT', end, 'a 3xx reply is not allowed for BDAT');
      const noop = this.broken ? undefined : await this.bdatInStep();
      if (noop) {
        // Out of step: every reply of the batch may belong to another command; none decides anything.
        every(all, (address) => protocolError(address, 'BDAT', end, `the NOOP after BDAT was answered ${describe(noop)}: the peer is out of step`));
        this.abandon();
      }
      return done();
    }

    if (!pipelining) {
      this.expectNothingPending('DATA');
      this.write('DATA');
    }
    const go = this.note(await this.read('data', timeouts.data, 'DATA'));
    if (pipelining && !this.broken && this.reader.hasPending()) {
      // More replies than the batch has commands (a peer that answered one twice): any reply read may be another
      // command's, so none decides anything, and nothing more is written (the peer may be in its data phase).
      every(all, (address) => protocolError(address, 'DATA', go, 'more replies than commands in the batch: the peer is out of step'));
      this.abandon();
      return done();
    }
    if (go.code !== 354) {
      const cls = replyClass(go.code);
      if (cls === 4 || cls === 5) {
        every(accepted, (address) => ({ address, kind: 'refused', step: 'DATA', reply: go, permanent: cls === 5 }));
        await this.rsetOrAbandon();
      } else {
        // RFC 5321 §4.3.2: only 354 opens the data phase. A 2xx here is no delivery (no body was
        // sent) and another 3xx may have the peer waiting for a body we will never send: close
        // without the end-of-data dot, so nothing half-sent can be taken for a message. DATA has no such
        // reply: with PIPELINING it is another command's, and no reply of the batch decides anything.
        every(pipelining ? all : accepted, (address) => protocolError(address, 'DATA', go, 'only 354 opens the data phase'));
        this.abandon();
      }
      return done();
    }
    await this.streamBody(input.body());
    decide('end of DATA', this.note(await this.read('data', timeouts.data_done, 'end of data')), 'only a 2xx after the end of data is delivery');
    return done();
  }

  /**
   * The reply to the NOOP that ends a BDAT batch; undefined when it is the 2xx a NOOP gets (RFC 5321 §4.1.1.9),
   * else that reply. With DATA a reply the peer sends too many (a command answered twice) is caught before
   * anything depends on it: it is not a 354, or it is pending before the dot. A BDAT batch has no such point,
   * and a stray 2xx would be read as the BDAT reply that delivers while the peer refused the message. The NOOP
   * catches the shift: its "reply" is then the BDAT's, and the peer's real answer to the message is not lost
   * in a later read. (A stray 2xx with a 2xx to BDAT shifts the NOOP's own reply to after the transaction;
   * the next send() finds it pending and the connection goes.)
   */
  private async bdatInStep(): Promise<Reply | undefined> {
    const r = this.note(await this.read('data', this.opts.timeouts.mail, 'NOOP'));
    if (replyClass(r.code) !== 2) return r;
    // A stray reply before the real BDAT reply shifts that reply onto the NOOP and the NOOP's own one behind it,
    // where it has usually arrived already: a peer writes the replies of one batch together.
    return this.reader.hasPending() ? { code: r.code, text: `${r.text} (and a reply more: the peer answered one command twice)` } : undefined;
  }

  /**
   * The rest of a pipelined batch after MAIL was refused or no recipient was accepted: `rcpts` RCPT replies
   * still unread (none read after a 421: the peer is closing, RFC 5321 §3.8, and nothing more is written),
   * then the reply to DATA (pipelinedDataRefused). Whether the session may go on; any failure is a no.
   */
  private async finishRefusedBatch(rcpts: number, bdat: boolean): Promise<BatchEnd> {
    try {
      for (let i = 0; i < rcpts && !this.broken; i++) this.note(await this.read('rcpt', this.opts.timeouts.rcpt, 'RCPT'));
      if (this.broken) return 'gone';
      return bdat ? await this.pipelinedBdatRefused() : await this.pipelinedDataRefused();
    } catch (e) {
      // a malformed reply: a peer that garbles one reply may have garbled the count too
      return e instanceof SmtpError && e.failure.kind === 'protocol' ? { outOfStep: `a malformed reply in the batch (${e.message})` } : 'gone';
    }
  }

  /**
   * The reply to a pipelined DATA when no recipient was accepted (or MAIL was refused). RFC 5321 §3.3 lets
   * the server refuse it (503/554, the usual answer) but does not make it; RFC 2920 §3.1: a client cannot
   * assume the refusal, and after a 354 it sends a lone end-of-data dot. That dot carries no body and no
   * recipient of ours was accepted, so whatever the server answers to it delivers nothing.
   *
   * Returns whether the peer is in step afterwards, so the session may go on (the next transaction starts
   * with RSET): a 4xx/5xx to DATA, or a 354 and a 2xx/4xx/5xx to the dot. Not in step: a 421 (the peer is
   * closing, RFC 5321 §3.8; no dot follows it); a 2xx to DATA (RFC 5321 §4.3.2 has none: a reply meant for
   * another command); a 3xx other than 354 to DATA, or a 3xx to the dot (the peer may be waiting for data
   * that never comes: the next RSET would be read as message text), as the transaction with an accepted
   * recipient treats them. A failure to read either reply throws.
   */
  private async pipelinedDataRefused(): Promise<BatchEnd> {
    const go = this.note(await this.read('data', this.opts.timeouts.data, 'DATA'));
    if (go.code === 421) return 'gone';
    if (this.reader.hasPending()) return { outOfStep: `more replies than commands (DATA answered ${describe(go)}, then another)` };
    if (go.code !== 354) return replyClass(go.code) >= 4 ? 'in-step' : { outOfStep: `DATA answered ${describe(go)}` };
    this.write('.');
    const end = this.note(await this.read('data', this.opts.timeouts.data_done, 'end of data'));
    if (end.code === 421) return 'gone';
    if (replyClass(end.code) === 3) return { outOfStep: `the lone dot answered ${describe(end)}` };
    return this.reader.hasPending() ? { outOfStep: `more replies than commands (the lone dot answered ${describe(end)}, then another)` } : 'in-step';
  }

  /**
   * The reply to a pipelined `BDAT … LAST` when MAIL was refused or no recipient was accepted (RFC 3030 §4.2:
   * the peer reads and discards the octets and answers, usually 503/554). In step after a 4xx/5xx other than
   * 421; a 2xx (a message with no recipient of ours) or a 3xx (BDAT has none) leaves the peer's state unknown.
   */
  private async pipelinedBdatRefused(): Promise<BatchEnd> {
    const r = this.note(await this.read('data', this.opts.timeouts.data_done, 'BDAT'));
    if (r.code === 421) return 'gone';
    if (replyClass(r.code) < 4) return { outOfStep: `BDAT answered ${describe(r)} with no transaction` };
    const noop = await this.bdatInStep();
    return noop ? { outOfStep: `the NOOP after BDAT answered ${describe(noop)}` } : 'in-step';
  }

  /**
   * The body as one `BDAT … LAST` chunk (RFC 3030 §2: CRLF lines, no transparency dots, the octet count
   * exact), when the whole batch — [RSET,] MAIL, the RCPTs, the BDAT line and the chunk — fits BDAT_BATCH;
   * undefined otherwise (and for a body whose size is not known before it is sent: a converted one), and
   * the transaction uses DATA. Read before anything is written: a body that cannot be read fails here.
   */
  private async smallChunk(input: SendInput, batch: string[]): Promise<Buffer | undefined> {
    const commands = batch.reduce((n, c) => n + Buffer.byteLength(c) + 2, 0) + `BDAT ${BDAT_BATCH} LAST${CRLF}NOOP${CRLF}`.length;
    if (input.size === undefined || commands + input.size > BDAT_BATCH) return undefined;
    const enc = new DataEncoder({ dots: false });
    const parts: Buffer[] = [];
    let octets = commands;
    const stream = input.body();
    try {
      for await (const c of stream as AsyncIterable<Buffer | string>) {
        const out = enc.push(typeof c === 'string' ? Buffer.from(c, 'utf8') : c);
        octets += out.length;
        // more than declared (bare line breaks made longer): DATA after all
        if (octets > BDAT_BATCH) {
          (stream as Readable).destroy?.();
          return undefined;
        }
        parts.push(out);
      }
    } catch (err) {
      (stream as Readable).destroy?.();
      throw this.fail('data', `message body stream failed: ${(err as Error).message}`, { kind: 'local', permanent: false }, err);
    }
    parts.push(enc.end());
    const chunk = Buffer.concat(parts);
    return commands + chunk.length <= BDAT_BATCH ? chunk : undefined;
  }

  /**
   * RFC 5321 §3.8: a 421 means the peer is closing the channel; the session is not reused,
   * whatever else the reply decided.
   */
  private note(reply: Reply): Reply {
    if (reply.code === 421) this.broken = true;
    return reply;
  }

  /**
   * Before a command that waits for its own reply: a reply already received would be taken for
   * its answer (a peer that answered one command twice, or answered before being asked).
   */
  private expectNothingPending(before: string, stage: SmtpStage = 'protocol'): void {
    if (this.reader.hasPending()) {
      this.destroy();
      throw this.fail(stage, `reply received before ${before} was sent: the peer is out of step`, { kind: 'protocol' });
    }
  }

  /** The peer's state is unknown: no further command on this connection. */
  private abandon(): void {
    this.broken = true;
    this.destroy();
  }

  /** RSET after a transaction that ended without a message; a failed RSET only costs the connection. */
  private async rsetOrAbandon(): Promise<void> {
    // a reply nobody asked for: the peer is out of step, and an RSET could land in its data phase
    if (this.reader.hasPending()) return this.abandon();
    try {
      await this.rset();
    } catch {
      this.abandon();
    }
  }

  private async streamBody(stream: NodeJS.ReadableStream | Readable): Promise<void> {
    const enc = new DataEncoder();
    const sock = this.sock;
    // Each chunk is written when the next one arrives, the last one together with the end-of-data line: one
    // write (one TLS record, one syscall, one wake-up of the peer) less per message, all of a small one in one.
    let held: Buffer | undefined;
    try {
      for await (const chunk of stream as AsyncIterable<Buffer | string>) {
        if (sock.destroyed || this.closed) throw this.fail('data', 'connection lost while sending the message body', { kind: 'connection' });
        const out = enc.push(typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk);
        if (out.length === 0) continue;
        const prev = held;
        held = out;
        // Respect backpressure: never let the socket buffer grow with the message size.
        if (prev && !sock.write(prev)) await this.drain();
      }
    } catch (err) {
      (stream as Readable).destroy?.();
      if (err instanceof SmtpError) throw err;
      throw this.fail('data', `message body stream failed: ${(err as Error).message}`, { kind: 'local', permanent: false }, err);
    }
    // A reply before the end-of-data dot answers no command of ours: it must not be read as the
    // reply to the dot (that would make an unfinished message look delivered).
    this.expectNothingPending('the end of data');
    const end = enc.end();
    let ok: boolean;
    if (held) {
      // corked: both go down in one writev, one TLS record, without a copy of the body in JavaScript
      sock.cork();
      sock.write(held);
      ok = sock.write(end);
      sock.uncork();
    } else ok = sock.write(end);
    if (!ok) await this.drain();
  }

  private drain(): Promise<void> {
    const ms = this.opts.timeouts.data_block;
    const sock = this.sock;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(this.fail('data', `timeout after ${ms} ms writing the message body (data block)`, { kind: 'timeout' }));
      }, ms);
      const onDrain = (): void => {
        cleanup();
        resolve();
      };
      const onClose = (): void => {
        cleanup();
        reject(this.fail('data', 'connection closed while sending the message body', { kind: 'connection' }));
      };
      const cleanup = (): void => {
        clearTimeout(timer);
        sock.off('drain', onDrain);
        sock.off('close', onClose);
      };
      sock.once('drain', onDrain);
      sock.once('close', onClose);
    });
  }

  private async rset(): Promise<void> {
    this.write('RSET');
    await this.rsetReply();
  }

  /**
   * The reply to an RSET already written (RFC 5321 §4.1.1.5: 250; §4.2.1: any 2xx completes it). Anything
   * else — a 4xx/5xx (421 too), a 3xx, garbage, close, timeout — destroys the connection and throws stage
   * `rset`, whatever replies to pipelined commands may follow it.
   */
  private async rsetReply(): Promise<void> {
    let r: Reply;
    try {
      r = this.note(await this.read('rset', this.opts.timeouts.mail, 'RSET'));
    } catch (err) {
      // read() names a malformed reply stage `protocol`; here it is the RSET that failed.
      if (err instanceof SmtpError && err.stage !== 'rset') throw this.fail('rset', err.message, err.failure, err);
      throw err;
    }
    const cls = replyClass(r.code);
    if (cls !== 2) {
      this.broken = true;
      this.destroy();
      throw this.fail(
        'rset',
        `RSET ${cls === 3 ? 'answered with an intermediate reply' : 'refused'}: ${describe(r)}`,
        cls === 3 ? { kind: 'protocol', reply: r } : { kind: 'refused', reply: r, permanent: false },
      );
    }
    this.rsetOwed = false;
  }

  /** QUIT and close; never throws. */
  async quit(): Promise<void> {
    try {
      await this.politeQuit();
    } catch {
      /* never throws */
    }
    this.destroy();
  }

  /** Sends QUIT, waits briefly for 221 (RFC 5321 §4.1.1.10), then closes. */
  private async politeQuit(): Promise<void> {
    if (this.closed || this.sock.destroyed) return this.destroy();
    try {
      this.write('QUIT');
      await this.read('protocol', Math.min(this.opts.timeouts.ehlo, 2000), 'QUIT');
    } catch {
      /* the peer may just close */
    }
    this.destroy();
  }

  private destroy(): void {
    this.closed = true;
    if (this.sock && !this.sock.destroyed) this.sock.destroy();
  }
}

/**
 * Waits for one event on a socket; fails on 'error', on 'close' (when watched) or after `ms`.
 * Every listener and the timer are removed whichever way it ends.
 */
function awaitEvent(
  sock: NodeJS.EventEmitter,
  event: string,
  ms: number,
  watchClose: boolean,
  failure: (why: 'timeout' | 'error' | 'close', err?: Error) => Error,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = (err?: Error): void => {
      clearTimeout(timer);
      sock.off(event, onEvent);
      sock.off('error', onError);
      if (watchClose) sock.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onEvent = (): void => done();
    const onError = (err: Error): void => done(failure('error', err));
    const onClose = (): void => done(failure('close'));
    const timer = setTimeout(() => done(failure('timeout')), ms);
    sock.once(event, onEvent);
    sock.once('error', onError);
    if (watchClose) sock.once('close', onClose);
  });
}

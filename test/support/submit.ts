/**
 * A raw-socket SMTP client for tests: send exact bytes, read exact replies.
 *
 * Deliberately dumb: it does no dot-stuffing, no line-ending repair, no command
 * validation unless asked, so tests (and later fuzzers) can send anything a real
 * client would never send — NUL bytes, bare LF, 2000-byte lines, pipelined batches —
 * and see precisely what the server answers.
 */
import net from 'node:net';
import tls from 'node:tls';

export interface Reply {
  code: number;
  /** RFC 3463 enhanced status code of the first line, if present */
  enhanced?: string;
  /** text of each line after "code-"/"code " */
  lines: string[];
  /** the raw reply, CRLFs included */
  raw: string;
}

export interface ConnectOptions {
  host?: string;
  port: number;
  /** ms to wait for any one reply (default 20,000: a bound that names the stall before vitest's 30 s limit, not a speed expectation) */
  timeout?: number;
  /** read the greeting on connect (default true) */
  greeting?: boolean;
  /** source address, e.g. another 127.0.0.x to be a different client */
  localAddress?: string;
}

export class SmtpTestClient {
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  private ended = false;
  private socket: net.Socket | tls.TLSSocket;
  greeting: Reply | undefined;
  /** the server closed the connection (or it failed) */
  readonly closed: Promise<void>;
  private markClosed!: () => void;

  private constructor(
    socket: net.Socket,
    private readonly timeout: number,
  ) {
    this.socket = socket;
    this.closed = new Promise<void>((r) => (this.markClosed = r));
    this.attach(socket);
  }

  static async connect(opts: ConnectOptions): Promise<SmtpTestClient> {
    const socket = net.connect({ host: opts.host ?? '127.0.0.1', port: opts.port, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const c = new SmtpTestClient(socket, opts.timeout ?? 20_000);
    if (opts.greeting !== false) c.greeting = await c.reply();
    return c;
  }

  private attach(s: net.Socket | tls.TLSSocket): void {
    s.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    s.on('error', () => undefined); // a reset is reported through `closed`/reply()
    s.on('close', () => {
      this.ended = true;
      this.markClosed();
      this.wake();
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Bytes received but not yet consumed as replies (to assert that nothing was sent yet). */
  unread(): string {
    return this.buf.toString('latin1');
  }

  /** Bytes written by us that the socket has not yet handed to the kernel (the peer is not reading). */
  get pendingWrite(): number {
    return this.socket.writableLength;
  }

  /** Writes bytes exactly as given. */
  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Writes one command line: `line` + CRLF. */
  send(line: string | Buffer): void {
    this.write(Buffer.concat([Buffer.isBuffer(line) ? line : Buffer.from(line, 'utf8'), Buffer.from('\r\n')]));
  }

  /** Reads the next complete (possibly multi-line) reply. */
  async reply(): Promise<Reply> {
    const deadline = Date.now() + this.timeout;
    for (;;) {
      const r = this.parse();
      if (r) return r;
      if (this.ended) throw new Error(`connection closed; unread: ${JSON.stringify(this.buf.toString('latin1'))}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no complete reply within ${this.timeout} ms; have: ${JSON.stringify(this.buf.toString('latin1'))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** n replies in order (for pipelined commands, RFC 2920 §3.1). */
  async replies(n: number): Promise<Reply[]> {
    const out: Reply[] = [];
    for (let i = 0; i < n; i++) out.push(await this.reply());
    return out;
  }

  private parse(): Reply | undefined {
    let pos = 0;
    const lines: string[] = [];
    let code = 0;
    for (;;) {
      const nl = this.buf.indexOf('\r\n', pos);
      if (nl < 0) return undefined;
      const line = this.buf.subarray(pos, nl).toString('utf8');
      pos = nl + 2;
      const m = /^(\d{3})([ -])(.*)$/s.exec(line) ?? /^(\d{3})()()$/.exec(line);
      if (!m) throw new Error(`malformed reply line ${JSON.stringify(line)}`);
      code = Number(m[1]);
      lines.push(m[3] ?? '');
      if (m[2] !== '-') break;
    }
    const raw = this.buf.subarray(0, pos).toString('utf8');
    this.buf = this.buf.subarray(pos);
    const enh = /^([245]\.\d{1,3}\.\d{1,3})(?: |$)/.exec(lines[0] ?? '');
    return { code, lines, raw, ...(enh ? { enhanced: enh[1] } : {}) };
  }

  /** Sends one command and reads its reply. */
  async cmd(line: string | Buffer): Promise<Reply> {
    this.send(line);
    return this.reply();
  }

  /** EHLO and the advertised extension keywords, upper case ("SIZE 1024" → "SIZE 1024"). */
  async ehlo(name = 'client.example'): Promise<{ reply: Reply; extensions: string[] }> {
    const reply = await this.cmd(`EHLO ${name}`);
    return { reply, extensions: reply.lines.slice(1).map((l) => l.toUpperCase()) };
  }

  /** STARTTLS and the handshake; `tlsOptions` default to accepting any certificate. */
  async startTls(tlsOptions: tls.ConnectionOptions = {}): Promise<Reply> {
    const r = await this.cmd('STARTTLS');
    if (r.code !== 220) return r;
    await this.handshake(tlsOptions);
    return r;
  }

  /** The TLS handshake on the current connection (after a 220 to a STARTTLS sent some other way). */
  async handshake(tlsOptions: tls.ConnectionOptions = {}): Promise<void> {
    const plain = this.socket as net.Socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    const secure = tls.connect({ socket: plain, rejectUnauthorized: false, ...tlsOptions });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    this.socket = secure;
    this.attach(secure);
  }

  get tlsSocket(): tls.TLSSocket | undefined {
    return this.socket instanceof tls.TLSSocket ? this.socket : undefined;
  }

  /**
   * Message body for DATA: dot-stuffs lines that start with "." (RFC 5321 §4.5.2) and
   * appends the terminator. Line endings are left alone — bare LFs stay bare.
   */
  static dataPayload(body: Buffer | string): Buffer {
    const b = Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
    const parts: Buffer[] = [];
    let start = 0;
    if (b[0] === 0x2e) parts.push(Buffer.from('.'));
    for (let i = 0; i < b.length; i++) {
      if (b[i] === 0x0a && b[i + 1] === 0x2e) {
        parts.push(b.subarray(start, i + 1), Buffer.from('.'));
        start = i + 1;
      }
    }
    parts.push(b.subarray(start));
    const endsCrlf = b.length >= 2 && b[b.length - 2] === 0x0d && b[b.length - 1] === 0x0a;
    parts.push(Buffer.from(endsCrlf ? '.\r\n' : '\r\n.\r\n'));
    return Buffer.concat(parts);
  }

  /** MAIL, RCPTs, DATA and the body, one step at a time; returns every reply. */
  async sendMail(from: string, rcpts: string[], body: Buffer | string, mailParams = ''): Promise<{ mail: Reply; rcpts: Reply[]; data?: Reply; end?: Reply }> {
    const mail = await this.cmd(`MAIL FROM:<${from}>${mailParams ? ' ' + mailParams : ''}`);
    const rs: Reply[] = [];
    for (const r of rcpts) rs.push(await this.cmd(`RCPT TO:<${r}>`));
    if (mail.code !== 250 || !rs.some((r) => r.code === 250)) return { mail, rcpts: rs };
    const data = await this.cmd('DATA');
    if (data.code !== 354) return { mail, rcpts: rs, data };
    this.write(SmtpTestClient.dataPayload(body));
    return { mail, rcpts: rs, data, end: await this.reply() };
  }

  /** QUIT and wait for the server to close. */
  async quit(): Promise<Reply | undefined> {
    let r: Reply | undefined;
    try {
      r = await this.cmd('QUIT');
    } catch {
      /* already closed */
    }
    this.socket.end();
    await this.closed;
    return r;
  }

  /** Drops the connection without QUIT (RST). */
  destroy(): void {
    this.socket.destroy();
  }
}

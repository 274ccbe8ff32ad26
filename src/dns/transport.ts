/**
 * DNS transport shared by the stub resolver (dns.mode: trust-ad) and the
 * validating resolver (dns.mode: validate): one question to a list of
 * recursive resolvers over UDP, falling back to TCP on TC=1 (RFC 7766 §5),
 * with ID/question matching against spoofed datagrams (RFC 5452 §9).
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { randomInt } from 'node:crypto';
import type { DnsErrorKind } from './types.js';
import { CLASS_IN, encodeQuery, parseMessage, parseQuestion, typeCode, type QueryOptions, type WireMessage } from './wire.js';
import { sameName } from './name.js';

export interface ServerAddress {
  host: string;
  port: number;
  family: 4 | 6;
  label: string;
}

/** Parse "1.2.3.4", "1.2.3.4:53", "::1", "[::1]:53". Throws on anything else. */
export function parseServer(s: string): ServerAddress {
  const t = s.trim();
  let host: string;
  let port = 53;
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(t);
  if (v6) {
    host = v6[1]!;
    if (v6[2] !== undefined) port = Number(v6[2]);
  } else if (net.isIPv6(t)) {
    host = t;
  } else {
    const m = /^([^:]+)(?::(\d+))?$/.exec(t);
    if (!m) throw new Error(`bad DNS server address "${s}"`);
    host = m[1]!;
    if (m[2] !== undefined) port = Number(m[2]);
  }
  const family = net.isIP(host);
  if (family === 0) throw new Error(`DNS server "${s}" is not an IP address`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`bad port in DNS server "${s}"`);
  return { host, port, family: family as 4 | 6, label: family === 6 ? `[${host}]:${port}` : `${host}:${port}` };
}

// ---------------------------------------------------------------------------
// Exchange

/** What one exchange produced; exported for transports plugged in by tests (the fault suite's in-process fuzz). */
export type Attempt =
  | { kind: 'reply'; msg: WireMessage }
  | { kind: 'truncated' }
  | { kind: 'timeout'; message: string }
  | { kind: 'malformed'; message: string }
  | { kind: 'other'; message: string };

export type ExchangeFailure = { ok: false; kind: DnsErrorKind; message: string; rcode: string; server?: string };
export type Exchange = { ok: true; msg: WireMessage; server: string } | ExchangeFailure;

/**
 * Decide what a received message means for our outstanding query. Anything
 * that is not a reply to it — wrong ID, not a response, another question —
 * is ignored (RFC 5452 §9.1: accept only matching ID, question, source), so
 * spoofed or stale datagrams cannot end the wait. Only a message that matches
 * but then fails to parse is `malformed`.
 */
export function classify(buf: Buffer, id: number, name: string, qtype: number): Attempt | 'ignore' {
  const hq = parseQuestion(buf);
  if (!hq) return 'ignore';
  const h = hq.header;
  if (h.id !== id || !h.qr || h.opcode !== 0) return 'ignore';
  if (hq.question) {
    const q = hq.question;
    if (!sameName(q.name, name) || q.typeCode !== qtype || q.class !== CLASS_IN) return 'ignore';
  } else if (h.qdcount !== 0 || h.rcode === 0 || h.rcode === 3) {
    // Some servers omit the question in FORMERR/NOTIMP/REFUSED replies; an
    // error without a question can only fail the query, never answer it.
    return 'ignore';
  }
  if (h.tc) return { kind: 'truncated' };
  const p = parseMessage(buf);
  if (!p.ok) return { kind: 'malformed', message: p.error };
  return { kind: 'reply', msg: p.message };
}

export interface TransportOptions {
  /** "ip", "ip:port" or "[v6]:port" (port defaults to 53) */
  servers: string[];
  /** per attempt, per server */
  timeoutMs: number;
  /** rounds over the server list */
  attempts: number;
}

export class DnsTransport {
  readonly servers: ServerAddress[];
  private readonly timeoutMs: number;
  private readonly attempts: number;
  /** abort functions of exchanges in progress, so close() leaks no socket */
  private readonly active = new Set<() => void>();
  private closed = false;

  constructor(opts: TransportOptions) {
    if (!opts.servers.length) throw new Error('a DNS resolver needs at least one server');
    this.servers = opts.servers.map(parseServer);
    if (!(opts.timeoutMs > 0)) throw new Error('timeoutMs must be positive');
    if (!(Number.isInteger(opts.attempts) && opts.attempts >= 1)) throw new Error('attempts must be an integer >= 1');
    this.timeoutMs = opts.timeoutMs;
    this.attempts = opts.attempts;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  close(): void {
    this.closed = true;
    for (const abort of [...this.active]) abort();
  }

  /**
   * Ask the servers, in order, `attempts` rounds. Timeouts move on to the next
   * server; REFUSED/NOTIMP/FORMERR/malformed take that server out for this
   * query; SERVFAIL is the validator's verdict (bogus or unreachable) and ends
   * the query as an error at once (digest DANE-1/DANE-3).
   */
  async exchange(name: string, qtype: string, opts: QueryOptions = {}): Promise<Exchange> {
    const excluded = new Set<number>();
    const failures: string[] = [];
    let last: ExchangeFailure | undefined;
    for (let round = 0; round < this.attempts; round++) {
      for (let i = 0; i < this.servers.length; i++) {
        if (this.closed) return { ok: false, kind: 'other', message: 'resolver closed', rcode: '' };
        if (excluded.has(i)) continue;
        const srv = this.servers[i]!;
        let r = await this.udp(srv, name, qtype, opts);
        // RFC 7766 §5 / RFC 1035 §4.2.2: TC=1 → repeat over TCP to the same server.
        if (r.kind === 'truncated') r = await this.tcp(srv, name, qtype, opts);
        if (r.kind === 'reply') {
          const rc = r.msg.rcodeName;
          if (rc === 'NOERROR' || rc === 'NXDOMAIN') return { ok: true, msg: r.msg, server: srv.label };
          if (rc === 'SERVFAIL') return { ok: false, kind: 'servfail', message: `SERVFAIL from ${srv.label}`, rcode: rc, server: srv.label };
          const kind: DnsErrorKind = rc === 'REFUSED' ? 'refused' : rc === 'NOTIMP' ? 'notimp' : rc === 'FORMERR' ? 'formerr' : 'other';
          excluded.add(i);
          failures.push(`${srv.label}: ${rc}`);
          last = { ok: false, kind, message: '', rcode: rc, server: srv.label };
        } else if (r.kind === 'truncated') {
          excluded.add(i);
          failures.push(`${srv.label}: TC=1 over TCP`);
          last = { ok: false, kind: 'malformed', message: '', rcode: '', server: srv.label };
        } else {
          if (r.kind === 'malformed') excluded.add(i);
          failures.push(`${srv.label}: ${r.kind} (${r.message})`);
          last = { ok: false, kind: r.kind, message: '', rcode: '', server: srv.label };
        }
      }
    }
    const base: ExchangeFailure = last ?? { ok: false, kind: 'other', message: '', rcode: '' };
    return { ...base, message: `no usable reply for ${name}/${qtype}: ${failures.join('; ')}` };
  }

  private track(abort: () => void): () => void {
    this.active.add(abort);
    return () => this.active.delete(abort);
  }

  /**
   * One UDP exchange on a fresh socket (fresh random source port and ID, RFC 5452 §9.2).
   * Protected (like `tcp`) so the fault suite can drive the real decoding and answer
   * selection through an in-process subclass at fuzzing speed.
   */
  protected udp(srv: ServerAddress, name: string, qtype: string, opts: QueryOptions): Promise<Attempt> {
    return new Promise((resolve) => {
      const id = randomInt(0, 0x10000);
      const qcode = typeCode(qtype);
      const query = encodeQuery(id, name, qtype, opts);
      const sock = dgram.createSocket(srv.family === 6 ? 'udp6' : 'udp4');
      let done = false;
      const finish = (r: Attempt): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        untrack();
        try {
          sock.close();
        } catch {
          /* already closed */
        }
        resolve(r);
      };
      const untrack = this.track(() => finish({ kind: 'other', message: 'resolver closed' }));
      const timer = setTimeout(() => finish({ kind: 'timeout', message: `no reply within ${this.timeoutMs} ms` }), this.timeoutMs);
      sock.on('error', (e) => finish({ kind: 'other', message: e.message }));
      sock.on('message', (buf) => {
        const r = classify(buf, id, name, qcode);
        if (r !== 'ignore') finish(r);
      });
      // connect(): the kernel then drops datagrams from any other source address/port.
      sock.connect(srv.port, srv.host, (cerr?: Error) => {
        if (done) return;
        // connect() fails at once when there is no route (ENETUNREACH): send() on the unconnected
        // socket would then throw outside any handler and take the relay down.
        if (cerr) return finish({ kind: 'other', message: cerr.message });
        sock.send(query, (err) => {
          if (err) finish({ kind: 'other', message: err.message });
        });
      });
    });
  }

  /** One TCP exchange (RFC 1035 §4.2.2 two-octet length framing; RFC 7766). */
  protected tcp(srv: ServerAddress, name: string, qtype: string, opts: QueryOptions): Promise<Attempt> {
    return new Promise((resolve) => {
      const id = randomInt(0, 0x10000);
      const qcode = typeCode(qtype);
      const query = encodeQuery(id, name, qtype, opts);
      const frame = Buffer.alloc(2 + query.length);
      frame.writeUInt16BE(query.length, 0);
      query.copy(frame, 2);
      const sock = net.connect({ host: srv.host, port: srv.port });
      let pending: Buffer = Buffer.alloc(0);
      let done = false;
      const finish = (r: Attempt): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        untrack();
        sock.destroy();
        resolve(r);
      };
      const untrack = this.track(() => finish({ kind: 'other', message: 'resolver closed' }));
      const timer = setTimeout(() => finish({ kind: 'timeout', message: `no TCP reply within ${this.timeoutMs} ms` }), this.timeoutMs);
      sock.on('connect', () => sock.write(frame));
      sock.on('data', (chunk: Buffer) => {
        // Reads may split or merge frames; each frame is at most 2+65535 bytes.
        pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
        while (!done && pending.length >= 2) {
          const len = pending.readUInt16BE(0);
          if (pending.length < 2 + len) break;
          const msg = pending.subarray(2, 2 + len);
          pending = pending.subarray(2 + len);
          const r = classify(msg, id, name, qcode);
          if (r === 'ignore') continue;
          finish(r.kind === 'truncated' ? { kind: 'malformed', message: 'TC=1 in a TCP reply' } : r);
        }
      });
      sock.on('error', (e) => finish({ kind: 'other', message: `TCP: ${e.message}` }));
      sock.on('close', () => finish({ kind: 'other', message: 'TCP connection closed before a reply' }));
    });
  }
}

/**
 * A test DNS server that answers like a validating recursive resolver
 * (RFC 4035 §3.2.3: AD set only when everything in the answer or the denial
 * is secure), over real UDP and TCP on 127.0.0.1, one random port for both.
 *
 * It encodes and decodes with dns-packet — deliberately a different code
 * path from the relay's own wire.ts, so tests cross-check the two.
 *
 * Semantics:
 * - Follows CNAME and DNAME chains through its own data and returns every
 *   hop in the answer section (DNAME plus its synthesised CNAME, RFC 6672
 *   §3.1). A loop ends the chain where it closes (the client must notice).
 * - A name belongs to the longest matching zone; names outside every zone
 *   are insecure. AD=1 only if every RRset in the answer (or, for a denial,
 *   the zone of the denied name) is in a `secure` zone, and the query asked
 *   for DNSSEC (DO=1 or AD=1, RFC 6840 §5.7) — so a client that forgets DO
 *   never sees AD.
 * - NXDOMAIN when the final name has no records and no descendants (not an
 *   empty non-terminal, RFC 8020); otherwise NODATA. Both carry the zone's
 *   SOA (from `records` if present, else a synthesised one, MINIMUM 300) in
 *   the authority section (RFC 2308 §3).
 * - Behaviours (`behave`) apply to the query name; `servfail` and `timeout`
 *   set on a name met later in a chain also fail the whole query, as a
 *   recursive resolver would. `truncate` sends TC=1 with an empty answer over
 *   UDP and the full answer over TCP. Replies larger than the client's EDNS
 *   UDP size (512 without EDNS) are truncated over UDP as well.
 * - Every received query is recorded with its flags, even when dropped.
 *
 * `address` is the IP ("127.0.0.1"); `server` is "127.0.0.1:port", the form
 * StubResolver takes.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';

export interface Zone {
  name: string;
  secure: boolean;
} // AD=1 for answers entirely inside secure zones
export type Rr = {
  name: string;
  type: 'MX' | 'A' | 'AAAA' | 'TLSA' | 'TXT' | 'CNAME' | 'DNAME' | 'SOA' | 'NS' | 'PTR';
  ttl?: number;
  data: any; // eslint-disable-line @typescript-eslint/no-explicit-any
};
export type Behaviour = 'servfail' | 'refused' | 'timeout' | 'truncate' | 'formerr' | 'notimp' | { delayMs: number } | { raw: (query: Buffer) => Buffer };

export interface QueryLog {
  name: string;
  type: string;
  flags: { rd: boolean; cd: boolean; ad: boolean; do: boolean };
  transport: 'udp' | 'tcp';
}

export interface TestDns {
  port: number;
  /** "127.0.0.1" */
  address: string;
  /** "127.0.0.1:port" */
  server: string;
  zones: Zone[];
  records: Rr[];
  addZone(z: Zone): void;
  add(...rrs: Rr[]): void;
  remove(name: string, type?: string): void;
  behave(name: string, type: string | '*', b: Behaviour | undefined): void;
  queries: QueryLog[];
  queriesFor(name: string, type?: string): number;
  /**
   * The reply this server's data gives to `query` (raw bytes), ignoring behaviours and not
   * logged: what a `raw` behaviour or an in-process fuzzer starts from before mutating it.
   * Undefined for a query it would drop (garbage, not a query).
   */
  answer(query: Buffer, transport?: 'udp' | 'tcp'): Buffer | undefined;
  close(): Promise<void>;
}

const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
const DEFAULT_TTL = 300;

function norm(name: string): string {
  const n = name.toLowerCase();
  return n.length > 1 && n.endsWith('.') ? n.slice(0, -1) : n;
}

function atOrBelow(name: string, ancestor: string): boolean {
  if (ancestor === '' || ancestor === '.') return true;
  return name === ancestor || name.endsWith('.' + ancestor);
}

type Resolution =
  | { fail: 'servfail' | 'timeout' }
  | { fail?: undefined; rcode: number; answers: dnsPacket.Answer[]; authorities: dnsPacket.Answer[]; secure: boolean };

class DnsTestServer implements TestDns {
  port = 0;
  address = '127.0.0.1';
  server = '';
  zones: Zone[] = [];
  records: Rr[] = [];
  queries: QueryLog[] = [];
  private readonly behaviours = new Map<string, Behaviour>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly conns = new Set<net.Socket>();
  private udp?: dgram.Socket;
  private tcp?: net.Server;
  private closed = false;

  addZone(z: Zone): void {
    this.zones.push(z);
  }

  add(...rrs: Rr[]): void {
    this.records.push(...rrs);
  }

  remove(name: string, type?: string): void {
    const n = norm(name);
    this.records = this.records.filter((r) => !(norm(r.name) === n && (type === undefined || r.type === type.toUpperCase())));
  }

  behave(name: string, type: string, b: Behaviour | undefined): void {
    const key = `${norm(name)}|${type === '*' ? '*' : type.toUpperCase()}`;
    if (b === undefined) this.behaviours.delete(key);
    else this.behaviours.set(key, b);
  }

  queriesFor(name: string, type?: string): number {
    const n = norm(name);
    return this.queries.filter((q) => q.name === n && (type === undefined || q.type === type.toUpperCase())).length;
  }

  answer(query: Buffer, transport: 'udp' | 'tcp' = 'udp'): Buffer | undefined {
    let q: dnsPacket.DecodedPacket;
    try {
      q = dnsPacket.decode(query);
    } catch {
      return undefined;
    }
    const question = q.questions?.[0];
    if (q.type !== 'query' || !question) return undefined;
    const opt = (q.additionals ?? []).find((a): a is dnsPacket.OptAnswer => a.type === 'OPT');
    const flags = { rd: q.flag_rd, cd: q.flag_cd, ad: q.flag_ad, do: opt?.flag_do === true };
    return this.respond(q, question, opt, flags, transport, undefined);
  }

  async start(): Promise<void> {
    // UDP and TCP on the same port: bind UDP to a random port, then try TCP there.
    for (let i = 0; i < 20; i++) {
      const udp = dgram.createSocket('udp4');
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(0, '127.0.0.1', () => resolve());
      });
      const port = udp.address().port;
      const tcp = net.createServer((sock) => this.onTcp(sock));
      const ok = await new Promise<boolean>((resolve) => {
        tcp.once('error', () => resolve(false));
        tcp.listen(port, '127.0.0.1', () => resolve(true));
      });
      if (!ok) {
        udp.close();
        continue;
      }
      udp.on('message', (msg, rinfo) => {
        this.handle(msg, 'udp', (out) => {
          if (!this.closed) udp.send(out, rinfo.port, rinfo.address);
        });
      });
      udp.on('error', () => undefined);
      this.udp = udp;
      this.tcp = tcp;
      this.port = port;
      this.server = `127.0.0.1:${port}`;
      return;
    }
    throw new Error('could not bind UDP and TCP to one port');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const c of this.conns) c.destroy();
    await Promise.all([
      new Promise<void>((r) => (this.udp ? this.udp.close(() => r()) : r())),
      new Promise<void>((r) => (this.tcp ? this.tcp.close(() => r()) : r())),
    ]);
  }

  private onTcp(sock: net.Socket): void {
    this.conns.add(sock);
    sock.on('close', () => this.conns.delete(sock));
    sock.on('error', () => undefined);
    let pending = Buffer.alloc(0);
    sock.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2) {
        const len = pending.readUInt16BE(0);
        if (pending.length < 2 + len) break;
        const msg = pending.subarray(2, 2 + len);
        pending = pending.subarray(2 + len);
        this.handle(msg, 'tcp', (out) => {
          if (sock.destroyed) return;
          const hdr = Buffer.alloc(2);
          hdr.writeUInt16BE(out.length & 0xffff, 0);
          sock.write(Buffer.concat([hdr, out]));
        });
      }
    });
  }

  private behaviourFor(name: string, type: string): Behaviour | undefined {
    // behave('*', '*', b): every name and type (a hostile server in front of the whole zone data)
    return this.behaviours.get(`${name}|${type}`) ?? this.behaviours.get(`${name}|*`) ?? this.behaviours.get('*|*');
  }

  private handle(buf: Buffer, transport: 'udp' | 'tcp', reply: (b: Buffer) => void): void {
    if (this.closed) return;
    let q: dnsPacket.DecodedPacket;
    try {
      q = dnsPacket.decode(buf);
    } catch {
      return; // garbage: a real server drops it
    }
    const question = q.questions?.[0];
    if (q.type !== 'query' || !question) return;
    const opt = (q.additionals ?? []).find((a): a is dnsPacket.OptAnswer => a.type === 'OPT');
    const flags = { rd: q.flag_rd, cd: q.flag_cd, ad: q.flag_ad, do: opt?.flag_do === true };
    const name = norm(question.name);
    const type = String(question.type).toUpperCase();
    this.queries.push({ name, type, flags, transport });

    const b = this.behaviourFor(name, type);
    if (b === 'timeout') return;
    if (b !== undefined && typeof b === 'object' && 'raw' in b) {
      reply(b.raw(buf));
      return;
    }
    const respond = (): void => {
      if (!this.closed) reply(this.respond(q, question, opt, flags, transport, b));
    };
    if (b !== undefined && typeof b === 'object' && 'delayMs' in b) {
      const t = setTimeout(() => {
        this.timers.delete(t);
        respond();
      }, b.delayMs);
      this.timers.add(t);
      return;
    }
    // A chain that hits a 'timeout' name is dropped entirely.
    if (b === undefined && this.resolve(name, type).fail === 'timeout') return;
    respond();
  }

  private respond(
    q: dnsPacket.DecodedPacket,
    question: dnsPacket.Question,
    opt: dnsPacket.OptAnswer | undefined,
    flags: QueryLog['flags'],
    transport: 'udp' | 'tcp',
    b: Behaviour | undefined,
  ): Buffer {
    const base = (rcode: number, ad: boolean, tc: boolean): dnsPacket.Packet => ({
      type: 'response',
      id: q.id ?? 0,
      flags:
        (flags.rd ? dnsPacket.RECURSION_DESIRED : 0) |
        dnsPacket.RECURSION_AVAILABLE |
        (ad ? dnsPacket.AUTHENTIC_DATA : 0) |
        (flags.cd ? dnsPacket.CHECKING_DISABLED : 0) |
        (tc ? dnsPacket.TRUNCATED_RESPONSE : 0) |
        rcode,
      questions: [question],
      answers: [],
      authorities: [],
      additionals: opt
        ? [
            {
              type: 'OPT',
              name: '.',
              udpPayloadSize: 1232,
              extendedRcode: 0,
              ednsVersion: 0,
              flags: flags.do ? dnsPacket.DNSSEC_OK : 0,
              flag_do: flags.do,
              options: [],
            },
          ]
        : [],
    });
    if (b === 'servfail') return dnsPacket.encode(base(RCODE.SERVFAIL, false, false));
    if (b === 'refused') return dnsPacket.encode(base(RCODE.REFUSED, false, false));
    if (b === 'formerr') return dnsPacket.encode(base(RCODE.FORMERR, false, false));
    if (b === 'notimp') return dnsPacket.encode(base(RCODE.NOTIMP, false, false));
    if (b === 'truncate' && transport === 'udp') return dnsPacket.encode(base(RCODE.NOERROR, false, true));

    const res = this.resolve(norm(question.name), String(question.type).toUpperCase());
    if (res.fail) return dnsPacket.encode(base(RCODE.SERVFAIL, false, false));
    const wantsDnssec = flags.do || flags.ad;
    const p = base(res.rcode, res.secure && wantsDnssec, false);
    p.answers = res.answers;
    p.authorities = res.authorities;
    const out = dnsPacket.encode(p);
    const limit = opt ? Math.max(512, opt.udpPayloadSize) : 512;
    if (transport === 'udp' && out.length > limit) return dnsPacket.encode(base(res.rcode, false, true));
    return out;
  }

  // -- the "recursive resolver" over our own data ---------------------------

  private zoneOf(name: string): Zone | undefined {
    let best: Zone | undefined;
    for (const z of this.zones) {
      const zn = norm(z.name);
      if (atOrBelow(name, zn) && (!best || zn.length > norm(best.name).length)) best = z;
    }
    return best;
  }

  private rrsAt(name: string, type: string): Rr[] {
    return this.records.filter((r) => norm(r.name) === name && r.type === type);
  }

  private toAnswer(r: Rr, owner = r.name): dnsPacket.Answer {
    // dns-packet mutates TXT arrays while encoding: hand it a copy.
    const data = Array.isArray(r.data) ? [...r.data] : r.data;
    return { name: owner, type: r.type, ttl: r.ttl ?? DEFAULT_TTL, class: 'IN', data } as dnsPacket.Answer;
  }

  private soaFor(name: string): dnsPacket.Answer {
    const z = this.zoneOf(name);
    const zn = z ? norm(z.name) : '.';
    const own = this.rrsAt(zn, 'SOA')[0];
    if (own) return this.toAnswer(own);
    const host = zn === '.' ? '' : `.${zn}`;
    return {
      name: zn,
      type: 'SOA',
      ttl: DEFAULT_TTL,
      class: 'IN',
      data: { mname: `ns${host}`, rname: `hostmaster${host}`, serial: 1, refresh: 3600, retry: 600, expire: 86400, minimum: DEFAULT_TTL },
    };
  }

  resolve(qname: string, qtype: string): Resolution {
    const answers: dnsPacket.Answer[] = [];
    let secure = true;
    let cur = qname;
    const visited = new Set<string>([qname]);
    for (let i = 0; i < 32; i++) {
      if (i > 0) {
        const b = this.behaviourFor(cur, qtype);
        if (b === 'servfail' || b === 'timeout') return { fail: b };
      }
      const zone = this.zoneOf(cur);
      secure &&= zone?.secure ?? false;
      const direct = this.rrsAt(cur, qtype);
      if (direct.length) {
        answers.push(...direct.map((r) => this.toAnswer(r)));
        return { rcode: RCODE.NOERROR, answers, authorities: [], secure };
      }
      const cname = qtype === 'CNAME' ? undefined : this.rrsAt(cur, 'CNAME')[0];
      let target: string | undefined;
      if (cname) {
        answers.push(this.toAnswer(cname));
        target = norm(String(cname.data));
      } else {
        // DNAME at the closest proper ancestor (RFC 6672 §2.3).
        let dname: Rr | undefined;
        for (const r of this.records) {
          const o = norm(r.name);
          if (r.type === 'DNAME' && o !== cur && atOrBelow(cur, o) && (!dname || o.length > norm(dname.name).length)) dname = r;
        }
        if (dname) {
          const o = norm(dname.name);
          secure &&= this.zoneOf(o)?.secure ?? false;
          target = `${cur.slice(0, cur.length - o.length - 1)}.${norm(String(dname.data))}`;
          answers.push(this.toAnswer(dname));
          answers.push({ name: cur, type: 'CNAME', ttl: dname.ttl ?? DEFAULT_TTL, class: 'IN', data: target });
          if (qtype === 'CNAME') return { rcode: RCODE.NOERROR, answers, authorities: [], secure };
        }
      }
      if (target !== undefined) {
        if (visited.has(target)) return { rcode: RCODE.NOERROR, answers, authorities: [], secure };
        visited.add(target);
        cur = target;
        continue;
      }
      // No data at `cur`: NODATA if the name exists (has records or descendants), else NXDOMAIN.
      const exists = this.records.some((r) => atOrBelow(norm(r.name), cur));
      return { rcode: exists ? RCODE.NOERROR : RCODE.NXDOMAIN, answers, authorities: [this.soaFor(cur)], secure };
    }
    return { rcode: RCODE.NOERROR, answers, authorities: [], secure };
  }
}

/**
 * `selfTest` (default true): answer the relay's DNSSEC self-test (src/dns/selftest.ts) like a
 * validating resolver — ietf.org secure, dnssec-failed.org SERVFAIL — so a relay in trust-ad mode
 * does not hold its DANE deliveries (issue 13). Tests of a resolver that does not validate turn it
 * off or override the names with `behave`/`remove`.
 */
export async function startDnsServer(opts: { zones?: Zone[]; records?: Rr[]; selfTest?: boolean } = {}): Promise<TestDns> {
  const s = new DnsTestServer();
  if (opts.selfTest !== false) {
    s.zones.push({ name: 'ietf.org', secure: true });
    s.records.push({ name: 'ietf.org', type: 'A', data: '192.0.2.80' });
    s.behave('dnssec-failed.org', 'A', 'servfail');
  }
  s.zones.push(...(opts.zones ?? []));
  s.records.push(...(opts.records ?? []));
  await s.start();
  return s;
}

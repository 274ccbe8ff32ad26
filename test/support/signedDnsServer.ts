/**
 * A loopback DNS server (UDP and TCP on one random 127.0.0.1 port) that
 * behaves like a non-validating recursive resolver in front of DNSSEC-signed
 * zones built with test/support/signer.ts: with DO=1 it returns RRSIGs with
 * every RRset, answers DS queries from the parent side, and puts SOA and the
 * NSEC/NSEC3 records a validator needs into the authority section of
 * NXDOMAIN, NODATA and wildcard answers (RFC 4035 §3.1.3, RFC 5155 §7.2).
 * Names are never compressed (its own encoder, independent of src/dns/wire.ts).
 *
 * `mutate` lets a test tamper with a reply (drop a signature, swap a proof),
 * `raw` replaces it with arbitrary bytes (hostile input).
 */
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import { TYPE, type Zone, b32hex, below, canonicalCompare, labels, norm, nsec3HashOf, wireName, type Rec } from './signer.js';

export interface Reply {
  rcode: number;
  answers: Rec[];
  authorities: Rec[];
}
export interface QueryInfo {
  name: string;
  type: string;
  cd: boolean;
  do: boolean;
  rd: boolean;
  transport: 'udp' | 'tcp';
}

export interface SignedDns {
  server: string;
  port: number;
  zones: Zone[];
  queries: QueryInfo[];
  /** change a computed reply (return undefined to drop it: a timeout) */
  mutate?: (q: QueryInfo, r: Reply) => Reply | undefined;
  /** answer a query with raw bytes instead */
  raw?: (q: QueryInfo, query: Buffer) => Buffer | undefined;
  /** hold the reply to a query this many ms (a slow upstream) */
  delay?: (q: QueryInfo) => number;
  close(): Promise<void>;
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n & 0xffff);
  return b;
}

export function encodeReply(
  id: number,
  qname: string,
  qtype: number,
  flags: { rd: boolean; cd: boolean; do: boolean; edns: boolean; tc?: boolean },
  r: Reply,
): Buffer {
  const rr = (x: Rec): Buffer => {
    const h = Buffer.alloc(10);
    h.writeUInt16BE(TYPE[x.type] ?? Number(x.type.replace(/^TYPE/, '')), 0);
    h.writeUInt16BE(x.class ?? 1, 2);
    h.writeUInt32BE(x.ttl >>> 0, 4);
    h.writeUInt16BE(x.rdata.length, 8);
    return Buffer.concat([wireName(x.name), h, x.rdata]);
  };
  const f = 0x8000 | (flags.rd ? 0x0100 : 0) | 0x0080 | (flags.cd ? 0x0010 : 0) | (flags.tc ? 0x0200 : 0) | (r.rcode & 0xf);
  const head = Buffer.concat([
    u16(id),
    u16(f),
    u16(1),
    u16(flags.tc ? 0 : r.answers.length),
    u16(flags.tc ? 0 : r.authorities.length),
    u16(flags.edns ? 1 : 0),
  ]);
  const q = Buffer.concat([wireName(qname), u16(qtype), u16(1)]);
  const opt = flags.edns ? Buffer.from([0, 0, 41, 0x04, 0xd0, 0, 0, flags.do ? 0x80 : 0, 0, 0, 0]) : Buffer.alloc(0);
  if (flags.tc) return Buffer.concat([head, q, opt]);
  return Buffer.concat([head, q, ...r.answers.map(rr), ...r.authorities.map(rr), opt]);
}

/** The recursive-resolver view over a set of zones. */
export class ZoneSet {
  constructor(readonly zones: Zone[]) {}

  private zoneFor(name: string, qtype: string): Zone | undefined {
    let best: Zone | undefined;
    for (const z of this.zones) {
      if (!below(name, z.name)) continue;
      // DS lives in the parent (RFC 4035 §3.1.4.1): skip the child at its own apex.
      if (qtype === 'DS' && norm(name) === z.name && z.name !== '.') continue;
      if (!best || labels(z.name).length > labels(best.name).length) best = z;
    }
    return best;
  }

  resolve(qname: string, qtype: string, dnssec: boolean): Reply {
    const answers: Rec[] = [];
    let cur = norm(qname);
    const seen = new Set<string>();
    for (let hop = 0; hop < 16; hop++) {
      if (seen.has(cur)) break;
      seen.add(cur);
      const z = this.zoneFor(cur, qtype);
      if (!z) return { rcode: 2, answers, authorities: [] };
      if (!z.authoritative(cur) && !(qtype === 'DS' && z.cuts().includes(cur))) return { rcode: 2, answers, authorities: [] }; // child zone unknown
      const recs = z.signed;
      const sigsFor = (name: string, type: string): Rec[] =>
        dnssec ? recs.filter((r) => r.type === 'RRSIG' && r.name === name && r.rdata.readUInt16BE(0) === TYPE[type]) : [];
      const set = (name: string, type: string): Rec[] => recs.filter((r) => r.name === name && r.type === type);
      const direct = set(cur, qtype);
      if (direct.length) {
        answers.push(...direct, ...sigsFor(cur, qtype));
        return { rcode: 0, answers, authorities: [] };
      }
      const cname = qtype === 'CNAME' ? [] : set(cur, 'CNAME');
      if (cname.length) {
        answers.push(...cname, ...sigsFor(cur, 'CNAME'));
        cur = readName(cname[0]!.rdata, 0);
        continue;
      }
      const dname = recs
        .filter((r) => r.type === 'DNAME' && r.name !== cur && below(cur, r.name))
        .sort((a, b) => labels(b.name).length - labels(a.name).length)[0];
      if (dname) {
        const target = `${cur.slice(0, cur.length - dname.name.length - 1)}.${readName(dname.rdata, 0)}`;
        answers.push(dname, ...sigsFor(dname.name, 'DNAME'), { name: cur, type: 'CNAME', ttl: dname.ttl, rdata: wireName(target) });
        if (qtype === 'CNAME') return { rcode: 0, answers, authorities: [] };
        cur = norm(target);
        continue;
      }
      const exists = recs.some((r) => r.type !== 'RRSIG' && r.type !== 'NSEC3' && below(r.name, cur));
      const auth: Rec[] = [];
      const soa = set(z.name, 'SOA');
      if (!exists) {
        // Wildcard at the closest encloser (RFC 4592)?
        const ce = this.closestEncloser(z, cur);
        const wc = ce === '.' ? '*' : `*.${ce}`;
        const wrecs = set(wc, qtype);
        const wexists = recs.some((r) => r.name === wc);
        if (wrecs.length) {
          answers.push(...wrecs.map((r) => ({ ...r, name: cur })), ...sigsFor(wc, qtype).map((r) => ({ ...r, name: cur })));
          return { rcode: 0, answers, authorities: dnssec ? this.proof(z, cur, true) : [] };
        }
        auth.push(...soa, ...sigsFor(z.name, 'SOA'));
        if (dnssec) auth.push(...this.proof(z, cur, false));
        return { rcode: wexists ? 0 : 3, answers, authorities: auth };
      }
      auth.push(...soa, ...sigsFor(z.name, 'SOA'));
      if (dnssec) auth.push(...this.proof(z, cur, false));
      return { rcode: 0, answers, authorities: auth };
    }
    return { rcode: 0, answers, authorities: [] };
  }

  private closestEncloser(z: Zone, name: string): string {
    let x = norm(name);
    while (x !== z.name) {
      x = labels(x).slice(1).join('.') || '.';
      const y = x;
      if (z.signed.some((r) => r.type !== 'RRSIG' && r.type !== 'NSEC3' && below(r.name, y))) return y;
    }
    return z.name;
  }

  /** NSEC/NSEC3 records (with RRSIGs) matching or covering the name, each ancestor and each ancestor's wildcard. */
  private proof(z: Zone, name: string, wildcardAnswer: boolean): Rec[] {
    const wanted: string[] = [];
    let x = norm(name);
    for (;;) {
      wanted.push(x, x === '.' ? '*' : `*.${x}`);
      if (x === z.name) break;
      x = labels(x).slice(1).join('.') || '.';
    }
    const out = new Map<string, Rec>();
    const nsecs = z.signed.filter((r) => r.type === 'NSEC');
    const nsec3s = z.signed.filter((r) => r.type === 'NSEC3');
    for (const w of wildcardAnswer ? [norm(name)] : wanted) {
      for (const r of nsecs) {
        const next = readName(r.rdata, 0);
        const last = canonicalCompare(next, r.name) <= 0;
        const covers = canonicalCompare(r.name, w) < 0 && (last || canonicalCompare(w, next) < 0);
        if (r.name === w || covers) out.set(r.name + '|NSEC', r);
      }
      for (const r of nsec3s) {
        const it = r.rdata.readUInt16BE(2);
        const saltLen = r.rdata[4]!;
        const salt = r.rdata.subarray(5, 5 + saltLen);
        const next = r.rdata.subarray(6 + saltLen, 26 + saltLen);
        const h = b32hex(nsec3HashOf(w, salt, it));
        const own = labels(r.name)[0]!;
        const nh = b32hex(next);
        const last = nh <= own;
        const covers = own < h ? last || h < nh : last && h < nh;
        if (own === h || covers) out.set(r.name + '|NSEC3', r);
      }
    }
    const recs = [...out.values()];
    const sigs = z.signed.filter((s) => s.type === 'RRSIG' && recs.some((r) => r.name === s.name && TYPE[r.type] === s.rdata.readUInt16BE(0)));
    return [...recs, ...sigs];
  }
}

function readName(buf: Buffer, off: number): string {
  const ls: string[] = [];
  let p = off;
  while (buf[p]! !== 0) {
    ls.push(
      buf
        .subarray(p + 1, p + 1 + buf[p]!)
        .toString('latin1')
        .toLowerCase(),
    );
    p += 1 + buf[p]!;
  }
  return ls.length ? ls.join('.') : '.';
}

/**
 * The server's answering function without sockets: query bytes in, reply bytes out (undefined = no
 * reply). The fault suite's DNS fuzz calls it in process at fuzzing speed; the server calls it for
 * every UDP datagram and TCP frame. `seen` observes each parsed query, `raw` and `mutate` are the
 * server's hooks of the same names.
 */
export function answerQuery(
  set: ZoneSet,
  buf: Buffer,
  transport: 'udp' | 'tcp',
  hooks: {
    seen?: (q: QueryInfo) => void;
    raw?: (q: QueryInfo, query: Buffer) => Buffer | undefined;
    mutate?: (q: QueryInfo, r: Reply) => Reply | undefined;
  } = {},
): Buffer | undefined {
  let q: dnsPacket.DecodedPacket;
  try {
    q = dnsPacket.decode(buf);
  } catch {
    return undefined;
  }
  const question = q.questions?.[0];
  if (!question) return undefined;
  const opt = (q.additionals ?? []).find((a): a is dnsPacket.OptAnswer => a.type === 'OPT');
  const info: QueryInfo = {
    name: norm(question.name),
    type: String(question.type).toUpperCase(),
    cd: q.flag_cd,
    do: opt?.flag_do === true,
    rd: q.flag_rd,
    transport,
  };
  hooks.seen?.(info);
  if (hooks.raw) {
    const r = hooks.raw(info, buf);
    if (r) return r;
  }
  let reply: Reply | undefined = set.resolve(info.name, info.type, info.do);
  if (hooks.mutate) reply = hooks.mutate(info, reply);
  if (!reply) return undefined;
  const qtype = TYPE[info.type] ?? 0;
  const flags = { rd: info.rd, cd: info.cd, do: info.do, edns: opt !== undefined };
  let out = encodeReply(q.id ?? 0, info.name, qtype, flags, reply);
  const limit = opt ? Math.max(512, opt.udpPayloadSize) : 512;
  if (transport === 'udp' && out.length > limit) out = encodeReply(q.id ?? 0, info.name, qtype, { ...flags, tc: true }, reply);
  return out;
}

export async function startSignedDns(zones: Zone[]): Promise<SignedDns> {
  const set = new ZoneSet(zones);
  const conns = new Set<net.Socket>();
  const state: SignedDns = { server: '', port: 0, zones, queries: [], close: async () => undefined };
  let lastInfo: QueryInfo | undefined;
  /** Run `send` now, or after `state.delay` ms for the query just handled. */
  const later = (send: () => void): void => {
    const ms = lastInfo && state.delay ? state.delay(lastInfo) : 0;
    if (ms > 0) setTimeout(send, ms).unref();
    else send();
  };
  const handle = (buf: Buffer, transport: 'udp' | 'tcp'): Buffer | undefined => {
    lastInfo = undefined;
    return answerQuery(set, buf, transport, {
      seen: (info) => {
        state.queries.push(info);
        lastInfo = info;
      },
      raw: state.raw && ((info, query) => state.raw?.(info, query)),
      mutate: state.mutate && ((info, reply) => (state.mutate ? state.mutate(info, reply) : reply)),
    });
  };
  for (let i = 0; i < 20; i++) {
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((res, rej) => {
      udp.once('error', rej);
      udp.bind(0, '127.0.0.1', () => res());
    });
    const port = udp.address().port;
    const tcp = net.createServer((sock) => {
      conns.add(sock);
      sock.on('close', () => conns.delete(sock));
      sock.on('error', () => undefined);
      let pending = Buffer.alloc(0);
      sock.on('data', (c: Buffer) => {
        pending = Buffer.concat([pending, c]);
        while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
          const m = pending.subarray(2, 2 + pending.readUInt16BE(0));
          pending = pending.subarray(2 + m.length);
          const out = handle(m, 'tcp');
          if (out)
            later(() => {
              if (!sock.destroyed) sock.write(Buffer.concat([u16(out.length), out]));
            });
        }
      });
    });
    const ok = await new Promise<boolean>((res) => {
      tcp.once('error', () => res(false));
      tcp.listen(port, '127.0.0.1', () => res(true));
    });
    if (!ok) {
      udp.close();
      continue;
    }
    udp.on('message', (m, rinfo) => {
      const out = handle(m, 'udp');
      if (out)
        later(() => {
          try {
            udp.send(out, rinfo.port, rinfo.address, () => undefined);
          } catch {
            /* closed meanwhile */
          }
        });
    });
    udp.on('error', () => undefined);
    state.port = port;
    state.server = `127.0.0.1:${port}`;
    state.close = async () => {
      for (const c of conns) c.destroy();
      await Promise.all([new Promise<void>((r) => udp.close(() => r())), new Promise<void>((r) => tcp.close(() => r()))]);
    };
    return state;
  }
  throw new Error('could not bind UDP and TCP to one port');
}

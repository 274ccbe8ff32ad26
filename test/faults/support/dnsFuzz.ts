/**
 * DNS response fuzzing: mutated replies through a resolver's decoding and answer selection.
 *
 * The resolver under test is a parameter (`ResolverFactory`): given a `Responder` (query bytes in,
 * reply bytes out, or nothing), it returns a `Resolver`. `stubInProcess` plugs in the trust-AD stub
 * (src/dns/stub.ts) with its UDP/TCP exchanges replaced by calls to the responder — everything
 * after the socket (classify, the strict wire decoder, exchange's rcode handling, alias walking,
 * record selection) is the resolver's own code. The DNSSEC validator is plugged in the same way
 * (dnssecFuzz.ts), with signed zones upstream and its own oracle.
 *
 * The oracle is independent of the relay's decoder: dns-packet decides whether a mutated reply is
 * still a well-formed reply to the query. "Never a downgrade" then means: a lookup of a name that
 * has secure records may end in an error or in secure records, and ends in "insecure" or "no
 * records" only if some reply it was given was a well-formed reply saying exactly that (the
 * trusted resolver's word, RFC 4035 §4.9.3) — never because of a malformed one.
 */
import { randomInt } from 'node:crypto';
import dnsPacket from 'dns-packet';
import { StubResolver } from '../../../src/dns/stub.js';
import { DnsTransport, classify, type Attempt, type ServerAddress } from '../../../src/dns/transport.js';
import { encodeQuery, typeCode, type QueryOptions } from '../../../src/dns/wire.js';
import type { DnsAnswer, QueryType, Resolver } from '../../../src/dns/types.js';

export type Responder = (query: Buffer, transport: 'udp' | 'tcp') => Buffer | undefined;
export type ResolverFactory = (respond: Responder) => Resolver;

/** A transport that answers in process: one responder call per exchange, through the real `classify`. */
export class InProcessTransport extends DnsTransport {
  /** `ids`: where query IDs come from (default random); a seeded one makes a fuzz run replay exactly from its seed */
  constructor(
    private readonly respond: Responder,
    private readonly ids: Rand = () => randomInt(0, 0x10000) / 0x10000,
  ) {
    super({ servers: ['127.0.0.1:53'], timeoutMs: 1000, attempts: 2 });
  }
  protected override async udp(_srv: ServerAddress, name: string, qtype: string, opts: QueryOptions): Promise<Attempt> {
    return this.once(name, qtype, 'udp', opts);
  }
  protected override async tcp(_srv: ServerAddress, name: string, qtype: string, opts: QueryOptions): Promise<Attempt> {
    const r = this.once(name, qtype, 'tcp', opts);
    return r.kind === 'truncated' ? { kind: 'malformed', message: 'TC=1 in a TCP reply' } : r;
  }
  private once(name: string, qtype: string, transport: 'udp' | 'tcp', opts: QueryOptions): Attempt {
    const id = Math.floor(this.ids() * 0x10000) & 0xffff;
    const reply = this.respond(encodeQuery(id, name, qtype, opts), transport);
    // No reply, or only replies the resolver ignores (wrong ID/question): what a timeout gives.
    if (!reply) return { kind: 'timeout', message: 'no reply (in-process)' };
    const r = classify(reply, id, name, typeCode(qtype));
    return r === 'ignore' ? { kind: 'timeout', message: 'only ignored replies (in-process)' } : r;
  }
}

export const stubInProcess: ResolverFactory = (respond) =>
  new StubResolver({ servers: ['127.0.0.1:53'], timeoutMs: 1000, attempts: 2, cache: false, transport: new InProcessTransport(respond) });

// ---------------------------------------------------------------------------
// Mutations

export type Rand = () => number;
export const MUTATIONS = [
  'bitflip',
  'bytes',
  'truncate',
  'extend',
  'wrong-id',
  'question',
  'compression-loop',
  'counts',
  'oversize',
  'random',
  'splice',
  'rdlength',
  'tc',
  'drop',
  'rcode',
  'type',
  'class',
  'label-length',
] as const;
export type Mutation = (typeof MUTATIONS)[number];

const int = (r: Rand, n: number) => Math.floor(r() * n);

/** Offsets where a name (or a label) starts, found by walking the message loosely. */
function labelStarts(buf: Buffer): number[] {
  const out: number[] = [];
  let p = 12;
  for (let guard = 0; p < buf.length && guard < 64; guard++) {
    const len = buf[p]!;
    out.push(p);
    if (len === 0 || len >= 0xc0) break;
    p += 1 + len;
  }
  // plus every byte that looks like a compression pointer
  for (let i = 12; i + 1 < buf.length; i++) if ((buf[i]! & 0xc0) === 0xc0) out.push(i);
  return out;
}

/** End of the question section (loose). */
function questionEnd(buf: Buffer): number {
  let p = 12;
  while (p < buf.length && buf[p] !== 0 && buf[p]! < 0xc0) p += 1 + buf[p]!;
  return Math.min(buf.length, p + 5);
}

export function mutate(base: Buffer, kind: Mutation, r: Rand, other?: Buffer): Buffer | undefined {
  const b = Buffer.from(base);
  try {
    return mutateIn(b, kind, r, other);
  } catch {
    return b; // a field past the end of an already truncated message: whatever was changed so far
  }
}

function mutateIn(b: Buffer, kind: Mutation, r: Rand, other?: Buffer): Buffer | undefined {
  switch (kind) {
    case 'bitflip': {
      for (let i = 0, n = 1 + int(r, 4); i < n; i++) {
        const p = int(r, b.length);
        b[p] = b[p]! ^ (1 << int(r, 8));
      }
      return b;
    }
    case 'bytes': {
      for (let i = 0, n = 1 + int(r, 4); i < n; i++) b[int(r, b.length)] = int(r, 256);
      return b;
    }
    case 'truncate':
      return b.subarray(0, int(r, b.length));
    case 'extend':
      return Buffer.concat([b, Buffer.from(Array.from({ length: 1 + int(r, 600) }, () => int(r, 256)))]);
    case 'wrong-id': {
      b.writeUInt16BE((b.readUInt16BE(0) ^ (1 + int(r, 0xfffe))) & 0xffff, 0);
      return b;
    }
    case 'question': {
      const end = questionEnd(b);
      if (end > 12) b[12 + int(r, end - 12)] = int(r, 256);
      return b;
    }
    case 'compression-loop': {
      const starts = labelStarts(b);
      const at = starts[int(r, starts.length)] ?? 12;
      if (at + 1 >= b.length) return b;
      // to itself, to a later byte, or to an earlier pointer that comes back here
      const target = [at, at + int(r, Math.max(1, b.length - at)), 12][int(r, 3)]!;
      b[at] = 0xc0 | ((target >> 8) & 0x3f);
      b[at + 1] = target & 0xff;
      return b;
    }
    case 'counts': {
      b.writeUInt16BE(r() < 0.5 ? int(r, 8) : int(r, 0x10000), 4 + 2 * int(r, 4));
      return b;
    }
    case 'oversize': {
      // the answer section repeated until the message is near the 65535-byte TCP limit
      const qe = questionEnd(b);
      const body = b.subarray(qe);
      if (body.length === 0) return b;
      const n = Math.min(Math.floor((65_000 - qe) / body.length), 0xffff);
      const out = Buffer.concat([b.subarray(0, qe), ...Array.from({ length: n }, () => body)]);
      out.writeUInt16BE(r() < 0.5 ? Math.min(0xffff, n * Math.max(1, b.readUInt16BE(6))) : 0xffff, 6);
      return out;
    }
    case 'random': {
      const out = Buffer.from(Array.from({ length: int(r, 1500) }, () => int(r, 256)));
      if (out.length >= 2 && r() < 0.5) b.copy(out, 0, 0, 2); // with the right ID, so it is not simply ignored
      return out;
    }
    case 'splice': {
      if (!other) return b;
      const cut = questionEnd(b);
      const ocut = questionEnd(other);
      return Buffer.concat([b.subarray(0, cut), other.subarray(ocut + int(r, Math.max(1, other.length - ocut)))]);
    }
    case 'rdlength': {
      // every RR's RDLENGTH sits 8 bytes after its TYPE; pick a plausible spot past the question
      const qe = questionEnd(b);
      if (b.length < qe + 12) return b;
      const p = qe + int(r, b.length - qe - 1);
      b.writeUInt16BE(int(r, 0x10000), Math.min(p, b.length - 2));
      return b;
    }
    case 'tc': {
      b[2] = b[2]! | 0x02;
      return b;
    }
    case 'drop':
      return undefined;
    case 'rcode': {
      b[3] = (b[3]! & 0xf0) | int(r, 16);
      return b;
    }
    case 'type':
    case 'class': {
      const qe = questionEnd(b);
      if (b.length < qe + 4) return b;
      const p = qe + int(r, b.length - qe - 1);
      b.writeUInt16BE(kind === 'type' ? [1, 5, 15, 28, 39, 46, 52, 255, int(r, 0x10000)][int(r, 9)]! : int(r, 5), Math.min(p, b.length - 2));
      return b;
    }
    case 'label-length': {
      const starts = labelStarts(b);
      b[starts[int(r, starts.length)] ?? 12] = int(r, 256);
      return b;
    }
  }
}

// ---------------------------------------------------------------------------
// Oracle

interface Judged {
  wellFormed: boolean;
  ad: boolean;
  rcode: string;
  /** NOERROR/NXDOMAIN, an SOA in the authority section, nothing but aliases and signatures as answers */
  denial: boolean;
}

/** The question section's bytes (uncompressed labels + type + class), or undefined. */
function questionBytes(buf: Buffer): Buffer | undefined {
  if (buf.length < 12 || buf.readUInt16BE(4) !== 1) return undefined;
  let p = 12;
  while (p < buf.length && buf[p] !== 0) {
    if (buf[p]! >= 0x40) return undefined; // a pointer or reserved label type: not a plain echo
    p += 1 + buf[p]!;
  }
  if (p + 5 > buf.length) return undefined;
  return Buffer.from(buf.subarray(12, p + 5)).map((c) => (c >= 0x41 && c <= 0x5a ? c + 32 : c)) as Buffer;
}

/**
 * An independent view of a reply to `query`. The header facts (is it a reply to this query, AD,
 * RCODE) are read by hand — they are all a trust-AD stub takes from a reply for its status, and
 * RFC 3597 lets RR data of any type be opaque, so a stricter RR decoder must not veto them. Whether
 * it is a clean denial (SOA in authority, no data in the answer section) needs the records:
 * dns-packet decodes those.
 */
export function judge(reply: Buffer, query: Buffer): Judged {
  const bad: Judged = { wellFormed: false, ad: false, rcode: '', denial: false };
  if (reply.length < 12 || query.length < 12) return bad;
  const qq = questionBytes(query);
  const rq = questionBytes(reply);
  const flags = reply.readUInt16BE(2);
  if (!qq || !rq || !qq.equals(rq) || reply.readUInt16BE(0) !== query.readUInt16BE(0) || (flags & 0x8000) === 0 || ((flags >> 11) & 0xf) !== 0) return bad;
  const rcode = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN'][flags & 0xf] ?? `RCODE${flags & 0xf}`;
  let denial = false;
  try {
    const p = dnsPacket.decode(reply);
    denial =
      (rcode === 'NOERROR' || rcode === 'NXDOMAIN') &&
      (p.authorities ?? []).some((a) => a.type === 'SOA') &&
      (p.answers ?? []).every((a) => a.type === 'CNAME' || a.type === 'DNAME' || a.type === 'RRSIG');
  } catch {
    denial = false;
  }
  return { wellFormed: true, ad: (flags & 0x0020) !== 0, rcode, denial };
}

export interface Target {
  name: string;
  type: QueryType;
}

/** What every DNS fuzz run counts, whichever resolver and mutation set it drives. */
export interface FuzzCounts<M extends string = Mutation> {
  fuzzed: number;
  lookups: number;
  crashes: number;
  hangs: number;
  downgrades: number;
  /** lookups that ended in an error (the safe outcome for garbage) */
  errors: number;
  /** lookups that still produced the secure records */
  secure: number;
  byMutation: Partial<Record<M, number>>;
  examples: string[];
}

export interface FuzzStats extends FuzzCounts {
  /** "insecure"/"no records" explained by a well-formed reply that says so */
  wellFormedDenials: number;
}

/**
 * One lookup on a fresh resolver, closed afterwards: the answer, `undefined` when it did not finish
 * within `hangMs` (a hang), or the exception it threw (a crash). Shared by the stub and validator fuzzes.
 */
export async function lookupOnce(resolver: Resolver, target: Target, hangMs = 5000): Promise<{ answer: DnsAnswer | undefined } | { crash: Error }> {
  try {
    const answer = await Promise.race([
      resolver.lookup(target.name, target.type),
      new Promise<undefined>((res) => setTimeout(() => res(undefined), hangMs).unref()),
    ]);
    return { answer };
  } catch (e) {
    return { crash: e as Error };
  } finally {
    await resolver.close();
  }
}

/**
 * Runs `lookups` lookups of the targets (all secure, with records) through `factory`, each reply
 * replaced by a mutation of the correct one (`answer` produces the correct reply to a query).
 */
export async function fuzzResolver(
  factory: ResolverFactory,
  opts: { answer: (query: Buffer, transport: 'udp' | 'tcp') => Buffer | undefined; targets: Target[]; lookups: number; rand: Rand; hangMs?: number },
): Promise<FuzzStats> {
  const st: FuzzStats = {
    fuzzed: 0,
    lookups: 0,
    crashes: 0,
    hangs: 0,
    downgrades: 0,
    errors: 0,
    secure: 0,
    wellFormedDenials: 0,
    byMutation: {},
    examples: [],
  };
  const { rand: r } = opts;
  // replies of other targets, for splicing
  const others = opts.targets.map((t) => opts.answer(encodeQuery(1, t.name, t.type), 'udp')!);
  for (let i = 0; i < opts.lookups; i++) {
    const target = opts.targets[int(r, opts.targets.length)]!;
    const seen: { reply: Buffer; judged: Judged }[] = [];
    const respond: Responder = (query, transport) => {
      const base = opts.answer(query, transport);
      if (!base) return undefined;
      // 1 to 3 stacked mutations; a few replies pass unmutated so chains get further
      if (r() < 0.1) {
        seen.push({ reply: base, judged: judge(base, query) });
        return base;
      }
      let out: Buffer | undefined = base;
      for (let k = 0, n = 1 + (r() < 0.3 ? int(r, 3) : 0); k < n && out; k++) {
        const m = MUTATIONS[int(r, MUTATIONS.length)]!;
        st.byMutation[m] = (st.byMutation[m] ?? 0) + 1;
        out = mutate(out, m, r, others[int(r, others.length)]);
      }
      st.fuzzed++;
      if (out) seen.push({ reply: out, judged: judge(out, query) });
      return out;
    };
    const once = await lookupOnce(factory(respond), target, opts.hangMs);
    if ('crash' in once) {
      st.crashes++;
      if (st.examples.length < 5) st.examples.push(`crash on ${target.name}/${target.type}: ${once.crash.stack}`);
      continue;
    }
    const a = once.answer;
    st.lookups++;
    if (!a) {
      st.hangs++;
      continue;
    }
    if (a.error || (a.status !== 'secure' && a.status !== 'insecure')) {
      // lookup() turns an exception inside the resolver into an 'other' error: that is a crash
      // the safety net caught, not an answer to garbage.
      if (a.error?.kind === 'other' && !/^no usable reply|^resolver closed/.test(a.error.message)) {
        st.crashes++;
        if (st.examples.length < 5) st.examples.push(`exception inside the resolver on ${target.name}/${target.type}: ${a.error.message}`);
      }
      st.errors++;
      continue;
    }
    if (a.status === 'secure' && a.records.length > 0) {
      // secure records must come from the replies, byte for byte (no fabricated TLSA data)
      if (target.type === 'TLSA') {
        for (const rec of a.records as { data: Buffer }[]) {
          if (rec.data.length > 0 && !seen.some((s) => s.reply.includes(rec.data))) {
            st.downgrades++;
            if (st.examples.length < 5) st.examples.push(`fabricated TLSA data for ${target.name}`);
          }
        }
      }
      st.secure++;
      continue;
    }
    // insecure, or no records: only a well-formed reply may say so
    const explained = seen.some(
      (s) =>
        s.judged.wellFormed &&
        (a!.status === 'insecure' ? !s.judged.ad && (s.judged.rcode === 'NOERROR' || s.judged.rcode === 'NXDOMAIN') : s.judged.ad && s.judged.denial),
    );
    if (explained) st.wellFormedDenials++;
    else {
      st.downgrades++;
      if (st.examples.length < 5)
        st.examples.push(
          `downgrade on ${target.name}/${target.type}: status ${a.status}, ${a.records.length} records, rcode ${a.rcode}; replies: ${seen.map((s) => s.reply.toString('hex')).join(' | ')}`,
        );
    }
  }
  return st;
}

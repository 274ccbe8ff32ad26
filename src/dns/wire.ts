/**
 * DNS wire format for the stub resolver: query encoding and a strict response
 * decoder.
 *
 * Why not just `dnsPacket.decode()`: dns-packet decodes RDATA with per-type
 * decoders that never compare the bytes they consumed with RDLENGTH, so one
 * hostile record can desynchronise the rest of the message into plausible
 * looking records; it also turns a label containing a '.' byte into two labels
 * (name confusion). This decoder bounds-checks every field, requires each
 * RDATA to be consumed exactly (RFC 1035 §3.2.1, §4.1.3), only follows backward
 * compression pointers (RFC 1035 §4.1.4, guarantees termination) and renders
 * odd label bytes in presentation format (RFC 1035 §5.1: `\.`, `\DDD`), so a
 * decoded name can never be mistaken for a different name. Anything that does
 * not parse is reported as `malformed`; it never throws to callers.
 *
 * Record data is a union discriminated by type (`WireRdata`), in the same shapes
 * dns-packet uses (MX `{preference, exchange}`, TLSA `{usage, selector,
 * matchingType, certificate}`, TXT `Buffer[]`, SOA `{mname, rname, serial, ...}`,
 * names as strings), so tests compare the two decoders field by field;
 * `toRecordData` converts a record to the relay's `RecordData`.
 */
import { asciiLower, splitName, stripDot } from './name.js';
import type { QueryType, RecordData } from './types.js';

/** RR type codes we deal with (IANA DNS parameters). */
export const TYPE_CODES = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  DNAME: 39,
  OPT: 41,
  DS: 43,
  RRSIG: 46,
  NSEC: 47,
  DNSKEY: 48,
  NSEC3: 50,
  TLSA: 52,
  ANY: 255,
} as const;
export type KnownType = keyof typeof TYPE_CODES;

const TYPE_NAMES = new Map<number, string>(Object.entries(TYPE_CODES).map(([k, v]) => [v, k]));

export function typeCode(type: string): number {
  const code = (TYPE_CODES as Record<string, number>)[type.toUpperCase()];
  if (code !== undefined) return code;
  const m = /^(?:TYPE|UNKNOWN_)(\d+)$/i.exec(type);
  if (m) return Number(m[1]);
  throw new Error(`unknown RR type ${type}`);
}

export function typeName(code: number): string {
  return TYPE_NAMES.get(code) ?? `TYPE${code}`; // RFC 3597 §5 presentation
}

const RCODE_NAMES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED', 'YXDOMAIN', 'YXRRSET', 'NXRRSET', 'NOTAUTH', 'NOTZONE'];
export function rcodeName(code: number): string {
  if (code === 16) return 'BADVERS'; // RFC 6891 §9 (extended RCODE)
  return RCODE_NAMES[code] ?? `RCODE${code}`;
}

export const CLASS_IN = 1;
/** RFC 8020-era default: 1232 avoids IP fragmentation (DNS flag day 2020). */
export const EDNS_UDP_PAYLOAD = 1232;

function encodeName(name: string): Buffer {
  const parts: Buffer[] = [];
  for (const l of splitName(name)) {
    const b = Buffer.from(l, 'latin1');
    if (b.length === 0 || b.length > 63) throw new Error(`bad label in ${name}`);
    parts.push(Buffer.from([b.length]), b);
  }
  parts.push(Buffer.from([0]));
  const out = Buffer.concat(parts);
  if (out.length > 255) throw new Error(`name too long: ${name}`);
  return out;
}

/** Render one raw label in presentation format (RFC 1035 §5.1 escapes). */
function labelToText(buf: Buffer, start: number, end: number): string {
  let s = '';
  for (let i = start; i < end; i++) {
    const b = buf[i]!;
    if (b === 0x2e || b === 0x5c)
      s += '\\' + String.fromCharCode(b); // '.' and '\'
    else if (b > 0x20 && b < 0x7f) s += String.fromCharCode(b);
    else s += '\\' + String(b).padStart(3, '0');
  }
  return s;
}

class Malformed extends Error {}

/**
 * Read a (possibly compressed) name at `offset`. Returns the canonical text
 * (lowercase, no trailing dot; root is ".") and the number of bytes the name
 * occupies at `offset`.
 */
function readName(buf: Buffer, offset: number): { name: string; bytes: number } {
  const labels: string[] = [];
  let pos = offset;
  let bytes = -1;
  let wireLen = 1;
  let limit = offset; // pointers must go strictly backwards from here
  for (;;) {
    if (pos >= buf.length) throw new Malformed('name runs past end of message');
    const len = buf[pos]!;
    if (len === 0) {
      if (bytes < 0) bytes = pos + 1 - offset;
      break;
    }
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      if (pos + 1 >= buf.length) throw new Malformed('truncated compression pointer');
      const target = ((len & 0x3f) << 8) | buf[pos + 1]!;
      if (bytes < 0) bytes = pos + 2 - offset;
      if (target >= limit) throw new Malformed('forward or looping compression pointer');
      limit = target;
      pos = target;
      continue;
    }
    if (kind !== 0) throw new Malformed('unsupported label type'); // RFC 6891 §5 retired 0x40/0x80
    if (pos + 1 + len > buf.length) throw new Malformed('label runs past end of message');
    wireLen += len + 1;
    if (wireLen > 255) throw new Malformed('name longer than 255 octets');
    labels.push(asciiLower(labelToText(buf, pos + 1, pos + 1 + len)));
    pos += 1 + len;
  }
  return { name: labels.length === 0 ? '.' : labels.join('.'), bytes };
}

// ---------------------------------------------------------------------------
// Query

export interface QueryOptions {
  /** RD: ask the resolver to recurse (RFC 1035 §4.1.1). Default true. */
  rd?: boolean;
  /** EDNS0 DO bit (RFC 3225, RFC 4035 §4.9.1). Default true. */
  dnssecOk?: boolean;
  /** CD bit; must stay 0 so the resolver validates (RFC 4035 §4.9.2, §3.2.2). Default false. */
  cd?: boolean;
  /** AD bit in the query (RFC 6840 §5.7). Default false; DO already asks for AD. */
  ad?: boolean;
  /** EDNS0 UDP payload size (RFC 6891 §6.2.5). Default 1232. */
  udpPayloadSize?: number;
}

/**
 * Encode a recursive query with an EDNS0 OPT record (RFC 6891 §6.1.2).
 * `name` is canonical presentation format; `type` a mnemonic or TYPEnnn.
 */
export function encodeQuery(id: number, name: string, type: string, opts: QueryOptions = {}): Buffer {
  const rd = opts.rd ?? true;
  const dnssecOk = opts.dnssecOk ?? true;
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id & 0xffff, 0);
  let flags = 0; // QR=0, OPCODE=QUERY
  if (rd) flags |= 0x0100;
  if (opts.ad) flags |= 0x0020;
  if (opts.cd) flags |= 0x0010;
  header.writeUInt16BE(flags, 2);
  header.writeUInt16BE(1, 4); // QDCOUNT
  header.writeUInt16BE(1, 10); // ARCOUNT: the OPT record
  const q = Buffer.alloc(4);
  q.writeUInt16BE(typeCode(type), 0);
  q.writeUInt16BE(CLASS_IN, 2);
  // OPT: root owner, TYPE 41, CLASS = UDP payload size, TTL = ext-rcode|version|DO|Z, RDLEN 0.
  const opt = Buffer.alloc(11);
  opt.writeUInt8(0, 0);
  opt.writeUInt16BE(TYPE_CODES.OPT, 1);
  opt.writeUInt16BE(opts.udpPayloadSize ?? EDNS_UDP_PAYLOAD, 3);
  opt.writeUInt32BE(dnssecOk ? 0x8000 : 0, 5);
  opt.writeUInt16BE(0, 9);
  return Buffer.concat([header, encodeName(name), q, opt]);
}

// ---------------------------------------------------------------------------
// Response

export interface WireQuestion {
  name: string;
  type: string;
  typeCode: number;
  class: number;
}

/** RR types whose RDATA is a single domain name. */
export type NameRdataType = 'CNAME' | 'DNAME' | 'NS' | 'PTR';
export interface MxRdata {
  preference: number;
  exchange: string;
}
export interface SoaRdata {
  mname: string;
  rname: string;
  serial: number;
  refresh: number;
  retry: number;
  expire: number;
  minimum: number;
}
export interface TlsaRdata {
  usage: number;
  selector: number;
  matchingType: number;
  certificate: Buffer;
}
/** Types we keep as opaque RDATA (RFC 3597): the DNSSEC types (parsed from `rdata` by dnssec/records.ts) and unknown ones. */
export type OpaqueRdataType = Exclude<KnownType, 'A' | 'AAAA' | NameRdataType | 'MX' | 'SOA' | 'TXT' | 'TLSA'> | `TYPE${number}`;

/**
 * Decoded record data, discriminated by `type`, in the shapes dns-packet uses (so tests can compare
 * the two decoders): addresses and names as text, TXT as its character-strings, opaque types as bytes.
 */
export type WireRdata =
  | { type: 'A' | 'AAAA'; data: string }
  | { type: NameRdataType; data: string }
  | { type: 'MX'; data: MxRdata }
  | { type: 'SOA'; data: SoaRdata }
  | { type: 'TXT'; data: Buffer[] }
  | { type: 'TLSA'; data: TlsaRdata }
  | { type: OpaqueRdataType; data: Buffer };

export type WireRr = WireRdata & {
  /** canonical owner name (lowercase, no trailing dot; "." for the root) */
  name: string;
  typeCode: number;
  class: number;
  ttl: number;
  /**
   * RDATA in DNSSEC canonical form (RFC 4034 §6.2): embedded names of the
   * RFC 1035 types we decode uncompressed and lowercased, other types verbatim.
   * Set by `parseMessage`; what signatures are verified over.
   */
  rdata?: Buffer;
};

export interface WireHeader {
  id: number;
  qr: boolean;
  opcode: number;
  aa: boolean;
  tc: boolean;
  rd: boolean;
  ra: boolean;
  ad: boolean;
  cd: boolean;
  /** 4-bit header RCODE */
  rcode: number;
  qdcount: number;
  ancount: number;
  nscount: number;
  arcount: number;
}

export interface WireMessage {
  header: WireHeader;
  question?: WireQuestion;
  /** full RCODE including the EDNS extended bits (RFC 6891 §6.1.3) */
  rcode: number;
  rcodeName: string;
  answers: WireRr[];
  authorities: WireRr[];
  additionals: WireRr[];
  edns?: { udpPayloadSize: number; version: number; dnssecOk: boolean };
}

export type ParseResult = { ok: true; message: WireMessage } | { ok: false; error: string };

/** Decode the 12-byte header only; undefined if the buffer is too short. */
export function parseHeader(buf: Buffer): WireHeader | undefined {
  if (buf.length < 12) return undefined;
  const f = buf.readUInt16BE(2);
  return {
    id: buf.readUInt16BE(0),
    qr: (f & 0x8000) !== 0,
    opcode: (f >> 11) & 0xf,
    aa: (f & 0x0400) !== 0,
    tc: (f & 0x0200) !== 0,
    rd: (f & 0x0100) !== 0,
    ra: (f & 0x0080) !== 0,
    ad: (f & 0x0020) !== 0,
    cd: (f & 0x0010) !== 0,
    rcode: f & 0xf,
    qdcount: buf.readUInt16BE(4),
    ancount: buf.readUInt16BE(6),
    nscount: buf.readUInt16BE(8),
    arcount: buf.readUInt16BE(10),
  };
}

/**
 * Header plus the (single) question, without touching the other sections:
 * enough to decide whether a datagram answers our query at all, before the
 * rest is parsed (so a spoofed or stale datagram is ignored, not "malformed").
 */
export function parseQuestion(buf: Buffer): { header: WireHeader; question?: WireQuestion } | undefined {
  const header = parseHeader(buf);
  if (!header) return undefined;
  if (header.qdcount !== 1) return { header };
  try {
    const { name, bytes } = readName(buf, 12);
    const o = 12 + bytes;
    if (o + 4 > buf.length) return undefined;
    const code = buf.readUInt16BE(o);
    return { header, question: { name, type: typeName(code), typeCode: code, class: buf.readUInt16BE(o + 2) } };
  } catch {
    return undefined;
  }
}

/** Decode a whole message. Never throws: any inconsistency gives `{ok:false}`. */
export function parseMessage(buf: Buffer): ParseResult {
  try {
    return { ok: true, message: parseStrict(buf) };
  } catch (e) {
    return { ok: false, error: e instanceof Error ? e.message : String(e) };
  }
}

function parseStrict(buf: Buffer): WireMessage {
  const header = parseHeader(buf);
  if (!header) throw new Malformed('message shorter than the 12-byte header');
  let o = 12;
  let question: WireQuestion | undefined;
  if (header.qdcount > 1) throw new Malformed('more than one question');
  if (header.qdcount === 1) {
    const { name, bytes } = readName(buf, o);
    o += bytes;
    if (o + 4 > buf.length) throw new Malformed('truncated question');
    const code = buf.readUInt16BE(o);
    question = { name, type: typeName(code), typeCode: code, class: buf.readUInt16BE(o + 2) };
    o += 4;
  }
  const sections: WireRr[][] = [[], [], []];
  const counts = [header.ancount, header.nscount, header.arcount];
  let edns: WireMessage['edns'];
  let extRcode = 0;
  for (let s = 0; s < 3; s++) {
    for (let i = 0; i < counts[s]!; i++) {
      const { name, bytes } = readName(buf, o);
      o += bytes;
      if (o + 10 > buf.length) throw new Malformed('truncated resource record header');
      const code = buf.readUInt16BE(o);
      const klass = buf.readUInt16BE(o + 2);
      const ttlRaw = buf.readUInt32BE(o + 4);
      const rdlen = buf.readUInt16BE(o + 8);
      o += 10;
      if (o + rdlen > buf.length) throw new Malformed('RDATA runs past end of message');
      if (code === TYPE_CODES.OPT) {
        // RFC 6891 §6.1.1: one OPT, in the additional section, owned by the root.
        if (s !== 2 || edns || name !== '.') throw new Malformed('misplaced or duplicate OPT record');
        extRcode = ttlRaw >>> 24;
        edns = { udpPayloadSize: klass, version: (ttlRaw >>> 16) & 0xff, dnssecOk: (ttlRaw & 0x8000) !== 0 };
        o += rdlen;
        continue;
      }
      // RFC 2181 §8: a TTL with the top bit set is treated as zero.
      const ttl = ttlRaw > 0x7fffffff ? 0 : ttlRaw;
      const rd = decodeRdata(buf, o, rdlen, code);
      const rdata = canonicalRdata(buf, o, rdlen, rd);
      sections[s]!.push({ ...rd, name, typeCode: code, class: klass, ttl, rdata });
      o += rdlen;
    }
  }
  // Trailing bytes after the counted records are tolerated (some middleboxes pad),
  // but everything counted must have been present.
  const rcode = (extRcode << 4) | header.rcode;
  return {
    header,
    ...(question ? { question } : {}),
    rcode,
    rcodeName: rcodeName(rcode),
    answers: sections[0]!,
    authorities: sections[1]!,
    additionals: sections[2]!,
    ...(edns ? { edns } : {}),
  };
}

function decodeRdata(buf: Buffer, o: number, len: number, code: number): WireRdata {
  const end = o + len;
  const nameAt = (at: number): { name: string; bytes: number } => {
    const r = readName(buf, at);
    if (at + r.bytes > end) throw new Malformed('name runs past RDATA');
    return r;
  };
  const exact = (used: number, what: string): void => {
    if (used !== len) throw new Malformed(`${what} RDATA length ${len} does not match its content`);
  };
  switch (code) {
    case TYPE_CODES.A:
      exact(4, 'A');
      return { type: 'A', data: `${buf[o]}.${buf[o + 1]}.${buf[o + 2]}.${buf[o + 3]}` };
    case TYPE_CODES.AAAA:
      exact(16, 'AAAA');
      return { type: 'AAAA', data: ipv6ToText(buf.subarray(o, end)) };
    case TYPE_CODES.CNAME:
    case TYPE_CODES.DNAME:
    case TYPE_CODES.NS:
    case TYPE_CODES.PTR: {
      const r = nameAt(o);
      exact(r.bytes, typeName(code));
      return { type: typeName(code) as NameRdataType, data: r.name };
    }
    case TYPE_CODES.MX: {
      if (len < 3) throw new Malformed('MX RDATA too short');
      const r = nameAt(o + 2);
      exact(2 + r.bytes, 'MX');
      return { type: 'MX', data: { preference: buf.readUInt16BE(o), exchange: r.name } };
    }
    case TYPE_CODES.SOA: {
      const m = nameAt(o);
      const r = nameAt(o + m.bytes);
      const at = o + m.bytes + r.bytes;
      exact(m.bytes + r.bytes + 20, 'SOA');
      return {
        type: 'SOA',
        data: {
          mname: m.name,
          rname: r.name,
          serial: buf.readUInt32BE(at),
          refresh: buf.readUInt32BE(at + 4),
          retry: buf.readUInt32BE(at + 8),
          expire: buf.readUInt32BE(at + 12),
          minimum: buf.readUInt32BE(at + 16),
        },
      };
    }
    case TYPE_CODES.TXT: {
      // RFC 1035 §3.3.14: one or more <character-string>s filling RDATA exactly.
      if (len < 1) throw new Malformed('empty TXT RDATA');
      const strings: Buffer[] = [];
      let p = o;
      while (p < end) {
        const l = buf[p]!;
        if (p + 1 + l > end) throw new Malformed('TXT string runs past RDATA');
        strings.push(Buffer.from(buf.subarray(p + 1, p + 1 + l)));
        p += 1 + l;
      }
      return { type: 'TXT', data: strings };
    }
    case TYPE_CODES.TLSA:
      // RFC 6698 §2.1: usage, selector, matching type (one octet each), then data.
      if (len < 3) throw new Malformed('TLSA RDATA too short');
      return {
        type: 'TLSA',
        data: {
          usage: buf[o]!,
          selector: buf[o + 1]!,
          matchingType: buf[o + 2]!,
          certificate: Buffer.from(buf.subarray(o + 3, end)),
        },
      };
    default:
      return { type: typeName(code) as OpaqueRdataType, data: Buffer.from(buf.subarray(o, end)) }; // RFC 3597: opaque
  }
}

/**
 * RFC 4034 §6.2 item 3 (and RFC 3597 §7): names inside the RDATA of the
 * RFC 1035 types that may be compressed are expanded and lowercased; every
 * other type is already uncompressed and is kept byte for byte.
 */
function canonicalRdata(buf: Buffer, o: number, len: number, rd: WireRdata): Buffer {
  switch (rd.type) {
    case 'CNAME':
    case 'DNAME':
    case 'NS':
    case 'PTR':
      return encodeName(rd.data);
    case 'MX': {
      const pref = Buffer.alloc(2);
      pref.writeUInt16BE(rd.data.preference, 0);
      return Buffer.concat([pref, encodeName(rd.data.exchange)]);
    }
    case 'SOA':
      return Buffer.concat([encodeName(rd.data.mname), encodeName(rd.data.rname), buf.subarray(o + len - 20, o + len)]);
    default:
      return Buffer.from(buf.subarray(o, o + len));
  }
}

/** Encode a presentation name as uncompressed wire format (exported for DNSSEC canonical forms). */
export function nameToWire(name: string): Buffer {
  return encodeName(name);
}

/** RFC 5952 §4 canonical text: lowercase, longest run (≥2) of zero groups as "::". */
export function ipv6ToText(b: Uint8Array): string {
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push((b[i]! << 8) | b[i + 1]!);
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]): string => xs.map((x) => x.toString(16)).join(':');
  if (bestStart < 0) return hex(g);
  return `${hex(g.slice(0, bestStart))}::${hex(g.slice(bestStart + bestLen))}`;
}

// ---------------------------------------------------------------------------
// Conversion to the relay's record types

/** RFC 8460 §3 / RFC 7208 §3.3: the strings of one TXT RR are concatenated with no separator. */
function txtToString(strings: Buffer[]): string {
  return Buffer.concat(strings).toString('utf8');
}

function cleanName(s: string): string {
  return stripDot(asciiLower(s)) || '.';
}

/** The relay's view of one decoded record, whatever its type; undefined for types it never asks for. */
function recordDataOf(rr: WireRdata): RecordData[QueryType] | undefined {
  switch (rr.type) {
    case 'A':
    case 'AAAA':
      return rr.data.toLowerCase();
    case 'CNAME':
    case 'PTR':
      return cleanName(rr.data);
    case 'MX':
      return { preference: rr.data.preference, exchange: cleanName(rr.data.exchange) };
    case 'TXT':
      return txtToString(rr.data);
    case 'TLSA': {
      const { usage, selector, matchingType, certificate } = rr.data;
      return { usage, selector, matchingType, data: Buffer.from(certificate) };
    }
    default:
      return undefined;
  }
}

/**
 * One decoded record as the relay's `RecordData` of `type`; undefined when the record is of another type.
 * (The one cast: TypeScript cannot tie the generic `T` to the narrowing on `rr.type`.)
 */
export function toRecordData<T extends QueryType>(type: T, rr: WireRdata): RecordData[T] | undefined {
  return rr.type === type ? (recordDataOf(rr) as RecordData[T] | undefined) : undefined;
}

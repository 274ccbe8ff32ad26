/**
 * Builds DNSSEC-signed zones in the tests with node:crypto: keys for every
 * algorithm the validator supports, DNSKEY/DS/RRSIG, and NSEC or NSEC3
 * (optionally opt-out) chains. Deliberately independent of src/dnssec (its
 * own name encoding, canonical ordering and hashing), so tests cross-check
 * the validator rather than mirror it; the Unbound benchmark validates these
 * zones with a third implementation.
 */
import { createHash, generateKeyPairSync, sign as cryptoSign, type KeyObject } from 'node:crypto';

export const TYPE: Record<string, number> = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  DNAME: 39,
  DS: 43,
  RRSIG: 46,
  NSEC: 47,
  DNSKEY: 48,
  NSEC3: 50,
  NSEC3PARAM: 51,
  TLSA: 52,
};

/** One record with its RDATA already in wire form (uncompressed, as signed). */
export interface Rec {
  name: string;
  type: string;
  ttl: number;
  rdata: Buffer /** RR class, default 1 (IN); tests put CH (3) records into replies */;
  class?: number;
}

// ---------------------------------------------------------------------------
// names

export function norm(n: string): string {
  const s = n.toLowerCase();
  return s === '.' || s === '' ? '.' : s.replace(/\.$/, '');
}
export function labels(n: string): string[] {
  return norm(n) === '.' ? [] : norm(n).split('.');
}
export function wireName(n: string): Buffer {
  const parts = labels(n).map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'latin1')]));
  return Buffer.concat([...parts, Buffer.from([0])]);
}
export function below(n: string, anc: string): boolean {
  const a = norm(anc);
  const x = norm(n);
  return a === '.' || x === a || x.endsWith('.' + a);
}
/** RFC 4034 §6.1 order. */
export function canonicalCompare(a: string, b: string): number {
  const la = labels(a).reverse();
  const lb = labels(b).reverse();
  for (let i = 0; i < Math.min(la.length, lb.length); i++) {
    const c = Buffer.compare(Buffer.from(la[i]!, 'latin1'), Buffer.from(lb[i]!, 'latin1'));
    if (c) return c;
  }
  return la.length - lb.length;
}

// ---------------------------------------------------------------------------
// RDATA encoders

const u16 = (n: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
};
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

export const rd = {
  A: (ip: string) => Buffer.from(ip.split('.').map(Number)),
  AAAA: (ip: string) => {
    const [h, t] = ip.split('::');
    const hs = h ? h.split(':') : [];
    const ts = t !== undefined && t ? t.split(':') : [];
    const groups = t === undefined ? hs : [...hs, ...Array(8 - hs.length - ts.length).fill('0'), ...ts];
    return Buffer.concat(groups.map((g) => u16(parseInt(g, 16))));
  },
  MX: (pref: number, host: string) => Buffer.concat([u16(pref), wireName(host)]),
  NS: (host: string) => wireName(host),
  CNAME: (t: string) => wireName(t),
  DNAME: (t: string) => wireName(t),
  TXT: (...s: string[]) => Buffer.concat(s.map((x) => Buffer.concat([Buffer.from([Buffer.byteLength(x)]), Buffer.from(x)]))),
  TLSA: (usage: number, selector: number, mt: number, data: Buffer) => Buffer.concat([Buffer.from([usage, selector, mt]), data]),
  SOA: (zone: string, minimum = 300) =>
    Buffer.concat([wireName(`ns.${zone}`), wireName(`hostmaster.${zone}`), u32(1), u32(3600), u32(600), u32(86400), u32(minimum)]),
};

export function bitmap(types: Iterable<number>): Buffer {
  const wins = new Map<number, number[]>();
  for (const t of types) {
    const w = t >> 8;
    wins.set(w, [...(wins.get(w) ?? []), t & 0xff]);
  }
  const out: Buffer[] = [];
  for (const w of [...wins.keys()].sort((a, b) => a - b)) {
    const bits = wins.get(w)!;
    const len = (Math.max(...bits) >> 3) + 1;
    const b = Buffer.alloc(2 + len);
    b[0] = w;
    b[1] = len;
    for (const t of bits) b[2 + (t >> 3)] = b[2 + (t >> 3)]! | (0x80 >> (t & 7));
    out.push(b);
  }
  return Buffer.concat(out);
}

// ---------------------------------------------------------------------------
// keys

export interface Key {
  algorithm: number;
  flags: number;
  priv: KeyObject;
  /** DNSKEY public key field */
  pub: Buffer;
  rdata: Buffer;
  tag: number;
}

/** RFC 4034 Appendix B key tag. */
export function tagOf(rdata: Buffer): number {
  let ac = 0;
  for (let i = 0; i < rdata.length; i++) ac += i & 1 ? rdata[i]! : rdata[i]! << 8;
  ac += (ac >> 16) & 0xffff;
  return ac & 0xffff;
}

const fromB64u = (s: string): Buffer => Buffer.from(s, 'base64url');

/** A fresh key; flags 257 = KSK (SEP), 256 = ZSK. RSA keys are 1024 bits to keep the tests fast. */
export function makeKey(algorithm: number, flags = 257, rsaBits = 1024): Key {
  let priv: KeyObject;
  let pub: Buffer;
  if (algorithm === 5 || algorithm === 7 || algorithm === 8 || algorithm === 10) {
    const kp = generateKeyPairSync('rsa', { modulusLength: rsaBits, publicExponent: 65537 });
    const j = kp.publicKey.export({ format: 'jwk' });
    const e = fromB64u(j.e!);
    const n = fromB64u(j.n!);
    pub = Buffer.concat([Buffer.from([e.length]), e, n]);
    priv = kp.privateKey;
  } else if (algorithm === 13 || algorithm === 14) {
    const kp = generateKeyPairSync('ec', { namedCurve: algorithm === 13 ? 'P-256' : 'P-384' });
    const j = kp.publicKey.export({ format: 'jwk' });
    pub = Buffer.concat([fromB64u(j.x!), fromB64u(j.y!)]);
    priv = kp.privateKey;
  } else if (algorithm === 15 || algorithm === 16) {
    const kp = algorithm === 15 ? generateKeyPairSync('ed25519') : generateKeyPairSync('ed448');
    pub = fromB64u(kp.publicKey.export({ format: 'jwk' }).x!);
    priv = kp.privateKey;
  } else {
    // Unsupported algorithms (e.g. 3 DSA, 12 ECC-GOST, 253 PRIVATEDNS): an RSA key blob labelled with them.
    const kp = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const j = kp.publicKey.export({ format: 'jwk' });
    pub = Buffer.concat([Buffer.from([3]), fromB64u(j.e!), fromB64u(j.n!)]);
    priv = kp.privateKey;
  }
  const rdata = Buffer.concat([u16(flags), Buffer.from([3, algorithm]), pub]);
  return { algorithm, flags, priv, pub, rdata, tag: tagOf(rdata) };
}

export function signBytes(k: Key, data: Buffer): Buffer {
  switch (k.algorithm) {
    case 5:
    case 7:
      return cryptoSign('sha1', data, k.priv);
    case 8:
      return cryptoSign('sha256', data, k.priv);
    case 10:
      return cryptoSign('sha512', data, k.priv);
    case 13:
      return cryptoSign('sha256', data, { key: k.priv, dsaEncoding: 'ieee-p1363' });
    case 14:
      return cryptoSign('sha384', data, { key: k.priv, dsaEncoding: 'ieee-p1363' });
    case 15:
    case 16:
      return cryptoSign(null, data, k.priv);
    default:
      return cryptoSign('sha1', data, k.priv);
  }
}

/** DS RDATA for `key` at `owner` (RFC 4034 §5.1.4); digest 1 SHA-1, 2 SHA-256, 4 SHA-384. */
export function dsRdata(owner: string, key: Key, digestType = 2, overrideAlg?: number): Buffer {
  const h = digestType === 1 ? 'sha1' : digestType === 4 ? 'sha384' : 'sha256';
  const digest = createHash(h).update(wireName(owner)).update(key.rdata).digest();
  return Buffer.concat([u16(key.tag), Buffer.from([overrideAlg ?? key.algorithm, digestType]), digest]);
}

/** Presentation-format DS of a key, for trust anchor files. */
export function dsText(owner: string, key: Key, digestType = 2): string {
  const r = dsRdata(owner, key, digestType);
  return `${owner === '.' ? '.' : owner + '.'} IN DS ${key.tag} ${key.algorithm} ${digestType} ${r.subarray(4).toString('hex').toUpperCase()}`;
}

export function dnskeyText(owner: string, key: Key): string {
  return `${owner === '.' ? '.' : owner + '.'} 3600 IN DNSKEY ${key.flags} 3 ${key.algorithm} ${key.pub.toString('base64')}`;
}

// ---------------------------------------------------------------------------
// signing

export interface SigOptions {
  inception: number;
  expiration: number;
}

/** RRSIG RDATA over one RRset (RFC 4034 §3.1.8.1). `owner` may start with "*." (wildcard). */
export function rrsig(rrs: Rec[], key: Key, signer: string, o: SigOptions): Rec {
  const owner = norm(rrs[0]!.name);
  const type = rrs[0]!.type;
  const ttl = rrs[0]!.ttl;
  const ls = labels(owner);
  const nlabels = ls[0] === '*' ? ls.length - 1 : ls.length;
  const prefix = Buffer.concat([
    u16(TYPE[type]!),
    Buffer.from([key.algorithm, nlabels]),
    u32(ttl),
    u32(o.expiration),
    u32(o.inception),
    u16(key.tag),
    wireName(signer),
  ]);
  const sorted = [...new Map(rrs.map((r) => [r.rdata.toString('hex'), r.rdata])).values()].sort(Buffer.compare);
  const data = Buffer.concat([prefix, ...sorted.map((r) => Buffer.concat([wireName(owner), u16(TYPE[type]!), u16(1), u32(ttl), u16(r.length), r]))]);
  return { name: owner, type: 'RRSIG', ttl, rdata: Buffer.concat([prefix, signBytes(key, data)]) };
}

const B32 = '0123456789abcdefghijklmnopqrstuv';
/** RFC 4648 §7 base32hex, lowercase, unpadded (NSEC3 owner labels). */
export function b32hex(b: Buffer): string {
  let bits = 0,
    v = 0,
    s = '';
  for (const x of b) {
    v = (v << 8) | x;
    bits += 8;
    while (bits >= 5) {
      s += B32[(v >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits) s += B32[(v << (5 - bits)) & 31];
  return s;
}
/** Memo of NSEC3 hashes: the test server hashes each wanted name once per NSEC3 record it looks at. */
const NSEC3_MEMO = new Map<string, Buffer>();
export function nsec3HashOf(name: string, salt: Buffer, iterations: number): Buffer {
  const key = `${norm(name)}|${salt.toString('hex')}|${iterations}`;
  const hit = NSEC3_MEMO.get(key);
  if (hit) return hit;
  let h = createHash('sha1').update(wireName(name)).update(salt).digest();
  for (let i = 0; i < iterations; i++) h = createHash('sha1').update(h).update(salt).digest();
  if (NSEC3_MEMO.size > 100_000) NSEC3_MEMO.clear();
  NSEC3_MEMO.set(key, h);
  return h;
}

export interface ZoneOptions {
  /** zone apex */
  name: string;
  /** keys published in DNSKEY; empty = unsigned zone */
  keys?: Key[];
  /** keys that sign the DNSKEY RRset (default: flags 257, or all) */
  ksks?: Key[];
  /** keys that sign everything else (default: flags 256, or all) */
  zsks?: Key[];
  denial?: 'nsec' | { nsec3: { iterations?: number; salt?: string; optOut?: boolean } };
  inception?: number;
  expiration?: number;
  ttl?: number;
}

/** A zone: records in, signed records out (`signed`). Re-run `sign()` after changing `records`. */
export class Zone {
  readonly name: string;
  keys: Key[];
  ksks: Key[];
  zsks: Key[];
  denial: ZoneOptions['denial'];
  records: Rec[] = [];
  signed: Rec[] = [];
  sig: SigOptions;
  ttl: number;

  constructor(o: ZoneOptions) {
    this.name = norm(o.name);
    this.keys = o.keys ?? [];
    const k = this.keys.filter((x) => x.flags === 257);
    const z = this.keys.filter((x) => x.flags === 256);
    this.ksks = o.ksks ?? (k.length ? k : this.keys);
    this.zsks = o.zsks ?? (z.length ? z : this.keys);
    this.denial = o.denial ?? 'nsec';
    const now = Math.floor(Date.now() / 1000);
    this.sig = { inception: o.inception ?? now - 3600, expiration: o.expiration ?? now + 30 * 86400 };
    this.ttl = o.ttl ?? 3600;
    this.add(this.name, 'SOA', rd.SOA(this.name));
    this.add(this.name, 'NS', rd.NS(`ns.${this.name}`));
  }

  get isSigned(): boolean {
    return this.keys.length > 0;
  }

  add(name: string, type: string, rdata: Buffer, ttl = this.ttl): this {
    this.records.push({ name: norm(name), type, ttl, rdata });
    return this;
  }

  /** Delegate `child` (NS, plus DS for the given keys unless insecure). */
  delegate(child: string, dsKeys: Key[] = [], digestType = 2): this {
    this.add(child, 'NS', rd.NS(`ns.${norm(child)}`));
    for (const k of dsKeys) this.add(child, 'DS', dsRdata(child, k, digestType));
    return this;
  }

  /** Names where this zone delegates (NS, not the apex). */
  cuts(): string[] {
    return [...new Set(this.records.filter((r) => r.type === 'NS' && r.name !== this.name).map((r) => r.name))];
  }

  /** Is `name` authoritative here (not strictly below a cut)? */
  authoritative(name: string): boolean {
    return below(name, this.name) && !this.cuts().some((c) => below(name, c) && norm(name) !== c);
  }

  sign(): this {
    const recs = this.records.filter((r) => this.authoritative(r.name));
    const out: Rec[] = [...recs];
    if (!this.isSigned) {
      this.signed = out;
      return this;
    }
    for (const k of this.keys) out.push({ name: this.name, type: 'DNSKEY', ttl: this.ttl, rdata: k.rdata });
    const cuts = new Set(this.cuts());
    const owners = [...new Set(out.map((r) => r.name))].sort(canonicalCompare);
    const typesAt = (n: string) => new Set(out.filter((r) => r.name === n).map((r) => TYPE[r.type]!));
    const denial: Rec[] = [];
    if (this.denial === 'nsec' || this.denial === undefined) {
      owners.forEach((n, i) => {
        const t = typesAt(n);
        t.add(TYPE.NSEC!);
        t.add(TYPE.RRSIG!);
        const next = owners[(i + 1) % owners.length]!;
        denial.push({ name: n, type: 'NSEC', ttl: this.ttl, rdata: Buffer.concat([wireName(next), bitmap(t)]) });
      });
    } else {
      const p = this.denial.nsec3;
      const salt = Buffer.from(p.salt ?? '', 'hex');
      const it = p.iterations ?? 0;
      const optOut = p.optOut ?? false;
      // Every owner plus empty non-terminals (RFC 5155 §7.1); opt-out skips unsigned delegations.
      const names = new Set<string>();
      for (const n of owners) {
        if (optOut && cuts.has(n) && !typesAt(n).has(TYPE.DS!)) continue;
        let x = n;
        while (below(x, this.name)) {
          names.add(x);
          if (x === this.name) break;
          x = labels(x).slice(1).join('.') || '.';
        }
      }
      const hashed = [...names].map((n) => ({ n, h: nsec3HashOf(n, salt, it) })).sort((a, b) => Buffer.compare(a.h, b.h));
      hashed.forEach(({ n, h }, i) => {
        const t = typesAt(n);
        if (t.size && !(cuts.has(n) && !t.has(TYPE.DS!))) t.add(TYPE.RRSIG!);
        const next = hashed[(i + 1) % hashed.length]!.h;
        const rdata = Buffer.concat([Buffer.from([1, optOut ? 1 : 0]), u16(it), Buffer.from([salt.length]), salt, Buffer.from([20]), next, bitmap(t)]);
        denial.push({ name: `${b32hex(h)}.${this.name}`, type: 'NSEC3', ttl: this.ttl, rdata });
      });
      out.push({ name: this.name, type: 'NSEC3PARAM', ttl: this.ttl, rdata: Buffer.concat([Buffer.from([1, 0]), u16(it), Buffer.from([salt.length]), salt]) });
    }
    out.push(...denial);
    // Sign every authoritative RRset except NS at a cut (RFC 4035 §2.2).
    const sets = new Map<string, Rec[]>();
    for (const r of out) {
      const k = `${r.name}|${r.type}`;
      sets.set(k, [...(sets.get(k) ?? []), r]);
    }
    const sigs: Rec[] = [];
    for (const [, rrs] of sets) {
      const r0 = rrs[0]!;
      if (cuts.has(r0.name) && r0.type === 'NS') continue;
      const signers = r0.type === 'DNSKEY' ? this.ksks : this.zsks;
      for (const k of signers) sigs.push(rrsig(rrs, k, this.name, this.sig));
    }
    this.signed = [...out, ...sigs];
    return this;
  }
}

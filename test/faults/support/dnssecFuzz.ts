/**
 * DNS response fuzzing for the DNSSEC validator (dns.mode: validate, src/dnssec/resolver.ts).
 *
 * The upstream is a recursive look-alike in front of zones signed in the test
 * (test/support/signer.ts, answered by signedDnsServer.ts's `answerQuery`, in process). Every
 * lookup gets a fresh validator (no cache carried over, so each lookup walks the whole chain of
 * trust: root DNSKEY, DS/DNSKEY per zone cut, NSEC/NSEC3 "not a cut" proofs, aliases) and each
 * reply it asks for is, with some probability, replaced by a mutation: the byte-level MUTATIONS of
 * the stub fuzz, and DNSSEC-specific ones done on the records before encoding (a flipped byte in an
 * RRSIG/DNSKEY/DS/NSEC/NSEC3, RRSIGs or proofs dropped, NSEC3 salt/iterations changed).
 *
 * The oracle is independent of the validator: the true records of every target are taken from the
 * zone contents the test itself wrote (following its CNAMEs). All targets are secure in the
 * unmutated zones, so a lookup may end in an error (bogus/indeterminate/transport) or in `secure`
 * with exactly the true records; `insecure`, or `secure` with any other data (other records, no
 * records, an alias hop that is not secure), is a downgrade.
 */
import { ValidatingResolver } from '../../../src/dnssec/resolver.js';
import type { DnsAnswer, QueryType, Resolver } from '../../../src/dns/types.js';
import { Zone, dsText, makeKey, norm, rd, type Key, type Rec } from '../../support/signer.js';
import { ZoneSet, answerQuery, type QueryInfo, type Reply } from '../../support/signedDnsServer.js';
import {
  InProcessTransport,
  MUTATIONS,
  lookupOnce,
  type FuzzCounts,
  mutate,
  type Mutation,
  type Rand,
  type Responder,
  type ResolverFactory,
  type Target,
} from './dnsFuzz.js';

export const DNSSEC_MUTATIONS = ['rrsig-byte', 'dnskey-byte', 'ds-byte', 'nsec-byte', 'drop-rrsig', 'drop-proof', 'nsec3-params'] as const;
export type DnssecMutation = (typeof DNSSEC_MUTATIONS)[number];
export type AnyMutation = Mutation | DnssecMutation;

const int = (r: Rand, n: number) => Math.floor(r() * n);

// ---------------------------------------------------------------------------
// Signed world

export interface SignedWorld {
  zones: Zone[];
  set: ZoneSet;
  /** presentation-format DS of the root KSK */
  anchors: string;
  targets: Target[];
  /** the true records of each target, as canonical strings (see `show`), from the zone contents */
  truth: Map<string, string[]>;
}

/**
 * Root ".", "test", then "dest.test" (NSEC) with MX, A, TLSA and aliases into "provider.test"
 * (NSEC3 with salt and iterations, so their mutation means something). RSASHA256 1024-bit keys:
 * the cheapest supported verification, so 100,000 full chain walks fit in a CI minute. `dests`
 * (default dest.test → 127.0.0.1) name each destination and its MX host's address (the relay case
 * points them at trap receivers), `port` is the TLSA port.
 */
export function signedWorld(o: { dests?: { name: string; a: string }[]; port?: number; tlsa: Buffer; keys?: Map<string, Key> }): SignedWorld {
  const keys = o.keys ?? new Map<string, Key>();
  const key = (z: string) => {
    let k = keys.get(z);
    if (!k) keys.set(z, (k = makeKey(8, 257)));
    return k;
  };
  const port = o.port ?? 25;
  const dests = o.dests ?? [{ name: 'dest.test', a: '127.0.0.1' }];
  const root = new Zone({ name: '.', keys: [key('.')] });
  const tld = new Zone({ name: 'test', keys: [key('test')] });
  const prov = new Zone({ name: 'provider.test', keys: [key('provider.test')], denial: { nsec3: { iterations: 3, salt: 'c0ffee' } } });
  root.delegate('test', tld.ksks);
  tld.delegate(prov.name, prov.ksks);
  prov.add('host.provider.test', 'A', rd.A(dests[0]!.a));
  prov.add('tlsa.provider.test', 'TLSA', rd.TLSA(3, 1, 1, o.tlsa));
  const zones = [root, tld, prov];
  const targets: Target[] = [];
  for (const { name: d, a } of dests) {
    const dest = new Zone({ name: d, keys: [key(d)] });
    tld.delegate(d, dest.ksks);
    dest.add(d, 'MX', rd.MX(10, `mx.${d}`));
    dest.add(`mx.${d}`, 'A', rd.A(a));
    dest.add(`alias.${d}`, 'CNAME', rd.CNAME('host.provider.test'));
    dest.add(`_${port}._tcp.mx.${d}`, 'TLSA', rd.TLSA(3, 1, 1, o.tlsa));
    dest.add(`_${port}._tcp.alias.${d}`, 'CNAME', rd.CNAME('tlsa.provider.test'));
    zones.push(dest);
    targets.push(
      { name: d, type: 'MX' },
      { name: `mx.${d}`, type: 'A' },
      { name: `alias.${d}`, type: 'A' },
      { name: `_${port}._tcp.mx.${d}`, type: 'TLSA' },
      { name: `_${port}._tcp.alias.${d}`, type: 'TLSA' },
    );
  }
  for (const z of zones) z.sign();
  const truth = new Map(targets.map((t) => [`${t.name}|${t.type}`, trueRecords(zones, t)]));
  return { zones, set: new ZoneSet(zones), anchors: root.ksks.map((k) => dsText('.', k)).join('\n') + '\n', targets, truth };
}

/** The oracle's view: the records the test wrote, aliases followed by hand, rendered from their wire RDATA. */
function trueRecords(zones: Zone[], t: Target): string[] {
  let name = norm(t.name);
  for (let hop = 0; hop < 8; hop++) {
    const recs = zones.flatMap((z) => z.records).filter((r) => r.name === name);
    const direct = recs.filter((r) => r.type === t.type);
    if (direct.length) return direct.map((r) => fromWire(t.type, r.rdata)).sort();
    const cname = recs.find((r) => r.type === 'CNAME');
    if (!cname) return [];
    name = readWireName(cname.rdata);
  }
  throw new Error(`alias loop in the test's own zones at ${t.name}`);
}

function readWireName(b: Buffer, off = 0): string {
  const ls: string[] = [];
  for (let p = off; b[p] !== 0; p += 1 + b[p]!)
    ls.push(
      b
        .subarray(p + 1, p + 1 + b[p]!)
        .toString('latin1')
        .toLowerCase(),
    );
  return ls.join('.') || '.';
}

function fromWire(type: string, r: Buffer): string {
  if (type === 'A') return [...r].join('.');
  if (type === 'MX') return `${r.readUInt16BE(0)} ${readWireName(r, 2)}`;
  if (type === 'TLSA') return `${r[0]} ${r[1]} ${r[2]} ${r.subarray(3).toString('hex')}`;
  return r.toString('hex');
}

/** A record as the resolver returned it, in the same form. */
export function show(type: QueryType, rec: unknown): string {
  if (type === 'A') return String(rec);
  if (type === 'MX') {
    const m = rec as { preference: number; exchange: string };
    return `${m.preference} ${norm(m.exchange)}`;
  }
  if (type === 'TLSA') {
    const x = rec as { usage: number; selector: number; matchingType: number; data: Buffer };
    return `${x.usage} ${x.selector} ${x.matchingType} ${x.data.toString('hex')}`;
  }
  return JSON.stringify(rec);
}

// ---------------------------------------------------------------------------
// Responder with mutations

/** A DNSSEC-aware mutation of a reply's records (copies; the zone's records are never touched). */
export function mutateReply(rep: Reply, kind: DnssecMutation, r: Rand): Reply {
  const all = (): Rec[] => [...rep.answers, ...rep.authorities];
  const flipIn = (type: string, from = 0): Reply => {
    const cands = all().filter((x) => x.type === type && x.rdata.length > from);
    if (!cands.length) return rep;
    const victim = cands[int(r, cands.length)]!;
    const rdata = Buffer.from(victim.rdata);
    const p = from + int(r, rdata.length - from);
    rdata[p] = rdata[p]! ^ (1 + int(r, 255));
    const swap = (x: Rec) => (x === victim ? { ...x, rdata } : x);
    return { ...rep, answers: rep.answers.map(swap), authorities: rep.authorities.map(swap) };
  };
  switch (kind) {
    case 'rrsig-byte':
      return flipIn('RRSIG');
    case 'dnskey-byte':
      return flipIn('DNSKEY');
    case 'ds-byte':
      return flipIn('DS');
    case 'nsec-byte':
      return flipIn(all().some((x) => x.type === 'NSEC3') ? 'NSEC3' : 'NSEC');
    case 'drop-rrsig': {
      // all of them, or one at random
      const sigs = all().filter((x) => x.type === 'RRSIG');
      const one = r() < 0.5 ? sigs[int(r, sigs.length)] : undefined;
      const keep = (x: Rec) => x.type !== 'RRSIG' || (one !== undefined && x !== one);
      return { ...rep, answers: rep.answers.filter(keep), authorities: rep.authorities.filter(keep) };
    }
    case 'drop-proof': {
      const proofs = rep.authorities.filter((x) => x.type === 'NSEC' || x.type === 'NSEC3');
      const one = proofs[int(r, proofs.length)];
      return { ...rep, authorities: rep.authorities.filter((x) => x !== one) };
    }
    case 'nsec3-params': {
      // another salt or iteration count than the zone's (the hashes no longer match the names)
      const salt = r() < 0.5;
      const fix = (x: Rec): Rec => {
        if (x.type !== 'NSEC3') return x;
        const rdata = Buffer.from(x.rdata);
        if (salt) {
          const n = rdata[4]!;
          if (n === 0) return x;
          rdata[5 + int(r, n)] ^= 1 + int(r, 255);
        } else rdata.writeUInt16BE([0, 1, 2, 4, 150, 151, 2500, 0xffff][int(r, 8)]!, 2);
        return { ...x, rdata };
      };
      return { ...rep, answers: rep.answers.map(fix), authorities: rep.authorities.map(fix) };
    }
  }
}

export interface FuzzCounters {
  fuzzed: number;
  byMutation: Partial<Record<AnyMutation, number>>;
}

/**
 * A responder over the signed world: each reply passes clean with probability 1 − `p`, otherwise
 * it gets one DNSSEC mutation (half the time) and/or 1–3 byte mutations. Clean replies are
 * memoised per question (ZoneSet.resolve is slow); the ID is patched in.
 */
export function signedResponder(world: SignedWorld, r: Rand, c: FuzzCounters, p: number): Responder {
  const clean = new Map<string, Reply>();
  const resolveMemo = (info: QueryInfo): Reply => {
    const k = `${info.name}|${info.type}|${info.do}`;
    let rep = clean.get(k);
    if (!rep) clean.set(k, (rep = world.set.resolve(info.name, info.type, info.do)));
    return rep;
  };
  const memoSet = { resolve: (name: string, type: string, dnssec: boolean) => resolveMemo({ name, type, do: dnssec } as QueryInfo) } as unknown as ZoneSet;
  const others: Buffer[] = [];
  // clean replies by query bytes after the ID: no decoding or encoding on the common path
  const encoded = new Map<string, Buffer | undefined>();
  const cleanReply = (query: Buffer, transport: 'udp' | 'tcp'): Buffer | undefined => {
    const k = `${transport}|${query.toString('latin1', 2)}`;
    if (!encoded.has(k)) encoded.set(k, answerQuery(memoSet, query, transport));
    const out = encoded.get(k);
    if (!out) return undefined;
    const copy = Buffer.from(out);
    copy.writeUInt16BE(query.readUInt16BE(0), 0);
    return copy;
  };
  return (query, transport) => {
    if (r() >= p) return cleanReply(query, transport);
    c.fuzzed++;
    let dnssec: DnssecMutation | undefined;
    if (r() < 0.5) {
      dnssec = DNSSEC_MUTATIONS[int(r, DNSSEC_MUTATIONS.length)]!;
      c.byMutation[dnssec] = (c.byMutation[dnssec] ?? 0) + 1;
    }
    let out = answerQuery(memoSet, query, transport, { mutate: dnssec && ((_i, rep) => mutateReply(rep, dnssec!, r)) });
    if (out && others.length < 16) others.push(out);
    if (!dnssec || r() < 0.3) {
      for (let k = 0, n = 1 + (r() < 0.3 ? int(r, 3) : 0); k < n && out; k++) {
        const m = MUTATIONS[int(r, MUTATIONS.length)]!;
        c.byMutation[m] = (c.byMutation[m] ?? 0) + 1;
        out = mutate(out, m, r, others[int(r, others.length)]);
      }
    }
    return out;
  };
}

/**
 * The validator with its exchanges answered in process (the real classify, wire decoder, exchange
 * logic). `ids` seeds the query IDs: a byte mutation that lands on the ID then hits the same value
 * again, so a run replays exactly from its seed.
 */
export function validatorInProcess(anchors: string, ids?: Rand): ResolverFactory {
  return (respond) =>
    new ValidatingResolver({ servers: ['127.0.0.1:53'], timeoutMs: 1000, attempts: 2, trustAnchors: anchors, transport: new InProcessTransport(respond, ids) });
}

// ---------------------------------------------------------------------------
// The run

export interface ValidatorFuzzStats extends FuzzCounts<AnyMutation> {
  /** of `errors` (bogus or indeterminate), the bogus ones */
  bogus: number;
  /** secure outcomes per target ("name|type"): every target must be reachable */
  secureByTarget: Record<string, number>;
  ms: number;
}

/** Judges one answer against the truth; returns why it is a downgrade, or undefined. */
export function downgradeOf(a: DnsAnswer, truth: string[]): string | undefined {
  if (a.status === 'bogus' || a.status === 'indeterminate') {
    if (a.records.length) return `error answer carries ${a.records.length} records`;
    return undefined;
  }
  if (a.status !== 'secure') return `status ${a.status} for a name that is secure`;
  if (a.firstStatus !== 'secure' || a.chain.some((h) => h.status !== 'secure'))
    return `secure with a hop that is not (${a.firstStatus}, ${a.chain.map((h) => h.status).join(',')})`;
  const got = [...new Set(a.records.map((x) => show(a.qtype, x)))].sort();
  if (got.length !== truth.length || got.some((g, i) => g !== truth[i]))
    return `secure with other data: ${JSON.stringify(got)} instead of ${JSON.stringify(truth)}`;
  return undefined;
}

export async function fuzzValidator(
  factory: (respond: Responder) => Resolver,
  world: SignedWorld,
  opts: { lookups: number; rand: Rand; p?: number; hangMs?: number; respond?: (r: Rand, c: FuzzCounters) => Responder },
): Promise<ValidatorFuzzStats> {
  const t0 = performance.now();
  const st: ValidatorFuzzStats = {
    fuzzed: 0,
    lookups: 0,
    crashes: 0,
    hangs: 0,
    downgrades: 0,
    errors: 0,
    bogus: 0,
    secure: 0,
    secureByTarget: {},
    byMutation: {},
    examples: [],
    ms: 0,
  };
  const r = opts.rand;
  const c: FuzzCounters = { fuzzed: 0, byMutation: st.byMutation };
  const respond = (opts.respond ?? ((rr, cc) => signedResponder(world, rr, cc, opts.p ?? 0.25)))(r, c);
  for (let i = 0; i < opts.lookups; i++) {
    const target = world.targets[int(r, world.targets.length)]!;
    const once = await lookupOnce(factory(respond), target, opts.hangMs);
    if ('crash' in once) {
      st.crashes++;
      if (st.examples.length < 5) st.examples.push(`crash on ${target.name}/${target.type} (lookup ${i}): ${once.crash.stack}`);
      continue;
    }
    const a = once.answer;
    st.lookups++;
    if (!a) {
      st.hangs++;
      continue;
    }
    if (a.error && /internal error/.test(a.error.message)) {
      // the validator's safety net turned an exception into "indeterminate": a crash, not a verdict
      st.crashes++;
      if (st.examples.length < 5) st.examples.push(`exception inside the validator on ${target.name}/${target.type} (lookup ${i}): ${a.error.message}`);
    }
    const why = downgradeOf(a, world.truth.get(`${target.name}|${target.type}`)!);
    if (why) {
      st.downgrades++;
      if (st.examples.length < 5) st.examples.push(`DOWNGRADE on ${target.name}/${target.type} (lookup ${i}): ${why}`);
      continue;
    }
    if (a.status === 'secure') {
      st.secure++;
      const k = `${target.name}|${target.type}`;
      st.secureByTarget[k] = (st.secureByTarget[k] ?? 0) + 1;
    } else {
      st.errors++;
      if (a.status === 'bogus') st.bogus++;
    }
  }
  st.fuzzed = c.fuzzed;
  st.ms = Math.round(performance.now() - t0);
  return st;
}

/**
 * Table tests of the pure rules the security review of 98e0948 touched, and
 * the lookup deadline / cache bounds against a slow or flooding upstream
 * (real signed zones on loopback). The forgery tests are in review.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAtOrBelow, normalizeName } from '../../src/dns/name.js';
import { dnameTarget } from '../../src/dns/stub.js';
import { closestAnchor, parseTrustAnchors } from '../../src/dnssec/anchors.js';
import { proveNxdomain, proveWildcardAnswer, type OwnedNsec } from '../../src/dnssec/nsec.js';
import { Nsec3Set, nsec3Hash, nsec3ProveWildcardAnswer, base32hexEncode } from '../../src/dnssec/nsec3.js';
import { Budget } from '../../src/dnssec/budget.js';
import { publicKeyFor } from '../../src/dnssec/algorithms.js';
import { TtlCache, approxBytes } from '../../src/dns/cache.js';
import { ValidatingResolver, LOOKUP_DEADLINE_EXCHANGES } from '../../src/dnssec/resolver.js';
import { buildTree, key, mailZone, type Tree } from './fixture.js';
import { dsText, makeKey, rd } from '../support/signer.js';

const T = { A: 1, NS: 2, SOA: 6, MX: 15, RRSIG: 46, NSEC: 47, TLSA: 52 };
const nsec = (owner: string, next: string, ...types: number[]): OwnedNsec => ({ owner, nsec: { next, types: new Set([...types, T.RRSIG, T.NSEC]) } });

describe('names with escaped dots are compared label by label', () => {
  it('DANE-1 isAtOrBelow', () => {
    const cases: Array<[string, string, boolean]> = [
      ['mx.example.com', 'example.com', true],
      ['example.com', 'example.com', true],
      ['evil\\.example.com', 'example.com', false], // one label "evil.example" under com
      ['a.evil\\.example.com', 'example.com', false],
      ['a.evil\\.example.com', 'evil\\.example.com', true],
      ['x.evil\\.example.com', 'com', true],
      ['badexample.com', 'example.com', false],
      ['a\\\\.example.com', 'example.com', true], // label "a\" under example.com
      ['anything', '.', true],
    ];
    for (const [n, a, want] of cases) expect([n, a, isAtOrBelow(n, a)]).toEqual([n, a, want]);
  });

  it('DANE-1 closestAnchor does not put evil\\.island.test under the island.test anchor', () => {
    const island = makeKey(13);
    const anchors = parseTrustAnchors(`${dsText('island.test', island)}\n`);
    expect(closestAnchor(anchors, 'mx.island.test')?.zone).toBe('island.test');
    expect(closestAnchor(anchors, normalizeName('mx.evil\\.island.test'))).toBeUndefined();
  });

  it('DANE-5 dnameTarget substitutes whole labels only', () => {
    expect(dnameTarget('mx.sub.alias.test', 'sub.alias.test', 'dst.test')).toBe('mx.dst.test');
    expect(dnameTarget('mx.a\\.b.sub.alias.test', 'sub.alias.test', 'dst.test')).toBe('mx.a\\.b.dst.test');
    expect(dnameTarget('mx.a\\.sub.alias.test', 'sub.alias.test', 'dst.test')).toBeUndefined(); // label "a.sub" is under alias.test
    expect(dnameTarget('x\\.sub.alias.test', 'sub.alias.test', 'dst.test')).toBeUndefined(); // not below the DNAME
    expect(dnameTarget('sub.alias.test', 'sub.alias.test', 'dst.test')).toBeUndefined();
    const long = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.sub.alias.test`;
    expect(dnameTarget(long, 'sub.alias.test', 'd'.repeat(63) + '.test')).toBeUndefined(); // > 255 octets: YXDOMAIN
  });
});

describe('NSEC proofs', () => {
  it('DANE-1 proveWildcardAnswer: the RRSIG labels must name the closest encloser the covering NSEC implies', () => {
    // zone example.com with *.example.com and *.b.example.com; x.b.example.com expanded from *.example.com (labels 2)
    const n1 = [nsec('*.b.example.com', 'y.b.example.com', T.MX)];
    expect(proveWildcardAnswer(n1, 'x.b.example.com', 'example.com', 2).ok).toBe(false);
    expect(proveWildcardAnswer(n1, 'x.b.example.com', 'example.com', 3).ok).toBe(true);
    // y.a.example.com exists; x.y.a.example.com claimed from *.a.example.com (labels 3): the NSEC implies y.a is the encloser
    const n2 = [nsec('y.a.example.com', 'z.a.example.com', T.A)];
    expect(proveWildcardAnswer(n2, 'x.y.a.example.com', 'example.com', 3).ok).toBe(false);
    expect(proveWildcardAnswer(n2, 'x.y.a.example.com', 'example.com', 4).ok).toBe(true);
    // labels below the zone's own label count, or not shorter than the name
    const n3 = [nsec('example.com', 'z.example.com', T.SOA, T.NS)];
    expect(proveWildcardAnswer(n3, 'x.example.com', 'example.com', 1).ok).toBe(false);
    expect(proveWildcardAnswer(n3, 'x.example.com', 'example.com', 3).ok).toBe(false);
    expect(proveWildcardAnswer(n3, 'x.example.com', 'example.com', 2).ok).toBe(true);
  });

  it('DANE-32 proveNxdomain refuses an empty non-terminal (next name below the qname)', () => {
    const n = [nsec('a.example.com', 'x.ent.example.com', T.A), nsec('example.com', 'a.example.com', T.SOA, T.NS)];
    const p = proveNxdomain(n, 'ent.example.com', 'example.com');
    expect(p.ok).toBe(false);
    expect(!p.ok && p.reason).toMatch(/empty non-terminal/);
    expect(proveNxdomain(n, 'b.example.com', 'example.com').ok).toBe(true); // the same NSEC proves a real NXDOMAIN
  });
});

describe('NSEC3 proofs', () => {
  const zone = 'example.com';
  const owner = (name: string) => `${base32hexEncode(nsec3Hash(name, Buffer.alloc(0), 0))}.${zone}`;
  /** One NSEC3 whose span covers every hash except its own owner's (owner → owner-1). */
  const spanAll = (name: string, flags: number, iterations = 0) => {
    const h = nsec3Hash(name, Buffer.alloc(0), iterations);
    const next = Buffer.from(h);
    for (let i = 19; i >= 0; i--) {
      if (next[i]! > 0) {
        next[i]! -= 1;
        break;
      }
      next[i] = 255;
    }
    return {
      owner: `${base32hexEncode(h)}.${zone}`,
      nsec3: { hashAlgorithm: 1, flags, iterations, salt: Buffer.alloc(0), nextHash: next, types: new Set([T.A]) },
    };
  };

  it('DANE-1 nsec3ProveWildcardAnswer: opt-out cover → insecure; labels outside the zone → not proven', () => {
    const plain = new Nsec3Set([spanAll('a.example.com', 0)], zone, new Budget());
    const p = nsec3ProveWildcardAnswer(plain, 'x.example.com', 2);
    expect([p.ok, 'insecure' in p && p.insecure]).toEqual([true, false]);
    const opt = new Nsec3Set([spanAll('a.example.com', 1)], zone, new Budget());
    const q = nsec3ProveWildcardAnswer(opt, 'x.example.com', 2);
    expect([q.ok, 'insecure' in q && q.insecure]).toEqual([true, true]);
    expect(nsec3ProveWildcardAnswer(plain, 'x.example.com', 1).ok).toBe(false);
    expect(nsec3ProveWildcardAnswer(plain, 'x.example.com', 3).ok).toBe(false);
    expect(owner('a.example.com')).toBe(spanAll('a.example.com', 0).owner);
  });

  it('DANE-32 Nsec3Set prefers a parameter set within the iteration limit over one replayed first', () => {
    const s = new Nsec3Set([spanAll('a.example.com', 0, 500), spanAll('b.example.com', 0, 0)], zone, new Budget());
    expect([s.iterations, s.tooManyIterations, s.records.length]).toEqual([0, false, 1]);
    const only = new Nsec3Set([spanAll('a.example.com', 0, 500)], zone, new Budget());
    expect(only.tooManyIterations).toBe(true);
  });
});

describe('keys and caches', () => {
  it('DANE-1 RSA keys with a public exponent over 4 octets or a modulus over 4096 bits are unsupported', () => {
    const good = makeKey(8).pub;
    expect(publicKeyFor(8, good)).toBeDefined();
    const n = good.subarray(1 + good[0]!);
    const e5 = Buffer.concat([Buffer.from([5, 1, 0, 0, 0, 1]), n]);
    expect(publicKeyFor(8, e5)).toBeUndefined();
    const big = Buffer.concat([Buffer.from([3, 1, 0, 1]), Buffer.alloc(513, 0xff)]);
    expect(publicKeyFor(8, big)).toBeUndefined();
  });

  it('DANE-1 TtlCache evicts by bytes as well as by entries', () => {
    const c = new TtlCache<Buffer>(1000, 10_000, (b) => approxBytes(b));
    for (let i = 0; i < 20; i++) c.set(`k${i}`, Buffer.alloc(1000), 60, 0);
    expect(c.bytes).toBeLessThanOrEqual(10_000);
    expect(c.size).toBeLessThan(20);
    expect(c.get('k19', 1)).toBeDefined(); // the newest stay
    expect(c.get('k0', 1)).toBeUndefined();
    c.set('huge', Buffer.alloc(20_000), 60, 0);
    expect(c.get('huge', 1)).toBeUndefined();
  });
});

describe('lookup deadline', () => {
  let t: Tree;
  beforeAll(async () => {
    const z = mailZone('slow.test', { keys: [key('rv-slow', 13)] });
    z.add('mx.slow.test', 'TXT', rd.TXT('x'));
    t = await buildTree([z]);
  }, 60_000);
  afterAll(async () => t?.close());

  it(`DANE-33 an upstream that answers each question just inside the timeout ends the lookup after ${LOOKUP_DEADLINE_EXCHANGES} × timeout × attempts`, async () => {
    // The walk is 6 exchanges in a row (TLSA, then DNSKEY/DS from the root down). Each answer comes
    // 0.6 × timeout late: well inside its own timeout, with 800 ms to spare for a busy machine, but
    // 6 × 0.6 = 3.6 timeouts in all, past the 3-timeout deadline.
    const timeoutMs = 2000;
    const r = new ValidatingResolver({ servers: [t.dns.server], timeoutMs, attempts: 1, trustAnchors: t.anchors });
    t.dns.delay = () => 0.6 * timeoutMs;
    try {
      const started = Date.now();
      const a = await r.lookup('_25._tcp.mx.slow.test', 'TLSA');
      const took = Date.now() - started;
      expect(a.status).toBe('indeterminate');
      expect(a.error?.kind).toBe('timeout');
      // the deadline ended it (a single exchange's timeout says "no reply within" instead)
      expect(a.error?.message).toMatch(/longer than 6000 ms/);
      expect(took).toBeGreaterThanOrEqual(6000 - 10);
    } finally {
      t.dns.delay = undefined;
      await r.close();
    }
    // without the delay the same lookup is secure
    const ok = await t.resolver().lookup('_25._tcp.mx.slow.test', 'TLSA');
    expect(ok.status).toBe('secure');
  });
});

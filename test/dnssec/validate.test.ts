/**
 * ValidatingResolver against zones signed in the test with node:crypto, served
 * by a loopback recursive look-alike (test/support/signedDnsServer.ts).
 * Every algorithm, every proof type, and every way to be bogus.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTree, key, mailZone, type Tree } from './fixture.js';
import { type Zone, dsRdata, dsText, dnskeyText, rd, makeKey, type Rec } from '../support/signer.js';
import { isAnswer } from '../../src/dns/types.js';

const now = Math.floor(Date.now() / 1000);
let t: Tree;

const stripSigs = (recs: Rec[]) => recs.filter((r) => r.type !== 'RRSIG');

beforeAll(async () => {
  const zones: Zone[] = [];
  for (const alg of [5, 7, 8, 10, 13, 14, 15, 16]) zones.push(mailZone(`alg${alg}.test`, { keys: [key(`alg${alg}`, alg)] }));
  zones.push(mailZone('split.test', { keys: [key('split-ksk', 13, 257), key('split-zsk', 13, 256)] }));
  zones.push(mailZone('mixed.test', { keys: [key('mixed-rsa', 8), key('mixed-ed', 15)] }));
  const oldK = key('roll-old', 13, 257),
    newK = key('roll-new', 13, 257),
    zsk = key('roll-zsk', 13, 256);
  zones.push(mailZone('rollover.test', { keys: [oldK, newK, zsk], ksks: [newK], zsks: [zsk] }));
  zones.push(mailZone('sha1.test', { keys: [key('sha1', 13)] }));
  zones.push(mailZone('sha384.test', { keys: [key('sha384', 13)] }));
  zones.push(mailZone('unsup.test', { keys: [makeKey(12)] }));
  zones.push(mailZone('nsec3.test', { keys: [key('n3', 13)], denial: { nsec3: { iterations: 0 } } }));
  zones.push(mailZone('salted.test', { keys: [key('n3s', 15)], denial: { nsec3: { iterations: 10, salt: 'aabbccdd' } } }));
  const optout = mailZone('optout.test', { keys: [key('oo', 13)], denial: { nsec3: { iterations: 0, optOut: true } } });
  zones.push(optout);
  zones.push(mailZone('island.optout.test'));
  zones.push(mailZone('iter.test', { keys: [key('iter', 13)], denial: { nsec3: { iterations: 200 } } }));
  zones.push(mailZone('unsigned.test'));
  const wild = mailZone('wild.test', { keys: [key('wild', 13)] });
  wild.add('*.wild.test', 'MX', rd.MX(5, 'mx.wild.test'));
  zones.push(wild);
  const wild3 = mailZone('wild3.test', { keys: [key('wild3', 13)], denial: { nsec3: { iterations: 1, salt: '01' } } });
  wild3.add('*.wild3.test', 'MX', rd.MX(5, 'mx.wild3.test'));
  zones.push(wild3);
  zones.push(mailZone('expired.test', { keys: [key('exp', 13)], inception: now - 20 * 86400, expiration: now - 86400 }));
  zones.push(mailZone('future.test', { keys: [key('fut', 13)], inception: now + 86400, expiration: now + 20 * 86400 }));
  zones.push(mailZone('wrongds.test', { keys: [key('wds', 13)] }));
  zones.push(mailZone('dsalg.test', { keys: [key('dsalg', 13)] }));
  zones.push(mailZone('soon.test', { keys: [key('soon', 13)], expiration: now + 120 }));
  const alias = mailZone('alias.test', { keys: [key('alias', 13)] });
  alias.add('www.alias.test', 'CNAME', rd.CNAME('mx.unsigned.test'));
  alias.add('bad.alias.test', 'CNAME', rd.CNAME('mx.expired.test'));
  alias.add('chain.alias.test', 'CNAME', rd.CNAME('mx.alg15.test'));
  alias.add('sub.alias.test', 'DNAME', rd.DNAME('alg8.test'));
  alias.add('loop1.alias.test', 'CNAME', rd.CNAME('loop2.alias.test'));
  alias.add('loop2.alias.test', 'CNAME', rd.CNAME('loop1.alias.test'));
  zones.push(alias);
  const big = mailZone('big.test', { keys: [key('big', 10)] });
  for (let i = 0; i < 30; i++) big.add('txt.big.test', 'TXT', rd.TXT(`v=record-${i}-${'x'.repeat(100)}`));
  zones.push(big);
  const ualias = mailZone('ualias.unsigned.test');
  zones.push(ualias);
  t = await buildTree(zones);
  t.zones.get('unsigned.test')!.add('to-signed.unsigned.test', 'CNAME', rd.CNAME('mx.alg13.test'));
  // Delegations that need special DS records.
  const tld = t.tld;
  const setDs = (child: string, rdatas: Buffer[]) => {
    tld.records = tld.records.filter((r) => !(r.name === child && r.type === 'DS'));
    for (const r of rdatas) tld.add(child, 'DS', r);
  };
  setDs('rollover.test', [dsRdata('rollover.test', oldK), dsRdata('rollover.test', newK)]);
  setDs('sha1.test', [dsRdata('sha1.test', key('sha1', 13), 1)]);
  setDs('sha384.test', [dsRdata('sha384.test', key('sha384', 13), 4)]);
  setDs('wrongds.test', [dsRdata('wrongds.test', key('someone-else', 13))]);
  setDs('dsalg.test', [dsRdata('dsalg.test', key('dsalg-rsa', 8))]);
  t.resign();
}, 60_000);
afterAll(async () => t?.close());

describe('validator: algorithms and chains', () => {
  for (const alg of [5, 7, 8, 10, 13, 14, 15, 16]) {
    it(`DANE-1 algorithm ${alg}: MX, A and TLSA are secure`, async () => {
      const r = t.resolver();
      const mx = await r.lookup(`alg${alg}.test`, 'MX');
      expect(mx.error).toBeUndefined();
      expect(mx.status).toBe('secure');
      expect(mx.records).toEqual([{ preference: 10, exchange: `mx.alg${alg}.test` }]);
      const a = await r.lookup(`mx.alg${alg}.test`, 'A');
      expect([a.status, a.records]).toEqual(['secure', ['192.0.2.25']]);
      const tlsa = await r.lookup(`_25._tcp.mx.alg${alg}.test`, 'TLSA');
      expect(tlsa.status).toBe('secure');
      expect(tlsa.records).toHaveLength(1);
    });
  }

  it('KSK/ZSK split, mixed algorithms (RSASHA256 + ED25519) and a KSK rollover (two DS, one DNSKEY set) are secure', async () => {
    const r = t.resolver();
    for (const z of ['split.test', 'mixed.test', 'rollover.test']) {
      const a = await r.lookup(`mx.${z}`, 'AAAA');
      expect([z, a.status, a.records]).toEqual([z, 'secure', ['2001:db8::25']]);
    }
  });

  it('any zone may be an anchor point (DS or DNSKEY form); names under no anchor are insecure', async () => {
    const z = t.zones.get('alg13.test')!;
    for (const anchors of [dsText('alg13.test', z.ksks[0]!), dnskeyText('alg13.test', z.ksks[0]!)]) {
      const r = t.resolver({ anchors });
      const before = t.dns.queries.length;
      expect((await r.lookup('mx.alg13.test', 'A')).status).toBe('secure');
      // the chain starts at the anchor: nothing above it is asked for
      expect(t.dns.queries.slice(before).some((q) => q.name === '.' || q.name === 'test')).toBe(false);
      const outside = await r.lookup('mx.alg8.test', 'A');
      expect([outside.status, outside.error]).toEqual(['insecure', undefined]);
    }
    // a wrong anchor makes the zone bogus
    const wrong = await t.resolver({ anchors: dsText('alg13.test', key('not-alg13', 13)) }).lookup('mx.alg13.test', 'A');
    expect(wrong.status).toBe('bogus');
  });

  it('DS digests SHA-1 and SHA-384 lead to a secure zone', async () => {
    const r = t.resolver();
    expect((await r.lookup('sha1.test', 'MX')).status).toBe('secure');
    expect((await r.lookup('sha384.test', 'MX')).status).toBe('secure');
  });

  it('a zone signed only with an unsupported algorithm (ECC-GOST) is insecure, not bogus (RFC 4035 §5.2, RFC 6840 §5.2)', async () => {
    const a = await t.resolver().lookup('unsup.test', 'MX');
    expect(a.error).toBeUndefined();
    expect(a.status).toBe('insecure');
    expect(a.records).toHaveLength(1);
  });

  it('DANE-15 an unsigned delegation proven by NSEC (NS, no DS) is insecure', async () => {
    const { answer, trace } = await t.resolver().lookupTrace('mx.unsigned.test', 'A');
    expect(answer.status).toBe('insecure');
    expect(isAnswer(answer)).toBe(true);
    expect(trace.some((s) => s.kind === 'DS' && s.result === 'insecure' && /delegation without DS/.test(s.detail))).toBe(true);
  });

  it('NSEC3 opt-out: an unsigned delegation in an opt-out span is insecure', async () => {
    const { answer, trace } = await t.resolver().lookupTrace('mx.island.optout.test', 'A');
    expect(answer.status).toBe('insecure');
    expect(answer.records).toEqual(['192.0.2.25']);
    expect(trace.some((s) => /opt-out/.test(s.detail))).toBe(true);
  });
});

describe('validator: denial of existence', () => {
  it('NSEC NXDOMAIN and NODATA are secure', async () => {
    const r = t.resolver();
    const nx = await r.lookup('nope.alg13.test', 'A');
    expect([nx.rcode, nx.status, nx.error]).toEqual(['NXDOMAIN', 'secure', undefined]);
    const nd = await r.lookup('mx.alg13.test', 'TLSA');
    expect([nd.rcode, nd.status, nd.records]).toEqual(['NOERROR', 'secure', []]);
    // empty non-terminal _tcp.mx.alg13.test
    const ent = await r.lookup('_tcp.mx.alg13.test', 'TLSA');
    expect([ent.rcode, ent.status]).toEqual(['NOERROR', 'secure']);
  });

  it('NSEC3 NXDOMAIN and NODATA are secure (no salt, and salted with iterations)', async () => {
    const r = t.resolver();
    for (const z of ['nsec3.test', 'salted.test']) {
      const nx = await r.lookup(`nope.${z}`, 'A');
      expect([z, nx.rcode, nx.status, nx.error]).toEqual([z, 'NXDOMAIN', 'secure', undefined]);
      const nd = await r.lookup(`mx.${z}`, 'TXT');
      expect([z, nd.rcode, nd.status]).toEqual([z, 'NOERROR', 'secure']);
      const ent = await r.lookup(`_tcp.mx.${z}`, 'TLSA');
      expect([z, ent.rcode, ent.status]).toEqual([z, 'NOERROR', 'secure']);
    }
  });

  it('NSEC3 opt-out NXDOMAIN is insecure (an unsigned delegation could hide there)', async () => {
    const nx = await t.resolver().lookup('nothing.optout.test', 'A');
    expect([nx.rcode, nx.status, nx.error]).toEqual(['NXDOMAIN', 'insecure', undefined]);
  });

  it('NSEC3 with more than 150 iterations is treated as insecure, like Unbound 1.17 (RFC 9276 §3.2)', async () => {
    const nx = await t.resolver().lookup('nope.iter.test', 'A');
    expect([nx.rcode, nx.status, nx.error]).toEqual(['NXDOMAIN', 'insecure', undefined]);
    expect((await t.resolver().lookup('iter.test', 'MX')).status).toBe('secure'); // positive answers are unaffected
  });

  it('wildcard expansion with its NSEC / NSEC3 proof is secure; wildcard NODATA too', async () => {
    const r = t.resolver();
    for (const z of ['wild.test', 'wild3.test']) {
      const a = await r.lookup(`anything.${z}`, 'MX');
      expect([z, a.status, a.records]).toEqual([z, 'secure', [{ preference: 5, exchange: `mx.${z}` }]]);
      const nd = await r.lookup(`anything.${z}`, 'A');
      expect([z, nd.rcode, nd.status]).toEqual([z, 'NOERROR', 'secure']);
    }
  });
});

describe('validator: bogus', () => {
  const bogus = async (name: string, type: 'A' | 'MX' | 'TLSA' = 'A', pattern?: RegExp) => {
    const { answer, trace } = await t.resolver().lookupTrace(name, type);
    expect(answer.error?.kind).toBe('bogus');
    expect(answer.status).toBe('bogus');
    expect(answer.records).toEqual([]);
    expect(isAnswer(answer)).toBe(false);
    if (pattern) expect(answer.error!.message).toMatch(pattern);
    expect(trace.some((s) => s.result === 'bogus')).toBe(true);
    return answer;
  };

  it('DANE-1 expired signatures are bogus', () => bogus('mx.expired.test', 'A', /expired/));
  it('DANE-1 signatures not yet valid are bogus', () => bogus('mx.future.test', 'A', /not valid before/));
  it('DANE-1 a DS that matches no DNSKEY is bogus', () => bogus('mx.wrongds.test', 'A', /no DNSKEY of wrongds.test matches/));
  it('DANE-1 a DS only for an algorithm the zone does not use is bogus', () => bogus('mx.dsalg.test', 'A', /matches/));

  it('DANE-1 a missing RRSIG in a secure zone is bogus', async () => {
    t.dns.mutate = (q, r) => (q.name === 'mx.alg13.test' && q.type === 'A' ? { ...r, answers: stripSigs(r.answers) } : r);
    try {
      await bogus('mx.alg13.test', 'A', /no RRSIG/);
    } finally {
      t.dns.mutate = undefined;
    }
  });

  it('DANE-1 an NXDOMAIN whose NSEC does not cover the name is bogus', async () => {
    // Replace the proof with the NSEC of an unrelated name (validly signed, but proving nothing here).
    const z = t.zones.get('alg13.test')!;
    const unrelated = z.signed.filter((r) => r.name === 'alg13.test' && (r.type === 'NSEC' || (r.type === 'RRSIG' && r.rdata.readUInt16BE(0) === 47)));
    t.dns.mutate = (q, r) =>
      q.name === 'zzz.mx.alg13.test' && q.type !== 'DS'
        ? { ...r, authorities: [...r.authorities.filter((x) => x.type !== 'NSEC' && !(x.type === 'RRSIG' && x.rdata.readUInt16BE(0) === 47)), ...unrelated] }
        : r;
    try {
      await bogus('zzz.mx.alg13.test', 'A', /not proven/);
    } finally {
      t.dns.mutate = undefined;
    }
  });

  it('DANE-1 an NSEC3 opt-out proof stripped of its signatures proves nothing: the unsigned delegation is bogus, not insecure', async () => {
    t.dns.mutate = (q, r) => (q.name === 'island.optout.test' && q.type === 'DS' ? { ...r, authorities: stripSigs(r.authorities) } : r);
    try {
      await bogus('mx.island.optout.test', 'A');
    } finally {
      t.dns.mutate = undefined;
    }
  });

  it('DANE-1 a NODATA claim contradicted by the NSEC bitmap is bogus', async () => {
    t.dns.mutate = (q, r) => {
      if (q.name !== 'mx.alg13.test' || q.type !== 'A') return r;
      const z = t.zones.get('alg13.test')!;
      const nsec = z.signed.filter((x) => x.name === 'mx.alg13.test' && (x.type === 'NSEC' || (x.type === 'RRSIG' && x.rdata.readUInt16BE(0) === 47)));
      const soa = z.signed.filter((x) => x.name === 'alg13.test' && (x.type === 'SOA' || (x.type === 'RRSIG' && x.rdata.readUInt16BE(0) === 6)));
      return { rcode: 0, answers: [], authorities: [...soa, ...nsec] };
    };
    try {
      await bogus('mx.alg13.test', 'A', /lists the type/);
    } finally {
      t.dns.mutate = undefined;
    }
  });

  it('DANE-1 a wildcard answer without its NSEC / NSEC3 proof is bogus', async () => {
    t.dns.mutate = (q, r) => (q.name.startsWith('anything.wild') && q.type !== 'DS' ? { ...r, authorities: [] } : r);
    try {
      await bogus('anything.wild.test', 'MX', /wildcard/);
      await bogus('anything.wild3.test', 'MX', /wildcard/);
    } finally {
      t.dns.mutate = undefined;
    }
  });

  it('DANE-1 an unsigned DS denial in a secure parent is bogus (no downgrade to insecure by stripping the proof)', async () => {
    t.dns.mutate = (q, r) => (q.name === 'unsigned.test' && q.type === 'DS' ? { ...r, authorities: stripSigs(r.authorities) } : r);
    try {
      await bogus('mx.unsigned.test', 'A', /DS/);
    } finally {
      t.dns.mutate = undefined;
    }
  });

  it('DANE-1 a forged record under a valid signature is bogus', async () => {
    t.dns.mutate = (q, r) =>
      q.name === 'mx.alg15.test' && q.type === 'A' ? { ...r, answers: r.answers.map((x) => (x.type === 'A' ? { ...x, rdata: rd.A('203.0.113.66') } : x)) } : r;
    try {
      await bogus('mx.alg15.test', 'A', /does not verify/);
    } finally {
      t.dns.mutate = undefined;
    }
  });
});

describe('validator: aliases (DANE-5)', () => {
  it('DANE-5 CNAME from a secure zone into an insecure zone: status insecure, firstStatus secure', async () => {
    const a = await t.resolver().lookup('www.alias.test', 'A');
    expect(a.error).toBeUndefined();
    expect(a.status).toBe('insecure');
    expect(a.firstStatus).toBe('secure');
    expect(a.chain).toEqual([{ owner: 'www.alias.test', target: 'mx.unsigned.test', status: 'secure' }]);
    expect(a.canonicalName).toBe('mx.unsigned.test');
    expect(a.records).toEqual(['192.0.2.25']);
  });

  it('DANE-5 CNAME from an insecure zone into a secure zone: firstStatus insecure', async () => {
    const a = await t.resolver().lookup('to-signed.unsigned.test', 'A');
    expect([a.status, a.firstStatus, a.records]).toEqual(['insecure', 'insecure', ['192.0.2.25']]);
  });

  it('DANE-5 CNAME across two secure zones is secure', async () => {
    const a = await t.resolver().lookup('chain.alias.test', 'A');
    expect([a.status, a.firstStatus, a.canonicalName]).toEqual(['secure', 'secure', 'mx.alg15.test']);
  });

  it('DANE-5 CNAME into a bogus zone is an error, not an answer', async () => {
    const a = await t.resolver().lookup('bad.alias.test', 'A');
    expect(a.error?.kind).toBe('bogus');
    expect(a.records).toEqual([]);
    expect(a.chain[0]).toEqual({ owner: 'bad.alias.test', target: 'mx.expired.test', status: 'secure' });
  });

  it('a signed CNAME loop is an error of kind loop, not an answer', async () => {
    const a = await t.resolver().lookup('loop1.alias.test', 'A');
    expect(a.error?.kind).toBe('loop');
    expect(a.records).toEqual([]);
  });

  it('DANE-5 a signed DNAME is followed (the unsigned synthesised CNAME is not trusted)', async () => {
    const a = await t.resolver().lookup('mx.sub.alias.test', 'A');
    expect([a.status, a.canonicalName, a.records]).toEqual(['secure', 'mx.alg8.test', ['192.0.2.25']]);
  });
});

describe('validator: transport', () => {
  it('a signed reply larger than the EDNS size is fetched again over TCP (TC=1, RFC 7766) and validates', async () => {
    const a = await t.resolver().lookup('txt.big.test', 'TXT');
    expect([a.status, a.records.length]).toEqual(['secure', 30]);
    const q = t.dns.queries.filter((x) => x.name === 'txt.big.test' && x.type === 'TXT');
    expect(q.map((x) => x.transport)).toEqual(['udp', 'tcp']);
  });
});

describe('validator: TTLs and cache', () => {
  it('TTL is capped by the signature expiry', async () => {
    const a = await t.resolver().lookup('soon.test', 'MX');
    expect(a.status).toBe('secure');
    expect(a.ttl).toBeLessThanOrEqual(120);
    expect(a.ttl).toBeGreaterThan(0);
  });

  it('TTL is capped by the RRSIG original TTL (RFC 4035 §5.3.3), whatever the upstream says', async () => {
    t.dns.mutate = (q, r) => (q.name === 'mx.alg16.test' ? { ...r, answers: r.answers.map((x) => ({ ...x, ttl: 86400 * 7 })) } : r);
    try {
      const a = await t.resolver().lookup('mx.alg16.test', 'A');
      expect(a.status).toBe('secure');
      expect(a.ttl).toBeLessThanOrEqual(3600);
    } finally {
      t.dns.mutate = undefined;
    }
  });

  it('the answer cache is bounded: beyond maxCacheEntries the least recently used answer is asked again', async () => {
    const r = t.resolver({ maxCacheEntries: 2 });
    const count = () => t.dns.queries.filter((q) => q.name === 'mx.alg10.test' && q.type === 'A').length;
    await r.lookup('mx.alg10.test', 'A');
    const n = count();
    await r.lookup('mx.alg10.test', 'AAAA');
    await r.lookup('alg10.test', 'MX');
    await r.lookup('_25._tcp.mx.alg10.test', 'TLSA');
    await r.lookup('mx.alg10.test', 'A');
    expect(count()).toBe(n + 1);
  });

  it('a validated answer is cached (no new upstream query) and concurrent identical lookups share one flight', async () => {
    const r = t.resolver();
    const before = t.dns.queries.length;
    const all = await Promise.all(Array.from({ length: 20 }, () => r.lookup('mx.alg14.test', 'AAAA')));
    expect(all.every((a) => a.status === 'secure')).toBe(true);
    const used = t.dns.queries.length - before;
    expect(t.dns.queries.slice(before).filter((q) => q.name === 'mx.alg14.test' && q.type === 'AAAA')).toHaveLength(1);
    await r.lookup('mx.alg14.test', 'AAAA');
    expect(t.dns.queries.length - before).toBe(used);
    // negative answers are cached too
    await r.lookup('none.alg14.test', 'A');
    const n = t.dns.queries.length;
    expect((await r.lookup('none.alg14.test', 'A')).rcode).toBe('NXDOMAIN');
    expect(t.dns.queries.length).toBe(n);
  });

  it('a cached answer expires with the clock', async () => {
    let clock = Date.now();
    const r = t.resolver({ now: () => clock });
    await r.lookup('mx.alg13.test', 'A');
    const n = t.dns.queries.length;
    await r.lookup('mx.alg13.test', 'A');
    expect(t.dns.queries.length).toBe(n);
    clock += 3601_000;
    await r.lookup('mx.alg13.test', 'A');
    expect(t.dns.queries.length).toBeGreaterThan(n);
  });
});

/**
 * Regression tests for the security review of the in-process validator
 * (commit 98e0948): each forgery is built from real signed zones served over
 * loopback by test/support/signedDnsServer.ts, tampered with the way an
 * on-path attacker (or a lying upstream resolver, which in `validate` mode is
 * only transport) could, and must end as an error — never as "secure" with
 * the attacker's data, and never as "insecure" (which switches DANE off).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTree, key, mailZone, type Tree } from './fixture.js';
import { Zone, dsText, rd, wireName, type Rec } from '../support/signer.js';
import { isAnswer } from '../../src/dns/types.js';

let t: Tree;
const TYPE_SOA = 6;
const sigOver = (r: Rec, type: number) => r.type === 'RRSIG' && r.rdata.readUInt16BE(0) === type;

/** An RRSIG copied from `real` with another signer name and a garbage signature. */
function junkSig(real: Rec, signer: string): Rec {
  return { ...real, rdata: Buffer.concat([real.rdata.subarray(0, 18), wireName(signer), Buffer.alloc(64, 1)]) };
}

beforeAll(async () => {
  const dst = mailZone('dst.test', { keys: [key('rv-dst', 13)] });
  const evil = new Zone({ name: 'evil.test', keys: [key('rv-evil', 13)] });
  evil.add('mx.evil.test', 'A', rd.A('192.0.2.66'));
  evil.add('mx.dst.test.evil.test', 'A', rd.A('192.0.2.66'));
  const alias = mailZone('alias.test', { keys: [key('rv-alias', 13)] });
  alias.add('sub.alias.test', 'DNAME', rd.DNAME('dst.test'));
  alias.add('www.alias.test', 'CNAME', rd.CNAME('mx.dst.test'));
  alias.add('ins.alias.test', 'CNAME', rd.CNAME('mx.plain.test'));
  const plain = mailZone('plain.test'); // unsigned
  const island = mailZone('island.test', { keys: [key('rv-island', 13)] });
  const wc = mailZone('wc.test', { keys: [key('rv-wc', 13)] });
  wc.add('*.wc.test', 'MX', rd.MX(10, 'any.wc.test'));
  wc.add('*.b.wc.test', 'MX', rd.MX(20, 'b-only.wc.test'));
  const wco = mailZone('wco.test', { keys: [key('rv-wco', 13)], denial: { nsec3: { iterations: 0, optOut: true } } });
  wco.add('*.wco.test', 'MX', rd.MX(10, 'mx.wco.test'));
  const cut = mailZone('cut.test', { keys: [key('rv-cut', 13)] });
  const ent = mailZone('ent.test', { keys: [key('rv-ent', 13)] });
  const n3p = mailZone('n3p.test', { keys: [key('rv-n3p', 13)], denial: { nsec3: { iterations: 0 } } });
  t = await buildTree([dst, evil, alias, island, wc, wco, cut, ent, n3p, plain]);
}, 60_000);
afterAll(async () => t?.close());

async function expectError(name: string, type: 'A' | 'AAAA' | 'MX' | 'TLSA', o: { anchors?: string } = {}) {
  const { answer, trace } = await t.resolver(o).lookupTrace(name, type);
  expect(answer.error, `${name}/${type} should be an error, got ${answer.status}`).toBeDefined();
  expect(['bogus', 'indeterminate']).toContain(answer.status);
  expect(answer.records).toEqual([]);
  expect(isAnswer(answer)).toBe(false);
  return { answer, trace };
}

describe('review: forged aliases', () => {
  it('DANE-5 a class-CH DNAME placed before the signed one does not redirect the lookup (the target comes from the validated IN RRset)', async () => {
    t.dns.mutate = (q, r) => {
      if (q.name !== 'mx.sub.alias.test' || q.type !== 'A') return r;
      const d = r.answers.find((x) => x.type === 'DNAME')!;
      return { ...r, answers: [{ ...d, class: 3, rdata: wireName('evil.test') }, ...r.answers] };
    };
    try {
      const a = await t.resolver().lookup('mx.sub.alias.test', 'A');
      expect(a.error).toBeUndefined();
      expect([a.status, a.canonicalName, a.records]).toEqual(['secure', 'mx.dst.test', ['192.0.2.25']]);
      expect(a.chain.map((h) => h.target)).toEqual(['mx.dst.test']);
    } finally {
      t.dns.mutate = undefined;
    }
  });

  it('DANE-5 a class-CH CNAME next to the signed one is ignored; the signed target is followed', async () => {
    t.dns.mutate = (q, r) => {
      if (q.name !== 'www.alias.test' || q.type !== 'A') return r;
      const c = r.answers.find((x) => x.type === 'CNAME')!;
      return { ...r, answers: [{ ...c, class: 3, rdata: wireName('mx.evil.test') }, ...r.answers] };
    };
    try {
      const a = await t.resolver().lookup('www.alias.test', 'A');
      expect([a.status, a.canonicalName, a.records]).toEqual(['secure', 'mx.dst.test', ['192.0.2.25']]);
    } finally {
      t.dns.mutate = undefined;
    }
  });

  it('DANE-5 two different signed-looking DNAME targets in the IN RRset are bogus, not a choice', async () => {
    t.dns.mutate = (q, r) => {
      if (q.name !== 'mx.sub.alias.test' || q.type !== 'A') return r;
      const d = r.answers.find((x) => x.type === 'DNAME')!;
      return { ...r, answers: [{ ...d, rdata: wireName('evil.test') }, ...r.answers] };
    };
    try {
      await expectError('mx.sub.alias.test', 'A');
    } finally {
      t.dns.mutate = undefined;
    }
  });
});

describe('review: the attacker does not choose where the chain walk ends', () => {
  it('DANE-33 with an anchor below the root, a TLSA RRset with a junk RRSIG whose signer is above the anchor is bogus, not insecure', async () => {
    const anchors = dsText('island.test', t.zones.get('island.test')!.ksks[0]!);
    expect((await t.resolver({ anchors }).lookup('_25._tcp.mx.island.test', 'TLSA')).status).toBe('secure');
    t.dns.mutate = (q, r) => {
      if (q.type !== 'TLSA') return r;
      const real = r.answers.find((x) => x.type === 'RRSIG')!;
      const forged = r.answers.filter((x) => x.type === 'TLSA').map((x) => ({ ...x, rdata: rd.TLSA(3, 1, 1, Buffer.alloc(32, 0xee)) }));
      return { ...r, answers: [junkSig(real, 'test'), ...forged] };
    };
    try {
      const { answer } = await expectError('_25._tcp.mx.island.test', 'TLSA', { anchors });
      expect(answer.status).toBe('bogus');
      expect(answer.error!.message).toMatch(/no RRSIG by island\.test/);
    } finally {
      t.dns.mutate = undefined;
    }
  });

  it('DANE-32 with an anchor below the root, an NXDOMAIN whose only signature names a signer above the anchor is bogus, not an insecure denial', async () => {
    const island = t.zones.get('island.test')!;
    const anchors = dsText('island.test', island.ksks[0]!);
    const soa = island.signed.filter((x) => x.name === 'island.test' && (x.type === 'SOA' || sigOver(x, TYPE_SOA)));
    t.dns.mutate = (q, r) =>
      q.type === 'TLSA'
        ? { rcode: 3, answers: [], authorities: [...soa.filter((x) => x.type === 'SOA'), junkSig(soa.find((x) => x.type === 'RRSIG')!, 'test')] }
        : r;
    try {
      const { answer } = await expectError('_25._tcp.mx.island.test', 'TLSA', { anchors });
      expect(answer.status).toBe('bogus');
    } finally {
      t.dns.mutate = undefined;
    }
  });

  it("DANE-1 an RRSIG naming the parent zone as signer does not move the walk: the owner's zone must have signed", async () => {
    t.dns.mutate = (q, r) => {
      if (q.name !== 'mx.dst.test' || q.type !== 'A') return r;
      const real = r.answers.find((x) => x.type === 'RRSIG')!;
      return { ...r, answers: [...r.answers.filter((x) => x.type !== 'RRSIG'), junkSig(real, 'test')] };
    };
    try {
      const { answer } = await expectError('mx.dst.test', 'A');
      expect(answer.error!.message).toMatch(/no RRSIG by dst\.test/);
    } finally {
      t.dns.mutate = undefined;
    }
  });
});

describe('review: wildcard proofs', () => {
  it('DANE-1 an expansion of *.wc.test replayed for x.b.wc.test (which has its own wildcard) is bogus: RRSIG labels must match the NSEC closest encloser', async () => {
    const honest = await t.resolver().lookup('x.b.wc.test', 'MX');
    expect([honest.status, honest.records]).toEqual(['secure', [{ preference: 20, exchange: 'b-only.wc.test' }]]);
    const top = await t.resolver().lookup('x.wc.test', 'MX');
    expect([top.status, top.records]).toEqual(['secure', [{ preference: 10, exchange: 'any.wc.test' }]]);
    const wc = t.zones.get('wc.test')!;
    const replay = wc.signed.filter((x) => x.name === '*.wc.test' && (x.type === 'MX' || sigOver(x, 15))).map((x) => ({ ...x, name: 'x.b.wc.test' }));
    t.dns.mutate = (q, r) => (q.name === 'x.b.wc.test' && q.type === 'MX' ? { ...r, answers: replay } : r);
    try {
      const { answer } = await expectError('x.b.wc.test', 'MX');
      expect(answer.error!.message).toMatch(/closest encloser .*b\.wc\.test.*wildcard at wc\.test/);
    } finally {
      t.dns.mutate = undefined;
    }
  });

  it('DANE-1 a wildcard expansion whose next-closer NSEC3 is opt-out is insecure (as Unbound), not secure', async () => {
    // The walk ends at the signer wco.test; nsec3ProveWildcardAnswer finds the next closer name in an
    // opt-out span and gives insecure (reviewUnits.test.ts).
    const { answer, trace } = await t.resolver().lookupTrace('anything.wco.test', 'MX');
    expect(answer.error).toBeUndefined();
    expect([answer.status, answer.records]).toEqual(['insecure', [{ preference: 10, exchange: 'mx.wco.test' }]]);
    expect(trace.some((s) => s.result === 'insecure' && /opt-out/.test(s.detail))).toBe(true);
    expect(trace.some((s) => s.result === 'secure')).toBe(false);
  });
});

describe('review: denial of existence', () => {
  it("DANE-32 an NXDOMAIN for an empty non-terminal (the covering NSEC's next name is below it) is bogus", async () => {
    const honest = await t.resolver().lookup('_tcp.mx.ent.test', 'TLSA');
    expect([honest.rcode, honest.status]).toEqual(['NOERROR', 'secure']);
    t.dns.mutate = (q, r) => (q.name === '_tcp.mx.ent.test' && q.type === 'TLSA' ? { ...r, rcode: 3 } : r);
    try {
      const { answer } = await expectError('_tcp.mx.ent.test', 'TLSA');
      expect(answer.error!.message).toMatch(/empty non-terminal/);
    } finally {
      t.dns.mutate = undefined;
    }
  });

  it('DANE-32 an old high-iteration NSEC3 record of the same zone replayed first does not turn a provable NXDOMAIN insecure', async () => {
    const shadow = mailZone('n3p.test', { keys: [key('rv-n3p', 13)], denial: { nsec3: { iterations: 200 } } }).sign();
    const old = shadow.signed.find((x) => x.type === 'NSEC3')!;
    const oldSig = shadow.signed.find((x) => x.name === old.name && sigOver(x, 50))!;
    t.dns.mutate = (q, r) => (q.name === 'nope.n3p.test' && q.type === 'A' ? { ...r, authorities: [old, oldSig, ...r.authorities] } : r);
    try {
      const a = await t.resolver().lookup('nope.n3p.test', 'A');
      expect([a.rcode, a.status, a.error]).toEqual(['NXDOMAIN', 'secure', undefined]);
    } finally {
      t.dns.mutate = undefined;
    }
  });
});

describe('review: zone cuts', () => {
  it('DANE-1 an unsigned CNAME in a DS reply is not taken as "no zone cut", and the failed step is not cached', async () => {
    const r = t.resolver();
    t.dns.mutate = (q, rep) =>
      q.name === 'cut.test' && q.type === 'DS'
        ? { rcode: 0, answers: [{ name: 'cut.test', type: 'CNAME', ttl: 3600, rdata: wireName('elsewhere.test') }], authorities: [] }
        : rep;
    try {
      const { answer, trace } = await r.lookupTrace('mx.cut.test', 'A');
      expect(answer.status).toBe('bogus');
      expect(trace.some((s) => s.kind === 'DS' && /CNAME at this name does not validate/.test(s.detail))).toBe(true);
    } finally {
      t.dns.mutate = undefined;
    }
    // Same resolver, another name in the zone: the forged step left nothing behind.
    const a = await r.lookup('mx.cut.test', 'AAAA');
    expect([a.status, a.records]).toEqual(['secure', ['2001:db8::25']]);
  });

  it('DANE-5 a CNAME signed by the parent zone, met while walking to a signer named at its owner, is a validated "not a zone cut"', async () => {
    // The honest CNAME is signed by alias.test: the walk stops there. A second RRSIG naming the owner
    // itself as signer makes the walk go one label further, where the DS question meets the signed CNAME.
    t.dns.mutate = (q, r) => {
      if (q.name !== 'www.alias.test' || q.type !== 'A') return r;
      const real = r.answers.find((x) => x.type === 'RRSIG' && x.name === 'www.alias.test')!;
      return { ...r, answers: [junkSig(real, 'www.alias.test'), ...r.answers] };
    };
    try {
      const { answer, trace } = await t.resolver().lookupTrace('www.alias.test', 'A');
      expect([answer.status, answer.records]).toEqual(['secure', ['192.0.2.25']]);
      expect(trace.some((s) => s.kind === 'DS' && s.name === 'www.alias.test' && s.result === 'ok' && /CNAME signed by alias\.test/.test(s.detail))).toBe(true);
      expect(trace.some((s) => s.kind === 'RRSIG' && /signer www\.alias\.test is not a zone apex/.test(s.detail))).toBe(true);
    } finally {
      t.dns.mutate = undefined;
    }
  });
});

describe('review: trace', () => {
  it('DANE-1 intermediate steps are "ok"; only the answer line carries the verdict', async () => {
    const { answer, trace } = await t.resolver().lookupTrace('mx.wco.test', 'A');
    expect(answer.status).toBe('secure');
    const secure = trace.filter((s) => s.result === 'secure');
    expect(secure.map((s) => s.kind)).toEqual(['answer']);
    // A secure CNAME hop into an unsigned zone: the verdict is insecure and no line says "secure".
    const ins = await t.resolver().lookupTrace('ins.alias.test', 'A');
    expect([ins.answer.status, ins.answer.firstStatus, ins.answer.records]).toEqual(['insecure', 'secure', ['192.0.2.25']]);
    expect(ins.trace.filter((s) => s.result === 'secure')).toEqual([]);
    expect(ins.trace.some((s) => s.kind === 'alias' && s.result === 'ok')).toBe(true);
  });
});

/**
 * Where the chain of trust is walked to (RFC 4035 §5.3.1–5.3.3): from the trust anchor the OWNER lies
 * under, down to the RRSIG's SIGNER — the zone that holds the RRset — and no further. DS denials at
 * names between the zone apex and the owner (no zone cuts) are never needed for a signed answer, so
 * neither an NSEC3 chain over the iteration limit nor unsigned NSEC records in the zone can downgrade
 * (or break) it. A signer name deeper than the real zone (attacker-supplied) does not end in a zone of
 * that name and its signature does not count. Zones are signed by test/support/signer.ts and served
 * over loopback; each case was a difference against Unbound (test/interop/dnssec.interop.test.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTree, key, mailZone, type Tree } from './fixture.js';
import { rd, rrsig, type Rec } from '../support/signer.js';

let t: Tree;
const TYPE_NSEC = 47;
const sigOver = (r: Rec, type: number) => r.type === 'RRSIG' && r.rdata.readUInt16BE(0) === type;
const TLSA_OWNER = (zone: string) => `_25._tcp.mx.${zone}`;

beforeAll(async () => {
  const it151 = mailZone('it151.test', { keys: [key('wk-151', 13)], denial: { nsec3: { iterations: 151, salt: 'ab' } } });
  const unsn = mailZone('unsn.test', { keys: [key('wk-unsn', 13)] });
  const fd = mailZone('fd.test', { keys: [key('wk-fd', 13)] });
  const fd3 = mailZone('fd3.test', { keys: [key('wk-fd3', 13)], denial: { nsec3: { iterations: 0 } } });
  t = await buildTree([it151, unsn, fd, fd3]);
}, 60_000);
afterAll(async () => t?.close());

function dsQuestionsBelow(zone: string, from: number): string[] {
  return t.dns.queries
    .slice(from)
    .filter((q) => q.type === 'DS' && q.name.endsWith(`.${zone}`))
    .map((q) => q.name);
}

describe('walk to the signer: NSEC3 over the iteration limit', () => {
  it('DANE-33 a TLSA (and A) RRset below a zone whose NSEC3 has 151 iterations is secure when its RRSIG by the zone validates', async () => {
    const from = t.dns.queries.length;
    const { answer, trace } = await t.resolver().lookupTrace(TLSA_OWNER('it151.test'), 'TLSA');
    expect(answer.error).toBeUndefined();
    expect([answer.status, answer.records.length]).toEqual(['secure', 1]);
    expect(trace.some((s) => s.result === 'insecure')).toBe(false);
    const a = await t.resolver().lookup('mx.it151.test', 'A');
    expect([a.status, a.records]).toEqual(['secure', ['192.0.2.25']]);
    // The walk stopped at the signer it151.test: no DS question below it (those would meet the 151 iterations).
    expect(dsQuestionsBelow('it151.test', from)).toEqual([]);
  });

  it("DANE-32 the zone's own denial that rests on its 151-iteration NSEC3 is insecure (RFC 9276 §3.2, as Unbound)", async () => {
    const a = await t.resolver().lookup('nope.it151.test', 'A');
    expect([a.rcode, a.status, a.error]).toEqual(['NXDOMAIN', 'insecure', undefined]);
    const n = await t.resolver().lookup('mx.it151.test', 'TLSA');
    expect([n.rcode, n.status, n.records]).toEqual(['NOERROR', 'insecure', []]);
  });

  it('DANE-33 a TLSA RRset whose RRSIG by the 151-iteration zone does not verify is bogus, not insecure', async () => {
    t.dns.mutate = (q, r) => {
      if (q.name !== TLSA_OWNER('it151.test') || q.type !== 'TLSA') return r;
      return {
        ...r,
        answers: r.answers.map((x) => (x.type === 'TLSA' ? { ...x, rdata: rd.TLSA(3, 1, 1, Buffer.alloc(32, 0xee)) } : x)),
      };
    };
    try {
      const { answer } = await t.resolver().lookupTrace(TLSA_OWNER('it151.test'), 'TLSA');
      expect([answer.status, answer.records]).toEqual(['bogus', []]);
      expect(answer.error).toBeDefined();
    } finally {
      t.dns.mutate = undefined;
    }
  });
});

describe('walk to the signer: a zone serving unsigned NSEC records', () => {
  const stripNsecSigs = () => {
    t.dns.mutate = (q, r) =>
      q.name === 'unsn.test' || q.name.endsWith('.unsn.test') ? { ...r, authorities: r.authorities.filter((x) => !sigOver(x, TYPE_NSEC)) } : r;
  };

  it('DANE-33 signed positive answers still validate (no DS denial below the apex is asked for)', async () => {
    stripNsecSigs();
    try {
      const from = t.dns.queries.length;
      const tlsa = await t.resolver().lookup(TLSA_OWNER('unsn.test'), 'TLSA');
      expect([tlsa.status, tlsa.records.length, tlsa.error]).toEqual(['secure', 1, undefined]);
      const a = await t.resolver().lookup('mx.unsn.test', 'A');
      expect([a.status, a.records]).toEqual(['secure', ['192.0.2.25']]);
      expect(dsQuestionsBelow('unsn.test', from)).toEqual([]);
    } finally {
      t.dns.mutate = undefined;
    }
  });

  it('DANE-32 its denials, which need those NSEC records, are bogus', async () => {
    stripNsecSigs();
    try {
      const a = await t.resolver().lookup('nope.unsn.test', 'A');
      expect([a.status, a.records]).toEqual(['bogus', []]);
      const n = await t.resolver().lookup('mx.unsn.test', 'TLSA');
      expect(n.status).toBe('bogus');
    } finally {
      t.dns.mutate = undefined;
    }
  });
});

describe('walk to the signer: a forged signer deeper than the real zone', () => {
  const evil = key('wk-evil', 13);
  for (const zone of ['fd.test', 'fd3.test']) {
    for (const signer of [`_tcp.mx.${zone}`, `mx.${zone}`, TLSA_OWNER(zone)]) {
      it(`DANE-33 a forged TLSA signed by an attacker's key with signer ${signer} does not validate (${zone === 'fd.test' ? 'NSEC' : 'NSEC3'} zone)`, async () => {
        const z = t.zones.get(zone)!;
        const owner = TLSA_OWNER(zone);
        const forged: Rec[] = [{ name: owner, type: 'TLSA', ttl: 3600, rdata: rd.TLSA(3, 1, 1, Buffer.alloc(32, 0xee)) }];
        const sig = rrsig(forged, evil, signer, z.sig);
        const dnskey: Rec[] = [{ name: signer, type: 'DNSKEY', ttl: 3600, rdata: evil.rdata }];
        t.dns.mutate = (q, r) => {
          if (q.name === owner && q.type === 'TLSA') return { ...r, answers: [...forged, sig] };
          // The attacker also answers for the forged zone's keys (the walk should never ask).
          if (q.name === signer && q.type === 'DNSKEY') return { rcode: 0, answers: [...dnskey, rrsig(dnskey, evil, signer, z.sig)], authorities: [] };
          return r;
        };
        try {
          const { answer, trace } = await t.resolver().lookupTrace(owner, 'TLSA');
          expect([answer.status, answer.records]).toEqual(['bogus', []]);
          expect(answer.error!.message).toMatch(new RegExp(`no RRSIG by ${zone.replace(/\./g, '\\.')}`));
          expect(trace.some((s) => s.kind === 'RRSIG' && s.detail.includes(`signer ${signer} is not a zone apex (the chain of trust ends in ${zone})`))).toBe(
            true,
          );
          expect(t.dns.queries.some((q) => q.name === signer && q.type === 'DNSKEY')).toBe(false);
        } finally {
          t.dns.mutate = undefined;
        }
      });
    }
  }

  it('DANE-33 the honest RRSIG next to a forged deeper one still validates the honest RRset', async () => {
    const owner = TLSA_OWNER('fd.test');
    const z = t.zones.get('fd.test')!;
    t.dns.mutate = (q, r) => {
      if (q.name !== owner || q.type !== 'TLSA') return r;
      const tlsa = r.answers.filter((x) => x.type === 'TLSA');
      return { ...r, answers: [rrsig(tlsa, evil, `_tcp.mx.fd.test`, z.sig), ...r.answers] };
    };
    try {
      const a = await t.resolver().lookup(owner, 'TLSA');
      expect([a.status, a.records.length, a.error]).toEqual(['secure', 1, undefined]);
    } finally {
      t.dns.mutate = undefined;
    }
  });
});

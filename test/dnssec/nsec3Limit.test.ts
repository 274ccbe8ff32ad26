/**
 * Issue 13, defect 6: NSEC3 over the iteration limit (RFC 9276 §3.2) must not turn a forged denial
 * into "insecure". The proof is checked in full — closest encloser, next closer, wildcard, signatures —
 * and only a proof that passes is insecure, with the reason `nsec3-iterations` (which DANE treats as a
 * lookup failure, route/host.ts). Each attack below uses GENUINE signed high-iteration NSEC3 records of
 * the zone (taken from a real reply for another name), replayed by an on-path attacker: with the old
 * code every one of them was "insecure"; now each is bogus.
 *
 * Zones are signed by test/support/signer.ts and served over loopback (test/support/signedDnsServer.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTree, key, mailZone, type Tree } from './fixture.js';
import { rd, type Rec } from '../support/signer.js';
import { ZoneSet, type Reply } from '../support/signedDnsServer.js';
import { isAnswer } from '../../src/dns/types.js';
import { MAX_NSEC3_ITERATIONS } from '../../src/dnssec/budget.js';

let t: Tree;
const ZONE = 'hi.test';
const ITER = 200; // over MAX_NSEC3_ITERATIONS (150)
const TLSA_OWNER = `_25._tcp.mx.${ZONE}`;

beforeAll(async () => {
  const hi = mailZone(ZONE, { keys: [key('n3lim-hi', 13)], denial: { nsec3: { iterations: ITER, salt: 'c0ffee' } } });
  hi.add(`mx2.${ZONE}`, 'A', rd.A('192.0.2.26')); // a host without TLSA: its TLSA denial is genuine
  hi.add(`*.w.${ZONE}`, 'MX', rd.MX(10, `mx.${ZONE}`));
  hi.add(`real.w.${ZONE}`, 'MX', rd.MX(10, `mx2.${ZONE}`));
  const huge = mailZone('huge.test', { keys: [key('n3lim-huge', 13)], denial: { nsec3: { iterations: 25_000 } } });
  const hiOut = mailZone('hiout.test', { keys: [key('n3lim-out', 13)], denial: { nsec3: { iterations: ITER, optOut: true } } });
  t = await buildTree([hi, huge, hiOut]);
  // The test server hashes names for its proofs; 25,000 iterations take a while: do it once here,
  // not inside the validator's lookup timeout (the hashes are memoised by test/support/signer.ts).
  genuine('nope.huge.test', 'A');
}, 60_000);
afterAll(async () => t?.close());

/** What the zone really answers for (name, type): the source of the attacker's genuine records. */
function genuine(name: string, type: string): Reply {
  return new ZoneSet(t.dns.zones).resolve(name, type, true);
}
const nsec3Of = (r: Reply): Rec[] => r.authorities.filter((x) => x.type === 'NSEC3' || (x.type === 'RRSIG' && x.rdata.readUInt16BE(0) === 50));
const soaOf = (r: Reply): Rec[] => r.authorities.filter((x) => x.type === 'SOA' || (x.type === 'RRSIG' && x.rdata.readUInt16BE(0) === 6));

async function lookup(name: string, type: 'A' | 'AAAA' | 'MX' | 'TLSA') {
  return t.resolver().lookupTrace(name, type);
}

describe('issue13 defect 6: NSEC3 over the iteration limit is checked before it is insecure', () => {
  it(`the zone really uses ${ITER} iterations (over ${MAX_NSEC3_ITERATIONS})`, () => {
    const n3 = nsec3Of(genuine(`nope.${ZONE}`, 'A')).find((r) => r.type === 'NSEC3')!;
    expect(n3.rdata.readUInt16BE(2)).toBe(ITER);
  });

  it('issue13-downgrade nsec3-iterations denial: DANE-32 NODATA for an existing TLSA RRset with genuine high-iteration NSEC3 that do not cover the name is bogus, not insecure', async () => {
    const replay = genuine(`nope.${ZONE}`, 'A'); // a real NXDOMAIN proof for another name
    t.dns.mutate = (q, r) => (q.name === TLSA_OWNER && q.type === 'TLSA' ? { rcode: 0, answers: [], authorities: [...soaOf(replay), ...nsec3Of(replay)] } : r);
    try {
      const { answer, trace } = await lookup(TLSA_OWNER, 'TLSA');
      expect([answer.status, answer.records, isAnswer(answer)]).toEqual(['bogus', [], false]);
      expect(answer.error!.message).toMatch(/not proven/);
      expect(answer.insecureReason).toBeUndefined();
      expect(trace.some((s) => s.result === 'insecure')).toBe(false);
    } finally {
      t.dns.mutate = undefined;
    }
  });

  it('issue13-downgrade nsec3-iterations denial: DANE-20 a forged NXDOMAIN for the MX host (AAAA and A) with replayed high-iteration NSEC3 is bogus', async () => {
    const replay = genuine(`nope.${ZONE}`, 'A');
    t.dns.mutate = (q, r) =>
      q.name === `mx.${ZONE}` && (q.type === 'A' || q.type === 'AAAA') ? { rcode: 3, answers: [], authorities: [...soaOf(replay), ...nsec3Of(replay)] } : r;
    try {
      for (const type of ['A', 'AAAA'] as const) {
        const { answer } = await lookup(`mx.${ZONE}`, type);
        expect([type, answer.status, answer.records]).toEqual([type, 'bogus', []]);
      }
    } finally {
      t.dns.mutate = undefined;
    }
  });

  it('issue13-downgrade nsec3-iterations cut: DANE-33 forged unsigned TLSA records plus a replayed high-iteration "no DS" for mx.hi.test are bogus (the walk checks the cut proof)', async () => {
    const replay = genuine(`nope.${ZONE}`, 'A');
    t.dns.mutate = (q, r) => {
      if (q.name === TLSA_OWNER && q.type === 'TLSA') {
        return { rcode: 0, answers: [{ name: TLSA_OWNER, type: 'TLSA', ttl: 300, rdata: rd.TLSA(3, 1, 1, Buffer.alloc(32, 0xee)) }], authorities: [] };
      }
      if (q.type === 'DS' && q.name.endsWith(`.${ZONE}`)) return { rcode: 0, answers: [], authorities: [...soaOf(replay), ...nsec3Of(replay)] };
      return r;
    };
    try {
      const { answer, trace } = await lookup(TLSA_OWNER, 'TLSA');
      expect([answer.status, answer.records]).toEqual(['bogus', []]);
      expect(trace.some((s) => s.kind === 'DS' && s.result === 'bogus' && /proof checked in full|no NSEC3 covers/.test(s.detail))).toBe(true);
    } finally {
      t.dns.mutate = undefined;
    }
  });

  it('issue13-downgrade nsec3-iterations wildcard: DANE-12 a replayed wildcard expansion for a name that exists (real.w) with high-iteration NSEC3 is bogus', async () => {
    const other = genuine(`other.w.${ZONE}`, 'MX'); // a genuine wildcard answer: its RRset, RRSIG and proof
    const realName = `real.w.${ZONE}`;
    t.dns.mutate = (q, r) => {
      if (q.name !== realName || q.type !== 'MX') return r;
      return { rcode: 0, answers: other.answers.map((x) => ({ ...x, name: realName })), authorities: other.authorities };
    };
    try {
      const { answer } = await lookup(realName, 'MX');
      expect([answer.status, answer.records]).toEqual(['bogus', []]);
    } finally {
      t.dns.mutate = undefined;
    }
    // Without the attacker: the real RRset, secure; the genuine expansion for other.w: insecure by the limit.
    const real = await t.resolver().lookup(realName, 'MX');
    expect([real.status, real.records]).toEqual(['secure', [{ preference: 10, exchange: `mx2.${ZONE}` }]]);
    const wild = await t.resolver().lookup(`other.w.${ZONE}`, 'MX');
    expect([wild.status, wild.insecureReason, wild.records.length]).toEqual(['insecure', 'nsec3-iterations', 1]);
  });

  it('DANE-32 a genuine high-iteration denial is insecure with the reason nsec3-iterations (TLSA NXDOMAIN, NODATA, MX host AAAA)', async () => {
    const r = t.resolver();
    const tlsa = await r.lookup(`_25._tcp.mx2.${ZONE}`, 'TLSA');
    expect([tlsa.rcode, tlsa.status, tlsa.insecureReason, tlsa.error]).toEqual(['NXDOMAIN', 'insecure', 'nsec3-iterations', undefined]);
    const nodata = await r.lookup(`mx2.${ZONE}`, 'AAAA');
    expect([nodata.rcode, nodata.status, nodata.insecureReason]).toEqual(['NOERROR', 'insecure', 'nsec3-iterations']);
    // Positive answers signed by the zone are secure whatever its NSEC3 parameters.
    const tl = await r.lookup(TLSA_OWNER, 'TLSA');
    expect([tl.status, tl.insecureReason, tl.records.length]).toEqual(['secure', undefined, 1]);
  });

  it('DANE-32 an opt-out span over the limit is insecure for opt-out (a checked proof), not for the iteration count', async () => {
    const nx = await t.resolver().lookup('nothing.hiout.test', 'A');
    expect([nx.rcode, nx.status, nx.insecureReason]).toEqual(['NXDOMAIN', 'insecure', 'opt-out']);
  });

  it('DANE-32 a chain of 25,000 iterations is indeterminate: one hash of it costs more than the NSEC3 hash-round budget (CVE-2023-50868)', async () => {
    const { answer, trace } = await lookup('nope.huge.test', 'A');
    expect([answer.status, answer.error?.kind]).toEqual(['indeterminate', 'indeterminate']);
    expect(answer.error!.message).toMatch(/NSEC3 hash rounds/);
    expect(trace.some((s) => s.result === 'insecure')).toBe(false);
  });
});

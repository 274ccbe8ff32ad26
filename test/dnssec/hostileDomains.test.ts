/**
 * Issue 22: a domain anyone can register and sign costs bounded work per message — an MX host cap,
 * a per-plan work budget, validation that yields in slices, and a bad-key cache that cannot keep a
 * fixed zone bogus longer than BOGUS_TTL. Real signed zones on loopback; every assertion is on counts
 * (hashes, verifications, hosts planned, yields), never on time.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTree, key, type Tree } from './fixture.js';
import { Zone, rd, TYPE } from '../support/signer.js';
import { Budget, MAX_NSEC3_HASH_ROUNDS, YIELD_EVERY } from '../../src/dnssec/budget.js';
import { Nsec3Set, base32hexEncode, nsec3Hash } from '../../src/dnssec/nsec3.js';
import { BOGUS_TTL } from '../../src/dns/front.js';
import { capHosts, decideMx, DEFAULT_MX_HOST_LIMIT } from '../../src/route/mx.js';
import { lookupMx } from '../../src/route/nexthop.js';
import { PlanBudget, PLAN_MAX_NSEC3_ROUNDS } from '../../src/route/budget.js';
import { inspectDomain, type InspectDeps } from '../../src/check/inspect.js';
import { formatReport } from '../../src/check/format.js';
import { usableAnswer } from '../../src/dns/types.js';

const FLOOD_ZONES = 12;
/** A nonexistent name of ~100 labels: its NXDOMAIN proof hashes every ancestor (RFC 5155 §8.3). */
const longName = (zone: string): string => `${Array.from({ length: 100 }, (_, i) => String.fromCharCode(97 + (i % 26))).join('.')}.${zone}`;

let t: Tree;
let badkey: Zone;

beforeAll(async () => {
  // Eight honest MX hosts of one preference (no addresses: each is planned, then skipped without a connection).
  const many = new Zone({ name: 'many.test', keys: [key('many', 13)] });
  for (let i = 0; i < 8; i++) many.add('many.test', 'MX', rd.MX(10, `mx${i}.many.test`));
  for (let i = 0; i < 8; i++) many.add(`mx${i}.many.test`, 'TXT', rd.TXT('no address'));
  // The attack: FLOOD_ZONES MX hosts, each a long nonexistent name in its own NSEC3-150 zone.
  const flood = new Zone({ name: 'flood.test', keys: [key('flood', 13)] });
  const zones: Zone[] = [many, flood];
  for (let i = 0; i < FLOOD_ZONES; i++) {
    const z = new Zone({ name: `z${i}.test`, keys: [key('flood-z', 13)], denial: { nsec3: { iterations: 150, salt: 'ab' } } });
    zones.push(z);
    flood.add('flood.test', 'MX', rd.MX(10 + i, longName(`z${i}.test`)));
  }
  // A zone whose DNSKEY RRset signature is broken (the bad key set of issue 22 item 3).
  badkey = new Zone({ name: 'badkey.test', keys: [key('bad-ksk', 13), key('bad-zsk', 13, 256)] });
  badkey.add('badkey.test', 'MX', rd.MX(10, 'mx.badkey.test'));
  badkey.add('mx.badkey.test', 'A', rd.A('127.0.0.1'));
  zones.push(badkey);
  t = await buildTree(zones);
  breakDnskeySignature();
}, 120_000);
afterAll(async () => t?.close());

/** Corrupt the RRSIG over badkey.test's DNSKEY RRset: every check of it is one failing verification. */
function breakDnskeySignature(): void {
  const sig = badkey.signed.find((r) => r.type === 'RRSIG' && r.rdata.readUInt16BE(0) === TYPE.DNSKEY)!;
  sig.rdata = Buffer.from(sig.rdata);
  sig.rdata[sig.rdata.length - 1]! ^= 0xff;
}

function inspectDeps(resolver: InspectDeps['resolver'], mxHostLimit?: number): InspectDeps {
  return {
    resolver,
    selfNames: ['relay.invalid'],
    heloName: 'relay.invalid',
    port: 25,
    digestPreference: ['sha512', 'sha256'],
    now: Date.now,
    diagnose: false,
    timeouts: { connect: 1000, greeting: 1000, ehlo: 1000, starttls: 1000, mail: 1000, rcpt: 1000, data: 1000, data_block: 1000, data_done: 1000 },
    ...(mxHostLimit !== undefined ? { mxHostLimit } : {}),
  };
}

const policy = { level: 'dane' as const, rule: 'test' };

describe('issue 22: MX host cap (delivery.mx_host_limit)', () => {
  it('caps after ordering: every better preference is kept, the random order within one decides the rest', () => {
    const records = [30, 10, 20, 10, 10, 20, 40].map((p, i) => ({ preference: p, exchange: `h${i}.example` }));
    const answer = usableAnswer(
      { qname: 'example', qtype: 'MX', rcode: 'NOERROR', canonicalName: 'example', chain: [], records, ttl: 60 },
      'secure',
      'secure',
      undefined,
    );
    let seed = 7;
    const rand = (): number => (seed = (seed * 48271) % 2147483647) / 2147483647;
    for (let run = 0; run < 20; run++) {
      const d = capHosts(decideMx('example', answer, [], rand), 4);
      if (d.kind !== 'hosts') throw new Error('hosts expected');
      expect(d.hosts.map((h) => h.preference)).toEqual([10, 10, 10, 20]);
      expect(d.notTried).toHaveLength(3);
      expect(new Set([...d.hosts.map((h) => h.host), ...d.notTried!]).size).toBe(7);
    }
    expect(capHosts(decideMx('example', answer, [], rand), 0)).not.toHaveProperty('notTried');
    expect(DEFAULT_MX_HOST_LIMIT).toBe(5);
  });

  it('plans at most the limit: 5 of 8 hosts are looked up, the other 3 never, and check lists them', async () => {
    const r = t.resolver();
    const before = t.dns.queries.length;
    const report = await inspectDomain('many.test', policy, inspectDeps(r));
    expect(report.hosts).toHaveLength(DEFAULT_MX_HOST_LIMIT);
    expect(report.mx.notTried).toHaveLength(8 - DEFAULT_MX_HOST_LIMIT);
    const asked = new Set(
      t.dns.queries
        .slice(before)
        .filter((q) => q.type === 'A')
        .map((q) => q.name.toLowerCase().replace(/\.$/, '')),
    );
    for (const h of report.mx.notTried!) expect(asked.has(h), h).toBe(false);
    for (const h of report.hosts) expect(asked.has(h.host), h.host).toBe(true);
    expect(formatReport(report, [])).toContain(`not tried (beyond delivery.mx_host_limit): ${report.mx.notTried!.join(', ')}`);
    expect(report.verdict.kind).toBe('defer');
    const all = await inspectDomain('many.test', policy, inspectDeps(t.resolver(), 0));
    expect([all.hosts.length, all.mx.notTried]).toEqual([8, undefined]);
  });
});

describe('issue 22: the work budget of one destination plan', () => {
  it(`${FLOOD_ZONES} hosts in NSEC3-150 zones, no host cap: planning stops once the plan's NSEC3 rounds are spent; deferred, said by check`, async () => {
    const r = t.resolver();
    const plan = new PlanBudget(r, 'flood.test');
    const mx = await lookupMx(plan, 'flood.test', [], 0);
    expect(mx.kind === 'hosts' && mx.hosts.length).toBe(FLOOD_ZONES);
    const report = await inspectDomain('flood.test', policy, inspectDeps(t.resolver(), 0));
    expect(report.budget?.reason).toMatch(/^DNSSEC work budget for flood\.test spent \(more than \d+ NSEC3 hash rounds/);
    const planned = report.hosts.length;
    expect(planned).toBeGreaterThan(0);
    expect(planned).toBeLessThan(FLOOD_ZONES);
    expect(report.budget!.notPlanned).toHaveLength(FLOOD_ZONES - planned);
    expect(report.verdict).toMatchObject({ kind: 'defer' });
    expect(report.verdict.detail).toContain('DNSSEC work budget for flood.test spent');
    expect(formatReport(report, [])).toContain('work budget spent (deferred 4.4.3)');
    // Each host costs two concurrent lookups (A, AAAA), each bounded by its own budget: the plan costs
    // at most its limit plus the two lookups that were running when it was passed.
    const again = new PlanBudget(t.resolver(), 'flood.test');
    const m2 = await lookupMx(again, 'flood.test', [], 0);
    if (m2.kind !== 'hosts') throw new Error('hosts expected');
    for (const h of m2.hosts) {
      if (again.exhausted) break;
      await Promise.all([again.lookup(h.host, 'A'), again.lookup(h.host, 'AAAA')]);
    }
    expect(again.exhausted).toBeDefined();
    expect(again.spent.nsec3Rounds).toBeGreaterThan(PLAN_MAX_NSEC3_ROUNDS);
    expect(again.spent.nsec3Rounds).toBeLessThanOrEqual(PLAN_MAX_NSEC3_ROUNDS + 2 * MAX_NSEC3_HASH_ROUNDS);
    const refused = await again.lookup('mx0.many.test', 'A');
    expect([refused.status, refused.error?.kind]).toEqual(['indeterminate', 'budget']);
  });
});

describe('issue 22: validation yields in slices', () => {
  it(`Nsec3Set.prepare hashes a 100-label name's ancestors, yielding after every ${YIELD_EVERY} hashes`, async () => {
    const zone = 'example.com';
    const h = nsec3Hash('example.com', Buffer.from('ab', 'hex'), 150);
    const next = Buffer.from(h);
    next[19] = (next[19]! + 1) & 0xff;
    const apex = {
      owner: `${base32hexEncode(h)}.${zone}`,
      nsec3: { hashAlgorithm: 1, flags: 0, iterations: 150, salt: Buffer.from('ab', 'hex'), nextHash: next, types: new Set([TYPE.SOA]) },
    };
    const budget = new Budget();
    const s = new Nsec3Set([apex], zone, budget);
    await s.prepare(longName(zone));
    // The 99 proper ancestors below the apex, then the apex, whose hash matches: 100 hashes, a yield before
    // the 9th, the 17th, ... (one per 8 after the first 8).
    expect(budget.nsec3Hashes).toBe(100);
    expect(budget.yields).toBe(Math.floor((100 - 1) / YIELD_EVERY));
    await s.prepare(longName(zone)); // memoised: no new work, no yield
    expect([budget.nsec3Hashes, budget.yields]).toEqual([100, 12]);
  });

  it('an NXDOMAIN proof over NSEC3-150 for a long name reports its yields: never more than 8 expensive operations between two', async () => {
    const r = t.resolver();
    const a = await r.lookup(longName('z0.test'), 'A');
    expect([a.status, a.rcode]).toEqual(['secure', 'NXDOMAIN']); // 150 iterations: at the limit, still secure
    const w = a.work!;
    expect(w.nsec3Hashes).toBeGreaterThan(90);
    // Every verification and every prepared hash passes Budget.pace; at most 3 hashes per proof are computed
    // synchronously afterwards (the name, the next closer, the wildcard).
    expect(w.yields).toBeGreaterThanOrEqual(Math.floor((w.verifications + w.nsec3Hashes - 3 - 1) / YIELD_EVERY));
    const cached = await r.lookup(longName('z0.test'), 'A');
    expect(cached.work).toBeUndefined(); // from the answer cache: no work
  });
});

describe('issue 22: bad keys are cached for BOGUS_TTL, and no longer', () => {
  it('a broken DNSKEY signature is checked once, not per name below it; re-signed, the zone is secure BOGUS_TTL after the failure at the latest', async () => {
    let clock = Date.now();
    const r = t.resolver({ now: () => clock });
    const first = await r.lookup('a1.badkey.test', 'A');
    expect(first.status).toBe('bogus');
    // New names below the zone: only badkey.test's DS RRset (valid; the failed step is not cached) is verified
    // again, once per walk to the zone (for the signer, then for the owner); the key set is not.
    for (const n of ['a2', 'a3', 'a4']) {
      const { answer, trace } = await r.lookupTrace(`${n}.badkey.test`, 'A');
      expect(answer.status, n).toBe('bogus');
      expect(answer.work!.verifications, n).toBeLessThanOrEqual(2);
      expect(answer.work!.verifications, n).toBeLessThan(first.work!.verifications);
      expect(
        trace.some((s) => s.kind === 'DNSKEY' && /the same key set failed/.test(s.detail)),
        n,
      ).toBe(true);
    }
    // Half-way through BOGUS_TTL a new name is bogus from the remembered key set; its answer is kept only as long.
    clock += (BOGUS_TTL / 2) * 1000;
    const mid = await r.lookup('mx.badkey.test', 'A');
    expect(mid.status).toBe('bogus');
    expect(mid.work!.verifications).toBeLessThanOrEqual(2);
    expect(mid.status === 'bogus' && mid.retryAfter).toBeLessThanOrEqual(BOGUS_TTL / 2);
    // The zone is re-signed (same keys, same DS); once BOGUS_TTL has passed since the failure, nothing bogus is left.
    t.resign();
    clock += (BOGUS_TTL / 2 + 1) * 1000;
    const fixed = await r.lookup('mx.badkey.test', 'A');
    expect([fixed.status, fixed.records]).toEqual(['secure', ['127.0.0.1']]);
    breakDnskeySignature();
  });
});

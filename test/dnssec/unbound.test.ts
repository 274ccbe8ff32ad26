/**
 * Differential test against Unbound 1.17 on loopback, validating the same
 * signed zones: it proves the test signer makes zones a real validator
 * accepts (and rejects the broken ones), and that our verdicts agree with
 * Unbound's on every case both can judge (secure → AD, bogus → SERVFAIL).
 *
 * Unbound is a test dependency (Debian package `unbound`, installed by the
 * README's/CI's test command): without it this file FAILS with that message
 * instead of silently skipping. `DANE_RELAY_NO_UNBOUND=1` skips it on purpose
 * (a developer machine without root); CI must never set it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTree, key, mailZone, type Tree } from './fixture.js';
import { rd, type Zone } from '../support/signer.js';
import { startUnbound, unboundAvailable, type Unbound } from '../support/unbound.js';
import { StubResolver } from '../../src/dns/stub.js';
import type { QueryType } from '../../src/dns/types.js';

const now = Math.floor(Date.now() / 1000);
let t: Tree;
let ub: Unbound;
const optedOut = process.env.DANE_RELAY_NO_UNBOUND === '1';
const have = optedOut ? false : unboundAvailable();

beforeAll(async () => {
  if (optedOut) return;
  if (!have) {
    throw new Error(
      'unbound is not installed: `apt-get install unbound` (the test command does), or set DANE_RELAY_NO_UNBOUND=1 to skip this differential test on purpose',
    );
  }
  const zones: Zone[] = [];
  for (const alg of [5, 7, 8, 10, 13, 14, 15, 16]) zones.push(mailZone(`u${alg}.test`, { keys: [key(`u${alg}`, alg)] }));
  zones.push(mailZone('un3.test', { keys: [key('un3', 13)], denial: { nsec3: { iterations: 5, salt: 'beef' } } }));
  zones.push(mailZone('uopt.test', { keys: [key('uopt', 13)], denial: { nsec3: { iterations: 0, optOut: true } } }));
  zones.push(mailZone('island.uopt.test'));
  zones.push(mailZone('uplain.test'));
  const w = mailZone('uwild.test', { keys: [key('uwild', 15)] });
  w.add('*.uwild.test', 'MX', rd.MX(1, 'mx.uwild.test'));
  zones.push(w);
  // Wildcard in an NSEC3 opt-out zone: insecure for both (Unbound's nsec3_prove_wildcard).
  const wo = mailZone('uwo.test', { keys: [key('uwo', 13)], denial: { nsec3: { iterations: 0, optOut: true } } });
  wo.add('*.uwo.test', 'MX', rd.MX(1, 'mx.uwo.test'));
  zones.push(wo);
  // Two wildcards, one below the other.
  const w2 = mailZone('uwild2.test', { keys: [key('uwild2', 13)] });
  w2.add('*.uwild2.test', 'MX', rd.MX(1, 'top.uwild2.test'));
  w2.add('*.b.uwild2.test', 'MX', rd.MX(2, 'b.uwild2.test'));
  zones.push(w2);
  // Expired three days ago: Unbound tolerates up to val-sig-skew-max (1 day) past expiry, we only CLOCK_SKEW_SECONDS.
  zones.push(mailZone('uexp.test', { keys: [key('uexp', 13)], inception: now - 20 * 86400, expiration: now - 3 * 86400 }));
  t = await buildTree(zones);
  ub = await startUnbound({ anchors: t.anchors, upstreamPort: t.dns.port });
}, 60_000);
afterAll(async () => {
  await ub?.close();
  await t?.close();
});

describe.skipIf(optedOut)('validator vs Unbound', () => {
  const cases: Array<[string, QueryType]> = [
    ...[5, 7, 8, 10, 13, 14, 15, 16].flatMap(
      (a) =>
        [
          [`u${a}.test`, 'MX'],
          [`_25._tcp.mx.u${a}.test`, 'TLSA'],
        ] as Array<[string, QueryType]>,
    ),
    ['nope.u13.test', 'A'],
    ['mx.u13.test', 'TXT'],
    ['nope.un3.test', 'A'],
    ['mx.un3.test', 'TLSA'],
    ['_tcp.mx.un3.test', 'TLSA'],
    ['mx.island.uopt.test', 'A'],
    ['mx.uplain.test', 'A'],
    ['x.uwild.test', 'MX'],
    ['x.uwild.test', 'A'],
    ['mx.uexp.test', 'A'],
    ['x.uwo.test', 'MX'],
    ['x.b.uwild2.test', 'MX'],
    ['x.uwild2.test', 'MX'],
    ['nope.uwo.test', 'A'],
  ];
  it('DANE-1 same verdict as Unbound for every algorithm, proof type, insecure and bogus case', async () => {
    const unbound = new StubResolver({ servers: [ub.server], timeoutMs: 3000, attempts: 1, cache: false });
    const ours = t.resolver();
    try {
      for (const [name, type] of cases) {
        const u = await unbound.lookup(name, type);
        const o = await ours.lookup(name, type);
        const verdict = (a: typeof o) => (a.error ? 'error' : a.status);
        // Unbound with SERVFAIL = bogus; AD = secure; no AD = insecure.
        expect([name, type, verdict(o), o.rcode === '' ? 'SERVFAIL' : o.error ? 'SERVFAIL' : o.rcode, o.records]).toEqual([
          name,
          type,
          verdict(u),
          u.error ? 'SERVFAIL' : u.rcode,
          u.records,
        ]);
      }
    } finally {
      await unbound.close();
    }
  });
});

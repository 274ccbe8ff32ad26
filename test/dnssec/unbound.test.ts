/**
 * Differential test against Unbound 1.17 on loopback, validating the same
 * signed zones: it proves the test signer makes zones a real validator
 * accepts (and rejects the broken ones), and that our verdicts agree with
 * Unbound's on every case both can judge (secure → AD, bogus → SERVFAIL).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTree, key, mailZone, type Tree } from './fixture.js';
import { rd, Zone } from '../support/signer.js';
import { startUnbound, unboundAvailable, type Unbound } from '../support/unbound.js';
import { StubResolver } from '../../src/dns/stub.js';
import type { QueryType } from '../../src/dns/types.js';

const now = Math.floor(Date.now() / 1000);
let t: Tree;
let ub: Unbound;
const have = unboundAvailable();

beforeAll(async () => {
  if (!have) return;
  const zones: Zone[] = [];
  for (const alg of [5, 7, 8, 10, 13, 14, 15, 16]) zones.push(mailZone(`u${alg}.test`, { keys: [key(`u${alg}`, alg)] }));
  zones.push(mailZone('un3.test', { keys: [key('un3', 13)], denial: { nsec3: { iterations: 5, salt: 'beef' } } }));
  zones.push(mailZone('uopt.test', { keys: [key('uopt', 13)], denial: { nsec3: { iterations: 0, optOut: true } } }));
  zones.push(mailZone('island.uopt.test'));
  zones.push(mailZone('uplain.test'));
  const w = mailZone('uwild.test', { keys: [key('uwild', 15)] });
  w.add('*.uwild.test', 'MX', rd.MX(1, 'mx.uwild.test'));
  zones.push(w);
  // Expired three days ago: Unbound tolerates up to val-sig-skew-max (1 day) past expiry, we only CLOCK_SKEW_SECONDS.
  zones.push(mailZone('uexp.test', { keys: [key('uexp', 13)], inception: now - 20 * 86400, expiration: now - 3 * 86400 }));
  t = await buildTree(zones);
  ub = await startUnbound({ anchors: t.anchors, upstreamPort: t.dns.port });
}, 60_000);
afterAll(async () => {
  await ub?.close();
  await t?.close();
});

describe.skipIf(!have)('validator vs Unbound', () => {
  const cases: Array<[string, QueryType]> = [
    ...[5, 7, 8, 10, 13, 14, 15, 16].flatMap((a) => [[`u${a}.test`, 'MX'], [`_25._tcp.mx.u${a}.test`, 'TLSA']] as Array<[string, QueryType]>),
    ['nope.u13.test', 'A'], ['mx.u13.test', 'TXT'], ['nope.un3.test', 'A'], ['mx.un3.test', 'TLSA'], ['_tcp.mx.un3.test', 'TLSA'],
    ['mx.island.uopt.test', 'A'], ['mx.uplain.test', 'A'], ['x.uwild.test', 'MX'], ['x.uwild.test', 'A'], ['mx.uexp.test', 'A'],
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
          name, type, verdict(u), u.error ? 'SERVFAIL' : u.rcode, u.records,
        ]);
      }
    } finally {
      await unbound.close();
    }
  });
});

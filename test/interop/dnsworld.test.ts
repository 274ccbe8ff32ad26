/**
 * The private DNSSEC world itself: Unbound, anchored at our private root, validates what it must
 * and rejects what it must, zone by zone (the ground truth later suites compare against).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { standardZones, startDnsWorld, type DnsWorld } from './support/dnsworld.js';

let w: DnsWorld;
beforeAll(async () => {
  w = await startDnsWorld({ zones: standardZones() });
});
afterAll(async () => {
  await w?.stop();
});

describe('dnsworld: nsd + unbound under a private root', () => {
  it('DANE-1 every zone validates as expected: secure → AD, insecure → no AD, bogus → SERVFAIL', async () => {
    const seen: Record<string, string> = {};
    const want: Record<string, string> = {};
    for (const [zone, info] of Object.entries(w.names)) {
      if (zone === '.' || !zone.includes('.') || zone.startsWith('badsig.')) continue;
      const a = await w.query(`txt.${zone}`, 'TXT');
      seen[zone] =
        a.rcode === 'SERVFAIL'
          ? 'bogus'
          : a.ad && a.answers.some((r) => r.type === 'TXT')
            ? 'secure'
            : a.answers.some((r) => r.type === 'TXT')
              ? 'insecure'
              : `${a.rcode} without data`;
      want[zone] = info.expect;
    }
    expect(seen).toEqual(want);
    expect(Object.values(seen)).toEqual(expect.arrayContaining(['secure', 'insecure', 'bogus']));
  });

  it('DANE-1 a broken signature on one RRset makes only that RRset bogus', async () => {
    expect((await w.query('www.badsig.dnssec', 'A')).rcode).toBe('SERVFAIL');
    const ok = await w.query('txt.badsig.dnssec', 'TXT');
    expect(ok).toMatchObject({ rcode: 'NOERROR', ad: true });
  });

  it('DANE-1 NSEC3 opt-out: an unsigned delegation is proven insecure, a missing name is proven absent', async () => {
    const nx = await w.query('nope.nsec3.dnssec', 'A');
    expect(nx).toMatchObject({ rcode: 'NXDOMAIN', ad: true });
    const nodata = await w.query('www.optout.dnssec', 'TLSA');
    expect(nodata).toMatchObject({ rcode: 'NOERROR', ad: true, answers: [] });
  });
});

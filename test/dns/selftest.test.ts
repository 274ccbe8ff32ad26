/**
 * The DNSSEC self-test (DANE-4, issue 21 item 3): configurable probes, a positive secure answer required
 * of the secure probe, and a failure kind with its own wording for each way it can fail. Two worlds:
 * a real signed hierarchy on loopback validated in-process (validate mode, test/dnssec/fixture.ts) and
 * a loopback resolver that sets AD per zone (trust-ad mode, test/support/dnsServer.ts).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { StubResolver } from '../../src/dns/stub.js';
import { parseProbe, selfTest, selfTestProbes, SelfTestMonitor, type SelfTestFailure } from '../../src/dns/selftest.js';
import { parseConfigText } from '../../src/config/load.js';
import { buildTree, key, type Tree } from '../dnssec/fixture.js';
import { Zone, rd } from '../support/signer.js';

let dns: TestDns | undefined;
let r: StubResolver | undefined;
afterEach(async () => {
  await r?.close();
  await dns?.close();
  r = undefined;
  dns = undefined;
});

const probes = selfTestProbes('signed.test', 'broken.test');

describe('DNSSEC self-test, trust-ad resolver (AD per zone)', () => {
  it('DANE-4 a validating resolver: signed name secure, broken name SERVFAIL → ok', async () => {
    dns = await startDnsServer({
      zones: [{ name: 'signed.test', secure: true }],
      records: [
        { name: 'signed.test', type: 'A', data: '192.0.2.1' },
        { name: 'broken.test', type: 'A', data: '192.0.2.2' },
      ],
    });
    dns.behave('broken.test', 'A', 'servfail');
    r = new StubResolver({ servers: [dns.server], timeoutMs: 500, attempts: 1 });
    expect(await selfTest(r, probes)).toMatchObject({
      ok: true,
      signed: 'secure',
      broken: 'error servfail',
      probes: { secure: 'signed.test', bogus: 'broken.test' },
    });
  });
  it('DANE-4 a resolver that does not set AD → not-secure, notValidating', async () => {
    dns = await startDnsServer({
      records: [
        { name: 'signed.test', type: 'A', data: '192.0.2.1' },
        { name: 'broken.test', type: 'A', data: '192.0.2.2' },
      ],
    });
    r = new StubResolver({ servers: [dns.server], timeoutMs: 500, attempts: 1 });
    const res = await selfTest(r, probes);
    expect(res).toMatchObject({ ok: false, failure: 'not-secure', notValidating: true, signed: 'insecure' });
    expect(res.detail).toContain('the secure probe signed.test came back insecure, not secure');
  });
  it('DANE-4 a resolver that passes bogus answers → bogus-accepted, notValidating', async () => {
    dns = await startDnsServer({
      zones: [
        { name: 'signed.test', secure: true },
        { name: 'broken.test', secure: true },
      ],
      records: [
        { name: 'signed.test', type: 'A', data: '192.0.2.1' },
        { name: 'broken.test', type: 'A', data: '192.0.2.2' },
      ],
    });
    r = new StubResolver({ servers: [dns.server], timeoutMs: 500, attempts: 1 });
    const res = await selfTest(r, probes);
    expect(res).toMatchObject({ ok: false, failure: 'bogus-accepted', notValidating: true });
    expect(res.detail).toContain('the bogus probe broken.test came back secure instead of failing validation');
  });
  it('DANE-4 issue21: the bogus probe off: a resolver that would pass bogus answers passes, and the detail says the probe is off', async () => {
    dns = await startDnsServer({
      zones: [{ name: 'signed.test', secure: true }],
      records: [
        { name: 'signed.test', type: 'A', data: '192.0.2.1' },
        { name: 'broken.test', type: 'A', data: '192.0.2.2' },
      ],
    });
    r = new StubResolver({ servers: [dns.server], timeoutMs: 500, attempts: 1 });
    const res = await selfTest(r, selfTestProbes('signed.test', ''));
    expect(res).toMatchObject({ ok: true, broken: 'off', detail: 'resolver validates: signed.test secure (bogus probe off)' });
    expect(dns.queries.map((q) => q.name)).not.toContain('broken.test');
  });
  it('DANE-4 issue21: a resolver that does not answer → unreachable (timeout), not "does not validate", nothing held', async () => {
    dns = await startDnsServer({ records: [] });
    dns.behave('*', '*', 'timeout');
    r = new StubResolver({ servers: [dns.server], timeoutMs: 200, attempts: 1 });
    const res = await selfTest(r, probes);
    expect(res).toMatchObject({ ok: false, failure: 'unreachable', signed: 'error timeout' });
    expect(res.notValidating).toBeUndefined();
    expect(res.detail).toBe('no answer from the resolver for the secure probe signed.test (timeout): check that dns.resolvers are reachable');
  });
  it('DANE-4 issue21: a resolver that cannot reach the probe name (SERVFAIL) → resolver-error naming dns.dnssec_probe', async () => {
    dns = await startDnsServer({ zones: [{ name: 'signed.test', secure: true }] });
    dns.behave('signed.test', 'A', 'servfail');
    r = new StubResolver({ servers: [dns.server], timeoutMs: 500, attempts: 1 });
    const res = await selfTest(r, probes);
    expect(res).toMatchObject({ ok: false, failure: 'resolver-error', signed: 'error servfail' });
    expect(res.detail).toMatch(/could not answer the secure probe signed\.test \(servfail SERVFAIL\).*set dns\.dnssec_probe/);
  });
  it('DANE-4 issue21: a probe type other than A (mx:name) is asked as that type', async () => {
    dns = await startDnsServer({
      zones: [{ name: 'signed.test', secure: true }],
      records: [{ name: 'signed.test', type: 'MX', data: { preference: 10, exchange: 'mx.signed.test' } }],
    });
    dns.behave('broken.test', 'A', 'servfail');
    r = new StubResolver({ servers: [dns.server], timeoutMs: 500, attempts: 1 });
    expect(await selfTest(r, selfTestProbes('mx:signed.test', 'broken.test'))).toMatchObject({ ok: true, probes: { secure: 'mx:signed.test' } });
    expect(dns.queries.find((q) => q.name === 'signed.test')?.type).toBe('MX');
  });
});

describe('DNSSEC self-test, validate mode over a signed hierarchy on loopback', () => {
  let t: Tree;
  beforeAll(async () => {
    const now = Math.floor(Date.now() / 1000);
    const good = new Zone({ name: 'good.test', keys: [key('good', 13)] }).add('good.test', 'A', rd.A('192.0.2.1'));
    // signatures expired an hour ago: bogus
    const bogus = new Zone({ name: 'bogus.test', keys: [key('bogus', 13)], inception: now - 7200, expiration: now - 3600 }).add(
      'bogus.test',
      'A',
      rd.A('192.0.2.2'),
    );
    const plain = new Zone({ name: 'plain.test' }).add('plain.test', 'A', rd.A('192.0.2.3'));
    t = await buildTree([good, bogus, plain]);
  });
  afterAll(async () => t?.close());

  const cases: [string, string, string | false, boolean, SelfTestFailure | undefined, RegExp][] = [
    [
      'a signed name with records, a bogus one rejected',
      'good.test',
      'bogus.test',
      true,
      undefined,
      /^resolver validates: good\.test secure, bogus\.test rejected \(bogus\)$/,
    ],
    [
      'a signed NXDOMAIN is not a positive secure answer',
      'nothere.good.test',
      'bogus.test',
      false,
      'nxdomain',
      /secure probe nothere\.good\.test does not exist \(secure NXDOMAIN\)/,
    ],
    [
      'a signed NODATA is not a positive secure answer',
      'aaaa:good.test',
      'bogus.test',
      false,
      'nodata',
      /secure probe aaaa:good\.test has no AAAA records \(secure NODATA\)/,
    ],
    ['an unsigned probe name is not secure', 'plain.test', 'bogus.test', false, 'not-secure', /secure probe plain\.test came back insecure, not secure/],
    [
      'a secure probe that fails validation: trust anchors or clock',
      'bogus.test',
      false,
      false,
      'secure-bogus',
      /secure probe bogus\.test failed DNSSEC validation .*dns\.trust_anchors and the system clock/,
    ],
    [
      'a bogus probe that validates: the name is not broken (or the resolver does not reject)',
      'good.test',
      'good.test',
      false,
      'bogus-accepted',
      /bogus probe good\.test came back secure instead of failing validation/,
    ],
    ['the bogus probe off', 'good.test', false, true, undefined, /^resolver validates: good\.test secure \(bogus probe off\)$/],
  ];
  it.each(cases)('DANE-4 issue21: %s', async (_what, secure, bogus, ok, failure, detail) => {
    const res = await selfTest(t.resolver(), selfTestProbes(secure, bogus));
    expect(res.ok).toBe(ok);
    expect(res.failure).toBe(failure);
    expect(res.detail).toMatch(detail);
    // only answers that show the resolver does not validate may hold mail; a denial or a failure does not
    expect(res.notValidating ?? false).toBe(failure === 'not-secure' || failure === 'bogus-accepted');
  });

  it('DANE-4 issue21: a reload that changes the probes re-runs with the new names, even while a run with the old ones is in flight', async () => {
    const lines: string[] = [];
    const log = { info: (_o: object, m: string) => lines.push(m), warn: (_o: object, m: string) => lines.push(m), debug: () => undefined };
    const m = new SelfTestMonitor({
      resolver: t.resolver(),
      intervalMs: 3600_000,
      log,
      holds: false,
      probes: selfTestProbes('nothere.good.test', 'bogus.test'),
    });
    const first = m.run('start');
    expect(m.setProbes(selfTestProbes('good.test', 'bogus.test'))).toBe(true);
    expect(m.setProbes(selfTestProbes('good.test', 'bogus.test'))).toBe(false);
    const second = m.run('reload');
    expect(second).not.toBe(first);
    expect((await first).failure).toBe('nxdomain');
    expect(await second).toMatchObject({ ok: true, probes: { secure: 'good.test' } });
    expect(m.latest?.ok).toBe(true);
    expect(lines).toEqual([
      expect.stringMatching(/^DNSSEC SELF-TEST FAILED: the secure probe nothere\.good\.test does not exist/),
      expect.stringMatching(/^DNSSEC self-test passed again/),
    ]);
    m.stop();
  });
});

describe('probe syntax and config keys (issue 21 item 3)', () => {
  it.each([
    ['ietf.org', { name: 'ietf.org', type: 'A' }],
    ['IETF.org.', { name: 'ietf.org', type: 'A' }],
    ['mx:example.org', { name: 'example.org', type: 'MX' }],
    ['AAAA:example.org', { name: 'example.org', type: 'AAAA' }],
  ])('DANE-4 %s parses', (text, probe) => {
    expect(parseProbe(text)).toEqual(probe);
  });
  it.each([
    ['ns:.', /probe type ns is not one of a, aaaa, mx, txt, tlsa/],
    ['', /is not \[type:\]name/],
    ['a:-bad-.org', /is not \[type:\]name/],
  ])('DANE-4 %s is refused with the reason', (text, why) => {
    expect(() => parseProbe(text)).toThrow(why);
  });
  it('DANE-4 defaults ietf.org / dnssec-failed.org; "" or false turns the bogus probe off; a bad probe names its key', () => {
    const base = 'queue_dir: q\n';
    expect(parseConfigText(base).dns).toMatchObject({ dnssec_probe: 'ietf.org', dnssec_bogus_probe: 'dnssec-failed.org' });
    expect(parseConfigText(`${base}dns: { dnssec_probe: "mx:example.net", dnssec_bogus_probe: "" }\n`).dns).toMatchObject({
      dnssec_probe: 'mx:example.net',
      dnssec_bogus_probe: '',
    });
    expect(parseConfigText(`${base}dns: { dnssec_bogus_probe: false }\n`).dns.dnssec_bogus_probe).toBe(false);
    expect(() => parseConfigText(`${base}dns: { dnssec_probe: "ns:." }\n`)).toThrow(/dns\.dnssec_probe.*probe type ns/s);
  });
});

/**
 * MTA-STS discovery (RFC 8461 §3.1): the pure TXT parser, table-tested per rule, and the lookup
 * through the relay's StubResolver against the loopback test DNS server (real DNS messages).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseStsRecord, parseStsTxt } from '../../src/mtasts/record.js';
import { discoverSts } from '../../src/mtasts/discover.js';
import { StubResolver } from '../../src/dns/stub.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';

const id = (txts: string[]) => {
  const r = parseStsTxt(txts);
  return r.ok ? r.id : undefined;
};

describe('MTA-STS TXT record (pure)', () => {
  it('STS-3 exactly one v=STSv1 record: unrelated TXT records are dropped; none or two mean no policy', () => {
    const table: [string[], string | undefined][] = [
      [['v=spf1 -all', 'v=STSv1; id=20250101T000000', 'google-site-verification=x'], '20250101T000000'],
      [[], undefined],
      [['v=spf1 -all'], undefined],
      [['v=STSv1; id=1', 'v=STSv1; id=2'], undefined], // two records: no policy, not "the first"
      [['v=STSv1; id=1', 'v=STSv1; id=1'], undefined], // even when they agree
      [['v=STSv1; id=1', 'v=STSv1 ; id=2'], '1'], // the second is no STS record at all (prefix test)
    ];
    for (const [txts, want] of table) expect(id(txts), JSON.stringify(txts)).toBe(want);
  });

  it('STS-3 the trap "v=STSv1 ;": the prefix test comes first, so it is no record (errata 6285)', () => {
    expect(parseStsRecord('v=STSv1 ; id=1').ok).toBe(true); // the ABNF alone would take it
    expect(parseStsTxt(['v=STSv1 ; id=1'])).toEqual({ ok: false, why: 'no v=STSv1 record' });
  });

  it('STS-4 ABNF table: version first and case-sensitive, id= case-sensitive, 1-32 letters/digits, extensions ignored, trailing ";"', () => {
    const table: [string, string | undefined][] = [
      ['v=STSv1; id=abc123', 'abc123'],
      ['v=STSv1;id=abc123', 'abc123'],
      ['v=STSv1;\tid=abc123 ;', 'abc123'], // WSP around ";", trailing ";"
      ['v=STSv1; id=abc123;', 'abc123'],
      ['v=STSv1; ext_1.a-b=some-value; id=X; other=1;', 'X'], // extensions in any order, ignored
      [`v=STSv1; id=${'a'.repeat(32)}`, 'a'.repeat(32)],
      [`v=STSv1; id=${'a'.repeat(33)}`, undefined], // 33 characters
      ['v=STSv1; id=2025-01-01', undefined], // '-' is not allowed
      ['v=STSv1; id=2025_01', undefined],
      ['v=STSv1; id=2025.01', undefined],
      ['v=STSv1; id=', undefined],
      ['v=stsv1; id=1', undefined], // version case-sensitive
      ['v=STSv1; ID=1', undefined], // "ID" is an extension: id missing
      ['v=STSv1; id=1; id=2', undefined], // derived: which id would be meant is unknowable
      ['v=STSv1;', undefined],
      ['v=STSv1', undefined],
      ['v=STSv1; id=1; garbage', undefined],
      ['v=STSv1; id=1; _ext=1', undefined], // extension name must start with a letter or digit
      [`v=STSv1; id=1; ${'e'.repeat(33)}=1`, undefined], // extension name over 32
      ['v=STSv1; id=1; ext=a b', undefined], // space in an extension value
      ['v=STSv1; id=1; ext=a=b', undefined], // "=" in an extension value
      ['v=STSv1; id=1; ext=caf\u00e9', undefined], // US-ASCII only
      ['v=STSv1x; id=1', undefined],
    ];
    for (const [record, want] of table) {
      const r = parseStsRecord(record);
      expect(r.ok ? r.id : undefined, record).toBe(want);
    }
  });

  it('STS-5 the id is compared for equality only: ids that sort differently are simply different', () => {
    expect(id(['v=STSv1; id=9'])).not.toBe(id(['v=STSv1; id=10']));
    expect(id(['v=STSv1; id=abc'])).not.toBe(id(['v=STSv1; id=ABC'])); // case-sensitive letters
  });
});

describe('MTA-STS discovery over DNS', () => {
  let dns: TestDns;
  let resolver: StubResolver;
  beforeAll(async () => {
    dns = await startDnsServer();
    resolver = new StubResolver({ servers: [dns.server], timeoutMs: 1000, attempts: 1 });
  });
  afterAll(async () => {
    await resolver.close();
    await dns.close();
  });

  it('STS-1 STS-2 TXT at _mta-sts.<domain>; a multi-string record is joined without spaces ("v=STSv1; id=20" "25" → 2025)', async () => {
    dns.add({ name: '_mta-sts.split.test', type: 'TXT', data: ['v=STSv1; id=20', '25'] });
    dns.add({ name: '_mta-sts.split.test', type: 'TXT', data: 'v=spf1 -all' });
    expect(await discoverSts(resolver, 'split.test')).toEqual({ kind: 'record', id: '2025', name: '_mta-sts.split.test' });
    expect(dns.queriesFor('_mta-sts.split.test', 'TXT')).toBe(1);
  });

  it('STS-2 a CNAME chain to a provider is followed', async () => {
    dns.add({ name: '_mta-sts.hosted.test', type: 'CNAME', data: '_mta-sts.provider.test' });
    dns.add({ name: '_mta-sts.provider.test', type: 'CNAME', data: 'sts-record.provider.test' });
    dns.add({ name: 'sts-record.provider.test', type: 'TXT', data: 'v=STSv1; id=prov1' });
    expect(await discoverSts(resolver, 'hosted.test')).toMatchObject({ kind: 'record', id: 'prov1' });
  });

  it('STS-1 a subdomain without a record has no policy: the parent zone is never asked', async () => {
    dns.add({ name: '_mta-sts.parent.test', type: 'TXT', data: 'v=STSv1; id=parent' });
    const before = dns.queries.length;
    expect(await discoverSts(resolver, 'sub.parent.test')).toMatchObject({ kind: 'none' });
    const asked = dns.queries.slice(before).map((q) => q.name.toLowerCase());
    expect(asked).toEqual(['_mta-sts.sub.parent.test']);
  });

  it('STS-5 a DNS error is "could not tell" (the cache decides), never "no record"', async () => {
    dns.behave('_mta-sts.broken.test', 'TXT', 'servfail');
    expect(await discoverSts(resolver, 'broken.test')).toMatchObject({ kind: 'error' });
    expect(await discoverSts(resolver, 'absent.test')).toMatchObject({ kind: 'none', why: '_mta-sts.absent.test: no such name' });
    dns.add({ name: '_mta-sts.two.test', type: 'TXT', data: 'v=STSv1; id=1' }, { name: '_mta-sts.two.test', type: 'TXT', data: 'v=STSv1; id=2' });
    expect(await discoverSts(resolver, 'two.test')).toMatchObject({ kind: 'none', why: '_mta-sts.two.test: 2 v=STSv1 records (exactly one allowed)' });
  });
});

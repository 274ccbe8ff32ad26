/**
 * TLSRPT policy discovery (RFC 8460 §3): the pure parser, table-tested, and the lookup through the
 * relay's own StubResolver against the loopback test DNS server (real DNS messages).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseTlsrptRecord, parseTlsrptTxt, TlsrptDiscovery } from '../../src/reporting/tlsrpt/discovery.js';
import { StubResolver } from '../../src/dns/stub.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';

const ok = (s: string) => {
  const r = parseTlsrptRecord(s);
  if (!r.ok) throw new Error(r.why);
  return r.rua.map((u) => u.uri);
};

describe('TLSRPT record parsing (pure)', () => {
  it('TLSRPT-3 one valid record next to unrelated TXT records is used; two valid records mean no TLSRPT', () => {
    expect(parseTlsrptTxt(['v=spf1 -all', 'v=TLSRPTv1; rua=mailto:r@example.org', 'google-site-verification=x'])).toEqual({
      ok: true,
      rua: [{ scheme: 'mailto', uri: 'mailto:r@example.org', address: 'r@example.org' }],
    });
    const two = parseTlsrptTxt(['v=TLSRPTv1; rua=mailto:a@example.org', 'v=TLSRPTv1; rua=mailto:b@example.org']);
    expect(two.ok).toBe(false);
    expect(parseTlsrptTxt(['v=spf1 -all']).ok).toBe(false);
    expect(parseTlsrptTxt([]).ok).toBe(false);
  });

  it('TLSRPT-4 ABNF: version first and case-sensitive, WSP around ";", trailing ";", rua required, extensions ignored, junk rejected', () => {
    expect(ok('v=TLSRPTv1;rua=mailto:a@x.org')).toEqual(['mailto:a@x.org']);
    expect(ok('v=TLSRPTv1;  rua=mailto:a@x.org ;')).toEqual(['mailto:a@x.org']);
    expect(ok('v=TLSRPTv1; ext_1.a-b=some-value; rua=https://r.x.org/tlsrpt; other=1;')).toEqual(['https://r.x.org/tlsrpt']);
    const bad = [
      'v=tlsrptv1; rua=mailto:a@x.org', // case-sensitive version
      'v=TLSRPTv1; RUA=mailto:a@x.org', // rua= is case-sensitive: RUA is an extension, so rua is missing
      'v=TLSRPTv1; ext=1', // rua missing
      'v=TLSRPTv1; rua=mailto:a@x.org; _bad=1', // extension name must start with a letter or digit
      'v=TLSRPTv1; rua=mailto:a@x.org; a234567890123456789012345678901234=1', // name longer than 32
      'v=TLSRPTv1; rua=mailto:a@x.org; ext=a b', // space in a value
      'v=TLSRPTv1; rua=mailto:a@x.org; garbage',
      'v=TLSRPTv1; rua=mailto:a@x.org; rua=mailto:b@x.org',
      'v=TLSRPTv1x; rua=mailto:a@x.org',
    ];
    for (const b of bad) expect(parseTlsrptRecord(b).ok, b).toBe(false);
  });

  it('TLSRPT-4 the trap "v=TLSRPTv1 ;": our reading is the RFC prose prefix test, so it is not a TLSRPT record', () => {
    // The ABNF alone would accept it (field-delim = *WSP ";" *WSP); the literal prefix "v=TLSRPTv1;" does not.
    expect(parseTlsrptRecord('v=TLSRPTv1 ; rua=mailto:a@x.org').ok).toBe(true);
    expect(parseTlsrptTxt(['v=TLSRPTv1 ; rua=mailto:a@x.org']).ok).toBe(false);
  });

  it('TLSRPT-5 rua: mailto and https used, ftp ignored, whitespace around commas, a percent-encoded comma does not split', () => {
    const r = parseTlsrptTxt(['v=TLSRPTv1; rua=mailto:reports@x.org?subject=a%2Cb , https://r.x.org/a%2Cb,ftp://f.x.org/r']);
    expect(r).toEqual({
      ok: true,
      rua: [
        { scheme: 'mailto', uri: 'mailto:reports@x.org?subject=a%2Cb', address: 'reports@x.org' },
        { scheme: 'https', uri: 'https://r.x.org/a%2Cb', url: 'https://r.x.org/a%2Cb' },
      ],
    });
    expect(parseTlsrptTxt(['v=TLSRPTv1; rua=ftp://f.x.org/r']).ok).toBe(false); // no usable URI
    expect(parseTlsrptTxt(['v=TLSRPTv1; rua=mailto:a@x.org!10m']).ok).toBe(false); // "!" must be encoded
  });
});

describe('TLSRPT discovery over DNS', () => {
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

  it('TLSRPT-1 TLSRPT-2 TXT at _smtp._tls.<domain>; a multi-string record is joined without spaces', async () => {
    dns.add({ name: '_smtp._tls.multi.test', type: 'TXT', data: ['v=TLSRPTv1; rua=mailto:tlsrpt@mul', 'ti.test'] });
    dns.add({ name: '_smtp._tls.multi.test', type: 'TXT', data: 'v=spf1 -all' });
    const d = new TlsrptDiscovery(resolver);
    const r = await d.lookup('multi.test');
    expect(r).toEqual({ kind: 'ok', rua: [{ scheme: 'mailto', uri: 'mailto:tlsrpt@multi.test', address: 'tlsrpt@multi.test' }] });
    expect(dns.queriesFor('_smtp._tls.multi.test', 'TXT')).toBe(1);
  });

  it('TLSRPT-6 answers are cached; a DNS failure is a tempfail (data kept), NXDOMAIN is "none"', async () => {
    dns.add({ name: '_smtp._tls.cached.test', type: 'TXT', data: 'v=TLSRPTv1; rua=https://r.cached.test/x' });
    let t = 1_000_000;
    const d = new TlsrptDiscovery(resolver, () => t);
    expect((await d.lookup('cached.test')).kind).toBe('ok');
    expect(d.cached('cached.test')?.kind).toBe('ok');
    await d.lookup('cached.test');
    expect(dns.queriesFor('_smtp._tls.cached.test', 'TXT')).toBe(1);
    t += 3_600_001;
    expect(d.cached('cached.test')).toBeUndefined();
    dns.behave('_smtp._tls.broken.test', 'TXT', 'servfail');
    expect((await d.lookup('broken.test')).kind).toBe('tempfail');
    expect((await d.lookup('absent.test')).kind).toBe('none');
  });
});

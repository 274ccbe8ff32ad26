import { describe, expect, it } from 'vitest';
import { addressLiteral, decideMx, orderMx } from '../../src/route/mx.js';
import { failedAnswer, usableAnswer, type DnsAnswer, type FailedAnswer, type MxRecord, type SecureAnswer } from '../../src/dns/types.js';

type Over = Partial<Pick<SecureAnswer<'MX'>, 'qname' | 'rcode' | 'canonicalName' | 'chain'>> & {
  status?: 'secure' | 'insecure' | 'bogus' | 'indeterminate';
  error?: FailedAnswer['error'];
};
function mxAnswer(records: MxRecord[], over: Over = {}): DnsAnswer<'MX'> {
  const { status = 'secure', error, ...rest } = over;
  const qname = rest.qname ?? 'example.org';
  if (status === 'bogus' || status === 'indeterminate') return failedAnswer(qname, 'MX', status, error!);
  const base = { qname, qtype: 'MX' as const, rcode: 'NOERROR' as const, canonicalName: qname, chain: [], records, ttl: 300, ...rest };
  return usableAnswer(base, status, status, status === 'insecure' ? 'unsigned-delegation' : undefined);
}

describe('MX decision (RFC 5321 §5.1, RFC 7505, RFC 7672 §2.2.1)', () => {
  it('DANE-11 bogus MX RRset → defer 4.4.3, never an A fallback', () => {
    const d = decideMx('example.org', mxAnswer([], { status: 'bogus', error: { kind: 'bogus', message: 'RRSIG expired' } }));
    expect(d).toMatchObject({ kind: 'defer', code: '4.4.3' });
  });
  it('DANE-11 MX lookup SERVFAIL → defer 4.4.3', () => {
    const d = decideMx('example.org', mxAnswer([], { status: 'indeterminate', error: { kind: 'servfail', message: 'SERVFAIL' } }));
    expect(d.kind).toBe('defer');
  });
  it('DANE-11 NXDOMAIN → permanent 5.1.2', () => {
    expect(decideMx('nx.example', mxAnswer([], { rcode: 'NXDOMAIN', status: 'insecure' }))).toMatchObject({ kind: 'fail', code: '5.1.2' });
  });
  it('DANE-11 a CNAME at the MX name: hosts come from its target and the expansion is kept', () => {
    const d = decideMx(
      'alias.example',
      mxAnswer([{ preference: 10, exchange: 'mx.target.example' }], {
        qname: 'alias.example',
        canonicalName: 'target.example',
        chain: [{ owner: 'alias.example', target: 'target.example', status: 'secure' }],
      }),
    );
    expect(d).toMatchObject({ kind: 'hosts', expandedDomain: 'target.example', hosts: [{ host: 'mx.target.example' }] });
  });
  it('DANE-12 NODATA → implicit MX: the domain itself at preference 0, with the answer status', () => {
    expect(decideMx('example.org', mxAnswer([], { status: 'insecure' }))).toEqual({
      kind: 'hosts',
      hosts: [{ host: 'example.org', preference: 0 }],
      status: 'insecure',
      implicit: true,
      expandedDomain: undefined,
      insecureReason: 'unsigned-delegation',
    });
  });
  it('DANE-13 single "0 ." → 5.1.10 at once', () => {
    expect(decideMx('example.org', mxAnswer([{ preference: 0, exchange: '.' }]))).toMatchObject({ kind: 'fail', code: '5.1.10' });
    expect(decideMx('example.org', mxAnswer([{ preference: 0, exchange: '' }]))).toMatchObject({ kind: 'fail', code: '5.1.10' });
  });
  it('DANE-13 a "." mixed with real MX records is ignored', () => {
    const d = decideMx(
      'example.org',
      mxAnswer([
        { preference: 0, exchange: '.' },
        { preference: 10, exchange: 'mx.example.org' },
      ]),
    );
    expect(d).toMatchObject({ kind: 'hosts', hosts: [{ host: 'mx.example.org', preference: 10 }] });
  });
  it('DANE-14 sorted by preference; ties shuffled; security never reorders', () => {
    const recs = [
      { preference: 20, exchange: 'b.example' },
      { preference: 10, exchange: 'a.example' },
      { preference: 20, exchange: 'c.example' },
    ];
    const d = decideMx('example.org', mxAnswer(recs), [], () => 0);
    expect(d.kind === 'hosts' && d.hosts.map((h) => h.host)).toEqual(['a.example', 'c.example', 'b.example']);
    const seen = new Set<string>();
    for (let i = 0; i < 50; i++)
      seen.add(
        orderMx(recs)
          .map((r) => r.exchange)
          .join(','),
      );
    expect([...seen].every((s) => s.startsWith('a.example,'))).toBe(true);
    expect(seen.size).toBe(2);
  });
  it('DANE-14 this relay listed: entries at its preference or worse are dropped; only itself → 5.4.6', () => {
    const recs = [
      { preference: 10, exchange: 'a.example' },
      { preference: 20, exchange: 'relay.example.net' },
      { preference: 30, exchange: 'c.example' },
    ];
    const d = decideMx('example.org', mxAnswer(recs), ['relay.example.net']);
    expect(d.kind === 'hosts' && d.hosts.map((h) => h.host)).toEqual(['a.example']);
    expect(decideMx('example.org', mxAnswer([{ preference: 5, exchange: 'relay.example.net.' }]), ['relay.example.net'])).toMatchObject({
      kind: 'fail',
      code: '5.4.6',
    });
  });
  it('DANE-10 an IP literal as MX target is flagged literal (no DANE); address literal next hops parse', () => {
    const d = decideMx('example.org', mxAnswer([{ preference: 10, exchange: '192.0.2.1' }]));
    expect(d).toMatchObject({ kind: 'hosts', hosts: [{ host: '192.0.2.1', literal: true }] });
    expect(addressLiteral('[192.0.2.1]')).toBe('192.0.2.1');
    expect(addressLiteral('[IPv6:2001:db8::1]')).toBe('2001:db8::1');
    expect(addressLiteral('example.org')).toBeUndefined();
  });
});

/** The closed label sets: every deferral the relay produces maps to one of a few reasons. */
import { describe, expect, it } from 'vitest';
import { DEFERRAL_REASONS, daneStatusOf, deferralReason } from '../../src/metrics/labels.js';
import { lookupStatus } from '../../src/metrics/timedResolver.js';
import { failedAnswer, usableAnswer, type DnsAnswer, type FailedAnswer } from '../../src/dns/types.js';

describe('deferralReason', () => {
  it.each([
    [{ code: '4.4.3', reason: 'MX lookup for a.test: SERVFAIL' }, 'dns-lookup-failed'],
    [{ code: '4.4.3', reason: 'MX lookup for a.test: bogus' }, 'dns-bogus'],
    [{ code: '4.4.3', reason: 'mx.a.test: A lookup for mx.a.test: bogus (DNSSEC validation failed)' }, 'dns-bogus'],
    [{ code: '4.4.3', reason: 'mx.a.test: TLSA lookup for _25._tcp.mx.a.test: SERVFAIL' }, 'tlsa-lookup-failed'],
    [{ code: '4.7.5', reason: 'mx.a.test[127.0.0.5]:25: TLS peer authentication failed: dane-no-match: no TLSA record matched' }, 'dane-no-match'],
    [{ code: '4.7.5', reason: 'mx.a.test: dane-only: no usable TLSA record at mx.a.test' }, 'dane-required'],
    [{ code: '4.7.5', reason: 'mx.a.test[127.0.0.5]:25: TLS peer authentication failed: certificate-host-mismatch: leaf names x' }, 'tls-verify-failed'],
    [{ code: '4.7.5', reason: 'mx.a.test[127.0.0.5]:25: STARTTLS rejected (mode encrypt): 454 no' }, 'starttls-failed'],
    [{ code: '4.7.5', reason: 'mx.a.test[127.0.0.5]:25: handshake: wrong version number' }, 'tls-handshake-failed'],
    [{ code: '4.4.4', reason: 'mx.a.test: no A/AAAA records for mx.a.test' }, 'no-address'],
    [{ code: '4.4.1', reason: 'mx.a.test[127.0.0.5]:25: connect ECONNREFUSED' }, 'connect'],
    [{ code: '4.4.2', reason: 'lost connection with mx.a.test (data): socket closed' }, 'connection-lost'],
    [{ code: '4.5.0', reason: 'host x: protocol error: 250 ok in reply to DATA: only 354 opens the data phase', reply: '250 ok' }, 'protocol-error'],
    [{ code: '4.5.0', reason: 'protocol error with x (protocol): malformed reply line' }, 'protocol-error'],
    [{ code: '4.2.2', reason: 'host x said: 452 4.2.2 mailbox full', reply: '452 4.2.2 mailbox full' }, 'remote-temporary'],
    [{ code: '4.3.0', reason: 'internal error: boom' }, 'internal'],
    [{ code: '4.9.9', reason: 'something new' }, 'other'],
  ] as const)('%j → %s', (o, want) => {
    expect(deferralReason(o)).toBe(want);
    expect(DEFERRAL_REASONS).toContain(want);
  });
});

describe('daneStatusOf', () => {
  it.each([
    [{ connected: false, tls: false, verified: false }, 'none'],
    [{ connected: true, planKind: 'none', tls: false, verified: false }, 'cleartext'],
    [{ connected: true, planKind: 'may', tls: false, verified: false }, 'cleartext'],
    [{ connected: true, planKind: 'may', tls: true, verified: false }, 'tls-unauthenticated'],
    [{ connected: true, planKind: 'encrypt', tls: true, verified: false }, 'tls-unauthenticated'],
    [{ connected: true, planKind: 'dane', tls: true, verified: true }, 'dane-verified'],
  ] as const)('%j → %s', (s, want) => {
    expect(daneStatusOf(s)).toBe(want);
  });
});

describe('lookupStatus (DNS lookup label)', () => {
  const a = (p: { status?: DnsAnswer['status']; rcode?: 'NOERROR' | 'NXDOMAIN'; error?: FailedAnswer['error'] }): DnsAnswer => {
    const status = p.status ?? 'secure';
    if (status === 'bogus' || status === 'indeterminate') return failedAnswer('a.test', 'A', status, p.error!);
    return usableAnswer({ qname: 'a.test', qtype: 'A', rcode: p.rcode ?? 'NOERROR', canonicalName: 'a.test', chain: [], records: [], ttl: 0 }, status, status, status === 'insecure' ? 'unsigned-delegation' : undefined);
  };
  it.each([
    [a({}), 'secure'],
    [a({ status: 'insecure' }), 'insecure'],
    [a({ status: 'secure', rcode: 'NXDOMAIN' }), 'secure-nxdomain'],
    [a({ status: 'bogus', error: { kind: 'bogus', message: 'x' } }), 'bogus'],
    [a({ status: 'indeterminate', error: { kind: 'timeout', message: 'x' } }), 'error-timeout'],
    [a({ status: 'bogus', error: { kind: 'servfail', message: 'x' } }), 'error-servfail'],
  ])('%#: %s', (ans, want) => {
    expect(lookupStatus(ans)).toBe(want);
  });
});

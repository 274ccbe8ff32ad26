/** The closed label sets: every deferral the relay produces maps to one of a few reasons. */
import { describe, expect, it } from 'vitest';
import { DEFERRAL_REASONS, daneStatusOf } from '../../src/metrics/labels.js';
import { deferralReason } from '../../src/delivery/metrics.js';
import { lookupStatus } from '../../src/metrics/timedResolver.js';
import { failedAnswer, usableAnswer, type DnsAnswer, type FailedAnswer } from '../../src/dns/types.js';
import type { DeferralCause, HostFailure } from '../../src/delivery/events.js';
import type { SmtpStage } from '../../src/delivery/smtpClient.js';

describe('deferralReason: from typed causes, never from the wording', () => {
  const att = (stage: SmtpStage, code: string, verifyReason?: string, planKind: 'dane' | 'may' | 'encrypt' = 'dane'): HostFailure => ({
    kind: 'attempt',
    target: { host: 'mx.d.test', address: '127.0.0.9', port: 25 },
    code,
    stage,
    planKind,
    ...(verifyReason ? { verifyReason } : {}),
  });
  const skip = (code: string, cause: Extract<HostFailure, { kind: 'skipped' }>['cause']): HostFailure => ({ kind: 'skipped', host: 'mx.d.test', code, cause });
  const un = (...hosts: HostFailure[]): DeferralCause => ({ kind: 'unreachable', hosts });
  it.each([
    ['MX SERVFAIL', { kind: 'mx-lookup', problem: 'servfail' }, '4.4.3', 'dns-lookup-failed'],
    ['MX bogus', { kind: 'mx-lookup', problem: 'bogus' }, '4.4.3', 'dns-bogus'],
    ['DNSSEC self-test hold', { kind: 'dnssec-hold' }, '4.4.3', 'dns-lookup-failed'],
    ['A lookup bogus', un(skip('4.4.3', { kind: 'lookup-failed', rrtype: 'A', problem: 'bogus' })), '4.4.3', 'dns-bogus'],
    ['AAAA lookup timeout', un(skip('4.4.3', { kind: 'lookup-failed', rrtype: 'AAAA', problem: 'timeout' })), '4.4.3', 'dns-lookup-failed'],
    ['TLSA SERVFAIL', un(skip('4.4.3', { kind: 'lookup-failed', rrtype: 'TLSA', problem: 'servfail' })), '4.4.3', 'tlsa-lookup-failed'],
    ['TLSA insecure only by NSEC3 iterations', un(skip('4.7.5', { kind: 'nsec3-iterations', rrtype: 'TLSA' })), '4.7.5', 'tlsa-lookup-failed'],
    ['MX insecure only by NSEC3 iterations', un(skip('4.7.5', { kind: 'nsec3-iterations', rrtype: 'MX' })), '4.7.5', 'dane-required'],
    ['dane-only without usable TLSA', un(skip('4.7.5', { kind: 'dane-required' })), '4.7.5', 'dane-required'],
    ['no address', un(skip('4.4.4', { kind: 'no-address' })), '4.4.4', 'no-address'],
    ['DANE mismatch', un(att('verify', '4.7.5', 'dane-no-match')), '4.7.5', 'dane-no-match'],
    ['host name mismatch', un(att('verify', '4.7.5', 'certificate-host-mismatch')), '4.7.5', 'tls-verify-failed'],
    ['STARTTLS rejected', un(att('starttls', '4.7.5')), '4.7.5', 'starttls-failed'],
    ['handshake failed under DANE', un(att('tls', '4.7.5')), '4.7.5', 'tls-handshake-failed'],
    ['handshake failed under may (cleartext retry)', un(att('tls', '4.4.1', undefined, 'may')), '4.4.1', 'connect'],
    ['connection refused', un(att('connect', '4.4.1')), '4.4.1', 'connect'],
    ['greeting lost', un(att('greeting', '4.4.2')), '4.4.2', 'connection-lost'],
    ['no MX host at all', un(), '4.4.1', 'connect'],
    ['own address at a worse preference only', un({ kind: 'self' }), '4.4.1', 'connect'],
    [
      'the host that set the code names it: connect + DANE mismatch',
      un(att('connect', '4.4.1'), att('verify', '4.7.5', 'dane-no-match')),
      '4.7.5',
      'dane-no-match',
    ],
    ['most specific among equal codes', un(att('tls', '4.7.5'), att('verify', '4.7.5', 'dane-no-match')), '4.7.5', 'dane-no-match'],
    ['lost connection mid-transaction', { kind: 'connection-lost', stage: 'data' }, '4.4.2', 'connection-lost'],
    ['peer broke the protocol', { kind: 'protocol' }, '4.5.0', 'protocol-error'],
    ['remote 4xx', { kind: 'reply' }, '4.2.2', 'remote-temporary'],
    ['internal', { kind: 'internal' }, '4.3.0', 'internal'],
    ['MTA-STS policy state unreadable', { kind: 'sts-state' }, '4.7.0', 'sts-state-unavailable'],
  ] as [string, DeferralCause, string, string][])('%s → %s', (_name, cause, code, want) => {
    expect(deferralReason(cause, code)).toBe(want);
    expect(DEFERRAL_REASONS).toContain(want);
  });
});

describe('daneStatusOf (issue 21 item 4: Postfix TLS connection levels)', () => {
  it.each([
    [{ connected: false, tls: false, verified: false }, 'none'],
    [{ connected: true, planKind: 'none', tls: false, verified: false }, 'Cleartext'],
    [{ connected: true, planKind: 'may', tls: false, verified: false }, 'Cleartext'],
    [{ connected: true, planKind: 'may', tls: true, verified: false }, 'Untrusted'],
    [{ connected: true, planKind: 'encrypt', tls: true, verified: false }, 'Untrusted'],
    [{ connected: true, planKind: 'dane', tls: true, verified: true }, 'Verified'],
    [{ connected: true, planKind: 'dane', tls: true, verified: true, daneLabel: 'verified' }, 'Verified'],
    [{ connected: true, planKind: 'dane', tls: true, verified: true, daneLabel: 'trusted' }, 'Trusted'],
    [{ connected: true, planKind: 'sts', tls: true, verified: true }, 'Verified'],
    [{ connected: true, planKind: 'may', tls: true, verified: true }, 'Untrusted'],
  ] as const)('%j → %s', (s, want) => {
    expect(daneStatusOf(s)).toBe(want);
  });
});

describe('lookupStatus (DNS lookup label)', () => {
  const a = (p: { status?: DnsAnswer['status']; rcode?: 'NOERROR' | 'NXDOMAIN'; error?: FailedAnswer['error'] }): DnsAnswer => {
    const status = p.status ?? 'secure';
    if (status === 'bogus' || status === 'indeterminate') return failedAnswer('a.test', 'A', status, p.error!);
    return usableAnswer(
      { qname: 'a.test', qtype: 'A', rcode: p.rcode ?? 'NOERROR', canonicalName: 'a.test', chain: [], records: [], ttl: 0 },
      status,
      status,
      status === 'insecure' ? 'unsigned-delegation' : undefined,
    );
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

import { describe, expect, it } from 'vitest';
import { decideTls, referenceNames, tlsaCandidates, type TlsaOutcome } from '../../src/dane/policy.js';
import type { TlsaRecord } from '../../src/dns/types.js';

const rec = (u: number, s: number, m: number): TlsaRecord => ({ usage: u, selector: s, matchingType: m, data: Buffer.alloc(m === 2 ? 64 : 32, 1) });

describe('TLSA candidates (RFC 7672 §2.2.2)', () => {
  it('DANE-21 insecure first address response → no TLSA query at all', () => {
    expect(tlsaCandidates('mx.example', { status: 'insecure', firstStatus: 'insecure', canonicalName: 'mx.example', chain: [] })).toEqual([]);
  });
  it('DANE-22 plain secure name → [name]', () => {
    expect(tlsaCandidates('mx.example', { status: 'secure', firstStatus: 'secure', canonicalName: 'mx.example', chain: [] })).toEqual(['mx.example']);
  });
  it('DANE-22 secure CNAME chain → [expanded, original]', () => {
    const chain = [{ owner: 'mx.example', target: 'host.provider.example', status: 'secure' as const }];
    expect(tlsaCandidates('mx.example', { status: 'secure', firstStatus: 'secure', canonicalName: 'host.provider.example', chain })).toEqual([
      'host.provider.example',
      'mx.example',
    ]);
  });
  it('DANE-22 secure first CNAME, insecure end → [original]', () => {
    const chain = [{ owner: 'mx.example', target: 'host.unsigned.example', status: 'secure' as const }];
    expect(tlsaCandidates('mx.example', { status: 'insecure', firstStatus: 'secure', canonicalName: 'host.unsigned.example', chain })).toEqual(['mx.example']);
  });
  it('DANE-22 insecure first CNAME → no DANE', () => {
    const chain = [{ owner: 'mx.example', target: 'host.signed.example', status: 'insecure' as const }];
    expect(tlsaCandidates('mx.example', { status: 'insecure', firstStatus: 'insecure', canonicalName: 'host.signed.example', chain })).toEqual([]);
  });
});

describe('reference identifiers (RFC 7672 §3.2.2)', () => {
  it('DANE-55 secure MX: base domain first, then next hop and its CNAME expansion', () => {
    expect(
      referenceNames({
        baseDomain: 'mx.provider.example',
        host: 'mx.provider.example',
        nextHop: 'example.org',
        expandedNextHop: 'example.net',
        mxStatus: 'secure',
        implicit: false,
      }),
    ).toEqual(['mx.provider.example', 'example.org', 'example.net']);
  });
  it('DANE-55 insecure MX (trusted opt-in): only the MX host name', () => {
    expect(referenceNames({ baseDomain: 'mx.example', host: 'mx.example', nextHop: 'example.org', mxStatus: 'insecure', implicit: false })).toEqual([
      'mx.example',
    ]);
  });
  it('DANE-55 non-MX host whose base domain came from CNAME expansion adds the original next hop', () => {
    expect(referenceNames({ baseDomain: 'server.hosting.example', host: 'example.org', nextHop: 'example.org', mxStatus: 'secure', implicit: true })).toEqual([
      'server.hosting.example',
      'example.org',
    ]);
  });
});

describe('TLS decision per host (RFC 7672 §2.2)', () => {
  const base = { host: 'mx.example', mxStatus: 'secure' as const, references: ['mx.example'] };
  const records: TlsaOutcome = { kind: 'records', baseDomain: 'mx.example', records: [rec(3, 1, 1)], usable: 1 };
  const unusable: TlsaOutcome = { kind: 'records', baseDomain: 'mx.example', records: [rec(1, 1, 1), rec(3, 9, 1)], usable: 0 };
  const none: TlsaOutcome = { kind: 'none', why: 'no TLSA records' };
  const error: TlsaOutcome = { kind: 'error', why: 'TLSA lookup for _25._tcp.mx.example: SERVFAIL' };

  it('DANE-41 usable records → verify, SNI = base domain (DANE-60)', () => {
    const d = decideTls({ ...base, level: 'dane', tlsa: records });
    expect(d).toMatchObject({ plan: { kind: 'dane', sni: 'mx.example', label: 'verified' } });
  });
  it('DANE-42 only unusable records → TLS required, not authenticated', () => {
    expect(decideTls({ ...base, level: 'dane', tlsa: unusable })).toMatchObject({ plan: { kind: 'encrypt' } });
  });
  it('DANE-32 no TLSA (insecure or secure denial) → opportunistic TLS', () => {
    expect(decideTls({ ...base, level: 'dane', tlsa: none })).toMatchObject({ plan: { kind: 'may' } });
  });
  it('DANE-33 TLSA lookup error → skip the host with the exact reason', () => {
    expect(decideTls({ ...base, level: 'dane', tlsa: error })).toEqual({ skip: error.why, resultType: 'dnssec-invalid' });
  });
  it('DANE-45 dane-only without usable secure TLSA → skip, dane-required', () => {
    expect(decideTls({ ...base, level: 'dane-only', tlsa: none })).toMatchObject({ resultType: 'dane-required' });
    expect(decideTls({ ...base, level: 'dane-only', tlsa: unusable })).toMatchObject({ resultType: 'dane-required' });
    expect(decideTls({ ...base, level: 'dane-only', tlsa: records })).toMatchObject({ plan: { kind: 'dane' } });
  });
  it('DANE-71 labels: verified after a secure MX, trusted after an insecure MX', () => {
    expect(decideTls({ ...base, mxStatus: 'insecure', level: 'dane', tlsa: records })).toMatchObject({ plan: { label: 'trusted' } });
  });
  it('levels none/may/encrypt ignore TLSA entirely', () => {
    expect(decideTls({ ...base, level: 'none', tlsa: records })).toMatchObject({ plan: { kind: 'none' } });
    expect(decideTls({ ...base, level: 'may', tlsa: error })).toMatchObject({ plan: { kind: 'may' } });
    expect(decideTls({ ...base, level: 'encrypt', tlsa: none })).toMatchObject({ plan: { kind: 'encrypt' } });
  });
});

/** check/verdict.ts (pure): host verdicts, mechanism and status/exit code as tables over inspection reports (issue 21 item 10). */
import { describe, expect, it } from 'vitest';
import { hostVerdict, summarize, type CheckStatus } from '../../src/check/verdict.js';
import type { HostReport, InspectReport } from '../../src/check/inspect.js';
import type { Advice } from '../../src/check/advice.js';

const ok = (name: string, mechanism: HostReport['mechanism'] = 'dane', plan: 'dane' | 'sts' | 'may' = 'dane'): HostReport => ({
  host: name,
  preference: 10,
  addresses: ['127.0.0.1'],
  mechanism,
  connections: [{ address: '127.0.0.1', plan, ok: true }],
});
const failed = (name: string, error = 'TLS peer authentication failed: dane-no-match'): HostReport => ({
  host: name,
  preference: 10,
  addresses: ['127.0.0.2'],
  mechanism: 'dane',
  connections: [{ address: '127.0.0.2', plan: 'dane', ok: false, stage: 'verify', error }],
});
const skipped = (name: string): HostReport => ({
  host: name,
  preference: 20,
  addresses: [],
  mechanism: 'sts-enforce',
  skip: { reason: `${name} matches no mx pattern`, code: '4.7.5' },
  connections: [],
});
function report(kind: InspectReport['verdict']['kind'], hosts: HostReport[], host?: string): InspectReport {
  return {
    domain: 'd.test',
    checkedAt: '',
    policy: { level: 'dane', rule: 'r' },
    mx: { kind: 'hosts', status: 'secure' },
    hosts,
    verdict: { kind, detail: 'x', ...(host ? { host } : {}) },
  };
}
const warning: Advice = { code: 'sts-max-age-short', severity: 'warning', text: 'short' };
const advice: Advice = { code: 'sts-wildcard', severity: 'advice', text: 'wildcard' };

describe('issue21 check status and exit code', () => {
  const rows: [string, InspectReport, Advice[], CheckStatus, number, string][] = [
    ['DANE, one host, structural advice only', report('dane', [ok('mx1')], 'mx1'), [advice], 'ok', 0, 'dane'],
    ['MTA-STS enforce', report('sts', [ok('mx1', 'sts-enforce', 'sts')], 'mx1'), [], 'ok', 0, 'sts'],
    ['opportunistic TLS', report('tls', [ok('mx1', 'none', 'may')], 'mx1'), [], 'unauthenticated', 3, 'none'],
    ['cleartext', report('cleartext', [ok('mx1', 'none', 'may')], 'mx1'), [], 'unauthenticated', 3, 'none'],
    ['mx1-stale-mx2-good', report('dane', [failed('mx1'), ok('mx2')], 'mx2'), [], 'degraded', 4, 'dane'],
    ['a backup MX outside the STS patterns', report('sts', [ok('mx1', 'sts-enforce', 'sts'), skipped('mx2')], 'mx1'), [], 'degraded', 4, 'sts'],
    ['DANE with a warning', report('dane', [ok('mx1')], 'mx1'), [warning], 'degraded', 4, 'dane'],
    ['unauthenticated and a broken host: degraded wins', report('tls', [failed('mx1'), ok('mx2', 'none', 'may')], 'mx2'), [], 'degraded', 4, 'none'],
    ['would defer', report('defer', [failed('mx1')]), [warning], 'defer', 1, 'dane'],
    ['would fail permanently', report('fail', []), [], 'defer', 1, 'none'],
    ['no host used, mixed mechanisms', report('defer', [failed('mx1'), skipped('mx2')]), [], 'defer', 1, 'mixed'],
  ];
  for (const [name, r, a, status, code, mech] of rows) {
    it(`issue21 ${name} → ${status} (exit ${code}), mechanism ${mech}`, () => {
      const s = summarize(r, a);
      expect([s.status, s.exitCode, s.mechanism.kind]).toEqual([status, code, mech]);
      expect(s.hosts).toHaveLength(r.hosts.length);
    });
  }
  it('issue21 one reason per host: the first failure; a host that worked after a failure is degraded with that reason', () => {
    expect(hostVerdict(failed('mx1', 'E1'))).toEqual({ verdict: 'failed', reason: '127.0.0.2: E1' });
    expect(hostVerdict(skipped('mx2'))).toEqual({ verdict: 'skipped', reason: 'mx2 matches no mx pattern' });
    const audit: HostReport = {
      ...failed('mx3', 'dane-no-match'),
      connections: [
        { address: 'a', plan: 'dane', ok: false, stage: 'verify', error: 'dane-no-match', auditRetryNext: true },
        { address: 'a', plan: 'encrypt', ok: true, auditRetry: true },
      ],
    };
    expect(hostVerdict(audit)).toEqual({ verdict: 'degraded', reason: 'a: dane-no-match; delivered over TLS without authentication after it (audit-only)' });
    expect(hostVerdict(ok('mx4'))).toEqual({ verdict: 'ok' });
  });
  it('STS-45 a testing-mode host outside the patterns is degraded (delivered anyway, reported)', () => {
    const h: HostReport = { ...ok('mx5', 'sts-testing', 'may'), sts: { mismatch: 'mx5 matches no mx pattern' } };
    expect(hostVerdict(h)).toEqual({ verdict: 'degraded', reason: 'mx5 matches no mx pattern (testing: delivered anyway, reported)' });
  });
});

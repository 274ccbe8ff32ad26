/** The probe's recovery rule (pure) as a table over inspection reports. */
import { describe, expect, it } from 'vitest';
import { recovered } from '../../src/check/probe.js';
import type { HostReport, InspectReport } from '../../src/check/inspect.js';

const host = (name: string, extra: Partial<HostReport> = {}): HostReport => ({
  host: name,
  preference: 10,
  addresses: ['127.0.0.1'],
  connections: [],
  ...extra,
});
const verified = { ok: true, detail: 'DANE-EE 3 1 1 matched the leaf' };
const failed = { ok: false, reason: 'dane-no-match', detail: 'no TLSA record matched' };
function report(verdict: InspectReport['verdict'], hosts: HostReport[]): InspectReport {
  return { domain: 'd.test', checkedAt: '', policy: { level: 'dane', rule: 'r' }, mx: { kind: 'hosts', status: 'secure' }, hosts, verdict };
}

describe('DANE-70 recovery rule', () => {
  const rows: [string, InspectReport, boolean][] = [
    [
      'single MX verifies',
      report({ kind: 'dane', host: 'mx1', detail: 'ok' }, [host('mx1', { connections: [{ address: 'a', plan: 'dane', ok: true, verify: verified }] })]),
      true,
    ],
    ['verdict without DANE', report({ kind: 'tls', host: 'mx1', detail: 'untrusted' }, [host('mx1')]), false],
    ['deferred', report({ kind: 'defer', detail: 'x' }, [host('mx1')]), false],
    [
      'first MX fails verification, second verifies (delivery would succeed, but one MX is still broken)',
      report({ kind: 'dane', host: 'mx2', detail: 'ok' }, [
        host('mx1', { connections: [{ address: 'a', plan: 'dane', ok: false, verify: failed }] }),
        host('mx2', { connections: [{ address: 'b', plan: 'dane', ok: true, verify: verified }] }),
      ]),
      false,
    ],
    [
      'an MX skipped for a TLSA lookup error',
      report({ kind: 'dane', host: 'mx2', detail: 'ok' }, [
        host('mx1', { skip: { reason: 'TLSA lookup: SERVFAIL', code: '4.4.3', cause: { kind: 'lookup-failed', rrtype: 'TLSA', problem: 'servfail' } } }),
        host('mx2', { connections: [{ address: 'b', plan: 'dane', ok: true, verify: verified }] }),
      ]),
      false,
    ],
    [
      'an MX without addresses does not block recovery',
      report({ kind: 'dane', host: 'mx2', detail: 'ok' }, [
        host('mx1', { skip: { reason: 'no A/AAAA records', code: '4.4.4', cause: { kind: 'no-address' } } }),
        host('mx2', { connections: [{ address: 'b', plan: 'dane', ok: true, verify: verified }] }),
      ]),
      true,
    ],
  ];
  for (const [name, r, ok] of rows) it(`DANE-70 ${name} → ${ok ? 'recovered' : 'not recovered'}`, () => expect(recovered(r).ok).toBe(ok));
});

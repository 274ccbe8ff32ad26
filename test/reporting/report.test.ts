/**
 * The RFC 8460 §4.4 document: exact key names and result-type strings against a golden file
 * and against a JSON Schema of §4.4 (ajv); aggregation; day boundaries; filename and subject.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Ajv } from 'ajv';
import {
  RESULT_TYPES,
  buildReport,
  dayOf,
  dayRange,
  makeReportId,
  parseReport,
  reportFilename,
  reportSubject,
  submitterOf,
  type PolicyCounts,
  type ResultType,
} from '../../src/reporting/tlsrpt/report.js';
import { sessionCount } from '../../src/reporting/tlsrpt/recorder.js';
import { attemptResult, skipResult, tlsrptResultOf } from '../../src/reporting/tlsrpt/results.js';
import { SmtpError } from '../../src/delivery/smtpClient.js';
import type { TlsPlan } from '../../src/dane/policy.js';

const FIX = join(import.meta.dirname, 'fixtures');
const schema = JSON.parse(readFileSync(join(FIX, 'rfc8460-report.schema.json'), 'utf8'));
const validate = new Ajv({ allErrors: true, strict: true }).compile(schema);
const valid = (doc: unknown) => {
  const ok = validate(doc);
  if (!ok) throw new Error(JSON.stringify(validate.errors));
  return ok;
};

const TLSA = '3 1 1 089D9DE256D01978BA8B413D4FE25095437CF22D2D64F4F22D80D1D13C2B7A71';

/** Every §4.4 key and all 11 result types in one report. */
function everything(): PolicyCounts[] {
  const details = RESULT_TYPES.map((rt: ResultType, i) => ({
    detail: {
      resultType: rt,
      sendingIp: '192.0.2.25',
      receivingMx: 'mx1.example.org',
      receivingHelo: 'mx1.example.org',
      receivingIp: i % 2 ? '2001:DB8:0:0:0:0:0:10' : '198.51.100.10',
      additionalInformation: 'https://relay.example.net/tlsrpt-help',
      reasonCode: `reason-${i}`,
    },
    count: i + 1,
  }));
  return [
    { policy: { type: 'tlsa', strings: [TLSA, '2 0 1 AB12'], domain: 'mx1.example.org' }, success: 41, failure: 66, details },
    {
      policy: {
        type: 'sts',
        strings: ['version: STSv1', 'mode: enforce', 'mx: *.example.org', 'max_age: 86400'],
        domain: 'example.org',
        mxHost: ['*.example.org'],
      },
      success: 3,
      failure: 0,
      details: [],
    },
    { policy: { type: 'no-policy-found', strings: [], domain: 'example.org' }, success: 7, failure: 0, details: [] },
  ];
}

describe('RFC 8460 report document', () => {
  it('TLSRPT-30 TLSRPT-25 TLSRPT-11 every key of §4.4 and all 11 result types match the golden file and the §4.4 schema', () => {
    const doc = buildReport({
      organizationName: 'Example Relay Operator',
      contactInfo: 'tlsrpt@relay.example.net',
      reportId: '20250301.example.org.7f3a9c',
      day: '2025-03-01',
      policies: everything(),
    });
    const golden = JSON.parse(readFileSync(join(FIX, 'golden-report.json'), 'utf8'));
    expect(doc).toEqual(golden);
    expect(JSON.stringify(doc)).toBe(JSON.stringify(golden)); // key order too
    expect(valid(doc)).toBe(true);
    const types = doc.policies.flatMap((p) => p['failure-details'] ?? []).map((d) => d['result-type']);
    expect(new Set(types)).toEqual(new Set(RESULT_TYPES));
    expect(RESULT_TYPES).toHaveLength(11);
    // TLSRPT-11: policies is an array of groups, one per (type, strings, domain, mx-host).
    expect(doc.policies.map((p) => p.policy['policy-type'])).toEqual(['no-policy-found', 'sts', 'tlsa']);
  });

  it("TLSRPT-30 the digest's minimal example is reproduced exactly and validates", () => {
    const doc = buildReport({
      organizationName: 'Example Relay Operator',
      contactInfo: 'tlsrpt@relay.example.net',
      reportId: '20250301.example.org.7f3a9c',
      day: '2025-03-01',
      policies: [
        {
          policy: { type: 'tlsa', strings: [TLSA], domain: 'mx1.example.org' },
          success: 41,
          failure: 2,
          details: [
            {
              detail: {
                resultType: 'certificate-not-trusted',
                sendingIp: '192.0.2.25',
                receivingMx: 'mx1.example.org',
                receivingIp: '198.51.100.10',
                reasonCode: 'dane-no-match',
              },
              count: 2,
            },
          ],
        },
      ],
    });
    expect(doc).toEqual({
      'organization-name': 'Example Relay Operator',
      'date-range': { 'start-datetime': '2025-03-01T00:00:00Z', 'end-datetime': '2025-03-01T23:59:59Z' },
      'contact-info': 'tlsrpt@relay.example.net',
      'report-id': '20250301.example.org.7f3a9c',
      policies: [
        {
          policy: { 'policy-type': 'tlsa', 'policy-string': [TLSA], 'policy-domain': 'mx1.example.org' },
          summary: { 'total-successful-session-count': 41, 'total-failure-session-count': 2 },
          'failure-details': [
            {
              'result-type': 'certificate-not-trusted',
              'sending-mta-ip': '192.0.2.25',
              'receiving-mx-hostname': 'mx1.example.org',
              'receiving-ip': '198.51.100.10',
              'failed-session-count': 2,
              'failure-reason-code': 'dane-no-match',
            },
          ],
        },
      ],
    });
    expect(valid(doc)).toBe(true);
  });

  it('TLSRPT-12 a tlsa policy-string is one "u s m HEX" per RR and policy-domain is the TLSA base domain, not the recipient domain', () => {
    const c = sessionCount({
      domain: 'example.org',
      host: 'mx1.example.org',
      address: '198.51.100.10',
      ok: true,
      policy: { type: 'tlsa', baseDomain: 'mx1.example.org', records: [TLSA, '3 1 2 0F'] },
    });
    expect(c.reportDomain).toBe('example.org');
    expect(c.policy).toEqual({ type: 'tlsa', strings: [TLSA, '3 1 2 0F'], domain: 'mx1.example.org' });
    const doc = buildReport({
      organizationName: 'o',
      contactInfo: 'a@b.test',
      reportId: 'x',
      day: '2025-03-01',
      policies: [{ policy: c.policy, success: 1, failure: 0, details: [] }],
    });
    expect(doc.policies[0]!.policy).toEqual({ 'policy-type': 'tlsa', 'policy-string': [TLSA, '3 1 2 0F'], 'policy-domain': 'mx1.example.org' });
    expect(doc.policies[0]!.policy['policy-string'].every((s) => /^\d \d \d [0-9A-F]+$/.test(s))).toBe(true);
    expect('mx-host' in doc.policies[0]!.policy).toBe(false);
  });

  it('TLSRPT-14 no-policy-found: policy-string [] and no mx-host', () => {
    const c = sessionCount({ domain: 'Example.ORG', host: 'mx.example.org', ok: true });
    expect(c.policy).toEqual({ type: 'no-policy-found', strings: [], domain: 'example.org' });
  });

  it('TLSRPT-13 sts mx-host is written as an array; the parser accepts the string form (EID 6241) and the array form', () => {
    const doc = buildReport({ organizationName: 'o', contactInfo: 'a@b.test', reportId: 'x', day: '2025-03-01', policies: everything() });
    const sts = doc.policies.find((p) => p.policy['policy-type'] === 'sts')!;
    expect(sts.policy['mx-host']).toEqual(['*.example.org']);
    const asString = JSON.parse(JSON.stringify(doc));
    asString.policies.find((p: { policy: Record<string, unknown> }) => p.policy['policy-type'] === 'sts').policy['mx-host'] = '*.example.org';
    expect(parseReport(JSON.stringify(asString)).policies.find((p) => p.policy['policy-type'] === 'sts')!.policy['mx-host']).toEqual(['*.example.org']);
    expect(parseReport(JSON.stringify(doc))).toEqual(doc);
  });

  it('TLSRPT-31 sessions at 23:59:59Z and 00:00:00Z land on different days; date-range carries Z; zoneless times parse as UTC', () => {
    const before = Date.parse('2025-03-01T23:59:59.999Z');
    const after = Date.parse('2025-03-02T00:00:00.000Z');
    expect(dayOf(before)).toBe('2025-03-01');
    expect(dayOf(after)).toBe('2025-03-02');
    expect(dayRange('2025-03-01')).toEqual({ begin: 1740787200, end: 1740873599 });
    const doc = buildReport({ organizationName: 'o', contactInfo: 'a@b.test', reportId: 'x', day: '2025-03-02', policies: [] });
    expect(doc['date-range']).toEqual({ 'start-datetime': '2025-03-02T00:00:00Z', 'end-datetime': '2025-03-02T23:59:59Z' });
    const zoneless = { ...doc, 'date-range': { 'start-datetime': '2025-03-02T00:00:00', 'end-datetime': '2025-03-02T23:59:59' } };
    expect(parseReport(JSON.stringify(zoneless))['date-range']).toEqual(doc['date-range']);
    expect(() => dayRange('2025-02-30')).toThrow();
  });

  it('TLSRPT-26 TLSRPT-10 identical failure details merge and add up; totals are the sums; counts are integers', () => {
    const d = { resultType: 'certificate-not-trusted' as const, receivingMx: 'mx.example.org', receivingIp: '198.51.100.1', reasonCode: 'dane-no-match' };
    const doc = buildReport({
      organizationName: 'o',
      contactInfo: 'a@b.test',
      reportId: 'x',
      day: '2025-03-01',
      policies: [
        {
          policy: { type: 'tlsa', strings: [TLSA], domain: 'mx.example.org' },
          success: 5,
          failure: 3,
          details: [
            { detail: d, count: 2 },
            { detail: { ...d }, count: 1 },
          ],
        },
        {
          policy: { type: 'tlsa', strings: [TLSA], domain: 'MX.example.org' },
          success: 4,
          failure: 1,
          details: [{ detail: { ...d, receivingIp: '198.51.100.2' }, count: 1 }],
        },
      ],
    });
    expect(doc.policies).toHaveLength(1);
    const p = doc.policies[0]!;
    expect(p.summary).toEqual({ 'total-successful-session-count': 9, 'total-failure-session-count': 4 });
    expect(p['failure-details']!.map((x) => x['failed-session-count'])).toEqual([3, 1]);
    const sum = p['failure-details']!.reduce((a, x) => a + (x['failed-session-count'] as number), 0);
    expect(sum).toBe(p.summary['total-failure-session-count']);
    expect(JSON.stringify(doc)).not.toMatch(/"\d+"/); // no count serialised as a string
    expect(() =>
      buildReport({
        organizationName: 'o',
        contactInfo: 'a@b.test',
        reportId: 'x',
        day: '2025-03-01',
        policies: [{ policy: { type: 'no-policy-found', strings: [], domain: 'a.test' }, success: 1.5, failure: 0, details: [] }],
      }),
    ).toThrow();
  });

  it('TLSRPT-15 domains are written as A-labels; TLSRPT-25 IPv6 in RFC 5952 form', () => {
    const c = sessionCount({
      domain: 'bücher.example',
      host: 'mx.bücher.example',
      address: '2001:DB8:0:0:0:0:0:1',
      ok: false,
      resultType: 'starttls-not-supported',
      policy: { type: 'tlsa', baseDomain: 'mx.bücher.example', records: [TLSA] },
    });
    const doc = buildReport({
      organizationName: 'o',
      contactInfo: 'a@b.test',
      reportId: 'x',
      day: '2025-03-01',
      policies: [{ policy: c.policy, success: 0, failure: 1, details: [{ detail: c.detail!, count: 1 }] }],
    });
    expect(c.reportDomain).toBe('xn--bcher-kva.example');
    expect(doc.policies[0]!.policy['policy-domain']).toBe('mx.xn--bcher-kva.example');
    expect(doc.policies[0]!['failure-details']![0]).toMatchObject({ 'receiving-mx-hostname': 'mx.xn--bcher-kva.example', 'receiving-ip': '2001:db8::1' });
    expect(reportFilename({ submitter: 'relay.example.net', policyDomain: 'bücher.example', day: '2025-03-01' })).toBe(
      'relay.example.net!xn--bcher-kva.example!1740787200!1740873599.json.gz',
    );
    expect(valid(doc)).toBe(true);
  });

  it('TLSRPT-40 filename grammar; TLSRPT-32 report-id is msg-id safe; TLSRPT-43 Subject grammar; TLSRPT-33 submitter = contact-info domain', () => {
    expect(reportFilename({ submitter: 'relay.example.net', policyDomain: 'example.org', day: '2025-03-01' })).toBe(
      'relay.example.net!example.org!1740787200!1740873599.json.gz',
    );
    expect(reportFilename({ submitter: 'relay.example.net', policyDomain: 'example.org', day: '2025-03-01', uniqueId: 'A1', gzip: false })).toBe(
      'relay.example.net!example.org!1740787200!1740873599!A1.json',
    );
    expect(() => reportFilename({ submitter: 'r.test', policyDomain: 'e.test', day: '2025-03-01', uniqueId: 'a-1' })).toThrow();
    const id = makeReportId('2025-03-01', 'example.org', '7f3a9c');
    expect(id).toBe('20250301.example.org.7f3a9c');
    expect(id).toMatch(/^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/); // RFC 5322 dot-atom-text
    expect(reportSubject('example.org', 'relay.example.net', id)).toBe(
      'Report Domain: example.org Submitter: relay.example.net Report-ID: <20250301.example.org.7f3a9c@relay.example.net>',
    );
    expect(submitterOf('tlsrpt@Relay.Example.NET')).toBe('relay.example.net');
  });

  it('TLSRPT-20 TLSRPT-21 result types and reason codes per the DANE mapping, from typed facts', () => {
    const dane: TlsPlan = { kind: 'dane', why: 'x', sni: 'mx.d.test', baseDomain: 'mx.d.test', records: [], referenceNames: ['mx.d.test'], label: 'verified' };
    const verify = (reason: string) =>
      new SmtpError('verify', 'TLS peer authentication failed', { kind: 'unauthenticated', verify: { ok: false, reason, detail: reason } });
    expect(attemptResult(verify('dane-no-match'), dane)).toEqual({ resultType: 'certificate-not-trusted', reasonCode: 'dane-no-match' });
    expect(skipResult('dnssec-invalid', { kind: 'lookup-failed', rrtype: 'TLSA', problem: 'servfail' })).toEqual({
      resultType: 'dnssec-invalid',
      reasonCode: 'tlsa-lookup-servfail',
    });
    expect(skipResult('dane-required', { kind: 'dane-required' })).toEqual({ resultType: 'dane-required', reasonCode: 'no-secure-tlsa' });
    expect(
      attemptResult(
        new SmtpError('tls', 'TLS handshake with mx.d.test failed: wrong version number', { kind: 'tls-handshake', cleartextRetry: false, timedOut: false }),
        dane,
      ),
    ).toEqual({ resultType: 'validation-failure', reasonCode: 'tls-handshake-failure' });
    expect(attemptResult(verify('something-new'), dane)).toEqual({ resultType: 'validation-failure', reasonCode: 'something-new' });
    // All TLSA records unusable: delivered over unauthenticated TLS (plan encrypt), reported as tlsa-invalid.
    const target = { host: 'mx.d.test', address: '127.0.0.9', port: 25 };
    const tls = { protocol: 'TLSv1.3', cipher: 'x', verified: false };
    const opened = (plan: TlsPlan) => tlsrptResultOf({ kind: 'session-opened', domain: 'd.test', report: false, target, plan, tls, starttlsOffered: true })!;
    const enc = sessionCount(
      opened({
        kind: 'encrypt',
        why: 'no usable',
        sni: 'mx.d.test',
        baseDomain: 'mx.d.test',
        records: [{ usage: 3, selector: 1, matchingType: 9, data: Buffer.from([0xaa]) }],
      }),
    );
    expect(enc).toMatchObject({
      ok: false,
      policy: { type: 'tlsa', strings: ['3 1 9 AA'] },
      detail: { resultType: 'tlsa-invalid', reasonCode: 'no-usable-tlsa' },
    });
    expect(sessionCount(opened({ kind: 'encrypt', why: 'tls_level encrypt', sni: 'mx.d.test' })).ok).toBe(true);
    expect(attemptResult(new SmtpError('starttls', 'STARTTLS required', { kind: 'tls-required' }), dane)!.reasonCode).toBeUndefined();
    expect(attemptResult(verify('certificate-host-mismatch'), dane)).toEqual({ resultType: 'certificate-host-mismatch' });
    expect(attemptResult(verify('certificate-expired'), dane)).toEqual({ resultType: 'certificate-expired' });
    expect(attemptResult(verify('tlsa-invalid'), dane)).toEqual({ resultType: 'tlsa-invalid' });
  });
});

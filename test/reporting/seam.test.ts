/**
 * The delivery seam's pure parts: the SMTP client error → RFC 8460 result type mapping
 * (reporting/tlsrpt/results.ts attemptResult), what the recorder makes of a session result, address
 * normalisation for the failure-details merge key, the discovery cache bound and the config rules.
 */
import { describe, expect, it } from 'vitest';
import { attemptResult, tlsrptResultOf } from '../../src/reporting/tlsrpt/results.js';
import { SmtpError, type SmtpStage } from '../../src/delivery/smtpClient.js';
import type { TlsPlan } from '../../src/dane/policy.js';
import { normalIp, sessionCount } from '../../src/reporting/tlsrpt/recorder.js';
import { detailKey, RESULT_TYPES } from '../../src/reporting/tlsrpt/report.js';
import { TlsrptDiscovery } from '../../src/reporting/tlsrpt/discovery.js';
import { tlsrptConfigIssues } from '../../src/config/tlsrpt.js';
import { parseConfigText } from '../../src/config/load.js';
import type { Resolver } from '../../src/dns/types.js';

const dane: TlsPlan = {
  kind: 'dane',
  why: 'secure TLSA',
  sni: 'mx.d.test',
  baseDomain: 'mx.d.test',
  records: [],
  referenceNames: ['mx.d.test'],
  label: 'verified',
};
const encrypt: TlsPlan = { kind: 'encrypt', why: 'tls_level encrypt', sni: 'mx.d.test' };
const may: TlsPlan = { kind: 'may', why: 'tls_level may', sni: 'mx.d.test' };
const none: TlsPlan = { kind: 'none', why: 'tls_level none' };
const err = (stage: SmtpStage, reason?: string) =>
  new SmtpError(stage, `failed at ${stage}`, reason ? { kind: 'unauthenticated', verify: { ok: false, reason, detail: reason } } : { kind: 'connection' });

describe('TLSRPT-21 attemptResult: SMTP client failure → result type', () => {
  // [stage, verify reason, plan, expected]
  const table: [SmtpStage, string | undefined, TlsPlan, string | undefined][] = [
    ['starttls', undefined, dane, 'starttls-not-supported'],
    ['starttls', undefined, encrypt, 'starttls-not-supported'],
    ['verify', 'dane-no-match', dane, 'certificate-not-trusted'],
    ['verify', 'certificate-host-mismatch', dane, 'certificate-host-mismatch'],
    ['verify', 'certificate-expired', dane, 'certificate-expired'],
    ['verify', 'tlsa-invalid', dane, 'tlsa-invalid'],
    ['verify', 'validation-failure', dane, 'validation-failure'],
    ['verify', undefined, dane, 'validation-failure'],
    ['tls', undefined, dane, 'validation-failure'],
    ['tls', undefined, encrypt, 'validation-failure'],
    // RFC 8460 §4.3: a failed opportunistic handshake is a failed TLS session (its cleartext retry is not a success).
    ['tls', undefined, may, 'validation-failure'],
    // no TLS attempted, or the trouble came before/after any TLS decision (TLSRPT-16: not reported)
    ['tls', undefined, none, undefined],
    ['connect', undefined, dane, undefined],
    ['greeting', undefined, dane, undefined],
    ['ehlo', undefined, may, undefined],
    ['mail', undefined, dane, undefined],
    ['protocol', undefined, encrypt, undefined],
  ];
  for (const [stage, reason, plan, want] of table) {
    it(`TLSRPT-21 ${stage}${reason ? `/${reason}` : ''} under ${plan.kind} → ${want ?? 'not reported'}`, () => {
      const got = attemptResult(err(stage, reason), plan)?.resultType;
      expect(got).toBe(want);
      if (got) expect(RESULT_TYPES).toContain(got);
    });
  }

  it('TLSRPT-21 the remaining DANE types come from planning and MX lookup, and the recorder keeps every registered type', () => {
    // dnssec-invalid, dane-required: planHost skips (route/host.ts); tlsa-invalid also from an unusable RRset (plan encrypt).
    for (const t of RESULT_TYPES) {
      expect(sessionCount({ domain: 'd.test', host: 'mx.d.test', ok: false, resultType: t }).detail!.resultType).toBe(t);
    }
    // a verifier reason that is no registered type is validation-failure, the reason its code
    expect(attemptResult(err('verify', 'no-such-type'), dane)).toEqual({ resultType: 'validation-failure', reasonCode: 'no-such-type' });
  });
});

describe('TLSRPT session results', () => {
  it('TLSRPT-25 an MX lookup failure (no host reached) omits receiving-mx-hostname instead of naming the recipient domain', () => {
    const c = sessionCount(
      tlsrptResultOf({
        kind: 'mx-lookup-failed',
        domain: 'd.test',
        report: false,
        problem: 'servfail',
        reason: 'MX lookup for d.test: SERVFAIL from 127.0.0.1:53',
      })!,
    );
    expect(c.detail).toEqual({ resultType: 'dnssec-invalid', reasonCode: 'mx-lookup-servfail' });
    expect(c.detail!.receivingMx).toBeUndefined();
  });

  it('TLSRPT-26 addresses are normalised before the merge key: ::ffff:a.b.c.d, its hex form and upper-case IPv6 merge with their plain spelling', () => {
    const table: [string, string][] = [
      ['192.0.2.1', '192.0.2.1'],
      ['::ffff:192.0.2.1', '192.0.2.1'],
      ['::FFFF:C000:0201', '192.0.2.1'],
      ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
      ['[2001:db8::1]', '2001:db8::1'],
      ['fe80::1%eth0', 'fe80::1'],
      ['not an address', 'not an address'],
    ];
    for (const [input, want] of table) expect(normalIp(input), input).toBe(want);
    const a = sessionCount({
      domain: 'd.test',
      host: 'mx.d.test',
      address: '::ffff:127.0.0.9',
      sendingIp: '::ffff:127.0.0.1',
      ok: false,
      resultType: 'validation-failure',
      reasonCode: 'x',
    });
    const b = sessionCount({
      domain: 'd.test',
      host: 'mx.d.test',
      address: '127.0.0.9',
      sendingIp: '127.0.0.1',
      ok: false,
      resultType: 'validation-failure',
      reasonCode: 'x',
    });
    expect(detailKey(a.detail!)).toBe(detailKey(b.detail!));
  });
});

describe('TLSRPT discovery cache', () => {
  it('TLSRPT-6 the cache is bounded: the oldest domains are evicted first', async () => {
    const resolver = {
      lookup: async () => ({
        records: ['v=TLSRPTv1; rua=mailto:r@x.test'],
        status: 'insecure',
        firstStatus: 'insecure',
        ttl: 300,
        chain: [],
        canonicalName: 'x',
      }),
    } as unknown as Resolver;
    const d = new TlsrptDiscovery(resolver, () => 0, 3);
    for (const n of ['a', 'b', 'c', 'd', 'e']) await d.lookup(`${n}.test`);
    expect(d.size).toBe(3);
    expect(['a', 'b', 'c', 'd', 'e'].map((n) => d.cached(`${n}.test`) !== undefined)).toEqual([false, false, true, true, true]);
  });
});

describe('tlsrpt config rules', () => {
  const table: [string, Parameters<typeof tlsrptConfigIssues>[1], string[]][] = [
    ['defaults', {}, []],
    ['submitter = contact domain', { contact_info: 'r@relay.example.net', submitter: 'Relay.Example.NET.' }, []],
    ['submitter disagrees', { contact_info: 'r@example.net', submitter: 'mta.example.net' }, ['tlsrpt.submitter']],
    ['submitter vs default contact postmaster@hostname', { submitter: 'other.example' }, ['tlsrpt.submitter']],
    ['dkim = submitter', { contact_info: 'r@relay.example.net', dkim: { domain: 'relay.example.net' } }, []],
    ['dkim = parent of submitter', { contact_info: 'r@relay.example.net', dkim: { domain: 'example.net' } }, []],
    ['dkim unrelated', { contact_info: 'r@relay.example.net', dkim: { domain: 'example.org' } }, ['tlsrpt.dkim.domain']],
    ['dkim a child of the submitter', { contact_info: 'r@example.net', dkim: { domain: 'relay.example.net' } }, ['tlsrpt.dkim.domain']],
    ['dkim suffix but not a parent', { contact_info: 'r@relay.myexample.net', dkim: { domain: 'example.net' } }, ['tlsrpt.dkim.domain']],
  ];
  for (const [name, t, want] of table) {
    it(`TLSRPT-33 TLSRPT-44 ${name}`, () => {
      expect(tlsrptConfigIssues('relay.example.net', t).map((i) => i.path.join('.'))).toEqual(want);
    });
  }

  it('TLSRPT-43 a config whose submitter disagrees with contact_info, or whose DKIM domain is not the reporting domain, is rejected with a clear message', () => {
    const base = 'dns: { resolvers: ["127.0.0.1:53"] }\nhostname: relay.example.net\n';
    expect(() => parseConfigText(`${base}tlsrpt: { contact_info: r@example.net, submitter: mta.example.net }`)).toThrow(
      /tlsrpt\.submitter.*must be the domain of contact-info r@example\.net.*RFC 8460 §5\.3/s,
    );
    expect(() => parseConfigText(`${base}tlsrpt: { dkim: { domain: example.org, key_file: k.pem } }`)).toThrow(
      /tlsrpt\.dkim\.domain.*must be the report submitter relay\.example\.net or a parent/s,
    );
    expect(parseConfigText(`${base}tlsrpt: { dkim: { domain: example.net, key_file: k.pem } }`).tlsrpt.dkim?.domain).toBe('example.net');
  });
});

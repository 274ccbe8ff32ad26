/**
 * Every kind of DeliveryEvent (delivery/events.ts), through the real subscribers: the TLSRPT
 * result it stands for (reporting/tlsrpt/results.ts, RFC 8460 §4.3), the metric calls it makes
 * (metrics/delivery.ts) and the log line it writes (delivery/log.ts). The table is keyed by the
 * union's kinds (`satisfies Record<DeliveryEventKind, …>`): a new kind does not compile until it
 * is listed here with what each subscriber makes of it.
 */
import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import type { DeliveryEvent, DeliveryEventKind, DeferralCause } from '../../src/delivery/events.js';
import { deliveryLog } from '../../src/delivery/log.js';
import { deliveryMetrics } from '../../src/delivery/metrics.js';
import type { RelayEvents } from '../../src/metrics/events.js';
import { tlsrptResultOf, type TlsSessionResult } from '../../src/reporting/tlsrpt/results.js';
import { RESULT_TYPES, buildReport, type FailureDetail, type ResultType } from '../../src/reporting/tlsrpt/report.js';
import { sessionCount } from '../../src/reporting/tlsrpt/recorder.js';
import { SmtpError, type SmtpFailure } from '../../src/delivery/smtpClient.js';
import type { TlsPlan } from '../../src/dane/policy.js';
import type { HostFacts } from '../../src/route/host.js';
import { DEFERRAL_REASONS } from '../../src/metrics/labels.js';
import type { CachedPolicy } from '../../src/mtasts/store.js';
import type { VerifyOutcome } from '../../src/dane/types.js';

const run = { domain: 'd.test', report: false };
const target = { host: 'mx.d.test', address: '127.0.0.9', port: 25 };
const record = { usage: 3, selector: 1, matchingType: 1, data: Buffer.from('ab', 'hex') };
const dane: TlsPlan = {
  kind: 'dane',
  why: 'x',
  sni: 'mx.d.test',
  baseDomain: 'mx.d.test',
  records: [record],
  referenceNames: ['mx.d.test'],
  label: 'verified',
};
const may: TlsPlan = { kind: 'may', why: 'tls_level may', sni: 'mx.d.test' };
const none: TlsPlan = { kind: 'none', why: 'tls_level none' };
const encryptUnusable: TlsPlan = { kind: 'encrypt', why: 'no usable', sni: 'mx.d.test', baseDomain: 'mx.d.test', records: [record] };
const STS_LINES = ['version: STSv1', 'mode: enforce', 'mx: *.d.test', 'max_age: 86400'];
const sts: TlsPlan = {
  kind: 'sts',
  why: 'MTA-STS enforce',
  sni: 'mx.d.test',
  policyDomain: 'd.test',
  pattern: '*.d.test',
  roots: [],
  policyLines: STS_LINES,
  mxPatterns: ['*.d.test'],
};
const mayTesting: TlsPlan = {
  kind: 'may',
  why: 'tls_level may',
  sni: 'mx.d.test',
  stsTesting: { policyDomain: 'd.test', roots: [], policyLines: STS_LINES, mxPatterns: ['*.d.test'] },
};
/** A TLS session under a `testing` policy's host, with the WebPKI verdict taken on the side (STS-45). */
const testingOpened = (webpki: VerifyOutcome): Extract<DeliveryEvent, { kind: 'session-opened' }> => ({
  ...run,
  kind: 'session-opened',
  target,
  plan: mayTesting,
  tls,
  starttlsOffered: true,
  webpki,
});
const stsPolicy = (mode: 'enforce' | 'testing'): CachedPolicy => ({
  domain: 'd.test',
  id: '20261207',
  fetchedAt: 0,
  expiresAt: 86_400_000,
  lastUsed: 0,
  policy: { mode, maxAge: 86_400, mx: ['*.d.test'], lines: ['version: STSv1', `mode: ${mode}`, 'mx: *.d.test', 'max_age: 86400'] },
});
const stsNone: CachedPolicy = {
  ...stsPolicy('enforce'),
  policy: { mode: 'none', maxAge: 86_400, mx: [], lines: ['version: STSv1', 'mode: none', 'max_age: 86400'] },
};
const tls = { protocol: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', verified: true };
const host: HostFacts = {
  host: 'mx.d.test',
  preference: 10,
  addresses: [],
  mxStatus: 'secure',
  addressStatus: 'secure',
  tlsaName: '_25._tcp.mx.d.test',
  tlsaStatus: 'bogus',
};
const failed = (stage: SmtpError['stage'], verifyReason?: string): SmtpError => {
  const failure: SmtpFailure = verifyReason
    ? { kind: 'unauthenticated', verify: { ok: false, reason: verifyReason, detail: verifyReason } }
    : ({ kind: stage === 'tls' ? 'tls-handshake' : 'connection', cleartextRetry: false, timedOut: false } as SmtpFailure);
  return new SmtpError(stage, `failed at ${stage}`, failure, { peer: { localAddress: '127.0.0.1', greeting: 'mx.d.test ESMTP' } });
};
const recipient = (
  result: 'sent' | 'deferred' | 'bounced',
  code: string,
  cause?: DeferralCause,
  relay = true,
): Extract<DeliveryEvent, { kind: 'recipient' }> => ({
  ...run,
  kind: 'recipient',
  queueId: 'q1',
  outcome: { address: 'u@d.test', result, code, reason: 'wording nobody parses', ...(relay ? { relay: 'mx.d.test[127.0.0.9]:25' } : {}) },
  ...(cause ? { cause } : {}),
  ...(relay ? { carrier: { tls: true, verified: true, planKind: 'dane' as const }, session: { plan: dane, tls } } : {}),
  delayMs: 1000,
  attemptMs: 5,
  delays: { beforeQueue: 0, queue: 995, setup: 3, transmit: 2 },
  rule: 'default',
  exception: false,
});

/** What each subscriber makes of one event. */
interface Expect {
  event: DeliveryEvent;
  /** TLSRPT: the result type (undefined: not a counted session), 'ok' for a success */
  tlsrpt: ResultType | 'ok' | undefined;
  reasonCode?: string;
  /** metric calls, as "hook:label" */
  metrics: string[];
  /** the log line's message, if any */
  log?: string | RegExp;
}

const table = {
  'policy-changed': [
    {
      event: { ...run, kind: 'policy-changed', rule: 'new', previousRule: 'old' },
      tlsrpt: undefined,
      metrics: [],
      log: 'policy changed while delivering: new session under the new rule',
    },
  ],
  'mx-insecure': [
    { event: { ...run, kind: 'mx-insecure', hosts: ['mx.d.test'], status: 'insecure' }, tlsrpt: undefined, metrics: [], log: 'MX lookup not secure' },
  ],
  'mx-lookup-failed': [
    {
      event: { ...run, kind: 'mx-lookup-failed', problem: 'servfail', reason: 'MX lookup for d.test: SERVFAIL' },
      tlsrpt: 'dnssec-invalid',
      reasonCode: 'mx-lookup-servfail',
      metrics: [],
    },
  ],
  'mx-capped': [
    {
      event: { ...run, kind: 'mx-capped', hosts: ['mx1.d.test'], notTried: ['mx2.d.test'], limit: 1 },
      tlsrpt: undefined,
      metrics: [],
      log: 'MX hosts beyond delivery.mx_host_limit are not tried',
    },
  ],
  'budget-spent': [
    {
      event: { ...run, kind: 'budget-spent', notPlanned: ['mx2.d.test'], work: { verifications: 256, nsec3Hashes: 0, nsec3Rounds: 0, queries: 9, yields: 32 } },
      tlsrpt: undefined,
      metrics: [],
      log: /DNSSEC work budget of the message spent/,
    },
  ],
  'host-is-self': [
    {
      event: { ...run, kind: 'host-is-self', host: 'mx.d.test', address: '127.0.0.9', port: 25 },
      tlsrpt: undefined,
      metrics: [],
      log: /MX host is this relay/,
    },
  ],
  'host-skipped': [
    {
      event: {
        ...run,
        kind: 'host-skipped',
        host,
        skip: { reason: 'x', code: '4.4.3', resultType: 'dnssec-invalid', cause: { kind: 'lookup-failed', rrtype: 'TLSA', problem: 'bogus' } },
        repeat: false,
      },
      tlsrpt: 'dnssec-invalid',
      reasonCode: 'tlsa-lookup-bogus',
      metrics: [],
      log: 'MX host skipped',
    },
    {
      event: {
        ...run,
        kind: 'host-skipped',
        host,
        skip: { reason: 'x', code: '4.7.5', resultType: 'dnssec-invalid', cause: { kind: 'nsec3-iterations', rrtype: 'A' } },
        repeat: false,
      },
      tlsrpt: 'dnssec-invalid',
      reasonCode: 'dns-lookup-failed',
      metrics: [],
      log: 'MX host skipped',
    },
    {
      event: {
        ...run,
        kind: 'host-skipped',
        host,
        skip: { reason: 'x', code: '4.7.5', resultType: 'dane-required', cause: { kind: 'dane-required' } },
        repeat: false,
      },
      tlsrpt: 'dane-required',
      reasonCode: 'no-secure-tlsa',
      metrics: [],
      log: 'MX host skipped',
    },
    // TLSRPT-10: once per run; 4.4.4 is no TLS policy decision
    {
      event: {
        ...run,
        kind: 'host-skipped',
        host,
        skip: { reason: 'x', code: '4.7.5', resultType: 'dane-required', cause: { kind: 'dane-required' } },
        repeat: true,
      },
      tlsrpt: undefined,
      metrics: [],
      log: 'MX host skipped',
    },
    {
      event: { ...run, kind: 'host-skipped', host, skip: { reason: 'x', code: '4.4.4', cause: { kind: 'no-address' } }, repeat: false },
      tlsrpt: undefined,
      metrics: [],
      log: 'MX host skipped',
    },
  ],
  'attempt-failed': [
    {
      event: { ...run, kind: 'attempt-failed', target, plan: dane, error: failed('verify', 'dane-no-match'), rule: 'r' },
      tlsrpt: 'certificate-not-trusted',
      reasonCode: 'dane-no-match',
      metrics: ['tlsHandshake:verify-failed'],
      log: 'connection attempt failed',
    },
    {
      event: { ...run, kind: 'attempt-failed', target, plan: dane, error: failed('verify', 'certificate-host-mismatch'), rule: 'r' },
      tlsrpt: 'certificate-host-mismatch',
      metrics: ['tlsHandshake:verify-failed'],
      log: 'connection attempt failed',
    },
    {
      event: { ...run, kind: 'attempt-failed', target, plan: dane, error: failed('starttls'), rule: 'r' },
      tlsrpt: 'starttls-not-supported',
      metrics: ['tlsHandshake:starttls-unsupported'],
      log: 'connection attempt failed',
    },
    {
      event: { ...run, kind: 'attempt-failed', target, plan: may, next: 'cleartext', error: failed('tls'), rule: 'r' },
      tlsrpt: 'validation-failure',
      reasonCode: 'tls-handshake-failure',
      metrics: ['tlsHandshake:handshake-failed'],
      log: 'connection attempt failed',
    },
    // DANE-46: the audit retry's own failure is no session of its own
    {
      event: { ...run, kind: 'attempt-failed', target, plan: dane, next: 'audit', error: failed('verify', 'dane-no-match'), rule: 'r' },
      tlsrpt: 'certificate-not-trusted',
      reasonCode: 'dane-no-match',
      metrics: ['tlsHandshake:verify-failed'],
      log: /DANE audit: authentication failed/,
    },
    {
      event: { ...run, kind: 'attempt-failed', target, plan: encryptUnusable, retry: 'audit', error: failed('tls'), rule: 'r' },
      tlsrpt: undefined,
      metrics: ['tlsHandshake:handshake-failed'],
      log: 'connection attempt failed',
    },
    {
      event: { ...run, kind: 'attempt-failed', target, plan: dane, error: failed('connect'), rule: 'r' },
      tlsrpt: undefined,
      metrics: [],
      log: 'connection attempt failed',
    },
    {
      event: { ...run, kind: 'attempt-failed', target, plan: none, error: failed('tls'), rule: 'r' },
      tlsrpt: undefined,
      metrics: ['tlsHandshake:handshake-failed'],
      log: 'connection attempt failed',
    },
    // STS-41, STS-60: the WebPKI verdict's reason is the RFC 8460 §4.3.1 result type
    {
      event: { ...run, kind: 'attempt-failed', target, plan: sts, error: failed('verify', 'certificate-not-trusted'), rule: 'r' },
      tlsrpt: 'certificate-not-trusted',
      metrics: ['tlsHandshake:verify-failed'],
      log: 'connection attempt failed',
    },
    {
      event: { ...run, kind: 'attempt-failed', target, plan: sts, error: failed('verify', 'certificate-expired'), rule: 'r' },
      tlsrpt: 'certificate-expired',
      metrics: ['tlsHandshake:verify-failed'],
      log: 'connection attempt failed',
    },
    {
      event: { ...run, kind: 'attempt-failed', target, plan: sts, error: failed('verify', 'certificate-host-mismatch'), rule: 'r' },
      tlsrpt: 'certificate-host-mismatch',
      metrics: ['tlsHandshake:verify-failed'],
      log: 'connection attempt failed',
    },
    {
      event: { ...run, kind: 'attempt-failed', target, plan: sts, error: failed('verify', 'no-certificate'), rule: 'r' },
      tlsrpt: 'validation-failure',
      reasonCode: 'no-certificate',
      metrics: ['tlsHandshake:verify-failed'],
      log: 'connection attempt failed',
    },
    {
      event: { ...run, kind: 'attempt-failed', target, plan: sts, error: failed('verify', 'Some Text'), rule: 'r' },
      tlsrpt: 'validation-failure',
      reasonCode: 'webpki-validation-failure',
      metrics: ['tlsHandshake:verify-failed'],
      log: 'connection attempt failed',
    },
    {
      event: { ...run, kind: 'attempt-failed', target, plan: sts, error: failed('starttls'), rule: 'r' },
      tlsrpt: 'starttls-not-supported',
      metrics: ['tlsHandshake:starttls-unsupported'],
      log: 'connection attempt failed',
    },
    {
      event: { ...run, kind: 'attempt-failed', target, plan: sts, error: failed('tls'), rule: 'r' },
      tlsrpt: 'validation-failure',
      reasonCode: 'tls-handshake-failure',
      metrics: ['tlsHandshake:handshake-failed'],
      log: 'connection attempt failed',
    },
  ],
  'session-opened': [
    { event: { ...run, kind: 'session-opened', target, plan: dane, tls, starttlsOffered: true }, tlsrpt: 'ok', metrics: ['tlsHandshake:ok'] },
    {
      event: { ...run, kind: 'session-opened', target, plan: encryptUnusable, tls, starttlsOffered: true },
      tlsrpt: 'tlsa-invalid',
      reasonCode: 'no-usable-tlsa',
      metrics: ['tlsHandshake:ok'],
    },
    {
      event: { ...run, kind: 'session-opened', target, plan: may, starttlsOffered: false },
      tlsrpt: 'starttls-not-supported',
      reasonCode: 'starttls-not-offered',
      metrics: [],
    },
    {
      event: { ...run, kind: 'session-opened', target, plan: may, starttlsOffered: true },
      tlsrpt: 'starttls-not-supported',
      reasonCode: 'starttls-refused',
      metrics: [],
    },
    { event: { ...run, kind: 'session-opened', target, plan: none, retry: 'cleartext', starttlsOffered: true }, tlsrpt: undefined, metrics: [] },
    // STS-61: a verified session under an MTA-STS enforce policy is a success of that policy
    { event: { ...run, kind: 'session-opened', target, plan: sts, tls, starttlsOffered: true }, tlsrpt: 'ok', metrics: ['tlsHandshake:ok'] },
    // STS-45, STS-62: under a testing policy the session went on under `may`; the WebPKI verdict is reported under the sts policy
    { event: testingOpened({ ok: true, detail: 'WebPKI: valid' }), tlsrpt: 'ok', metrics: ['tlsHandshake:ok'] },
    {
      event: testingOpened({ ok: false, reason: 'certificate-host-mismatch', detail: 'WebPKI: not valid for mx.d.test' }),
      tlsrpt: 'certificate-host-mismatch',
      metrics: ['tlsHandshake:ok'],
      log: 'MTA-STS testing: MX certificate fails WebPKI validation (delivered anyway)',
    },
    {
      event: testingOpened({ ok: false, reason: 'no-certificate', detail: 'peer presented no certificate' }),
      tlsrpt: 'validation-failure',
      reasonCode: 'no-certificate',
      metrics: ['tlsHandshake:ok'],
      log: 'MTA-STS testing: MX certificate fails WebPKI validation (delivered anyway)',
    },
    {
      event: { ...run, kind: 'session-opened', target, plan: mayTesting, starttlsOffered: false },
      tlsrpt: 'starttls-not-supported',
      reasonCode: 'starttls-not-offered',
      metrics: [],
    },
  ],
  'rollover-risk': [
    {
      event: {
        ...run,
        kind: 'rollover-risk',
        host: 'mx.d.test',
        finding: { kind: 'ee-key-expiring', severity: 'warning', record: 0, depth: 0, expires: '2027-01-01T00:00:00Z', detail: 'soon' },
      },
      tlsrpt: undefined,
      metrics: ['rolloverWarning:ee-key-expiring'],
      log: 'DANE rollover risk: soon',
    },
  ],
  'reset-failed': [
    {
      event: {
        ...run,
        kind: 'reset-failed',
        queueId: 'q1',
        target,
        error: new SmtpError('rset', 'RSET refused: 500 what', { kind: 'refused', reply: { code: 500, text: 'what' }, permanent: false }),
      },
      // the session was counted when it opened; its RSET says nothing about TLS, and no recipient settles here
      tlsrpt: undefined,
      metrics: [],
      log: 'reused connection failed RSET: the message goes over a new connection',
    },
  ],
  'body-converted': [
    { event: { ...run, kind: 'body-converted', queueId: 'q1', relay: 'r', target: '7bit' }, tlsrpt: undefined, metrics: [], log: /message body converted/ },
  ],
  'internal-error': [
    {
      event: { ...run, kind: 'internal-error', queueId: 'q1', what: 'body-unreadable', err: new Error('EIO') },
      tlsrpt: undefined,
      metrics: [],
      log: /could not read the message body/,
    },
    {
      event: { ...run, kind: 'internal-error', queueId: 'q1', what: 'unexpected', err: new Error('bug') },
      tlsrpt: undefined,
      metrics: [],
      log: 'delivery failed unexpectedly',
    },
  ],
  'invariant-breach': [
    { event: { ...run, kind: 'invariant-breach', queueId: 'q1', breaches: ['x'] }, tlsrpt: undefined, metrics: [], log: /internal invariant breach/ },
  ],
  'exception-applied': [
    {
      event: { ...run, kind: 'exception-applied', queueId: 'q1', rule: 'danefail', level: 'may', underlying: 'dane', connected: true },
      tlsrpt: undefined,
      metrics: ['exceptionDowngrade:may'],
      log: /DANE exception applied: delivered/,
    },
  ],
  'sts-lookup-failed': [
    {
      // STS-16, STS-33: the policy cache could not be read: the messages wait, nothing is counted (no session was tried)
      event: { ...run, kind: 'sts-lookup-failed', error: 'EISDIR: illegal operation on a directory, read' },
      tlsrpt: undefined,
      metrics: [],
      log: 'MTA-STS policy state unavailable; messages wait (never delivered as without MTA-STS)',
    },
  ],
  'sts-fetch-failed': [
    // STS-60, STS-62: a failed fetch, under the cached policy that stays in force, or `sts` with an empty policy-string; never for a cached `none`
    {
      event: { ...run, kind: 'sts-fetch-failed', resultType: 'sts-policy-fetch-error', reason: 'HTTP 404', cached: stsPolicy('enforce') },
      tlsrpt: 'sts-policy-fetch-error',
      metrics: [],
    },
    { event: { ...run, kind: 'sts-fetch-failed', resultType: 'sts-policy-invalid', reason: 'no mode' }, tlsrpt: 'sts-policy-invalid', metrics: [] },
    { event: { ...run, kind: 'sts-fetch-failed', resultType: 'sts-webpki-invalid', reason: 'self-signed' }, tlsrpt: 'sts-webpki-invalid', metrics: [] },
    { event: { ...run, kind: 'sts-fetch-failed', resultType: 'sts-policy-fetch-error', reason: 'timeout', cached: stsNone }, tlsrpt: undefined, metrics: [] },
  ],
  'sts-exception-applied': [
    {
      event: { ...run, kind: 'sts-exception-applied', queueId: 'Q1', rule: 'tls_policy:3 d.test may', policy: stsPolicy('enforce'), connected: true },
      tlsrpt: undefined,
      metrics: [],
      log: 'MTA-STS exception applied: tls_policy entry wins over the MTA-STS policy',
    },
    {
      event: { ...run, kind: 'sts-exception-applied', queueId: 'Q1', rule: 'tls_policy:3 d.test sts-ignore', policy: stsPolicy('enforce'), connected: false },
      tlsrpt: undefined,
      metrics: [],
      log: 'MTA-STS exception applied: attempted without the MTA-STS policy, deferred (tls_policy entry)',
    },
  ],
  'sts-mx-mismatch': [
    // STS-60: no RFC 8460 type for an MX outside the patterns: validation-failure / mx-mismatch; testing reports like enforce (STS-45, STS-62); once per run
    {
      event: { ...run, kind: 'sts-mx-mismatch', host: 'mx.other.test', policy: stsPolicy('enforce'), reason: 'matches no mx pattern', repeat: false },
      tlsrpt: 'validation-failure',
      reasonCode: 'mx-mismatch',
      metrics: [],
      log: 'MX host skipped',
    },
    {
      event: { ...run, kind: 'sts-mx-mismatch', host: 'mx.other.test', policy: stsPolicy('testing'), reason: 'matches no mx pattern', repeat: false },
      tlsrpt: 'validation-failure',
      reasonCode: 'mx-mismatch',
      metrics: [],
      log: 'MTA-STS testing: MX host matches no mx pattern (delivered anyway)',
    },
    {
      event: { ...run, kind: 'sts-mx-mismatch', host: 'mx.other.test', policy: stsPolicy('enforce'), reason: 'matches no mx pattern', repeat: true },
      tlsrpt: undefined,
      metrics: [],
      log: 'MX host skipped',
    },
  ],
  'requiretls-host-refused': [
    {
      event: { ...run, requireTls: true, kind: 'requiretls-host-refused', target, plan: dane, problem: 'not-advertised' },
      tlsrpt: undefined,
      metrics: [],
      log: 'REQUIRETLS: host not used',
    },
  ],
  'requiretls-run-mismatch': [
    {
      event: { ...run, kind: 'requiretls-run-mismatch', queueId: 'q1', messageRequireTls: true },
      tlsrpt: undefined,
      metrics: [],
      log: 'REQUIRETLS message in the wrong delivery run (internal error)',
    },
  ],
  'requiretls-dsn-fallback': [
    {
      event: { ...run, requireTls: true, kind: 'requiretls-dsn-fallback', queueId: 'q1', code: '4.7.30', reason: 'mx1: does not advertise REQUIRETLS' },
      tlsrpt: undefined,
      metrics: [],
      log: 'REQUIRETLS: no host qualifies for this DSN; sent without REQUIRETLS (header only, RFC 8689 section 5)',
    },
  ],
  recipient: [
    { event: recipient('sent', '2.0.0'), tlsrpt: undefined, metrics: ['deliveryOutcome:sent/Verified'], log: 'delivery' },
    {
      event: recipient(
        'deferred',
        '4.7.5',
        {
          kind: 'unreachable',
          hosts: [
            {
              kind: 'attempt',
              target: { host: 'mx.d.test', address: '127.0.0.9', port: 25 },
              code: '4.7.5',
              stage: 'verify',
              planKind: 'dane',
              verifyReason: 'dane-no-match',
            },
          ],
        },
        false,
      ),
      tlsrpt: undefined,
      metrics: ['deliveryOutcome:deferred/none', 'deferral:dane-no-match'],
      log: 'delivery',
    },
    {
      event: recipient('deferred', '4.2.2', { kind: 'reply' }),
      tlsrpt: undefined,
      metrics: ['deliveryOutcome:deferred/Verified', 'deferral:remote-temporary'],
      log: 'delivery',
    },
    { event: recipient('bounced', '5.1.2', { kind: 'mx-refused' }, false), tlsrpt: undefined, metrics: ['deliveryOutcome:bounced/none'], log: 'delivery' },
    // STS-43: every host outside an enforce policy's mx patterns; RFC 8689 §4.2.1: no host offered REQUIRETLS
    {
      event: recipient('deferred', '4.7.5', { kind: 'unreachable', hosts: [{ kind: 'sts-mx-mismatch', code: '4.7.5' }] }, false),
      tlsrpt: undefined,
      metrics: ['deliveryOutcome:deferred/none', 'deferral:sts-mx-mismatch'],
      log: 'delivery',
    },
    {
      event: recipient(
        'deferred',
        '4.7.30',
        {
          kind: 'unreachable',
          hosts: [{ kind: 'requiretls', target: { host: 'mx.d.test', address: '127.0.0.9', port: 25 }, code: '4.7.30', problem: 'not-advertised' }],
        },
        false,
      ),
      tlsrpt: undefined,
      metrics: ['deliveryOutcome:deferred/none', 'deferral:requiretls-unsupported'],
      log: 'delivery',
    },
    // the MTA-STS policy in force could not be read: deferred 4.7.0, never delivered as without MTA-STS
    {
      event: recipient('deferred', '4.7.0', { kind: 'sts-state' }, false),
      tlsrpt: undefined,
      metrics: ['deliveryOutcome:deferred/none', 'deferral:sts-state-unavailable'],
      log: 'delivery',
    },
  ],
} satisfies { [K in DeliveryEventKind]: (Expect & { event: Extract<DeliveryEvent, { kind: K }> })[] };

function recorder(): { events: RelayEvents; calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    events: {
      tlsHandshake: (e) => calls.push(`tlsHandshake:${e.result}`),
      deferral: (e) => calls.push(`deferral:${e.reason}`),
      deliveryOutcome: (e) => calls.push(`deliveryOutcome:${e.outcome}/${e.dane}`),
      rolloverWarning: (e) => calls.push(`rolloverWarning:${e.kind}`),
      exceptionDowngrade: (e) => calls.push(`exceptionDowngrade:${e.level}`),
      exceptionRecovered: (e) => calls.push(`exceptionRecovered:${e.domain}`),
      messageReceived: () => calls.push('messageReceived'),
      dnsLookup: () => calls.push('dnsLookup'),
    },
  };
}

function logLines(e: DeliveryEvent): { msg: string }[] {
  const lines: { msg: string }[] = [];
  const log = pino(
    { level: 'debug' },
    {
      write: (s: string) => {
        lines.push(JSON.parse(s));
      },
    },
  );
  deliveryLog(log)(e, () => undefined);
  return lines;
}

describe('DeliveryEvent → TLSRPT result type, metric labels, log line (every kind of the union)', () => {
  for (const [kind, cases] of Object.entries(table) as [DeliveryEventKind, Expect[]][]) {
    cases.forEach((c, i) => {
      it(`TLSRPT-21 ${kind} #${i}: TLSRPT ${c.tlsrpt ?? 'not counted'}${c.reasonCode ? ` (${c.reasonCode})` : ''}, metrics [${c.metrics.join(', ')}]`, () => {
        const r: TlsSessionResult | undefined = tlsrptResultOf(c.event);
        if (c.tlsrpt === undefined) expect(r).toBeUndefined();
        else if (c.tlsrpt === 'ok') expect(r).toMatchObject({ ok: true, domain: 'd.test' });
        else {
          expect(r).toMatchObject({ ok: false, resultType: c.tlsrpt });
          expect(RESULT_TYPES).toContain(r!.resultType);
          expect(r!.reasonCode).toBe(c.reasonCode);
        }
        // TLSRPT-45: a run of relay-generated reports is never counted, whatever happened
        expect(tlsrptResultOf({ ...c.event, report: true })).toBeUndefined();
        // RFC 8689: nor is a run of REQUIRETLS messages (judged by the sender's demand, not the destination's policy)
        expect(tlsrptResultOf({ ...c.event, requireTls: true })).toBeUndefined();
        // RFC 8689 §4.2.2: nor a run of TLS-Required: No messages (the sender waived the destination's policy)
        expect(tlsrptResultOf({ ...c.event, tlsRequiredNo: true })).toBeUndefined();

        const m = recorder();
        deliveryMetrics(m.events)(c.event, () => undefined);
        expect(m.calls).toEqual(c.metrics);
        for (const call of m.calls.filter((x) => x.startsWith('deferral:'))) expect(DEFERRAL_REASONS).toContain(call.slice('deferral:'.length));

        const lines = logLines(c.event);
        if (c.log === undefined) expect(lines).toEqual([]);
        else expect(lines.map((l) => l.msg)).toContainEqual(typeof c.log === 'string' ? c.log : expect.stringMatching(c.log));
      });
    });
  }

  it('TLSRPT-20 failure details carry the connection facts: sending-mta-ip, receiving-mx-helo from the 220 greeting, receiving-ip, and the TLSA policy', () => {
    const r = tlsrptResultOf({ ...run, kind: 'attempt-failed', target, plan: dane, error: failed('verify', 'dane-no-match'), rule: 'r' });
    expect(r).toEqual({
      domain: 'd.test',
      host: 'mx.d.test',
      address: '127.0.0.9',
      ok: false,
      resultType: 'certificate-not-trusted',
      reasonCode: 'dane-no-match',
      policy: { type: 'tlsa', baseDomain: 'mx.d.test', records: ['3 1 1 AB'] },
      sendingIp: '127.0.0.1',
      receivingHelo: 'mx.d.test',
    });
    const skipped = tlsrptResultOf(table['host-skipped'][0]!.event)!;
    expect(skipped).toMatchObject({ host: 'mx.d.test', policy: { type: 'tlsa', baseDomain: 'mx.d.test', records: [] } });
    expect(skipped.address).toBeUndefined();
  });

  it('STS-61 STS-62 an MTA-STS result is counted under policy-type sts: policy-string the policy lines, policy-domain the Policy Domain, mx-host the patterns (an array); a fetch failure with nothing cached under an empty policy', () => {
    const failedSts = tlsrptResultOf({ ...run, kind: 'attempt-failed', target, plan: sts, error: failed('verify', 'certificate-host-mismatch'), rule: 'r' })!;
    expect(failedSts).toEqual({
      domain: 'd.test',
      host: 'mx.d.test',
      address: '127.0.0.9',
      ok: false,
      resultType: 'certificate-host-mismatch',
      policy: { type: 'sts', policyDomain: 'd.test', lines: STS_LINES, mx: ['*.d.test'] },
      sendingIp: '127.0.0.1',
      receivingHelo: 'mx.d.test',
    });
    expect(sessionCount(failedSts)).toEqual({
      reportDomain: 'd.test',
      ok: false,
      policy: { type: 'sts', strings: STS_LINES, domain: 'd.test', mxHost: ['*.d.test'] },
      detail: {
        resultType: 'certificate-host-mismatch',
        sendingIp: '127.0.0.1',
        receivingMx: 'mx.d.test',
        receivingHelo: 'mx.d.test',
        receivingIp: '127.0.0.9',
      },
    });
    const mismatch = sessionCount(tlsrptResultOf(table['sts-mx-mismatch'][0]!.event)!);
    expect(mismatch).toMatchObject({
      ok: false,
      policy: { type: 'sts', mxHost: ['*.d.test'] },
      detail: { resultType: 'validation-failure', receivingMx: 'mx.other.test', reasonCode: 'mx-mismatch' },
    });
    const noCache = sessionCount(tlsrptResultOf(table['sts-fetch-failed'][1]!.event)!);
    expect(noCache).toEqual({
      reportDomain: 'd.test',
      ok: false,
      policy: { type: 'sts', strings: [], domain: 'd.test', mxHost: [] },
      detail: { resultType: 'sts-policy-invalid' },
    });
    const report = buildReport({
      organizationName: 'o',
      contactInfo: 'c',
      reportId: 'r',
      day: '2026-12-07',
      policies: [
        {
          policy: sessionCount(failedSts).policy,
          success: 1,
          failure: 1,
          details: [{ detail: (sessionCount(failedSts) as { detail: FailureDetail }).detail, count: 1 }],
        },
      ],
    });
    expect(report.policies[0]!.policy).toEqual({ 'policy-type': 'sts', 'policy-string': STS_LINES, 'policy-domain': 'd.test', 'mx-host': ['*.d.test'] });
  });
});

/**
 * Delivery metrics as a delivery subscriber (events.ts): the facts of a delivery run become the
 * `RelayEvents` calls the Prometheus registry counts (metrics/registry.ts), with label values from
 * typed facts only — never from the wording of a reason. Here, not in metrics/, because the
 * mapping reads delivery's types and metrics sits below delivery (ARCHITECTURE.md, layers).
 */
import { recipientTlsWord, type DeliverySubscriber, type DeferralCause, type HostFailure } from './events.js';
import type { SmtpStage } from './smtpClient.js';
import type { SkipCause } from '../route/host.js';
import type { RelayEvents } from '../metrics/events.js';
import type { DeferralReason, ROLLOVER_KINDS } from '../metrics/labels.js';
import type { RolloverKind } from '../policy/rollover.js';

// the metrics' list of rollover kinds is policy's: a kind added on either side fails to compile here
type MetricKind = (typeof ROLLOVER_KINDS)[number];
const _rolloverKindsAgree: [RolloverKind] extends [MetricKind] ? ([MetricKind] extends [RolloverKind] ? true : never) : never = true;
void _rolloverKindsAgree;

/** The label of a skipped host. */
function skipReason(c: SkipCause): DeferralReason {
  switch (c.kind) {
    case 'lookup-failed':
      return c.rrtype === 'TLSA' ? 'tlsa-lookup-failed' : c.problem === 'bogus' ? 'dns-bogus' : 'dns-lookup-failed';
    // an answer insecure only by the NSEC3 iteration limit: under DANE no proof that DANE is absent (issue 13)
    case 'nsec3-iterations':
      return c.rrtype === 'TLSA' ? 'tlsa-lookup-failed' : 'dane-required';
    case 'no-address':
      return 'no-address';
    case 'dane-required':
      return 'dane-required';
  }
}

/** The label of a failed connection attempt. */
function attemptReason(f: Extract<HostFailure, { kind: 'attempt' }>): DeferralReason {
  switch (f.stage) {
    case 'verify':
      return f.verifyReason === 'dane-no-match' ? 'dane-no-match' : 'tls-verify-failed';
    case 'starttls':
      return 'starttls-failed';
    // a failed opportunistic handshake is followed by a cleartext retry: no policy failure
    case 'tls':
      return f.code === '4.7.5' ? 'tls-handshake-failed' : 'connect';
    case 'greeting':
      return 'connection-lost';
    case 'connect':
    case 'ehlo':
    case 'rset':
    case 'mail':
    case 'rcpt':
    case 'data':
    case 'protocol':
      return 'connect';
  }
}

/** The label of one MX host's failure (its share of an `unreachable` deferral). */
export function hostFailureReason(f: HostFailure): DeferralReason | undefined {
  switch (f.kind) {
    case 'self':
      return undefined;
    case 'budget':
      return 'dns-lookup-failed';
    case 'skipped':
      return skipReason(f.cause);
    case 'attempt':
      return attemptReason(f);
    case 'sts-mx-mismatch':
      return 'sts-mx-mismatch';
    case 'requiretls':
      return f.problem === 'not-advertised' ? 'requiretls-unsupported' : 'tls-verify-failed';
  }
}

/**
 * Which host failure names an unreachable destination: among the hosts whose code became the
 * deferral's code (delivery's aggregate: TLS/DANE, then DNS, then connection), the most specific.
 */
const HOST_PRIORITY: readonly DeferralReason[] = [
  'tlsa-lookup-failed',
  'dns-bogus',
  'dns-lookup-failed',
  'dane-no-match',
  'dane-required',
  'tls-verify-failed',
  'starttls-failed',
  'tls-handshake-failed',
  'sts-mx-mismatch',
  'requiretls-unsupported',
  'no-address',
  'connection-lost',
  'connect',
];

/**
 * A deferral's reason label, from the typed cause delivery gives with it (delivery/events.ts) and
 * its RFC 3463 code (which host failures decided an unreachable destination's code).
 */
export function deferralReason(cause: DeferralCause, code: string): DeferralReason {
  switch (cause.kind) {
    case 'dnssec-hold':
      return 'dns-lookup-failed';
    case 'mx-lookup':
      return cause.problem === 'bogus' ? 'dns-bogus' : 'dns-lookup-failed';
    case 'unreachable': {
      const labels = cause.hosts.filter((h) => h.kind !== 'self' && h.code === code).map(hostFailureReason);
      return HOST_PRIORITY.find((r) => labels.includes(r)) ?? 'connect';
    }
    case 'reply':
      return 'remote-temporary';
    case 'protocol':
      return 'protocol-error';
    case 'connection-lost':
      return 'connection-lost';
    case 'internal':
      return 'internal';
    case 'sts-state':
      return 'sts-state-unavailable';
    // bounces: never a deferral
    case 'mx-refused':
    case 'self-loop':
    case 'body-refused':
      return 'other';
  }
}

/** The handshake result label of a failed attempt, when it failed at TLS. */
export function handshakeFailure(stage: SmtpStage): 'starttls-unsupported' | 'handshake-failed' | 'verify-failed' | undefined {
  return stage === 'starttls' ? 'starttls-unsupported' : stage === 'tls' ? 'handshake-failed' : stage === 'verify' ? 'verify-failed' : undefined;
}

export function deliveryMetrics(events: RelayEvents): DeliverySubscriber {
  return (e) => {
    switch (e.kind) {
      case 'attempt-failed': {
        const result = handshakeFailure(e.error.stage);
        if (result) events.tlsHandshake?.({ result });
        return;
      }
      case 'session-opened':
        if (e.tls) events.tlsHandshake?.({ result: 'ok' });
        return;
      case 'rollover-risk':
        return events.rolloverWarning?.({ domain: e.domain, host: e.host, kind: e.finding.kind, detail: e.finding.detail });
      case 'exception-applied':
        return events.exceptionDowngrade?.({ domain: e.domain, level: e.level });
      case 'recipient': {
        // the one place every recipient's attempt ends
        const o = e.outcome;
        events.deliveryOutcome?.({
          domain: e.domain,
          outcome: o.result,
          dane: recipientTlsWord(e),
          reason: o.result === 'sent' ? undefined : o.reason,
        });
        if (o.result === 'deferred') events.deferral?.({ domain: e.domain, reason: deferralReason(e.cause ?? { kind: 'internal' }, o.code) });
        events.attemptTimed?.({ attemptSeconds: e.attemptMs / 1000, queueWaitSeconds: (e.delayMs - e.attemptMs) / 1000 });
        return;
      }
      default:
        return;
    }
  };
}

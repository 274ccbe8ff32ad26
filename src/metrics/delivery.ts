/**
 * Delivery metrics as a delivery subscriber (delivery/events.ts): the facts of a delivery run
 * become the `RelayEvents` calls the Prometheus registry counts (registry.ts). Labels come from
 * typed facts only (labels.ts).
 */
import type { DeliverySubscriber } from '../delivery/events.js';
import type { SmtpStage } from '../delivery/smtpClient.js';
import type { RelayEvents } from './events.js';
import { daneStatusOf, deferralReason } from './labels.js';

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
        const c = e.carrier;
        events.deliveryOutcome?.({
          domain: e.domain, outcome: o.result === 'sent' ? 'delivered' : o.result,
          dane: daneStatusOf({ connected: !!o.relay && !!c, planKind: c?.planKind, tls: !!c?.tls, verified: !!c?.verified }),
          reason: o.result === 'sent' ? undefined : o.reason,
        });
        if (o.result === 'deferred') events.deferral?.({ domain: e.domain, reason: deferralReason(e.cause ?? { kind: 'internal' }, o.code) });
        return;
      }
      default:
        return;
    }
  };
}

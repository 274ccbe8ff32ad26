/**
 * Rollover warnings as a delivery subscriber (delivery/events.ts): a DANE session that just
 * verified is assessed (policy/rollover.ts, RFC 7671 §8.1/§8.4) and each warning-level finding is
 * emitted as a `rollover-risk` event, which the log and the metrics pick up. With an
 * `MxFactsStore` the warning comes once a day per MX and risk instead of per session.
 */
import { assessRollover } from '../policy/rollover.js';
import type { MxFactsStore } from '../policy/mxFacts.js';
import type { DeliverySubscriber } from './events.js';

/** Default warning window: a pinned certificate expiring within 14 days. */
export const ROLLOVER_WARN_MS = 14 * 86_400_000;

export function rolloverWatch(o: { now: () => number; mxFacts?: MxFactsStore; warnMs?: number }): DeliverySubscriber {
  return (e, emit) => {
    if (e.kind !== 'session-opened' || e.plan.kind !== 'dane') return;
    const v = e.tls?.verify;
    if (!v?.ok || !v.facts) return;
    const now = o.now();
    const host = e.target.host;
    const due = o.mxFacts
      ? o.mxFacts.note(e.domain, host, { facts: v.facts, matchedIndex: v.matchedIndex, matchedUsage: v.matchedUsage }, now)
      : assessRollover(v.facts, now, o.warnMs ?? ROLLOVER_WARN_MS);
    for (const finding of due) {
      if (finding.severity === 'warning')
        emit({ kind: 'rollover-risk', domain: e.domain, report: e.report, ...(e.requireTls ? { requireTls: true } : {}), host, finding });
    }
  };
}

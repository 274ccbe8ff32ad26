/**
 * Rollover warnings as a delivery subscriber (delivery/events.ts): a DANE session that just
 * verified is assessed (policy/rollover.ts, RFC 7671 §8.1/§8.4) and each warning-level finding is
 * emitted as a `rollover-risk` event, which the log and the metrics pick up. With an
 * `MxFactsStore` the warning comes once a day per MX and risk instead of per session.
 */
import { assessRollover } from '../policy/rollover.js';
import { warningKey, type MxFactsStore, type RolloverLedger } from '../policy/mxFacts.js';
import type { DeliverySubscriber } from './events.js';

/** Default warning window: a pinned certificate expiring within 14 days. */
export const ROLLOVER_WARN_MS = 14 * 86_400_000;

/**
 * `shared` (a cluster, with `mxFacts`): the facts go to every node and a warning due here is emitted only when no
 * node has given it within the repeat period — asked asynchronously, so the event follows the session a moment
 * later. When the database cannot be asked the warning is emitted (twice is better than never).
 */
export function rolloverWatch(o: {
  now: () => number;
  mxFacts?: MxFactsStore;
  warnMs?: number;
  shared?: { ledger: RolloverLedger; onError?: (e: unknown) => void };
}): DeliverySubscriber {
  return (e, emit) => {
    if (e.kind !== 'session-opened' || e.plan.kind !== 'dane') return;
    const v = e.tls?.verify;
    if (!v?.ok || !v.facts) return;
    const now = o.now();
    const host = e.target.host;
    const due = o.mxFacts
      ? o.mxFacts.note(e.domain, host, { facts: v.facts, matchedIndex: v.matchedIndex, matchedUsage: v.matchedUsage }, now)
      : assessRollover(v.facts, now, o.warnMs ?? ROLLOVER_WARN_MS);
    const warn = (finding: (typeof due)[number]) =>
      emit({ kind: 'rollover-risk', domain: e.domain, report: e.report, ...(e.requireTls ? { requireTls: true } : {}), host, finding });
    const shared = o.mxFacts && o.shared;
    if (!shared) {
      for (const finding of due) if (finding.severity === 'warning') warn(finding);
      return;
    }
    const facts = o.mxFacts!.get(e.domain, host);
    if (facts)
      shared.ledger.share(facts).then(
        (ids) => o.mxFacts!.merge(e.domain, host, ids),
        (err: unknown) => shared.onError?.(err),
      );
    for (const finding of due) {
      if (finding.severity !== 'warning') continue;
      shared.ledger.claimWarning(warningKey(e.domain, host, finding), o.mxFacts!.repeatMs).then(
        (mine) => {
          if (mine) warn(finding);
        },
        (err: unknown) => {
          shared.onError?.(err);
          warn(finding);
        },
      );
    }
  };
}

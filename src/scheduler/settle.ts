/**
 * What one delivery outcome does to a recipient's queue state. Pure: the scheduler applies it
 * (then queues DSNs and persists), and the SMTP reply fuzz (test/faults/smtpReplies.test.ts)
 * feeds every outcome it provokes through the same function.
 *
 * A deferral always moves the next attempt into the future (backoff, RFC 5321 §4.5.4.1); the
 * lifetime turns it into a failure. Never a recipient left due without an attempt counted: the
 * caller gives exactly one outcome per recipient (delivery/outcome.ts oneOutcomeEach).
 */
import type { Envelope, RecipientStatus } from '../spool/types.js';
import type { RecipientOutcome } from '../delivery/outcome.js';
import type { DsnRecipient } from '../dsn/compose.js';
import { backoffDelay, delayWarningDue, expired, permanentCode, type BackoffConfig } from './backoff.js';
import { lifetimeFor } from '../reporting/tlsrpt/lifetime.js';

export function applyOutcome(
  cur: RecipientStatus,
  o: RecipientOutcome,
  envelope: Pick<Envelope, 'received' | 'kind'>,
  now: number,
  cfg: BackoffConfig,
  rand: () => number,
): { next: RecipientStatus; dsn?: DsnRecipient } {
  const r: RecipientStatus = { ...cur, attempts: cur.attempts + 1, lastReason: o.reason, dsnCode: o.code, remoteMta: o.remoteMta };
  if (o.result === 'sent') return { next: { ...r, state: 'delivered' } };
  if (o.result === 'bounced' || expired(envelope.received, now, lifetimeFor(envelope.kind, cfg))) {
    r.state = 'failed';
    if (o.result !== 'bounced') {
      r.dsnCode = permanentCode(o.code);
      r.lastReason = `delivery time expired: ${o.reason}`;
    }
    return { next: r, dsn: { address: r.address, action: 'failed', status: r.dsnCode!, remoteMta: o.remoteMta, diagnostic: o.reply ? `smtp; ${o.reply}` : r.lastReason, lastAttempt: now } };
  }
  r.state = 'deferred';
  r.nextAttempt = now + backoffDelay(r.attempts, cfg, rand);
  if (!delayWarningDue(envelope.received, now, r.delayNotified, cfg)) return { next: r };
  r.delayNotified = now;
  return { next: r, dsn: { address: r.address, action: 'delayed', status: o.code, remoteMta: o.remoteMta, diagnostic: o.reply ? `smtp; ${o.reply}` : o.reason, lastAttempt: now, willRetryUntil: envelope.received + cfg.lifetime } };
}

/**
 * What one delivery outcome does to a recipient's queue state, and which DSN it asks for. Pure:
 * the scheduler applies it (then queues the DSN and persists), and the SMTP reply fuzz
 * (test/faults/smtpReplies.test.ts) feeds every outcome it provokes through the same function.
 *
 * A deferral always moves the next attempt into the future (backoff, RFC 5321 §4.5.4.1); the
 * lifetime turns it into a failure. Never a recipient left due without an attempt counted: the
 * caller gives exactly one outcome per recipient (delivery/outcome.ts oneOutcomeEach).
 *
 * The DSN follows the recipient's NOTIFY (RFC 3461 §4.1, dsn/params.ts notifyAllows); NOTIFY never
 * changes the state, only what the sender is told:
 * - without NOTIFY: failures and delay warnings, as always; NEVER: none;
 * - `failed` only with FAILURE (§5.2.6 (b)), `delayed` only with DELAY (§5.2.5 (c)) — a delay not
 *   asked for is not recorded as notified either;
 * - a success only with SUCCESS and only when the next hop did not take NOTIFY along (no DSN
 *   extension, `nextHopDsn` false): a `relayed` DSN (§5.2.2 (b)). A next hop with DSN reports the
 *   success itself (§5.2.1); the relay never delivers locally, so it never says `delivered`.
 */
import type { Envelope, RecipientStatus } from '../spool/types.js';
import type { RecipientOutcome } from '../delivery/outcome.js';
import { diagnosticOf, type DsnRecipient } from '../dsn/compose.js';
import { backoffDelay, delayWarningDue, expired, permanentCode, type BackoffConfig } from './backoff.js';
import { lifetimeFor } from '../reporting/tlsrpt/lifetime.js';
import { notifyAllows } from '../dsn/params.js';

export function applyOutcome(
  cur: RecipientStatus,
  o: RecipientOutcome,
  envelope: Pick<Envelope, 'received' | 'kind' | 'rcptDsn'>,
  now: number,
  cfg: BackoffConfig,
  rand: () => number,
): { next: RecipientStatus; dsn?: DsnRecipient } {
  const r: RecipientStatus = { ...cur, attempts: cur.attempts + 1, lastReason: o.reason, dsnCode: o.code, remoteMta: o.remoteMta };
  const asked = envelope.rcptDsn?.[cur.address];
  if (o.result === 'sent') {
    const next: RecipientStatus = { ...r, state: 'delivered' };
    if (o.nextHopDsn || !notifyAllows(asked, 'success')) return { next };
    return {
      next,
      dsn: {
        address: r.address,
        action: 'relayed',
        status: o.code,
        remoteMta: o.remoteMta,
        diagnostic: diagnosticOf(o.reply, undefined),
        lastAttempt: now,
      },
    };
  }
  if (o.result === 'bounced' || expired(envelope.received, now, lifetimeFor(envelope.kind, cfg))) {
    r.state = 'failed';
    if (o.result !== 'bounced') {
      r.dsnCode = permanentCode(o.code);
      r.lastReason = `delivery time expired: ${o.reason}`;
    }
    if (!notifyAllows(asked, 'failure')) return { next: r };
    return {
      next: r,
      dsn: {
        address: r.address,
        action: 'failed',
        status: r.dsnCode!,
        remoteMta: o.remoteMta,
        diagnostic: diagnosticOf(o.reply, r.lastReason),
        lastAttempt: now,
      },
    };
  }
  r.state = 'deferred';
  r.nextAttempt = now + backoffDelay(r.attempts, cfg, rand);
  if (!notifyAllows(asked, 'delay') || !delayWarningDue(envelope.received, now, r.delayNotified, cfg)) return { next: r };
  r.delayNotified = now;
  return {
    next: r,
    dsn: {
      address: r.address,
      action: 'delayed',
      status: o.code,
      remoteMta: o.remoteMta,
      diagnostic: diagnosticOf(o.reply, o.reason),
      lastAttempt: now,
      willRetryUntil: envelope.received + cfg.lifetime,
    },
  };
}

/**
 * What the relay's stages report about themselves, for metrics (issue 7) and logs.
 * Ingress, DNS and the exception probe take an optional `RelayEvents` and call the hook where the
 * fact happens; delivery emits typed `DeliveryEvent`s (delivery/events.ts) and `delivery/metrics.ts`
 * turns them into these calls. `src/metrics/` turns the calls into Prometheus series. Hooks must be
 * cheap and must not throw. TLSRPT does not count from here: it subscribes to the delivery events.
 */
import type { IngressRejectReason } from './labels.js';
import type { StatusWord, TlsWord } from '../vocabulary/words.js';

/** Postfix's status words (issue 21 item 4: the same word as the log and `queue list`) */
export type DeliveryOutcomeKind = StatusWord;
/** how the session that carried (or failed to carry) the message was protected: Postfix's TLS connection level (vocabulary/words.ts) */
export type DaneStatus = TlsWord;

/** what a reload reread, and whether it took (issue 21 item 7) */
export type ReloadKind = 'config' | 'policy';
export type ReloadResult = 'ok' | 'refused';
/** what became of one TLSRPT report the daily job tried to send (reporting/tlsrpt/daily.ts SendOutcome, and `failed` for a send that threw) */
export type TlsrptSendResult = 'sent' | 'pending' | 'dropped' | 'retry-later' | 'failed';
/** RFC 3464 §2.3.3 actions of the DSNs the scheduler queues */
export type DsnAction = 'failed' | 'delayed' | 'relayed';

export interface RelayEvents {
  /** ingress: a connection, command or message was refused; `reason` from the closed set INGRESS_REJECT_REASONS (labels.ts) */
  ingressRejection?(e: { reason: IngressRejectReason }): void;
  /** delivery: one recipient's attempt ended: how long the attempt took, and how long it had waited in the queue before it began */
  attemptTimed?(e: { attemptSeconds: number; queueWaitSeconds: number }): void;
  /** scheduler: a DSN was queued */
  dsnQueued?(e: { action: DsnAction }): void;
  /** a SIGHUP or a policy-file change reread the config or the policy files */
  reload?(e: { what: ReloadKind; result: ReloadResult }): void;
  /** TLSRPT: one (day, domain) report send ended */
  tlsrptReport?(e: { result: TlsrptSendResult }): void;
  /** ingress: a message was committed to the spool */
  messageReceived?(e: { recipients: number; bytes: number }): void;
  /** delivery: one recipient's attempt ended */
  deliveryOutcome?(e: { domain: string; outcome: DeliveryOutcomeKind; dane: DaneStatus; reason?: string }): void;
  /** delivery: a recipient was deferred; `reason` is a short label (dns-bogus, tlsa-lookup-failed, dane-no-match, connect, …) */
  deferral?(e: { domain: string; reason: string }): void;
  /** policy: a destination on the exception list was delivered below its DANE level */
  exceptionDowngrade?(e: { domain: string; level: string }): void;
  /** policy: a listed destination's DANE verified again; the exception can be removed */
  exceptionRecovered?(e: { domain: string; host: string }): void;
  /** policy: a destination is one certificate renewal away from failing DANE */
  rolloverWarning?(e: { domain: string; host: string; kind: string; detail: string }): void;
  /** dns: one lookup finished */
  dnsLookup?(e: { type: string; status: string; seconds: number }): void;
  /** delivery: a TLS handshake ended (success, or the failure stage) */
  tlsHandshake?(e: { result: 'ok' | 'starttls-unsupported' | 'handshake-failed' | 'verify-failed' }): void;
}

/** every hook name; `satisfies` makes a new member of RelayEvents a compile error here until listed */
const HOOKS = Object.keys({
  ingressRejection: true,
  attemptTimed: true,
  dsnQueued: true,
  reload: true,
  tlsrptReport: true,
  messageReceived: true,
  deliveryOutcome: true,
  deferral: true,
  exceptionDowngrade: true,
  exceptionRecovered: true,
  rolloverWarning: true,
  dnsLookup: true,
  tlsHandshake: true,
} satisfies Record<keyof RelayEvents, true>) as (keyof RelayEvents)[];

/** Both listeners get every event (tests' own hooks beside the metrics registry); either may be absent. */
export function fanOutEvents(a: RelayEvents | undefined, b: RelayEvents | undefined): RelayEvents | undefined {
  if (!a || !b) return a ?? b;
  const out: Record<string, (e: never) => void> = {};
  for (const k of HOOKS) {
    // class instances (RelayMetrics) keep their hooks on the prototype: look them up, don't enumerate
    const fa = a[k] as ((e: never) => void) | undefined;
    const fb = b[k] as ((e: never) => void) | undefined;
    if (fa || fb)
      out[k] = (e: never) => {
        fa?.call(a, e);
        fb?.call(b, e);
      };
  }
  return out as RelayEvents;
}

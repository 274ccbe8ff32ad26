/**
 * What a delivery run reports about itself: one typed `DeliveryEvent` per fact, in the order the
 * facts happen. `DestinationRun` (deliver.ts) only emits; logging (delivery/log.ts), metrics
 * (delivery/metrics.ts), TLSRPT (reporting/tlsrpt/results.ts) and rollover warnings
 * (delivery/rollover.ts) subscribe, each reading the facts it needs. No subscriber reads the
 * wording of a reason or an error message: the text fields are for the log and the DSN only
 * (issue 14, as mox's typed tlsrpt.Result and Postfix's failure enums).
 */
import type { DnssecStatus, LookupWork } from '../dns/types.js';
import type { TlsLevel } from '../dane/levels.js';
import type { TlsPlan } from '../dane/policy.js';
import type { HostFacts, HostSkip, SkipCause } from '../route/host.js';
import type { RolloverFinding } from '../policy/rollover.js';
import type { SmtpError, TlsInfo } from './smtpClient.js';
import type { Target } from './types.js';
import type { RetryKind } from './attempt.js';
import type { RecipientOutcome } from './outcome.js';
import type { CachedPolicy } from '../mtasts/store.js';
import type { TlsWord } from '../vocabulary/words.js';
import { daneStatusOf } from '../metrics/labels.js';
import type { FetchFailureType } from '../mtasts/fetch.js';
import type { VerifyOutcome } from '../dane/types.js';

/** The TLSA RRset a plan or a skipped host was made from, in presentation form ("u s m HEX"), and its base domain. */
export interface TlsaFacts {
  baseDomain: string;
  records: string[];
}

/**
 * Why a recipient was not delivered (or bounced) by this attempt, as facts. One host failure of an
 * unreachable destination is `host` (its code and cause); the destination's is `unreachable`.
 */
export type DeferralCause =
  /** DANE-4 / issue 13: trust-ad mode with a failing DNSSEC self-test holds what needs DANE */
  | { kind: 'dnssec-hold' }
  /** DANE-11: the MX lookup failed (`problem`: the error kind or DNSSEC status; `error` when the resolver threw) */
  | { kind: 'mx-lookup'; problem: string }
  /** the MX answer says no mail (NXDOMAIN, null MX, a loop by name): a bounce */
  | { kind: 'mx-refused' }
  /** no MX host could be used: each host's failure in MX order (empty: no host at all) */
  | { kind: 'unreachable'; hosts: HostFailure[] }
  /** RFC 5321 §5.1: the next hop is this relay (bounce) */
  | { kind: 'self-loop' }
  /** the next hop refused the body as it is (RFC 6152 / 5.6.3): a bounce */
  | { kind: 'body-refused' }
  /** the server's reply to the transaction (4xx or 5xx), in `outcome.reply` */
  | { kind: 'reply' }
  /** the peer broke the protocol (4.5.0) */
  | { kind: 'protocol' }
  /** the connection was lost during the transaction */
  | { kind: 'connection-lost'; stage: SmtpError['stage'] }
  /** our own fault: an unreadable body, an unexpected exception, a repaired invariant breach */
  | { kind: 'internal' }
  /**
   * The MTA-STS lookup failed locally (the policy cache unreadable, a bug): which policy is in force is
   * unknown, so the message waits (4.7.0) instead of going out as without MTA-STS (RFC 8461 §5's "no
   * policy" is only a fetch that failed with nothing cached)
   */
  | { kind: 'sts-state' };

/** One MX host that could not be used, with the RFC 3463 code it contributes to the aggregate. */
export type HostFailure =
  | { kind: 'skipped'; host: string; code: string; cause: SkipCause }
  | { kind: 'attempt'; target: Target; code: string; stage: SmtpError['stage']; planKind: TlsPlan['kind']; verifyReason?: string }
  /** issue 22: the message's DNSSEC work budget ran out before this host could be planned */
  | { kind: 'budget'; code: string }
  /** this relay's own address at a worse preference: hosts from there on dropped (no code of its own) */
  | { kind: 'self' }
  /** STS-40, STS-43: an MTA-STS `enforce` policy's mx patterns do not match the host (4.7.5) */
  | { kind: 'sts-mx-mismatch'; code: string }
  /** RFC 8689 §4.2.1: a REQUIRETLS message cannot go over this session (4.7.30 / 4.7.10) */
  | { kind: 'requiretls'; target: Target; code: string; problem: RequireTlsProblem };

/**
 * Postfix's `delays=a/b/c/d` (issue 21 item 5), in ms: `beforeQueue` from the start of DATA until the
 * message was committed (0 when this process did not see it arrive: after a restart); `queue` from then
 * until this attempt started (every earlier attempt and backoff included); `setup` until a session was
 * ready (DNS, TCP, TLS and its verification, EHLO; 0 for a reused one); `transmit` the transaction.
 * A delivery that never had a session spends its whole attempt in `setup`.
 */
export interface Delays {
  beforeQueue: number;
  queue: number;
  setup: number;
  transmit: number;
}

export function splitDelays(received: number, queuedAt: number | undefined, started: number, ready: number | undefined, end: number): Delays {
  const q = queuedAt ?? received;
  const r = ready ?? end;
  const pos = (n: number) => Math.max(0, n);
  return { beforeQueue: pos(q - received), queue: pos(started - q), setup: pos(r - started), transmit: pos(end - r) };
}

/** `a/b/c/d` in seconds, Postfix's shape (two decimals; Postfix drops trailing zeros, we keep them fixed-width for grep). */
export function formatDelays(d: Delays): string {
  return [d.beforeQueue, d.queue, d.setup, d.transmit].map((ms) => (ms / 1000).toFixed(2)).join('/');
}

/** Why a host's session cannot carry a REQUIRETLS message (RFC 8689 §4.2.1 steps 4-5). */
export type RequireTlsProblem = 'not-advertised' | 'unauthenticated';

/** The wording of a REQUIRETLS refusal, for the reason and the log. */
export const REQUIRETLS_PROBLEM: Record<RequireTlsProblem, string> = {
  'not-advertised': 'does not advertise REQUIRETLS after STARTTLS',
  unauthenticated: 'no authenticated TLS session',
};

/** The session a recipient's transaction ran over, as the metrics label it (protection), and as the log shows it. */
export interface CarrierFacts {
  tls: boolean;
  verified: boolean;
  planKind: TlsPlan['kind'];
}

/**
 * The TLS word of a recipient's attempt (issue 21 item 4, vocabulary/words.ts): the one function the log
 * and the metrics take it from. No session carried the transaction: `none`.
 */
export function recipientTlsWord(e: Extract<DeliveryEvent, { kind: 'recipient' }>): TlsWord {
  const c = e.carrier;
  const plan = e.session?.plan;
  return daneStatusOf({
    connected: !!e.outcome.relay && !!c,
    planKind: c?.planKind,
    tls: !!c?.tls,
    verified: !!c?.verified,
    ...(plan?.kind === 'dane' ? { daneLabel: plan.label } : {}),
  });
}

interface Run {
  domain: string;
  /** the message being delivered when the fact happened (issue 21 item 5: every log line about a message names it) */
  queueId?: string;
  /** a run of relay-generated TLSRPT reports (TLSRPT-45): logged and counted in metrics, never in TLSRPT */
  report: boolean;
  /**
   * a run of REQUIRETLS messages (RFC 8689): logged and counted in metrics, never in TLSRPT — it is
   * judged by the sender's demand, not the destination's policy, so its failures are not the destination's;
   * absent: false
   */
  requireTls?: boolean;
  /**
   * a run of `TLS-Required: No` messages (RFC 8689 §4.2.2): logged (per delivery) and counted in metrics, never in
   * TLSRPT — the sender waived the destination's policy, so these sessions say nothing about it; absent: false
   */
  tlsRequiredNo?: boolean;
}

export type DeliveryEvent = Run &
  /** a policy reload reached a destination being delivered */
  (
    | { kind: 'policy-changed'; rule: string; previousRule: string }
    /** DANE-16: an MX RRset that is not secure is logged as such */
    | { kind: 'mx-insecure'; hosts: string[]; status: DnssecStatus }
    /** DANE-11: the MX lookup failed (4.4.3); no host was reached (TLSRPT-21 dnssec-invalid) */
    | { kind: 'mx-lookup-failed'; problem: string; reason: string }
    /** issue 22: `delivery.mx_host_limit` cut the MX list (after ordering); `notTried` are never planned */
    | { kind: 'mx-capped'; hosts: string[]; notTried: string[]; limit: number }
    /** issue 22: the message's DNSSEC work budget (route/budget.ts) ran out; `notPlanned` hosts were not looked up */
    | { kind: 'budget-spent'; notPlanned: string[]; work: LookupWork }
    /** RFC 5321 §5.1: an MX host's address is one of this relay's own listen endpoints */
    | { kind: 'host-is-self'; host: string; address: string; port: number }
    /** the host is not contacted (DANE-20, 23, 33, 45); `repeat`: already reported in this run */
    | { kind: 'host-skipped'; host: HostFacts; skip: HostSkip; tlsa?: TlsaFacts; repeat: boolean }
    /** one connection attempt failed (`next`: the retry that follows, DANE-44/46) */
    | { kind: 'attempt-failed'; target: Target; plan: TlsPlan; retry?: RetryKind; next?: RetryKind; error: SmtpError; tlsa?: TlsaFacts; rule: string }
    /** a session is open and ready for mail (after verification, DANE-63) */
    | {
        kind: 'session-opened';
        target: Target;
        plan: TlsPlan;
        retry?: RetryKind;
        tls?: TlsInfo;
        starttlsOffered: boolean;
        localAddress?: string;
        greeting?: string;
        tlsa?: TlsaFacts;
        /** STS-45: under an MTA-STS `testing` policy (plan `stsTesting`), the WebPKI verdict of the chain and MX name; decided nothing */
        webpki?: VerifyOutcome;
      }
    /** DANE rollover risk of a session that verified (delivery/rollover.ts) */
    | { kind: 'rollover-risk'; host: string; finding: RolloverFinding }
    /**
     * RFC 5321 §4.1.1.5: a reused connection failed the RSET that opens the next transaction (refused,
     * closed, timed out, garbage; `error.stage` is `rset`). Nothing of the message was accepted (its
     * pipelined MAIL/RCPT replies are never read): the connection is dropped and the message goes over a new one.
     */
    | { kind: 'reset-failed'; queueId: string; target: Target; error: SmtpError }
    /** the body was converted for the next hop (RFC 6152, RFC 2045) */
    | { kind: 'body-converted'; queueId: string; relay: string; target: string }
    /** our own fault, with the error behind it */
    | { kind: 'internal-error'; queueId: string; what: 'body-unreadable' | 'unexpected'; err: unknown }
    /** issue 13: the outcomes were not exactly one per recipient (repaired: deferred) */
    | { kind: 'invariant-breach'; queueId: string; breaches: string[] }
    /** DANE-70: the exception list governed this attempt */
    | { kind: 'exception-applied'; queueId: string; rule: string; level: TlsLevel; underlying: TlsLevel; connected: boolean }
    /**
     * The MTA-STS lookup failed locally (cache unreadable, a bug: mtasts/policies.ts StsStateError): the
     * destination's messages are deferred (cause `sts-state`), never delivered as without a policy
     */
    | { kind: 'sts-lookup-failed'; error: string }
    /**
     * STS-16, STS-60: fetching the destination's MTA-STS policy (a valid TXT record with a new id) failed
     * now; `cached`: the unexpired policy that stays in force (STS-33), if any
     */
    | { kind: 'sts-fetch-failed'; resultType: FetchFailureType; reason: string; cached?: CachedPolicy }
    /**
     * issue 15: a tls_policy entry (an explicit level, or `sts-ignore`) set the destination's MTA-STS policy aside
     * for this attempt (one event per message, like `exception-applied`); `connected`: a session was opened
     */
    | { kind: 'sts-exception-applied'; queueId: string; rule: string; policy: CachedPolicy; connected: boolean }
    /**
     * STS-40: the host matches none of the policy's mx patterns. `enforce`: the host is not used
     * (STS-43); `testing`: delivered as without a policy, the failure reported (STS-45).
     * `repeat`: already reported in this run.
     */
    | { kind: 'sts-mx-mismatch'; host: string; policy: CachedPolicy; reason: string; repeat: boolean }
    /** RFC 8689 §4.2.1 step 5 (RT-23, RT-25): the session cannot carry a REQUIRETLS message: QUIT, next host */
    | { kind: 'requiretls-host-refused'; target: Target; plan: TlsPlan; problem: RequireTlsProblem }
    /** the scheduler put a message in a run of the wrong REQUIRETLS kind (a bug; the message waits) */
    | { kind: 'requiretls-run-mismatch'; queueId: string; messageRequireTls: boolean }
    /**
     * RFC 8689 §5 (RT-52): no host qualified for a REQUIRETLS-tagged DSN (`code` 4.7.30 / 4.7.10, `reason`):
     * it goes out now as an ordinary message, without the parameter, rather than be lost
     */
    | { kind: 'requiretls-dsn-fallback'; queueId: string; code: string; reason: string }
    /** one recipient's attempt ended (exactly once per recipient of the job) */
    | {
        kind: 'recipient';
        queueId: string;
        outcome: RecipientOutcome;
        /** why it was not delivered; absent for `sent` */
        cause?: DeferralCause;
        /** the session that carried (or failed to carry) the transaction, for the protection label */
        carrier?: CarrierFacts;
        /** the session still open when the attempt ended, as the log line shows it */
        session?: { tls?: TlsInfo; plan: TlsPlan };
        delayMs: number;
        attemptMs: number;
        /** Postfix's delays=a/b/c/d */
        delays: Delays;
        rule: string;
        exception: boolean;
      }
  );

export type DeliveryEventKind = DeliveryEvent['kind'];

/**
 * A subscriber sees every event, in order, synchronously. `emit` lets it add events of its own
 * (rollover risk found from a session's facts), which every subscriber sees in turn. Like the
 * `RelayEvents` hooks it must be cheap and must not throw (a throw is a bug and reaches the caller).
 */
export type DeliverySubscriber = (e: DeliveryEvent, emit: (e: DeliveryEvent) => void) => void;

/** Hands `e` to every subscriber of the one list, in order. */
export function publish(subscribers: readonly DeliverySubscriber[], e: DeliveryEvent): void {
  const send = (x: DeliveryEvent): void => {
    for (const s of subscribers) s(x, send);
  };
  send(e);
}

/**
 * The attempt sequence for one address of one MX host, shared by delivery (deliver.ts) and
 * `dane-relay check` (check/inspect.ts) so both try the same things in the same order:
 *
 * 1. connect with requirementFor(plan) (the TLS plan becomes the client's TlsRequirement here);
 * 2. after a failed opportunistic (`may`) handshake the client allows, a cleartext retry
 *    (DANE-44, RFC 7672 §8.1 / RFC 7435) — never after a DANE or `encrypt` failure (DANE-43);
 * 3. after a failed DANE verification under an audit-only policy, one retry over
 *    unauthenticated TLS, logged `untrusted` by the caller (DANE-46, RFC 7672 §9.1).
 *
 * Every attempt is reported through `hooks.after` in order; what a report means (logs, metrics,
 * the TLSRPT seam, a check report) is the caller's business. Returns the open session, if any.
 */
import { verifyDane } from '../dane/verify.js';
import { webpkiVerdict } from '../mtasts/webpki.js';
import type { TlsPlan } from '../dane/policy.js';
import { SmtpSession, SmtpError, type Connector, type SmtpTimeouts } from './smtpClient.js';
import type { Target, TlsRequirement } from './types.js';
import type { VerifyOutcome } from '../dane/types.js';

export function requirementFor(plan: TlsPlan, digestPreference: ('sha512' | 'sha256')[], now: () => number): TlsRequirement {
  switch (plan.kind) {
    case 'none':
      return { mode: 'none', label: 'cleartext' };
    // STS-45: under a `testing` policy the handshake also validates the chain against the WebPKI roots (decides nothing)
    case 'may':
      return { mode: 'may', servername: plan.sni, label: 'may', ...(plan.stsTesting ? { webpkiRoots: plan.stsTesting.roots } : {}) };
    case 'encrypt':
      return { mode: 'encrypt', servername: plan.sni, label: 'untrusted', ...(plan.stsTesting ? { webpkiRoots: plan.stsTesting.roots } : {}) };
    case 'dane':
      return {
        mode: 'verify',
        servername: plan.sni,
        label: plan.label,
        // RFC 8689 §4.2.1 (RT-21, RT-22): DANE after a DNSSEC-secure MX authenticates the route; after an insecure one (trust-insecure-mx) it does not.
        ...(plan.label === 'verified' ? { authenticatedRoute: 'dnssec-dane' as const } : {}),
        verify: (chain): VerifyOutcome =>
          verifyDane({ records: plan.records, chain: chain.certificates, referenceNames: plan.referenceNames, now: new Date(now()), digestPreference }),
      };
    case 'sts':
      // An `sts` plan is made only from an `enforce` policy whose mx pattern matched the host (deliver.ts): RT-21.
      return {
        mode: 'verify',
        servername: plan.sni,
        label: 'sts',
        authenticatedRoute: 'sts-enforce',
        webpkiRoots: plan.roots,
        verify: (chain) => webpkiVerdict(chain, plan.sni),
      };
  }
}

/** Why an attempt is a retry of the previous one at the same address. */
export type RetryKind = 'cleartext' | 'audit';

export interface Attempt {
  address: string;
  plan: TlsPlan;
  /** unset for the first attempt at an address */
  retry?: RetryKind;
  /** what the client is asked for (a caller may set `observe` on it in `before`) */
  requirement: TlsRequirement;
}

export type AttemptReport =
  | { attempt: Attempt; ok: true; session: SmtpSession }
  /** `next`: the retry that follows this failure, if any */
  | { attempt: Attempt; ok: false; error: SmtpError; next?: RetryKind };

export interface AttemptOptions {
  heloName: string;
  timeouts: SmtpTimeouts;
  digestPreference: ('sha512' | 'sha256')[];
  now: () => number;
  /** DANE-46: the destination's policy is audit-only */
  audit?: boolean;
  /** how to connect (default: TCP to the address, smtpClient.ts `dialTcp`) */
  connector?: Connector;
  /** EHLO keywords treated as not advertised (delivery.discard_ehlo_keywords, upper case) */
  discardExtensions?: readonly string[];
}

export interface AttemptHooks {
  /** before each connection (e.g. to observe the presented chain) */
  before?: (a: Attempt) => void;
  /** after each attempt, in order; a success is reported before it is returned */
  after?: (r: AttemptReport) => void;
}

/** The retry, if any, that follows a failed attempt under `plan` (pure). */
export function retryAfter(err: SmtpError, plan: TlsPlan, audit: boolean): { kind: RetryKind; plan: TlsPlan } | undefined {
  // DANE-44: without DANE a failed handshake may be retried in cleartext, never with DANE (DANE-43).
  if (err.cleartextRetryAllowed && plan.kind === 'may')
    return { kind: 'cleartext', plan: { kind: 'none', why: `cleartext retry after TLS failure: ${err.message}` } };
  // DANE-46 (RFC 7672 §9.1): audit-only, configured per destination: TLS without authentication, never `verified`.
  if (err.stage === 'verify' && plan.kind === 'dane' && audit)
    return { kind: 'audit', plan: { kind: 'encrypt', why: `audit-only after DANE failure: ${err.message}`, sni: plan.sni } };
  return undefined;
}

export async function attemptAddress(
  target: Target,
  plan: TlsPlan,
  opts: AttemptOptions,
  hooks: AttemptHooks = {},
): Promise<{ session: SmtpSession; plan: TlsPlan } | undefined> {
  let current: TlsPlan = plan;
  let retry: RetryKind | undefined;
  // At most one retry: the first attempt, then a cleartext or an audit retry (a retry's plan allows no other).
  for (let tries = 0; tries < 2; tries++) {
    const attempt: Attempt = {
      address: target.address,
      plan: current,
      requirement: requirementFor(current, opts.digestPreference, opts.now),
      ...(retry ? { retry } : {}),
    };
    hooks.before?.(attempt);
    let session: SmtpSession;
    try {
      session = await SmtpSession.connect(target, {
        heloName: opts.heloName,
        tls: attempt.requirement,
        timeouts: opts.timeouts,
        ...(opts.connector ? { connector: opts.connector } : {}),
        ...(opts.discardExtensions?.length ? { discardExtensions: opts.discardExtensions } : {}),
      });
    } catch (e) {
      const error = e instanceof SmtpError ? e : new SmtpError('connect', String((e as Error)?.message ?? e), { kind: 'connection' });
      const next = tries === 0 ? retryAfter(error, current, !!opts.audit) : undefined;
      hooks.after?.({ attempt, ok: false, error, ...(next ? { next: next.kind } : {}) });
      if (!next) return undefined;
      current = next.plan;
      retry = next.kind;
      continue;
    }
    // Outside the connect try: a throwing hook is the caller's bug, never a connection failure
    // that could lead to a retry under another plan; the session it was given is closed.
    try {
      hooks.after?.({ attempt, ok: true, session });
    } catch (e) {
      await session.quit().catch(() => undefined);
      throw e;
    }
    return { session, plan: current };
  }
  return undefined;
}
